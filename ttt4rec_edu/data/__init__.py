"""Data: raw-format readers, the dataset registry, filters, the evaluation protocol, synthetic drift data."""
from .protocol import (LEAVE_ONE_OUT, SampleSet, SequenceData, Splits, build_splits, parse_split,
                       split_counts)

__all__ = ["LEAVE_ONE_OUT", "SampleSet", "SequenceData", "Splits", "build_splits", "parse_split",
           "split_counts"]
