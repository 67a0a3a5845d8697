"""The instructor kit (ttt4rec_edu.exercises.instructor): generated index, student/solution export, grading.

Grading's defences and robustness are proved in tests/test_grading.py and tests/test_grading_attacks.py.

What is proved here:
- the guide's two generated blocks (chapter overview, exercise index) equal what the function produces from the
  chapters *now*, so the page cannot drift from the notebooks; every check named in the index exists;
- the difficulty/kind rules on a synthetic chapter (explicit class, comment marker, derivation words, thinking);
- broken exercise markup is rejected with the notebook and the cell in the message;
- for every chapter, the student notebook keeps every exercise, contains no line of any solution, and gets one
  answer cell per exercise with the solution's check call; the solutions notebook is the chapter without outputs;
- an exported student notebook (chapter 2) executes from book/ in quick mode without a single error;
- grading a library cloned under /tmp works (the sandbox has a /tmp of its own); an exercise whose solution
  calls two checks, one on a value expression ``(t1, t2)``, is graded on both, each in its column;
- every misuse of the command line is one line on stderr and exit status 2; --timeout 0, < 0 and NaN are refused;
  --book defaults to the book beside the library.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from exercise_asserts import RIGHT_SPLIT

from ttt4rec_edu import exercises as checks
from ttt4rec_edu.cli import main as cli_main
from ttt4rec_edu.exercises import instructor as ik
from ttt4rec_edu.exercises.grading import _chapter_of, _read_submission

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
PAGE = BOOK / "instructor.md"
CHAPTERS = ik.chapter_paths(BOOK)


def instructor_main(argv) -> int:
    """``python -m ttt4rec_edu instructor ARGV`` in this process; returns the exit status."""
    return cli_main(["instructor", *argv])


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
        "book/instructor.md is out of date with the chapters: run `python -m ttt4rec_edu instructor index`")


def test_index_covers_every_exercise_and_names_real_checks():
    rows = ik.exercise_index(BOOK)
    labels = [r["label"] for r in rows]
    assert len(labels) == len(set(labels))
    for path in CHAPTERS:
        text = "".join(_src(c) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
        assert sum(1 for r in rows if r["notebook"] == path.name) == text.count("{exercise}")
    for row in rows:
        assert row["kind"] == ("coding" if row["check"] else "thinking")
        assert row["checks"][:1] == ([row["check"]] if row["check"] else [])
        for check in row["checks"]:
            assert callable(getattr(checks, check, None)), f"{row['label']}: no {check} in exercises"
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
        _md(":::{exercise}\n:label: ex-f\nProve that the norm is kept.\n:::"),        # a proof is never ★
        _md(":::{exercise}\n:label: ex-g\nMeasure it.\n:::"),
        _md(":::{solution-start} ex-g\n:::"), _code("print(1)"), _md(":::{solution-end}\n:::"),
    ])
    got = {e.label: (e.kind, e.difficulty, e.check, e.title) for e in ik.read_exercises(nb)}
    assert got.pop("ex-f") == ("thinking", 3, None, "Prove that the norm is kept.")
    assert got.pop("ex-g") == ("thinking", 2, None, "Measure it.")        # its answer runs code
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
    assert ov.exercise_minutes == 10 + 30 + 20 + 30 + 20 + 30 + 20


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
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu", "instructor", "export", "--chapter", "1",
                           "--out", str(tmp_path), "--book", str(BOOK)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_protocol_solutions.ipynb", "01_protocol_student.ipynb"]
    import nbformat
    for p in tmp_path.iterdir():
        nbformat.validate(nbformat.read(str(p), as_version=4))          # valid nbformat 4 (cell ids unique)
    # the older spelling, kept as an alias, is the same command
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "export", "--chapter", "99",
                           "--out", str(tmp_path), "--book", str(BOOK)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("python -m ttt4rec_edu instructor export: error: no chapter 99"), proc.stderr


def test_index_command_check_mode(tmp_path):
    page = tmp_path / "instructor.md"
    page.write_text(f"x\n{ik.OVERVIEW_MARKERS[0]}\nold\n{ik.OVERVIEW_MARKERS[1]}\n"
                    f"{ik.INDEX_MARKERS[0]}\nold\n{ik.INDEX_MARKERS[1]}\ny\n")
    assert instructor_main(["index", "--book", str(BOOK), "--page", str(page), "--check"]) == 1
    assert instructor_main(["index", "--book", str(BOOK), "--page", str(page)]) == 0
    assert instructor_main(["index", "--book", str(BOOK), "--page", str(page), "--check"]) == 0
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

CORRECT_SPLIT = ("from ttt4rec_edu.exercises import check_split_counts\n" + RIGHT_SPLIT
                 + "\ndef my_split_counts(num_samples, ratios):\n    return _right_split(num_samples, ratios)\n"
                 + "\ncheck_split_counts(my_split_counts)\n")
CORRECT_NDCG = '''import torch
from ttt4rec_edu.exercises import check_ndcg

def my_ndcg(ranks, k):
    r = torch.as_tensor(ranks, dtype=torch.float64)
    return float(torch.where(r <= k, 1.0 / torch.log2(r + 1), torch.zeros_like(r)).mean())

check_ndcg(my_ndcg)
'''


def _demo_book(root: Path) -> Path:
    """A one-chapter book for the grading tests, so that they do not change when the real chapters gain
    exercises: two coding exercises (the chapter 1 checks, same labels) and one thinking exercise."""
    book = root / "demo_book"
    book.mkdir(exist_ok=True)
    cells = [_md("# 1. Demo\n")]
    for label, check, function, solution in (("ex-protocol-split", "check_split_counts", "my_split_counts",
                                              CORRECT_SPLIT),
                                             ("ex-protocol-ndcg", "check_ndcg", "my_ndcg", CORRECT_NDCG)):
        cells += [_md(f":::{{exercise}}\n:label: {label}\nWrite `{function}`. Check it with `{check}({function})`."
                      "\n:::"),
                  _md(f":::{{solution-start}} {label}\n:class: dropdown\n:::"), _code(solution),
                  _md(":::{solution-end}\n:::")]
    cells += [_md(":::{exercise}\n:label: ex-demo-think\nExplain why.\n:::"), _code("x = 1  # the chapter's code")]
    _write_nb(book / "01_demo.ipynb", cells)
    return book


def _submission(answers: dict, extra=()) -> dict:
    """The demo chapter's student notebook with ``answers`` (label -> code) in its answer cells; ``extra`` cells
    first."""
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        student = ik.student_notebook(_demo_book(Path(root)) / "01_demo.ipynb")
    cells = []
    for cell in student["cells"]:
        info = cell["metadata"].get("ttt4rec", {})
        if info.get("exercise") in answers and cell["cell_type"] == "code":
            cell = dict(cell, source=answers[info["exercise"]])
        cells.append(cell)
    student["cells"] = list(extra) + cells
    return student


def _grade(tmp_path, submissions: dict, *options) -> tuple:
    """Write ``submissions`` (name -> notebook dict or raw text) into a folder, grade it with the demo book through
    the command line in a subprocess; return (exit status, stdout, stderr, CSV rows by submission, reports)."""
    subs = tmp_path / "subs"
    subs.mkdir()
    for name, content in submissions.items():
        (subs / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    out = tmp_path / "out" / "grades.csv"
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "grade", "--submissions", str(subs),
                           "--out", str(out), "--book", str(_demo_book(tmp_path)), *options],
                          capture_output=True, text=True, timeout=900)
    rows = {}
    if out.exists():
        with out.open(newline="", encoding="utf-8") as fh:
            rows = {r["submission"]: r for r in csv.DictReader(fh)}
    return proc.returncode, proc.stdout, proc.stderr, rows, out.with_name("grades_reports")


def test_timeout_must_be_positive_and_misuse_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    calls = [
        ["grade", "--submissions", str(tmp_path), "--out", "g.csv", "--timeout", "0"],
        ["grade", "--submissions", str(tmp_path), "--out", "g.csv", "--timeout", "-5"],
        ["grade", "--submissions", str(tmp_path), "--out", "g.csv", "--timeout", "nan"],
        ["grade", "--submissions", str(tmp_path), "--out", "g.csv", "--memory-mb", "inf"],
        ["grade", "--submissions", str(tmp_path / "empty"), "--out", str(tmp_path / "g.csv")],
        ["grade", "--submissions", str(tmp_path / "nowhere"), "--out", str(tmp_path / "g.csv")],
        ["grade", "--submissions", str(tmp_path), "--out", str(tmp_path / "empty")],
        ["grade", "--submissions", str(tmp_path), "--out", "g.csv", "--chapter", "99"],
        ["grade", "--out", "g.csv"],
        ["export", "--chapter", "99", "--out", str(tmp_path / "h")],
        ["export", "--chapter", "1", "--out", str(tmp_path / "file.txt")],
        ["export", "--chapter", "one", "--out", str(tmp_path / "h")],
        ["export", "--chapter", "1", "--out", str(tmp_path / "h"), "--book", str(tmp_path / "empty")],
        ["index", "--page", str(tmp_path / "missing.md")],
        ["frobnicate"],
    ]
    for argv in calls:
        try:
            code = instructor_main(argv)
        except SystemExit as exc:          # argparse's own errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "h").exists()
    with pytest.raises(ik.GradingError, match="--timeout must be a finite number > 0 and at most"):
        ik.Limits(timeout=float("nan")).validate()
    # and through the real entry point, as a user types it
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "grade", "--submissions", ".",
                           "--out", "g.csv", "--timeout", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--timeout: must be a finite number > 0" in proc.stderr


def test_chapter_is_read_from_metadata_labels_or_name(tmp_path):
    student = ik.student_notebook(BOOK / "02_rope.ipynb")
    assert _chapter_of(student, BOOK, None) == 2                     # the export's metadata
    assert _chapter_of(ik.solutions_notebook(BOOK / "02_rope.ipynb"), BOOK, None) == 2
    no_meta = dict(student, metadata={})
    assert _chapter_of(no_meta, BOOK, None) == 2                     # its answer cells' labels
    bare = {"cells": [], "metadata": {}}
    assert _chapter_of(bare, BOOK, None, "03_inner_loop_student (1).ipynb") == 3
    assert _chapter_of(bare, BOOK, 4, "03_x.ipynb") == 4             # --chapter wins
    with pytest.raises(ik.GradingError, match="pass --chapter"):
        _chapter_of(bare, BOOK, None, "alice.ipynb")
    mangled = dict(student, metadata={"ttt4rec": "x"},
                   cells=[dict(c, metadata={"ttt4rec": 7}) for c in student["cells"]])
    assert _chapter_of(mangled, BOOK, None, "02_rope_student.ipynb") == 2     # mangled metadata: no crash
    for bad in ({"cells": "x"}, {"cells": [1]}, {"cells": [{"cell_type": "code", "source": 5}]}, [], "x"):
        path = tmp_path / "bad.ipynb"
        path.write_text(json.dumps(dict(bad, nbformat=4, nbformat_minor=5, metadata={})
                                   if isinstance(bad, dict) else bad))
        with pytest.raises(ik.GradingError, match="not a readable notebook"):
            _read_submission(path)


def test_book_defaults_to_the_one_beside_the_library(tmp_path):
    assert ik.default_book_dir() == BOOK
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "export", "--chapter", "2",
                           "--out", str(tmp_path / "h")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    student = json.loads((tmp_path / "h" / "02_rope_student.ipynb").read_text())
    assert student["metadata"]["ttt4rec"] == {"chapter": 2, "notebook": "02_rope.ipynb"}


@pytest.mark.slow
def test_library_under_tmp_stays_visible_inside_the_private_tmp(tmp_path):
    """A fresh clone in /tmp (the instructor guide's walk-through): the sandbox hides the machine's /tmp from
    the notebook but shows it the library it imports (read-only)."""
    import shutil
    lib = tmp_path / "clone"
    shutil.copytree(REPO / "ttt4rec_edu", lib / "ttt4rec_edu",
                    ignore=shutil.ignore_patterns("__pycache__", "resources"))
    shutil.copytree(REPO / "ttt4rec_edu" / "resources", lib / "ttt4rec_edu" / "resources")
    subs = tmp_path / "subs"
    subs.mkdir()
    good = {"ex-protocol-split": CORRECT_SPLIT, "ex-protocol-ndcg": CORRECT_NDCG}
    (subs / "a.ipynb").write_text(json.dumps(_submission(good)), encoding="utf-8")
    out = tmp_path / "g.csv"
    proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "grade", "--submissions", str(subs),
                           "--out", str(out), "--book", str(_demo_book(tmp_path)), "--timeout", "300"], cwd=lib,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert row["status"] == "ok", row
    assert "bubblewrap" in (tmp_path / "g_reports" / "a.ipynb.md").read_text()


@pytest.mark.slow
def test_an_exercise_with_two_checks_is_graded_on_both(tmp_path):
    """The solution calls two different checks, one on a value expression: both are graded, each its column."""
    book = tmp_path / "book2"
    book.mkdir()
    _write_nb(book / "01_two.ipynb", [
        _md("# 1. Two\n"),
        _md(":::{exercise}\n:label: ex-two\n(a) Find `t1 != t2` equal in float32. (b) Write `my_ndcg`.\n:::"),
        _md(":::{solution-start} ex-two\n:::"),
        _code("from ttt4rec_edu.exercises import check_float32_collision\n"
              "t1 = 1e9\nt2 = t1 + 3\ncheck_float32_collision((t1, t2))\n" + CORRECT_NDCG
              + "check_ndcg(WRONG)  # a demonstration on a wrong answer is not graded\n"),
        _md(":::{solution-end}\n:::")])
    (ex,) = ik.read_exercises(book / "01_two.ipynb")
    assert ex.graded == [("check_ndcg", "my_ndcg"), ("check_float32_collision", "(t1, t2)")]
    student = ik.student_notebook(book / "01_two.ipynb")
    answer = next(_src(c) for c in student["cells"] if c["metadata"].get("ttt4rec"))
    assert answer.rstrip().endswith("check_float32_collision((t1, t2))\ncheck_ndcg(my_ndcg)")
    subs = tmp_path / "subs"
    subs.mkdir()
    solutions = ik.solutions_notebook(book / "01_two.ipynb")
    (subs / "right.ipynb").write_text(json.dumps(solutions))
    same = json.loads(json.dumps(solutions))
    for cell in same["cells"]:
        cell["source"] = _src(cell).replace("t2 = t1 + 3", "t2 = t1")
    (subs / "same.ipynb").write_text(json.dumps(same))
    out = tmp_path / "g.csv"
    assert instructor_main(["grade", "--submissions", str(subs), "--out", str(out), "--book", str(book),
                    "--timeout", "300"]) == 0
    with out.open(newline="", encoding="utf-8") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    assert [(r["status"], r["passed"], r["ex-two:check_ndcg"], r["ex-two:check_float32_collision"])
            for r in (rows["right.ipynb"], rows["same.ipynb"])] == [("ok", "2", "pass", "pass"),
                                                                     ("failed", "1", "pass", "fail")]
    assert "ex-two:check_float32_collision" in rows["same.ipynb"]["reason"]
