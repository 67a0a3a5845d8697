"""Dataset statistics: the paper's Table 1 (users, items, interactions, average length) and repeat consumption.

:func:`repeat_stats` measures how often a user comes back to an item of their own history, the property
that decides whether a model reading more than the last item can win (book chapters 9 and 11).
"""
from __future__ import annotations

from typing import Dict, Union

import numpy as np
import pandas as pd

from .protocol import SequenceData, Splits, build_splits
from .registry import DEFAULT_MAX_LEN


def dataset_stats(data: Union[SequenceData, pd.DataFrame]) -> Dict[str, float]:
    """``{"users", "items", "interactions", "avg_seq_len"}`` of sequences or of a raw interaction table.

    ``items`` counts the distinct items that occur (not ``num_items``), so a table read straight from a
    raw file gives the raw counts the paper reports, and sequences give the same numbers as their table.
    """
    if isinstance(data, pd.DataFrame):
        users = int(data["user"].nunique())
        items = int(data["item"].nunique())
        interactions = int(len(data))
    else:
        users = data.num_users
        interactions = data.num_interactions
        items = int(np.unique(np.concatenate(data.sequences)).size) if interactions else 0
    return {
        "users": users,
        "items": items,
        "interactions": interactions,
        "avg_seq_len": interactions / users if users else 0.0,
    }


def previous_occurrence(data: SequenceData) -> np.ndarray:
    """For every position of the flat array of all sequences (user after user), the flat index of the same
    user's previous interaction with the same item, or -1 if there is none."""
    lengths = np.fromiter((len(s) for s in data.sequences), dtype=np.int64, count=data.num_users)
    if not lengths.sum():
        return np.zeros(0, dtype=np.int64)
    flat = np.concatenate(data.sequences)
    user = np.repeat(np.arange(data.num_users), lengths)
    order = np.lexsort((np.arange(flat.size), flat, user))    # by user, then item, then time
    same = (user[order][1:] == user[order][:-1]) & (flat[order][1:] == flat[order][:-1])
    prev = np.full(flat.size, -1, dtype=np.int64)
    prev[order[1:][same]] = order[:-1][same]
    return prev


def repeat_stats(data: SequenceData, split="3:2:5", max_len: int = DEFAULT_MAX_LEN) -> Dict[str, float]:
    """How much of ``data`` is repeat consumption, under the evaluation protocol ``split`` / ``max_len``.

    Returns

    - ``test_targets_in_context``: the share of test targets (:func:`build_splits`) whose item is already in
      their own input, the last ``max_len`` items before them: what a model could copy from the context;
    - ``targets_in_context``: the same share over every sample (every prefix of every user);
    - ``users_with_repeat``: the share of users with at least one item that occurs twice in their sequence;
    - ``test_targets``: how many test targets the first share is over.

    ``split`` may also be the :class:`Splits` already built from ``data`` with this ``max_len`` (no second split).
    """
    if int(max_len) != max_len or max_len <= 0:
        raise ValueError(f"max length must be a positive integer, got {max_len!r}")
    if isinstance(split, Splits) and split.max_len != int(max_len):
        raise ValueError(f"the splits were built with max length {split.max_len}, not {max_len}")
    prev = previous_occurrence(data)
    in_context = (prev >= 0) & (prev >= np.arange(prev.size) - int(max_len))
    lengths = np.fromiter((len(s) for s in data.sequences), dtype=np.int64, count=data.num_users)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if data.num_users else np.zeros(0, np.int64)
    is_target = np.ones(prev.size, dtype=bool)
    is_target[starts[lengths > 0]] = False                   # a user's first item is nobody's target
    splits = split if isinstance(split, Splits) else build_splits(data, max_len=int(max_len), split=split)
    test = splits.test.target_index.numpy()
    user = np.repeat(np.arange(data.num_users), lengths)
    repeaters = np.unique(user[prev >= 0]).size
    return {
        "test_targets_in_context": float(in_context[test].mean()) if test.size else 0.0,
        "targets_in_context": float(in_context[is_target].mean()) if is_target.any() else 0.0,
        "users_with_repeat": repeaters / data.num_users if data.num_users else 0.0,
        "test_targets": int(test.size),
    }


__all__ = ["dataset_stats", "previous_occurrence", "repeat_stats"]
