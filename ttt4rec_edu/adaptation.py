"""Does adapting at test time help? TTT4Rec's three arms, read from finished runs (chapter 9, the README).

The question needs three arms of the same model (chapter 11, section 11.1 derives them):

- **adapting**: TTT4Rec as the paper trains and tests it (the inner loop runs with its learned η);
- **fixed W0**: the same parameters trained *and* tested with η = 0 (``--adapt off``): the control;
- **η = 0 at test**: the adapting model with its loop switched off at test only. It measures the value of
  adapting *plus* the train/test mismatch (the rest of the network learned to expect the inner updates).

Two comparisons, always on the same test samples and for all four metrics (HR@10, HR@50, NDCG@10, NDCG@50):

1. **Per sample, users resampled** (:func:`arm_differences`): each sample's metric is averaged over an arm's
   seeds, the difference of two arms is taken per sample, and the 95% interval resamples *users* with all their
   samples (``ttt4rec_edu.analysis.paired_bootstrap``) — overall and by a grouping (history length, test step).
   It holds the trained models fixed: it is about the test users.
2. **Over seeds** (:func:`seed_differences`): how much a retrained model would move. Independently trained arms
   (adapting and fixed W0) are compared with Welch's interval; an arm *derived* from the adapting run's weights
   (η = 0 at test under the official recipe, ``ttt4rec_edu.reevaluate``) is paired seed by seed. Fewer than two
   seeds give no interval, and :func:`verdict` says so rather than guessing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .analysis import (load_test_ranks, mean_interval, metric_by_group, paired_bootstraps, seed_mean_metric,
                       welch_interval)
from .experiments import (METRICS, Experiment, collect_results, display_name, run_dir, select,
                          table_experiments)
from .train import METRICS_NAME

ARM_NAMES = ("adapting", "fixed W0", "η = 0 at test")
PAIRS: Dict[str, Tuple[str, str]] = {
    "adapt − fixed W0": ("adapting", "fixed W0"),
    "adapt − η = 0 at test": ("adapting", "η = 0 at test"),
}

__all__ = ["ARM_NAMES", "PAIRS", "arm_experiments", "finished_seeds", "is_derived", "finished_arms",
           "arm_differences", "seed_differences", "seed_comparison", "seed_differences_by_group", "verdict",
           "comparison_table", "comparison_arms", "versus_arms", "reading", "markdown", "interval_cell"]


def arm_experiments(split: str, table: str = "beauty", backbone: str = "transformer",
                    inner: str = "mlp") -> Dict[str, Experiment]:
    """The three arms of one table's TTT4Rec cell, by arm name (:data:`ARM_NAMES`)."""
    cell = [e for e in select(table_experiments(table), models=["ttt4rec"], splits=[split])
            if (e.backbone or "transformer") == backbone and (e.inner or "mlp") == inner]
    arms = {}
    for e in cell:
        name = "fixed W0" if not e.adapt else ("adapting" if e.adapt_at_test else "η = 0 at test")
        arms[name] = e
    missing = set(ARM_NAMES) - set(arms)
    if missing:
        raise ValueError(f"table {table!r} has no {sorted(missing)} arm(s) of TTT4Rec {backbone}-{inner} at {split}")
    return {name: arms[name] for name in ARM_NAMES}


def finished_seeds(out, experiment: Experiment, seeds: Sequence[int] = (0, 1, 2)) -> list:
    """The seeds among ``seeds`` whose run of ``experiment`` is finished under ``out``."""
    from .runner import is_finished

    return [s for s in seeds if is_finished(run_dir(Path(out), experiment, s))]


def is_derived(out, experiment: Experiment, seed: int) -> bool:
    """Whether a finished run was derived from another run's weights (``ttt4rec_edu.reevaluate``)."""
    metrics = json.loads((run_dir(Path(out), experiment, seed) / METRICS_NAME).read_text())
    return "derived_from" in metrics


def finished_arms(out, arms: Mapping[str, Experiment],
                  seeds: Sequence[int] = (0, 1, 2)) -> Tuple[Dict[str, list], Dict[str, bool]]:
    """``(seeds_of, derived)``: each arm's finished seeds under ``out``, and whether all of an arm's runs were
    derived from the adapting run's weights (:func:`is_derived`); what the comparisons below take."""
    seeds_of = {name: finished_seeds(out, e, seeds) for name, e in arms.items()}
    derived = {name: bool(s) and all(is_derived(out, arms[name], k) for k in s) for name, s in seeds_of.items()}
    return seeds_of, derived


def arm_differences(out, arms: Mapping[str, Experiment], seeds: Mapping[str, Sequence[int]],
                    samples: pd.DataFrame, groups: Optional[Mapping[str, object]] = None,
                    metrics: Sequence[str] = METRICS, pairs: Mapping[str, Tuple[str, str]] = PAIRS,
                    num_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired per-sample differences of the arms with user-bootstrap 95% intervals.

    Args:
        out: the results folder; ``arms``: arm name → experiment; ``seeds``: arm name → its finished seeds.
        samples: the test split's ``analysis.sample_table`` (its ``user`` column is what the bootstrap resamples).
        groups: axis name → one label per sample (e.g. ``{"earlier items": length_buckets(...)}``); every axis
            also gets its ``"all"`` row. ``None``: the ``"all"`` row alone (axis ``"all"``).
        pairs: label → (arm a, arm b); a pair with an arm that has no seeds is left out.

    Returns: one row per (metric, difference, axis, group) with ``mean``, ``low``, ``high``, ``users``,
    ``samples``, ``share_better``, ``share_worse``.
    """
    usable = {k: v for k, v in pairs.items() if all(len(seeds.get(a, ())) for a in v)}
    if not usable:
        return pd.DataFrame(columns=["metric", "difference", "axis", "group", "mean", "low", "high"])
    axes = dict(groups) if groups else {"all": None}
    differences = {}
    for metric in metrics:
        per_sample = {name: seed_mean_metric(out, arms[name], seeds[name], len(samples), metric)
                      for name in {a for pair in usable.values() for a in pair}}
        differences.update({(metric, label): per_sample[a] - per_sample[b] for label, (a, b) in usable.items()})
    # one bootstrap per axis for every (metric, pair): the same users drawn once, not once per pair and metric
    by_axis = {axis: paired_bootstraps(differences, samples["user"].to_numpy(), labels, num_boot=num_boot, seed=seed)
               for axis, labels in axes.items()}
    frames = []
    for metric in metrics:
        for axis in axes:
            table = pd.concat({label: by_axis[axis][metric, label] for label in usable}, names=["difference", "group"])
            frames.append(table.reset_index().assign(metric=metric, axis=axis))
    result = pd.concat(frames, ignore_index=True)
    columns = ["metric", "difference", "axis", "group"]
    return result[columns + [c for c in result.columns if c not in columns]]


def seed_differences(results: pd.DataFrame, derived: Mapping[str, bool],
                     metrics: Sequence[str] = METRICS,
                     pairs: Mapping[str, Tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """Each pair's difference of test metrics over seeds, with a 95% interval where there is one.

    Args:
        results: one row per finished run with an ``arm`` column (arm name), ``seed`` and the metrics.
        derived: arm name → whether its runs are derived from the adapting run's weights (then paired by seed).

    Returns: one row per (difference, metric) with ``mean``, ``low``, ``high``, ``method`` (``Welch``,
    ``paired by seed``) and the seeds of each side; ``low``/``high`` are NaN when a side has fewer than two
    seeds (the method then says why).
    """
    rows = []
    for label, (a, b) in pairs.items():
        runs_a = results[results["arm"] == a].set_index("seed")
        runs_b = results[results["arm"] == b].set_index("seed")
        for metric in metrics:
            row = {"difference": label, "metric": metric, "seeds": f"{len(runs_a)}/{len(runs_b)}"}
            if not len(runs_a) or not len(runs_b):
                rows.append({**row, "mean": math.nan, "low": math.nan, "high": math.nan, "method": "no runs"})
                continue
            if derived.get(b) or derived.get(a):
                common = sorted(set(runs_a.index) & set(runs_b.index))
                diffs = runs_a.loc[common, metric].to_numpy() - runs_b.loc[common, metric].to_numpy()
                mean, low, high = mean_interval(diffs)
                method = "paired by seed" if len(common) > 1 else "one seed: no interval"
            elif len(runs_a) > 1 and len(runs_b) > 1:
                mean, low, high = welch_interval(runs_a[metric], runs_b[metric])
                method = "Welch"
            else:
                mean, low, high = float(runs_a[metric].mean() - runs_b[metric].mean()), math.nan, math.nan
                method = "one seed: no interval"
            rows.append({**row, "mean": mean, "low": low, "high": high, "method": method})
    return pd.DataFrame(rows)


def seed_comparison(out, arms: Mapping[str, Experiment], derived: Mapping[str, bool],
                    seeds: Sequence[int] = (0, 1, 2),
                    pairs: Mapping[str, Tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """:func:`seed_differences` of the finished runs of ``arms`` under ``out``: their recorded test metrics only,
    so no dataset is needed. ``derived``: as :func:`finished_arms` returns it."""
    runs = collect_results(out, list(arms.values()), list(seeds))
    names = {e.run_key: name for name, e in arms.items()}
    return seed_differences(runs.assign(arm=runs["run_key"].map(names)), derived, pairs=pairs)


def seed_differences_by_group(out, arms: Mapping[str, Experiment], seeds: Mapping[str, Sequence[int]],
                              derived: Mapping[str, bool], samples: pd.DataFrame, groups: Mapping[str, object],
                              metrics: Sequence[str] = METRICS,
                              pairs: Mapping[str, Tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """:func:`seed_differences` within each group: every run's metric is its mean over the group's test samples
    (from the run's saved ranks), and the pairs are compared over seeds as overall (Welch for separately trained
    arms, paired by seed for a derived one). ``groups``: axis name → one label per test sample, as for
    :func:`arm_differences`. Returns :func:`seed_differences`' rows with ``axis`` and ``group`` columns."""
    ranks = {(name, s): load_test_ranks(out, experiment, s, expected_samples=len(samples))
             for name, experiment in arms.items() for s in seeds.get(name, ())}
    if not (ranks and groups):
        return pd.DataFrame(columns=["metric", "difference", "axis", "group", "mean", "low", "high", "method"])
    frames = []
    for axis, labels in groups.items():
        per_run = [pd.DataFrame({m: metric_by_group(r, labels, m)[m] for m in metrics})
                   .rename_axis("group").reset_index().assign(arm=name, seed=s)
                   for (name, s), r in ranks.items()]
        runs = pd.concat(per_run, ignore_index=True)
        for group, part in runs.groupby("group", observed=True, sort=True):
            frames.append(seed_differences(part, derived, metrics, pairs).assign(axis=axis, group=group))
    result = pd.concat(frames, ignore_index=True)
    columns = ["metric", "difference", "axis", "group"]
    return result[columns + [c for c in result.columns if c not in columns]]


def verdict(low: float, high: float) -> str:
    """What an interval of "adapting − other" says, in words: ``better``/``worse`` when it excludes 0,
    ``cannot tell`` when it contains 0, ``no interval`` when there is none (one seed)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "cannot tell"


def comparison_table(out, split: str = "3:2:5", data_source: str = "amazon-beauty", seeds: Sequence[int] = (0, 1, 2),
                     num_boot: int = 1000, offline: bool = True, samples: Optional[pd.DataFrame] = None,
                     versus: Optional[str] = None) -> pd.DataFrame:
    """The overall comparison of a results folder, one row per (difference, metric): users resampled and over
    seeds, each with its :func:`verdict` (what chapter 9 section 9.7 and the README show). ``samples``: the test
    split's ``analysis.sample_table`` when the caller has it (else it is rebuilt from ``data_source``).
    ``versus``: the arms and pairs of :func:`comparison_arms` (TTT4Rec's arms, or TTT4Rec and its control
    against that model); its subject names the verdict columns (``users: adapting is``, ``seeds: adapting is``)."""
    from .analysis import sample_table
    from .data.registry import DataRequest, get_dataset_info

    arms, pairs, subject = comparison_arms(split, versus)
    seeds_of, derived = finished_arms(out, arms, seeds)
    if samples is None:
        request = DataRequest(data_source, split, get_dataset_info(data_source).max_len, offline=offline)
        samples = sample_table(request.load()[1].test)
    users = arm_differences(out, arms, seeds_of, samples, pairs=pairs, num_boot=num_boot)
    over_seeds = seed_comparison(out, arms, derived, seeds, pairs)
    rows = []
    for _, d in over_seeds.iterrows():
        u = users[(users["metric"] == d["metric"]) & (users["difference"] == d["difference"])]
        u = u.iloc[0] if len(u) else pd.Series({"mean": math.nan, "low": math.nan, "high": math.nan})
        rows.append({"difference": d["difference"], "metric": d["metric"].upper(),
                     "users resampled (95%)": interval_cell(u["mean"], u["low"], u["high"]),
                     f"users: {subject} is": verdict(u["low"], u["high"]) if np.isfinite(u["mean"]) else "no runs",
                     "over seeds (95%)": interval_cell(d["mean"], d["low"], d["high"]), "seeds": d["seeds"],
                     "method": d["method"], f"seeds: {subject} is": verdict(d["low"], d["high"])})
    return pd.DataFrame(rows)


def versus_arms(split: str, baseline: str = "sasrec",
                table: str = "beauty") -> Tuple[Dict[str, Experiment], Dict[str, Tuple[str, str]]]:
    """``(arms, pairs)`` that set TTT4Rec (adapting) and its fixed-W0 control against a baseline model of the same
    table and split (:func:`comparison_arms` with ``versus=baseline``): the pairs are
    ``"TTT4Rec − <baseline>"`` and ``"fixed W0 − <baseline>"``, the baseline named as the results name it."""
    ttt = arm_experiments(split, table)
    found = select(table_experiments(table), models=[baseline], splits=[split])
    if len(found) != 1:
        raise ValueError(f"table {table!r} has {len(found)} runs of model {baseline!r} at {split}, not one")
    name = display_name(found[0])
    arms = {"TTT4Rec": ttt["adapting"], "fixed W0": ttt["fixed W0"], name: found[0]}
    return arms, {f"TTT4Rec − {name}": ("TTT4Rec", name), f"fixed W0 − {name}": ("fixed W0", name)}


def comparison_arms(split: str, versus: Optional[str] = None,
                    table: str = "beauty") -> Tuple[Dict[str, Experiment], Dict[str, Tuple[str, str]], str]:
    """``(arms, pairs, subject)`` of a comparison: TTT4Rec's arms against each other (``versus=None``: :data:`PAIRS`,
    said of "adapting"), or TTT4Rec and its control against the model ``versus`` (:func:`versus_arms`, said of
    "the first" of each pair)."""
    if versus is None:
        return arm_experiments(split, table), dict(PAIRS), "adapting"
    return (*versus_arms(split, versus, table), "the first")


# each verdict as the words before its metrics, in the order a reading lists them ({} is the table's subject)
VERDICT_WORDS = {"better": "{} is better on", "worse": "{} is worse on",
                 "cannot tell": "cannot tell on", "no interval": "no interval (under two seeds) on",
                 "no runs": "no runs for"}


def reading(table: pd.DataFrame) -> list:
    """:func:`comparison_table` in plain words, one sentence per (difference, kind of interval), e.g.
    ``adapt − fixed W0, users resampled: adapting is better on HR@50; adapting is worse on HR@10, NDCG@10,
    NDCG@50.`` The verdicts are the table's own, so the words cannot say more than the intervals do."""
    users_column = next(c for c in table.columns if c.startswith("users: ") and c.endswith(" is"))
    subject = users_column[len("users: "):-len(" is")]
    sentences = []
    for difference, rows in table.groupby("difference", sort=False):
        seeds = ", ".join(sorted(set(map(str, rows["seeds"]))))  # "adapting/other", e.g. "3/3"
        methods = sorted(m for m in set(map(str, rows["method"])) if m in ("Welch", "paired by seed"))
        over = f"over seeds ({', '.join([seeds] + methods)})"  # "one seed" / "no runs" say it in the verdicts
        for label, column in (("users resampled", users_column), (over, f"seeds: {subject} is")):
            by_verdict = rows.groupby(column, sort=False)["metric"].apply(list)
            parts = [f"{words.format(subject)} {', '.join(by_verdict[v])}"
                     for v, words in VERDICT_WORDS.items() if v in by_verdict]
            sentences.append(f"{difference}, {label}: " + "; ".join(parts) + ".")
    return sentences


def markdown(table: pd.DataFrame) -> str:
    """A frame as a Markdown table (no extra dependency)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def interval_cell(mean: float, low: float, high: float) -> str:
    """A difference as the tables print it: ``+0.0021 [+0.0010, +0.0031]``; ``(no interval)`` under two seeds,
    ``—`` when there is no difference at all (no runs)."""
    if not np.isfinite(mean):
        return "—"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:+.4f} (no interval)"
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def main(argv=None) -> int:
    """``python -m ttt4rec_edu.adaptation RESULTS [--split 3:2:5] [--versus MODEL]``: the comparison as a
    Markdown table, then its :func:`reading` in words. With ``--versus sasrec``: TTT4Rec and its fixed-W0 control
    against that model (:func:`versus_arms`) instead of TTT4Rec's arms against each other."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ttt4rec_edu.adaptation", description=main.__doc__)
    parser.add_argument("results", type=Path, help="a results folder (e.g. book/results/converged)")
    parser.add_argument("--split", default="3:2:5")
    parser.add_argument("--data", default="amazon-beauty", help="the dataset the runs were trained on")
    parser.add_argument("--versus", metavar="MODEL", help="compare TTT4Rec and its control with this model")
    args = parser.parse_args(argv)
    try:
        if not (args.results / "runs").is_dir():
            raise ValueError(f"{args.results} has no runs/ folder: not a results folder")
        table = comparison_table(args.results, args.split, args.data, versus=args.versus)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(table))
    print()
    print("\n".join(f"- {sentence}" for sentence in reading(table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
