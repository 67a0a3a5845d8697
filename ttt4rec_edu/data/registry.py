"""The datasets of the paper (and the small real one the book runs on a CPU), and how to load one.

- :data:`DATASETS` / :func:`get_dataset_info`: the table of :class:`DatasetInfo` entries, by name;
- :func:`ensure_dataset_file`: a dataset's raw file (a name is looked up here, once; ``download.py`` gets
  the entry and never looks a name up);
- :func:`load_dataset`: a registry name or a file path -> read, filtered, per-user sequences;
- :func:`load_data_source`: the command line's ``--data`` (a name, a path or ``synthetic``).

Each entry records where the raw file comes from, its format, and the paper's settings for it: the
minimum interactions per user and per item (RecBole's filters) and the maximum context length.

- ``gowalla``: ``loc-gowalla_totalCheckins.txt.gz``; users >= 20, items >= 5, max length 100
- ``twitch-100k``: ``100k_a.csv``; users >= 15, items >= 5, max length 70
- ``amazon-video-games``: ``ratings_Video_Games.csv``; users >= 5, items >= 5, max length 50
- ``amazon-beauty``: ``amazon-beauty-5core.txt`` (not in the paper; the book's CPU-sized real data);
  users >= 5, items >= 5, max length 50

The paper's Table 1 counts (users, items, interactions) are those of the *raw* files; the filters above
are applied afterwards, by :func:`load_dataset` (the paper calls them "minimum sequence length"). Each entry
records its raw file's counts (``DatasetInfo.raw_counts``: Table 1's for the paper's datasets, the file's for
Amazon Beauty), from which the cost estimates count samples.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from .dataset_info import DatasetInfo
from .download import find_or_download
from .errors import DataError, UnknownDatasetError
from .filtering import DEFAULT_TIMESTAMPS, check_timestamps_mode, filter_interactions, order_differences, \
    to_sequences
from .protocol import SequenceData, Splits, build_splits
from .readers import read_interactions

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_MAX_LEN = 50  # for files that are not in the registry (the Amazon setting)


DATASETS: Dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="gowalla",
            file_name="loc-gowalla_totalCheckins.txt.gz",
            format="gowalla",
            urls=("https://snap.stanford.edu/data/loc-gowalla_totalCheckins.txt.gz",),
            sha256=None,
            min_user_inter=20, min_item_inter=5, max_len=100,
            description="Gowalla location check-ins, Feb 2009 - Oct 2010 (SNAP); item = location id. "
                        "Raw: 107,092 users, 1,280,969 locations, 6,442,892 check-ins.",
            citation="E. Cho, S. A. Myers, J. Leskovec. Friendship and Mobility: User Movement in "
                     "Location-Based Social Networks. KDD 2011.",
            homepage="https://snap.stanford.edu/data/loc-gowalla.html",
            raw_counts=(107092, 1280969, 6442892),
        ),
        DatasetInfo(
            name="twitch-100k",
            file_name="100k_a.csv",
            format="twitch",
            # The authors share it through a Google Drive folder only (no stable direct link).
            urls=(),
            sha256=None,
            min_user_inter=15, min_item_inter=5, max_len=70,
            description="Twitch viewers seen in streamers' chats every 10 minutes for 43 days, 100k-user "
                        "sample; item = stream id, time = first 10-minute step. Raw: 100,000 users, "
                        "739,991 streams, 3,051,732 interactions.",
            citation="J. Rappaz, J. McAuley, K. Aberer. Recommendation on Live-Streaming Platforms: "
                     "Dynamic Availability and Repeat Consumption. RecSys 2021.",
            homepage="https://github.com/JRappaz/liverec (Google Drive folder "
                     "https://drive.google.com/drive/folders/1BD8m7a8m7onaifZay05yYjaLxyVV40si)",
            raw_counts=(100000, 739991, 3051732),
        ),
        DatasetInfo(
            name="amazon-video-games",
            file_name="ratings_Video_Games.csv",
            format="amazon-ratings",
            urls=("http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/ratings_Video_Games.csv",),
            sha256=None,
            min_user_inter=5, min_item_inter=5, max_len=50,
            description="Amazon product ratings 1996-2014, category Video Games (ratings only). Raw: "
                        "826,767 users, 50,210 products, 1,324,753 ratings.",
            citation="J. McAuley, C. Targett, Q. Shi, A. van den Hengel. Image-based Recommendations on "
                     "Styles and Substitutes. SIGIR 2015.",
            homepage="https://cseweb.ucsd.edu/~jmcauley/datasets/amazon/links.html",
            raw_counts=(826767, 50210, 1324753),
        ),
        DatasetInfo(
            name="amazon-beauty",
            file_name="amazon-beauty-5core.txt",
            format="sequences",
            urls=("https://raw.githubusercontent.com/salesforce/ICLRec/master/data/Beauty.txt",),
            sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
            min_user_inter=5, min_item_inter=5, max_len=50,
            description="Amazon Beauty reviews (2014), 5-core, one user per line in time order as "
                        "preprocessed by S3-Rec / ICLRec: 22,363 users, 12,101 items, 198,502 "
                        "interactions. Small enough for CPU runs of the book.",
            citation="R. He, J. McAuley. Ups and Downs: Modeling the Visual Evolution of Fashion Trends "
                     "with One-Class Collaborative Filtering. WWW 2016; J. McAuley et al., SIGIR 2015.",
            homepage="https://github.com/salesforce/ICLRec",
            raw_counts=(22363, 12101, 198502),
        ),
    )
}


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name`` (case-insensitive, ``_`` = ``-``); :class:`UnknownDatasetError` if none."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))} "
                                  "(or pass the path of a local file)")
    return DATASETS[key]


def ensure_dataset_file(dataset: Union[str, DatasetInfo], cache_dir: Optional[PathLike] = None,
                        download: bool = True, progress: bool = True) -> Path:
    """Path of the raw file of a registered dataset (a name or its :class:`DatasetInfo`): from the cache, a
    mirror, or downloaded (see ``ttt4rec_edu.data.download``). A name is looked up here, once."""
    info = dataset if isinstance(dataset, DatasetInfo) else get_dataset_info(dataset)
    return find_or_download(info, cache_dir=cache_dir, download=download, progress=progress)


def load_dataset(name_or_path: Union[str, PathLike], format: Optional[str] = None,
                 min_user_inter: Optional[int] = None, min_item_inter: Optional[int] = None,
                 cache_dir: Optional[PathLike] = None, download: bool = True,
                 progress: bool = True, timestamps: str = DEFAULT_TIMESTAMPS) -> SequenceData:
    """Read, filter and sequence a dataset: a registry name or the path of a local file.

    A registry name gets the paper's filters unless ``min_user_inter`` / ``min_item_inter`` are given; a
    local path keeps the file's ids and is not filtered unless they are given. The effective settings go
    into ``SequenceData.meta``: ``source``, ``format``, ``min_user_inter``, ``min_item_inter``, ``max_len``
    (the dataset's default context length), the raw counts, ``timestamps`` (``"recbole"``: sorted by float32
    times as RecBole does, or ``"exact"``, see ``ttt4rec_edu.data.filtering``) and ``users_order_differs``
    (how many users' sequences the two timestamp modes order differently).
    """
    check_timestamps_mode(timestamps)
    text = str(name_or_path)
    key = text.strip().lower().replace("_", "-")
    is_path = isinstance(name_or_path, os.PathLike) or key not in DATASETS
    if is_path and not Path(text).exists() and os.sep not in text and "." not in text:
        get_dataset_info(text)  # neither a file nor a known name: say which names exist
    if is_path:
        path = Path(text)
        fmt = format
        name = path.name
        max_len = DEFAULT_MAX_LEN
        min_user = int(min_user_inter or 0)
        min_item = int(min_item_inter or 0)
    else:
        info = get_dataset_info(key)
        path = ensure_dataset_file(info, cache_dir=cache_dir, download=download, progress=progress)
        fmt = format or info.format
        name = info.name
        max_len = info.max_len
        min_user = info.min_user_inter if min_user_inter is None else int(min_user_inter)
        min_item = info.min_item_inter if min_item_inter is None else int(min_item_inter)
    table = read_interactions(path, format=fmt)
    raw = {"users": int(table["user"].nunique()), "items": int(table["item"].nunique()),
           "interactions": int(len(table))}
    filtered = filter_interactions(table, min_user, min_item, name=name)
    data = to_sequences(filtered, name=name, timestamps=timestamps)
    data.meta.update({
        "source": str(path),
        "format": table.attrs.get("format", fmt),
        "min_user_inter": min_user,
        "min_item_inter": min_item,
        "filter": "repeated until stable (RecBole)",
        "max_len": max_len,
        "raw": raw,
        "users_order_differs": order_differences(filtered),
    })
    return data


def load_data_source(name_or_path: Union[str, PathLike], format: Optional[str] = None,
                     min_user_inter: Optional[int] = None, min_item_inter: Optional[int] = None,
                     cache_dir: Optional[PathLike] = None, offline: bool = False,
                     timestamps: str = DEFAULT_TIMESTAMPS) -> SequenceData:
    """The ``SequenceData`` named by a command line's ``--data`` value: a registry name, a file path or
    ``synthetic`` (the drift generator's defaults). Shared by ``train``, ``data stats`` and ``reproduce``."""
    if str(name_or_path).strip().lower() == "synthetic":
        from .synthetic import make_drift_data

        ignored = [option for option, value in (("--format", format), ("--min-user-inter", min_user_inter),
                                                ("--min-item-inter", min_item_inter)) if value is not None]
        if ignored:  # the generator reads no file and filters nothing: say so rather than ignore the option
            raise DataError(f"--data synthetic is generated, not read from a file: it takes no "
                            f"{', '.join(ignored)} (drop {'it' if len(ignored) == 1 else 'them'})")
        return make_drift_data()
    return load_dataset(name_or_path, format=format, min_user_inter=min_user_inter,
                        min_item_inter=min_item_inter, cache_dir=cache_dir, download=not offline,
                        timestamps=timestamps)


@dataclass(frozen=True)
class DataRequest:
    """What one run reads: a ``--data`` value and its options, cut to the first ``max_users`` users, split by
    ``split`` with contexts of ``max_len`` (``None``: the dataset's registry setting, :data:`DEFAULT_MAX_LEN` for a
    file or ``synthetic``). Hashable, so that runs of the same data can share one load; :meth:`load` reads it."""

    source: str
    split: str = "3:2:5"
    max_len: Optional[int] = None
    format: Optional[str] = None
    min_user_inter: Optional[int] = None
    min_item_inter: Optional[int] = None
    cache_dir: Optional[str] = None
    offline: bool = False
    timestamps: str = DEFAULT_TIMESTAMPS
    max_users: Optional[int] = None

    def load_data(self) -> SequenceData:
        """The sequences (:func:`load_data_source`), cut to the first ``max_users`` users when asked."""
        data = load_data_source(self.source, format=self.format, min_user_inter=self.min_user_inter,
                                min_item_inter=self.min_item_inter, cache_dir=self.cache_dir, offline=self.offline,
                                timestamps=self.timestamps)
        if self.max_users is not None:
            data = SequenceData(data.sequences[:self.max_users], data.num_items,
                                name=f"{data.name}[:{self.max_users} users]", meta=dict(data.meta))
        return data

    def context_length(self, data: SequenceData) -> int:
        """``max_len``, else the loaded dataset's own setting, else :data:`DEFAULT_MAX_LEN`."""
        if self.max_len is not None:
            return int(self.max_len)
        return int((data.meta or {}).get("max_len") or DEFAULT_MAX_LEN)

    def load(self) -> Tuple[SequenceData, Splits]:
        """``(data, splits)``: the sequences and their train/valid/test samples under the evaluation protocol."""
        data = self.load_data()
        return data, build_splits(data, self.context_length(data), self.split)


__all__ = ["DATASETS", "DEFAULT_MAX_LEN", "DataRequest", "DatasetInfo", "ensure_dataset_file", "get_dataset_info",
           "load_data_source", "load_dataset"]
