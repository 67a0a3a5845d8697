"""Readers for the raw interaction files the paper uses, plus two generic formats.

Every reader returns the same table, one row per interaction, **in file order**:

========== ========= ==========================================================
column     dtype     meaning
========== ========= ==========================================================
user       str       the file's user id
item       str       the file's item id (location, stream, product, ...)
timestamp  float64   when it happened (seconds, 10-minute steps or a position)
rating     float64   only where the file has ratings
========== ========= ==========================================================

Formats (``detect_format`` recognises them from the file's *content*; the name is only a hint):

``gowalla``         SNAP ``loc-gowalla_totalCheckins.txt(.gz)``:
                    ``user<TAB>2010-10-19T23:55:27Z<TAB>lat<TAB>lon<TAB>location``
``twitch``          Twitch-100k ``100k_a.csv``: ``user,stream_id,streamer,start,stop`` (10-minute steps);
                    item = stream id
``amazon-ratings``  McAuley 2014 ``ratings_<Category>.csv``: ``user,item,rating,unix_time``
``recbole``         RecBole atomic ``.inter``: a tab-separated header such as
                    ``user_id:token  item_id:token  timestamp:float``
``csv``             any csv/tsv whose header names user and item columns, usually a time column (numbers or
                    ISO dates) and optionally a rating; without a time column the file order is the time order
``sequences``       one user per line, ``user item1 item2 ...`` in time order; time = position in the line

Header names (``csv`` and ``recbole``) are matched, lower-cased, against :data:`USER_NAMES`, :data:`ITEM_NAMES`,
:data:`TIME_NAMES` and :data:`RATING_NAMES`; other columns are ignored. A header with no known time column is
read in file order, *unless* another column could be a time (a name with a word such as ``time``, ``date``,
``ts`` or ``created``, camelCase words too, or ending in ``_at``/``At``; a name containing ``timestamp``; or an
ISO date as its first value): that is refused with a :class:`FileFormatError`
on line 1 naming the column, because ordering by file position when the file says otherwise would be a
silent guess (rename the column to a time name, or remove it when the file order is the time order).

Ids are strings and kept as written (leading zeros too: Amazon's ASINs have them), with one exception: an
integral decimal (``242.0``, ``242.``, ``242.000``) becomes its integer form ``242``, for users and items, in
every format. Such ids come from a table that went through floating point (pandas writes an integer column
with a missing value as ``242.0``), and ``242`` and ``242.0`` name the same user or item: mapping them is
never wrong, while keeping both would silently split one item in two, and refusing would make the reader edit
a file for no gain. ``242.5``, ``1e3`` and ``0242`` are not integral decimals and stay as they are.

A UTF-8 byte order mark at the start of a file (plain or ``.gz``) is dropped.

Large files are read with pandas' C parser as plain strings and then checked column by column, so the
6.4 M Gowalla lines take seconds, not minutes. Every problem raises a :class:`DataError` subclass whose
message names the file and, where there is one, the line.
"""
from __future__ import annotations

import csv
import gzip
import os
import re
import zlib
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from .errors import (BadValueError, CompressedFileError, EmptyFileError, EncodingError, FileFormatError,
                     MissingFileError)

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("gowalla", "twitch", "amazon-ratings", "recbole", "csv", "sequences")


# --------------------------------------------------------------------------------------------- helpers
_GZIP_MAGIC = b"\x1f\x8b"

# Column names accepted in a header (lower-cased; RecBole's ``:type`` suffix is removed first).
USER_NAMES = ("user", "user_id", "userid", "uid", "users", "reviewerid", "customer_id", "visitor_id")
ITEM_NAMES = ("item", "item_id", "itemid", "iid", "items", "product", "product_id", "productid", "asin",
              "movie_id", "movieid", "location_id", "location", "business_id", "venue_id", "stream_id")
TIME_NAMES = ("timestamp", "time", "unix_time", "unixreviewtime", "datetime", "date", "ts", "time_start",
              "start", "checkin_time", "created_at", "event_time", "time_stamp", "unixtime", "epoch")
RATING_NAMES = ("rating", "ratings", "score", "stars", "overall")

_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
# Words that make a header name not in TIME_NAMES look like a time ("visit_date", "ts_ms", "time_of_day");
# a name whose last word is "at" does too ("updated_at"). Whole words only: "playtime" or "update" do not.
_TIME_WORDS = frozenset({"time", "date", "datetime", "timestamp", "unixtime", "ts", "epoch", "when", "created",
                         "updated", "modified", "posted"})
_LONG_TIME_WORDS = ("timestamp", "datetime", "unixtime", "epoch")  # time-like even inside a word ("timestampms")
_CAMEL_CASE = re.compile(r"([a-z0-9])([A-Z])")
# An id written as an integral decimal ("242.0", "242.", "242.000"): group 1 is the integer form.
_INTEGRAL_DECIMAL = r"^(\d+)\.0*$"
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark, written by some editors (and Excel) at the start
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _check_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise MissingFileError("no such file", path)
    if path.is_dir():
        raise MissingFileError("is a folder, expected a data file", path)
    if path.stat().st_size == 0:
        raise EmptyFileError("the file is empty (0 bytes)", path)
    return path


def _open_binary(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _drop_bom(raw: bytes) -> bytes:
    """``raw`` without a UTF-8 byte order mark at its start (the file is valid UTF-8 with or without it)."""
    return raw[len(_BOM):] if raw.startswith(_BOM) else raw


def _head_lines(path: Path, count: int = 20, max_bytes: int = 1 << 16) -> List[str]:
    """The first ``count`` non-blank lines, decoded as UTF-8 (errors point at the line)."""
    try:
        with _open_binary(path) as fh:
            raw = fh.read(max_bytes)
    except (EOFError, OSError, zlib.error) as exc:
        raise CompressedFileError(f"cannot decompress: {exc}", path) from None
    lines = _drop_bom(raw).split(b"\n")
    if len(raw) == max_bytes and len(lines) > 1:
        lines = lines[:-1]  # the last piece may be cut in the middle
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"not UTF-8 text (byte {line[exc.start]:#04x} at column {exc.start + 1})",
                                path, number) from None
        if text.strip():
            out.append(text)
        if len(out) >= count:
            break
    return out


def _find_bad_utf8_line(path: Path) -> Tuple[int, int, int]:
    """Slow path, only after a decode error: (line, column, byte) of the first non-UTF-8 byte."""
    with _open_binary(path) as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, exc.start + 1, line[exc.start]
    return 0, 0, 0


def _header_tokens(line: str, sep: str, lower: bool = True) -> List[str]:
    """Lower-cased header names (as written with ``lower=False``) without RecBole's ``:type`` suffix and quotes."""
    names = [tok.strip().strip('"').strip("'").split(":")[0].strip() for tok in line.split(sep)]
    return [name.lower() for name in names] if lower else names


def _find_column(tokens: Sequence[str], names: Sequence[str]) -> Optional[int]:
    for name in names:
        if name in tokens:
            return tokens.index(name)
    return None


def _guess_separator(line: str) -> str:
    counts = {sep: line.count(sep) for sep in ("\t", ",", ";", "|")}
    sep = max(counts, key=counts.get)
    return sep if counts[sep] > 0 else " "


def _looks_like_header(line: str) -> bool:
    sep = _guess_separator(line)
    tokens = _header_tokens(line, sep)
    return _find_column(tokens, USER_NAMES) is not None or _find_column(tokens, ITEM_NAMES) is not None


# --------------------------------------------------------------------------------------------- detection
def detect_format(path: PathLike) -> str:
    """Name of the format of ``path`` (one of :data:`FORMATS`), recognised from its first lines.

    Raises :class:`FileFormatError` when the content matches none of them (pass ``format=`` then).
    """
    path = _check_file(path)
    lines = _head_lines(path)
    if not lines:
        raise EmptyFileError("the file has no lines with content", path)
    first = lines[0]
    if "\t" in first and re.search(r"\w+:(token|float|token_seq|float_seq)\b", first):
        return "recbole"
    if _looks_like_header(first):
        return "csv"
    data = lines[:10]

    def mostly(match) -> bool:
        # Most of the first lines must match: one bad line among them should be reported by the reader
        # with its line number, not make the format undetectable.
        hits = [bool(match(line)) for line in data]
        return sum(hits) * 2 > len(hits)

    def gowalla(line):
        f = line.split("\t")
        return len(f) == 5 and _ISO_TIME.match(f[1].strip())

    def twitch(line):
        f = line.split(",")
        return len(f) == 5 and f[3].strip().lstrip("-").isdigit() and f[4].strip().lstrip("-").isdigit()

    def amazon(line):
        f = line.split(",")
        return len(f) == 4 and _NUMBER.match(f[2].strip()) and _NUMBER.match(f[3].strip())

    def sequences(line):
        return len(line.split()) >= 2 and "," not in line and "\t" not in line  # space-separated ids

    for name, match in (("gowalla", gowalla), ("twitch", twitch), ("amazon-ratings", amazon),
                        ("sequences", sequences)):
        if mostly(match):
            return name
    raise FileFormatError(
        f"cannot tell the format from the first lines (first line: {first[:80]!r}); pass format= one of "
        f"{', '.join(FORMATS)}", path)


# --------------------------------------------------------------------------------------------- parsing
def _read_table(path: Path, sep: str, num_columns: int, header: bool,
                quoting: int = csv.QUOTE_NONE) -> pd.DataFrame:
    """All fields as strings, one row per physical line (blank lines kept so that row ↔ line)."""
    compression = "gzip" if _is_gzip(path) else None
    try:
        frame = pd.read_csv(
            path, sep=sep, header=None, names=list(range(num_columns)), dtype=str, na_filter=False,
            skip_blank_lines=False, engine="c", quoting=quoting, compression=compression,
            encoding="utf-8-sig", skiprows=1 if header else 0,
        )
    except UnicodeDecodeError:
        line, column, byte = _find_bad_utf8_line(path)
        raise EncodingError(f"not UTF-8 text (byte {byte:#04x} at column {column})", path, line) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CompressedFileError(f"truncated or corrupt gzip data ({exc}); download the file again",
                                  path) from None
    except pd.errors.EmptyDataError:
        raise EmptyFileError("the file has no data lines", path) from None
    except pd.errors.ParserError as exc:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match:
            raise FileFormatError(f"expected {match.group(1)} columns, found {match.group(3)}", path,
                                  int(match.group(2))) from None
        raise FileFormatError(f"cannot parse: {exc}", path) from None
    except OSError as exc:  # gzip errors surface as OSError in some Python versions
        raise CompressedFileError(f"truncated or corrupt gzip data ({exc})", path) from None
    first_line = 2 if header else 1
    frame.index = np.arange(first_line, first_line + len(frame))  # index = physical line number
    # Short lines come back with '' in the missing fields; lines with nothing at all are skipped.
    empty = np.column_stack([frame[c].to_numpy(dtype=object) == "" for c in frame.columns])
    suspect = np.flatnonzero(empty.any(axis=1))  # few rows: strip only those (whitespace-only lines)
    if suspect.size:
        values = frame.iloc[suspect].to_numpy(dtype=object).astype(str)
        empty[suspect] = np.char.strip(values) == ""
    blank = empty.all(axis=1)
    if not (~blank).any():
        raise EmptyFileError("the file has no data lines", path)
    bad = empty.any(axis=1) & ~blank
    if bad.any():
        row = int(np.argmax(bad))
        fields = int((~empty[row]).sum())
        raise FileFormatError(f"expected {num_columns} non-empty columns separated by {sep!r}, "
                              f"found {fields}", path, int(frame.index[row]))
    return frame.loc[~blank] if blank.any() else frame


def _to_float(frame: pd.DataFrame, column, what: str, path: Path) -> np.ndarray:
    """Vectorised float conversion; the first bad value is reported with its line."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise BadValueError(f"{what} {frame[column].iloc[row]!r} is not a number", path,
                            int(frame.index[row]))
    return values


def _iso_to_seconds(frame: pd.DataFrame, column, path: Path) -> np.ndarray:
    text = frame[column]
    stamps = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    bad = stamps.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise BadValueError(f"time {text.iloc[row]!r} is not an ISO-8601 date such as 2010-10-19T23:55:27Z",
                            path, int(frame.index[row]))
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return (stamps - epoch).dt.total_seconds().to_numpy(dtype=np.float64)


def _canonical_ids(ids: pd.Series) -> pd.Series:
    """``ids`` with integral decimals written as integers (``"242.0"`` -> ``"242"``; see the module docstring)."""
    dotted = ids.str.contains(".", regex=False).to_numpy(dtype=bool)
    if not dotted.any():  # the usual case, and the only cost on files without dots: one scan
        return ids
    ids = ids.copy()
    ids[dotted] = ids[dotted].str.replace(_INTEGRAL_DECIMAL, r"\1", regex=True)
    return ids


def _result(frame: pd.DataFrame, user, item, timestamp: np.ndarray,
            rating: Optional[np.ndarray] = None, strip: bool = False) -> pd.DataFrame:
    # Fixed raw formats have no padding around ids; hand-written csv files ("a, b") often do.
    users = _canonical_ids(frame[user].str.strip() if strip else frame[user])
    items = _canonical_ids(frame[item].str.strip() if strip else frame[item])
    out = {
        "user": users.to_numpy(dtype=object),
        "item": items.to_numpy(dtype=object),
        "timestamp": np.asarray(timestamp, dtype=np.float64),
    }
    if rating is not None:
        out["rating"] = np.asarray(rating, dtype=np.float64)
    table = pd.DataFrame(out)
    table["user"] = table["user"].astype(str)
    table["item"] = table["item"].astype(str)
    return table


def _read_gowalla(path: Path) -> pd.DataFrame:
    frame = _read_table(path, "\t", 5, header=False)
    return _result(frame, 0, 4, _iso_to_seconds(frame, 1, path))


def _read_twitch(path: Path) -> pd.DataFrame:
    frame = _read_table(path, ",", 5, header=False)
    start = _to_float(frame, 3, "start time", path)
    _to_float(frame, 4, "stop time", path)
    return _result(frame, 0, 1, start)


def _read_amazon(path: Path) -> pd.DataFrame:
    frame = _read_table(path, ",", 4, header=False)
    rating = _to_float(frame, 2, "rating", path)
    return _result(frame, 0, 1, _to_float(frame, 3, "timestamp", path), rating)


def _refuse_unknown_time_columns(frame: pd.DataFrame, tokens: Sequence[str], known: Sequence[Optional[int]],
                                 path: Path) -> None:
    """Raise :class:`FileFormatError` when a header without a known time column has a column that could be
    one (a time-like name, or a date as its first value): reading in file order would then be a silent guess."""
    first = frame.iloc[0]
    suspects = []
    for col, name in enumerate(tokens):
        if col in known:
            continue
        # camelCase is words too ("timestampMs", "createdAt"); a long time word inside one ("timestampms") counts
        words = [word for word in re.split(r"[^a-z0-9]+", _CAMEL_CASE.sub(r"\1_\2", name).lower()) if word]
        value = str(first[col]).strip()
        if _TIME_WORDS.intersection(words) or (len(words) > 1 and words[-1] == "at") or \
                any(long in word for word in words for long in _LONG_TIME_WORDS):
            suspects.append(f"{name!r} (its name)")
        elif _ISO_DATE.match(value):
            suspects.append(f"{name!r} (its first value {value!r})")
    if suspects:
        raise FileFormatError(
            f"column {' and '.join(suspects)} looks like a time, but the header has no time column the reader "
            f"knows ({', '.join(TIME_NAMES)}); rename it to one of these (e.g. 'timestamp') to order each "
            "user's interactions by it or, if the file order is the time order, remove it (a file without a "
            "time column is read in file order)", path, 1)


def _read_with_header(path: Path, recbole: bool) -> pd.DataFrame:
    lines = _head_lines(path, count=1)
    if not lines:
        raise EmptyFileError("the file has no lines with content", path)
    header = lines[0]
    sep = "\t" if recbole else _guess_separator(header)
    tokens = _header_tokens(header, sep)
    user = _find_column(tokens, USER_NAMES)
    item = _find_column(tokens, ITEM_NAMES)
    if user is None or item is None:
        missing = [name for name, col in (("user", user), ("item", item)) if col is None]
        raise FileFormatError(
            f"the header {header[:120]!r} has no {' and no '.join(missing)} column "
            f"(user column names: {', '.join(USER_NAMES)}; item column names: {', '.join(ITEM_NAMES)})",
            path, 1)
    time = _find_column(tokens, TIME_NAMES)
    rating = _find_column(tokens, RATING_NAMES)
    quoting = csv.QUOTE_NONE if recbole or sep == "\t" else csv.QUOTE_MINIMAL
    frame = _read_table(path, sep, len(tokens), header=True, quoting=quoting)
    if time is None:
        _refuse_unknown_time_columns(frame, _header_tokens(header, sep, lower=False), (user, item, rating), path)
        # No time column: the file order is the time order (see the module docstring).
        timestamp = np.arange(len(frame), dtype=np.float64)
    else:
        numeric = pd.to_numeric(frame[time], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(numeric).all():
            timestamp = numeric
        elif _ISO_DATE.match(str(frame[time].iloc[0]).strip()):
            timestamp = _iso_to_seconds(frame, time, path)
        else:
            timestamp = _to_float(frame, time, "timestamp", path)
    ratings = None if rating is None else _to_float(frame, rating, "rating", path)
    return _result(frame, user, item, timestamp, ratings, strip=True)


def _read_sequences(path: Path) -> pd.DataFrame:
    """``user item1 item2 ...`` per line; timestamp = 0-based position of the item in its line."""
    try:
        with _open_binary(path) as fh:
            raw = fh.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise CompressedFileError(f"truncated or corrupt gzip data ({exc}); download the file again",
                                  path) from None
    raw = _drop_bom(raw)  # else it would be glued to the first user id
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise EncodingError(f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {column})", path,
                            line) from None
    users: List[str] = []
    items: List[str] = []
    counts: List[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2:
            raise FileFormatError("expected a user followed by at least one item, found only "
                                  f"{words[0]!r}", path, number)
        users.append(words[0])
        items.extend(words[1:])
        counts.append(len(words) - 1)
    if not users:
        raise EmptyFileError("the file has no data lines", path)
    counts_arr = np.asarray(counts, dtype=np.int64)
    starts = np.repeat(np.cumsum(counts_arr) - counts_arr, counts_arr)
    position = np.arange(int(counts_arr.sum()), dtype=np.int64) - starts
    return pd.DataFrame({
        "user": _canonical_ids(pd.Series(np.repeat(np.asarray(users, dtype=object), counts_arr), dtype=str)),
        "item": _canonical_ids(pd.Series(items, dtype=str)),
        "timestamp": position.astype(np.float64),
    })


_READERS = {
    "gowalla": _read_gowalla,
    "twitch": _read_twitch,
    "amazon-ratings": _read_amazon,
    "recbole": lambda path: _read_with_header(path, recbole=True),
    "csv": lambda path: _read_with_header(path, recbole=False),
    "sequences": _read_sequences,
}


def read_interactions(path: PathLike, format: Optional[str] = None) -> pd.DataFrame:
    """Read a raw interaction file into a ``DataFrame[user: str, item: str, timestamp: float64 (+ rating)]``.

    Rows keep the file's order. ``format`` is one of :data:`FORMATS`; ``None`` detects it from the content.
    ``.gz`` files (recognised by their first bytes) are decompressed on the fly.
    """
    path = _check_file(path)
    fmt = detect_format(path) if format is None else str(format).lower()
    if fmt not in _READERS:
        raise FileFormatError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}", path)
    table = _READERS[fmt](path)
    table.attrs["format"] = fmt
    table.attrs["source"] = str(path)
    return table


__all__ = ["FORMATS", "detect_format", "read_interactions"]
