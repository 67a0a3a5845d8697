"""Grading's parts, one at a time (issue 24): plain data on the wire, the sandbox's command and its probe, limits,
report names, CSV cells, Gradescope's file, and what Ctrl-C / SIGTERM leave.

What is proved here:
- only plain data crosses: a round trip keeps values, dtypes and shapes; a ``Tensor`` subclass arrives as a plain
  ``Tensor``; an object, a function or a malformed message is refused; a frame over the size limit is refused
  before it is read;
- the grader's checks run in the grader's process on what came back, and the book build's strict mode is left as
  it was;
- the sandbox shows the package, never the repository (no book, no submissions), no ``/etc``; it cuts the network;
  a missing ``bwrap`` or an interpreter the sandboxed user cannot run stops grading with one line saying how to fix
  it; a submissions folder the sandbox would show is refused;
- limits are finite and bounded (``--file-mb 1e13``, ``--cpu-seconds 1e30``, ``--timeout 1e30``: one line, exit 2);
- report names are unique per submission path; a CSV cell never starts a formula; without a sandbox (asked for),
  stderr and every row say so, and the verdicts still come from the grader's checks (a tensor subclass fails);
- Gradescope: one notebook beside a PDF still gets ``results.json``; two notebooks for Gradescope are an error;
- Ctrl-C and SIGTERM stop the running sandbox, leave no process or scratch folder, write the finished rows and
  exit 2 with a grading message.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ttt4rec_edu.cli import main as cli_main
from ttt4rec_edu.exercises import instructor as ik
from ttt4rec_edu.exercises import sandbox as sb
from ttt4rec_edu.exercises import wire
from ttt4rec_edu.exercises.grading import _run_check

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="a uid per submission needs a root grader")
NEEDS_BWRAP = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: make bubblewrap")


def _trip(value):
    return wire.decode(json.loads(json.dumps(wire.encode(value))))


# ------------------------------------------------------------------------------------------------- the wire

def test_plain_data_round_trips_with_dtypes_and_shapes():
    values = [None, True, 3, 2.5, "x", (1, [2.0, "a"]), {"k": (1, 2)}, torch.randn(3, 2, dtype=torch.float64),
              torch.randn(4, 3).t(), torch.tensor(7), torch.ones(0, 5), torch.randn(3, dtype=torch.bfloat16),
              np.arange(6).reshape(2, 3), np.float32(1.5), np.array([1, "a"], dtype=object)]
    for value in values:
        back = _trip(value)
        assert type(back) is type(value) or isinstance(value, np.generic)
        if isinstance(value, torch.Tensor):
            assert back.dtype == value.dtype and torch.equal(back, value)
        elif isinstance(value, np.ndarray):
            assert back.dtype == value.dtype and (back == value).all()
        else:
            assert back == value
    assert _trip(np.float32(1.5)).dtype == np.float32          # a float32 answer keeps float32's tolerance
    assert np.isnan(_trip(float("nan")))
    frame = pd.DataFrame({"model": ["a", "b", "b"], "seed": [0, 1, 2], "hr": [0.1, float("nan"), 0.3]})
    grouped = frame.groupby("model")[["hr"]].agg(["mean", "std"])
    for value in (frame, grouped, frame.set_index(["model", "seed"]), frame["hr"]):
        back = _trip(value)
        if isinstance(value, pd.Series):
            pd.testing.assert_series_equal(back, value)
        else:
            pd.testing.assert_frame_equal(back, value)


def test_a_tensor_subclass_arrives_as_a_plain_tensor():
    class AlwaysClose(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func is torch.allclose:
                return True
            return super().__torch_function__(func, types, args, kwargs or {})

    sneaky = torch.zeros(3).as_subclass(AlwaysClose)
    assert torch.allclose(sneaky, torch.ones(3))           # what it would tell the check ...
    back = _trip(sneaky)
    assert type(back) is torch.Tensor and not torch.allclose(back, torch.ones(3))    # ... and what it tells now


@pytest.mark.parametrize("value", [lambda x: x, object(), {1, 2}, b"bytes", np.datetime64("2024-01-01"),
                                   torch.nn.Linear(2, 2)])
def test_objects_do_not_cross(value):
    with pytest.raises(wire.WireError):
        wire.encode(value)


@pytest.mark.parametrize("data", [
    [1, 2],                                                        # a bare list is not the format
    {"T": "pickle", "v": "gASV"},
    {"T": "tensor", "dtype": "float64", "shape": [3], "data": "AAAA"},           # bytes do not fit the shape
    {"T": "tensor", "dtype": "object", "shape": [], "data": ""},
    {"T": "ndarray", "dtype": "float64", "shape": [-1], "data": ""},
    {"T": "list", "v": "abc"},
    {"T": "dict", "v": [[{"T": "list", "v": []}, 1]]},             # an unhashable key
])
def test_malformed_messages_are_refused(data):
    with pytest.raises((wire.WireError, TypeError)):
        wire.decode(data)
    deep = 1
    for _ in range(wire.MAX_DEPTH + 5):
        deep = {"T": "list", "v": [deep]}
    with pytest.raises(wire.WireError, match="deeper"):
        wire.decode(deep)


def test_a_frame_over_the_limit_is_refused_before_it_is_read():
    read, write = os.pipe()
    try:
        os.write(write, (wire.MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(wire.WireError, match="over the"):
            wire.read_frame(read, deadline=time.monotonic() + 5)
        wire.write_frame(write, {"event": "ready"})
        assert wire.read_frame(read, deadline=time.monotonic() + 5) == {"event": "ready"}
        with pytest.raises(TimeoutError):
            wire.read_frame(read, deadline=time.monotonic() + 0.2)
    finally:
        os.close(read)
        os.close(write)


def test_checks_run_in_the_grader_on_the_answer_and_keep_strict_mode(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    passed, message = _run_check("check_split_counts", lambda n, ratios: (n, 0, 0))
    assert not passed and "expected (1, 0, 1)" in message
    assert _run_check("print", print) == (False, "the book names print, which is not a check of "
                                                 "ttt4rec_edu.exercises")
    assert os.environ["TTT4REC_STRICT_CHECKS"] == "1"


# ------------------------------------------------------------------------------------------- the sandbox

def test_the_sandbox_shows_the_package_not_the_repository(tmp_path):
    box = sb.Sandbox(sys.executable, binds=["/opt/python"], workdir=tmp_path / "results")
    cmd = box.command([sys.executable, "-c", "pass"], 1_800_000_123, sb.Limits(file_mb=16))
    repo = str(ik.library_root())
    binds = [(cmd[i + 1], cmd[i + 2]) for i, arg in enumerate(cmd) if arg == "--ro-bind"]
    assert (str(Path(repo) / "ttt4rec_edu"), f"{sb.INSIDE}/lib/ttt4rec_edu") in binds
    assert not [src for src, _ in binds if src in (repo, "/", "/etc", "/root", "/home")]
    assert "--unshare-net" in cmd and "--die-with-parent" in cmd and "--new-session" in cmd
    at = cmd.index("--tmpfs")
    assert cmd[at - 4: at + 2] == ["--size", str(16 * 2 ** 20), "--perms", "1777", "--tmpfs", "/tmp"]
    if os.geteuid() == 0:
        assert "--reuid=1800000123" in cmd and "--no-new-privs" in cmd and "--bounding-set=-all" in cmd
    assert "--unshare-net" not in sb.Sandbox(sys.executable, cut_network=False).command(["x"], None, sb.Limits())


def test_missing_bwrap_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setattr(sb.shutil, "which", lambda name: None)
    with pytest.raises(sb.GradingError, match=r"^bubblewrap \(bwrap\) is not installed: run `make bubblewrap`"):
        sb.find_sandbox()
    assert not sb.find_sandbox(sandbox=False).isolated          # without a sandbox only when asked


@ROOT_ONLY
@NEEDS_BWRAP
def test_an_interpreter_the_sandbox_cannot_run_stops_grading(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    wrapper = hidden / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    with pytest.raises(sb.GradingError, match=r"cannot run .*hidden/python.* a venv outside root's home") as err:
        sb.find_sandbox(str(wrapper))
    assert "\n" not in str(err.value)


@NEEDS_BWRAP
def test_a_folder_the_sandbox_would_show_is_refused():
    with pytest.raises(sb.GradingError, match="which the sandbox shows every submission"):
        sb.find_sandbox(private=[ik.library_root() / "ttt4rec_edu" / "resources"])


# ----------------------------------------------------------------------------------- limits, names, files

@pytest.mark.parametrize("flag,value", [("--file-mb", "1e13"), ("--cpu-seconds", "1e30"), ("--timeout", "1e30"),
                                        ("--memory-mb", "1e13")])
def test_limits_are_bounded(tmp_path, capsys, flag, value):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.ipynb").write_text("{}")
    code = cli_main(["instructor", "grade", "--submissions", str(tmp_path / "subs"), "--out",
                     str(tmp_path / "g.csv"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{flag} must be a finite number > 0 and at most" in err, err
    assert not (tmp_path / "g.csv").exists()


def test_report_names_are_unique_per_path():
    names = ["x.ipynb", "x.py", "x.pdf", "s31/y.ipynb", "s31__y.ipynb", "s31%2Fy.ipynb", "a b.ipynb",
             "=HYPERLINK(1+1).ipynb", "long/" + "n" * 300 + ".ipynb", "long/" + "n" * 301 + ".ipynb"]
    stems = [ik.report_stem(Path(n)) for n in names]
    assert len(set(stems)) == len(names)
    assert all("/" not in s and len(s.encode()) <= 150 for s in stems)


def _grade_unsandboxed(tmp_path, files: dict, **options):
    subs = tmp_path / "subs"
    for name, text in files.items():
        (subs / name).parent.mkdir(parents=True, exist_ok=True)
        (subs / name).write_text(text)
    out = tmp_path / "out" / "grades.csv"
    results = ik.grade_folder(subs, out, sandbox=False, **options)
    with out.open(newline="", encoding="utf-8") as fh:
        return results, list(csv.DictReader(fh)), out


def test_every_path_its_own_report_and_no_csv_formula(tmp_path, capsys):
    files = {n: "not a notebook" for n in ("x.ipynb", "x.py", "x.pdf", "s31/y.ipynb", "s31__y.ipynb",
                                           "=HYPERLINK(1+1).ipynb", "+cmd.ipynb", "@SUM(A1).ipynb")}
    results, rows, out = _grade_unsandboxed(tmp_path, files)
    reports = out.with_name("grades_reports")
    assert len(list(reports.glob("*.md"))) == len(files) == len(list(reports.glob("*.results.json")))
    names = [row["submission"] for row in rows]
    assert "'=HYPERLINK(1+1).ipynb" in names and "'+cmd.ipynb" in names and "'@SUM(A1).ipynb" in names
    assert "s31/y.ipynb" in names and "s31__y.ipynb" in names
    assert not [cell for row in rows for cell in row.values() if cell[:1] in ("=", "+", "-", "@")]
    assert "WARNING: grading WITHOUT a sandbox" in capsys.readouterr().err      # loud, on the terminal ...
    assert {row["sandbox"] for row in rows} == {sb.UNSANDBOXED}                # ... and in every row


def test_gradescope_gets_its_file_or_an_error(tmp_path):
    _, rows, out = _grade_unsandboxed(tmp_path / "one", {"homework.ipynb": "{", "homework.pdf": "%PDF"},
                                      gradescope=True)
    results = json.loads((out.parent / "results.json").read_text())
    assert results["score"] == 0.0 and results["output"].startswith("unreadable")
    with pytest.raises(sb.GradingError, match="Gradescope needs exactly one notebook .* found 2"):
        _grade_unsandboxed(tmp_path / "two", {"a.ipynb": "{", "b.ipynb": "{"}, gradescope=True)
    assert (tmp_path / "two" / "out" / "grades.csv").exists()                  # the rows are still written
    assert not (tmp_path / "two" / "out" / "results.json").exists()


# --------------------------------------------------------------------------------------- interruption

def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])
    return False


@ROOT_ONLY
@NEEDS_BWRAP
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_grader_stops_its_sandbox_and_writes_the_finished_rows(tmp_path, signum):
    from test_grading_attacks import HONEST, attack_book, submission
    book = attack_book(tmp_path)
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a.ipynb").write_text("not a notebook")
    (subs / "b.ipynb").write_text(json.dumps(submission(book, extra="import time\ntime.sleep(600)", **HONEST)))
    out = tmp_path / "out" / "grades.csv"
    before = {p.name for p in Path("/tmp").glob("ttt4rec-*")}
    proc = subprocess.Popen([sys.executable, "-m", "ttt4rec_edu", "instructor", "grade", "--submissions",
                             str(subs), "--out", str(out), "--book", str(book), "--timeout", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    uid = None
    deadline = time.monotonic() + 240
    while uid is None and time.monotonic() < deadline:       # wait for b.ipynb's sandbox to run its cells
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            real = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            if (sb.UID_BASE <= real < sb.UID_BASE + sb.UID_SPAN and b"worker import main" in cmdline
                    and _descends(int(pid), proc.pid)):
                uid = real
        time.sleep(0.5)
    assert uid is not None, "the sandbox never started"
    time.sleep(3)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.count("\n") == 1 and f"grading interrupted by {signal.Signals(signum).name} after 1 of 2" in stderr
    assert "checkpoint" not in stderr and "epoch" not in stderr
    with out.open(newline="", encoding="utf-8") as fh:
        assert [row["submission"] for row in csv.DictReader(fh)] == ["a.ipynb"]
    assert sb._processes_of(uid) == []
    assert {p.name for p in Path("/tmp").glob("ttt4rec-*")} <= before


@pytest.mark.slow
def test_without_a_sandbox_the_verdicts_still_come_from_the_grader(tmp_path, capsys):
    """``--no-sandbox`` (asked for): the notebook runs as a plain process, but its answers still cross as plain
    data to the grader's checks, so a tensor subclass still gets no pass; every row says there was no sandbox."""
    from test_grading_attacks import HONEST, SUBCLASS, attack_book, submission
    book = attack_book(tmp_path)
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "honest.ipynb").write_text(json.dumps(submission(book, **HONEST)))
    (subs / "subclass.ipynb").write_text(json.dumps(submission(book, **dict(HONEST, scale=SUBCLASS))))
    out = tmp_path / "out" / "grades.csv"
    results = ik.grade_folder(subs, out, ik.Limits(timeout=300), book, sandbox=False)
    assert [(r.name, r.status, r.passed) for r in results] == [("honest.ipynb", "ok", 3),
                                                               ("subclass.ipynb", "failed", 2)]
    assert results[1].isolation["sandbox"] == sb.UNSANDBOXED
    assert "WARNING: grading WITHOUT a sandbox" in capsys.readouterr().err


def test_command_line_passes_python_and_no_sandbox_to_the_grader(tmp_path, monkeypatch, capsys):
    """``instructor grade --python P --no-sandbox`` reaches ``grade_folder`` as ``python=P, sandbox=False``;
    without them the grader gets its defaults (this Python, a sandbox); an unusable Python is one line, exit 2."""
    subs = tmp_path / "subs"
    subs.mkdir()
    seen = []
    monkeypatch.setattr(ik, "grade_folder", lambda *a, **kw: seen.append(kw) or [])
    base = ["instructor", "grade", "--submissions", str(subs), "--out", str(tmp_path / "g.csv"), "--chapter", "1"]
    assert cli_main(base + ["--python", "/usr/bin/python3", "--no-sandbox"]) == 0
    assert cli_main(base) == 0
    assert seen[0]["python"] == "/usr/bin/python3" and seen[0]["sandbox"] is False
    assert seen[1]["python"] is None and seen[1]["sandbox"] is True
    monkeypatch.undo()
    (subs / "a.ipynb").write_text("{}")
    assert cli_main(base + ["--python", str(tmp_path / "no-such-python")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--python" in err[0]
