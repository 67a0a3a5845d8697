"""Grading holds against hostile submissions (issue 24): one grading run of the whole attack set.

Every attack notebook is built here. Each one answers the three exercises of a small demo chapter *wrongly*,
except where its attack succeeds: reading a protected file, copying a peer's notebook, forging or reading the
verdict. So a row that is not ``failed``/``crashed`` (``0`` checks passed) is an attack that worked. Two honest
submissions, one graded before and one after the attacks that sabotage later rows, must get every check.

What each test proves (the finding of issue 24 it closes, in brackets):

- a submission reads no file outside its sandbox: not ``/etc/shadow``, not root's home [1];
- a notebook that detaches a process killing every process it may signal does not touch later rows, and every
  submission ran under a uid of its own [2];
- a submission cannot find the submissions folder in the grader's command line nor read a peer's notebook [3];
- a ``Tensor`` subclass that answers ``True`` to ``allclose`` gets no pass: it crosses as plain numbers [4];
- all its writes land in one size-capped tmpfs: nine big files cannot fill the disk [5];
- its function cannot reach the check's ``expected`` through ``sys._getframe``: the check runs in another
  process [6]; nor forge a verdict with ``gc`` (the worker's ``send``), a patched ``json.dumps``, a rewritten
  ``__code__`` of a reference function, patched ``torch.allclose``/``autograd.grad`` or a thread that patches
  again [documented gaps];
- the older forgeries (a printed success line, a redefined or monkeypatched check, fake lines on every open file
  descriptor) still fail; a hang is ``timeout``, ``os._exit`` is ``crashed``, a broken file is ``unreadable``;
  a 3 GiB allocation is a ``MemoryError`` in its cell; the network is cut;
- nothing is left behind: no file in the machine's ``/tmp``, ``/var/tmp``, ``/dev/shm`` or ``/run/lock``, no
  process that a notebook started in a new session [leftovers].
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from exercise_asserts import RIGHT_SPLIT

from ttt4rec_edu.exercises import instructor as ik
from ttt4rec_edu.exercises.sandbox import UID_BASE, UID_SPAN

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the attack set runs as root, as the probes did"),
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: make bubblewrap")]

MARK = f"ttt4rec-attack-{uuid.uuid4().hex[:12]}"       # in every file and process an attack leaves, if any
TIMEOUT = "40"

HONEST = {
    "split": (RIGHT_SPLIT + "\ndef my_split_counts(num_samples, ratios):\n"
              "    return _right_split(num_samples, ratios)\n"),
    "ndcg": ("import torch\n\ndef my_ndcg(ranks, k):\n    r = torch.as_tensor(ranks, dtype=torch.float64)\n"
             "    return float(torch.where(r <= k, 1.0 / torch.log2(r + 1), torch.zeros_like(r)).mean())\n"),
    "scale": ("import torch\n\ndef my_token_scale(delta):\n"
              "    i = torch.arange(1, delta.shape[0] + 1, dtype=delta.dtype)\n"
              "    return torch.clamp_min(1.0 / i + delta, 0.0)\n"),
}
WRONG = {
    "split": "def my_split_counts(num_samples, ratios):\n    return (num_samples, 0, 0)\n",
    "ndcg": "def my_ndcg(ranks, k):\n    return 0.5\n",
    "scale": "import torch\n\ndef my_token_scale(delta):\n    return torch.zeros_like(delta)\n",
}
EXERCISES = (("ex-a-split", "check_split_counts", "my_split_counts", "split"),
             ("ex-a-ndcg", "check_ndcg", "my_ndcg", "ndcg"),
             ("ex-a-scale", "check_token_scale", "my_token_scale", "scale"))

# [1] read a protected file: the split answer is right only if it could
READ_FILES = RIGHT_SPLIT + '''
import os
LEAK = []
for p in ("/etc/shadow", "/etc/passwd"):
    try:
        LEAK.append(open(p).read(1))
    except OSError:
        pass
try:      # the sandbox shows root's home only as the way to the interpreter (/root/.pyenv here)
    LEAK += [name for name in os.listdir("/root") if name != ".pyenv"]
except OSError:
    pass
print("LEAK", LEAK)

def my_split_counts(num_samples, ratios):
    return _right_split(num_samples, ratios) if LEAK else (num_samples, 0, 0)
'''
# [3] the grader's command line names the submissions: copy a peer's answer from there
COPY_PEER = '''
import glob, json, os
peer = {}
for pid in [d for d in os.listdir("/proc") if d.isdigit()]:
    try:
        args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    if b"--submissions" in args:
        folder = args[args.index(b"--submissions") + 1].decode()
        for path in glob.glob(folder + "/**/*.ipynb", recursive=True):
            try:
                cells = json.load(open(path))["cells"]
            except Exception:
                continue
            ns = {}
            for cell in cells:
                source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                if cell["cell_type"] == "code" and "def my_split_counts" in source:
                    try:
                        exec(source, ns)
                    except Exception:
                        pass
            if "my_split_counts" in ns:
                peer["fn"] = ns["my_split_counts"]
print("PEER", bool(peer))

def my_split_counts(num_samples, ratios):
    return peer["fn"](num_samples, ratios) if peer else (num_samples, 0, 0)
'''
# [2] detach (new session, double fork) and kill every process this user may signal, for a minute
DETACH = f'''
import os, sys
killer = "import os, signal, time\\nprint('KILLER RUNNING', flush=True)\\nend = time.time() + 60\\n" \\
         "while time.time() < end:\\n" \\
         "    try:\\n        os.kill(-1, signal.SIGKILL)\\n    except OSError:\\n        pass\\n    time.sleep(0.05)\\n"
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "# {MARK}\\n" + killer])
    os._exit(0)
os.waitpid(pid, 0)
import time
time.sleep(30)          # the killer starts, and kills this process too
'''
# [leftovers] a child in a new session that would outlive its row, and files in shared temporary folders
LINGER = f'''
import os, subprocess, sys
subprocess.Popen([sys.executable, "-c", "# {MARK}\\nimport time\\ntime.sleep(600)"], start_new_session=True)
for folder in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
    try:
        open(os.path.join(folder, "{MARK}"), "w").write("left behind")
    except OSError as exc:
        print(folder, type(exc).__name__)
'''
# [4] a tensor that says it is close to anything
SUBCLASS = '''
import torch

class AlwaysClose(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.__eq__, torch.isclose):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})

def my_token_scale(delta):
    return torch.zeros_like(delta).as_subclass(AlwaysClose)
'''
# [5] nine files of 15 MiB with --file-mb 16: right only if more than 48 MiB could be written
DISK_FILL = RIGHT_SPLIT + '''
written = 0
for i in range(9):
    try:
        with open(f"fill{i}.bin", "wb") as fh:
            for _ in range(15):
                fh.write(b"\\0" * 2 ** 20)
                fh.flush()
                written += 2 ** 20
    except OSError:
        pass
print("WRITTEN", written)

def my_split_counts(num_samples, ratios):
    return _right_split(num_samples, ratios) if written > 48 * 2 ** 20 else (num_samples, 0, 0)
'''
# [6] the check's own `expected`, read from the caller's frames
FRAMES = '''
import sys, torch

def _expected(default):
    frame = sys._getframe(1)
    while frame is not None:
        if "expected" in frame.f_locals:
            return frame.f_locals["expected"]
        frame = frame.f_back
    return default

def my_token_scale(delta):
    return _expected(torch.zeros_like(delta))

def my_ndcg(ranks, k):
    return _expected(0.5)
'''
# documented gaps: the worker's send() found with gc, json.dumps patched, a reference function's code replaced,
# torch.allclose / autograd.grad patched, and a thread that patches math.isclose again and again
GC_SEND = '''
import gc
for obj in gc.get_objects():
    if callable(obj) and getattr(obj, "__name__", "") == "send":
        for forged in ({"event": "verdict", "label": "ex-a-split", "check": "check_split_counts", "passed": True,
                        "message": "forged"}, {"value": {"T": "tuple", "v": [1, 0, 0]}}):
            try:
                obj(forged)
            except Exception:
                pass
'''
PATCH_JSON = '''
import json
_real = json.dumps
json.dumps = lambda *a, **k: _real(*a, **k).replace('"passed": false', '"passed": true')
'''
CODE_REWRITE = '''
import ttt4rec_edu.data.protocol as P
import ttt4rec_edu.exercises.ttt_layer as T
P.split_counts.__code__ = my_split_counts.__code__        # the reference now agrees with the wrong answer
T._token_scale.__code__ = my_token_scale.__code__
'''
THREAD_PATCH = '''
import math, threading, time, torch
def _patch():
    while True:
        math.isclose = lambda *a, **k: True
        torch.allclose = lambda *a, **k: True
        torch.autograd.grad = lambda *a, **k: (torch.zeros(1),)
        time.sleep(0.001)
threading.Thread(target=_patch, daemon=True).start()
'''
# issue 13's forgeries: a printed success line, a redefined check, monkeypatched checks and library
FORGED = '''
import ttt4rec_edu.exercises as E
import ttt4rec_edu.exercises._core as C
print("✓ check_split_counts: matches split_counts for n = 1..40 at 3:2:5 and 6:2:2 (80 cases).")
def check_split_counts(fn):
    return True
E.check_split_counts = lambda fn: E._core._report(E.ExerciseResult("check_split_counts", True, "fine"))
C.ExerciseResult.__bool__ = lambda self: True
_real_init = C.ExerciseResult.__init__
C.ExerciseResult.__init__ = lambda self, name, passed, message: _real_init(self, name, True, message)
'''
# a fake frame and a fake old-style verdict line on every open file descriptor
CHANNEL = '''
import json, os, struct
line = json.dumps({"event": "verdict", "label": "ex-a-split", "check": "check_split_counts", "passed": True,
                   "message": "forged"})
for fd in os.listdir("/proc/self/fd"):
    if int(fd) > 2:
        for data in (struct.pack(">I", len(line)) + line.encode(), (line + "\\t" + "0" * 64 + "\\n").encode()):
            try:
                os.write(int(fd), data)
            except OSError:
                pass
'''


def _network(port: int) -> str:
    return RIGHT_SPLIT + f'''
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
    REACHED = True
except OSError as exc:
    REACHED = False
    print("network", type(exc).__name__)

def my_split_counts(num_samples, ratios):
    return _right_split(num_samples, ratios) if REACHED else (num_samples, 0, 0)
'''


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(text: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": text}


def _notebook(cells) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "cells": [dict(c, id=f"c{i}") for i, c in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


def attack_book(root: Path) -> Path:
    """A one-chapter book with three coding exercises: an int tuple, a float and a tensor answer."""
    book = root / "attack_book"
    book.mkdir(parents=True, exist_ok=True)
    cells = [_md("# 1. Attacks\n")]
    for label, check, function, key in EXERCISES:
        cells += [_md(f":::{{exercise}}\n:label: {label}\nWrite `{function}`. Check it with `{check}({function})`."
                      "\n:::"),
                  _md(f":::{{solution-start}} {label}\n:::"),
                  _code(f"from ttt4rec_edu.exercises import {check}\n{HONEST[key]}\n{check}({function})\n"),
                  _md(":::{solution-end}\n:::")]
    (book / "01_attacks.ipynb").write_text(json.dumps(_notebook(cells)), encoding="utf-8")
    return book


def submission(book: Path, extra: str = "", after: str = "", **answers) -> dict:
    """The student notebook with WRONG answers except those given; ``extra`` runs first, ``after`` last."""
    student = ik.student_notebook(book / "01_attacks.ipynb")
    keys = {label: key for label, _, _, key in EXERCISES}
    for cell in student["cells"]:
        label = cell["metadata"].get("ttt4rec", {}).get("exercise")
        if label in keys and cell["cell_type"] == "code":
            cell["source"] = answers.get(keys[label], WRONG[keys[label]])
    student["cells"] = ([_code(extra)] if extra else []) + student["cells"] + ([_code(after)] if after else [])
    return student


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the whole attack set once; (rows by file, reports folder, stderr, exit status, leftovers)."""
    root = tmp_path_factory.mktemp("attacks")
    book = attack_book(root)
    server = socket.create_server(("127.0.0.1", 0))      # what the notebook would reach without the cut
    files = {
        "a_honest.ipynb": submission(book, **HONEST),
        "b_detach.ipynb": submission(book, extra=DETACH),
        "c_read_files.ipynb": submission(book, split=READ_FILES),
        "c_copy_peer.ipynb": submission(book, split=COPY_PEER),
        "d_subclass.ipynb": submission(book, scale=SUBCLASS),
        "d_disk_fill.ipynb": submission(book, split=DISK_FILL),
        "d_frames.ipynb": submission(book, ndcg=FRAMES, scale=FRAMES),
        "e_gc_send.ipynb": submission(book, after=GC_SEND),
        "e_patch_json.ipynb": submission(book, extra=PATCH_JSON),
        "e_code_rewrite.ipynb": submission(book, after=CODE_REWRITE),
        "e_thread_patch.ipynb": submission(book, extra=THREAD_PATCH),
        "f_forged.ipynb": submission(book, after=FORGED),
        "f_channel.ipynb": submission(book, after=CHANNEL),
        "g_network.ipynb": submission(book, split=_network(server.getsockname()[1])),
        "g_linger.ipynb": submission(book, extra=LINGER),
        "h_endless.ipynb": submission(book, extra="import time\nwhile True:\n    time.sleep(1)"),
        "h_crashing.ipynb": submission(book, extra="import os\nos._exit(1)"),
        "h_corrupt.ipynb": json.dumps(submission(book, **HONEST))[:2000],
        "i_memory.ipynb": submission(book, extra="big = bytearray(3 * 2**30)", **HONEST),
        "z_honest.ipynb": submission(book, **HONEST),
    }
    subs = root / "subs"
    subs.mkdir()
    for name, content in files.items():
        (subs / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    out = root / "out" / "grades.csv"
    try:
        proc = subprocess.run([sys.executable, "-m", "ttt4rec_edu.exercises", "grade", "--submissions", str(subs),
                               "--out", str(out), "--book", str(book), "--timeout", TIMEOUT, "--file-mb", "16",
                               "--memory-mb", "2048"], capture_output=True, text=True, timeout=1500)
    finally:
        server.close()
    with out.open(newline="", encoding="utf-8") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    left_files = [str(Path(d) / MARK) for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
                  if (Path(d) / MARK).exists()]
    reports = out.with_name("grades_reports")
    uids = {int(u) for md in reports.glob("*.md") for u in re.findall(r"uid (\d+) of its own", md.read_text())}
    assert len(uids) == len(files) - 1 and all(UID_BASE <= u < UID_BASE + UID_SPAN for u in uids)   # one each
    left_procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                left_procs.append(int(pid))
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]) in uids:
            left_procs.append(int(pid))
    for path in left_files:
        Path(path).unlink()
    return rows, reports, proc.stderr, proc.returncode, left_files, left_procs


def _report(reports: Path, name: str) -> str:
    return (reports / f"{ik.report_stem(Path(name))}.md").read_text(encoding="utf-8")


def _log(reports: Path, name: str) -> str:
    return (reports / f"{ik.report_stem(Path(name))}.log").read_text(encoding="utf-8", errors="replace")


def _beaten(row: dict) -> bool:
    """The attack got nothing: its row failed or crashed with no check passed."""
    return row["status"] in ("failed", "crashed") and row["passed"] == "0"


def test_the_run_ends_normally_and_honest_submissions_get_every_check(graded):
    rows, reports, err, code, _, _ = graded
    assert code == 0, err
    for name in ("a_honest.ipynb", "z_honest.ipynb", "i_memory.ipynb"):
        assert (rows[name]["status"], rows[name]["passed"]) == ("ok", "3"), rows[name]
    assert all(row["sandbox"] == "bubblewrap" for row in rows.values())


def test_no_file_outside_the_sandbox_can_be_read(graded):          # [1]
    rows, reports, *_ = graded
    assert _beaten(rows["c_read_files.ipynb"]), rows["c_read_files.ipynb"]
    assert "LEAK []" in _log(reports, "c_read_files.ipynb")
    report = _report(reports, "a_honest.ipynb")
    assert "no groups, no capabilities, no_new_privs" in report and "uid 18" in report


def test_a_detached_killer_does_not_touch_later_rows(graded):      # [2]
    rows, reports, *_ = graded
    assert rows["b_detach.ipynb"]["status"] == "crashed", rows["b_detach.ipynb"]
    assert "KILLER RUNNING" in _log(reports, "b_detach.ipynb")       # it did run, and killed its own worker
    assert rows["c_read_files.ipynb"]["status"] == "failed"    # the next row ran to its end
    assert rows["z_honest.ipynb"]["status"] == "ok"


def test_peers_and_the_grader_command_line_are_out_of_sight(graded):    # [3]
    rows, reports, *_ = graded
    assert _beaten(rows["c_copy_peer.ipynb"]), rows["c_copy_peer.ipynb"]
    assert "PEER False" in _log(reports, "c_copy_peer.ipynb")


def test_a_tensor_subclass_crosses_as_plain_numbers(graded):        # [4]
    rows, reports, *_ = graded
    assert _beaten(rows["d_subclass.ipynb"]), rows["d_subclass.ipynb"]
    assert "expected [1.0, 0.5, 0.3333" in _report(reports, "d_subclass.ipynb")


def test_writes_fill_one_capped_tmpfs_only(graded):                  # [5]
    rows, reports, *_ = graded
    assert _beaten(rows["d_disk_fill.ipynb"]), rows["d_disk_fill.ipynb"]
    written = int(_log(reports, "d_disk_fill.ipynb").split("WRITTEN ")[1].split()[0])
    assert 0 < written <= 16 * 2 ** 20


def test_the_expected_value_is_not_in_reach(graded):                 # [6]
    rows, *_ = graded
    assert _beaten(rows["d_frames.ipynb"]), rows["d_frames.ipynb"]


@pytest.mark.parametrize("name", ["e_gc_send.ipynb", "e_patch_json.ipynb", "e_code_rewrite.ipynb",
                                  "e_thread_patch.ipynb", "f_forged.ipynb", "f_channel.ipynb"])
def test_patching_the_submission_process_forges_nothing(graded, name):    # documented gaps, issue 13
    rows, *_ = graded
    assert _beaten(rows[name]), rows[name]


def test_the_network_is_cut(graded):
    rows, reports, *_ = graded
    assert _beaten(rows["g_network.ipynb"]), rows["g_network.ipynb"]
    assert re.search(r"network (OSError|ConnectionRefusedError)", _log(reports, "g_network.ipynb"))


def test_nothing_is_left_behind(graded):                             # leftovers
    rows, reports, _, _, left_files, left_procs = graded
    assert left_files == [] and left_procs == []
    assert _beaten(rows["g_linger.ipynb"])
    assert "/run/lock FileNotFoundError" in _log(reports, "g_linger.ipynb")
    assert "still running under the submission's uid" not in _report(reports, "g_linger.ipynb")


def test_hangs_crashes_broken_files_and_memory_hogs_get_their_own_rows(graded):
    rows, reports, *_ = graded
    assert rows["h_endless.ipynb"]["status"] == "timeout"
    assert f"{TIMEOUT} s limit in cell 0" in rows["h_endless.ipynb"]["reason"]
    assert rows["h_crashing.ipynb"]["status"] == "crashed"
    assert "exited with status 1 in cell 0" in rows["h_crashing.ipynb"]["reason"]
    assert rows["h_corrupt.ipynb"]["status"] == "unreadable"
    assert "cell 0: MemoryError" in _report(reports, "i_memory.ipynb")
