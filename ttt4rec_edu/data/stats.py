"""Dataset statistics as in the paper's Table 1: users, items, interactions, average sequence length."""
from __future__ import annotations

from typing import Dict, Union

import numpy as np
import pandas as pd

from .protocol import SequenceData


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


__all__ = ["dataset_stats"]
