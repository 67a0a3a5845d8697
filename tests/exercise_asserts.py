"""Assertions shared by the exercise-check tests (tests/test_exercises*.py)."""
import pytest

from ttt4rec_edu import exercises
from ttt4rec_edu.exercises import ExerciseResult


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch):
    """Checks print their verdict instead of raising (strict mode is tested explicitly where it matters)."""
    monkeypatch.delenv(exercises.STRICT_ENV, raising=False)


def assert_passes(result: ExerciseResult, capsys) -> None:
    printed = capsys.readouterr().out
    assert result.passed, result.message
    assert printed.startswith("✓ "), printed


def assert_fails(result: ExerciseResult, capsys, *hint_words: str, hint: bool = True) -> None:
    """The check failed, printed exactly its ✗ verdict, gave a hint (unless ``hint=False``: e.g. the reader's
    code raised, which is reported as such), and the message names each of ``hint_words``."""
    printed = capsys.readouterr().out
    assert not result.passed
    assert printed.startswith("✗ ") and printed.strip() == str(result), printed
    assert not hint or "Hint:" in result.message, result.message
    for word in hint_words:
        assert word in result.message, f"{word!r} not in: {result.message}"
