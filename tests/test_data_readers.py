"""Readers, filters, sequences and stats on small files written here in the exact raw formats."""
import calendar
import gzip
import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from ttt4rec_edu.data import (BadValueError, CompressedFileError, DataError, EmptyFileError, EncodingError,
                              FileFormatError, FilteredOutError, MissingFileError, UnknownDatasetError,
                              dataset_stats, detect_format, filter_interactions, load_dataset,
                              read_interactions, to_sequences)

GOWALLA_LINES = [
    "0\t2010-10-19T23:55:27Z\t30.2359091167\t-97.7951395833\t22847",
    "0\t2010-10-18T22:17:43Z\t30.2691029532\t-97.7493953705\t420315",
    "1\t2010-10-17T23:42:03Z\t30.2557309927\t-97.7633857727\t316637",
    "1\t2010-10-17T19:26:05Z\t30.2634181234\t-97.7575966669\t16516",
]
TWITCH_LINES = ["1,33842865744,mithrain,154,156", "1,33846768288,alptv,166,169", "2,33886469056,mithrain,154,155"]
AMAZON_LINES = ["AB9S9279OZ3QO,0078764343,5.0,1373155200", "A24SSUT5CSW8BH,0078764343,5.0,1377302400",
                "AB9S9279OZ3QO,0043396828,3.0,1373155200"]


def write(path, lines, newline="\n"):
    path.write_text(newline.join(lines) + newline, encoding="utf-8")
    return path


def utc(text):
    return float(calendar.timegm(pd.Timestamp(text).utctimetuple()))


def check_schema(df, with_rating=False):
    expected = ["user", "item", "timestamp"] + (["rating"] if with_rating else [])
    assert list(df.columns) == expected
    assert pd.api.types.is_string_dtype(df["user"]) and pd.api.types.is_string_dtype(df["item"])
    assert df["timestamp"].dtype == np.float64
    assert all(isinstance(v, str) for v in df["user"]) and all(isinstance(v, str) for v in df["item"])


# ------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("compressed", [False, True])
def test_gowalla_plain_and_gz(tmp_path, compressed):
    text = "\n".join(GOWALLA_LINES) + "\n"
    if compressed:
        path = tmp_path / "loc-gowalla_totalCheckins.txt.gz"
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path = tmp_path / "checkins.txt"
        path.write_text(text)
    assert detect_format(path) == "gowalla"
    df = read_interactions(path)
    check_schema(df)
    assert df["user"].tolist() == ["0", "0", "1", "1"]
    assert df["item"].tolist() == ["22847", "420315", "316637", "16516"]  # item = location id (5th column)
    assert df["timestamp"].tolist() == [utc("2010-10-19T23:55:27Z"), utc("2010-10-18T22:17:43Z"),
                                        utc("2010-10-17T23:42:03Z"), utc("2010-10-17T19:26:05Z")]
    assert df["timestamp"].iloc[0] == 1287532527.0  # hand-checked epoch seconds


def test_twitch(tmp_path):
    path = write(tmp_path / "100k_a.csv", TWITCH_LINES)
    assert detect_format(path) == "twitch"
    df = read_interactions(path)
    check_schema(df)
    assert df["item"].tolist() == ["33842865744", "33846768288", "33886469056"]  # stream id, not streamer
    assert df["timestamp"].tolist() == [154.0, 166.0, 154.0]  # start step


def test_amazon_ratings(tmp_path):
    path = write(tmp_path / "ratings_Video_Games.csv", AMAZON_LINES)
    assert detect_format(path) == "amazon-ratings"
    df = read_interactions(path)
    check_schema(df, with_rating=True)
    assert df["user"].tolist() == ["AB9S9279OZ3QO", "A24SSUT5CSW8BH", "AB9S9279OZ3QO"]
    assert df["item"].tolist() == ["0078764343", "0078764343", "0043396828"]  # leading zeros kept (ids)
    assert df["rating"].tolist() == [5.0, 5.0, 3.0]
    assert df["timestamp"].tolist() == [1373155200.0, 1377302400.0, 1373155200.0]


def test_recbole_inter(tmp_path):
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float", "196\t242\t3\t881250949",
             "186\t302\t3\t891717742"]
    path = write(tmp_path / "ml.inter", lines)
    assert detect_format(path) == "recbole"
    df = read_interactions(path)
    check_schema(df, with_rating=True)
    assert df["user"].tolist() == ["196", "186"] and df["item"].tolist() == ["242", "302"]
    assert df["timestamp"].tolist() == [881250949.0, 891717742.0] and df["rating"].tolist() == [3.0, 3.0]


def test_generic_csv_and_tsv(tmp_path):
    csv_path = write(tmp_path / "a.csv", ["time,user_id,item_id", "5,u1,i1", "3,u1,i2", "4,u2,i1"])
    assert detect_format(csv_path) == "csv"
    df = read_interactions(csv_path)
    check_schema(df)
    assert df["user"].tolist() == ["u1", "u1", "u2"] and df["timestamp"].tolist() == [5.0, 3.0, 4.0]
    tsv_path = write(tmp_path / "b.tsv", ["User\tItem\tRating\tTimestamp", "a\tx\t4.5\t2010-10-19T23:55:27Z"])
    df = read_interactions(tsv_path)
    check_schema(df, with_rating=True)
    assert df["timestamp"].tolist() == [1287532527.0] and df["rating"].tolist() == [4.5]


def test_sequences_file(tmp_path):
    path = write(tmp_path / "Beauty.txt", ["1 1 2 3", "2 4 1", "3 2 2 5 6"])
    assert detect_format(path) == "sequences"
    df = read_interactions(path)
    check_schema(df)
    assert df["user"].tolist() == ["1"] * 3 + ["2"] * 2 + ["3"] * 4
    assert df["item"].tolist() == ["1", "2", "3", "4", "1", "2", "2", "5", "6"]
    assert df["timestamp"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]  # position in the line


def test_detection_uses_content_not_name(tmp_path):
    path = write(tmp_path / "ratings_Video_Games.csv", GOWALLA_LINES)  # a misleading name
    assert detect_format(path) == "gowalla"
    path = write(tmp_path / "data.inter", TWITCH_LINES)
    assert detect_format(path) == "twitch"
    path = write(tmp_path / "weird.txt", ["hello,world", "no,numbers"])
    with pytest.raises(FileFormatError, match="cannot tell the format"):
        detect_format(path)


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path / "r.csv", AMAZON_LINES, newline="\r\n")
    df = read_interactions(path)
    assert df["timestamp"].tolist() == [1373155200.0, 1377302400.0, 1373155200.0]


# ------------------------------------------------------------------------------------------ bad input
def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="no such file") as info:
        read_interactions(tmp_path / "nope.txt")
    assert "nope.txt" in str(info.value)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFileError, match="empty.csv"):
        read_interactions(empty)
    blank = write(tmp_path / "blank.csv", ["", "   ", ""])
    with pytest.raises(EmptyFileError):
        read_interactions(blank, format="amazon-ratings")
    header_only = write(tmp_path / "h.csv", ["user,item,timestamp"])
    with pytest.raises(EmptyFileError):
        read_interactions(header_only)


@pytest.mark.parametrize("bad_line,expect", [("A1,B2,5.0,1373155200,extra", "expected 4 columns, found 5"),
                                             ("A1,B2,5.0", "expected 4 non-empty columns")])
def test_wrong_number_of_columns_names_the_line(tmp_path, bad_line, expect):
    # a blank line in the middle must not shift the line count
    path = write(tmp_path / "r.csv", [AMAZON_LINES[0], "", AMAZON_LINES[1], bad_line, AMAZON_LINES[2]])
    with pytest.raises(FileFormatError, match=expect) as info:
        read_interactions(path, format="amazon-ratings")
    assert info.value.line == 4 and "r.csv, line 4" in str(info.value)


def test_non_numeric_timestamp(tmp_path):
    path = write(tmp_path / "r.csv", AMAZON_LINES[:2] + ["A1,B2,5.0,yesterday"])
    with pytest.raises(BadValueError, match="'yesterday' is not a number") as info:
        read_interactions(path)  # detected from the first lines, then checked everywhere
    assert info.value.line == 3
    bad_date = write(tmp_path / "g.txt", GOWALLA_LINES[:3] + ["7\t2010-13-45T99:00:00Z\t1.0\t2.0\t5"])
    with pytest.raises(BadValueError, match="ISO-8601") as info:
        read_interactions(bad_date)
    assert info.value.line == 4
    first_bad = write(tmp_path / "g1.txt", ["7\t19-10-2010\t1.0\t2.0\t5"] + GOWALLA_LINES)
    with pytest.raises(BadValueError, match="'19-10-2010' is not an ISO-8601 date") as info:
        read_interactions(first_bad)  # still detected as Gowalla from the other lines
    assert info.value.line == 1
    with_header = write(tmp_path / "h.csv", ["user,item,timestamp", "a,b,1", "a,c,x1"])
    with pytest.raises(BadValueError) as info:
        read_interactions(with_header)
    assert info.value.line == 3  # the header is line 1


@pytest.mark.parametrize("fmt_lines", ["amazon", "sequences"])
def test_non_utf8_bytes(tmp_path, fmt_lines):
    lines = AMAZON_LINES if fmt_lines == "amazon" else ["1 1 2", "2 3 4", "3 5 6"]
    data = ("\n".join(lines) + "\n").encode()
    data += b"A\xff\xfeZ,0078764343,4.0,1373155200\n" if fmt_lines == "amazon" else b"4 7 \xff8\n"
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(EncodingError, match="not UTF-8") as info:
        read_interactions(path)
    assert info.value.line == 4


def test_truncated_gz(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{u}\t2010-10-19T23:55:27Z\t1.0\t2.0\t{i}" for u, i in rng.integers(0, 10 ** 6, size=(5000, 2))]
    blob = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "loc-gowalla_totalCheckins.txt.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CompressedFileError, match="truncated or corrupt") as info:
        read_interactions(path, format="gowalla")
    assert "loc-gowalla_totalCheckins.txt.gz" in str(info.value)
    with pytest.raises(CompressedFileError):
        read_interactions(path, format="sequences")


def test_header_without_user_or_item(tmp_path):
    path = write(tmp_path / "h.csv", ["customer,article,time", "a,b,1"])
    with pytest.raises(FileFormatError, match="no user and no item column") as info:
        read_interactions(path, format="csv")
    assert info.value.line == 1
    path = write(tmp_path / "h.inter", ["user_id:token\tthing:token", "1\t2"])
    with pytest.raises(FileFormatError, match="no item column"):
        read_interactions(path)


def test_sequence_line_without_items(tmp_path):
    path = write(tmp_path / "s.txt", ["1 2 3", "2"])
    with pytest.raises(FileFormatError, match="at least one item") as info:
        read_interactions(path, format="sequences")
    assert info.value.line == 2


def test_every_error_is_a_value_error():
    for cls in (MissingFileError, EmptyFileError, FileFormatError, BadValueError, EncodingError,
                CompressedFileError, FilteredOutError, UnknownDatasetError):
        assert issubclass(cls, DataError) and issubclass(cls, ValueError)


# ------------------------------------------------------------------------------------------ filters
def core_by_brute_force(pairs, min_user, min_item):
    """Reference: drop one violating user or item at a time (a different order from the library)."""
    rows = list(pairs)
    while True:
        users = Counter(u for u, _ in rows)
        items = Counter(i for _, i in rows)
        bad_user = next((u for u in users if users[u] < min_user), None)
        if bad_user is not None:
            rows = [r for r in rows if r[0] != bad_user]
            continue
        bad_item = next((i for i in items if items[i] < min_item), None)
        if bad_item is None:
            return rows
        rows = [r for r in rows if r[1] != bad_item]


def frame(pairs):
    return pd.DataFrame({"user": [u for u, _ in pairs], "item": [i for _, i in pairs],
                         "timestamp": np.arange(len(pairs), dtype=np.float64)})


def test_filter_repeats_until_stable():
    # Items x and y have 4 interactions, z has 2. With users >= 2 and items >= 3, the first round drops z,
    # which leaves users c and d with one interaction each; only the second round drops them. A single
    # pass would wrongly keep c-y and d-x.
    pairs = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z"), ("d", "z"), ("d", "x"),
             ("e", "x"), ("e", "y")]
    out = filter_interactions(frame(pairs), min_user_inter=2, min_item_inter=3)
    kept = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("e", "x"), ("e", "y")]
    assert list(zip(out["user"], out["item"])) == kept
    assert kept == core_by_brute_force(pairs, 2, 3)
    assert out.attrs["filter_rounds"] == 3  # drop z, drop c and d, check stable
    assert filter_interactions(frame(pairs), None, None) is not None  # filters off: everything kept
    assert len(filter_interactions(frame(pairs), None, None)) == len(pairs)


def test_filter_matches_brute_force_on_random_tables():
    rng = np.random.default_rng(1)
    for _trial in range(30):
        n = int(rng.integers(20, 200))
        pairs = [(f"u{a}", f"i{b}") for a, b in zip(rng.zipf(1.5, n) % 25, rng.zipf(1.3, n) % 40)]
        min_user, min_item = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        expected = core_by_brute_force(pairs, min_user, min_item)
        if not expected:
            with pytest.raises(FilteredOutError):
                filter_interactions(frame(pairs), min_user, min_item)
            continue
        out = filter_interactions(frame(pairs), min_user, min_item)
        assert list(zip(out["user"], out["item"])) == expected


def test_filter_keeps_repeated_interactions():
    pairs = [("a", "x")] * 3 + [("b", "y")]
    out = filter_interactions(frame(pairs), min_user_inter=3, min_item_inter=3)
    assert len(out) == 3  # a's three interactions with x count three times


def test_every_user_filtered_out():
    with pytest.raises(FilteredOutError, match="every user was filtered out"):
        filter_interactions(frame([("a", "x"), ("b", "y")]), min_user_inter=5, min_item_inter=1, name="tiny")


# ------------------------------------------------------------------------------------------ sequences
def test_to_sequences_sorts_stably_and_remaps():
    df = pd.DataFrame({"user": ["b", "a", "b", "b", "a", "b"],
                       "item": ["p", "q", "r", "s", "p", "t"],
                       "timestamp": [5.0, 1.0, 2.0, 5.0, 0.0, 2.0]})
    data = to_sequences(df, name="toy")
    assert data.user_tokens == ["b", "a"]  # order of first appearance
    tokens = [[data.item_tokens[j - 1] for j in seq] for seq in data.sequences]
    # b: times 5,2,5,2 → r(2, row 2), t(2, row 5), p(5, row 0), s(5, row 3): ties keep file order
    assert tokens == [["r", "t", "p", "s"], ["p", "q"]]
    assert data.num_items == 5 and sorted(data.item_tokens) == ["p", "q", "r", "s", "t"]
    assert data.sequences[0].tolist() == [1, 2, 3, 4]  # ids 1..N in order of first appearance
    assert min(s.min() for s in data.sequences) == 1


def test_stats_raw_table_equals_sequences(tmp_path):
    path = write(tmp_path / "s.txt", ["1 1 2 3", "2 4 1", "3 2 2 5 6"])
    table = read_interactions(path)
    stats = dataset_stats(table)
    assert stats == {"users": 3, "items": 6, "interactions": 9, "avg_seq_len": 3.0}
    assert dataset_stats(to_sequences(table)) == stats


def test_load_local_file_no_filter_by_default(tmp_path):
    path = write(tmp_path / "s.txt", ["1 1 2 3", "2 4 1", "3 2 2 5 6 7 8"])
    data = load_dataset(path)
    assert data.num_users == 3 and data.num_interactions == 11
    assert data.meta["format"] == "sequences" and data.meta["min_user_inter"] == 0
    assert data.meta["source"] == str(path) and data.meta["max_len"] > 0
    filtered = load_dataset(str(path), min_user_inter=3, min_item_inter=1)
    assert filtered.num_users == 2 and filtered.user_tokens == ["1", "3"]
    assert filtered.meta["min_user_inter"] == 3


def test_load_dataset_errors(tmp_path):
    with pytest.raises(UnknownDatasetError, match="known datasets: amazon-beauty"):
        load_dataset("gowala")
    with pytest.raises(MissingFileError):
        load_dataset(tmp_path / "missing.txt")
    path = write(tmp_path / "s.txt", ["1 1 2", "2 3 4"])
    with pytest.raises(FilteredOutError):
        load_dataset(path, min_user_inter=10)


def test_lines_and_rows_agree_on_a_larger_file(tmp_path):
    """Line numbers stay right deep into a file (they come from row positions, not from a slow loop)."""
    rows = [f"u{k % 97},i{k % 89},4.0,{1000 + k}" for k in range(20000)]
    rows[15321] = "u1,i1,4.0,12:30"
    path = write(tmp_path / "big.csv", rows)
    with pytest.raises(BadValueError) as info:
        read_interactions(path, format="amazon-ratings")
    assert info.value.line == 15322
    rows[15321] = "u1,i1,4.0,1"
    df = read_interactions(write(path, rows))
    assert len(df) == 20000 and list(itertools.islice(df["user"], 3)) == ["u0", "u1", "u2"]


def test_to_sequences_ties_keep_file_order_on_random_data():
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({"user": rng.integers(0, 40, n).astype(str), "item": rng.integers(0, 300, n).astype(str),
                       "timestamp": rng.integers(0, 5, n).astype(np.float64)})  # many equal times
    data = to_sequences(df)
    for u, token in enumerate(data.user_tokens):
        rows = [r for r in range(n) if df["user"][r] == token]
        rows.sort(key=lambda r: df["timestamp"][r])  # Python's sort is stable: ties stay in file order
        assert [data.item_tokens[j - 1] for j in data.sequences[u]] == [df["item"][r] for r in rows]


def test_extra_column_line_number_counts_the_header(tmp_path):
    path = write(tmp_path / "h.tsv", ["user_id:token\titem_id:token\ttimestamp:float", "1\t2\t3", "1\t3\t4\t9"])
    with pytest.raises(FileFormatError, match="expected 3 columns, found 4") as info:
        read_interactions(path)
    assert info.value.line == 3
