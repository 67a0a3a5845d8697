#!/usr/bin/env python3
"""One prepared GPU check: every model on CUDA, checked and timed, its results written after every row.

Nothing in this project had run on CUDA before this script; a GPU machine is lent rarely and briefly (one
NVIDIA H100 or H200, 15 minutes of device time in all, its start-up included, no network; ``python3`` is Python
3.12 with PyTorch 2.11 + CUDA, numpy, pandas, matplotlib, seaborn and tqdm installed, *not* this package). So the
script needs nothing but the repository checkout (it puts the repository root on ``sys.path``), reads its data
from a file you bring along, never touches the network, and stops itself at a global deadline (``--deadline-s``,
360 s on CUDA by default). Parts run in order, each within its own share of the time (with part c selected,
a and b at most 15 % of the deadline each; c until part d's reserve), and the report (JSON + markdown) is
rewritten after every measured row, so a part that fails, a part cut by its time, or a hard kill loses nothing
already measured; a failing part is recorded and the next part still runs:

a. **models** — every registered model (TTT4Rec in its four backbone × inner variants) forward + backward on
   the device against the CPU, same weights and batch (evaluation mode, no dropout; ``nn.RNNBase`` modules in
   training mode, which cuDNN's RNN backward requires and which changes nothing with their dropout 0): the largest
   absolute difference of the scores and of the gradients, float32 with TF32 off, against a stated relative
   tolerance; with ``--bf16`` also the loss under bfloat16 autocast: finite and within ``BF16_LOSS_RTOL``.
b. **ttt** — the TTT layer's three modes (token loop, mini-batch loop, dual form) agree on the device; the dual
   form's forward + backward time against the token loop and against one SASRec training step at
   L = 50 / 100 / 200, measured side by side in this run (ratios), with peak memory.
c. **beauty** — Amazon Beauty, the whole file (``--data``): one training epoch at the paper's batch 2048 and a
   full-sort evaluation of the test split per model, the headline rows first (TTT4Rec, SASRec, then with
   ``--bf16`` TTT4Rec's epoch under bfloat16 autocast), then the other models; then TTT4Rec and SASRec under the
   official configuration's early stopping (valid NDCG@10, patience 5, seed 0) for as long as the time allows,
   with test metrics (a run cut by the deadline says so). Evaluation always runs in float32.
d. **torchrun** — ``python3 -m torch.distributed.run --nproc_per_node 1 -m ttt4rec_edu train`` for one epoch:
   nccl on CUDA, gloo on the CPU.
e. **report** — ``<out>/<date>-<time>-<device>.json`` and ``.md`` (a second run never overwrites a first), with
   the three headline ratios (TTT4Rec's Beauty epoch against SASRec's, goal ≤ 2×; dual form against token loop at
   L = 100, goal ≥ 10×; bf16 against fp32 for TTT4Rec, goal ≥ 1.3× faster), each measured in this same run, and
   ``<stem>.nvidia-smi.txt`` (written first). The record names the commit (``GPU_CHECK_COMMIT``: ``.git`` does
   not travel), a digest of the library's source, torch, CUDA, cuDNN, NCCL and driver versions, and whether
   Mamba4Rec ran on ``mamba_ssm``'s fused kernel (not installed there: the pure-PyTorch chunked scan).

``--tiny`` shrinks every part (a few items, short sequences, synthetic data unless ``--data`` is given) so that
``--device cpu --tiny`` runs in seconds; the test suite runs it (``tests/test_gpu_check.py``), and
``tests/test_gpu_rehearsal.py`` runs the device command below in a bare virtual environment (only the packages
the GPU machine has, this package not installed) on the real Amazon Beauty file. A tiny run is marked
``"tiny": true`` and is never read by the book.

The GPU machine (the device tool's ``run``) receives the git working tree only, runs the command in the
repository root, and returns only what the command writes under ``$OUT``. Budget: about 8 of the 15 minutes
(the machine's start, 1-2 minutes, plus this run's 6), which leaves room for one targeted rerun of a single part.

1. Here, in the repository root: ``mkdir -p gpu_data && cp ../shared/data/amazon-beauty-5core.txt gpu_data/``
   (``gpu_data/`` is git-ignored: the file is never committed), then
   ``python3 scripts/gpu_check.py --print-device-command``, which prints the command below with ``COMMIT``
   replaced by ``git rev-parse --short HEAD`` (and says so when the tree has uncommitted changes).
2. One call of ``run`` with ``carry=["gpu_data"]``, ``timeout_s=420`` and the command::

    set -o pipefail; export GPU_CHECK_COMMIT=COMMIT PYTHONUNBUFFERED=1; python3 scripts/gpu_check.py --device cuda --bf16 --data gpu_data/amazon-beauty-5core.txt --out "$OUT" 2>&1 | tee "$OUT/gpu-check.log"

   It returns four files: ``<stem>.json``, ``<stem>.md``, ``<stem>.nvidia-smi.txt`` and ``gpu-check.log``.
3. A targeted rerun of one part, if one failed: the same command with ``--parts c --deadline-s 180`` (any one
   letter), ``timeout_s=240``.
4. Copy the returned files from ``files_at`` into ``book/results/gpu/`` (``gpu-check.log`` renamed to
   ``<stem>.log``), where chapter 10 (``ttt4rec_edu.gpu_results``) reads the newest run of every part.

``make gpu-check`` runs the same check on a CUDA machine of your own (no install: ``python3``, the checkout and
``gpu_data/``, copied from the data mirror when missing). A CPU smoke run:
``python3 scripts/gpu_check.py --device cpu --tiny --out /tmp/gpu-check``.
Exit status: 0 when every part is ok or skipped, 1 when a part failed, raised or was cut short, 2 for bad
arguments (a missing data file or a ``cuda:N`` beyond the GPUs included: one line, before anything runs).
"""  # noqa: E501 (the device command is one line, to be pasted whole)
from __future__ import annotations

import time

T0 = time.monotonic()  # the deadline counts from here: imports (torch, CUDA start-up) are part of the budget

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the GPU machine has the checkout, not the installed package
    sys.path.insert(0, str(REPO))

SCHEMA = 1
KIND = "ttt4rec_edu gpu_check"
DEFAULT_OUT = REPO / "book" / "results" / "gpu"
DEFAULT_DEADLINE_S = {"cuda": 360.0, "cpu": 600.0}
TINY_DEADLINE_S = 120.0
BEAUTY_FILE = "amazon-beauty-5core.txt"
# The one command for the lent GPU machine (README, chapter 10 and the docstring show it; tests/test_gpu_rehearsal.py
# runs it): python3, nothing installed, the data carried in gpu_data/, everything written under $OUT, the log too.
# COMMIT is replaced by the commit here (--print-device-command does it): .git does not travel.
COMMIT_ENV = "GPU_CHECK_COMMIT"
DATA_DIR = "gpu_data"
DEVICE_COMMAND = (f'set -o pipefail; export {COMMIT_ENV}=COMMIT PYTHONUNBUFFERED=1; python3 scripts/gpu_check.py '
                  f'--device cuda --bf16 --data {DATA_DIR}/{BEAUTY_FILE} --out "$OUT" 2>&1 | tee "$OUT/gpu-check.log"')
DEVICE_CARRY = [DATA_DIR]
DEVICE_TIMEOUT_S = 420
SENT_LIMIT_BYTES = 64 * 2**20  # what the device tool sends at most: the working tree and the carried folder
# At most this share of the deadline for parts a and b each, so that part c's headline rows always get time;
# part c runs until part d's reserve (RESERVE_FOR_D_S, at most a quarter of the deadline).
PART_SHARE = {"a": 0.15, "b": 0.15}
RESERVE_FOR_D_S = {"tiny": 30.0, "full": 90.0}
# Part c measures these first: the three headline ratios need them (the bf16 epoch follows the two).
HEADLINE_VARIANTS = ("ttt4rec-transformer-mlp", "sasrec")
TINY_USERS = 200
PARTS = (("a", "models: device against CPU, same weights and batch"),
         ("b", "ttt: the TTT layer's three modes, dual form against token loop and SASRec"),
         ("c", "beauty: one epoch per model at batch 2048, then early stopping as the official config"),
         ("d", "torchrun: one process, one epoch"),
         ("e", "report: JSON and markdown"))
# Tolerances, relative to the largest magnitude of the CPU reference (float32, TF32 off).
SCORE_RTOL = 1e-4
GRAD_RTOL = 1e-3
MODES_RTOL = 1e-4
BF16_LOSS_RTOL = 0.02  # bfloat16 keeps 8 mantissa bits (~0.4 % per rounding); the loss is an average of many
GOALS = {"ttt_vs_sasrec_epoch": ("<=", 2.0), "token_loop_vs_dual_L100": (">=", 10.0),
         "fp32_vs_bf16_ttt4rec_epoch": (">=", 1.3)}


class PartFailed(RuntimeError):
    """A part ran to the end but a check did not hold (recorded as ``failed``, not as an error)."""


class PartSkipped(RuntimeError):
    """A part cannot run here (e.g. no data file); recorded as ``skipped`` with this reason."""


class DeadlineReached(RuntimeError):
    """The global deadline passed (raised by the checks between steps, or by the alarm inside a step)."""


class Deadline:
    """Seconds left until ``T0 + seconds``; ``check(what)`` raises :class:`DeadlineReached` once they are gone."""

    def __init__(self, seconds: float, start: float = T0):
        self.seconds = float(seconds)
        self.end = start + self.seconds

    @classmethod
    def until(cls, end: float) -> "Deadline":
        """A deadline at the ``time.monotonic()`` value ``end`` (a part's own share of the run)."""
        return cls(end - time.monotonic(), start=time.monotonic())

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str, need: float = 0.0) -> None:
        if self.remaining() <= need:
            raise DeadlineReached(f"deadline: {max(self.remaining(), 0):.0f} s left, not enough for {what}")


class _Alarm:
    """A hard stop at the deadline inside a long step (POSIX main thread only; elsewhere a no-op)."""

    def __init__(self, deadline: Deadline, part: str, why: str = "the deadline"):
        self.deadline, self.part, self.why = deadline, part, why
        self.active = hasattr(signal, "setitimer") and _in_main_thread()

    def _fire(self, signum, frame):
        where = "" if f"part {self.part}" in self.why else f" during part {self.part}"
        raise DeadlineReached(f"deadline: {self.why} ran out{where} (stopped by the alarm)")

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, max(self.deadline.remaining(), 0.001))
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------------------------------ the report


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def json_safe(obj: Any, found: Optional[List[str]] = None, path: str = "$") -> Any:
    """Plain JSON: numpy/torch scalars to Python numbers, non-finite floats to ``None`` (strict JSON has none);
    the paths of those non-finite values are appended to ``found``."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, found, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, found, f"{path}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if found is not None:
            found.append(f"{path} = {obj}")
        return None
    return obj


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


class Report:
    """The results document; :meth:`write` rewrites ``<stem>.json`` and ``<stem>.md`` (atomically) each time."""

    def __init__(self, out_dir: Path, doc: Dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.doc = doc
        self.stem = unused_stem(self.out_dir, report_stem(doc))

    @property
    def smi_path(self) -> Path:
        return self.out_dir / f"{self.stem}.nvidia-smi.txt"

    @property
    def json_path(self) -> Path:
        return self.out_dir / f"{self.stem}.json"

    @property
    def md_path(self) -> Path:
        return self.out_dir / f"{self.stem}.md"

    def write(self) -> None:
        self.doc["updated_at"] = _utc_now()
        self.doc["elapsed_s"] = round(time.monotonic() - T0, 2)
        self.doc["headline"] = headline(self.doc)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        found: List[str] = []
        safe = json_safe({k: v for k, v in self.doc.items() if k != "non_finite_values"}, found)
        # a NaN or infinity measured anywhere is written as null and listed here, never silently dropped
        safe["non_finite_values"] = self.doc["non_finite_values"] = found
        _atomic_write(self.json_path, json.dumps(safe, indent=2, allow_nan=False) + "\n")
        _atomic_write(self.md_path, markdown(self.doc))


def report_stem(doc: Dict[str, Any]) -> str:
    """``<date>-<HHMMSS>-<device>[-tiny]`` from the start time (UTC): two runs on one day get two files."""
    clock = str(doc.get("started_at", ""))[11:19].replace(":", "") or "000000"
    return f"{doc['date']}-{clock}-{doc['device']['slug']}" + ("-tiny" if doc["tiny"] else "")


def unused_stem(folder: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ... : the first whose files do not exist in ``folder`` yet."""
    candidate, n = stem, 1
    while any((Path(folder) / f"{candidate}{ext}").exists() for ext in (".json", ".md", ".nvidia-smi.txt")):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    if num is None or den is None or not (den > 0) or not math.isfinite(num) or not math.isfinite(den):
        return None
    return num / den


def headline(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's three figures, each a ratio of two numbers measured in this run (``None`` where one is
    missing, with the reason)."""
    parts = doc["parts"]
    c = parts["c"].get("result") or {}
    b = parts["b"].get("result") or {}
    epochs = {row["variant"]: row for row in c.get("epochs", []) if "epoch_s" in row}
    where = f"{c['data']['name']}, batch {c['batch_size']}" if c.get("data") else "Amazon Beauty, batch 2048"
    timing = {row["L"]: row for row in b.get("timing", [])}
    rows = []

    def add(key, figure, value, how, missing):
        op, goal = GOALS[key]
        met = None if value is None else (value <= goal if op == "<=" else value >= goal)
        rows.append({"key": key, "figure": figure, "value": value, "goal": f"{op} {goal:g}", "met": met,
                     "how": how if value is not None else missing})

    ttt, sas = epochs.get("ttt4rec-transformer-mlp"), epochs.get("sasrec")
    add("ttt_vs_sasrec_epoch", f"TTT4Rec epoch / SASRec epoch ({where})",
        _ratio(ttt and ttt["epoch_s"], sas and sas["epoch_s"]),
        "wall time of one training epoch each, part c, same run",
        "not measured: part c has no epoch for both models")
    row = timing.get(100)
    add("token_loop_vs_dual_L100", "token loop / dual form, TTT layer fwd+bwd at L = 100",
        _ratio(row and row.get("token_loop_ms"), row and row.get("dual_ms")),
        "median forward + backward time, part b, same run", "not measured: part b has no L = 100 timing")
    bf16 = c.get("bf16") or {}
    add("fp32_vs_bf16_ttt4rec_epoch", f"TTT4Rec epoch fp32 / bf16 autocast ({where})",
        _ratio(ttt and ttt["epoch_s"], bf16.get("epoch_s")),
        "wall time of one training epoch each, part c, same run",
        bf16.get("reason") or ("not measured: part c stopped before the bf16 epoch" if c.get("epochs")
                               else "not measured: run with --bf16 on CUDA"))
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _md_table(rows: Sequence[Dict[str, Any]], columns: Sequence[Tuple[str, str]]) -> str:
    if not rows:
        return "(none)\n"
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def markdown(doc: Dict[str, Any]) -> str:
    """A short human-readable summary of the document."""
    dev = doc["device"]
    c = doc["parts"]["c"].get("result") or {}
    out = [f"# GPU check: {dev['name']} ({dev['type']}), {doc['date']}\n"]
    if doc["tiny"]:
        out.append("**Tiny smoke run** (`--tiny`): toy sizes, not a measurement of anything. The book ignores it.\n")
    env = doc["environment"]
    smi = env.get("nvidia_smi") or {}
    out.append(f"Written by `{doc['command']}`; torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN "
               f"{_fmt(env.get('cudnn'))}, NCCL {_fmt(env.get('nccl'))}, driver {_fmt(smi.get('driver_version'))}, "
               f"Python {env.get('python')}; commit {_fmt(env.get('git_commit'))} "
               f"({env.get('git_commit_from', '—')}), source sha256 {str(env.get('source_sha256', '—'))[:12]}; "
               f"deadline {doc['deadline_s']:.0f} s, elapsed {doc.get('elapsed_s', 0):.0f} s; "
               f"data: {(c.get('data') or {}).get('name', '—')}. Mamba4Rec: {env.get('mamba4rec_scan', '—')}.\n")
    if doc.get("non_finite_values"):
        out.append("**Non-finite values** (written as null): " + "; ".join(doc["non_finite_values"][:20]) + "\n")
    out.append("## Headline figures (ratios measured in this run)\n")
    out.append(_md_table(doc.get("headline", []), [("figure", "figure"), ("value", "ratio"),
                                                    ("goal", "goal"), ("met", "met"), ("how", "how")]))
    out.append("## Parts\n")
    out.append(_md_table([{"part": k, **{f: v for f, v in p.items() if f != "result"}}
                          for k, p in doc["parts"].items()],
                         [("part", "part"), ("title", "what"), ("status", "status"), ("elapsed_s", "s"),
                          ("reason", "reason")]))
    a = doc["parts"]["a"].get("result") or {}
    if a.get("models"):
        out.append(f"## a. {doc['device']['type']} against CPU (float32, TF32 off)\n")
        out.append(_md_table(a["models"], [("variant", "model"), ("score_max_abs_diff", "scores: max abs Δ"),
                                           ("score_rel", "relative"), ("grad_max_abs_diff", "grads: max abs Δ"),
                                           ("grad_rel", "relative"), ("bf16_loss_rel", "bf16 loss rel. Δ"),
                                           ("ok", "ok"), ("error", "error")]))
    b = doc["parts"]["b"].get("result") or {}
    if b.get("timing"):
        out.append("## b. TTT layer: modes and timing\n")
        out.append(_md_table(b.get("agreement", []), [("inner", "inner"), ("b", "b"), ("compare", "compare"),
                                                      ("max_abs_diff", "output: max abs Δ"),
                                                      ("grad_max_abs_diff", "grads: max abs Δ"), ("ok", "ok")]))
        out.append("\n")
        out.append(_md_table(b["timing"], [("L", "L"), ("dual_ms", "dual ms"), ("token_loop_ms", "token loop ms"),
                                           ("sasrec_step_ms", "SASRec step ms"),
                                           ("token_loop_over_dual", "token/dual"),
                                           ("dual_over_sasrec_step", "dual/SASRec"),
                                           ("dual_peak_mib", "dual peak MiB"),
                                           ("token_loop_peak_mib", "token peak MiB")]))
    if c.get("epochs"):
        out.append(f"## c. {(c.get('data') or {}).get('name')}: one epoch per model (batch {c.get('batch_size')}) "
                   "and a full-sort evaluation of the test split\n")
        out.append(_md_table(c["epochs"], [("variant", "model"), ("epoch_s", "epoch s"),
                                           ("train_samples_per_s", "train samples/s"),
                                           ("eval_samples_per_s", "eval samples/s"),
                                           ("peak_memory_mib", "peak MiB"), ("loss", "loss"),
                                           ("error", "error")]))
    if c.get("protocol"):
        out.append("\n### Early stopping as the authors' config.yaml (up to 300 epochs, patience 5; seed 0), "
                   "as far as the deadline allowed\n")
        out.append(_md_table(c["protocol"], [("variant", "model"), ("epochs", "epochs"),
                                             ("best_epoch", "best"), ("stopped_early", "stopped early"),
                                             ("cut_by_deadline", "cut by deadline"), ("test_hr@10", "HR@10"),
                                             ("test_ndcg@10", "NDCG@10"), ("train_time_s", "s")]))
    d = doc["parts"]["d"].get("result") or {}
    if d:
        out.append("## d. torchrun\n")
        out.append(f"`{d.get('command', '')}` → exit {d.get('returncode')}, backend {d.get('backend')}, "
                   f"{d.get('epochs')} epoch(s), {_fmt(d.get('wall_s'))} s, test NDCG@10 "
                   f"{_fmt(d.get('test_ndcg@10'))}.\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------- small helpers


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device) -> Optional[float]:
    """Peak allocated GPU memory since the last reset (MiB); ``None`` on the CPU (not measured there)."""
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def time_ms(fn: Callable[[], Any], device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in ms (the device synchronised around each call), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def random_batch(num_items: int, batch: int, length: int, seed: int = 0):
    """Right-padded ``(item_seq, lengths, targets)`` on the CPU; lengths uniform in 1..L, the first one full."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    item_seq = torch.randint(1, num_items + 1, (batch, length), generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length
    item_seq[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    targets = torch.randint(1, num_items + 1, (batch,), generator=gen)
    return item_seq, lengths, targets


def model_variants() -> List[Tuple[str, str, Dict[str, str]]]:
    """``(variant, registry name, options)`` for every registered model, TTT4Rec in its four variants."""
    from ttt4rec_edu.models import available_models

    out = []
    for name in available_models():
        if name == "ttt4rec":
            out += [(f"ttt4rec-{bb}-{inner}", name, {"backbone": bb, "inner": inner})
                    for bb in ("transformer", "mamba") for inner in ("mlp", "linear")]
        else:
            out.append((name, name, {}))
    return out


def _max_abs(t) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:500]


class Context:
    """What every part needs: the parsed arguments, the device, the deadline and the sizes."""

    def __init__(self, args, device, deadline: Deadline, save: Optional[Callable[[], None]] = None):
        self.args, self.device, self.deadline = args, device, deadline
        self.save = save or (lambda: None)  # rewrites the report: called after every measured row
        self.tiny = bool(args.tiny)
        self.data = None  # (SequenceData, Splits, description), loaded once by part c
        self.data_path: Optional[Path] = None
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        if self.tiny:
            self.items, self.length, self.batch = 40, 8, 6
            self.ttt_lengths, self.ttt_batch = (8, 16), 4
            self.train_batch, self.protocol_max_epochs = 32, 3
        else:
            self.items, self.length, self.batch = 12101, 50, 256
            self.ttt_lengths, self.ttt_batch = (50, 100, 200), 256
            self.train_batch, self.protocol_max_epochs = 2048, 300
        self.reserve_for_d = min(RESERVE_FOR_D_S["tiny" if self.tiny else "full"], 0.25 * deadline.seconds)


# ----------------------------------------------------------------------------------------------- part a


def comparison_mode(model):
    """``model`` in evaluation mode (no dropout) for the device-against-CPU comparison, except its ``nn.RNNBase``
    modules (GRU4Rec's and NARM's GRU): cuDNN's RNN backward refuses evaluation mode ("cudnn RNN backward can only
    be called in training mode"). An RNN's own dropout acts only between stacked layers, so with dropout 0 or one
    layer training mode computes exactly the same; otherwise this raises ``ValueError``. Returns ``(model, names of
    the modules in training mode)``. (Switching cuDNN off instead would turn TF32 back on through its flags.)"""
    from torch import nn

    model.eval()
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.RNNBase):
            if module.dropout > 0 and module.num_layers > 1:
                raise ValueError(f"{name}: {type(module).__name__} has dropout {module.dropout} between its "
                                 f"{module.num_layers} layers; training mode would change its output")
            module.train()
            names.append(name)
    return model, names


def part_models(ctx: Context, rec: Dict[str, Any]) -> str:
    """Every model on the device against the CPU (same weights, same batch), float32; bf16 loss with --bf16."""
    import torch
    import torch.nn.functional as F

    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.utils import set_seed

    device, cpu = ctx.device, torch.device("cpu")
    item_seq, lengths, targets = random_batch(ctx.items, ctx.batch, ctx.length)
    rec.update({"items": ctx.items, "max_len": ctx.length, "batch": ctx.batch,
                "mode": "eval (no dropout); nn.RNNBase modules in train mode (cuDNN's RNN backward needs it; "
                        "their dropout is 0, so the output is the same)",
                "tolerance": {"score_rel": SCORE_RTOL, "grad_rel": GRAD_RTOL, "bf16_loss_rel": BF16_LOSS_RTOL},
                "precision": "float32, TF32 off for matmul and cuDNN", "models": []})
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    failures = []
    try:
        for variant, name, options in model_variants():
            ctx.deadline.check(f"model {variant}")
            row: Dict[str, Any] = {"variant": variant}
            rec["models"].append(row)
            try:
                set_seed(0)
                ref, rnn_modules = comparison_mode(build_model(name, ctx.items, ctx.length, **options))
                if rnn_modules:
                    row["train_mode_modules"] = rnn_modules
                dev_model = copy.deepcopy(ref).to(device)

                def run(model, where, autocast=False):
                    seq, lens, tgt = item_seq.to(where), lengths.to(where), targets.to(where)
                    if callable(getattr(model, "fit_statistics", None)):
                        model.fit_statistics(seq, lens, tgt)
                    model.zero_grad(set_to_none=True)
                    with torch.autocast(where.type, dtype=torch.bfloat16, enabled=autocast):
                        scores = model.score_all(seq, lens)
                        loss = F.cross_entropy(scores.float(), tgt)
                    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
                    if params:
                        loss.backward()
                    grads = {n: p.grad.detach().float().cpu() for n, p in params if p.grad is not None}
                    return scores.detach().float().cpu(), float(loss.detach()), grads

                s_ref, loss_ref, g_ref = run(ref, cpu)
                s_dev, loss_dev, g_dev = run(dev_model, device)
                finite = torch.isfinite(s_ref)
                same_pattern = bool(torch.equal(finite, torch.isfinite(s_dev)))
                diff = _max_abs(s_ref[finite] - s_dev[finite]) if same_pattern else math.inf
                scale = max(_max_abs(s_ref[finite]), 1e-12)
                row.update({"parameters": sum(p.numel() for p in ref.parameters()),
                            "loss_cpu": loss_ref, "loss_device": loss_dev,
                            "score_max_abs_diff": diff, "score_scale": scale, "score_rel": diff / scale})
                if g_ref:
                    gdiff = max(_max_abs(g_ref[n] - g_dev[n]) for n in g_ref) if set(g_ref) == set(g_dev) \
                        else math.inf
                    gscale = max(max(_max_abs(g) for g in g_ref.values()), 1e-12)
                    row.update({"grad_max_abs_diff": gdiff, "grad_scale": gscale, "grad_rel": gdiff / gscale,
                                "grad_tensors": len(g_ref)})
                else:
                    row["grad_note"] = "no trainable parameters"
                ok = same_pattern and row["score_rel"] <= SCORE_RTOL and row.get("grad_rel", 0.0) <= GRAD_RTOL
                if ctx.args.bf16:
                    _, loss_bf16, g_bf16 = run(dev_model, device, autocast=True)
                    rel = abs(loss_bf16 - loss_dev) / max(abs(loss_dev), 1e-12)
                    grads_finite = all(bool(torch.isfinite(g).all()) for g in g_bf16.values())
                    row.update({"bf16_loss": loss_bf16, "bf16_loss_rel": rel, "bf16_grads_finite": grads_finite})
                    ok = ok and math.isfinite(loss_bf16) and rel <= BF16_LOSS_RTOL and grads_finite
                row["ok"] = bool(ok)
                if not ok:
                    failures.append(variant)
            except DeadlineReached:
                raise
            except Exception as err:  # one model's failure must not hide the others'
                row.update({"ok": False, "error": _error_text(err)})
                failures.append(variant)
            ctx.save()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    if failures:
        raise PartFailed(f"outside tolerance or failed: {', '.join(failures)}")
    return "ok"


# ----------------------------------------------------------------------------------------------- part b


def part_ttt(ctx: Context, rec: Dict[str, Any]) -> str:
    """The TTT layer's modes agree on the device; dual form vs token loop vs one SASRec step, side by side."""
    import torch

    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.train import batch_loss
    from ttt4rec_edu.ttt import TTTLayer

    device = ctx.device
    rec.update({"agreement": [], "timing": [], "batch": ctx.ttt_batch, "hidden": 64, "heads": 4,
                "sasrec": f"registry sasrec (defaults), {ctx.items} items, full-softmax CE, Adam step",
                "dual": "TTT-MLP layer, mini-batch b = 8", "token_loop": "TTT-MLP layer, b = 1 (online GD)"})
    failures = []
    # 1. agreement: the three modes on the same input and weights
    for inner in ("mlp", "linear"):
        for b, compare in ((8, ("dual", "minibatch_loop")), (1, ("dual", "minibatch_loop", "token_loop"))):
            ctx.deadline.check("the TTT mode agreement")
            torch.manual_seed(0)
            layer = TTTLayer(64, 4, inner=inner, mini_batch_size=b).to(device)
            x = torch.randn(2, 2 * 8 + 3, 64, device=device)   # a remainder chunk too
            outs = {}
            for mode in compare:
                layer.zero_grad(set_to_none=True)
                xi = x.clone().requires_grad_()
                y = layer(xi, mode=mode)
                (y * torch.linspace(-1, 1, y.shape[-1], device=device)).sum().backward()
                outs[mode] = (y.detach(), [xi.grad] + [p.grad for p in layer.parameters() if p.grad is not None])
            ref_y, ref_g = outs["dual"]
            for mode in compare[1:]:
                y, g = outs[mode]
                diff = _max_abs(y - ref_y)
                gdiff = max(_max_abs(a - c) for a, c in zip(g, ref_g)) if len(g) == len(ref_g) else math.inf
                scale = max(_max_abs(ref_y), 1e-12)
                gscale = max(max(_max_abs(t) for t in ref_g), 1e-12)
                ok = diff / scale <= MODES_RTOL and gdiff / gscale <= MODES_RTOL * 10
                rec["agreement"].append({"inner": inner, "b": b, "compare": f"{mode} vs dual", "max_abs_diff": diff,
                                         "rel": diff / scale, "grad_max_abs_diff": gdiff, "grad_rel": gdiff / gscale,
                                         "ok": bool(ok)})
                ctx.save()
                if not ok:
                    failures.append(f"{inner} b={b} {mode}")
    # 2. timing, side by side at each L
    repeats = 2 if ctx.tiny else 5
    for length in ctx.ttt_lengths:
        ctx.deadline.check(f"the timing at L = {length}", need=5.0)
        row: Dict[str, Any] = {"L": length}
        rec["timing"].append(row)
        torch.manual_seed(0)
        x = torch.randn(ctx.ttt_batch, length, 64, device=device, requires_grad=True)
        for key, mode, b in (("dual", "dual", 8), ("token_loop", "token_loop", 1)):
            layer = TTTLayer(64, 4, inner="mlp", mini_batch_size=b).to(device)

            def step(layer=layer, mode=mode, x=x):
                layer.zero_grad(set_to_none=True)
                x.grad = None
                layer(x, mode=mode).square().mean().backward()

            _reset_peak(device)
            row[f"{key}_ms"] = time_ms(step, device, repeats=repeats if key == "dual" else max(1, repeats // 2))
            row[f"{key}_peak_mib"] = _peak_mib(device)
            del layer
            ctx.save()
        torch.manual_seed(0)
        sasrec = build_model("sasrec", ctx.items, length).to(device).train()
        optimizer = torch.optim.Adam(sasrec.parameters(), lr=1e-3)
        seq, lens, tgt = (t.to(device) for t in random_batch(ctx.items, ctx.ttt_batch, length))

        def sas_step(sasrec=sasrec, optimizer=optimizer, seq=seq, lens=lens, tgt=tgt):
            optimizer.zero_grad(set_to_none=True)
            batch_loss(sasrec, seq, lens, tgt, ctx.items).backward()
            optimizer.step()

        _reset_peak(device)
        row["sasrec_step_ms"] = time_ms(sas_step, device, repeats=repeats)
        row["sasrec_peak_mib"] = _peak_mib(device)
        row["token_loop_over_dual"] = _ratio(row["token_loop_ms"], row["dual_ms"])
        row["dual_over_sasrec_step"] = _ratio(row["dual_ms"], row["sasrec_step_ms"])
        del sasrec, optimizer
        ctx.save()
    if failures:
        raise PartFailed(f"modes disagree: {', '.join(failures)}")
    return "ok"


# ----------------------------------------------------------------------------------------------- part c


def _tiny_sequences(users: int = 60, items: int = 30, seed: int = 0) -> List[List[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.integers(1, items + 1, int(rng.integers(6, 14)))] for _ in range(users)]


def find_beauty(args) -> Optional[Path]:
    """``--data``, else ``gpu_data/amazon-beauty-5core.txt`` in the checkout, else the library's cache/mirrors."""
    if args.data:
        return Path(args.data)
    local = REPO / "gpu_data" / BEAUTY_FILE
    if local.is_file():
        return local
    try:
        from ttt4rec_edu.data import ensure_dataset_file

        return Path(ensure_dataset_file("amazon-beauty", download=False, progress=False))
    except Exception:
        return None


def load_data(ctx: Context):
    """``(SequenceData, Splits 3:2:5 at context 50, description)``: the Beauty file, or tiny synthetic data."""
    from ttt4rec_edu.data import SequenceData, build_splits, dataset_stats, load_dataset

    if ctx.data is not None:
        return ctx.data
    # --tiny reads a file only when --data names one (and then only its first TINY_USERS users)
    path = (Path(ctx.args.data) if ctx.args.data else None) if ctx.tiny else find_beauty(ctx.args)
    if path is not None:
        data = load_dataset(path, min_user_inter=5, min_item_inter=5, progress=False)  # the registry's filters
        max_len = 50
        if ctx.tiny:
            data = SequenceData(data.sequences[:TINY_USERS], data.num_items,
                                name=f"{data.name}[:{TINY_USERS} users]", meta=dict(data.meta))
        ctx.data_path = path
    elif ctx.tiny:
        data = SequenceData(_tiny_sequences(), 30, name="tiny synthetic (60 users, 30 items)")
        max_len = ctx.length
    else:
        raise PartSkipped(f"no Amazon Beauty file: pass --data PATH/{BEAUTY_FILE} (see the script's docstring)")
    splits = build_splits(data, max_len, "3:2:5")
    stats = dataset_stats(data)
    desc = {"name": data.name, "file": str(path) if path else None, "users": int(stats["users"]),
            "items": int(stats["items"]), "interactions": int(stats["interactions"]), "max_len": max_len,
            "split": "3:2:5", **splits.counts()}
    ctx.data = (data, splits, desc)
    return ctx.data


def _train_config(ctx: Context, **kw):
    from ttt4rec_edu.train import TrainConfig

    return TrainConfig(batch_size=ctx.train_batch, eval_batch_size=4096, device=str(ctx.device), progress=False,
                       seed=0, **kw)


def measure_epoch(ctx: Context, name: str, options: Dict[str, str], splits, bf16: bool = False) -> Dict[str, Any]:
    """Warm-up steps, then one timed training epoch and one timed full-sort evaluation of the test split."""
    import torch

    from ttt4rec_edu.metrics import compute_ranks, metrics_from_ranks
    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.train import train_epoch
    from ttt4rec_edu.utils import set_seed

    device = ctx.device
    set_seed(0)
    model = build_model(name, splits.num_items, splits.max_len, **options).to(device)
    row: Dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if callable(getattr(model, "fit_statistics", None)):
        model.fit_statistics(*splits.train.batch())
    params = [p for p in model.parameters() if p.requires_grad]
    if params:
        optimizer = torch.optim.Adam(params, lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        warm = _train_config(ctx, bf16=bf16, max_train_batches=2)
        train_epoch(model, splits.train, optimizer, gen, warm, device, 0, splits.num_items)  # kernels, caches
        _reset_peak(device)
        stats = train_epoch(model, splits.train, optimizer, gen, _train_config(ctx, bf16=bf16), device, 1,
                            splits.num_items)
        row.update({"epoch_s": stats["time_s"], "train_samples": stats["samples"],
                    "train_samples_per_s": stats["samples_per_s"], "loss": stats["loss"],
                    "peak_memory_mib": _peak_mib(device)})
    else:
        row["note"] = "no trainable parameters: evaluation only"
    if not bf16:
        start = time.perf_counter()
        ranks = compute_ranks(model, splits.test, batch_size=4096, device=device)
        _sync(device)
        elapsed = time.perf_counter() - start
        metrics = metrics_from_ranks(ranks, (10, 50))
        row.update({"eval_s": elapsed, "eval_samples": len(splits.test),
                    "eval_samples_per_s": len(splits.test) / max(elapsed, 1e-9),
                    "test_ndcg@10_after_one_epoch": metrics["ndcg@10"]})
    del model
    return row


def run_protocol(ctx: Context, name: str, options: Dict[str, str], splits, until: float,
                 row: Dict[str, Any], first_epoch_s: Optional[float]) -> None:
    """Training as the authors' config.yaml sets it (≤ 300 epochs, patience 5; seed 0, batch 2048) in stretches
    of epochs that fit before ``until`` (a ``time.monotonic()`` value); the trainer's resume continues each stretch
    exactly."""
    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.train import train
    from ttt4rec_edu.utils import set_seed

    out = ctx.work / f"protocol-{name}"
    set_seed(0)
    model = build_model(name, splits.num_items, splits.max_len, **options)
    per_epoch = first_epoch_s or 1.0
    target, result = 0, None
    started = time.perf_counter()
    while True:
        left = until - time.monotonic()
        # a stretch: as many epochs as fit, keeping room for the final valid + test evaluation of the call
        stretch = int(max(left - 2 * per_epoch, 0) // per_epoch)
        if stretch < 1 or target >= ctx.protocol_max_epochs:
            break
        target = min(target + stretch, ctx.protocol_max_epochs)
        result = train(model, splits, _train_config(ctx, epochs=target, patience=5), out_dir=out, resume=True)
        history = result["history"]
        per_epoch = max(statistics.median(h["time_s"] for h in history), 1e-3)
        row.update({"epochs": result["epochs"], "best_epoch": result["best_epoch"],
                    "stopped_early": result["stopped_early"],
                    "cut_by_deadline": not result["stopped_early"] and result["epochs"] < ctx.protocol_max_epochs,
                    "epoch_s_median": per_epoch, "train_time_s": result["train_time_s"],
                    "wall_s": time.perf_counter() - started,
                    "valid_ndcg@10_per_epoch": [h["valid"]["ndcg@10"] for h in history],
                    **{f"test_{k}": v for k, v in result["test"].items()},
                    **{f"valid_{k}": v for k, v in result["valid"].items()}})
        ctx.save()
        if result["stopped_early"]:
            break
    if result is None:
        row["reason"] = "skipped: no time left for one epoch before the deadline"


def headline_first(variants: Sequence[Tuple[str, str, Dict[str, str]]]) -> List[Tuple[str, str, Dict[str, str]]]:
    """``variants`` with :data:`HEADLINE_VARIANTS` first, in that order: if time runs short, the headline ratios
    are the last thing lost."""
    first = sorted((v for v in variants if v[0] in HEADLINE_VARIANTS), key=lambda v: HEADLINE_VARIANTS.index(v[0]))
    return first + [v for v in variants if v[0] not in HEADLINE_VARIANTS]


def part_beauty(ctx: Context, rec: Dict[str, Any]) -> str:
    """One epoch and a full-sort evaluation per model at batch 2048, the headline rows first (TTT4Rec, SASRec,
    the bf16 epoch), then the other models; then the protocol runs. The report is rewritten after every row."""
    data, splits, desc = load_data(ctx)
    rec["data"] = desc
    rec.update({"batch_size": ctx.train_batch, "eval_batch_size": 4096, "order": "headline rows first",
                "epochs": [], "protocol": []})
    ctx.save()
    failures, short = [], []
    no_time = "deadline: part c's time is used up (what is left is part d's reserve)"

    def epoch_row(variant: str, name: str, options: Dict[str, str]) -> None:
        row: Dict[str, Any] = {"variant": variant, "model": name, "options": options}
        rec["epochs"].append(row)
        try:
            if ctx.deadline.remaining() <= 1.0:
                row["skipped"] = no_time
                short.append(variant)
            else:
                row.update(measure_epoch(ctx, name, options, splits))
        except DeadlineReached:
            row["skipped"] = "deadline: cut during this model's epoch"
            raise
        except Exception as err:
            row["error"] = _error_text(err)
            failures.append(variant)
        finally:
            ctx.save()

    def bf16_epoch() -> None:
        try:
            if not ctx.args.bf16:
                rec["bf16"] = {"reason": "not measured: run with --bf16"}
            elif ctx.device.type != "cuda":
                rec["bf16"] = {"reason": "not measured: the bf16 epoch is timed on CUDA only"}
            elif ctx.deadline.remaining() <= 1.0:
                rec["bf16"] = {"reason": f"not measured: {no_time}"}
            else:
                rec["bf16"] = {"variant": "ttt4rec-transformer-mlp",
                               **measure_epoch(ctx, "ttt4rec", {"backbone": "transformer", "inner": "mlp"}, splits,
                                               bf16=True)}
        except DeadlineReached:
            rec["bf16"] = {"reason": "not measured: deadline, cut during the bf16 epoch"}
            raise
        except Exception as err:
            rec["bf16"] = {"error": _error_text(err), "reason": f"bf16 epoch failed: {_error_text(err)}"}
            failures.append("bf16 epoch")
        finally:
            ctx.save()

    variants = headline_first(model_variants())
    headline_rows = [v for v in variants if v[0] in HEADLINE_VARIANTS]
    for variant in headline_rows:
        epoch_row(*variant)
    bf16_epoch()
    for variant in variants[len(headline_rows):]:
        epoch_row(*variant)
    epoch_of = {r["variant"]: r.get("epoch_s", 0.0) + r.get("eval_s", 0.0) * 0.4 for r in rec["epochs"]}
    # the protocol runs share the rest of part c's time: TTT4Rec first (half), SASRec the rest
    for i, (variant, name, options) in enumerate((("ttt4rec-transformer-mlp", "ttt4rec",
                                                   {"backbone": "transformer", "inner": "mlp"}),
                                                  ("sasrec", "sasrec", {}))):
        end = ctx.deadline.end
        until = time.monotonic() + (end - time.monotonic()) / (2 - i)
        row = {"variant": variant, "model": name, "options": options, "seed": 0, "patience": 5,
               "max_epochs": ctx.protocol_max_epochs, "batch_size": ctx.train_batch}
        rec["protocol"].append(row)
        try:
            run_protocol(ctx, name, options, splits, until, row, epoch_of.get(variant))
        except DeadlineReached:
            row["reason"] = "deadline: cut during this run"
            raise
        except Exception as err:
            row["error"] = _error_text(err)
            failures.append(f"protocol {variant}")
        finally:
            ctx.save()
        if "reason" in row:
            short.append(f"protocol {variant}")
    if failures:
        raise PartFailed(f"failed: {', '.join(failures)}")
    if short:  # recorded as incomplete: what it measured stays
        raise DeadlineReached(f"deadline: no time left for {', '.join(short)}")
    return "ok"


# ----------------------------------------------------------------------------------------------- part d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_torchrun(ctx: Context, rec: Dict[str, Any]) -> str:
    """``torch.distributed.run`` with one process trains one epoch (nccl on CUDA, gloo on the CPU)."""
    if ctx.data_path is None and not ctx.tiny:
        ctx.data_path = find_beauty(ctx.args)
    if ctx.data_path is not None and not ctx.tiny:
        data_args = ["--data", str(ctx.data_path), "--max-len", "50", "--min-user-inter", "5",
                     "--min-item-inter", "5"]
    elif ctx.tiny:
        path = ctx.work / "tiny.csv"
        lines = ["user,item,timestamp"] + [f"u{u},i{item},{t}" for u, seq in enumerate(_tiny_sequences())
                                           for t, item in enumerate(seq)]
        path.write_text("\n".join(lines) + "\n")
        data_args = ["--data", str(path), "--max-len", str(ctx.length)]
    else:
        raise PartSkipped(f"no Amazon Beauty file for the torchrun epoch: pass --data PATH/{BEAUTY_FILE}")
    out = ctx.work / "torchrun"
    port = _free_port()
    device = "cuda" if ctx.device.type == "cuda" else "cpu"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(port),
               "-m", "ttt4rec_edu", "train", "--model", "ttt4rec", *data_args, "--epochs", "1",
               "--batch-size", str(ctx.train_batch), "--device", device, "--seed", "0", "--no-progress",
               "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in
                                                                       [os.environ.get("PYTHONPATH")] if p]),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    if ctx.tiny:
        env["OMP_NUM_THREADS"] = "1"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    timeout = max(ctx.deadline.remaining() - 3.0, 1.0)
    rec["command"] = "torchrun --nproc_per_node 1 -m ttt4rec_edu " + " ".join(command[command.index("train"):])
    start = time.perf_counter()
    # its own process group, so that a timeout (or the alarm) stops torchrun's worker too, not only the launcher
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except BaseException as err:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(err, subprocess.TimeoutExpired):
            raise DeadlineReached(f"torchrun did not finish within the {timeout:.0f} s left before the deadline") \
                from None
        raise
    rec.update({"returncode": proc.returncode, "wall_s": time.perf_counter() - start,
                "expected_backend": "nccl" if device == "cuda" else "gloo"})
    if proc.returncode != 0:
        rec["stderr_tail"] = stderr[-2000:]
        raise PartFailed(f"torchrun exited with status {proc.returncode}: {stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    dist = metrics.get("distributed") or {}
    rec.update({"backend": dist.get("backend"), "world_size": dist.get("world_size"), "epochs": metrics["epochs"],
                "device": metrics.get("device"), "loss": metrics["history"][0]["loss"] if metrics["history"] else None,
                "samples_per_s": metrics["history"][0]["samples_per_s"] if metrics["history"] else None,
                "test_ndcg@10": metrics["test"]["ndcg@10"], "test_hr@10": metrics["test"]["hr@10"]})
    if rec["backend"] != rec["expected_backend"] or rec["world_size"] != 1 or rec["epochs"] != 1:
        raise PartFailed(f"torchrun ran with backend {rec['backend']!r}, world size {rec['world_size']}, "
                         f"{rec['epochs']} epochs; expected {rec['expected_backend']}, 1, 1")
    return "ok"


# ----------------------------------------------------------------------------------------------- part e


def part_report(ctx: Context, rec: Dict[str, Any], report: Report) -> str:
    """Write the files once more and read them back: the JSON parses and names every part."""
    report.write()
    back = json.loads(report.json_path.read_text())
    missing = [k for k, _ in PARTS if k not in back["parts"]]
    if missing or not report.md_path.is_file():
        raise PartFailed(f"the report lacks parts {missing}")
    rec.update({"json": str(report.json_path), "markdown": str(report.md_path)})
    return "ok"


# ---------------------------------------------------------------------------------------------- the runner


def part_deadline(key: str, deadline: Deadline, reserve_for_d: float = 0.0,
                  shares: Optional[Dict[str, float]] = None) -> Tuple[Deadline, str]:
    """Part ``key``'s own deadline, counted from now, and what it is: parts a and b at most their ``shares``
    (default :data:`PART_SHARE`) of the whole run each, part c until part d's reserve (``reserve_for_d``; 0 when
    part d does not run), the others the global deadline."""
    shares = PART_SHARE if shares is None else shares
    if key in shares:
        end = min(deadline.end, time.monotonic() + shares[key] * deadline.seconds)
        return Deadline.until(end), f"part {key}'s share of the deadline ({shares[key]:.0%})"
    if key == "c" and reserve_for_d > 0:
        return Deadline.until(deadline.end - reserve_for_d), f"part c's time (the last {reserve_for_d:.0f} s are " \
            "part d's)"
    return deadline, "the deadline"


def run_parts(parts: Sequence[Tuple[str, Callable[[Dict[str, Any]], str]]], report: Report,
              deadline: Deadline, always: Sequence[str] = ("e",), ctx: Optional["Context"] = None,
              reserve_for_d: float = 0.0, shares: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """Run ``parts`` in order, recording each one's status, reason, time and result in ``report.doc["parts"]``
    and rewriting the report after every part (and, through ``ctx.save``, after every row). A part that raises
    is recorded (``error``; ``failed`` for a check that did not hold) and the next one runs. Each part runs within
    its own time (:func:`part_deadline`; ``ctx.deadline`` is that time while it runs); once the deadline has
    passed, the remaining parts are ``skipped`` with that reason (the parts in ``always``, the report, still
    run)."""
    doc = report.doc
    for key, fn in parts:
        entry = doc["parts"][key]
        own, why = (deadline, "the deadline") if key in always else \
            part_deadline(key, deadline, reserve_for_d, shares)
        if (deadline.remaining() <= 0 or own.remaining() <= 0) and key not in always:
            entry.update(status="skipped", elapsed_s=0.0,
                         reason="deadline reached before this part started" if deadline.remaining() <= 0
                         else f"deadline: no time left for this part ({why})")
            report.write()
            print(f"[{time.monotonic() - T0:6.1f} s] part {key}: skipped ({entry['reason']})", flush=True)
            continue
        entry.update(status="running", reason=None, result={})
        report.write()
        start = time.monotonic()
        saved = ctx.deadline if ctx is not None else None
        try:
            if ctx is not None:
                ctx.deadline = own
            if key in always:
                status = fn(entry["result"])
            else:
                with _Alarm(own, key, why):
                    status = fn(entry["result"])
            entry.update(status=status or "ok")
        except PartFailed as err:
            entry.update(status="failed", reason=str(err))
        except PartSkipped as err:
            entry.update(status="skipped", reason=str(err))
        except DeadlineReached as err:  # cut short: what it measured so far stays in its result
            entry.update(status="skipped" if not entry["result"] else "incomplete", reason=str(err))
        except Exception as err:
            entry.update(status="error", reason=_error_text(err),
                         traceback=traceback.format_exc(limit=6)[-3000:])
        finally:
            if ctx is not None:
                ctx.deadline = saved
        entry["elapsed_s"] = round(time.monotonic() - start, 2)
        report.write()
        print(f"[{time.monotonic() - T0:6.1f} s] part {key}: {entry['status']}"
              + (f" ({entry['reason']})" if entry.get("reason") else ""), flush=True)
    return doc


def source_digest(root: Path = REPO) -> str:
    """sha256 over the library's and this script's source (paths and bytes, in path order): names the code that
    ran even where ``.git`` did not travel or the tree had uncommitted changes; recompute it on a checkout to
    compare."""
    import hashlib

    digest = hashlib.sha256()
    files = sorted([*(root / "ttt4rec_edu").rglob("*.py"), root / "scripts" / "gpu_check.py"])
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _git(*args: str) -> Optional[str]:
    if not (REPO / ".git").exists():
        return None
    try:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except Exception:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def commit_record() -> Dict[str, Any]:
    """The commit the run was made from: ``$GPU_CHECK_COMMIT`` (the device command sets it: ``.git`` does not
    travel to the GPU machine), else ``git rev-parse HEAD`` where the checkout has ``.git``, else ``None``."""
    value = os.environ.get(COMMIT_ENV, "").strip()
    if value:
        note = None if re.fullmatch(r"[0-9a-f]{7,40}", value) else \
            f"not a commit hash: replace COMMIT in the command ({COMMIT_ENV})"
        return {"git_commit": value, "git_commit_from": f"environment variable {COMMIT_ENV}",
                **({"git_commit_note": note} if note else {})}
    head = _git("rev-parse", "HEAD")
    return {"git_commit": head, "git_commit_from": "git rev-parse HEAD" if head else
            f"unknown: no {COMMIT_ENV} and no .git in the checkout"}


def _cuda_versions() -> Dict[str, Any]:
    """cuDNN and NCCL as torch reports them (``None`` where this torch has none)."""
    import torch

    out: Dict[str, Any] = {"cudnn": None, "cudnn_enabled": bool(torch.backends.cudnn.enabled), "nccl": None}
    try:
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        pass
    try:
        if torch.cuda.is_available():
            version = torch.cuda.nccl.version()
            out["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except Exception:
        pass
    return out


def _mamba_record() -> Dict[str, Any]:
    import importlib.util

    from ttt4rec_edu.baselines.mamba4rec import cuda_kernel_available

    installed = importlib.util.find_spec("mamba_ssm") is not None
    kernel = cuda_kernel_available()
    return {"mamba_ssm_installed": installed, "mamba_ssm_kernel_used": kernel,
            "mamba4rec_scan": "mamba_ssm's fused CUDA kernel" if kernel else
            "the pure-PyTorch scan (chunked on a GPU): mamba_ssm " + ("does not import here" if installed
                                                                      else "is not installed here")
            + "; Mamba4Rec's times are not those of the fused kernel"}


def _environment() -> Dict[str, Any]:
    import numpy
    import torch

    import ttt4rec_edu

    return {"python": platform.python_version(), "python_executable": sys.executable, "torch": torch.__version__,
            "cuda": torch.version.cuda, **_cuda_versions(), "numpy": numpy.__version__,
            "platform": platform.platform(), **commit_record(), "source_sha256": source_digest(),
            "ttt4rec_edu_from": str(Path(ttt4rec_edu.__file__).resolve().parent),
            "cpu_threads": torch.get_num_threads(), **_mamba_record(),
            "tf32_matmul_default": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn_default": torch.backends.cudnn.allow_tf32}


def record_nvidia_smi(path: Path) -> Dict[str, Any]:
    """``nvidia-smi``'s full output and a CSV query (name, driver, memory, clocks) into ``path``; the driver
    version and what was written go into the record. Without ``nvidia-smi`` the file says so."""
    exe = shutil.which("nvidia-smi")
    path.parent.mkdir(parents=True, exist_ok=True)
    if exe is None:
        _atomic_write(path, "nvidia-smi: not found on PATH (no NVIDIA driver on this machine)\n")
        return {"file": path.name, "found": False, "driver_version": None}
    query = ["--query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,clocks.sm,clocks.max.sm",
             "--format=csv"]
    texts, driver = [], None
    for args in ([], query):
        try:
            proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
            texts.append(f"$ nvidia-smi {' '.join(args)}\n{proc.stdout}{proc.stderr}(exit {proc.returncode})\n")
            if args and proc.returncode == 0:
                rows = [line.split(", ") for line in proc.stdout.strip().splitlines()]
                if len(rows) > 1 and len(rows[1]) > 1:
                    driver = rows[1][1].strip()
        except Exception as err:  # a hanging or broken nvidia-smi must not stop the check
            texts.append(f"$ nvidia-smi {' '.join(args)}\n{_error_text(err)}\n")
    _atomic_write(path, "\n".join(texts))
    return {"file": path.name, "found": True, "driver_version": driver}


def _device_info(device) -> Dict[str, Any]:
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = props.name
        return {"type": "cuda", "name": name, "slug": slug(name), "memory_gib": props.total_memory / 2**30,
                "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
    return {"type": "cpu", "name": platform.processor() or platform.machine() or "cpu", "slug": "cpu",
            "memory_gib": None}


def new_document(args, device, deadline: Deadline, argv: Sequence[str]) -> Dict[str, Any]:
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return {"schema": SCHEMA, "kind": KIND, "tiny": bool(args.tiny), "date": now.date().isoformat(),
            "started_at": now.isoformat(), "command": "python3 scripts/gpu_check.py " + " ".join(argv),
            "deadline_s": deadline.seconds, "device": _device_info(device), "environment": _environment(),
            "settings": {"bf16": bool(args.bf16), "data": args.data, "parts": args.parts},
            "parts": {key: {"title": title, "status": "pending", "reason": None, "elapsed_s": None, "result": {}}
                      for key, title in PARTS}}


# Modules torch imports lazily in the middle of a part (the TTT modes' gradient checks load torch._dynamo, and with
# it sympy). Imported before any alarm is armed: an alarm that stopped a part in the middle of such an import would
# leave a half-initialised module behind, and every later part would fail on it ("module 'sympy' has no attribute
# 'printing'", seen in a rehearsal on a loaded machine when part b's share ran out during that import).
LAZY_IMPORTS = ("sympy", "torch._dynamo")


def preload_lazy_imports() -> List[str]:
    """Import :data:`LAZY_IMPORTS` now; returns ``"module: error"`` for each one that could not be imported (a part
    that needs it then fails on its own, as it would have)."""
    import importlib

    missing = []
    for name in LAZY_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - only a preload: the part that needs it reports the error
            missing.append(f"{name}: {type(err).__name__}: {err}")
    return missing


def device_command(commit: str) -> str:
    """:data:`DEVICE_COMMAND` with its ``COMMIT`` placeholder replaced by ``commit``."""
    return DEVICE_COMMAND.replace(f"{COMMIT_ENV}=COMMIT", f"{COMMIT_ENV}={commit}", 1)


def print_device_command() -> int:
    """Print the device tool's ``run`` arguments with this checkout's commit filled in; warn (stderr) when the
    data file is not in ``gpu_data/`` or the tracked files differ from that commit."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:
        print("error: --print-device-command needs a git checkout (it fills in the commit)", file=sys.stderr)
        return 2
    if not (REPO / DATA_DIR / BEAUTY_FILE).is_file():
        print(f"warning: {DATA_DIR}/{BEAUTY_FILE} is missing; first: mkdir -p {DATA_DIR} && "
              f"cp ../shared/data/{BEAUTY_FILE} {DATA_DIR}/", file=sys.stderr)
    if _git("status", "--porcelain", "--untracked-files=no"):
        print(f"warning: tracked files differ from {commit}; the record's source_sha256 names the code that ran",
              file=sys.stderr)
    listed = _git("ls-files", "-co", "--exclude-standard") or ""
    sent = sum((REPO / name).stat().st_size for name in listed.splitlines() if (REPO / name).is_file())
    sent += sum(p.stat().st_size for p in (REPO / DATA_DIR).rglob("*") if p.is_file())
    if sent > SENT_LIMIT_BYTES:
        print(f"warning: the working tree that travels (tracked and untracked files git does not ignore, plus "
              f"{DATA_DIR}/) is {sent / 2**20:.0f} MiB, over the device tool's {SENT_LIMIT_BYTES / 2**20:.0f} "
              "MiB: ignore or remove what is not needed first", file=sys.stderr)
    print(f"carry={json.dumps(DEVICE_CARRY)} timeout_s={DEVICE_TIMEOUT_S}")
    print(device_command(commit))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 scripts/gpu_check.py", description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for the GPU machine's exact command.")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, cpu or auto")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: seconds on a CPU (the test suite's run)")
    parser.add_argument("--bf16", action="store_true", help="also check and time bfloat16 autocast")
    parser.add_argument("--data", default=None, metavar="PATH",
                        help=f"the Amazon Beauty file (default {DATA_DIR}/{BEAUTY_FILE}, else the data cache)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where the report goes (default book/results/gpu; on the GPU machine \"$OUT\"; "
                             "required with --tiny)")
    parser.add_argument("--deadline-s", type=float, default=None, metavar="S",
                        help="stop everything this many seconds after start (default 360 on CUDA, 600 on a CPU, "
                             "120 with --tiny)")
    parser.add_argument("--parts", default="abcde", metavar="LETTERS",
                        help="which parts to run, e.g. 'c' for a targeted rerun (the report, e, always runs)")
    parser.add_argument("--print-device-command", action="store_true",
                        help="print the GPU machine's command with this checkout's commit filled in, and exit")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.print_device_command:
        return print_device_command()
    bad = sorted(set(args.parts) - {k for k, _ in PARTS})
    if bad:
        parser.error(f"--parts: unknown part(s) {''.join(bad)}; choose from {''.join(k for k, _ in PARTS)}")
    if args.tiny and args.out is None:
        parser.error("--tiny needs --out DIR (a tiny run must not land in book/results/gpu)")
    if args.deadline_s is not None and not args.deadline_s > 0:
        parser.error(f"--deadline-s must be positive, got {args.deadline_s}")
    if args.data is not None and not Path(args.data).is_file():
        parser.error(f"--data {args.data}: no such file")
    if not args.tiny and set(args.parts) & {"c", "d"}:  # fail fast: before any GPU second is spent
        path = find_beauty(args)
        if path is None:
            parser.error(f"no Amazon Beauty file for parts c and d: pass --data {DATA_DIR}/{BEAUTY_FILE} (copy it "
                         f"there from ../shared/data first), or run --parts ab")
        if path.stat().st_size == 0:
            parser.error(f"--data {path}: the file is empty")
        args.data = str(path)
    import torch

    from ttt4rec_edu.train import check_device
    from ttt4rec_edu.utils import resolve_device

    unloaded = preload_lazy_imports()  # before any alarm: see LAZY_IMPORTS

    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device {args.device}: {err}")
    problem = check_device(device)
    if problem:
        parser.error(f"--device {args.device}: {problem}")
    seconds = args.deadline_s or (TINY_DEADLINE_S if args.tiny else DEFAULT_DEADLINE_S[device.type])
    deadline = Deadline(seconds)
    if args.tiny:
        torch.set_num_threads(1)
    report = Report(Path(args.out) if args.out else DEFAULT_OUT, new_document(args, device, deadline, argv))
    report.doc["environment"]["nvidia_smi"] = record_nvidia_smi(report.smi_path)
    ctx = Context(args, device, deadline, save=report.write)
    functions = {"a": lambda rec: part_models(ctx, rec), "b": lambda rec: part_ttt(ctx, rec),
                 "c": lambda rec: part_beauty(ctx, rec), "d": lambda rec: part_torchrun(ctx, rec),
                 "e": lambda rec: part_report(ctx, rec, report)}
    for key, _ in PARTS:
        if key not in args.parts and key != "e":
            report.doc["parts"][key].update(status="skipped", reason=f"not selected (--parts {args.parts})")
    print(f"gpu_check on {report.doc['device']['name']} ({device}); deadline {seconds:.0f} s; "
          f"writing {report.json_path}", flush=True)
    for problem in unloaded:
        print(f"could not preload {problem}", flush=True)
    try:
        # the shares protect part c's time; a run without part c (a targeted rerun) gives its parts all of it
        run_parts([(k, functions[k]) for k, _ in PARTS if k in args.parts or k == "e"], report, deadline, ctx=ctx,
                  reserve_for_d=ctx.reserve_for_d if "d" in args.parts else 0.0,
                  shares=PART_SHARE if "c" in args.parts else {})
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)
    statuses = {k: p["status"] for k, p in report.doc["parts"].items()}
    print(f"done in {time.monotonic() - T0:.1f} s: " + ", ".join(f"{k} {s}" for k, s in statuses.items()))
    for row in report.doc["headline"]:
        print(f"  {row['figure']}: {_fmt(row['value'])} (goal {row['goal']}; {row['how']})")
    print(f"wrote {report.json_path}, {report.md_path.name} and {report.smi_path.name}")
    return 0 if all(s in ("ok", "skipped") for s in statuses.values()) else 1  # failed, error, incomplete: 1


if __name__ == "__main__":
    sys.exit(main())
