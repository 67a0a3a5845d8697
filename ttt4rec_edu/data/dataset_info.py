"""``DatasetInfo``: what the library knows about one registered dataset file.

It lives apart from the table of datasets (``registry.py``) so that ``download.py`` can take an entry
without importing the registry: the registry looks a name up once and hands the entry to the download.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset: its raw file, where to get it, and the paper's settings.

    ``urls`` are tried in order (empty when the source has no stable direct link); ``sha256`` is checked
    whenever it is known; ``min_user_inter`` / ``min_item_inter`` are RecBole's filters and ``max_len`` the
    context length the paper uses for this dataset.
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


__all__ = ["DatasetInfo"]
