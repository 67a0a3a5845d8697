"""Assertions shared by the exercise-check tests (tests/test_exercises*.py), and the right answer the grading tests
submit for chapter 1's split exercise (:data:`RIGHT_SPLIT`)."""
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


# A right answer to chapter 1's ``check_split_counts`` exercise, as a submission's source: RecBole 1.2's
# ``split_counts`` written out as ``_right_split(num_samples, ratios)``. tests/test_instructor.py and
# tests/test_grading_attacks.py submit it (the attacks call it only when their attack worked).
RIGHT_SPLIT = '''
def _right_split(num_samples, ratios):
    m = int(num_samples)
    counts = [0, int(ratios[1] * m), int(ratios[2] * m)]
    counts[0] = m - counts[1] - counts[2]
    for part in (2, 1):
        if counts[0] <= 1:
            break
        if 0 < ratios[part] * m < 1:
            counts[part] += 1
            counts[0] -= 1
    return tuple(counts)
'''
