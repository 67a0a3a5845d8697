"""The submission's side of grading: run the notebook's cells, then answer the grader's calls with plain data.

This module runs inside a submission's sandbox (:mod:`ttt4rec_edu.exercises.sandbox`), started as
``python -c "from ttt4rec_edu.exercises.worker import main; main()" REQUEST_FD REPLY_FD``. It never sees a
check or an expected value: the grader (:mod:`ttt4rec_edu.exercises.grading`) sends it the notebook's cells,
then, for each exercise, the name of the student's function and the inputs to run it on; the worker sends back
what the function returned, as plain data (:mod:`ttt4rec_edu.exercises.wire`). Everything the student's code
does, it does to this process only: the verdict is made in the grader's.

Messages, one JSON frame each (worker -> grader unless marked):

- grader -> worker: ``{"cells": [[index, source], ...], "notebook": text, "workdir": name or null,
  "folder": path, "limits": {...}}``, then requests ``{"op": "resolve", "expr": e}`` (what is ``e`` after the
  last cell: ``{"callable": true}`` or ``{"value": plain}``), ``{"op": "call", "expr": e, "args": plain,
  "kwargs": plain}`` (``{"value": plain}`` or ``{"raised": {"type": name, "message": text}}``), ``{"op": "bye"}``;
- ``{"event": "setup"}``, ``{"event": "cell", "index": i}``, ``{"event": "error", "index": i, "error": text}``,
  ``{"event": "ready"}`` after the last cell.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

from .wire import WireError, decode, encode, read_frame, write_frame

__all__ = ["main"]


def _set_limits(limits: dict) -> None:
    """CPU, address space, file size and process count: hard limits the student's code cannot raise."""
    import resource
    import signal
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(math.ceil(used.ru_utime + used.ru_stime + limits["cpu"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    memory = int(limits["memory_mb"]) * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = int(limits["file_mb"]) * 2 ** 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    if os.getuid() != 0:        # per uid: a uid of its own in the sandbox (root is not limited by it anyway)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a too-large write raises OSError instead of killing


def _prepare(config: dict) -> None:
    """The submission's own folder: a copy of its notebook and of the workdir snapshot; stdin from /dev/null."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)                                   # input() must not wait for the grader
    os.close(devnull)
    folder = Path(config["folder"])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / "submission.ipynb").write_text(config["notebook"], encoding="utf-8")
    if config.get("workdir"):
        shutil.copytree(config["workdir"], folder / Path(config["workdir"]).name, symlinks=False)
    os.chdir(folder)


def _shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config
    ipython_config = Config()
    ipython_config.HistoryManager.enabled = False
    ipython_config.InteractiveShell.colors = "NoColor"         # a plain-text log for the instructor
    return InteractiveShell.instance(config=ipython_config)


def _run_cells(shell, cells, send) -> None:
    for index, source in cells:
        send({"event": "cell", "index": index})
        result = shell.run_cell(source, store_history=False, silent=False)
        error = result.error_in_exec or result.error_before_exec
        if error is not None:
            send({"event": "error", "index": index, "error": f"{type(error).__name__}: {str(error)[:300]}"})
        sys.stdout.flush()


def _lookup(shell, expr: str):
    """The value of the book's check argument (a name, or an expression such as ``(t1, t2)``) after the last cell."""
    if expr.isidentifier():
        if expr not in shell.user_ns:
            raise NameError(f"`{expr}` is not defined after the last cell (the answer defines it)")
        return shell.user_ns[expr]
    return eval(compile(expr, "<check argument>", "eval"), shell.user_ns)  # noqa: S307 - the book's own text


def _raised(exc: BaseException) -> dict:
    return {"raised": {"type": type(exc).__name__[:80], "message": str(exc)[:2000]}}


def _answer(shell, request: dict) -> dict:
    """One request of the grader, answered with plain data (an exception becomes ``raised``)."""
    try:
        target = _lookup(shell, request["expr"])
    except BaseException as exc:       # noqa: BLE001 - the student's code may raise anything
        return dict(_raised(exc), lookup=True)
    try:
        if request["op"] == "resolve":
            return {"callable": True} if callable(target) else {"value": encode(target)}
        args, kwargs = decode(request["args"]), decode(request["kwargs"])
        value = target(*args, **kwargs)
        sys.stdout.flush()
        return {"value": encode(value)}
    except WireError as exc:
        return {"unsendable": str(exc)[:500]}
    except BaseException as exc:       # noqa: BLE001
        return _raised(exc)


def main() -> None:   # pragma: no cover - runs in the sandbox (tests drive it through grade_submission)
    request_fd, reply_fd = int(sys.argv[1]), int(sys.argv[2])

    def send(message: dict) -> None:
        write_frame(reply_fd, message)

    config = read_frame(request_fd)
    _prepare(config)
    import numpy  # noqa: F401  (loaded before any student code: the limits below count from here)
    import pandas  # noqa: F401
    import torch  # noqa: F401
    shell = _shell()
    _set_limits(config["limits"])
    send({"event": "setup", "uid": os.getuid()})
    _run_cells(shell, config["cells"], send)
    send({"event": "ready"})
    while True:
        request = read_frame(request_fd)
        if request is None or request.get("op") == "bye":
            break
        try:
            reply = _answer(shell, request)
            send(reply)
        except WireError as exc:       # an answer over the frame limit
            send({"unsendable": str(exc)[:500]})
    sys.stdout.flush()
    os._exit(0)
