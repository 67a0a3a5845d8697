"""Cost ESTIMATES: what a table of :mod:`ttt4rec_edu.experiments` will cost on a GPU *before* running it.

:func:`estimate_costs` counts the FLOPs of one training step with ``torch.utils.flop_counter.FlopCounterMode`` at
each dataset's context length and item count, takes the number of samples from the dataset's registry entry (its
raw file's counts, ``DatasetInfo.raw_counts``: the paper's Table 1 for the paper's datasets, the file's for Amazon
Beauty; a dataset whose entry has none is a one-line error, never another dataset's counts), and states its
assumptions for epochs and GPU throughput. Every number it returns
is an ESTIMATE and its columns say so; :func:`format_estimate` prints it with those assumptions on top (``python -m
ttt4rec_edu reproduce --table 2 --estimate``). ``ttt4rec_edu.gpu_results`` replaces the assumed throughput by one
measured on a GPU.

This module reads the experiments (cells, the paper's Table 1); the experiments never need it.
"""
from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple

import pandas as pd

from .experiments import Experiment, ExperimentError, paper_datasets, table_experiments

ESTIMATE_EPOCHS = 50            # assumed epochs per run (early stopping decides the real number)
ESTIMATE_GPU_TFLOPS = 10.0      # assumed sustained fp32 throughput: ~50% of an A100's 19.5 TFLOP/s fp32 peak
ESTIMATE_BATCH = 2048           # the paper's training batch
_PROBE_BATCH = 8                # sequences per FLOP-counting probe
_PROBE_ITEMS = (1000, 3000)     # two item counts: FLOPs and memory are affine in the number of items


def _probe(variant: Tuple[str, Tuple[Tuple[str, str], ...]], num_items: int, max_len: int) -> Dict[str, float]:
    """FLOPs (train step: forward + backward; eval: forward) and autograd-saved bytes of ``_PROBE_BATCH``
    full-length sequences, and the parameter count, for one model at ``num_items``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model
    from .train import batch_loss

    name, overrides = variant
    torch.manual_seed(0)
    model = build_model(name, num_items, max_len, **dict(overrides))
    gen = torch.Generator().manual_seed(0)
    item_seq = torch.randint(1, num_items + 1, (_PROBE_BATCH, max_len), generator=gen)
    lengths = torch.full((_PROBE_BATCH,), max_len, dtype=torch.long)
    targets = torch.randint(1, num_items + 1, (_PROBE_BATCH,), generator=gen)
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, saved = set(), [0]

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_storages and ptr not in seen:
            seen.add(ptr)
            saved[0] += t.untyped_storage().nbytes()
        return t

    model.train()
    train_flops = 0
    if any(p.requires_grad for p in model.parameters()):  # pop has nothing to train
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = batch_loss(model, item_seq, lengths, targets, num_items, loss_chunk="off")
            loss.backward()
        train_flops = counter.get_total_flops()
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.score_all(item_seq, lengths)
    return {"train_flops": train_flops / _PROBE_BATCH, "eval_flops": counter.get_total_flops() / _PROBE_BATCH,
            "saved_bytes": saved[0] / _PROBE_BATCH, "params": sum(p.numel() for p in model.parameters())}


@lru_cache(maxsize=None)
def _affine_costs(variant, max_len: int) -> Dict[str, Tuple[float, float]]:
    """Per-sample costs as ``(a, b)`` with cost ≈ a + b · num_items, from probes at two item counts."""
    lo, hi = (_probe(variant, n, max_len) for n in _PROBE_ITEMS)
    span = _PROBE_ITEMS[1] - _PROBE_ITEMS[0]
    out = {}
    for key in lo:
        slope = max(hi[key] - lo[key], 0.0) / span
        out[key] = (max(lo[key] - slope * _PROBE_ITEMS[0], 0.0), slope)
    return out


@lru_cache(maxsize=None)
def _cpu_flops_per_second(variant, max_len: int) -> float:
    """Measured on this machine: FLOPs of training steps (batch 32, 2,000 items) per second of wall time."""
    import torch

    from .models import build_model
    from .train import batch_loss

    name, overrides = variant
    num_items, batch = 2000, 32
    torch.manual_seed(0)
    model = build_model(name, num_items, max_len, **dict(overrides))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    item_seq = torch.randint(1, num_items + 1, (batch, max_len))
    lengths = torch.full((batch,), max_len, dtype=torch.long)
    targets = torch.randint(1, num_items + 1, (batch,))
    a, b = _affine_costs(variant, max_len)["train_flops"]
    times = []
    for _ in range(3):  # the first step warms up (allocations, lazy init); keep the best of the other two
        start = time.perf_counter()
        optimizer.zero_grad()
        batch_loss(model, item_seq, lengths, targets, num_items).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch * (a + b * num_items) / min(times[1:])


def _variant_of(exp: Experiment):
    return exp.model, tuple(sorted(exp.model_overrides().items()))


def _split_shares(split: str) -> Tuple[float, float, float]:
    from .data import parse_split

    shares = parse_split(split)
    if not shares:
        raise ExperimentError("leave-one-out splits have no ratio shares to estimate with")
    return shares


def estimate_costs(table: str, epochs: int = ESTIMATE_EPOCHS, gpu_tflops: float = ESTIMATE_GPU_TFLOPS,
                   seeds: int = 3, batch_size: int = ESTIMATE_BATCH, measure_cpu: bool = True,
                   experiments: Optional[Sequence[Experiment]] = None) -> pd.DataFrame:
    """ESTIMATED GPU time and GPU memory of every cell of ``table`` (or of ``experiments`` only) — numbers to
    plan with, not measurements.

    Per cell: FLOPs of one training sample (forward + backward) and of one evaluation sample (forward, all items
    scored), counted with ``FlopCounterMode`` on full-length sequences at the dataset's context length and
    extrapolated to its item count (they are affine in the item count; counted at 1,000 and 3,000 items).
    Samples ≈ interactions − users of the raw file, from the dataset's registry entry (the paper's Table 1 for
    its datasets; the filters remove some, so this leans high), shared out by the split. One run = ``epochs`` ×
    (train + valid) + one final valid + test pass.
    GPU hours = FLOPs / ``gpu_tflops``; FlopCounterMode counts matrix products only (not element-wise work,
    the optimizer or data loading), and TTT4Rec's inner loop runs mini-batch after mini-batch, so a real GPU
    reaches less than the assumed throughput on these small models — read the hours as a lower bound.
    ``estimate_cpu_hours_per_run`` divides the same FLOPs by the FLOP rate *measured* on this machine.

    Memory: fp32 weights + gradients + Adam's two moments (16 bytes per parameter), the autograd-saved
    activations of a ``batch_size`` batch (measured per sample), and the logits: ``3 · batch · items · 4`` bytes
    for the plain loss, or the trainer's item-chunk block when it switches to the chunked loss (``loss_chunk
    auto``; BERT4Rec's Cloze loss switches to the same exact chunked loss over its masked positions).
    """
    from . import losses
    from .data import get_dataset_info

    in_paper = set(paper_datasets().index)
    rows = []
    for exp in experiments if experiments is not None else table_experiments(table):
        info = get_dataset_info(exp.dataset)
        max_len, counts = info.max_len, info.counts()
        if counts is None:   # never another dataset's counts
            raise ExperimentError(f"no user/item/interaction counts for dataset {exp.dataset!r} to estimate with: "
                                  "its registry entry has no raw_counts (add the raw file's users, items and "
                                  "interactions to its DatasetInfo)")
        users, items, inter = counts["users"], counts["items"], counts["interactions"]
        source = "paper Table 1 (raw)" if exp.dataset in in_paper else f"{exp.dataset} registry entry (raw file)"
        train_share, valid_share, test_share = _split_shares(exp.split)
        samples = inter - users
        train_n, valid_n, test_n = samples * train_share, samples * valid_share, samples * test_share
        variant = _variant_of(exp)
        costs = _affine_costs(variant, max_len)
        per = {k: a + b * items for k, (a, b) in costs.items()}
        trains = per["params"] > 0   # a model without parameters (pop) is not gradient-trained
        run_flops = (epochs * (train_n * per["train_flops"] * trains + valid_n * per["eval_flops"])
                     + (valid_n + test_n) * per["eval_flops"])
        # memory: logits part of the saved bytes is replaced by the trainer's chunk block when it chunks
        params = per["params"]
        chunk = losses.choose_chunk(batch_size, items)  # BERT4Rec's Cloze loss chunks the same way
        act_a, act_b = costs["saved_bytes"]
        activations = batch_size * (act_a if chunk is not None else act_a + act_b * items)
        logits = 3 * batch_size * (chunk if chunk is not None else items + 1) * 4
        memory = 16 * params + activations + logits
        row = {"table": exp.table, "dataset": exp.dataset, "split": exp.split, "model": exp.variant,
               "items": items, "max_len": max_len, "counts_from": source,
               "estimate_train_samples": int(train_n),
               "estimate_train_gflop_per_sample": per["train_flops"] / 1e9,
               "estimate_step_tflop_batch": batch_size * per["train_flops"] / 1e12,
               "estimate_pflop_per_run": run_flops / 1e15,
               "estimate_gpu_hours_per_run": run_flops / (gpu_tflops * 1e12) / 3600,
               "estimate_gpu_hours_all_seeds": seeds * run_flops / (gpu_tflops * 1e12) / 3600,
               "estimate_parameters_millions": params / 1e6,
               "estimate_loss_chunk": "plain" if chunk is None else str(chunk),
               "estimate_gpu_memory_gib": memory / 2**30}
        if measure_cpu:
            rate = _cpu_flops_per_second(variant, max_len) if trains else math.nan
            row["estimate_cpu_gflops_measured"] = rate / 1e9
            row["estimate_cpu_hours_per_run"] = run_flops / rate / 3600 if trains else math.nan
            row["estimate_gpu_speedup_vs_this_cpu"] = gpu_tflops * 1e12 / rate if trains else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["assumptions"] = (f"ESTIMATE — epochs per run {epochs}; sustained GPU throughput {gpu_tflops} "
                                  f"TFLOP/s fp32 (about half an A100's 19.5 TFLOP/s peak); batch {batch_size}; "
                                  f"{seeds} seeds; samples from the raw counts (the paper's Table 1, or the file's)")
    return frame


def format_estimate(frame: pd.DataFrame) -> str:
    """The estimate as a text table with its assumptions on top."""
    shown = frame[["dataset", "split", "model", "items", "max_len", "estimate_train_samples",
                   "estimate_step_tflop_batch", "estimate_gpu_hours_per_run", "estimate_gpu_hours_all_seeds",
                   "estimate_gpu_memory_gib"]
                  + [c for c in ("estimate_cpu_hours_per_run", "estimate_gpu_speedup_vs_this_cpu")
                     if c in frame]]
    total = frame["estimate_gpu_hours_all_seeds"].sum()
    return (f"{frame.attrs.get('assumptions', 'ESTIMATE')}\n"
            + shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")
            + f"\nESTIMATE total: {total:.3g} GPU hours for these {len(frame)} cells "
              f"(largest GPU memory need {frame['estimate_gpu_memory_gib'].max():.3g} GiB)")


__all__ = ["ESTIMATE_BATCH", "ESTIMATE_EPOCHS",
           "ESTIMATE_GPU_TFLOPS", "estimate_costs", "format_estimate"]
