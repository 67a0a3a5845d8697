"""The instructor kit (ttt4rec_edu.instructor): generated index, student/solution export, grading.

What is proved here:
- the guide's two generated blocks (chapter overview, exercise index) equal what the function produces from the
  chapters *now*, so the page cannot drift from the notebooks; every check named in the index exists;
- the difficulty/kind rules on a synthetic chapter (explicit class, comment marker, derivation words, thinking);
- broken exercise markup is rejected with the notebook and the cell in the message;
- for every chapter, the student notebook keeps every exercise, contains no line of any solution, and gets one
  answer cell per exercise with the solution's check call; the solutions notebook is the chapter without outputs;
- an exported student notebook (chapter 2) executes from book/ in quick mode without a single error;
- grading a folder: a correct answer passes, a wrong one fails with the checker's hint, an answer cell that raises
  and a notebook that times out give failed rows saying why; the CSV has the documented columns.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttt4rec_edu import exercises as checks
from ttt4rec_edu import instructor as ik

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
PAGE = BOOK / "instructor.md"
CHAPTERS = ik.chapter_paths(BOOK)


def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(text: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": text}


def _write_nb(path: Path, cells) -> Path:
    nb = {"nbformat": 4, "nbformat_minor": 5, "cells": [dict(c, id=f"c{i}") for i, c in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ the index

def test_instructor_page_is_up_to_date():
    text = PAGE.read_text(encoding="utf-8")
    assert ik.render_instructor_page(text, BOOK) == text, (
        "book/instructor.md is out of date with the chapters: run `python -m ttt4rec_edu.exercises index`")


def test_index_covers_every_exercise_and_names_real_checks():
    rows = ik.exercise_index(BOOK)
    labels = [r["label"] for r in rows]
    assert len(labels) == len(set(labels))
    for path in CHAPTERS:
        text = "".join(_src(c) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
        assert sum(1 for r in rows if r["notebook"] == path.name) == text.count("{exercise}")
    for row in rows:
        assert row["kind"] == ("coding" if row["check"] else "thinking")
        if row["check"]:
            assert callable(getattr(checks, row["check"], None)), f"{row['label']}: no {row['check']} in exercises"
    split = next(r for r in rows if r["label"] == "ex-protocol-split")
    assert (split["chapter"], split["check"], split["difficulty"]) == (1, "check_split_counts", 2)


def test_difficulty_and_kind_rules(tmp_path):
    nb = _write_nb(tmp_path / "07_demo.ipynb", [
        _md("# 7. Demo\n\n**What you will learn**\n\n- one thing;\n- another\n  thing.\n\nPrerequisites: none.\n"),
        _md(":::{exercise}\n:label: ex-a\nExplain why. Then more.\n:::"),
        _md(":::{exercise}\n:label: ex-b\n:class: difficulty-3\nThink hard.\n:::"),
        _md(":::{exercise}\n:label: ex-c\nWrite `f(x)`. Check it with `check_ndcg(f)`.\n:::"),
        _md(":::{solution-start} ex-c\n:class: dropdown\n:::"),
        _code("def f(ranks, k):\n    return 1.0\n\nassert check_ndcg(f)\ncheck_ndcg(g)"),
        _md(":::{solution-end}\n:::"),
        _md(":::{exercise}\n:label: ex-d\nDerive the gradient, then code `h`.\n:::"),
        _md(":::{solution-start} ex-d\n:::"), _code("assert check_ndcg(h)"), _md(":::{solution-end}\n:::"),
        _md(":::{exercise} A titled one\n:label: ex-e\n<!-- difficulty: 2 -->\nJust think.\n:::"),
        _md(":::{solution-start} ex-e\n:::"),
        _code("def check_mine(x):\n    return x\n\nassert check_mine(h)"),   # the solution's own helper
        _md(":::{solution-end}\n:::"),
    ])
    got = {e.label: (e.kind, e.difficulty, e.check, e.title) for e in ik.read_exercises(nb)}
    assert got == {"ex-a": ("thinking", 1, None, "Explain why."),
                   "ex-b": ("thinking", 3, None, "Think hard."),
                   "ex-c": ("coding", 2, "check_ndcg", "Write `f(x)`."),
                   "ex-d": ("coding", 3, "check_ndcg", "Derive the gradient, then code `h`."),
                   "ex-e": ("thinking", 2, None, "A titled one")}
    ex_c = next(e for e in ik.read_exercises(nb) if e.label == "ex-c")
    assert (ex_c.check_call, ex_c.signature) == ("check_ndcg(f)", "def f(ranks, k):")  # the asserted call wins
    ov = ik.chapter_overview(nb)
    assert (ov.number, ov.title, ov.objectives, ov.prerequisites) == (7, "Demo", ["one thing;", "another thing."],
                                                                      "none.")
    assert ov.exercise_minutes == 10 + 30 + 20 + 30 + 20


def test_first_sentence_never_leaves_code_or_math_open():
    long = "Use `" + "a" * 60 + "` and $" + "x" * 60 + "$ with {eq}`eq-label` too. Next."
    short = ik.first_sentence(long, limit=80)
    assert short.count("`") % 2 == 0 and short.count("$") % 2 == 0 and short.endswith("…")
    assert ik.first_sentence("a | b. More.") == "a \\| b."


@pytest.mark.parametrize("cells, message", [
    ([_md(":::{solution-start} ex-x\n:::")], "cell 0: solution for 'ex-x'"),
    ([_md(":::{exercise}\n:label: ex-x\nQ\n:::"), _md(":::{solution-start} ex-x\n:::")], "cell 1: solution-start"),
    ([_md(":::{exercise}\nno label\n:::")], "cell 0: an {exercise} without :label:"),
    ([_md(":::{solution-end}\n:::")], "cell 0: solution-end without"),
])
def test_bad_markup_names_notebook_and_cell(tmp_path, cells, message):
    nb = _write_nb(tmp_path / "09_bad.ipynb", cells)
    with pytest.raises(ik.ExerciseMarkupError) as err:
        ik.read_exercises(nb)
    assert "09_bad.ipynb" in str(err.value) and message in str(err.value)


# ------------------------------------------------------------------------------------------------ export

def _meaningful_lines(code: str):
    """Lines of a solution that would give the answer away (not imports, blanks, comments, def or check lines)."""
    for line in code.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", "import ", "from ", "def ", "assert check_", "return")) or len(s) < 8:
            continue
        yield s


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_student_notebook_has_exercises_and_no_solutions(path):
    chapter = json.loads(path.read_text())
    exercises = ik.read_exercises(path)
    student = ik.student_notebook(path)
    text = "\n".join(_src(c) for c in student["cells"])
    in_solution = {i for ex in exercises if ex.solution for i in range(ex.solution[0], ex.solution[1] + 1)}
    statement_text = "\n".join(_src(c) for i, c in enumerate(chapter["cells"]) if i not in in_solution)
    assert "{solution-start}" not in text and "{solution-end}" not in text
    for ex in exercises:
        assert f":label: {ex.label}" in text                                 # every exercise kept
        answers = [c for c in student["cells"] if c["metadata"].get("ttt4rec", {}).get("exercise") == ex.label]
        assert answers and all(ik.ANSWER_TAG in c["metadata"]["tags"] for c in answers)
        if ex.solution:
            a, b = ex.solution
            for cell in chapter["cells"][a:b + 1]:
                cell_text = _src(cell).strip()
                assert not any(_src(c).strip() == cell_text for c in student["cells"] if cell_text)
                if cell["cell_type"] == "code":
                    for line in _meaningful_lines(_src(cell)):
                        if line not in statement_text:      # (a line the chapter shows anyway is no leak)
                            assert line not in text, f"{ex.label}: solution line leaked: {line!r}"
        if ex.check:
            code = _src(answers[0])
            assert answers[0]["cell_type"] == "code" and code.startswith("# your answer here")
            assert code.rstrip().endswith(ex.check_call) and ex.student_function in ex.check_call
            compile(code, ex.label, "exec")
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in student["cells"] if c["cell_type"] == "code")
    solutions = ik.solutions_notebook(path)
    assert [_src(c) for c in solutions["cells"]] == [_src(c) for c in chapter["cells"]]
    assert all(not c.get("outputs") for c in solutions["cells"] if c["cell_type"] == "code")


def test_export_command_line_writes_both_notebooks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "export", "--chapter", "1",
                           "--out", str(tmp_path), "--book", str(BOOK)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_protocol_solutions.ipynb", "01_protocol_student.ipynb"]
    import nbformat
    for p in tmp_path.iterdir():
        nbformat.validate(nbformat.read(str(p), as_version=4))          # valid nbformat 4 (cell ids unique)
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "export", "--chapter", "99",
                           "--out", str(tmp_path), "--book", str(BOOK)], capture_output=True, text=True)
    assert proc.returncode != 0 and "no chapter 99" in proc.stderr


def test_index_command_check_mode(tmp_path):
    page = tmp_path / "instructor.md"
    page.write_text(f"x\n{ik.OVERVIEW_MARKERS[0]}\nold\n{ik.OVERVIEW_MARKERS[1]}\n"
                    f"{ik.INDEX_MARKERS[0]}\nold\n{ik.INDEX_MARKERS[1]}\ny\n")
    assert ik.main(["index", "--book", str(BOOK), "--page", str(page), "--check"]) == 1
    assert ik.main(["index", "--book", str(BOOK), "--page", str(page)]) == 0
    assert ik.main(["index", "--book", str(BOOK), "--page", str(page), "--check"]) == 0
    assert "{ref}`ex-protocol-split <ex-protocol-split>`" in page.read_text()


@pytest.mark.slow
def test_student_notebook_runs_from_book_dir(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    student, _ = ik.export_chapter(BOOK, 2, tmp_path)
    nb = nbformat.read(str(student), as_version=4)
    monkeypatch.setenv("TTT4REC_QUICK", "1")
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    NotebookClient(nb, timeout=120, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(BOOK)}}).execute()
    errors = [(i, o["ename"]) for i, c in enumerate(nb.cells) for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert errors == []
    answer = next(c for c in nb.cells if c.metadata.get("ttt4rec", {}).get("check") == "check_rope_rotation")
    printed = "".join(o.get("text", "") for o in answer.outputs)
    assert printed.startswith("✗ check_rope_rotation")     # the empty stub fails clearly, it does not crash


# ------------------------------------------------------------------------------------------------ grading

def test_parse_check_lines_keeps_hints():
    text = "noise\n✓ check_a: fine.\n✗ check_b: for n=3: wrong\n  Hint: do it right.\nafter\n"
    assert ik.parse_check_lines(text) == [("check_a", True, "fine."),
                                          ("check_b", False, "for n=3: wrong\nHint: do it right.")]


CORRECT_SPLIT = '''from ttt4rec_edu.exercises import check_split_counts

def my_split_counts(num_samples, ratios):
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

check_split_counts(my_split_counts)
'''
WRONG_NDCG = '''import torch
from ttt4rec_edu.exercises import check_ndcg

def my_ndcg(ranks, k):
    r = torch.as_tensor(ranks, dtype=torch.float64)
    return float(torch.where(r <= k, 1.0 / torch.log2(r), torch.zeros_like(r)).mean())

check_ndcg(my_ndcg)
'''


def _submission(answers: dict, extra=()) -> dict:
    student = ik.student_notebook(BOOK / "01_protocol.ipynb")
    cells = []
    for cell in student["cells"]:
        info = cell["metadata"].get("ttt4rec", {})
        if cell["cell_type"] == "code" and not info:
            continue                       # the chapter's own code is not graded; leaving it out keeps this fast
        if info.get("exercise") in answers and cell["cell_type"] == "code":
            cell = dict(cell, source=answers[info["exercise"]])
        cells.append(cell)
    student["cells"] = list(extra) + cells
    return student


@pytest.mark.slow
def test_grade_folder(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    good_bad = _submission({"ex-protocol-split": CORRECT_SPLIT, "ex-protocol-ndcg": WRONG_NDCG})
    (subs / "alice.ipynb").write_text(json.dumps(good_bad))
    raising = _submission({"ex-protocol-split": "raise RuntimeError('oops')",
                                     "ex-protocol-ndcg": "x = 1"})
    (subs / "bob.ipynb").write_text(json.dumps(raising))
    slow = _submission({}, extra=[dict(_code("import time\ntime.sleep(30)"), id="slow")])
    (subs / "carol.ipynb").write_text(json.dumps(slow))
    out = tmp_path / "grades.csv"
    assert ik.main(["grade", "--submissions", str(subs), "--out", str(out), "--timeout", "8"]) == 0
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["notebook", "exercise", "check", "passed", "message"]
    table = {(r["notebook"], r["check"]): r for r in rows}
    assert len(rows) == len(table) == 6
    assert table["alice.ipynb", "check_split_counts"]["passed"] == "True"
    assert table["alice.ipynb", "check_split_counts"]["exercise"] == "ex-protocol-split"
    wrong = table["alice.ipynb", "check_ndcg"]
    assert wrong["passed"] == "False" and wrong["exercise"] == "ex-protocol-ndcg" and "Hint:" in wrong["message"]
    assert table["bob.ipynb", "check_split_counts"]["message"] == "the answer cell raised RuntimeError: oops"
    assert table["bob.ipynb", "check_ndcg"]["message"] == "the answer cell ran but never called check_ndcg"
    for check in ("check_split_counts", "check_ndcg"):
        row = table["carol.ipynb", check]
        assert row["passed"] == "False" and "timeout (8 s)" in row["message"]
