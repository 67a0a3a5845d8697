"""Grade one submission: its notebook runs in a sandbox, its answers come back as plain data, the grader's own
checks give the verdicts.

The steps of :func:`grade_submission`:

1. read the file and work out its chapter; take that chapter's coding exercises *from the book* (which check
   grades which function is never the submission's to say);
2. start the submission's own process in its sandbox (:mod:`ttt4rec_edu.exercises.sandbox`) and send it the
   notebook's code cells (:mod:`ttt4rec_edu.exercises.worker` runs them, going on after a cell that raises);
3. for each exercise, call the grader's own ``check_*`` *in the grader's process* on a stand-in for the student's
   function: each time the check calls it, the inputs the check chose go to the submission's process, the
   student's function runs there, and only its answer comes back, rebuilt from plain data
   (:mod:`ttt4rec_edu.exercises.wire`). The check compares it with expected values the submission never sees;
4. stop the sandbox (everything in it dies), and turn what happened into a status and a reason.

Nothing the student's code does can reach the check, its expected values or the verdict: it runs in another
process, under another user, and what it sends is numbers.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .chapters import (Exercise, _source, chapter_number, chapter_paths, default_book_dir, exercise_index,
                       find_chapter, read_exercises)
from .sandbox import INSIDE, GradingError, Limits, Sandbox, find_sandbox, kill_uid, worker_env
from .wire import WireError, decode, encode, read_frame, write_frame

__all__ = ["STATUSES", "ExerciseVerdict", "NotPlainData", "Submission", "WorkerRun", "column_name", "grade_submission",
           "snapshot_workdir"]

STATUSES = ("ok", "failed", "timeout", "crashed", "unreadable")
LOG_TAIL = 200_000                     # bytes of a notebook's printed output kept for its log
_WORKER_BOOT = "from ttt4rec_edu.exercises.worker import main; main()"
_CHECKS = "ttt4rec_edu.exercises"


@dataclass
class ExerciseVerdict:
    label: str
    check: str
    passed: bool
    message: str


@dataclass
class Submission:
    """The outcome for one submitted file: ``status`` in :data:`STATUSES`, the reason, one verdict per exercise."""

    name: str
    status: str
    reason: str = ""
    chapter: Optional[int] = None
    verdicts: List[ExerciseVerdict] = field(default_factory=list)
    thinking: List[str] = field(default_factory=list)        # labels graded by hand
    cell_errors: List[str] = field(default_factory=list)     # "cell 7: NameError: ..."
    isolation: Dict[str, str] = field(default_factory=dict)  # what was enforced for this run
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(v.passed for v in self.verdicts)


class NotPlainData(Exception):
    """The student's function returned something that cannot cross as plain data (an object, a function, ...)."""


class _Stop(BaseException):
    """Ends a row early (``timeout`` or ``crashed``); a BaseException, so no check's ``except Exception`` eats it."""

    def __init__(self, status: str, detail: Optional[str] = None):
        super().__init__(status)
        self.status, self.detail = status, detail


# ---------------------------------------------------------------------------------------- step 1: the file

def _read_submission(path: Path) -> dict:
    """The notebook as nbformat 4, or :class:`GradingError` with a one-line reason."""
    if path.suffix != ".ipynb":
        raise GradingError(f"not a notebook ({path.suffix or 'no extension'})")
    try:
        import nbformat
        with warnings.catch_warnings():     # a missing cell id is no reason to fill the terminal
            warnings.simplefilter("ignore")
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except UnicodeDecodeError:
        raise GradingError("not a text file (not UTF-8)") from None
    except Exception as exc:   # nbformat raises several types for broken JSON / schema
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise GradingError(f"not a readable notebook ({type(exc).__name__}: {first.split(': ')[0][:200]})") \
            from None
    cells = nb.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise GradingError("not a readable notebook (no list of cells)")
    for i, cell in enumerate(cells):
        source = cell.get("source", "")
        if not (isinstance(source, str) or (isinstance(source, list) and all(isinstance(x, str) for x in source))):
            raise GradingError(f"not a readable notebook (cell {i} has no text source)")
    return nb


def _cell_info(cell: dict) -> dict:
    """The ``ttt4rec`` metadata the export wrote into a cell (a submission may have mangled it: then {})."""
    meta = cell.get("metadata")
    info = meta.get("ttt4rec") if isinstance(meta, dict) else None
    return info if isinstance(info, dict) else {}


def _chapter_of(nb: dict, book_dir: Path, chapter: Optional[int], name: str = "") -> int:
    if chapter is not None:
        return chapter
    meta = _cell_info(nb)
    if isinstance(meta.get("chapter"), int):
        return meta["chapter"]
    labels = {_cell_info(c).get("exercise") for c in nb["cells"]}
    by_label = {row["label"]: row["chapter"] for row in exercise_index(book_dir)}
    found = {by_label[label] for label in labels if label in by_label}
    if len(found) == 1:
        return found.pop()
    return _chapter_from_name(name, book_dir)


def _chapter_from_name(name: str, book_dir: Path) -> int:
    """The chapter a file name starts with (``03_inner_loop_student.ipynb``), if the book has it."""
    match = re.match(r"(\d\d)_", name)
    if match and any(chapter_number(p) == int(match.group(1)) for p in chapter_paths(book_dir)):
        return int(match.group(1))
    raise GradingError("cannot tell which chapter this notebook answers (no exported metadata, no answer "
                       "cells, no NN_ at the start of its name): pass --chapter")


def _read(path: Path, book_dir: Path, chapter: Optional[int]) -> Tuple[dict, int, List[Exercise]]:
    nb = _read_submission(path)
    chapter = _chapter_of(nb, book_dir, chapter, path.name)
    return nb, chapter, read_exercises(find_chapter(book_dir, chapter))


# ------------------------------------------------------------------------------- step 2: the sandboxed run

class WorkerRun:
    """One submission's process in its sandbox, seen from the grader: start it, follow its cells, ask it to run
    the student's function, stop it. Every problem on its side ends the row (:class:`_Stop`)."""

    def __init__(self, box: Sandbox, limits: Limits, deadline: float):
        self.box, self.limits, self.deadline = box, limits, deadline
        self.where, self.setup, self.cell_errors = "before the first cell", {}, []
        self.proc: Optional[subprocess.Popen] = None
        self.uid: Optional[int] = None
        self.scratch: Optional[str] = None
        self.leftovers = 0
        self._log = bytearray()
        self._log_total = 0
        self._reader: Optional[threading.Thread] = None
        self._fds: List[int] = []

    def start(self, config: dict) -> None:
        self.uid = self.box.new_uid()
        request_r, self._request_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        log_r, log_w = os.pipe()
        self._fds = [self._request_w, self._reply_r]
        argv = [self.box.python, "-c", _WORKER_BOOT, str(request_r), str(reply_w)]
        if self.box.isolated:
            cmd, env, cwd = self.box.command(argv, self.uid, self.limits), None, "/"
        else:
            self.scratch = tempfile.mkdtemp(prefix="ttt4rec-submission-")
            config = dict(config, folder=self.scratch)
            cmd, cwd = argv, self.scratch
            env = worker_env(self.scratch, {"PYTHONPATH": str(self.box.package.parent)})
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_w, stderr=subprocess.STDOUT,
                                         pass_fds=(request_r, reply_w), cwd=cwd, env=env, start_new_session=True)
        finally:
            for fd in (request_r, reply_w, log_w):
                os.close(fd)
        self._reader = threading.Thread(target=self._drain, args=(log_r,), daemon=True)
        self._reader.start()
        self._send(config)

    def _drain(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    return
                self._log_total += len(chunk)
                self._log += chunk
                if len(self._log) > 2 * LOG_TAIL:
                    del self._log[:-LOG_TAIL]

    def _send(self, message: dict) -> None:
        try:
            write_frame(self._request_w, message)
        except (BrokenPipeError, OSError):
            raise _Stop("crashed") from None

    def _receive(self) -> dict:
        try:
            message = read_frame(self._reply_r, self.deadline)
        except TimeoutError:
            raise _Stop("timeout") from None
        except (WireError, OSError) as exc:
            raise _Stop("crashed", f"it broke the grader's answer channel ({exc})") from None
        if message is None:                   # the worker ended: let it finish, for its exit status
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            raise _Stop("crashed")
        if type(message) is not dict:
            raise _Stop("crashed", "it broke the grader's answer channel (a message that is not a dict)")
        return message

    def run_cells(self, answer_of: Dict[int, Optional[str]]) -> None:
        """Follow the cells until the worker is ready for the checks."""
        while True:
            event = self._receive()
            kind = event.get("event")
            if kind == "ready":
                return
            if kind == "setup":
                continue
            index = event.get("index")
            if kind == "cell" and type(index) is int:
                label = answer_of.get(index)
                self.where = f"in cell {index}" + (f" (the answer to {label})" if label else "")
            elif kind == "error" and type(index) is int:
                self.cell_errors.append(f"cell {index}: {str(event.get('error'))[:400]}")
            else:
                raise _Stop("crashed", "it broke the grader's answer channel (an unknown event)")

    def request(self, message: dict) -> dict:
        self._send(message)
        return self._receive()

    def stop(self) -> None:
        """Kill the sandbox (idempotent): its session, its PID namespace, anything left under its uid."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.leftovers += kill_uid(self.uid)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def log(self) -> bytes:
        data = bytes(self._log[-LOG_TAIL:])
        return (b"[... output cut ...]\n" if self._log_total > len(data) else b"") + data

    def ended(self) -> str:
        """How the process ended, in words (for a crash)."""
        code = None if self.proc is None else self.proc.returncode
        if code is not None and self.box.isolated and code > 128:     # bwrap reports a signal as 128 + number
            code = -(code - 128)
        if code is not None and code < 0:
            try:
                sig = signal.Signals(-code)
            except ValueError:
                return f"was killed by signal {-code}"
            why = {signal.SIGXCPU: f" (the CPU-time limit, {self.limits.cpu:g} s)",
                   signal.SIGKILL: " (killed: out of memory?)", signal.SIGSEGV: " (a segmentation fault)"}
            return f"was killed by {sig.name}{why.get(sig, '')}"
        return f"exited with status {code}"


# ------------------------------------------------------------------------- step 3: the checks, in the grader

def _student_exception(raised) -> Exception:
    """What the student's function raised, as a fresh exception with its type's name and its message."""
    raised = raised if isinstance(raised, dict) else {}
    name = str(raised.get("type", ""))
    name = name if name.isidentifier() else "Exception"
    return type(name, (Exception,), {"__module__": "submission"})(str(raised.get("message", ""))[:2000])


def _stand_in(run: WorkerRun, expr: str):
    """A function that runs the student's ``expr`` in the submission's process and returns its plain answer."""
    def student_function(*args, **kwargs):
        try:
            request = {"op": "call", "expr": expr, "args": encode(args), "kwargs": encode(kwargs)}
        except WireError as exc:        # a check that sends an object: a bug of the grader, not of the student
            raise RuntimeError(f"the grader cannot send this check's inputs: {exc}") from None
        reply = run.request(request)
        if "value" in reply:
            try:
                return decode(reply["value"])
            except (WireError, TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise NotPlainData(f"your function's answer is not plain data: {exc}") from None
        if "unsendable" in reply:
            raise NotPlainData(f"your function's answer cannot be graded: {str(reply['unsendable'])[:300]}")
        if "raised" in reply:
            raise _student_exception(reply["raised"])
        raise _Stop("crashed", "it broke the grader's answer channel (an answer of no known kind)")
    student_function.__name__ = student_function.__qualname__ = expr if expr.isidentifier() else "answer"
    return student_function


def _answer(run: WorkerRun, expr: str) -> Tuple[object, Optional[str]]:
    """What a check gets for the book's argument ``expr``: a stand-in for a function, or a value; or why not."""
    reply = run.request({"op": "resolve", "expr": expr})
    if "callable" in reply:
        return _stand_in(run, expr), None
    if "value" in reply:
        try:
            return decode(reply["value"]), None
        except (WireError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            return None, f"`{expr}` is not plain data: {exc}"
    if "unsendable" in reply:
        return None, f"`{expr}` cannot be graded: {str(reply['unsendable'])[:300]}"
    raised = reply.get("raised") if isinstance(reply.get("raised"), dict) else {}
    if raised.get("type") == "NameError" and expr.isidentifier():
        return None, str(raised.get("message", ""))[:400]
    return None, (f"`{expr}` could not be evaluated after the last cell: {str(raised.get('type'))[:80]}: "
                  f"{str(raised.get('message'))[:400]}")


def _run_check(check_name: str, answer) -> Tuple[bool, str]:
    """The grader's own check on ``answer``, in this process, its printout swallowed."""
    checks = importlib.import_module(_CHECKS)
    if check_name not in checks.__all__ or not check_name.startswith("check_"):
        return False, f"the book names {check_name}, which is not a check of {_CHECKS}"
    strict = os.environ.get(checks.STRICT_ENV)
    os.environ[checks.STRICT_ENV] = "0"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = getattr(checks, check_name)(answer)
        if not isinstance(result, checks.ExerciseResult):
            return False, f"the check returned {type(result).__name__}"
        return result.passed is True, str(result.message)
    except Exception as exc:   # noqa: BLE001 - a check that cannot run on this answer fails it
        return False, f"the check could not run: {type(exc).__name__}: {exc}"
    finally:
        if strict is None:
            os.environ.pop(checks.STRICT_ENV, None)
        else:
            os.environ[checks.STRICT_ENV] = strict


def _grade_exercises(run: WorkerRun, coding: Sequence[Tuple[Exercise, str, str]],
                     verdicts: Dict[Tuple[str, str], ExerciseVerdict]) -> None:
    for ex, check, expr in coding:
        run.where = f"while checking {ex.label}"
        answer, problem = _answer(run, expr)
        passed, message = (False, problem) if problem is not None else _run_check(check, answer)
        verdicts[ex.label, check] = ExerciseVerdict(ex.label, check, passed, message)


# --------------------------------------------------------------------------------- step 4: status, reason

def _conclude(sub: Submission, run: WorkerRun, stop: Optional[_Stop], coding, verdicts) -> None:
    sub.cell_errors = list(run.cell_errors)
    if run.leftovers:
        sub.cell_errors.append(f"{run.leftovers} process(es) still running under the submission's uid after its "
                               "sandbox stopped were killed")
    if stop is not None and stop.status == "timeout":
        sub.status, sub.reason = "timeout", f"ran past the {run.limits.timeout:g} s limit {run.where}"
    elif stop is not None:
        last = [line for line in run.log()[-4000:].decode("utf-8", "replace").splitlines() if line.strip()][-1:]
        ended = stop.detail or f"the notebook's process {run.ended()}"
        sub.status, sub.reason = "crashed", f"{ended} {run.where}" + (
            f" (its last output: {last[0].strip()[:200]})" if last and not stop.detail else "")
    for ex, check, _ in coding:
        sub.verdicts.append(verdicts.get((ex.label, check)) or ExerciseVerdict(
            ex.label, check, False, f"not graded: the run stopped ({sub.status}) {run.where}"))
    if stop is None:
        failed = [column_name(v, sub.verdicts) for v in sub.verdicts if not v.passed]
        sub.status = "failed" if failed else "ok"
        sub.reason = (f"{len(failed)} of {len(sub.verdicts)} checks failed: {', '.join(failed)}" if failed
                      else f"all {len(sub.verdicts)} checks passed")


def column_name(verdict: ExerciseVerdict, verdicts: Sequence[ExerciseVerdict]) -> str:
    """The exercise's label, or ``label:check`` when that exercise has more than one check."""
    several = sum(v.label == verdict.label for v in verdicts) > 1
    return f"{verdict.label}:{verdict.check}" if several else verdict.label


def snapshot_workdir(workdir: Optional[Path], book_dir: Path, into: Path) -> Optional[Path]:
    """A copy of ``workdir`` (default: the book's ``results/``) that every sandbox may read, or None."""
    source = Path(workdir) if workdir is not None else book_dir / "results"
    if not source.is_dir():
        return None
    target = Path(into) / source.name
    shutil.copytree(source, target, symlinks=False)
    for root, _dirs, files in os.walk(target):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    os.chmod(into, 0o755)
    return target


def grade_submission(path: Path, book_dir: Optional[Path] = None, limits: Optional[Limits] = None,
                     chapter: Optional[int] = None, workdir: Optional[Path] = None, allow_root: bool = False,
                     cut_network: bool = True, log_path: Optional[Path] = None,
                     sandbox: Optional[Sandbox] = None, active: Optional[set] = None) -> Submission:
    """Run one submitted file in its own sandbox and grade it; never raises for a bad file.

    Every code cell of the notebook runs in order (an error in a cell is recorded and the next cell runs); then
    each coding exercise's check runs in this process on the student's function (its name comes from the book's
    exercise, not from the submission). ``sandbox``: made by :func:`~ttt4rec_edu.exercises.sandbox.find_sandbox`
    (made here, with its ``workdir`` snapshot, when not given). ``active``: a set the running worker sits in,
    so that an interrupted grader can stop it.
    """
    path = Path(path)
    book_dir = Path(book_dir) if book_dir is not None else default_book_dir()
    limits = (limits or Limits()).validate()
    try:
        nb, chapter, exercises = _read(path, book_dir, chapter)
    except (GradingError, FileNotFoundError) as exc:
        return Submission(path.name, "unreadable", str(exc), chapter)
    own = None
    if sandbox is None:
        own = Path(tempfile.mkdtemp(prefix="ttt4rec-workdir-"))
        sandbox = find_sandbox(None, True, allow_root, cut_network, snapshot_workdir(workdir, book_dir, own),
                               private=[path.parent])
    coding = [(ex, check, arg) for ex, check, arg in ((ex, c, a) for ex in exercises for c, a in ex.graded)]
    sub = Submission(path.name, "failed", chapter=chapter, thinking=[ex.label for ex in exercises if not ex.check])
    config = {"cells": [(i, _source(c)) for i, c in enumerate(nb["cells"]) if c.get("cell_type") == "code"],
              "notebook": path.read_text(encoding="utf-8"), "folder": sandbox.folder(),
              "workdir": (f"{INSIDE}/workdir/{sandbox.workdir.name}" if sandbox.isolated else str(sandbox.workdir))
              if sandbox.workdir is not None else None, "limits": limits.as_dict()}
    start = time.monotonic()
    run = WorkerRun(sandbox, limits, start + limits.timeout)
    verdicts: Dict[Tuple[str, str], ExerciseVerdict] = {}
    stop = None
    if active is not None:
        active.add(run)
    try:
        run.start(config)
        run.run_cells({i: _cell_info(c).get("exercise") for i, c in enumerate(nb["cells"])})
        _grade_exercises(run, coding, verdicts)
        with contextlib.suppress(_Stop):
            run._send({"op": "bye"})
    except _Stop as exc:
        stop = exc
    finally:
        run.stop()
        if active is not None:
            active.discard(run)
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
    sub.seconds = time.monotonic() - start
    sub.isolation = sandbox.describe(run.uid, limits)
    if log_path is not None:
        Path(log_path).write_bytes(run.log())
    _conclude(sub, run, stop, coding, verdicts)
    return sub
