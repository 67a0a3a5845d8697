"""From an interaction table to users' chronological sequences: the paper's filters and the id remapping.

Filters (RecBole's ``user_inter_num_interval = [m, inf)`` / ``item_inter_num_interval = [k, inf)``):
drop every user with fewer than ``m`` interactions and every item with fewer than ``k``, then count again —
dropping items can push a user below ``m`` and vice versa — until nothing changes. The result is the
largest sub-table where every user has ``>= m`` and every item ``>= k`` interactions (the "(m, k)-core"),
and it does not depend on the order of the removals. Repeated interactions (the same user and item twice)
are kept and counted, as RecBole does by default.

Sequences: each user's interactions are sorted by time with a *stable* sort, so interactions with equal
timestamps keep their file order. Items are renumbered ``1..N`` in order of first appearance in the sorted
sequences (0 stays the padding id); users keep their order of first appearance in the file.

Timestamps (``timestamps=``): RecBole 1.2 stores a ``float`` field as a float32 tensor and sorts that, so
two interactions of one user closer in time than float32 can tell apart (64 s around 8.9e8 s, MovieLens'
1997-98; 128 s around 1.3e9 s, Gowalla's 2010) get *equal* times and keep their file order.

- ``"recbole"`` (the default, the paper's protocol): sort by ``float32(timestamp)``, exactly as RecBole does
  (its ``normalize_all`` / ``normalize_field`` option, which rescales time to [0, 1] first, is not applied);
- ``"exact"``: sort by the float64 values the readers return.

Day-level times (Amazon: multiples of 86,400 s), 10-minute steps (Twitch) and positions (the ``sequences``
format) are exact in float32, so both modes give the same sequences there; second-level times (Gowalla,
MovieLens) do not. :func:`order_differences` counts the users whose sequence the choice changes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from .protocol import SequenceData
from .errors import FilteredOutError

TIMESTAMP_MODES = ("recbole", "exact")
DEFAULT_TIMESTAMPS = "recbole"


def check_timestamps_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`TIMESTAMP_MODES`, else ``ValueError`` naming the choices."""
    if mode not in TIMESTAMP_MODES:
        raise ValueError(f"timestamps must be one of {', '.join(TIMESTAMP_MODES)}, got {mode!r}")
    return mode


def sort_times(timestamp, mode: str = DEFAULT_TIMESTAMPS) -> np.ndarray:
    """The times the sequences are sorted by: ``float32(timestamp)`` for ``"recbole"`` (as RecBole's float
    field), the float64 values for ``"exact"``."""
    values = np.asarray(timestamp, dtype=np.float64)
    if check_timestamps_mode(mode) == "recbole":
        return values.astype(np.float32)
    return values


def filter_interactions(df: pd.DataFrame, min_user_inter: Optional[int] = None,
                        min_item_inter: Optional[int] = None, name: str = "data") -> pd.DataFrame:
    """Rows of ``df`` that survive the repeated user/item count filters (row order kept).

    ``None`` or a value ``<= 1`` switches a filter off. Raises :class:`FilteredOutError` when no
    interaction is left.
    """
    min_user = int(min_user_inter or 0)
    min_item = int(min_item_inter or 0)
    if len(df) == 0:
        raise FilteredOutError(f"{name}: there are no interactions to filter")
    if min_user <= 1 and min_item <= 1:
        return df
    # Integer codes make each round two bincounts instead of two group-bys.
    user_code, user_uniques = pd.factorize(df["user"], sort=False)
    item_code, item_uniques = pd.factorize(df["item"], sort=False)
    keep = np.ones(len(df), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        user_count = np.bincount(user_code[keep], minlength=len(user_uniques))
        item_count = np.bincount(item_code[keep], minlength=len(item_uniques))
        # Like RecBole, judge users and items on the same counts, then drop both at once.
        drop = keep & ((user_count[user_code] < min_user) | (item_count[item_code] < min_item))
        if not drop.any():
            break
        keep &= ~drop
        if not keep.any():
            raise FilteredOutError(
                f"{name}: every user was filtered out (users need >= {min_user} interactions, items "
                f">= {min_item}; {len(df)} interactions, {len(user_uniques)} users, {len(item_uniques)} "
                f"items before filtering). Lower min_user_inter / min_item_inter.")
    out = df.loc[keep] if not keep.all() else df.copy(deep=False)
    out.attrs = dict(df.attrs, filter_rounds=rounds)
    return out


def _user_time_order(user_code: np.ndarray, times: np.ndarray) -> np.ndarray:
    # np.lexsort sorts by the last key first (user, then time) and is stable: equal times keep file order.
    return np.lexsort((times, user_code))


def to_sequences(df: pd.DataFrame, name: str = "data", timestamps: str = DEFAULT_TIMESTAMPS) -> SequenceData:
    """Users' chronological item sequences from an interaction table (``user``, ``item``, ``timestamp``).

    Ties in time keep file order. ``timestamps``: ``"recbole"`` sorts by float32 times (RecBole's float
    field), ``"exact"`` by the float64 values (see the module docstring). ``item_tokens[j - 1]`` is the
    file's id of item ``j``; ``user_tokens[u]`` the file's id of user ``u``; ``meta["timestamps"]`` the mode.
    """
    check_timestamps_mode(timestamps)
    if len(df) == 0:
        raise FilteredOutError(f"{name}: no interactions, so no user sequences")
    user_code, user_uniques = pd.factorize(df["user"], sort=False)
    order = _user_time_order(user_code, sort_times(df["timestamp"].to_numpy(), timestamps))
    items_sorted = df["item"].to_numpy()[order]
    item_code, item_uniques = pd.factorize(items_sorted, sort=False)
    item_ids = item_code.astype(np.int64) + 1
    counts = np.bincount(user_code, minlength=len(user_uniques))
    sequences = np.split(item_ids, np.cumsum(counts)[:-1])
    return SequenceData(
        sequences=sequences,
        num_items=len(item_uniques),
        name=name,
        user_tokens=[str(u) for u in user_uniques],
        item_tokens=[str(i) for i in item_uniques],
        meta={"timestamps": timestamps},
    )


def order_differences(df: pd.DataFrame) -> int:
    """How many users' sequences differ between ``timestamps="recbole"`` and ``"exact"``.

    A user counts when the item at any position of their chronological sequence differs (not merely the
    order of two interactions with the same item). 0 whenever every time is exact in float32.
    """
    if len(df) == 0:
        return 0
    exact = df["timestamp"].to_numpy(dtype=np.float64)
    rounded = sort_times(exact, "recbole")
    if np.array_equal(rounded.astype(np.float64), exact, equal_nan=True):
        return 0  # float32 holds every time exactly: the same sort
    user_code, _ = pd.factorize(df["user"], sort=False)
    item_code, _ = pd.factorize(df["item"], sort=False)
    a = item_code[_user_time_order(user_code, exact)]
    b = item_code[_user_time_order(user_code, rounded)]
    users_sorted = np.sort(user_code, kind="stable")  # the user of each position in both orders
    return int(np.unique(users_sorted[a != b]).size)


__all__ = ["DEFAULT_TIMESTAMPS", "TIMESTAMP_MODES", "check_timestamps_mode", "filter_interactions",
           "order_differences", "sort_times", "to_sequences"]
