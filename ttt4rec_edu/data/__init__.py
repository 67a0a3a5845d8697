"""Data: raw-format readers, the dataset registry and its download, filters, the evaluation protocol, synthetic data.

Modules, from the bottom up:

- ``errors``: :class:`DataError` and every subclass (one clear message naming the file and line);
- ``protocol``: ``SequenceData``, the chronological ratio split (``build_splits``) and its samples;
- ``readers``: one reader per raw format (``read_interactions``, ``detect_format``);
- ``filtering``: the repeated user/item filters and the per-user time sort (``to_sequences``);
- ``dataset_info`` / ``download``: a registered file's ``DatasetInfo`` and getting that file (cache, mirror
  folders, checked resumable download);
- ``registry``: the table of datasets, ``ensure_dataset_file`` (by name), ``load_dataset`` and
  ``load_data_source`` (the command line's ``--data``);
- ``stats``: ``dataset_stats``, ``repeat_stats`` (repeat consumption);
- ``synthetic``: the interest-drift generator ``make_drift_data``;
- ``synthetic_history``: users whose history matters (repeats, taste, taste drift) and their oracle.
"""
from .errors import (BadValueError, ChecksumError, CompressedFileError, DataError, DownloadError, EmptyFileError,
                     EncodingError, FileFormatError, FilteredOutError, MissingFileError, UnknownDatasetError)
from .protocol import (LEAVE_ONE_OUT, SampleSet, SequenceData, Splits, build_splits, parse_split,
                       split_counts)
from .readers import FORMATS, detect_format, read_interactions
from .filtering import (DEFAULT_TIMESTAMPS, TIMESTAMP_MODES, filter_interactions, order_differences,
                        sort_times, to_sequences)
from .dataset_info import DatasetInfo
from .download import default_cache_dir, download_file, find_or_download, sha256_of
from .registry import DATASETS, ensure_dataset_file, get_dataset_info, load_data_source, load_dataset
from .stats import dataset_stats, repeat_stats
from .synthetic import make_drift_data
from .synthetic_history import make_history_data, oracle_ranks, steps_since_switch

__all__ = ["LEAVE_ONE_OUT", "SampleSet", "SequenceData", "Splits", "build_splits", "parse_split",
           "split_counts",
           "FORMATS", "DataError", "MissingFileError", "EmptyFileError", "FileFormatError", "BadValueError",
           "EncodingError", "CompressedFileError", "FilteredOutError", "UnknownDatasetError", "ChecksumError",
           "DownloadError", "detect_format", "read_interactions",
           "filter_interactions", "to_sequences", "DEFAULT_TIMESTAMPS", "TIMESTAMP_MODES", "order_differences",
           "sort_times",
           "default_cache_dir", "download_file", "ensure_dataset_file", "find_or_download", "sha256_of",
           "DATASETS", "DatasetInfo", "get_dataset_info", "load_data_source", "load_dataset",
           "dataset_stats", "repeat_stats", "make_drift_data", "make_history_data", "oracle_ranks",
           "steps_since_switch"]
