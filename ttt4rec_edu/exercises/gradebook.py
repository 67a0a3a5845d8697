"""Grade a folder: one sandboxed run per file, then the gradebook (CSV), a report per file and Gradescope's
``results.json``.

- Every file gets its own row, whatever it is (a broken file is ``unreadable``, a hang ``timeout``).
- Report names are unique per submission path (:func:`report_stem`): ``x.ipynb`` beside ``x.py``, or
  ``s31/y.ipynb`` beside ``s31__y.ipynb``, never share one.
- A CSV cell never starts a formula (``=``, ``+``, ``-``, ``@``, tab, carriage return): such a cell gets a
  leading ``'`` (:func:`csv_cell`).
- Ctrl-C or SIGTERM stops the running sandbox, removes its scratch, writes the rows finished so far and ends in a
  :class:`~ttt4rec_edu.exercises.sandbox.GradingError` naming the signal (exit status 2 on the command line).
- Gradescope: with exactly one notebook among the files, ``results.json`` is written beside the CSV; when the
  CSV goes to Gradescope's ``/autograder/results`` (or ``gradescope=True``) and there is not exactly one
  notebook, that is an error, not a silent success.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence
from urllib.parse import quote

from .chapters import default_book_dir
from .grading import Submission, column_name, grade_submission, snapshot_workdir
from .sandbox import UNSANDBOXED, GradingError, Limits, find_sandbox

__all__ = ["GRADESCOPE_RESULTS", "csv_cell", "gradescope_results", "grade_folder", "report_markdown",
           "report_stem", "submission_files"]

GRADESCOPE_RESULTS = Path("/autograder/results")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Interrupted(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def submission_files(folder: Path) -> List[Path]:
    """Every file of a submissions folder (recursively), hidden files and notebook checkpoints left out."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def report_stem(relative: Path) -> str:
    """A file name unique to one submission path: the path, ``/`` and ``%`` escaped (``s31/y.ipynb`` ->
    ``s31%2Fy.ipynb``), cut to a safe length with a hash of the whole path when it is long."""
    text = Path(relative).as_posix()
    stem = quote(text, safe=" _.,()[]{}+=@-")
    if len(stem.encode()) > 150:
        stem = stem[:100].rstrip("%") + "-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return stem


def csv_cell(value):
    """A value a spreadsheet shows as text: a string starting like a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def report_markdown(sub: Submission) -> str:
    lines = [f"# Grading report: {sub.name}", "",
             f"- chapter: {sub.chapter if sub.chapter is not None else 'unknown'}",
             f"- status: **{sub.status}** — {sub.reason}",
             f"- checks passed: {sub.passed} / {len(sub.verdicts)}", f"- run time: {sub.seconds:.1f} s", ""]
    if sub.verdicts:
        lines += ["## Coding exercises", "", "| Exercise | Check | Result |", "|---|---|---|"]
        for v in sub.verdicts:
            lines.append(f"| {v.label} | `{v.check}` | {'✓ passed' if v.passed else '✗ failed'} |")
        lines.append("")
        for v in sub.verdicts:
            if not v.passed:
                lines += [f"### {v.label} (`{v.check}`)", "", "```text", v.message, "```", ""]
    if sub.thinking:
        lines += ["## Thinking exercises (read by hand)", ""] + [f"- {label}" for label in sub.thinking] + [""]
    if sub.cell_errors:
        lines += ["## Cells that raised an error", ""] + [f"- {e}" for e in sub.cell_errors] + [""]
    if sub.isolation:
        lines += ["## How it ran", ""] + [f"- {k}: {v}" for k, v in sub.isolation.items()] + [""]
    return "\n".join(lines)


def gradescope_results(sub: Submission) -> dict:
    """The submission in Gradescope's autograder ``results.json`` format (one test per coding exercise)."""
    tests = [{"name": f"{v.label} ({v.check})", "score": 1.0 if v.passed else 0.0, "max_score": 1.0,
              "status": "passed" if v.passed else "failed", "output": v.message} for v in sub.verdicts]
    return {"score": float(sub.passed), "execution_time": round(sub.seconds, 1),
            "output": f"{sub.status}: {sub.reason}" + (
                f"\nThinking exercises are graded by hand: {', '.join(sub.thinking)}" if sub.thinking else ""),
            "tests": tests, "visibility": "visible", "stdout_visibility": "hidden"}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_csv(out_csv: Path, results: Sequence[Submission], sandboxed: bool) -> None:
    labels: List[str] = []
    for sub in results:
        labels += [column_name(v, sub.verdicts) for v in sub.verdicts if column_name(v, sub.verdicts) not in labels]
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["submission", "chapter", "status", "passed", "checks", "reason", "sandbox"]
                        + [csv_cell(label) for label in labels])
        for sub in results:
            marks = {column_name(v, sub.verdicts): "pass" if v.passed else "fail" for v in sub.verdicts}
            row = [sub.name, "" if sub.chapter is None else sub.chapter, sub.status, sub.passed, len(sub.verdicts),
                   sub.reason, "bubblewrap" if sandboxed else UNSANDBOXED]
            writer.writerow([csv_cell(v) for v in row + [marks.get(label, "") for label in labels]])


class _Signals:
    """SIGINT and SIGTERM raise :class:`_Interrupted` once (in the main thread); the old handlers come back after."""

    def __enter__(self):
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.old[signum] = signal.signal(signum, self._raise)
        self.fired = False
        return self

    def _raise(self, signum, frame):
        if not self.fired:
            self.fired = True
            raise _Interrupted(signum)

    def __exit__(self, *exc):
        for signum, handler in self.old.items():
            signal.signal(signum, handler)
        return False


def grade_folder(submissions: Path, out_csv: Path, limits: Optional[Limits] = None,
                 book_dir: Optional[Path] = None, chapter: Optional[int] = None, workdir: Optional[Path] = None,
                 allow_root: bool = False, cut_network: bool = True,
                 progress: Optional[Callable[[Submission], None]] = None, python: Optional[str] = None,
                 sandbox: bool = True, gradescope: Optional[bool] = None) -> List[Submission]:
    """Grade every file under ``submissions``, one after the other, each in its own sandbox.

    Writes ``out_csv`` (one row per file: submission, chapter, status, passed, checks, reason, sandbox, then one
    column per coding exercise: ``pass`` / ``fail``), and beside it a folder ``<stem>_reports/`` with, per
    submission, a markdown report, a Gradescope-style ``results.json`` and the notebook's printed output; with
    exactly one notebook among the files, also ``results.json`` beside the CSV (what a Gradescope autograder
    returns). ``python``: the interpreter the sandboxes run (default: this one). ``sandbox=False`` grades
    without a sandbox (trusted files only): it says so on stderr and in every row.
    """
    submissions, out_csv = Path(submissions), Path(out_csv)
    files = submission_files(submissions)
    if not files:
        raise GradingError(f"no files to grade under {submissions}")
    limits = (limits or Limits()).validate()
    book_dir = Path(book_dir) if book_dir is not None else default_book_dir()
    reports = out_csv.with_name(f"{out_csv.stem}_reports")
    reports.mkdir(parents=True, exist_ok=True)
    if gradescope is None:
        gradescope = out_csv.parent.resolve() == GRADESCOPE_RESULTS
    results: List[Submission] = []
    active: set = set()
    staging = Path(tempfile.mkdtemp(prefix="ttt4rec-workdir-"))
    interrupted = None
    with _Signals():
        try:
            box = find_sandbox(python, sandbox, allow_root, cut_network,
                               snapshot_workdir(workdir, book_dir, staging), private=[submissions, reports])
            if not sandbox:
                print(f"WARNING: grading WITHOUT a sandbox (--no-sandbox): {UNSANDBOXED}. Use it for trusted "
                      "files only.", file=sys.stderr, flush=True)
            for path in files:
                relative = path.relative_to(submissions)
                stem = report_stem(relative)
                try:
                    sub = grade_submission(path, book_dir, limits, chapter, workdir, allow_root, cut_network,
                                           log_path=reports / f"{stem}.log", sandbox=box, active=active)
                except Exception as exc:   # noqa: BLE001 - one file must never stop the run
                    sub = Submission(path.name, "crashed",
                                     f"the grader failed on this file: {type(exc).__name__}: {exc}")
                sub.name = relative.as_posix()
                (reports / f"{stem}.md").write_text(report_markdown(sub) + "\n", encoding="utf-8")
                _write_json(reports / f"{stem}.results.json", gradescope_results(sub))
                results.append(sub)
                if progress:
                    progress(sub)
        except _Interrupted as exc:
            interrupted = exc.signum
        finally:
            for run in list(active):           # an interrupted run: its sandbox and scratch go too
                run.stop()
            shutil.rmtree(staging, ignore_errors=True)
    _write_csv(out_csv, results, sandbox)
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        raise GradingError(f"grading interrupted by {name} after {len(results)} of {len(files)} files: the "
                           f"sandboxes were stopped and {out_csv} holds the {len(results)} finished rows")
    notebooks = [sub for sub, path in zip(results, files) if path.suffix == ".ipynb"]
    if len(notebooks) == 1:
        _write_json(out_csv.parent / "results.json", gradescope_results(notebooks[0]))
    elif gradescope:
        raise GradingError(f"Gradescope needs exactly one notebook in {submissions}, found {len(notebooks)}: "
                           f"{out_csv.parent / 'results.json'} was not written")
    return results
