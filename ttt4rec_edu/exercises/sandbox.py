"""One sandbox per submission: where a student's notebook runs, and what it can see, write and outlive.

The grader starts every submission's Python process through bubblewrap (``bwrap``, Debian's ``bubblewrap``
package; ``make bubblewrap`` installs it). Inside:

- its own PID, mount, IPC, UTS and network namespaces (no network; the grader's processes and command line are
  not visible: ``/proc`` shows the sandbox's own processes only); ``--new-session``, and ``--die-with-parent``;
- a filesystem of its own, read-only: the system's ``/usr``, the Python that runs it (the interpreter, its
  standard library and its site-packages), the ``ttt4rec_edu`` package (not the repository: no book, no
  submissions), the data mirrors and cache, and the ``--workdir`` snapshot. Nothing else of the machine: no
  ``/etc``, no home folders, no submissions folder;
- one size-capped tmpfs, ``/tmp`` (and another for ``/dev/shm``), for every write it makes; the notebook runs in
  ``/tmp/submission`` with its own copy of its own file;
- when the grader runs as root: a user id of its own (a fresh unprivileged uid per submission, never one the
  machine's password file knows), no supplementary groups, no capabilities, ``no_new_privs`` (``setpriv``);
- at the end of its row the whole sandbox is killed (its PID namespace dies with its first process); any
  process still running under its uid is killed too and reported.

Resource limits (:class:`Limits`): wall clock (the grader kills), CPU, address space and file size per process
(``RLIMIT_*``), at most :data:`MAX_PROCESSES` processes, and the tmpfs sizes.

If ``bwrap`` is missing, or the sandboxed user cannot run the interpreter with the library, the grader stops
with one line saying how to fix it. It runs without a sandbox only when asked (``sandbox=False``), and then says
so on the terminal and in every row.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .chapters import library_root

__all__ = ["INSIDE", "MAX_PROCESSES", "GradingError", "Limits", "Sandbox", "find_sandbox", "kill_uid",
           "worker_env"]

INSIDE = "/opt/ttt4rec"                    # inside the sandbox: INSIDE/lib/ttt4rec_edu, INSIDE/workdir
MAX_PROCESSES = 64                         # processes (threads included) of one submission's uid
UID_BASE, UID_SPAN = 1_800_000_000, 100_000_000   # fresh uids are drawn from here, never a known user's
UNSANDBOXED = "NONE (--no-sandbox): student code ran with the grader's own permissions"
_BOUNDS = {"timeout": 86_400.0, "cpu_seconds": 86_400.0, "memory_mb": 1_048_576.0, "file_mb": 65_536.0}


class GradingError(ValueError):
    """Bad grading input the instructor must fix (one line on the command line, exit status 2)."""


@dataclass
class Limits:
    """What each submission may use. ``timeout``: wall-clock seconds for the whole notebook and its checks."""

    timeout: float = 600.0
    cpu_seconds: Optional[float] = None     # default: the timeout
    memory_mb: int = 8192                   # address space (RLIMIT_AS) of every process of the submission
    file_mb: int = 256                      # largest file (RLIMIT_FSIZE); also the size of its /tmp and /dev/shm

    def validate(self) -> "Limits":
        """Every limit a finite number > 0 and at most its bound (a day; 1 TiB of memory; 64 GiB of files)."""
        for name, bound in _BOUNDS.items():
            value = getattr(self, name)
            if value is None and name == "cpu_seconds":
                continue
            try:
                ok = math.isfinite(float(value)) and 0 < float(value) <= bound
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                flag = "--" + name.replace("_", "-")
                raise GradingError(f"{flag} must be a finite number > 0 and at most {bound:g} (got {value!r}): "
                                   "a submission must never run without a limit")
        return self

    @property
    def cpu(self) -> float:
        return float(self.cpu_seconds if self.cpu_seconds is not None else self.timeout)

    def as_dict(self) -> dict:
        return {"timeout": float(self.timeout), "cpu": self.cpu, "memory_mb": int(self.memory_mb),
                "file_mb": int(self.file_mb), "processes": MAX_PROCESSES}


def worker_env(home: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The whole environment of a worker (nothing of the grader's, apart from the quick-mode switch)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "USER": "student", "LOGNAME": "student",
           "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.mpl", "XDG_CACHE_HOME": f"{home}/.cache",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "TTT4REC_QUICK": os.environ.get("TTT4REC_QUICK", "1"),
           "TTT4REC_STRICT_CHECKS": "0"}
    env.update({k: os.environ[k] for k in ("LANG", "LC_ALL", "TZ") if k in os.environ})
    env.update(extra or {})
    return env


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _interpreter_paths(python: str) -> List[str]:
    """The folders ``python`` needs: its prefixes, its real executable's prefix and its ``sys.path``."""
    code = ("import json, os, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
            "sys.base_exec_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))] "
            "+ [p for p in sys.path if os.path.isabs(p) and os.path.isdir(p)]))")
    try:
        out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=120, check=True)
        return [os.path.realpath(p) for p in json.loads(out.stdout)] + [os.path.abspath(p) for p in
                                                                     json.loads(out.stdout)]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise GradingError(f"cannot run the Python {python!r} ({type(exc).__name__}); name a working one "
                           "with --python") from None


@dataclass
class Sandbox:
    """How this machine runs a submission: the ``bwrap`` command for one worker, or none (``isolated=False``)."""

    python: str
    isolated: bool = True
    as_root: bool = False                         # run as uid 0 inside (--allow-root); never needed
    cut_network: bool = True
    binds: List[str] = field(default_factory=list)         # read-only, at the same path inside
    package: Path = field(default_factory=lambda: library_root() / "ttt4rec_edu")
    data_env: Dict[str, str] = field(default_factory=dict)
    workdir: Optional[Path] = None                # a snapshot, shown read-only at INSIDE/workdir/<name>
    _next_uid: int = field(default_factory=lambda: UID_BASE + secrets.randbelow(UID_SPAN))

    @property
    def root(self) -> bool:
        return os.geteuid() == 0

    def new_uid(self) -> Optional[int]:
        """A uid no process and no user of this machine has (root grader only; else ``None``)."""
        if not (self.isolated and self.root and not self.as_root):
            return None
        import pwd
        while True:
            uid, self._next_uid = self._next_uid, self._next_uid + 1
            try:
                pwd.getpwuid(uid)
            except KeyError:
                if not _processes_of(uid):
                    return uid

    def folder(self) -> str:
        return "/tmp/submission"

    def command(self, argv: Sequence[str], uid: Optional[int], limits: Limits) -> List[str]:
        """``argv`` (starting with the interpreter) wrapped in the sandbox."""
        if not self.isolated:
            return list(argv)
        size = str(int(limits.file_mb) * 2 ** 20)
        cmd = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--new-session"]
        if self.cut_network:
            cmd.append("--unshare-net")
        if not self.root:
            cmd += ["--unshare-user", "--disable-userns"]
        cmd += ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            top = f"/{name}"
            if os.path.islink(top):
                cmd += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                cmd += ["--ro-bind", top, top]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--perms", "1777", "--tmpfs", "/tmp",
                "--size", size, "--perms", "1777", "--tmpfs", "/dev/shm"]
        mounts = [(p, p) for p in self.binds] + [(str(self.package), f"{INSIDE}/lib/ttt4rec_edu")]
        if self.workdir is not None:
            mounts.append((str(self.workdir), f"{INSIDE}/workdir/{self.workdir.name}"))
        made = {"/", "/usr", "/tmp", "/dev", "/proc"}
        for _, dest in mounts:
            parents = list(reversed(Path(dest).parents))
            for parent in map(str, parents):
                if parent not in made:
                    made.add(parent)
                    cmd += ["--perms", "0755", "--dir", parent]
            made.add(dest)
        for src, dest in mounts:
            cmd += ["--ro-bind", src, dest]
        cmd += ["--chdir", "/tmp", "--clearenv"]
        env = worker_env(self.folder(), dict(self.data_env, PYTHONPATH=f"{INSIDE}/lib"))
        for key, value in sorted(env.items()):
            cmd += ["--setenv", key, value]
        if self.root:                 # (unprivileged, bwrap keeps no capability in the sandbox anyway)
            cmd += ["--cap-drop", "ALL"]
        if uid is not None:
            cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP", "--",
                    "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                    "--bounding-set=-all", "--no-new-privs"]
        else:
            cmd.append("--")
        return cmd + list(argv)

    def describe(self, uid: Optional[int], limits: Limits) -> Dict[str, str]:
        """What was enforced for one run (the report's "How it ran")."""
        if not self.isolated:
            return {"sandbox": UNSANDBOXED, "limits": _limits_text(limits)}
        who = (f"uid {uid} of its own, no groups, no capabilities, no_new_privs" if uid is not None else
               "uid 0 inside the sandbox, no capabilities (--allow-root)" if self.as_root else
               f"the grader's uid {os.getuid()} in a user namespace, no capabilities")
        return {"sandbox": "bubblewrap: own PID, mount, IPC and UTS namespaces"
                           + (", no network" if self.cut_network else ", network allowed (--allow-network)"),
                "user": who,
                "files": f"read-only system, Python and library; its own /tmp and /dev/shm "
                         f"({int(limits.file_mb)} MiB each); the notebook ran in {self.folder()}",
                "limits": _limits_text(limits)}


def _limits_text(limits: Limits) -> str:
    return (f"wall clock {limits.timeout:g} s, CPU {limits.cpu:g} s, memory {int(limits.memory_mb)} MiB, "
            f"files {int(limits.file_mb)} MiB, {MAX_PROCESSES} processes")


def _processes_of(uid: int) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                    for line in fh:
                        if line.startswith("Uid:"):
                            if str(uid) in line.split()[1:]:
                                found.append(int(entry))
                            break
            except OSError:
                continue
    return found


def kill_uid(uid: Optional[int], grace: float = 5.0) -> int:
    """Wait up to ``grace`` seconds for every process of ``uid`` to end (the sandbox's PID namespace is dying),
    then kill those still there; how many had to be killed (0 unless something escaped the sandbox)."""
    if uid is None:
        return 0
    end = time.monotonic() + grace
    while _processes_of(uid) and time.monotonic() < end:
        time.sleep(0.05)
    killed = set()
    for _ in range(5):
        pids = _processes_of(uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.05)
    return len(killed)


def find_sandbox(python: Optional[str] = None, sandbox: bool = True, allow_root: bool = False,
                 cut_network: bool = True, workdir: Optional[Path] = None,
                 private: Sequence[Path] = ()) -> Sandbox:
    """The sandbox this machine gives, checked by running the library's import in it once.

    ``private``: folders no sandbox may see (the submissions, the output): :class:`GradingError` when one of
    them lies inside a folder the sandbox must show. Raises :class:`GradingError` with the fix in one line when
    ``bwrap`` is missing or the sandboxed user cannot run ``python`` with the library.
    """
    python = python or sys.executable
    if not sandbox:
        return Sandbox(python, isolated=False, workdir=workdir)
    if shutil.which("bwrap") is None or shutil.which("setpriv") is None:
        raise GradingError("bubblewrap (bwrap) is not installed: run `make bubblewrap` or `apt-get install "
                           "bubblewrap` (or pass --no-sandbox to grade without a sandbox, for trusted files only)")
    package = library_root() / "ttt4rec_edu"
    binds: List[str] = []
    for path in sorted(set(_interpreter_paths(python)), key=len):
        if _is_under(path, "/usr") or _is_under(str(package), path) or _is_under(path, str(package)):
            continue            # /usr is shown anyway; the repository itself never is (its package is)
        if not any(_is_under(path, b) for b in binds):
            binds.append(path)
    data_env = _data_folders(binds)
    shown = binds + [str(package)] + data_env.get("TTT4REC_DATA_MIRRORS", "").split(os.pathsep) + \
        [data_env.get("TTT4REC_DATA_DIR", "")] + ([str(workdir)] if workdir else []) + ["/usr"]
    for folder in private:
        real = os.path.realpath(folder)
        for path in filter(None, shown):
            if _is_under(real, os.path.realpath(path)):
                raise GradingError(f"{folder} lies inside {path}, which the sandbox shows every submission: "
                                   "move it elsewhere")
    box = Sandbox(python, True, allow_root, cut_network, binds, package, data_env, workdir)
    _probe(box)
    return box


def _data_folders(binds: List[str]) -> Dict[str, str]:
    """The data mirrors and the cache the library would read, shown read-only (when they exist)."""
    from ..data.download import default_cache_dir, mirror_dirs
    env = {}
    mirrors = [str(Path(p).resolve()) for p in mirror_dirs() if Path(p).is_dir()]
    if mirrors:
        env["TTT4REC_DATA_MIRRORS"] = os.pathsep.join(mirrors)
    cache = default_cache_dir()
    if cache.is_dir():
        env["TTT4REC_DATA_DIR"] = str(cache.resolve())
    for path in mirrors + ([env["TTT4REC_DATA_DIR"]] if "TTT4REC_DATA_DIR" in env else []):
        if not any(_is_under(path, b) for b in binds):
            binds.append(path)
    return env


def _probe(box: Sandbox) -> None:
    """Run ``import ttt4rec_edu.exercises.worker`` (numpy, pandas, torch, IPython) as a submission would."""
    limits = Limits(timeout=300, file_mb=16)
    code = "import IPython, numpy, pandas, torch, ttt4rec_edu.exercises.worker"
    uid = box.new_uid()
    try:
        proc = subprocess.run(box.command([box.python, "-c", code], uid, limits), capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
        ok, why = proc.returncode == 0, (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    except (OSError, subprocess.SubprocessError) as exc:
        ok, why = False, f"{type(exc).__name__}: {exc}"
    finally:
        kill_uid(uid)
    if not ok:
        who = f"an unprivileged user (uid {uid})" if uid is not None else "the sandbox"
        raise GradingError(f"{who} cannot run {box.python} with the library in the sandbox ({why[:200]}): "
                           "install Python and the library where every user may read them (e.g. a venv outside "
                           "root's home, chmod -R o+rX) or name such a Python with --python")
