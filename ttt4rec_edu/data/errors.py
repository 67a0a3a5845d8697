"""Every data problem the library reports: :class:`DataError` and its subclasses, in one place.

Each is a ``ValueError`` whose one-line message starts with the file and, where there is one, the line
(``path, line 3: expected 5 columns, found 4``). The readers, the filters, the download and the registry
raise them; ``ttt4rec_edu.data`` exports them all, so callers catch ``DataError`` without knowing which
module found the problem.
"""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class DataError(ValueError):
    """Base class of every data problem. ``path`` and ``line`` (1-based, or ``None``) say where."""

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}, line {line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class MissingFileError(DataError):
    """The file does not exist."""


class EmptyFileError(DataError):
    """The file holds no interactions."""


class FileFormatError(DataError):
    """Wrong number of columns, a header without user/item columns, an unknown time-like column, an
    undetectable format."""


class BadValueError(DataError):
    """A value that should be a number (timestamp, rating) or a date is not."""


class EncodingError(DataError):
    """Bytes that are not UTF-8."""


class CompressedFileError(DataError):
    """A truncated or corrupt ``.gz`` file."""


class FilteredOutError(DataError):
    """The interaction filters removed every user."""


class UnknownDatasetError(DataError):
    """A dataset name that is not in the registry."""


class ChecksumError(DataError):
    """A file whose sha256 is not the published one (it is kept aside, never used)."""


class DownloadError(DataError):
    """A download failed or no copy of a dataset file can be found."""


__all__ = ["DataError", "MissingFileError", "EmptyFileError", "FileFormatError", "BadValueError", "EncodingError",
           "CompressedFileError", "FilteredOutError", "UnknownDatasetError", "ChecksumError", "DownloadError"]
