"""``DatasetInfo``: what the library knows about one registered dataset file.

It lives apart from the table of datasets (``registry.py``) so that ``download.py`` can take an entry
without importing the registry: the registry looks a name up once and hands the entry to the download.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset: its raw file, where to get it, and the paper's settings.

    ``urls`` are tried in order (empty when the source has no stable direct link); ``sha256`` is checked
    whenever it is known; ``min_user_inter`` / ``min_item_inter`` are RecBole's filters and ``max_len`` the
    context length the paper uses for this dataset. ``raw_counts`` are the raw file's ``(users, items,
    interactions)`` before the filters (the paper's Table 1 for its datasets), or ``None`` when unknown: the cost
    estimates (``ttt4rec_edu.estimate``) count a table's samples from them, so a new dataset brings its own.
    """

    name: str
    file_name: str
    format: str
    urls: Tuple[str, ...]
    sha256: Optional[str]
    min_user_inter: int
    min_item_inter: int
    max_len: int
    description: str
    citation: str
    homepage: Optional[str] = None
    raw_counts: Optional[Tuple[int, int, int]] = None

    def counts(self) -> Optional[Dict[str, int]]:
        """``{"users", "items", "interactions"}`` of the raw file (:attr:`raw_counts`), or ``None`` when unknown."""
        if self.raw_counts is None:
            return None
        return dict(zip(("users", "items", "interactions"), (int(n) for n in self.raw_counts)))


__all__ = ["DatasetInfo"]
