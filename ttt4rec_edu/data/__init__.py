"""Data: raw-format readers, the dataset registry, filters, the evaluation protocol, synthetic drift data."""
from .protocol import (LEAVE_ONE_OUT, SampleSet, SequenceData, Splits, build_splits, parse_split,
                       split_counts)
from .readers import (FORMATS, BadValueError, ChecksumError, CompressedFileError, DataError, DownloadError,
                      EmptyFileError, EncodingError, FileFormatError, FilteredOutError, MissingFileError,
                      UnknownDatasetError, detect_format, read_interactions)
from .filtering import (DEFAULT_TIMESTAMPS, TIMESTAMP_MODES, filter_interactions, order_differences,
                        sort_times, to_sequences)
from .download import default_cache_dir, download_file, ensure_dataset_file, sha256_of
from .registry import DATASETS, DatasetInfo, get_dataset_info, load_data_source, load_dataset
from .stats import dataset_stats
from .synthetic import make_drift_data

__all__ = ["LEAVE_ONE_OUT", "SampleSet", "SequenceData", "Splits", "build_splits", "parse_split",
           "split_counts",
           "FORMATS", "DataError", "MissingFileError", "EmptyFileError", "FileFormatError", "BadValueError",
           "EncodingError", "CompressedFileError", "FilteredOutError", "UnknownDatasetError", "ChecksumError",
           "DownloadError", "detect_format", "read_interactions",
           "filter_interactions", "to_sequences", "DEFAULT_TIMESTAMPS", "TIMESTAMP_MODES", "order_differences",
           "sort_times",
           "default_cache_dir", "download_file", "ensure_dataset_file", "sha256_of",
           "DATASETS", "DatasetInfo", "get_dataset_info", "load_data_source", "load_dataset",
           "dataset_stats", "make_drift_data"]
