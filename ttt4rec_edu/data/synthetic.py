"""Synthetic users whose interests drift: the book's quick default data and its laboratory for chapter 11.

The world: ``num_items`` items are split into ``num_topics`` topics. Inside a topic,

* items have skewed (Zipf-like) popularity, so "recommend the most popular" is a real baseline, and
* every item has a few preferred successors in its topic, so a user who stays in a topic walks a
  topic-specific Markov chain with probability ``transition_strength`` at each step (otherwise they
  pick a popular item of the topic). This sequential structure is what sequence models can learn and
  popularity cannot.

A user's interest moves between topics in one of two ways (``drift`` sets the rate, 0 = no drift):

* ``mode="switch"``: at each step the user jumps to another topic with probability ``drift``
  (sudden switches; expected ``drift * length`` switches per user);
* ``mode="gradual"``: the user's interest is a point on a ring of topics that moves ``drift`` topics per
  step; between two topics the next item comes from the nearer one more often (a gradual blend).

Ground truth goes into ``meta``: the topic behind every position (``meta["topics"][u]``), the positions
where the user's dominant topic changes (``meta["switch_points"][u]``) and each item's topic
(``meta["item_topic"][j]`` for item id ``j``; entry 0, the padding id, is -1). Everything is drawn from
one ``numpy`` generator seeded with ``seed``, so the same arguments give the same data.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .protocol import SequenceData

MODES = ("switch", "gradual")


def _draw(cdf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``cdf (rows, k)`` (rows are cumulative probabilities ending in 1)."""
    u = rng.random(cdf.shape[0])
    return np.minimum((cdf < u[:, None]).sum(axis=1), cdf.shape[1] - 1)


def check_world(num_users: int, num_items: int, num_topics: int, min_len: int, max_len: int) -> None:
    """The size options every synthetic generator shares, each refused with one clear ``ValueError``: at least
    one topic and two items per topic, ``2 <= min_len <= max_len``, at least one user."""
    if num_topics < 1 or num_items < 2 * num_topics:
        raise ValueError(f"need num_topics >= 1 and at least 2 items per topic, got {num_items} items for "
                         f"{num_topics} topics")
    if not 2 <= min_len <= max_len:
        raise ValueError(f"need 2 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if num_users < 1:
        raise ValueError("num_users must be >= 1")


def make_drift_data(num_users: int = 2000, num_items: int = 500, num_topics: int = 10, min_len: int = 20,
                    max_len: int = 50, drift: float = 0.05, mode: str = "switch", seed: int = 0,
                    transition_strength: float = 0.8, num_successors: int = 3,
                    popularity_skew: float = 1.0) -> SequenceData:
    """Users' item sequences with controllable interest drift (see the module docstring).

    Returns a :class:`SequenceData` like the real loaders do (items ``1..num_items``; string user and item
    tokens), with the ground truth and the settings in ``meta``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= float(drift) <= 1.0:
        raise ValueError(f"drift must be a rate in [0, 1], got {drift!r}")
    check_world(num_users, num_items, num_topics, min_len, max_len)
    rng = np.random.default_rng(seed)
    K, N, T, U = int(num_topics), int(num_items), int(max_len), int(num_users)

    # --- the world: topics, popularity, preferred transitions -------------------------------------
    item_topic = np.empty(N + 1, dtype=np.int64)
    item_topic[0] = -1
    item_topic[1:] = rng.permutation(np.arange(N) % K)          # topic of item id j at index j
    members = [np.flatnonzero(item_topic == k) for k in range(K)]  # item ids of each topic
    size = np.array([len(m) for m in members])
    M = int(size.max())
    topic_items = np.zeros((K, M), dtype=np.int64)
    topic_cdf = np.ones((K, M))
    position_in_topic = np.zeros(N + 1, dtype=np.int64)
    for k, ids in enumerate(members):
        ids = rng.permutation(ids)                              # rank 1 = most popular, at random
        topic_items[k, :len(ids)] = ids
        position_in_topic[ids] = np.arange(len(ids))
        weight = 1.0 / np.arange(1, len(ids) + 1) ** popularity_skew
        topic_cdf[k, :len(ids)] = np.cumsum(weight) / weight.sum()
    # Successors: S other items of the same topic, with decreasing preference (1/2, 1/4, ...).
    S = max(1, int(num_successors))
    m_of_item = size[item_topic[1:]]
    step = rng.integers(1, np.maximum(m_of_item, 2)[:, None], size=(N, S))  # never the item itself
    succ = np.zeros((N + 1, S), dtype=np.int64)
    succ[1:] = topic_items[item_topic[1:, None], (position_in_topic[1:, None] + step) % m_of_item[:, None]]
    succ_weight = 0.5 ** np.arange(S)
    succ_cdf = np.cumsum(succ_weight) / succ_weight.sum()

    # --- each user's topic path -------------------------------------------------------------------
    topic_weight = 1.0 / np.arange(1, K + 1) ** 0.5            # some topics are more popular than others
    start_topic = rng.choice(K, size=U, p=topic_weight / topic_weight.sum())
    steps = np.arange(T)
    if mode == "switch":
        jump = rng.random((U, T)) < drift
        jump[:, 0] = False
        offset = np.where(jump, rng.integers(1, max(K, 2), size=(U, T)), 0)  # to another topic
        topics = (start_topic[:, None] + np.cumsum(offset, axis=1)) % K
        interest = topics.astype(np.float64)
        dominant = topics
    else:
        direction = rng.choice([-1.0, 1.0], size=U)
        interest = start_topic[:, None] + direction[:, None] * drift * steps[None, :]  # position on the ring
        low = np.floor(interest)
        frac = interest - low
        topics = (low.astype(np.int64) + (rng.random((U, T)) < frac)) % K
        dominant = np.round(interest).astype(np.int64) % K
        interest = np.mod(interest, K)

    # --- items, step by step over all users at once -----------------------------------------------
    items = np.zeros((U, T), dtype=np.int64)
    items[:, 0] = topic_items[topics[:, 0], _draw(topic_cdf[topics[:, 0]], rng)]
    follow_draw = rng.random((U, T))
    for t in range(1, T):
        topic = topics[:, t]
        popular = topic_items[topic, _draw(topic_cdf[topic], rng)]
        prev = items[:, t - 1]
        chained = succ[prev, _draw(np.broadcast_to(succ_cdf, (U, S)), rng)]
        follow = (topic == topics[:, t - 1]) & (follow_draw[:, t] < transition_strength)
        items[:, t] = np.where(follow, chained, popular)

    lengths = rng.integers(min_len, max_len + 1, size=U)
    sequences: List[np.ndarray] = [items[u, :lengths[u]].copy() for u in range(U)]
    changes = dominant[:, 1:] != dominant[:, :-1]
    switch_points = [np.flatnonzero(changes[u, :lengths[u] - 1]) + 1 for u in range(U)]
    meta = {
        "source": "synthetic",
        "format": "synthetic",
        "min_user_inter": 0,
        "min_item_inter": 0,
        "max_len": int(max_len),
        "topics": [topics[u, :lengths[u]].copy() for u in range(U)],
        "interest": [interest[u, :lengths[u]].copy() for u in range(U)],
        "switch_points": switch_points,
        "item_topic": item_topic,
        "successors": succ,
        "config": {"num_users": U, "num_items": N, "num_topics": K, "min_len": int(min_len),
                   "max_len": int(max_len), "drift": float(drift), "mode": mode, "seed": seed,
                   "transition_strength": float(transition_strength), "num_successors": S,
                   "popularity_skew": float(popularity_skew)},
    }
    return SequenceData(
        sequences=sequences,
        num_items=N,
        name=f"synthetic-{mode}-drift{drift:g}",
        user_tokens=[f"u{u}" for u in range(U)],
        item_tokens=[str(j) for j in range(1, N + 1)],
        meta=meta,
    )


__all__ = ["MODES", "check_world", "make_drift_data"]
