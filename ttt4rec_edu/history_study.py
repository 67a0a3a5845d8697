"""When does reading the history help? Every arm against the oracle, on users whose history matters (chapter 11).

One *run* = one setting of :class:`WorldConfig` and one seed: draw users with
:func:`ttt4rec_edu.data.make_history_data` (the seed picks the data and the initial weights), split them with the
paper's protocol, train the models, and score every arm on the same test samples:

- ``TTT4Rec`` (adapting), ``TTT4Rec, η=0 at test`` (the same weights, inner step switched off at test: the
  train/test *mismatch*, not a measure of adaptation) and ``TTT4Rec, fixed W0`` (trained and tested with η = 0,
  the control: it reads the last item and its position modulo the mini-batch size ``b``);
- ``SASRec`` (attention over the whole context, same width);
- two counting heuristics, nothing trained: ``recent items`` (the user's own items in the context, most recent
  first; :class:`RecentItems`) and ``last-item counts`` (how often each item followed the last item in training;
  :class:`LastItemCounts`, an estimate of the best last-item predictor);
- ``oracle``: the generator's own next-item distribution (:func:`ttt4rec_edu.data.oracle_ranks`), the best any
  arm can do on average.

:func:`run_grid` returns one row per (setting, seed, arm) with HR@10, NDCG@10 and NDCG@10 by steps since the
latest taste switch (``after 0`` ... ``after 8+``); :func:`paired_differences` pairs two arms by seed and gives
the mean difference with a 95% Student-t interval over seeds.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from .analysis import mean_interval
from .data import build_splits, make_history_data, oracle_ranks, steps_since_switch
from .metrics import compute_ranks, per_sample_hits_gains
from .models import build_model
from .train import TrainConfig, train
from .utils import set_seed

#: The arms, in the order the book shows them.
ARMS = ("oracle", "TTT4Rec", "TTT4Rec, fixed W0", "TTT4Rec, η=0 at test", "SASRec", "recent items",
        "last-item counts")
#: Steps since the latest taste switch, as (label, first, last) buckets (last None: no upper end).
AFTER_SWITCH = (("after 0", 0, 0), ("after 1", 1, 1), ("after 2-3", 2, 3), ("after 4-7", 4, 7),
                ("after 8+", 8, None))
WORLD_FIELDS = ("repeat", "taste", "taste_drift", "drift_mode", "markov")


@dataclass(frozen=True)
class WorldConfig:
    """One point of the grid: the world's knobs, its size, the protocol, the models and the outer loop."""

    repeat: float = 0.0               # ρ: share of steps that return to an item of the user's own history
    taste: float = 0.0                # strength of the persistent personal taste inside a topic
    taste_drift: float = 0.0          # δ: rate at which the taste changes
    drift_mode: str = "switch"        # "switch" (sudden) or "gradual"
    markov: float = 0.5               # probability of following the last item's preferred successor
    topic_switch: float = 0.1
    num_users: int = 250
    num_items: int = 200
    num_topics: int = 10
    min_len: int = 20
    max_len: int = 30
    context: int = 20                 # the models see the last `context` items
    split: str = "3:2:5"
    hidden_size: int = 32
    num_heads: int = 2
    ffn_size: int = 128
    mini_batch_size: int = 8          # b
    epochs: int = 8
    lr: float = 3e-3
    batch_size: int = 256
    patience: int = 5

    def replace(self, **changes) -> "WorldConfig":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown WorldConfig fields {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def data(self, seed: int):
        return make_history_data(num_users=self.num_users, num_items=self.num_items, num_topics=self.num_topics,
                                 min_len=self.min_len, max_len=self.max_len, repeat=self.repeat,
                                 taste=self.taste, taste_drift=self.taste_drift, drift_mode=self.drift_mode,
                                 markov=self.markov, topic_switch=self.topic_switch, seed=seed)


class _CountingRanker(nn.Module):
    """A scorer with no trained weights: popularity of the training targets breaks its ties (a value in
    [0, 1), below every integer score)."""

    def __init__(self, num_items: int):
        super().__init__()
        self.num_items = int(num_items)
        self.register_buffer("popularity", torch.zeros(num_items + 1))

    def fit(self, samples) -> "_CountingRanker":
        item_seq, lengths, targets = samples.batch()
        counts = torch.bincount(targets, minlength=self.num_items + 1).float()
        self.popularity.copy_(counts / (counts.max() + 1))
        return self


class RecentItems(_CountingRanker):
    """``recent items``: the user's own items in the context rank first, the most recent highest; then
    popularity."""

    def score_all(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        position = torch.arange(1, item_seq.shape[1] + 1, device=item_seq.device).expand_as(item_seq)
        position = torch.where(position <= lengths[:, None], position, torch.zeros_like(position)).float()
        scores = torch.zeros(item_seq.shape[0], self.num_items + 1, device=item_seq.device)
        scores.scatter_reduce_(1, item_seq, position, reduce="amax")
        scores = scores + self.popularity
        scores[:, 0] = float("-inf")
        return scores


class LastItemCounts(_CountingRanker):
    """``last-item counts``: how often each item followed the input's last item among the training samples;
    then popularity. It reads nothing but the last item."""

    def fit(self, samples) -> "LastItemCounts":
        super().fit(samples)
        item_seq, lengths, targets = samples.batch()
        last = item_seq[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)]
        counts = torch.zeros(self.num_items + 1, self.num_items + 1)
        counts.index_put_((last, targets), torch.ones(len(targets)), accumulate=True)
        self.register_buffer("counts", counts)
        return self

    def score_all(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = item_seq[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)]
        scores = self.counts[last] + self.popularity
        scores[:, 0] = float("-inf")
        return scores


def _model_overrides(name: str, cfg: WorldConfig) -> Dict[str, object]:
    if name == "sasrec":
        return dict(hidden_size=cfg.hidden_size, n_heads=cfg.num_heads, inner_size=cfg.ffn_size)
    return dict(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, ffn_size=cfg.ffn_size,
                mini_batch_size=cfg.mini_batch_size, **({"adapt": False} if name == "ttt4rec-fixed-w0" else {}))


def _scores(ranks, ties, after: np.ndarray) -> Dict[str, float]:
    hit, gain = per_sample_hits_gains(torch.as_tensor(ranks), 10, torch.as_tensor(ties), "average")
    out = {"hr@10": float(hit.mean()), "ndcg@10": float(gain.mean())}
    gain = gain.numpy()
    for label, first, last in AFTER_SWITCH:
        mask = (after >= first) & (after <= (last if last is not None else np.inf))
        out[label] = float(gain[mask].mean()) if mask.any() else float("nan")
    return out


def run_one(cfg: WorldConfig, seed: int, device: str = "cpu",
            trained: Sequence[str] = ("ttt4rec", "ttt4rec-fixed-w0", "sasrec")) -> List[Dict[str, object]]:
    """Every arm of the module docstring on the data drawn with ``seed`` (``trained``: which trained models
    to include). Returns one row (a dict) per arm."""
    data = cfg.data(seed)
    splits = build_splits(data, max_len=cfg.context, split=cfg.split)
    test = splits.test
    after = steps_since_switch(data, test)
    rows = [{"arm": "oracle", **_scores(*oracle_ranks(data, test), after)}]
    for arm, ranker in (("recent items", RecentItems), ("last-item counts", LastItemCounts)):
        model = ranker(splits.num_items).fit(splits.train)
        rows.append({"arm": arm, **_scores(*compute_ranks(model, test, with_ties=True), after)})
    config = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, patience=cfg.patience,
                         ks=(10,), progress=False, seed=seed, device=device)
    labels = {"ttt4rec": "TTT4Rec", "ttt4rec-fixed-w0": "TTT4Rec, fixed W0", "sasrec": "SASRec"}
    for name in trained:
        set_seed(seed)  # every trained arm starts from the same seed
        model = build_model("sasrec" if name == "sasrec" else "ttt4rec", splits.num_items, splits.max_len,
                            **_model_overrides(name, cfg))
        start = time.perf_counter()
        result = train(model, splits, config)
        extra = {"best_epoch": result["best_epoch"], "time_s": time.perf_counter() - start}
        rows.append({"arm": labels[name], **_scores(*compute_ranks(model, test, with_ties=True), after), **extra})
        if name == "ttt4rec":
            model.set_adapt_at_test(False)
            try:
                rows.append({"arm": "TTT4Rec, η=0 at test",
                             **_scores(*compute_ranks(model, test, with_ties=True), after), **extra})
            finally:
                model.set_adapt_at_test(True)
    for row in rows:
        row.update(seed=int(seed), test_samples=len(test))
    return rows


def run_grid(settings: Sequence[Mapping[str, object]], seeds: Iterable[int], base: Optional[WorldConfig] = None,
             device: str = "cpu", trained: Sequence[str] = ("ttt4rec", "ttt4rec-fixed-w0", "sasrec"),
             verbose: bool = False) -> pd.DataFrame:
    """Every setting (a dict of :class:`WorldConfig` changes) with every seed: one row per (setting, seed,
    arm), with the world's knobs (:data:`WORLD_FIELDS`) as columns."""
    base = WorldConfig() if base is None else base
    seeds = list(seeds)
    if not settings or not seeds:
        raise ValueError("run_grid needs at least one setting and one seed")
    rows = []
    for setting in settings:
        cfg = base.replace(**dict(setting))
        for seed in seeds:
            start = time.perf_counter()
            run = run_one(cfg, seed, device=device, trained=trained)
            if verbose:
                shown = ", ".join(f"{k}={getattr(cfg, k)}" for k in WORLD_FIELDS)
                print(f"{shown}, seed {seed} ({time.perf_counter() - start:.0f} s): "
                      + "; ".join(f"{r['arm']} {r['ndcg@10']:.3f}" for r in run), flush=True)
            rows += [{**{k: getattr(cfg, k) for k in WORLD_FIELDS}, **row} for row in run]
    return pd.DataFrame(rows)


def paired_differences(df: pd.DataFrame, pairs: Sequence[Tuple[str, str]], by: Sequence[str] = WORLD_FIELDS,
                       metric: str = "ndcg@10", level: float = 0.95) -> pd.DataFrame:
    """For each ``(left, right)`` pair of arms: per seed ``metric(left) - metric(right)`` within a setting, then
    the mean over seeds with its Student-t interval (``level``), ``n`` seeds and ``positive`` (seeds above 0).

    Rows indexed by ``by`` + ``difference`` (``"left − right"``)."""
    by = list(by)
    wide = df.pivot_table(index=by + ["seed"], columns="arm", values=metric, aggfunc="first")
    rows = []
    for left, right in pairs:
        if left not in wide or right not in wide:
            raise KeyError(f"arms {left!r} and {right!r} are not both in the frame")
        diff = (wide[left] - wide[right]).dropna().rename("_d").reset_index()
        for group, part in diff.groupby(by, sort=True):
            mean, low, high = mean_interval(part["_d"].to_numpy(), level=level)
            group = group if isinstance(group, tuple) else (group,)
            rows.append({**dict(zip(by, group)), "difference": f"{left} − {right}", "mean": mean, "low": low,
                         "high": high, "n": len(part), "positive": int((part["_d"] > 0).sum())})
    return pd.DataFrame(rows).set_index(by + ["difference"])


#: The committed grid (book/results/synthetic/): each setting changes :class:`WorldConfig`'s defaults.
FULL_SETTINGS = ({"repeat": 0.0}, {"repeat": 0.2}, {"repeat": 0.4}, {"repeat": 0.6}, {"taste": 0.9},
                 {"taste": 0.9, "taste_drift": 0.1},
                 {"taste": 0.9, "taste_drift": 0.1, "drift_mode": "gradual"})
FULL_SEEDS = (0, 1, 2, 3, 4)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ttt4rec_edu.history_study --out FILE.csv``: run :data:`FULL_SETTINGS` × :data:`FULL_SEEDS`
    at :class:`WorldConfig`'s defaults, appending each finished run to ``FILE.csv`` (a rerun skips the runs
    already there) and the conditions to ``FILE.json``."""
    import argparse
    import json
    import os
    import platform

    parser = argparse.ArgumentParser(prog="python -m ttt4rec_edu.history_study", description=main.__doc__)
    parser.add_argument("--out", required=True, help="CSV file of rows (one per setting, seed and arm)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    base = WorldConfig()
    done = pd.read_csv(args.out) if os.path.exists(args.out) else pd.DataFrame()
    conditions = {"command": "OMP_NUM_THREADS=1 python -m ttt4rec_edu.history_study --out " + args.out,
                  "world_config": dataclasses.asdict(base), "settings": list(FULL_SETTINGS),
                  "seeds": list(FULL_SEEDS), "device": args.device, "torch_threads": torch.get_num_threads(),
                  "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(conditions, f, indent=1)
    for setting in FULL_SETTINGS:
        for seed in FULL_SEEDS:
            cfg = base.replace(**setting)
            if len(done):
                same = np.ones(len(done), dtype=bool)
                for k in WORLD_FIELDS:
                    same &= (done[k] == getattr(cfg, k)).to_numpy()
                if (same & (done["seed"] == seed).to_numpy()).any():
                    continue
            part = run_grid([setting], [seed], base=base, device=args.device, verbose=True)
            done = pd.concat([done, part], ignore_index=True)
            done.to_csv(args.out + ".tmp", index=False)
            os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ARMS", "AFTER_SWITCH", "WORLD_FIELDS", "WorldConfig", "RecentItems", "LastItemCounts", "run_one",
           "run_grid", "paired_differences", "FULL_SETTINGS", "FULL_SEEDS", "main"]
