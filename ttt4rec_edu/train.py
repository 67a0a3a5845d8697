"""The outer training loop, as in the paper's official (RecBole 1.2) setup.

What one run does, in order:

1. check that the output folder can be written (before any work is spent);
2. ``model.fit_statistics(item_seq, lengths, targets)`` once with the whole training split as CPU tensors,
   when the model has it (e.g. ``pop``);
3. for models with trainable parameters, epochs of Adam (lr 1e-3, batch 2048) on the full-softmax
   cross-entropy over all items (or the model's own ``calculate_loss``), shuffling the training samples with
   an explicit ``torch.Generator`` so that the order is part of the checkpoint;
4. after every epoch: HR/NDCG on the validation split, a checkpoint (atomic: temp file + rename), and
   RecBole's early-stopping rule on valid NDCG@10 — an epoch whose score is ``>=`` the best so far resets the
   counter; training stops once more than ``patience`` epochs in a row did not;
5. the best epoch's weights are restored and the test split is evaluated; ``metrics.json`` is written
   (atomically, so a failed run never leaves a half-written or wrong file behind), after ``test_ranks.npz``:
   every test sample's rank, for per-user analyses;

``resume=True`` continues a killed run from its last checkpoint: model, optimizer, every RNG (Python, NumPy,
torch CPU/CUDA and the shuffling generator), epoch counter, best score, best weights and history are restored,
so the resumed run ends with exactly the metrics of an uninterrupted one (tests/test_train.py checks this).

The loop is split into one :func:`train_epoch` and one evaluation call site (:func:`_evaluate_split`) so
data-parallel training only touches those two places. Under ``torchrun`` (see ``ttt4rec_edu.distributed``)
``train(..., dist=context)`` gives every rank a disjoint shard of each global batch, sums the gradients
across ranks before the optimizer step, shards the evaluation and gathers the ranks; only rank 0 prints and
writes files. With ``dist=None`` (the default) nothing of this runs: the single-process path is unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .checkpoint import cpu_state_dict, read_checkpoint, save_checkpoint, set_rng_state
from .metrics import (DEFAULT_MEMORY_BUDGET, DEFAULT_TIES, TIE_POLICIES, compute_ranks, has_embedding_hooks,
                      metrics_from_ranks)
from .recipes import recipe_of
from .utils import atomic_write_bytes, atomic_write_json, json_safe, npz_bytes, resolve_device, set_seed

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
RANKS_NAME = "test_ranks.npz"  # the rank of every test sample's target, in the test split's sample order


class TrainError(RuntimeError):
    """Base class of the trainer's expected errors (the command line prints them without a traceback)."""


class OutputDirError(TrainError):
    """The output folder cannot be created or written."""


class ResumeError(TrainError):
    """The checkpoint cannot be resumed: missing output folder, unreadable file, or another model/config."""


class NonFiniteLossError(TrainError):
    """The training loss became NaN or infinite."""


class ModelCapabilityError(TrainError):
    """The configuration asks for something the model does not support (e.g. ``adapt_at_test=False``)."""


class TrainConfigError(ValueError):
    """Invalid :class:`TrainConfig` values. ``problems`` lists ``(field, message)`` pairs, each message starting
    with the field's name, so the command line can name its own option instead."""

    def __init__(self, problems: List[Tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("invalid TrainConfig: " + "; ".join(message for _, message in self.problems))


@dataclass
class TrainConfig:
    """Outer-loop settings. Defaults are the paper's / official config's (RecBole 1.2).

    The one place the training defaults are written: the command line's ``train`` options and
    :class:`ttt4rec_edu.experiments.RunSettings` read theirs from here, and :meth:`validate` is the one check.
    """

    epochs: int = 300                 # upper bound; early stopping usually ends much sooner
    lr: float = 1e-3                  # Adam
    weight_decay: float = 0.0
    batch_size: int = 2048            # training batch
    eval_batch_size: int = 4096
    patience: int = 5                 # RecBole's stopping_step
    valid_metric: str = "ndcg@10"     # early stopping and best-epoch selection
    ks: Tuple[int, ...] = (10, 50)
    seed: int = 2020                  # RecBole's default seed
    device: Union[str, torch.device] = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ... or a resolved torch.device
    bf16: bool = False                # bfloat16 autocast for the training steps (CUDA and CPU)
    max_train_batches: Optional[int] = None  # cap batches per epoch (tiny runs, smoke tests)
    adapt_at_test: bool = True        # False → model.set_adapt_at_test(False) during evaluation
    item_chunk: Optional[int] = None  # items scored at once in evaluation (None: from the memory budget)
    eval_memory_budget: int = DEFAULT_MEMORY_BUDGET
    loss_chunk: Union[int, str] = "auto"  # "auto": chunked CE only when logits would not fit; "off"; or N items
    progress: bool = True             # tqdm bars on stderr
    ties: str = DEFAULT_TIES          # tied scores in HR/NDCG: "average" | "optimistic" | "pessimistic" (metrics.py)
    loss_columns: str = "items"       # softmax over items 1..N, or "all" N + 1 columns as the official code

    def validate(self, trains: bool = False) -> None:
        """Raise :class:`TrainConfigError` (a ``ValueError``) naming every bad value; the one check of them.
        ``epochs=0`` evaluates an untrained model (the book does); ``trains=True`` (a command's run) asks for one.
        :func:`train` calls it through :meth:`ensure_valid`, so values checked already are not checked twice."""
        problems = []

        def bad(field: str, rule: str, value) -> None:
            problems.append((field, f"{field} must be {rule}, got {value}"))

        if self.epochs < int(trains):
            bad("epochs", "at least 1 (0 epochs would train nothing)" if trains else ">= 0", self.epochs)
        if self.patience < 0:
            bad("patience", ">= 0", self.patience)
        if self.batch_size < 1:
            bad("batch_size", ">= 1", self.batch_size)
        if self.eval_batch_size < 1:
            bad("eval_batch_size", ">= 1", self.eval_batch_size)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "a positive number", self.lr)
        if self.max_train_batches is not None and self.max_train_batches < 1:
            bad("max_train_batches", ">= 1", self.max_train_batches)
        if not (self.loss_chunk in ("auto", "off") or (isinstance(self.loss_chunk, int)
                                                        and not isinstance(self.loss_chunk, bool)
                                                        and self.loss_chunk >= 1)):
            bad("loss_chunk", "'auto', 'off' or a positive number of items", repr(self.loss_chunk))
        if self.ties not in TIE_POLICIES:
            bad("ties", f"one of {', '.join(TIE_POLICIES)}", repr(self.ties))
        if self.loss_columns not in losses.LOSS_COLUMNS:
            bad("loss_columns", f"one of {', '.join(losses.LOSS_COLUMNS)}", repr(self.loss_columns))
        if not self.ks or any(int(k) < 1 for k in self.ks):
            bad("ks", "positive cut-offs", self.ks)
        allowed = {f"{m}@{k}" for m in ("hr", "ndcg") for k in self.ks}
        if self.valid_metric not in allowed:
            bad("valid_metric", f"one of {sorted(allowed)}", repr(self.valid_metric))
        device_problem = check_device(self.device)
        if device_problem:
            problems.append(("device", f"device {device_problem}"))
        if problems:
            raise TrainConfigError(problems)
        self.__dict__["_valid_values"] = self._values()   # what ensure_valid() need not check again

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def ensure_valid(self) -> None:
        """:meth:`validate`, unless these very values passed it already: a run set up by the library
        (``ttt4rec_edu.runner``) is checked once, before any data is read, and :func:`train` does not check it
        again; a config changed since is checked anew."""
        if self.__dict__.get("_valid_values") != self._values():
            self.validate()

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ks"] = list(self.ks)
        d["device"] = str(self.device)  # a resolved torch.device is recorded by its name, e.g. "cpu", "cuda:0"
        d["recipe"] = recipe_of(d, d)   # read from the values (ttt4rec_edu.recipes): "official", "cpu6", "custom"
        return d


def check_device(device: Union[str, torch.device]) -> Optional[str]:
    """What is wrong with ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ...) on this machine, or
    ``None``: an unknown name, or a ``cuda:N`` beyond the GPUs torch sees (``cuda:1`` on a one-GPU machine would
    otherwise fail only when the first tensor moves). Whether CUDA exists at all is ``resolve_device``'s check."""
    if str(device) == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"must be auto, cpu, cuda or cuda:N, got {device}"
    if dev.type not in ("cpu", "cuda"):  # meta holds no numbers; mps, xpu, ... are not supported here
        return f"must be auto, cpu, cuda or cuda:N (this library runs on CPU and CUDA only), got {device}"
    if dev.type == "cuda" and dev.index is not None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if dev.index >= count:
            return f"must be cuda:0 ... cuda:{count - 1} (torch sees {count} CUDA GPU(s) here), got {dev}"
    return None


# Settings that may differ between a run and its resumption without changing what is computed up to the
# checkpoint: how long to go on, where to run, how to display, and how the exact loss is tiled in memory.
_RESUMABLE_CHANGES = {"epochs", "patience", "device", "progress", "eval_batch_size", "item_chunk",
                      "eval_memory_budget", "loss_chunk", "recipe"}

# Settings added after checkpoints and metrics were first written: a record without the key was made with
# the behaviour of that time, which is this value (so an old checkpoint resumes only with the old behaviour).
LEGACY_CONFIG = {"ties": "optimistic", "loss_columns": "items"}


# --------------------------------------------------------------------------------------------- helpers


# The name of the file check_out_dir writes to prove a folder writable (another rank's may be there for a moment).
WRITE_PROBE_PREFIX = ".write-test-"


def check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove a file can be written there, or raise :class:`OutputDirError`."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=WRITE_PROBE_PREFIX, delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
    except OSError as err:
        raise OutputDirError(f"output directory {str(out_dir)!r} is not writable: {err.strerror or err}") \
            from None


def _trainable_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _fingerprint(model: nn.Module, splits, config: TrainConfig, run_info: Optional[dict]) -> Dict[str, Any]:
    """What must be identical for a checkpoint to be resumed: model architecture, data and the settings
    that shape the computation so far (everything but :data:`_RESUMABLE_CHANGES`)."""
    return {
        "model_class": type(model).__name__,
        "model_name": (run_info or {}).get("model"),
        "model_options": (run_info or {}).get("model_options"),
        "parameters": {k: list(v.shape) for k, v in model.state_dict().items()},
        "data": {"num_items": int(splits.num_items), "max_len": int(splits.max_len), "split": str(splits.split),
                 "train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test),
                 "sha256": splits.digest() if callable(getattr(splits, "digest", None)) else None},
        "timestamps": (run_info or {}).get("timestamps"),
        "config": {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES},
    }


# Fingerprint entries added after checkpoints were first written (issue 24): a checkpoint without one was made
# before it existed, so its value is unknown there and not a mismatch (such a checkpoint still resumes).
_UNKNOWN_WHEN_MISSING = {"timestamps", "data.sha256"}


def _fingerprint_diff(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    diffs = []
    if isinstance(saved.get("config"), dict):
        saved = dict(saved, config={**LEGACY_CONFIG, **saved["config"]})
    for key in current:
        if key not in saved and key in _UNKNOWN_WHEN_MISSING:
            continue
        a, b = saved.get(key), current[key]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if sub not in a and f"{key}.{sub}" in _UNKNOWN_WHEN_MISSING:
                    continue
                if a.get(sub) != b.get(sub):
                    diffs.append(f"{key}.{sub}: checkpoint {a.get(sub)!r} vs now {b.get(sub)!r}")
        else:
            diffs.append(f"{key}: checkpoint {a!r} vs now {b!r}")
    return diffs


def batch_loss(model: nn.Module, item_seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
               num_items: int, loss_chunk: Union[int, str] = "auto", loss_columns: str = "items") -> torch.Tensor:
    """Training loss of one batch (scalar).

    ``model.calculate_loss`` when the model defines one; otherwise full-softmax cross-entropy over all items
    ``1..num_items``: exactly, in item chunks (``ttt4rec_edu.losses``), for models with ``encode`` +
    ``item_table`` whose ``(B, N)`` logits would not fit the memory budget, else from ``score_all``
    (column 0 is ``-inf``, so the padding id gets no probability).

    ``loss_chunk``: ``"auto"`` (chunk only when needed, :func:`ttt4rec_edu.losses.choose_chunk`), ``"off"``
    (always the plain loss) or an ``int`` (always chunks of that many items). All three give the same loss up to
    floating-point summation order; they differ only in memory and speed.

    ``loss_columns``: ``"items"`` (the softmax over items ``1..N``) or ``"all"`` (over all ``N + 1`` columns,
    the padding logit included, as the official TTT4Rec code; needs ``encode`` + ``item_table``). A model's
    own ``calculate_loss`` is used as it is.
    """
    if callable(getattr(model, "calculate_loss", None)):
        return model.calculate_loss(item_seq, lengths, targets)
    include_padding = losses.check_loss_columns(loss_columns) == "all"
    if include_padding and not has_embedding_hooks(model):
        raise ModelCapabilityError(f"loss_columns='all' needs the padding logit, but {type(model).__name__} "
                                   "has no encode() + item_table() (its score_all sets column 0 to -inf)")
    if include_padding:
        chunk = losses.choose_chunk(item_seq.shape[0], num_items) if loss_chunk == "auto" else \
            None if loss_chunk == "off" else int(loss_chunk)
        hidden, table = model.encode(item_seq, lengths), model.item_table()
        if chunk is not None:
            return losses.chunked_cross_entropy(hidden, table, targets, chunk, include_padding=True)
        return losses.full_cross_entropy(hidden.float(), table.float(), targets, include_padding=True)
    if has_embedding_hooks(model) and loss_chunk != "off":
        chunk = losses.choose_chunk(item_seq.shape[0], num_items) if loss_chunk == "auto" else int(loss_chunk)
        if chunk is not None:
            return losses.chunked_cross_entropy(model.encode(item_seq, lengths), model.item_table(), targets, chunk)
    scores = model.score_all(item_seq, lengths)
    return F.cross_entropy(scores.float(), targets)


def _autocast(device: torch.device, bf16: bool):
    # CPU too: on a CPU with AVX-512 BF16 a TTT4Rec step is about 1.3x faster (benchmarks/bench_speed.py --bf16)
    if bf16 and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


# ------------------------------------------------------------------------------------ the two call sites


def train_epoch(model: nn.Module, sample_set, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                config: TrainConfig, device: torch.device, epoch: int, num_items: int,
                dist=None) -> Dict[str, float]:
    """One pass over the (shuffled) training samples. Returns ``{"loss", "samples", "time_s", "samples_per_s"}``.

    The permutation is drawn from ``generator`` even when ``max_train_batches`` cuts the epoch short, so the
    generator advances by the same amount every epoch.

    ``dist`` (a ``ttt4rec_edu.distributed.DistContext``, or ``None``): every rank draws the same permutation
    (same seed), takes its own slice of each global batch, weights its mean loss by its share of the batch and
    sums the gradients of all ranks — the step is the one a single process would take on the whole batch.
    """
    model.train()
    n = len(sample_set)
    order = torch.randperm(n, generator=generator)
    num_batches = math.ceil(n / config.batch_size)
    if config.max_train_batches is not None:
        num_batches = min(num_batches, config.max_train_batches)
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_batches, desc=f"epoch {epoch}", unit="batch", leave=False)
    total_loss, seen = 0.0, 0
    start_time, start_cpu = time.perf_counter(), time.process_time()
    try:
        for step in range(num_batches):
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch_size = len(index)
            if dist is not None:  # this rank's slice of the global batch, and its weight in the batch mean
                index, weight = dist.shard_batch(index)
            item_seq, lengths, targets = (t.to(device) for t in sample_set.batch(index))
            with _autocast(device, config.bf16):
                loss = batch_loss(model, item_seq, lengths, targets, num_items, config.loss_chunk,
                                  config.loss_columns)
            optimizer.zero_grad(set_to_none=True)
            if dist is None:
                value = float(loss.detach())
                _check_finite(value, epoch, step, num_batches, config)
                loss.backward()
            else:
                (loss * weight).backward()
                # one all-reduce: summed gradients and the global mean loss, so every rank sees the same value
                value = dist.sum_gradients(model, extra=loss.detach() * weight)
                _check_finite(value, epoch, step, num_batches, config)
            optimizer.step()
            total_loss += value * batch_size
            seen += batch_size
            if bar is not None:
                elapsed = max(time.perf_counter() - start_time, 1e-9)
                bar.set_postfix(loss=f"{value:.4f}", samples_s=f"{seen / elapsed:.0f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if device.type == "cuda":  # the last steps' kernels may still be queued: the epoch ends when they are done
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start_time
    return {"loss": total_loss / max(seen, 1), "samples": seen, "time_s": elapsed,
            "cpu_s": time.process_time() - start_cpu, "samples_per_s": seen / max(elapsed, 1e-9)}


def _check_finite(value: float, epoch: int, step: int, num_batches: int, config: TrainConfig) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"training loss became {value} at epoch {epoch}, step {step + 1} of {num_batches}; "
            f"try a smaller learning rate (now {config.lr}) or bf16 off")


def _evaluate_split(model: nn.Module, sample_set, config: TrainConfig, device: torch.device,
                    desc: str, dist=None, ranks_out: Optional[Path] = None) -> Dict[str, float]:
    """The one evaluation call site: HR/NDCG@ks, with test-time adaptation switched as configured.

    With ``dist`` every rank ranks a contiguous shard of the samples; the ranks are all-gathered in sample
    order and the metrics computed from all of them, identically on every rank.

    ``ranks_out`` (single process only): also save every sample's rank there (``.npz``, int32, in
    ``sample_set``'s order) for per-user analyses: key ``ranks`` the best rank (1 + items scoring strictly
    higher) and key ``ties`` the other items scoring exactly like the target; the metrics are computed from
    those same arrays under ``config.ties`` (``ttt4rec_edu.metrics``).
    """
    if not config.adapt_at_test:
        model.set_adapt_at_test(False)
    options = dict(batch_size=config.eval_batch_size, device=device, item_chunk=config.item_chunk,
                   memory_budget=config.eval_memory_budget, desc=desc, with_ties=True)
    try:
        # autocast off on every device, also inside a caller's autocast: with --bf16 only the training steps run in
        # bfloat16, so early stopping and the reported metrics do not depend on it (bf16 scores round into ties)
        with torch.autocast(device_type=device.type, enabled=False):
            if dist is not None:  # every rank ranks its contiguous shard; ranks and ties are all-gathered
                total = len(sample_set)
                shard = torch.tensor_split(torch.arange(total), dist.world_size)[dist.rank]
                ranks = ties = torch.empty(0, dtype=torch.long)
                if len(shard):
                    ranks, ties = compute_ranks(model, sample_set.subset(shard),
                                                progress=config.progress and dist.is_main, **options)
                ranks, ties = dist.gather_ranks(ranks, total), dist.gather_ranks(ties, total)
            else:
                ranks, ties = compute_ranks(model, sample_set, progress=config.progress, **options)
            if ranks_out is not None:
                atomic_write_bytes(ranks_out, npz_bytes(ranks=ranks.numpy().astype(np.int32),
                                                        ties=ties.numpy().astype(np.int32)))
            return metrics_from_ranks(ranks, config.ks, ties, config.ties)
    finally:
        if not config.adapt_at_test:
            model.set_adapt_at_test(True)


def evaluate_split(model: nn.Module, sample_set, config: TrainConfig, device: torch.device, desc: str,
                   ranks_out: Optional[Path] = None) -> Dict[str, float]:
    """One split's HR/NDCG@ks exactly as the trainer reports them (single process): test-time adaptation as
    ``config.adapt_at_test`` says, ``config.ties``, and every rank saved to ``ranks_out`` when given. Used to
    evaluate saved weights again (``ttt4rec_edu.reevaluate``)."""
    return _evaluate_split(model, sample_set, config, device, desc, ranks_out=ranks_out)


# ------------------------------------------------------------------------------------------- the loop


def train(model: nn.Module, splits, config: Optional[TrainConfig] = None, out_dir=None, resume: bool = False,
          data_stats: Optional[dict] = None, run_info: Optional[dict] = None, dist=None) -> Dict[str, Any]:
    """Train ``model`` on ``splits.train``, early-stop on ``splits.valid``, report ``splits.test``.

    Args:
        model: a registry model (``score_all`` + optional hooks, see ``ttt4rec_edu.models``).
        splits: :class:`ttt4rec_edu.data.Splits`.
        config: :class:`TrainConfig` (defaults: the paper's); a ``torch.device`` in ``config.device`` is used as it
            is (the command line resolves the device once per run).
        out_dir: folder for ``checkpoint.pt`` and ``metrics.json``; ``None`` keeps everything in memory.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (a fresh run otherwise).
        data_stats: dataset statistics stored under ``"data"`` in the result.
        run_info: extra facts recorded in the result (the command line stores the model name and options);
            ``model`` and ``model_options`` in it are also part of the resume check.
        dist: a ``ttt4rec_edu.distributed.DistContext`` when running under ``torchrun`` (data-parallel: sharded
            batches and evaluation, summed gradients, rank 0 alone prints and writes), else ``None``.

    Returns:
        the ``metrics.json`` content: ``valid`` and ``test`` metric dicts (``hr@10``, ``hr@50``, ``ndcg@10``,
        ``ndcg@50``), ``best_epoch``, ``epochs``, ``stopped_early``, ``history``, ``config``, ``data``,
        ``device``, ``train_time_s``, ``run``.
    """
    config = TrainConfig() if config is None else config
    config.ensure_valid()   # validate(), once per run
    if dist is not None and not dist.is_main and config.progress:  # rank 0 alone prints
        config = dataclasses.replace(config, progress=False)
    out_path = Path(out_dir) if out_dir is not None else None
    if resume and out_path is None:
        raise ResumeError("resume=True needs an output directory holding the checkpoint")
    if out_path is not None:
        check_out_dir(out_path)
    if not config.adapt_at_test and not callable(getattr(model, "set_adapt_at_test", None)):
        raise ModelCapabilityError(
            f"adapt_at_test=False was requested but {type(model).__name__} has no set_adapt_at_test(); "
            "only models with test-time adaptation (e.g. ttt4rec) support it")
    if len(splits.train) == 0 or len(splits.valid) == 0 or len(splits.test) == 0:
        raise ValueError(f"every split needs samples, got {splits.counts()}")

    device = resolve_device(config.device)
    if config.bf16 and device.type not in ("cuda", "cpu") and config.progress:
        print(f"note: bf16 autocast is for CUDA and CPU; running in float32 on {device}", flush=True)
    set_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device)
    if dist is not None:  # every rank starts from rank 0's weights (they already agree when seeded alike)
        dist.broadcast_model(model)

    if callable(getattr(model, "fit_statistics", None)):
        item_seq, lengths, targets = splits.train.batch()
        model.fit_statistics(item_seq, lengths, targets)

    params = _trainable_parameters(model)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay) if params else None
    fingerprint = _fingerprint(model, splits, config, run_info)

    state = {"epoch": 0, "best_metric": -math.inf, "best_epoch": 0, "best_state": None, "bad_epochs": 0,
             "history": [], "stopped_early": False, "train_time_s": 0.0}
    ckpt_path = out_path / CHECKPOINT_NAME if out_path is not None else None
    writes_files = dist is None or dist.is_main
    if resume and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, model, optimizer, generator, fingerprint, device)
        if config.progress:
            print(f"resuming from {ckpt_path} after epoch {state['epoch']}", flush=True)
    elif resume and config.progress:
        print(f"no checkpoint in {out_path}; starting a fresh run", flush=True)

    if optimizer is not None:
        while state["epoch"] < config.epochs and not state["stopped_early"]:
            epoch = state["epoch"] + 1
            stats = train_epoch(model, splits.train, optimizer, generator, config, device, epoch,
                                splits.num_items, dist=dist)
            valid_start, valid_cpu = time.perf_counter(), time.process_time()
            valid = _evaluate_split(model, splits.valid, config, device, desc=f"valid {epoch}", dist=dist)
            eval_time, eval_cpu = time.perf_counter() - valid_start, time.process_time() - valid_cpu
            score = valid[config.valid_metric]
            if score >= state["best_metric"]:  # RecBole: ties count as improvement (the later epoch wins)
                state.update(best_metric=score, best_epoch=epoch, best_state=cpu_state_dict(model),
                             bad_epochs=0)
            else:
                state["bad_epochs"] += 1
                if state["bad_epochs"] > config.patience:
                    state["stopped_early"] = True
            state["epoch"] = epoch
            state["train_time_s"] += stats["time_s"] + eval_time
            state["history"].append({"epoch": epoch, "loss": stats["loss"], "valid": valid,
                                     "samples_per_s": stats["samples_per_s"],
                                     "time_s": stats["time_s"] + eval_time,
                                     # wall and this process's CPU seconds, training and validation apart
                                     # (CPU seconds stay meaningful when other work shares the machine)
                                     "train_s": stats["time_s"], "valid_s": eval_time,
                                     "train_cpu_s": stats["cpu_s"], "valid_cpu_s": eval_cpu})
            if config.progress:
                shown = " ".join(f"{k}={v:.4f}" for k, v in valid.items())
                print(f"epoch {epoch}: loss={stats['loss']:.4f} {shown} "
                      f"({stats['samples_per_s']:.0f} samples/s)", flush=True)
            if ckpt_path is not None and writes_files:
                save_checkpoint(ckpt_path, model, optimizer, generator, fingerprint, state)
        if state["best_state"] is not None:
            model.load_state_dict(state["best_state"])

    valid = _evaluate_split(model, splits.valid, config, device, desc="valid (best)", dist=dist)
    ranks_out = out_path / RANKS_NAME if out_path is not None and dist is None else None
    test = _evaluate_split(model, splits.test, config, device, desc="test", dist=dist, ranks_out=ranks_out)
    result = {
        "valid": valid,
        "test": test,
        "best_epoch": state["best_epoch"],
        "epochs": state["epoch"],
        "stopped_early": state["stopped_early"],
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "config": config.to_dict(),
        "data": dict(data_stats or {}, **splits.counts(), num_items=int(splits.num_items),
                     max_len=int(splits.max_len), split=str(splits.split)),
        "history": state["history"],
        "device": str(device),
        "train_time_s": state["train_time_s"],
        "run": dict(run_info or {}),
    }
    if dist is not None:
        result["distributed"] = dist.describe()
    if out_path is not None and writes_files:
        atomic_write_json(out_path / METRICS_NAME, json_safe(result))
    return result


def _load_checkpoint(path: Path, model: nn.Module, optimizer, generator: torch.Generator,
                     fingerprint: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    ckpt = read_checkpoint(path, ResumeError)
    saved = json.loads(ckpt["fingerprint"])
    diffs = _fingerprint_diff(saved, json.loads(json.dumps(fingerprint, sort_keys=True)))
    if diffs:
        raise ResumeError(f"checkpoint {path} belongs to another model/config and cannot be resumed: "
                          + "; ".join(diffs[:8]) + ("; ..." if len(diffs) > 8 else ""))
    if optimizer is None:
        raise ResumeError(f"checkpoint {path} has optimizer state but the model has no trainable parameters")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"], generator)
    state = dict(ckpt["state"])
    state["history"] = json.loads(state["history"])
    return state


__all__ = ["TrainConfig", "TrainConfigError", "TrainError", "OutputDirError", "ResumeError", "NonFiniteLossError",
           "ModelCapabilityError", "check_device", "train", "train_epoch", "evaluate_split", "batch_loss",
           "check_out_dir",
           "CHECKPOINT_NAME", "METRICS_NAME", "RANKS_NAME", "WRITE_PROBE_PREFIX"]
