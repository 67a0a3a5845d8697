"""Synthetic users whose own history matters, with the best possible prediction known (book chapter 11).

In :func:`ttt4rec_edu.data.make_drift_data` the next item depends on the last item only, so no model that
reads more of the history can beat the best last-item predictor. This world adds knobs that make the history
matter, each in its own way. ``num_items`` items are split into ``num_topics`` topics with Zipf popularity
inside each topic; every item has a few preferred successors in its topic. At every step a user first moves
their latent state, then draws the next item from one explicit distribution ``p_t`` over the items:

* the **topic**: with probability ``topic_switch`` the user moves to another topic (uniformly at random);
* the **taste** ``g`` (one Gaussian score per item and user): it is *persistent and personal*, and the last
  item does not reveal it. With ``taste_drift`` δ it drifts: ``drift_mode="switch"`` redraws it with
  probability δ per step (sudden; the positions go to ``meta["taste_switches"]``), ``"gradual"`` moves it by
  ``g ← sqrt(1 - δ) g + sqrt(δ) ε`` at every step (same stationary spread, correlation ``(1 - δ)^(k/2)``
  after ``k`` steps);
* the **next item** ``p_t = ρ · R_t + (1 - ρ) · B_t``:

  - ``R_t``, **repeat consumption** (``repeat`` = ρ): an item of the user's own history, the item ``k`` steps
    back with weight ``repeat_decay ** (k - 1)`` (recency-weighted; an item seen twice counts twice);
  - ``B_t``: if the topic did not change, with probability ``markov`` a preferred successor of the last item
    (weights 1/2, 1/4, ...: the Markov structure of ``make_drift_data``, one knob); otherwise a *fresh* item of
    the current topic, drawn from ``(1 - taste) · popularity + taste · softmax(taste_sharpness · g)``
    restricted to the topic (``taste`` = the taste's strength).

With ρ = 0 and ``taste`` = 0 the world is Markov in (last item, topic), like ``make_drift_data``.

**The oracle.** ``p_t`` is computed exactly from the latent state (topic, taste, history) before each draw, so
ranking the items by ``p_t`` is the Bayes-optimal ranking for a predictor that knows that state: no model that
sees only the history can have a higher expected HR@K or NDCG@K (for each sample, ``sum_j p_t(j) ·
gain(rank(j))`` is largest when the ranks follow ``p_t``; a model's ranking depends on less information). The
target's rank under ``p_t`` (``1 +`` items with a strictly higher probability) and its ties are stored per
position; :func:`oracle_ranks` reads them for any sample set of :func:`ttt4rec_edu.data.build_splits`.

Ground truth in ``meta``: ``topics``, ``sources`` (per position, which part drew the item: 0 fresh,
1 successor, 2 repeat, -1 the first item), ``taste_switches`` (sudden mode), ``oracle_rank``, ``oracle_ties``,
``oracle_prob`` (``p_t`` of the item drawn), ``item_topic``, ``popularity`` (per topic, over item ids),
``successors`` (row ``i``: the successor weights of item ``i``) and ``config``. One ``numpy`` generator
seeded with ``seed`` draws everything.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .protocol import SampleSet, SequenceData
from .synthetic import check_world

DRIFT_MODES = ("switch", "gradual")
SOURCES = {"first": -1, "fresh": 0, "successor": 1, "repeat": 2}


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def make_history_data(num_users: int = 500, num_items: int = 200, num_topics: int = 10, min_len: int = 20,
                      max_len: int = 40, repeat: float = 0.0, taste: float = 0.0, taste_drift: float = 0.0,
                      drift_mode: str = "switch", markov: float = 0.5, topic_switch: float = 0.1,
                      repeat_decay: float = 0.8, taste_sharpness: float = 2.0, num_successors: int = 3,
                      popularity_skew: float = 1.0, seed: int = 0) -> SequenceData:
    """Users' item sequences from the world of the module docstring, with the oracle's ranks in ``meta``.

    Returns a :class:`SequenceData` like the real loaders (items ``1..num_items``, string tokens).
    """
    repeat, taste = _check_rate("repeat", repeat), _check_rate("taste", taste)
    taste_drift, markov = _check_rate("taste_drift", taste_drift), _check_rate("markov", markov)
    topic_switch = _check_rate("topic_switch", topic_switch)
    if not 0.0 < float(repeat_decay) <= 1.0:
        raise ValueError(f"repeat_decay must be in (0, 1], got {repeat_decay!r}")
    if drift_mode not in DRIFT_MODES:
        raise ValueError(f"drift_mode must be one of {DRIFT_MODES}, got {drift_mode!r}")
    check_world(num_users, num_items, num_topics, min_len, max_len)
    rng = np.random.default_rng(seed)
    K, N, T, U = int(num_topics), int(num_items), int(max_len), int(num_users)

    # --- the world: topics, popularity inside each topic, preferred successors -------------------
    item_topic = np.full(N + 1, -1, dtype=np.int64)
    item_topic[1:] = rng.permutation(np.arange(N) % K)
    in_topic = item_topic[None, :] == np.arange(K)[:, None]            # (K, N + 1); column 0 never
    popularity = np.zeros((K, N + 1))
    successors = np.zeros((N + 1, N + 1))                               # row i: successor weights of item i
    S = max(1, int(num_successors))
    for k in range(K):
        ids = rng.permutation(np.flatnonzero(in_topic[k]))
        popularity[k, ids] = 1.0 / np.arange(1, len(ids) + 1) ** popularity_skew
        for i in ids:
            others = ids[ids != i]
            chosen = rng.choice(others, size=min(S, len(others)), replace=False)
            successors[i, chosen] = 0.5 ** np.arange(len(chosen))
    popularity /= popularity.sum(axis=1, keepdims=True)
    successors[1:] /= successors[1:].sum(axis=1, keepdims=True)

    # --- users, step by step over all users at once ----------------------------------------------
    users = np.arange(U)
    topic = rng.integers(0, K, size=U)
    g = rng.standard_normal((U, N + 1))
    recent = np.zeros((U, N + 1))                                       # decayed counts of the history
    items = np.zeros((U, T), dtype=np.int64)
    topics = np.zeros((U, T), dtype=np.int64)
    source = np.full((U, T), SOURCES["first"], dtype=np.int64)
    switched = np.zeros((U, T), dtype=bool)
    rank = np.ones((U, T), dtype=np.int64)
    ties = np.zeros((U, T), dtype=np.int64)
    prob = np.zeros((U, T))
    for t in range(T):
        stay = np.ones(U, dtype=bool)
        if t > 0:
            move = rng.random(U) < topic_switch
            topic = np.where(move, (topic + rng.integers(1, max(K, 2), size=U)) % K, topic)
            stay = ~move
            if drift_mode == "switch":
                switched[:, t] = rng.random(U) < taste_drift
                fresh_g = rng.standard_normal((U, N + 1))
                g = np.where(switched[:, t, None], fresh_g, g)
            elif taste_drift > 0:
                g = np.sqrt(1.0 - taste_drift) * g + np.sqrt(taste_drift) * rng.standard_normal((U, N + 1))
        topics[:, t] = topic
        liked = np.exp(taste_sharpness * (g - g.max(axis=1, keepdims=True))) * in_topic[topic]
        fresh = (1 - taste) * popularity[topic] + taste * liked / liked.sum(axis=1, keepdims=True)
        if t == 0:
            parts = [fresh]
            p = fresh
        else:
            follow = markov * stay
            parts = [(1 - repeat) * (1 - follow)[:, None] * fresh,
                     (1 - repeat) * follow[:, None] * successors[items[:, t - 1]],
                     repeat * recent / recent.sum(axis=1, keepdims=True)]
            p = parts[0] + parts[1] + parts[2]
        u = rng.random(U)
        items[:, t] = np.minimum((np.cumsum(p, axis=1) < u[:, None]).sum(axis=1), N)
        items[:, t] = np.where(p[users, items[:, t]] > 0, items[:, t], np.argmax(p, axis=1))  # rounding guard
        chosen = items[:, t]
        if t > 0:  # which part drew the item, in proportion to its share of p_t(item)
            share = np.stack([part[users, chosen] for part in parts], axis=1)
            cdf = np.cumsum(share, axis=1) / share.sum(axis=1, keepdims=True)
            source[:, t] = np.minimum((cdf < rng.random(U)[:, None]).sum(axis=1), 2)
        target_p = p[users, chosen]
        prob[:, t] = target_p
        rank[:, t] = 1 + (p[:, 1:] > target_p[:, None]).sum(axis=1)
        ties[:, t] = (p[:, 1:] == target_p[:, None]).sum(axis=1) - 1
        recent *= repeat_decay
        recent[users, chosen] += 1.0

    lengths = rng.integers(min_len, max_len + 1, size=U)
    cut = [slice(0, n) for n in lengths]
    meta = {
        "source": "synthetic",
        "format": "synthetic",
        "min_user_inter": 0,
        "min_item_inter": 0,
        "max_len": T,
        "topics": [topics[u, cut[u]].copy() for u in range(U)],
        "sources": [source[u, cut[u]].copy() for u in range(U)],
        "taste_switches": [np.flatnonzero(switched[u, cut[u]]) for u in range(U)],
        "oracle_rank": [rank[u, cut[u]].copy() for u in range(U)],
        "oracle_ties": [ties[u, cut[u]].copy() for u in range(U)],
        "oracle_prob": [prob[u, cut[u]].copy() for u in range(U)],
        "item_topic": item_topic,
        "popularity": popularity,
        "successors": successors,
        "config": {"num_users": U, "num_items": N, "num_topics": K, "min_len": int(min_len), "max_len": T,
                   "repeat": repeat, "taste": taste, "taste_drift": taste_drift, "drift_mode": drift_mode,
                   "markov": markov, "topic_switch": topic_switch, "repeat_decay": float(repeat_decay),
                   "taste_sharpness": float(taste_sharpness), "num_successors": S,
                   "popularity_skew": float(popularity_skew), "seed": seed},
    }
    sequences: List[np.ndarray] = [items[u, cut[u]].copy() for u in range(U)]
    return SequenceData(sequences=sequences, num_items=N,
                        name=f"history-rho{repeat:g}-taste{taste:g}-{drift_mode}{taste_drift:g}",
                        user_tokens=[f"u{u}" for u in range(U)], item_tokens=[str(j) for j in range(1, N + 1)],
                        meta=meta)


def _flat(data: SequenceData, key: str) -> np.ndarray:
    if key not in data.meta:
        raise ValueError(f"{data.name}: no meta[{key!r}]; the oracle needs data from make_history_data")
    return np.concatenate(data.meta[key])


def oracle_ranks(data: SequenceData, samples: SampleSet) -> Tuple[np.ndarray, np.ndarray]:
    """``(ranks, ties)`` of every target of ``samples`` (built from ``data`` by ``build_splits``) under the
    oracle's ranking ``p_t``: pass them to :func:`ttt4rec_edu.metrics.metrics_from_ranks`."""
    index = samples.target_index.numpy()
    return _flat(data, "oracle_rank")[index], _flat(data, "oracle_ties")[index]


def steps_since_switch(data: SequenceData, samples: SampleSet) -> np.ndarray:
    """For every target of ``samples``: how many steps after the user's latest taste switch it was drawn
    (0 = the first item drawn with the new taste), or -1 if the taste has not switched before it."""
    out = np.full(len(samples), -1, dtype=np.int64)
    lengths = np.array([len(s) for s in data.sequences])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    users = samples.user.numpy()
    position = samples.target_index.numpy() - starts[users]
    switches = data.meta["taste_switches"]
    for i, (u, t) in enumerate(zip(users, position)):
        before = switches[u][switches[u] <= t]
        if before.size:
            out[i] = t - before[-1]
    return out


__all__ = ["DRIFT_MODES", "SOURCES", "make_history_data", "oracle_ranks", "steps_since_switch"]
