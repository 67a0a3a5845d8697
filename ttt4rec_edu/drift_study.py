"""Three TTT4Rec arms on synthetic interest drift (``make_drift_data``): a small experiment grid.

On this data the next item depends on the last item only, so it cannot show what reading the history is
worth; book chapter 11 uses :mod:`ttt4rec_edu.history_study` on users whose history matters instead.

One *run* = one setting of :class:`StudyConfig` and one seed:

1. draw users with :func:`ttt4rec_edu.data.make_drift_data` (the seed picks the data),
2. split them with the paper's protocol (:func:`ttt4rec_edu.data.build_splits`, ``config.split``),
3. train each model of ``config.models`` with :func:`ttt4rec_edu.train.train` (same seed for the weights),
4. evaluate on the test split. TTT4Rec gives **three arms**:

   - ``TTT4Rec``: trained and tested with its inner loop adapting (η_t as learned);
   - ``TTT4Rec, η=0 at test``: the *same trained weights* evaluated with adaptation switched off (``W_t = W0``)
     — a model trained to rely on its inner updates, then denied them: it measures adaptation *and* this
     train/test mismatch together;
   - ``TTT4Rec, fixed W0`` (model name ``ttt4rec-fixed-w0``): a second model with the same parameters,
     trained *and* tested with η = 0 (``TTT4RecConfig(adapt=False)``) — the control without the mismatch.

   ``TTT4Rec − fixed W0`` is what adapting at test time adds to an otherwise identical model trained for it;
   ``fixed W0 − η=0 at test`` is the price of the mismatch.

:func:`run_grid` returns one row per (setting, seed, model variant) in a ``pandas.DataFrame``;
:func:`summarize` turns it into mean, standard deviation and count per group, :func:`arm_differences` pairs the
arms by seed and gives each difference with a Student-t interval over seeds, and :func:`plot_errorbars` draws
the mean with that interval (or ± one standard deviation) across seeds.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from .analysis import mean_interval
from .data import build_splits, make_drift_data
from .metrics import evaluate
from .models import build_model
from .train import TrainConfig, train
from .utils import set_seed

METRICS = ("hr@10", "ndcg@10")
# Row labels of the model variants (the ``variant`` column).
VARIANT_NAMES = {("ttt4rec", True): "TTT4Rec", ("ttt4rec", False): "TTT4Rec, η=0 at test",
                 ("ttt4rec-fixed-w0", False): "TTT4Rec, fixed W0", ("sasrec", None): "SASRec", ("pop", None): "pop"}
# One colour per variant, so a model keeps its colour from plot to plot.
VARIANT_COLORS = {"TTT4Rec": "C0", "TTT4Rec, η=0 at test": "C1", "SASRec": "C2", "pop": "C3",
                  "TTT4Rec, fixed W0": "C4"}
#: The three TTT4Rec arms, in the order the book shows them.
ARMS = ("TTT4Rec", "TTT4Rec, fixed W0", "TTT4Rec, η=0 at test")
#: The paired differences :func:`arm_differences` reports: (name, minuend, subtrahend).
ARM_DIFFERENCES = (("adapt − fixed W0", "TTT4Rec", "TTT4Rec, fixed W0"),
                   ("adapt − η=0 at test", "TTT4Rec", "TTT4Rec, η=0 at test"),
                   ("fixed W0 − η=0 at test", "TTT4Rec, fixed W0", "TTT4Rec, η=0 at test"))


@dataclass(frozen=True)
class StudyConfig:
    """One point of the grid: the data, the protocol, the models and the outer loop. Defaults = quick scale."""

    # data (make_drift_data)
    num_users: int = 200
    num_items: int = 100
    num_topics: int = 5
    min_len: int = 15
    max_len: int = 30                 # longest generated history
    drift: float = 0.15               # probability of a topic switch per step (mode="switch")
    mode: str = "switch"
    transition_strength: float = 0.8
    # protocol
    context: int = 30                 # the models' max context (history truncated to the last `context` items)
    split: str = "3:2:5"
    # TTT4Rec (TTT4RecConfig fields)
    hidden_size: int = 32
    num_heads: int = 2
    ffn_size: int = 128
    mini_batch_size: int = 8          # b
    base_lr: float = 1.0              # base inner learning rate (η_t = base_lr · sigmoid(.) / head_dim)
    # outer loop
    epochs: int = 5
    lr: float = 3e-3
    batch_size: int = 256
    patience: int = 5
    models: Tuple[str, ...] = ("ttt4rec", "ttt4rec-fixed-w0", "sasrec", "pop")

    def replace(self, **changes) -> "StudyConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown StudyConfig fields {unknown}; known: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        if "models" in changes:
            changes["models"] = tuple(changes["models"])
        return dataclasses.replace(self, **changes)


def _model_overrides(name: str, cfg: StudyConfig) -> Dict[str, object]:
    """The size of each model at this setting (SASRec gets the same width and heads as TTT4Rec)."""
    if name in ("ttt4rec", "ttt4rec-fixed-w0"):
        return dict(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, ffn_size=cfg.ffn_size,
                    mini_batch_size=cfg.mini_batch_size, base_lr=cfg.base_lr,
                    **({"adapt": False} if name == "ttt4rec-fixed-w0" else {}))
    if name == "sasrec":
        return dict(hidden_size=cfg.hidden_size, n_heads=cfg.num_heads, inner_size=cfg.ffn_size)
    return {}


def run_one(cfg: StudyConfig, seed: int, device: str = "auto") -> List[Dict[str, object]]:
    """Train and evaluate every model of ``cfg.models`` on the data drawn with ``seed``. Returns rows (dicts)."""
    data = make_drift_data(num_users=cfg.num_users, num_items=cfg.num_items, num_topics=cfg.num_topics,
                           min_len=cfg.min_len, max_len=cfg.max_len, drift=cfg.drift, mode=cfg.mode, seed=seed,
                           transition_strength=cfg.transition_strength)
    splits = build_splits(data, max_len=cfg.context, split=cfg.split)
    train_config = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, patience=cfg.patience,
                               ks=(10,), progress=False, seed=seed, device=device)
    rows = []
    for name in cfg.models:
        set_seed(seed)  # the control starts from the same initial weights as the adapting model
        registry_name = "ttt4rec" if name == "ttt4rec-fixed-w0" else name
        model = build_model(registry_name, splits.num_items, splits.max_len, **_model_overrides(name, cfg))
        start = time.perf_counter()
        result = train(model, splits, train_config)
        history = result["history"]
        common = {"seed": seed, "model": name, "train_loss": history[-1]["loss"] if history else float("nan"),
                  "best_epoch": result["best_epoch"], "test_samples": len(splits.test)}
        if name == "ttt4rec":
            # τ_b, the scale of the last token of a mini-batch: 0 means the carried state is the chunk start
            # again (every chunk restarts from the same weights); the smallest over the blocks is reported.
            tau_b = min(float(layer.token_scale().detach()[-1]) for layer in model.ttt_layers())
            on = result["test"]
            model.set_adapt_at_test(False)        # same weights, inner step η = 0: W_t = W0 at every position
            try:
                off = evaluate(model, splits.test, ks=(10,), batch_size=train_config.eval_batch_size,
                               device=next(model.parameters()).device)
            finally:
                model.set_adapt_at_test(True)
            seconds = time.perf_counter() - start
            for adapt, metrics in ((True, on), (False, off)):
                rows.append({**common, "adapt": adapt, "variant": VARIANT_NAMES[(name, adapt)], "tau_b": tau_b,
                             "time_s": seconds, **{m: float(metrics[m]) for m in METRICS}})
        elif name == "ttt4rec-fixed-w0":  # trained and tested with η = 0: τ plays no part
            rows.append({**common, "adapt": False, "variant": VARIANT_NAMES[(name, False)],
                         "tau_b": float("nan"), "time_s": time.perf_counter() - start,
                         **{m: float(result["test"][m]) for m in METRICS}})
        else:
            rows.append({**common, "adapt": None, "variant": VARIANT_NAMES.get((name, None), name),
                         "tau_b": float("nan"), "time_s": time.perf_counter() - start,
                         **{m: float(result["test"][m]) for m in METRICS}})
    return rows


def run_grid(settings: Sequence[Mapping[str, object]], seeds: Iterable[int], base: Optional[StudyConfig] = None,
             cache: Optional[dict] = None, device: str = "auto", verbose: bool = False) -> pd.DataFrame:
    """Run every setting (a dict of :class:`StudyConfig` changes) with every seed.

    Returns one row per (setting, seed, model variant) with the setting's values (one column per key that any
    setting changes), ``seed``, ``model``, ``adapt`` (True/False for the TTT4Rec arms, None otherwise),
    ``variant`` (a readable label, :data:`VARIANT_NAMES`), ``hr@10``, ``ndcg@10``, ``train_loss`` (last epoch),
    ``best_epoch``, ``tau_b`` (TTT4Rec), ``test_samples`` and ``time_s``. The ``TTT4Rec`` and ``η=0 at test`` rows
    of a run come from the same trained model; the ``fixed W0`` row from a second one trained with η = 0.

    ``cache``: a dict shared between calls; a (config, seed, model) already run is not trained again — the
    chapter's experiments share their default point this way.
    """
    base = StudyConfig() if base is None else base
    seeds = list(seeds)
    settings = [dict(s) for s in settings]
    if not settings or not seeds:
        raise ValueError("run_grid needs at least one setting and one seed")
    keys = list(dict.fromkeys(k for s in settings for k in s))
    rows = []
    for setting in settings:
        cfg = base.replace(**setting)
        for seed in seeds:
            run_rows = []
            for name in cfg.models:   # cached per model: experiments with other model lists share runs
                key = (cfg.replace(models=()), int(seed), str(device), name)
                if cache is not None and key in cache:
                    model_rows = cache[key]
                else:
                    model_rows = run_one(cfg.replace(models=(name,)), int(seed), device=device)
                    if cache is not None:
                        cache[key] = model_rows
                run_rows += model_rows
            if verbose:
                shown = ", ".join(f"{k}={getattr(cfg, k)}" for k in keys)
                print(f"{shown}, seed {seed}: " + "; ".join(
                    f"{r['variant']} NDCG@10 {r['ndcg@10']:.3f}" for r in run_rows), flush=True)
            for row in run_rows:
                rows.append({**{k: getattr(cfg, k) for k in keys}, **row})
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof = 1; NaN for a single run) and count of ``metrics`` per group.

    Returns a frame indexed by ``by`` with columns ``"<metric> mean"``, ``"<metric> std"`` and ``"n"``.
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in list(by) + list(metrics) if c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in the frame (it has {list(df.columns)})")
    grouped = df.groupby(by, sort=True, dropna=False)
    out = pd.DataFrame(index=grouped.size().index)
    for m in metrics:
        out[f"{m} mean"] = grouped[m].mean()
        out[f"{m} std"] = grouped[m].std(ddof=1)
    out["n"] = grouped.size()
    return out


def plot_errorbars(df: pd.DataFrame, x: str, metric: str = "ndcg@10", hue: str = "variant", ax=None,
                   title: Optional[str] = None, logx: bool = False, bars: str = "t95"):
    """Mean over seeds of ``metric`` against ``x``, one line per ``hue`` value, with error bars:
    ``bars="t95"`` (default) a 95% Student-t interval of the mean over seeds (:func:`mean_interval`; none for a
    single seed), ``"std"`` ± one sample standard deviation.

    Returns the matplotlib Figure.
    """
    if bars not in ("t95", "std"):
        raise ValueError(f"bars must be 't95' or 'std', got {bars!r}")
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
    else:
        fig = ax.figure
    summary = summarize(df, [hue, x], metrics=[metric]).reset_index()
    if bars == "t95":
        half = {}
        for key, part in df.groupby([hue, x], sort=True):
            _, low, high = mean_interval(part[metric].to_numpy())
            half[key] = (high - low) / 2
        summary["bar"] = [half[(h, v)] for h, v in zip(summary[hue], summary[x])]
    else:
        summary["bar"] = summary[f"{metric} std"]
    for label, part in summary.groupby(hue, sort=False):
        part = part.sort_values(x)
        ax.errorbar(part[x], part[f"{metric} mean"], yerr=part["bar"].fillna(0.0), marker="o",
                    capsize=3, label=str(label), alpha=0.9, color=VARIANT_COLORS.get(label))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"test {metric.upper()}" + (" (95% CI)" if bars == "t95" else " (± std)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def adaptation_gain(df: pd.DataFrame, by: Sequence[str], metric: str = "ndcg@10") -> pd.DataFrame:
    """Per run, TTT4Rec with adaptation minus the same model with η = 0 at test; then mean/std/n per ``by``.

    Pairing by run (same setting, same seed, same weights) removes the seed-to-seed spread that both share.
    """
    by = [by] if isinstance(by, str) else list(by)
    ttt = df[df["model"] == "ttt4rec"]
    keys = by + ["seed"]
    on = ttt[ttt["adapt"] == True].set_index(keys)[metric]    # noqa: E712 (object column)
    off = ttt[ttt["adapt"] == False].set_index(keys)[metric]  # noqa: E712
    gain = (on - off).rename("gain").reset_index()
    return summarize(gain, by, metrics=["gain"])


def arm_differences(df: pd.DataFrame, by: Sequence[str], metric: str = "ndcg@10",
                    level: float = 0.95) -> pd.DataFrame:
    """The three TTT4Rec arms paired by run (same setting, same seed, same data), per ``by`` group.

    For each difference of :data:`ARM_DIFFERENCES` (``adapt − fixed W0``, ``adapt − η=0 at test``,
    ``fixed W0 − η=0 at test``): the mean over seeds of the per-seed difference, a Student-t interval of that
    mean (``level``, :func:`ttt4rec_edu.analysis.mean_interval`), ``n`` (seeds) and ``positive`` (seeds with a
    difference > 0). Rows indexed by ``by`` + ``difference``. Only runs that have both arms are paired.
    """
    by = [by] if isinstance(by, str) else list(by)
    keys = by + ["seed"]
    wide = df[df["variant"].isin(ARMS)].pivot_table(index=keys, columns="variant", values=metric,
                                                     aggfunc="first")
    rows = []
    for name, left, right in ARM_DIFFERENCES:
        if left not in wide or right not in wide:
            continue
        diff = (wide[left] - wide[right]).dropna().rename("_paired").reset_index()
        for group, part in diff.groupby(by, sort=True):
            mean, low, high = mean_interval(part["_paired"].to_numpy(), level=level)
            group = group if isinstance(group, tuple) else (group,)
            rows.append({**dict(zip(by, group)), "difference": name, "mean": mean, "low": low, "high": high,
                         "n": len(part), "positive": int((part["_paired"] > 0).sum())})
    if not rows:
        raise ValueError("no run has two TTT4Rec arms to pair: include 'ttt4rec' and 'ttt4rec-fixed-w0' "
                         "in StudyConfig.models")
    return pd.DataFrame(rows).set_index(by + ["difference"])


__all__ = ["StudyConfig", "METRICS", "VARIANT_NAMES", "VARIANT_COLORS", "ARMS", "ARM_DIFFERENCES", "run_one",
           "run_grid", "summarize", "plot_errorbars", "adaptation_gain", "arm_differences"]
