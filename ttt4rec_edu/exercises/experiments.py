"""Checks for the exercises of the book's fourth part, *Experiments*: chapter 9 (training and evaluating on a
CPU), chapter 10 (rerunning the paper on a GPU) and chapter 11 (when does test-time training help?).

- ``check_metric_by_length`` (9): against ``metric_by_group(ranks, length_buckets(history, edges), "ndcg@k")``
  of :mod:`ttt4rec_edu.analysis`;
- ``check_logits_memory`` (10): against :func:`ttt4rec_edu.losses.logits_bytes` and ``choose_chunk``;
- ``check_seed_summary`` (10): against :func:`ttt4rec_edu.experiments.summarize`;
- ``check_paired_gain`` (11): the per-seed adaptation gain, as ``ttt4rec_edu.drift_study.adaptation_gain``;
- ``check_arm_interval`` (11): the paired 95% t interval, as ``ttt4rec_edu.drift_study.arm_differences``;
- ``check_repeat_crossover`` (11): the smallest repeat rate at which TTT4Rec is ahead of its fixed-W0 control,
  as ``ttt4rec_edu.history_study.paired_differences``.

The inputs are seeded tables (numpy, pandas) shaped like the library's own results. The signatures each check
expects are in the package docstring (:mod:`ttt4rec_edu.exercises`) and in each check's own docstring.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from ..analysis import length_buckets, metric_by_group, student_t_quantile
from ..experiments import METRICS, summarize
from ..losses import choose_chunk, logits_bytes
from ._core import ExerciseResult, _call, _fail, _report

# ----------------------------------------------------------------------------------------------------------
# Chapter 9: training and evaluating on a CPU — a metric per history-length bucket
#
# ``check_metric_by_length(fn)``: ``fn(ranks[N], history[N], edges, k) -> len(edges) floats``: the mean NDCG@k
# of the test samples in each bucket ``[edges[i], edges[i+1])`` and in the open last bucket ``[edges[-1], ∞)``;
# reference: ``metric_by_group(ranks, length_buckets(history, edges), f"ndcg@{k}")`` (ttt4rec_edu.analysis).
# ----------------------------------------------------------------------------------------------------------

_LENGTH_CASES = ((90, 10, (1, 3, 5, 8, 13, 21, 51)),   # (seed, k, edges): the book's buckets, context 50
                 (91, 5, (1, 2, 6, 20, 40)))


def _length_case(seed: int, k: int, edges: Tuple[int, ...]):
    """``(ranks int64 (400,), history int64 (400,))``: ranks in 1..200 (half of them drawn from 1..2k, so that
    every bucket has hits), histories in 1..80. Every edge and every edge − 1 occurs as a history (so buckets
    ``[a, b)`` and ``[a, b]`` differ) with a rank in 2..k (so NDCG@k differs from HR@k and from 0-based ranks in
    every bucket); some ranks are 1 (so log2(rank) divides by zero)."""
    rng = np.random.default_rng(seed)
    n = 400
    ranks = np.where(rng.random(n) < 0.5, rng.integers(1, 2 * k + 1, n), rng.integers(1, 201, n))
    history = rng.integers(1, 81, n)
    on_edges = sorted(set(edges) | {e - 1 for e in edges if e - 1 >= edges[0]})
    history[:len(on_edges)] = on_edges
    ranks[:len(on_edges)] = rng.integers(2, k + 1, len(on_edges))
    codes = np.searchsorted(np.asarray(edges), history, side="right") - 1
    counts = np.bincount(codes, minlength=len(edges))
    assert (counts > 0).all() and (ranks == 1).any(), f"case seed={seed} has an empty bucket: {counts}"
    return ranks.astype(np.int64), history.astype(np.int64)


def _means_per_code(gain, codes, buckets: int):
    return np.array([gain[codes == b].mean() if (codes == b).any() else np.nan for b in range(buckets)])


def _length_variants(ranks, history, edges, k: int) -> dict:
    """The usual wrong answers, each recomputed with numpy: name → ``len(edges)`` bucket values."""
    r = ranks.astype(np.float64)
    e = np.asarray(edges)
    nb = len(edges)
    hit = r <= k
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = {
            "log2_rank": np.where(hit, 1.0 / np.log2(r), 0.0),
            "hr": hit.astype(np.float64),
            "zero_based": np.where(hit, 1.0 / np.log2(r + 2.0), 0.0),
            "zero_based_strict": np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0),
            "natural_log": np.where(hit, 1.0 / np.log(r + 1.0), 0.0),
            "right": np.where(hit, 1.0 / np.log2(r + 1.0), 0.0),
        }
    right = np.searchsorted(e, history, side="right") - 1
    variants = {name: _means_per_code(g, right, nb) for name, g in gains.items() if name != "right"}
    gain = gains["right"]
    # [a, b] instead of [a, b): a history equal to an edge goes to the lower bucket ...
    lower = np.maximum(np.searchsorted(e, history, side="left") - 1, 0)
    variants["closed"] = _means_per_code(gain, lower, nb)
    # ... or, with masks (a <= h) & (h <= b), to both buckets
    masks = [(history >= a) & (history <= b) for a, b in zip(edges[:-1], edges[1:])] + [history >= edges[-1]]
    variants["closed_overlap"] = np.array([gain[m].mean() for m in masks])
    variants["overall"] = np.full(nb, gain.mean())
    return variants


_LENGTH_HINTS = {
    "log2_rank": "the discount is log2(rank + 1), not log2(rank): rank 1 gets 1/log2(2) = 1, while 1/log2(1) "
                 "divides by zero (inf/nan).",
    "hr": "that is HR@k (a hit counts 1); NDCG@k weighs a hit by 1/log2(rank + 1).",
    "zero_based": "the ranks are 1-based (1 = best): the gain is 1/log2(rank + 1), not 1/log2(rank + 2).",
    "zero_based_strict": "the ranks are 1-based (1 = best): the gain is 1/log2(rank + 1) for rank <= k, not "
                         "1/log2(rank + 2) for rank < k.",
    "natural_log": "use the base-2 logarithm (np.log2), not the natural logarithm.",
    "closed": "the buckets are half-open, [edges[i], edges[i+1]): a history equal to an edge belongs to the "
              "bucket that starts there, not to the one below (np.searchsorted(edges, history, side='right') - 1).",
    "closed_overlap": "the buckets are half-open, [edges[i], edges[i+1]): use history < b, not history <= b, so "
                      "that a history equal to an edge is counted once, in the bucket that starts there.",
    "overall": "that is the mean over all samples, repeated; average the per-sample NDCG@k within each bucket.",
}


def check_metric_by_length(fn: Callable[..., Sequence[float]]) -> ExerciseResult:
    """Check ``fn(ranks, history, edges, k) -> len(edges) floats``: the mean NDCG@k per history-length bucket.

    ``ranks``: ``int64 (N,)``, the 1-based rank of each test sample's target; ``history``: ``int64 (N,)``, how many
    earlier items that sample's user had (>= 1); ``edges``: increasing ints, e.g. ``(1, 3, 5, 8, 13, 21, 51)``;
    ``k``: the cut-off. Buckets are ``[edges[i], edges[i+1])`` for ``i = 0 .. len(edges) - 2`` and the open
    ``[edges[-1], ∞)``; per sample ``NDCG@k = 1/log2(rank + 1)`` if ``rank <= k`` else 0. Any 1-D sequence is
    accepted (list, tuple, numpy array, pandas Series, torch tensor), compared with atol 1e-9 (1e-6 for a float32
    answer). Reference:
    ``metric_by_group(ranks, length_buckets(history, edges), f"ndcg@{k}")`` of :mod:`ttt4rec_edu.analysis`,
    on two seeded cases of 400 samples with no empty bucket.
    """
    name = "check_metric_by_length"
    buckets_checked = 0
    for seed, k, edges in _LENGTH_CASES:
        ranks, history = _length_case(seed, k, edges)
        groups = length_buckets(history, edges)
        labels = list(groups.categories)
        table = metric_by_group(ranks, groups, f"ndcg@{k}")
        expected = table[f"ndcg@{k}"].reindex(labels).to_numpy(dtype=np.float64)
        where = f"k={k}, edges={edges} ({len(ranks)} samples)"
        got, error = _call(name, fn, ranks.copy(), history.copy(), edges, k)
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        if isinstance(got, pd.DataFrame):
            return _report(_fail(name, f"for {where} you returned a DataFrame with columns {list(got.columns)}",
                                 f"return one number per bucket (e.g. the 'ndcg@{k}' column of "
                                 "metric_by_group's table, in bucket order)."))
        try:
            if isinstance(got, torch.Tensor):
                low_precision = got.dtype in (torch.float32, torch.float16, torch.bfloat16)
                values = got.detach().cpu().to(torch.float64).numpy()
            else:
                low_precision = getattr(np.asarray(got), "dtype", None) in (np.float32, np.float16)
                values = np.asarray(got, dtype=np.float64)
        except (TypeError, ValueError, RuntimeError):
            return _report(_fail(name, f"for {where} you returned {type(got).__name__}: {got!r}"[:300],
                                 f"return a sequence of {len(edges)} floats, one per bucket."))
        atol = 1e-6 if low_precision else 1e-9   # torch.tensor(list of floats) is float32: ~7 significant digits
        expected_len = f"expected {len(edges)} values, one per bucket {labels}"
        overall = float(expected @ table["samples"].reindex(labels).to_numpy()) / len(ranks)
        if values.size == 1 and values.ndim <= 1:
            value = float(values.reshape(-1)[0])
            hint = ("that is the mean over all samples: " if math.isclose(value, overall, abs_tol=atol)
                    else "") + "split the samples by bucket and average NDCG@k within each bucket."
            return _report(_fail(name, f"for {where}: {expected_len}, got one number ({value:.6g})", hint))
        if values.ndim != 1:
            return _report(_fail(name, f"for {where}: {expected_len}, got an array of shape {values.shape}",
                                 "return a flat sequence (1-D), the buckets in order."))
        if len(values) == len(edges) - 1:
            same = np.allclose(values, expected[:-1], atol=atol, rtol=0.0, equal_nan=True)
            return _report(_fail(name, f"for {where}: {expected_len}, got {len(values)}",
                                 f"{'your values match the first buckets, but ' if same else ''}the last bucket "
                                 f"is open: [{edges[-1]}, ∞) holds every history >= {edges[-1]} "
                                 f"('{labels[-1]}'; with the default edges, histories longer than the context of "
                                 "50), so there is one bucket per edge, not one per pair of edges."))
        if len(values) != len(edges):
            return _report(_fail(name, f"for {where}: {expected_len}, got {len(values)}",
                                 f"one value per bucket: {len(edges) - 1} half-open buckets [edges[i], edges[i+1]) "
                                 f"and the open last one [{edges[-1]}, ∞)."))
        if np.allclose(values, expected, atol=atol, rtol=0.0):
            buckets_checked += len(edges)
            continue
        variants = _length_variants(ranks, history, edges, k)
        bad = ~np.isfinite(values)
        if bad.any():
            wrong = [labels[i] for i in np.flatnonzero(bad)]
            if np.array_equal(bad, ~np.isfinite(variants["log2_rank"])):
                hint = _LENGTH_HINTS["log2_rank"]
            else:
                hint = ("no bucket is empty here, so every mean is finite: look for a division by zero or a log "
                        "of 0 in the per-sample NDCG@k.")
            return _report(_fail(name, f"for {where}: buckets {wrong} are not finite: {values.tolist()}", hint))
        for variant, variant_values in variants.items():
            if np.allclose(values, variant_values, atol=atol, rtol=0.0):
                return _report(_fail(name, f"for {where}: expected {np.round(expected, 6).tolist()}, got "
                                           f"{np.round(values, 6).tolist()}", _LENGTH_HINTS[variant]))
        diff = np.abs(values - expected)
        first = int(np.flatnonzero(diff > atol)[0])
        return _report(_fail(name, f"for {where}: the largest difference is {diff.max():.3g}; the first bucket that "
                                   f"differs is '{labels[first]}': expected {expected[first]:.6f}, got "
                                   f"{values[first]:.6f}",
                             "per sample NDCG@k = 1/log2(rank + 1) if rank <= k else 0; bucket i holds the samples "
                             "with edges[i] <= history < edges[i+1] (the last: history >= edges[-1]); report each "
                             "bucket's mean, in bucket order."))
    return _report(ExerciseResult(name, True, f"matches metric_by_group(length_buckets(...)) on "
                                              f"{len(_LENGTH_CASES)} cases ({buckets_checked} buckets, k = "
                                              f"{' and '.join(str(c[1]) for c in _LENGTH_CASES)})."))


# ----------------------------------------------------------------------------------------------------------
# Chapter 10: rerunning the paper on a GPU — how big are the full logits, and when to chunk the loss
#
# ``check_logits_memory(fn)``: ``fn(batch_size: int, num_items: int, budget_bytes: int) -> (bytes, chunk)``
# with ``bytes`` = size of one fp32 ``(batch, num_items + 1)`` logits matrix and ``chunk`` = ``None`` when the
# plain loss (about three such blocks kept by autograd) fits in ``budget_bytes``, else the item chunk size of
# the trainer's rule (references: ``ttt4rec_edu.losses.logits_bytes`` and ``choose_chunk``).
# ``check_seed_summary(fn)``: ``fn(runs: DataFrame) -> DataFrame``, mean and sample std over seeds per cell of a
# results.csv (reference: ``ttt4rec_edu.experiments.summarize``).
# ----------------------------------------------------------------------------------------------------------

_LOGITS_CASES = (  # (batch, items, budget): Amazon Beauty, Amazon Video Games, Twitch, Gowalla, and edge cases
    (2048, 12101, 1 << 30), (2048, 50210, 1 << 30), (2048, 739991, 1 << 30), (2048, 1280969, 1 << 30),
    (256, 1280969, 1 << 30), (2048, 1280969, 8 << 30), (4096, 21844, 1 << 30), (4096, 21845, 1 << 30),
    (2048, 10 ** 6, 1 << 20),
)


def check_logits_memory(fn: Callable[[int, int, int], Tuple[int, Optional[int]]]) -> ExerciseResult:
    """Check ``fn(batch_size, num_items, budget_bytes) -> (logits_bytes, chunk_or_None)`` against
    :func:`ttt4rec_edu.losses.logits_bytes` (fp32, padding column included) and
    :func:`ttt4rec_edu.losses.choose_chunk` (``None`` when ``3 · logits_bytes <= budget``, else
    ``max(1024, budget // (3 · 4 · batch))``) on the paper's datasets at batch 2048 and a few edge cases."""
    name = "check_logits_memory"
    for batch, items, budget in _LOGITS_CASES:
        where = f"batch {batch}, {items:,} items, budget {budget / 2**30:g} GiB"
        expected_bytes, expected_chunk = logits_bytes(batch, items), choose_chunk(batch, items, budget)
        got, error = _call(name, fn, batch, items, budget)
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return _report(_fail(name, f"for {where} you returned {got!r}",
                                 "return a pair (bytes of one logits matrix, chunk size or None)."))
        got_bytes, got_chunk = got
        try:
            got_bytes = int(got_bytes)
        except (TypeError, ValueError):
            return _report(_fail(name, f"for {where} the byte count {got_bytes!r} is not a number"))
        if got_bytes != expected_bytes:
            if got_bytes == batch * items * 4:
                hint = "the logits have num_items + 1 columns: column 0 is the padding id (scored as −inf)."
            elif got_bytes in (batch * (items + 1) * 2, batch * (items + 1) * 8):
                hint = "the logits are float32: 4 bytes per value."
            elif got_bytes == batch * (items + 1):
                hint = "that is the number of values; multiply by 4 bytes (float32)."
            elif got_bytes == 3 * expected_bytes:
                hint = "return the size of ONE (batch, num_items + 1) matrix; the factor 3 belongs in the decision."
            else:
                hint = "bytes = batch × (num_items + 1) × 4."
            return _report(_fail(name, f"for {where} you said {got_bytes:,} bytes, expected {expected_bytes:,}",
                                 hint))
        if (got_chunk is None) != (expected_chunk is None):
            if expected_chunk is None:
                hint = ("the plain loss fits here: autograd keeps about 3 logits-sized blocks, and "
                        f"3 × {expected_bytes:,} ≤ {budget:,} bytes — return None.")
            elif budget >= expected_bytes:
                hint = "one matrix fits, but autograd keeps about three of them (logits, softmax, gradient)."
            else:
                hint = "chunk when 3 × bytes > budget; return None only when the plain loss fits."
            return _report(_fail(name, f"for {where} you returned chunk={got_chunk!r}, expected {expected_chunk!r}",
                                 hint))
        if expected_chunk is not None and got_chunk != expected_chunk:
            if got_chunk == budget // (4 * batch) or got_chunk == budget // (3 * batch):
                hint = "a chunk block costs 3 × 4 bytes per (sample, item): chunk = budget // (12 × batch)."
            elif got_chunk == budget // (12 * batch) and got_chunk < 1024:
                hint = "the trainer never goes below 1024 items per chunk: max(1024, budget // (12 × batch))."
            else:
                hint = "chunk = max(1024, budget // (3 × 4 × batch))."
            return _report(_fail(name, f"for {where} you returned chunk={got_chunk!r}, expected {expected_chunk}",
                                 hint))
    return _report(ExerciseResult(name, True, f"logits bytes and the chunking decision match choose_chunk "
                                              f"in {len(_LOGITS_CASES)} cases (the paper's datasets included)."))


_SEED_CELL_KEYS = ("dataset", "split", "model", "backbone", "inner")


def _seed_runs():
    """A results.csv-like frame: 4 cells (a baseline with empty backbone/inner, two TTT4Rec variants of the same
    dataset, one cell with a single seed), seeded random metrics."""
    rng = np.random.default_rng(100)
    cells = [("amazon-video-games", "6:2:2", "sasrec", None, None, 3),
             ("amazon-video-games", "6:2:2", "ttt4rec", "transformer", "mlp", 3),
             ("amazon-video-games", "6:2:2", "ttt4rec", "mamba", "linear", 3),
             ("gowalla", "3:2:5", "gru4rec", None, None, 1)]
    rows = []
    for dataset, split, model, backbone, inner, n_seeds in cells:
        base = rng.uniform(0.02, 0.1)
        for seed in range(n_seeds):
            hr10 = base + rng.normal(0, 0.005)
            rows.append({"table": "4" if split == "6:2:2" else "2", "dataset": dataset, "split": split,
                         "model": model, "backbone": backbone, "inner": inner, "adapt_at_test": True,
                         "seed": seed, "hr@10": hr10, "hr@50": 2.4 * hr10 + rng.normal(0, 0.01),
                         "ndcg@10": 0.5 * hr10 + rng.normal(0, 0.002), "ndcg@50": 0.8 * hr10 + rng.normal(0, 0.003),
                         "data": dataset})
    return pd.DataFrame(rows)  # backbone / inner are NaN for the baselines, as when read back from a CSV


def check_seed_summary(fn) -> ExerciseResult:
    """Check ``fn(runs: DataFrame) -> DataFrame``: one row per cell (``dataset, split, model, backbone, inner``,
    as columns or as the index, empty backbone/inner for baselines) with columns ``<metric>_mean`` and
    ``<metric>_std`` (sample std, ddof 1; NaN for a single seed) of ``hr@10, hr@50, ndcg@10, ndcg@50``.
    Reference: :func:`ttt4rec_edu.experiments.summarize` on a results.csv-like frame with four cells."""
    name = "check_seed_summary"
    runs = _seed_runs()
    expected = summarize(runs).fillna({"backbone": "", "inner": ""})
    expected = expected.set_index(list(_SEED_CELL_KEYS))
    got, error = _call(name, fn, runs.copy())
    if error is not None:
        return _report(error)
    if not isinstance(got, pd.DataFrame):
        return _report(_fail(name, f"you returned {type(got).__name__}",
                             "return a pandas DataFrame with one row per cell."))
    got = got.copy()
    if isinstance(got.columns, pd.MultiIndex):  # (metric, "mean") → "metric_mean"
        got.columns = ["_".join(str(p) for p in col if str(p)) for col in got.columns]
    if any(k not in got.columns for k in _SEED_CELL_KEYS):
        got = got.reset_index()
    missing = [k for k in _SEED_CELL_KEYS if k not in got.columns]
    if missing:
        return _report(_fail(name, f"the cell keys {missing} are neither columns nor index levels",
                             "group by dataset, split, model, backbone and inner (all five name a cell)."))
    wanted = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    absent = [c for c in wanted if c not in got.columns]
    if absent:
        return _report(_fail(name, f"columns {absent} are missing",
                             "name the columns like summarize does: 'hr@10_mean', 'hr@10_std', ..."))
    got[["backbone", "inner"]] = got[["backbone", "inner"]].fillna("")
    got = got.set_index(list(_SEED_CELL_KEYS))
    if len(got) < len(expected):
        lost = [k for k in expected.index if k not in got.index]
        if lost and all(k[3] == "" for k in lost):
            hint = ("the baselines disappeared: their backbone/inner are NaN and groupby drops NaN keys by "
                    "default — fillna('') first, or groupby(..., dropna=False).")
        else:
            hint = "every (dataset, split, model, backbone, inner) is its own cell."
        return _report(_fail(name, f"{len(got)} cells returned, expected {len(expected)}; missing {lost}", hint))
    if len(got) > len(expected) or got.index.duplicated().any():
        return _report(_fail(name, f"{len(got)} rows returned, expected {len(expected)} cells (one row each)",
                             "group by the cell keys only, not by seed."))
    got = got.loc[expected.index]
    for m in METRICS:
        diff = (got[f"{m}_mean"] - expected[f"{m}_mean"]).abs()
        if not (diff < 1e-12).all():
            return _report(_fail(name, f"{m}_mean differs by up to {diff.max():.3g}",
                                 "the mean over the seeds of each cell (keep the two TTT4Rec variants apart)."))
        exp_std, got_std = expected[f"{m}_std"], got[f"{m}_std"]
        single = exp_std.isna()
        many = ~single
        if not ((got_std[many] - exp_std[many]).abs() < 1e-12).all():
            counts = runs.fillna({"backbone": "", "inner": ""}).groupby(list(_SEED_CELL_KEYS))["seed"].count()
            n = counts.loc[expected.index[many]].to_numpy()
            population = exp_std[many] * ((n - 1) / n) ** 0.5
            if ((got_std[many] - population).abs() < 1e-12).all():
                hint = "that is the population std (ddof=0, np.std's default); use the sample std, ddof=1."
            else:
                hint = "the sample standard deviation (ddof=1) over the seeds of each cell."
            return _report(_fail(name, f"{m}_std differs from the reference", hint))
        if not got_std[single].isna().all():
            return _report(_fail(name, f"{m}_std of the single-seed cell is {got_std[single].tolist()}, expected NaN",
                                 "one seed has no sample standard deviation: leave it NaN (pandas' .std() does)."))
    return _report(ExerciseResult(name, True, f"mean and sample std over seeds match summarize() for "
                                              f"{len(expected)} cells (baselines and a single-seed cell included)."))


# ----------------------------------------------------------------------------------------------------------
# Chapter 11: when does test-time training help? — the paired adaptation gain
#
# ``check_paired_gain(fn)``: ``fn(df) -> (mean, std)`` where ``df`` has one row per (seed, adapt) of the same
# TTT4Rec runs (columns ``seed``, ``adapt``, ``ndcg@10``, rows in any order); the gain of a seed is NDCG@10
# with adaptation minus NDCG@10 with η = 0 at test; return its mean and sample standard deviation (ddof = 1)
# over seeds (reference: ``ttt4rec_edu.drift_study.adaptation_gain``).
# ----------------------------------------------------------------------------------------------------------

def check_paired_gain(fn: Callable[[object], Tuple[float, float]]) -> ExerciseResult:
    """Check ``fn(df) -> (mean, std)``: the per-seed gain ``ndcg@10(adapt=True) − ndcg@10(adapt=False)``,
    paired by ``seed``, then its mean and sample standard deviation (ddof = 1) across seeds."""
    name = "check_paired_gain"
    rng = np.random.default_rng(110)
    for n in (4, 7):
        seeds = rng.permutation(np.arange(10, 10 + n))
        level = rng.uniform(0.2, 0.5, size=n)                  # seed-to-seed spread shared by both rows
        gain = rng.normal(0.01, 0.01, size=n)
        on = pd.DataFrame({"seed": seeds, "adapt": True, "ndcg@10": level + gain})
        off = pd.DataFrame({"seed": seeds, "adapt": False, "ndcg@10": level})
        df = pd.concat([on, off.sample(frac=1.0, random_state=int(n))], ignore_index=True)
        df = df.sample(frac=1.0, random_state=int(n) + 1).reset_index(drop=True)   # rows in any order
        expected = (float(np.mean(gain)), float(np.std(gain, ddof=1)))
        got, error = _call(name, fn, df.copy())
        where = f"for {n} seeds"
        if error is not None:
            return _report(_fail(name, f"{where}: {error.message}"))
        try:
            mean, std = (float(v) for v in got)
        except (TypeError, ValueError):
            return _report(_fail(name, f"{where} you returned {got!r}", "return a pair (mean, std) of numbers."))
        close = lambda a, b: math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)   # noqa: E731
        if close(mean, expected[0]) and close(std, expected[1]):
            continue
        if close(mean, -expected[0]):
            hint = "the sign is reversed: the gain is adapt=True minus adapt=False."
        elif close(mean, expected[0]) and close(std, float(np.std(gain, ddof=0))):
            hint = "this is the population standard deviation (ddof=0); use the sample one (ddof=1)."
        elif close(mean, expected[0]) and close(std, math.sqrt(np.var(level + gain, ddof=1) + np.var(level, ddof=1))):
            hint = ("this spread is of two unpaired groups; subtract within each seed first, then take the "
                    "standard deviation of the differences (the seed-to-seed spread cancels).")
        elif not close(mean, expected[0]):
            hint = "the mean gain is mean over seeds of ndcg@10(adapt=True) − ndcg@10(adapt=False)."
        else:
            hint = ("the mean is right but not the spread: pair the rows by seed (e.g. pivot on seed × adapt); "
                    "the rows come in any order, so subtracting positionally mixes seeds.")
        return _report(_fail(name, f"{where} expected mean {expected[0]:.5f}, std {expected[1]:.5f}; "
                                   f"got {mean:.5f}, {std:.5f}", hint))
    return _report(ExerciseResult(name, True, "mean and sample std of the per-seed gain match for 4 and 7 seeds."))


# ----------------------------------------------------------------------------------------------------------
# Chapter 11: the three arms — what adapting adds over the control trained without adaptation
#
# ``check_arm_interval(fn)``: ``fn(df) -> (mean, low, high)`` where ``df`` has one row per (seed, variant) of the
# three TTT4Rec arms (columns ``seed``, ``variant`` ∈ ``ttt4rec_edu.drift_study.ARMS``, ``ndcg@10``, rows in any
# order); the difference of a seed is NDCG@10 of ``"TTT4Rec"`` minus NDCG@10 of ``"TTT4Rec, fixed W0"``; return
# its mean over seeds and the 95% Student-t interval of that mean, ``mean ± t_{0.975, n−1} · s / sqrt(n)``
# (reference: ``ttt4rec_edu.drift_study.arm_differences``).
# ----------------------------------------------------------------------------------------------------------

def check_arm_interval(fn: Callable[[object], Tuple[float, float, float]]) -> ExerciseResult:
    """Check ``fn(df) -> (mean, low, high)``: the per-seed difference ``TTT4Rec − TTT4Rec, fixed W0`` (paired by
    ``seed``), its mean over seeds and the 95% Student-t interval of the mean."""
    name = "check_arm_interval"
    rng = np.random.default_rng(111)
    for n in (5, 8):
        seeds = rng.permutation(np.arange(20, 20 + n))
        level = rng.uniform(0.2, 0.5, size=n)               # each seed's data: shared by the three arms
        diff = rng.normal(0.01, 0.02, size=n)
        mismatch = rng.normal(-0.05, 0.01, size=n)
        arms = {"TTT4Rec": level + diff, "TTT4Rec, fixed W0": level, "TTT4Rec, η=0 at test": level + mismatch}
        df = pd.concat([pd.DataFrame({"seed": seeds, "variant": v, "ndcg@10": x}) for v, x in arms.items()])
        df = df.sample(frac=1.0, random_state=n).reset_index(drop=True)   # rows in any order
        s = float(np.std(diff, ddof=1))
        t = student_t_quantile(0.975, n - 1)
        mean = float(np.mean(diff))
        expected = (mean, mean - t * s / math.sqrt(n), mean + t * s / math.sqrt(n))
        got, error = _call(name, fn, df.copy())
        where = f"for {n} seeds"
        if error is not None:
            return _report(_fail(name, f"{where}: {error.message}"))
        try:
            values = tuple(float(v) for v in got)
            if len(values) != 3:
                raise ValueError
        except (TypeError, ValueError):
            return _report(_fail(name, f"{where} you returned {got!r}",
                                 "return a triple (mean, low, high) of numbers."))
        close = lambda a, b: math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)  # float32 answers pass   # noqa: E731
        if all(close(a, b) for a, b in zip(values, expected)):
            continue
        got_mean, low, high = values
        half = (high - low) / 2
        other = float(np.mean(level + mismatch))
        if close(got_mean, -mean):
            hint = 'the sign is reversed: the difference is "TTT4Rec" minus "TTT4Rec, fixed W0".'
        elif close(got_mean, float(np.mean(level + diff)) - other):
            hint = ('this compares with the η = 0-at-test arm; the control is "TTT4Rec, fixed W0" (trained '
                    "without adaptation), not the adapting model's weights evaluated with η = 0.")
        elif not close(got_mean, mean):
            hint = "the mean is the mean over seeds of NDCG@10(TTT4Rec) − NDCG@10(TTT4Rec, fixed W0)."
        elif close(half, 1.959964 * s / math.sqrt(n)):
            hint = (f"this is the normal 1.96; with {n} seeds use Student's t with n − 1 = {n - 1} degrees of "
                    f"freedom ({t:.3f}, ttt4rec_edu.analysis.student_t_quantile(0.975, {n - 1})).")
        elif close(half, t * s):
            hint = "this interval is for one seed's difference; the mean's uses the standard error s / sqrt(n)."
        elif close(half, t * float(np.std(diff, ddof=0)) / math.sqrt(n)):
            hint = "this uses the population standard deviation (ddof=0); use the sample one (ddof=1)."
        elif close(half, t * math.sqrt(np.var(level + diff, ddof=1) + np.var(level, ddof=1)) / math.sqrt(n)):
            hint = ("this spread is of two unpaired groups; subtract within each seed first, then take the "
                    "spread of the differences (the seed-to-seed level cancels).")
        else:
            hint = ("the mean is right but not the interval: pair by seed (pivot on seed × variant; rows come in "
                    "any order), then mean ± t_{0.975, n−1} · s / sqrt(n) with the sample std s.")
        return _report(_fail(name, f"{where} expected ({expected[0]:.5f}, {expected[1]:.5f}, "
                                   f"{expected[2]:.5f}); got ({got_mean:.5f}, {low:.5f}, {high:.5f})", hint))
    return _report(ExerciseResult(name, True, "the paired mean and its 95% t interval match for 5 and 8 seeds."))




# ----------------------------------------------------------------------------------------------------------
# Chapter 11: at which repeat rate does the inner loop overtake its last-item control?
#
# ``check_repeat_crossover(fn)``: ``fn(df) -> float or None`` where ``df`` has one row per (repeat, seed, arm)
# (columns ``repeat``, ``seed``, ``arm`` ∈ ``ttt4rec_edu.history_study.ARMS``, ``ndcg@10``, rows in any order);
# return the smallest ``repeat`` at which NDCG@10(``"TTT4Rec"``) − NDCG@10(``"TTT4Rec, fixed W0"``), paired by
# seed, has a 95% Student-t interval entirely above 0, or ``None`` if there is no such ``repeat``
# (reference: ``ttt4rec_edu.history_study.paired_differences``).
# ----------------------------------------------------------------------------------------------------------

def _crossover_case(rng, means, spreads):
    """Rows of three arms over ``repeat`` = 0, 0.2, ... with per-seed differences of exactly the given mean
    and sample standard deviation; the seeds' levels spread far more than the differences."""
    n = 5
    z = rng.standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    frames = []
    for i, (m, s) in enumerate(zip(means, spreads)):
        seeds = rng.permutation(np.arange(n))
        level = rng.uniform(0.2, 0.5, size=n)
        diff = m + s * z
        arms = {"TTT4Rec": level + diff, "TTT4Rec, fixed W0": level,
                "TTT4Rec, η=0 at test": level + diff - 0.05 + rng.normal(0, 0.002, size=n)}
        for arm, x in arms.items():
            frames.append(pd.DataFrame({"repeat": round(0.2 * i, 1), "seed": seeds, "arm": arm, "ndcg@10": x}))
    return pd.concat(frames).sample(frac=1.0, random_state=int(rng.integers(1000))).reset_index(drop=True)


def check_repeat_crossover(fn: Callable[[object], Optional[float]]) -> ExerciseResult:
    """Check ``fn(df) -> float or None``: the smallest ``repeat`` at which TTT4Rec − TTT4Rec, fixed W0 (paired
    by ``seed``) has a 95% Student-t interval entirely above 0; ``None`` if it never has."""
    name = "check_repeat_crossover"
    rng = np.random.default_rng(112)
    # (means, spreads, expected): repeat 0.2 is above 0 on average only, 0.4 only with the normal 1.96,
    # 0.6 with Student's t; 0.8 as well (the smallest counts). The second table never crosses.
    cases = (((-0.002, 0.004, 0.01, 0.02, 0.03), (0.004, 0.008, 0.01, 0.005, 0.005), 0.6),
             ((0.0, 0.002, -0.001, 0.002, 0.001), (0.01, 0.01, 0.01, 0.01, 0.01), None))
    for means, spreads, expected in cases:
        df = _crossover_case(rng, means, spreads)
        got, error = _call(name, fn, df.copy())
        where = "on a table that crosses" if expected is not None else "on a table that never crosses"
        if error is not None:
            return _report(_fail(name, f"{where}: {error.message}"))
        if got is not None:
            try:
                got = float(got)
            except (TypeError, ValueError):
                return _report(_fail(name, f"{where} you returned {got!r}", "return a repeat rate or None."))
        if (got is None and expected is None) or (got is not None and expected is not None
                                                  and math.isclose(got, expected, abs_tol=1e-9)):
            continue
        if expected is None:
            hint = "when no repeat rate has an interval above 0, return None: the inner loop never overtakes."
        elif got is None:
            hint = ("pair the two arms by seed before the interval (pivot on seed × arm): unpaired, the "
                    "seed-to-seed level swamps the difference.")
        elif math.isclose(got, 0.0, abs_tol=1e-9):
            hint = ('this compares with "TTT4Rec, η=0 at test" (the mismatch); the control is "TTT4Rec, '
                    'fixed W0".')
        elif math.isclose(got, 0.2, abs_tol=1e-9):
            hint = "a mean above 0 is not enough: the lower end of the 95% interval must be above 0."
        elif math.isclose(got, 0.4, abs_tol=1e-9):
            hint = ("this is the normal 1.96; with 5 seeds use Student's t with 4 degrees of freedom "
                    "(ttt4rec_edu.analysis.student_t_quantile(0.975, 4) = 2.776).")
        elif math.isclose(got, 0.8, abs_tol=1e-9):
            hint = "return the smallest repeat rate whose interval is above 0, not the largest."
        else:
            hint = "per repeat rate: mean ± t_{0.975, n−1} · s / sqrt(n) of the per-seed differences."
        return _report(_fail(name, f"{where} expected {expected!r}, got {got!r}", hint))
    return _report(ExerciseResult(name, True, "the crossover found; None where it never crosses."))
