"""Reading finished runs: learning curves, time per epoch, and per-sample / per-user comparisons (Chapter 9).

Every function here reads what :func:`ttt4rec_edu.experiments.run_experiments` (``python -m ttt4rec_edu
reproduce``) leaves in a results folder::

    OUT/runs/<dataset>/<split>/<variant>/seed<k>/metrics.json      per-epoch history, valid and test metrics
    OUT/runs/<dataset>/<split>/<variant>/seed<k>/test_ranks.npz    the rank of every test sample's target

The per-sample ranks are in the order of the test split's samples, which :func:`ttt4rec_edu.data.build_splits`
rebuilds deterministically from the data, so a rank can be joined with its user and with how many earlier items
that user had (:func:`sample_table`).

Per-sample metrics: with ``r`` the 1-based rank of the target, ``HR@K = [r <= K]`` and
``NDCG@K = [r <= K] / log2(r + 1)`` — their means over the samples are the metrics of
:mod:`ttt4rec_edu.metrics`.

Uncertainty of a difference between two models on the same test samples (:func:`paired_bootstrap`): the samples
of one user are not independent (same history, same tastes), so the bootstrap resamples **users** with their
samples (a cluster bootstrap) rather than single samples.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Hashable, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .experiments import run_dir
from .train import METRICS_NAME, RANKS_NAME

__all__ = ["mean_interval", "welch_interval", "student_t_quantile", "learning_curves", "epoch_costs",
           "load_test_ranks", "sample_table", "match_samples", "per_sample_metric", "seed_mean_metric",
           "metric_by_group", "length_buckets", "test_steps", "paired_differences", "paired_bootstrap",
           "paired_bootstraps",
           "RunFilesError"]


class RunFilesError(FileNotFoundError):
    """A results folder lacks a file a function needs (the message names the file and how to make it)."""


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (e.g. 2.776 for p = 0.975,
    df = 4): ``scipy.stats.t.ppf``, with a clear error for a ``p`` outside (0, 1) or a ``df`` that is not a
    positive whole number."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    # imported here, not at the top: the trainer imports this module, and a bare machine (the lent GPU's
    # Python: torch, numpy, pandas, matplotlib, seaborn, tqdm) trains without SciPy
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf(p, int(df)))


def mean_interval(values, level: float = 0.95) -> Tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` (e.g. one paired difference per seed) with the Student-t
    interval ``mean ± t_{(1+level)/2, n−1} · s / sqrt(n)`` (``s`` the sample std, ddof 1). One value: the
    interval is ``(nan, nan)`` — one run says nothing about its spread. Empty or non-finite input: an error."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"mean_interval needs finite values, got {values.tolist()[:5]}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = float(values.mean())
    if values.size == 1:
        return mean, math.nan, math.nan
    half = student_t_quantile((1 + level) / 2, values.size - 1) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def welch_interval(a, b, level: float = 0.95) -> Tuple[float, float, float]:
    """``(mean(a) − mean(b), low, high)`` for two *independent* groups, e.g. the test metric of each seed of two
    separately trained models (seed k of one is not paired with seed k of the other): Welch's interval
    ``d ± t_{(1+level)/2, ν} · sqrt(s_a²/n_a + s_b²/n_b)``, with the Welch–Satterthwaite ``ν`` rounded *down*
    to an integer (a slightly wider, conservative interval). Needs two or more values per group."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or b.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"welch_interval needs >= 2 finite values per group, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return diff, diff, diff
    nu = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = student_t_quantile((1 + level) / 2, max(1, int(math.floor(nu)))) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def _read_metrics(folder: Path) -> dict:
    path = folder / METRICS_NAME
    if not path.exists():
        raise RunFilesError(f"{path} does not exist: the run is not finished (run `python -m ttt4rec_edu "
                            "reproduce ...` with the same --out to finish it)")
    return json.loads(path.read_text())


def learning_curves(out, experiments: Sequence, seeds: Sequence[int]) -> pd.DataFrame:
    """One row per (experiment, seed, epoch) of the finished runs under ``out``; unfinished runs are skipped.

    Columns: ``split``, ``model`` (registry name), ``variant`` (e.g. ``ttt4rec-transformer-mlp-noadapt``),
    ``seed``, ``epoch``, ``loss`` (mean training loss of the epoch), ``valid_hr@10`` ... ``valid_ndcg@50``,
    ``time_s`` (training + validation of that epoch), ``samples_per_s`` (training throughput), ``best_epoch``,
    ``stopped_early``, and the CPU seconds of this process for training and validation apart, ``train_cpu_s``
    and ``valid_cpu_s`` (NaN for runs recorded before the trainer kept them).
    """
    rows = []
    for exp in experiments:
        for seed in seeds:
            folder = run_dir(Path(out), exp, seed)
            if not (folder / METRICS_NAME).exists():
                continue
            metrics = _read_metrics(folder)
            for h in metrics.get("history", []):
                row = {"split": exp.split, "model": exp.model, "variant": exp.variant, "seed": int(seed),
                       "epoch": int(h["epoch"]), "loss": h["loss"], "time_s": h["time_s"],
                       "samples_per_s": h["samples_per_s"], "best_epoch": metrics.get("best_epoch"),
                       "stopped_early": metrics.get("stopped_early"),
                       "train_cpu_s": h.get("train_cpu_s", math.nan), "valid_cpu_s": h.get("valid_cpu_s", math.nan)}
                row.update({f"valid_{k}": v for k, v in h["valid"].items()})
                rows.append(row)
    return pd.DataFrame(rows)


def epoch_costs(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (split, variant): seeds, epochs run, mean seconds per epoch (training + validation) and mean training
    throughput in samples per second, from :func:`learning_curves`."""
    if curves.empty:
        return pd.DataFrame(columns=["split", "variant", "seeds", "epochs", "s_per_epoch", "train_samples_per_s"])
    grouped = curves.groupby(["split", "variant"], sort=False)
    return pd.DataFrame({
        "seeds": grouped["seed"].nunique(),
        "epochs": grouped["epoch"].max(),
        "s_per_epoch": grouped["time_s"].mean(),
        "train_samples_per_s": grouped["samples_per_s"].mean(),
    }).reset_index()


def load_test_ranks(out, experiment, seed: int, expected_samples: Optional[int] = None) -> np.ndarray:
    """``int64 (N,)``: the saved rank of every test sample of one finished run (1 = best).

    ``expected_samples``: the size of the test split the caller rebuilt; a different count is an error (the run
    was made on other data or another split), never a silent misalignment.
    """
    folder = run_dir(Path(out), experiment, seed)
    path = folder / RANKS_NAME
    if not path.exists():
        raise RunFilesError(f"{path} does not exist: runs save their test ranks since the trainer writes "
                            f"{RANKS_NAME}; rerun this run (delete {folder}) to make it")
    ranks = np.load(path)["ranks"].astype(np.int64)
    if expected_samples is not None and len(ranks) != expected_samples:
        raise ValueError(f"{path} holds {len(ranks)} ranks but the test split has {expected_samples} samples: "
                         "the run was made on other data or another split")
    return ranks


def sample_table(sample_set) -> pd.DataFrame:
    """One row per sample of a :class:`ttt4rec_edu.data.SampleSet`, in its order: ``user`` (internal id),
    ``history`` (number of earlier items of that user, *not* cut at ``max_len``), ``input_length`` (what the model
    saw: ``min(history, max_len)``) and ``target`` (item id)."""
    user = sample_set.user.numpy()
    history = (sample_set.target_index - sample_set.user_start[sample_set.user]).numpy()
    return pd.DataFrame({"user": user, "history": history, "input_length": np.minimum(history, sample_set.max_len),
                         "target": sample_set.targets.numpy()})


def test_steps(table: pd.DataFrame) -> np.ndarray:
    """``int64 (N,)``: for each sample of one split's :func:`sample_table`, its place among *that user's* samples
    of the split, counted from 1 in time order (1 = the user's first test sample, right after the validation
    part). Read with ``history``: ``history`` counts every earlier item of the user (what the model was given, up
    to the context), the step counts how far into the evaluated period the sample lies — the axis of the paper's
    "rapid adaptation" claim, where an inner loop that keeps learning should gain as a user's recent items pile up.
    """
    missing = {"user", "history"} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks the column(s) {sorted(missing)}: pass a table made by sample_table")
    if table.duplicated(["user", "history"]).any():
        raise ValueError("the table lists a (user, history) sample twice: not one split's sample table")
    order = table.reset_index(drop=True).sort_values(["user", "history"], kind="stable")
    steps = order.groupby("user", sort=False).cumcount().to_numpy() + 1
    out = np.empty(len(table), dtype=np.int64)
    out[order.index.to_numpy()] = steps
    return out


def match_samples(table_a: pd.DataFrame, table_b: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
    """The samples two :func:`sample_table` tables have in common, e.g. the test samples of split 3:2:5 that are
    also test samples of split 6:2:2 (the later split's test part is the last 20% of each user's samples instead
    of the last 50%, so it is mostly, but after rounding not always, inside the earlier one).

    A sample is identified by its ``user`` and ``history`` (the number of earlier items of that user): the same
    pair means the same input and the same target item. Returns ``(index_a, index_b)``, ``int64 (M,)`` positions
    into the two tables with ``table_a.iloc[index_a[k]]`` and ``table_b.iloc[index_b[k]]`` the same sample, in the
    order of ``table_a``. Tables of different data (a matched pair with two different targets) are an error.
    """
    keys = ["user", "history"]
    for name, table in (("table_a", table_a), ("table_b", table_b)):
        missing = set(keys + ["target"]) - set(table.columns)
        if missing:
            raise ValueError(f"{name} lacks the column(s) {sorted(missing)}: pass tables made by sample_table")
        if table.duplicated(keys).any():
            raise ValueError(f"{name} lists a (user, history) sample twice: not one split's sample table")
    left = table_a[keys + ["target"]].reset_index(drop=True).rename_axis("index_a").reset_index()
    right = table_b[keys + ["target"]].reset_index(drop=True).rename_axis("index_b").reset_index()
    both = left.merge(right, on=keys, suffixes=("_a", "_b"), sort=False).sort_values("index_a")
    clash = both[both["target_a"] != both["target_b"]]
    if len(clash):
        first = clash.iloc[0]
        raise ValueError(f"{len(clash)} matched samples have different targets (e.g. user {first['user']}, "
                         f"history {first['history']}: item {first['target_a']} vs {first['target_b']}): "
                         "the two tables were built from different data")
    return both["index_a"].to_numpy(np.int64), both["index_b"].to_numpy(np.int64)


def per_sample_metric(ranks, metric: str = "ndcg@10") -> np.ndarray:
    """``float64 (N,)``: ``hr@K`` → ``[rank <= K]``, ``ndcg@K`` → ``[rank <= K] / log2(rank + 1)``."""
    name, _, k = metric.partition("@")
    if name not in ("hr", "ndcg") or not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric must look like 'hr@10' or 'ndcg@50', got {metric!r}")
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= int(k)
    if name == "hr":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)


def seed_mean_metric(out, experiment, seeds: Sequence[int], expected_samples: int,
                     metric: str = "ndcg@10") -> np.ndarray:
    """``float64 (N,)``: each test sample's ``metric`` averaged over the runs ``seeds`` of one experiment (each
    seed's saved ranks, :func:`load_test_ranks`). Averaging over seeds first keeps a comparison between models
    from mistaking one lucky initialisation for a model's behaviour."""
    if not len(seeds):
        raise ValueError("seeds is empty: average over at least one finished run")
    ranks = [load_test_ranks(out, experiment, s, expected_samples=expected_samples) for s in seeds]
    return np.mean([per_sample_metric(r, metric) for r in ranks], axis=0)


def metric_by_group(ranks, groups, metric: str = "ndcg@10") -> pd.DataFrame:
    """Mean of the per-sample ``metric`` within each group label (e.g. a length bucket); columns ``metric``
    (the mean) and ``samples``, indexed by group in sorted order (categorical order for a categorical)."""
    values = per_sample_metric(ranks, metric)
    frame = pd.DataFrame({"group": groups, "value": values})
    grouped = frame.groupby("group", observed=True, sort=True)["value"]
    return pd.DataFrame({metric: grouped.mean(), "samples": grouped.size()})


def length_buckets(history, edges: Sequence[int] = (1, 3, 5, 8, 13, 21, 51)) -> pd.Categorical:
    """Label each sample's ``history`` by the bucket ``[edges[i], edges[i+1])`` it falls into, e.g. ``"3–4"``;
    the last bucket is open (``"51+"`` for the default edges, i.e. histories longer than the context 50)."""
    edges = [int(e) for e in edges]
    if sorted(set(edges)) != edges or edges[0] < 0:
        raise ValueError(f"edges must be increasing non-negative integers, got {edges}")
    labels = [f"{a}" if b - a == 1 else f"{a}–{b - 1}" for a, b in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    history = np.asarray(history)
    if (history < edges[0]).any():
        raise ValueError(f"a history of {int(history.min())} is below the first edge {edges[0]}")
    codes = np.searchsorted(np.asarray(edges), history, side="right") - 1
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def paired_bootstrap(difference, users, groups=None, num_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """Mean of a per-sample ``difference`` (model A − model B on the same samples) with a user-level bootstrap
    confidence interval, overall and per group.

    Args:
        difference: ``(N,)`` per-sample differences, e.g. ``per_sample_metric(ranks_a) - per_sample_metric(ranks_b)``.
        users: ``(N,)`` the user of each sample; users are resampled with replacement, each with all its samples.
        groups: optional ``(N,)`` labels (e.g. :func:`length_buckets`); one row per group plus ``"all"``.
        num_boot: bootstrap replicates; ``level``: the central coverage of the interval (percentile method).

    Returns: rows indexed by group with ``mean``, ``low``, ``high``, ``samples``, ``users``, ``share_better``
    (fraction of users whose mean difference is > 0), ``share_worse`` (< 0).
    """
    return paired_bootstraps({"": difference}, users, groups, num_boot, seed, level)[""]


def paired_bootstraps(differences: Mapping[Hashable, object], users, groups=None, num_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> Dict[Hashable, pd.DataFrame]:
    """:func:`paired_bootstrap` of several per-sample differences on the same samples, e.g. every (metric, pair)
    of a comparison: ``{key: paired_bootstrap(differences[key], users, groups, ...)}``, exactly (the same
    seed gives the same resampled users to every key), but the users are drawn once per group and shared by all
    keys instead of once per key, and drawing them is most of a bootstrap's work."""
    users = np.asarray(users)
    differences = {key: np.asarray(d, dtype=np.float64) for key, d in differences.items()}
    for d in differences.values():
        if d.shape != users.shape or d.ndim != 1:
            raise ValueError(f"difference and users must be 1-D of equal length, got {d.shape} and {users.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    parts: Dict[str, np.ndarray] = {"all": np.ones(len(users), dtype=bool)}
    if groups is not None:
        groups = pd.Series(groups)
        labels = groups.cat.categories if hasattr(groups, "cat") else sorted(groups.unique())
        for label in labels:
            mask = (groups == label).to_numpy()
            if mask.any():
                parts[str(label)] = mask
    rows: Dict[Hashable, dict] = {key: {} for key in differences}
    tail = (1 - level) / 2
    for name, mask in parts.items():
        # per-user sums and counts: resampling users = reweighting these by multinomial counts
        codes, user_index = np.unique(users[mask], return_inverse=True)
        counts = np.bincount(user_index, minlength=len(codes)).astype(np.float64)
        sums = {key: np.bincount(user_index, weights=d[mask], minlength=len(codes))
                for key, d in differences.items()}
        estimates = {key: [] for key in differences}
        for start in range(0, num_boot, 100):  # 100 replicates at a time keep the weight matrix small
            reps = min(100, num_boot - start)
            weights = rng.multinomial(len(codes), np.full(len(codes), 1.0 / len(codes)), size=reps)
            drawn = np.maximum(weights @ counts, 1.0)
            for key, total in sums.items():
                estimates[key].append((weights @ total) / drawn)
        for key, total in sums.items():
            replicates = np.concatenate(estimates[key])
            per_user = total / counts
            rows[key][name] = {"mean": total.sum() / counts.sum(), "low": float(np.quantile(replicates, tail)),
                               "high": float(np.quantile(replicates, 1 - tail)), "samples": int(counts.sum()),
                               "users": len(codes), "share_better": float(np.mean(per_user > 0)),
                               "share_worse": float(np.mean(per_user < 0))}
    return {key: pd.DataFrame.from_dict(r, orient="index") for key, r in rows.items()}


def paired_differences(per_sample: pd.DataFrame, pairs: Dict[str, Tuple[str, str]], users, groups=None,
                       num_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """:func:`paired_bootstrap` for several comparisons on the same samples at once.

    Args:
        per_sample: one column per model (e.g. each sample's seed-mean NDCG@10), rows = the same samples.
        pairs: ``{label: (column_a, column_b)}``; each label gets ``per_sample[a] − per_sample[b]``.
        users, groups, num_boot, seed, level: as in :func:`paired_bootstrap` (the same for every pair, so every
            comparison resamples the same users).

    Returns: the :func:`paired_bootstrap` rows of every pair, indexed by ``(difference, group)``.
    """
    missing = sorted({c for pair in pairs.values() for c in pair} - set(per_sample.columns))
    if missing:
        raise KeyError(f"per_sample has no column(s) {missing} (it has {list(per_sample.columns)})")
    differences = {label: per_sample[a].to_numpy() - per_sample[b].to_numpy() for label, (a, b) in pairs.items()}
    return pd.concat(paired_bootstraps(differences, users, groups, num_boot=num_boot, seed=seed, level=level),
                     names=["difference", "group"])
