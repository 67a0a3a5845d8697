"""The contract every exercise check keeps (ttt4rec_edu.exercises._core) and the package's face
(ttt4rec_edu.exercises): a verdict prints once and raises in strict mode, an exception in the reader's code is
reported and not raised, and the package docstring's table lists every check with its chapter.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ttt4rec_edu import exercises
from ttt4rec_edu.data.protocol import split_counts
from ttt4rec_edu.exercises import ExerciseFailed, ExerciseResult, check_split_counts

from exercise_asserts import _not_strict, assert_fails  # noqa: F401  (autouse fixture)


# ---- ExerciseResult and strict mode ---------------------------------------------------------------------

def test_result_prints_and_strict_mode_raises(monkeypatch, capsys):
    wrong = lambda n, ratios: (n, 0, 0)  # noqa: E731
    assert_fails(check_split_counts(wrong), capsys, "num_samples=2", "expected (1, 0, 1)")
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(ExerciseFailed, match="check_split_counts"):
        check_split_counts(wrong)
    assert check_split_counts(split_counts).passed  # strict mode lets a right answer through
    assert bool(ExerciseResult("x", True, "ok")) and not ExerciseResult("x", False, "no")


def test_result_is_shown_once_in_jupyter(capsys):
    result = check_split_counts(split_counts)
    assert capsys.readouterr().out.count("✓") == 1
    result._ipython_display_()          # the cell's last line: already printed, not shown again
    assert capsys.readouterr().out == ""
    ExerciseResult("by hand", False, "hint")._ipython_display_()   # never printed: shown
    assert capsys.readouterr().out.startswith("✗ by hand")


def test_exception_in_student_code_is_reported_not_raised(capsys):
    def broken(n, ratios):
        raise KeyError("oops")
    assert_fails(check_split_counts(broken), capsys, "raised KeyError", "num_samples=1", hint=False)


# ---- the package: one __all__, a table of every check, no grader loaded ------------------------------------

BOOK = Path(__file__).resolve().parents[1] / "book"
# the book's parts (_toc.yml) and the module of ttt4rec_edu.exercises that holds their checks
PARTS = {"foundations": {1, 2}, "ttt_layer": {3, 4, 5}, "model_and_baselines": {6, 7, 8}, "experiments": {9, 10, 11}}


def _table() -> dict:
    """``check name -> chapter`` for each row of the package docstring's table of checks."""
    rows = re.findall(r"^``(check_\w+)\(\w+\)``.*?\s(\d+)$", exercises.__doc__, re.MULTILINE)
    assert len(rows) == len({name for name, _ in rows}), "a check has two rows"
    return {name: int(chapter) for name, chapter in rows}


def test_every_check_is_in_all_and_in_the_docstring_table_with_its_chapter():
    from ttt4rec_edu.exercises.instructor import exercise_index
    public = [name for name in exercises.__all__ if name.startswith("check_")]
    assert len(exercises.__all__) == len(set(exercises.__all__))
    assert all(callable(getattr(exercises, name)) for name in exercises.__all__ if name.startswith("check_"))
    assert sorted(public) == sorted(name for name in dir(exercises) if name.startswith("check_"))
    table = _table()
    assert sorted(table) == sorted(public), "the package docstring's table must list every check, and only those"
    called_in = {}
    for row in exercise_index(BOOK):
        for check in row["checks"]:
            called_in.setdefault(check, set()).add(row["chapter"])
    for name, chapter in table.items():
        assert called_in.get(name, {chapter}) == {chapter}, f"{name}: the table says chapter {chapter}, the book " \
                                                            f"calls it in {sorted(called_in[name])}"
        module = getattr(exercises, name).__module__
        assert chapter in PARTS[module.rpartition(".")[2]], f"{name} (chapter {chapter}) lives in {module}"


def test_importing_the_checks_loads_neither_the_grader_nor_matplotlib():
    code = ("import sys, ttt4rec_edu.exercises; "
            "print(sorted(m for m in ('ttt4rec_edu.exercises.instructor', 'matplotlib', 'IPython', 'nbformat') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_printed_verdict_fits_the_page_and_keeps_every_word():
    """A verdict and its hint wrap to the book's 88 columns at spaces, continuations indented under their line;
    the words, their order and the hint's own line survive; a line that fits is left as it is."""
    from ttt4rec_edu.exercises._core import PAGE_WIDTH, ExerciseResult

    words = " ".join(f"word{i}" for i in range(60))
    message = f"{words}\n  Hint: {words}\nshort line"
    text = str(ExerciseResult("check_long", False, message))
    lines = text.splitlines()
    assert max(map(len, lines)) <= PAGE_WIDTH
    assert " ".join(text.split()) == " ".join(f"✗ check_long: {message}".split())
    hint = next(i for i, line in enumerate(lines) if line.startswith("  Hint:"))
    assert lines[hint + 1].startswith("    word") and lines[-1] == "short line"
    assert str(ExerciseResult("c", True, "fits")) == "✓ c: fits"
