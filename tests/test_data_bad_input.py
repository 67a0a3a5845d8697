"""Bad input a new user met (issue 15): unknown time column names, ids written as 242.0, a UTF-8 BOM."""
import gzip

import numpy as np
import pandas as pd
import pytest

from ttt4rec_edu.data import EncodingError, FileFormatError, load_dataset, read_interactions, to_sequences


def write(path, lines, bom=False, compressed=False):
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(gzip.compress(data) if compressed else data)
    return path


# ------------------------------------------------------------------------------------------ time columns
@pytest.mark.parametrize("name", ["created_at", "ts", "datetime", "date", "unix_time", "event_time", "Created_At"])
def test_common_time_column_names_order_the_interactions(tmp_path, name):
    # Listed newest first: read in file order, user u's sequence would be c, b, a.
    path = write(tmp_path / "t.csv", [f"user,item,{name}", "u,c,30", "u,b,20", "u,a,10"])
    table = read_interactions(path)
    assert table["timestamp"].tolist() == [30.0, 20.0, 10.0]
    data = to_sequences(table)
    assert [data.item_tokens[j - 1] for j in data.sequences[0]] == ["a", "b", "c"]


def test_reporters_file_with_created_at_is_ordered_by_time(tmp_path):
    # The reported shape: ISO dates in a "created_at" column, rows not in time order within users.
    rng = np.random.default_rng(0)
    rows, expected = [], {}
    for user in range(40):
        days = rng.choice(300, size=6, replace=False)
        items = [f"i{user}_{k}" for k in range(6)]
        expected[f"u{user}"] = [items[k] for k in np.argsort(days)]
        rows += [(f"u{user}", items[k], days[k]) for k in range(6)]
    order = rng.permutation(len(rows))
    lines = ["user_id,item_id,created_at"]
    lines += [f"{u},{i},{(pd.Timestamp('2020-01-01') + pd.Timedelta(days=int(d))).isoformat()}Z"
              for u, i, d in (rows[k] for k in order)]
    data = load_dataset(write(tmp_path / "reviews.csv", lines))
    got = {user: [data.item_tokens[j - 1] for j in seq] for user, seq in zip(data.user_tokens, data.sequences)}
    assert got == expected


@pytest.mark.parametrize("header, first_row, column", [
    ("user,item,updated_at", "u,a,5", "updated_at"),
    ("user,item,rating,visit_date", "u,a,4,5", "visit_date"),
    ("user;item;ts_ms", "u;a;5", "ts_ms"),
    ("user,item,seen", "u,a,2010-10-19T23:55:27Z", "seen"),  # no time word, but its values are dates
    ("user_id:token\titem_id:token\tupdated_at:float", "1\t2\t5", "updated_at"),  # RecBole header
    ("user,item,timestampMs", "u,a,5", "timestampMs"),  # these four were read in file order without a word
    ("user,item,created", "u,a,5", "created"),
    ("user,item,createdAt", "u,a,5", "createdAt"),
    ("user,item,timestampms", "u,a,5", "timestampms"),
    ("user,item,eventTime", "u,a,5", "eventTime"),
])
def test_unknown_time_like_column_is_refused(tmp_path, header, first_row, column):
    path = write(tmp_path / "h.csv", [header, first_row, first_row])
    with pytest.raises(FileFormatError) as info:
        read_interactions(path)
    message = str(info.value)
    assert info.value.line == 1 and message.startswith(f"{path}, line 1: ")
    assert repr(column) in message and "looks like a time" in message
    assert "timestamp, time" in message and "file order" in message  # the accepted names, and the way out


@pytest.mark.parametrize("extra", ["title", "playtime", "update", "price", "Playtime", "creator", "timezone"])
def test_columns_that_are_not_times_keep_file_order(tmp_path, extra):
    path = write(tmp_path / "h.csv", [f"user,item,{extra}", "u,a,5", "u,b,2"])
    assert read_interactions(path)["timestamp"].tolist() == [0.0, 1.0]


def test_known_time_column_wins_over_other_time_like_ones(tmp_path):
    path = write(tmp_path / "h.csv", ["user,item,updated_at,timestamp", "u,a,1,9", "u,b,2,8"])
    assert read_interactions(path)["timestamp"].tolist() == [9.0, 8.0]


# ------------------------------------------------------------------------------------------ ids
@pytest.mark.parametrize("fmt, lines", [
    ("csv", ["user,item,timestamp", "7,242,1", "7.0,242.0,2", "7,242.,3", "8,242.000,4"]),
    ("amazon-ratings", ["7,242,5.0,1", "7.0,242.0,5.0,2", "7,242.,4.0,3", "8,242.000,4.0,4"]),
    ("sequences", ["7 242 242.0 242.", "8 242.000"]),
    ("gowalla", ["7\t2010-10-19T23:55:27Z\t1.0\t2.0\t242", "7.0\t2010-10-19T23:55:28Z\t1.0\t2.0\t242.0",
                 "7\t2010-10-19T23:55:29Z\t1.0\t2.0\t242.", "8\t2010-10-19T23:55:30Z\t1.0\t2.0\t242.000"]),
])
def test_integral_decimal_ids_are_the_integer_id(tmp_path, fmt, lines):
    table = read_interactions(write(tmp_path / "ids.txt", lines), format=fmt)
    assert table["item"].tolist() == ["242"] * 4
    assert table["user"].tolist() == ["7", "7", "7", "8"]
    data = to_sequences(table)
    assert data.num_items == 1 and data.num_users == 2


def test_other_ids_are_kept_as_written(tmp_path):
    lines = ["user,item,timestamp", "u,0242,1", "u,242.5,2", "u,1e3,3", "u,B00.0X,4", "u,-3.0,5", "u,242,6"]
    table = read_interactions(write(tmp_path / "ids.csv", lines))
    assert table["item"].tolist() == ["0242", "242.5", "1e3", "B00.0X", "-3.0", "242"]


# ------------------------------------------------------------------------------------------ byte order mark
FILES = {
    "gowalla": ["0\t2010-10-19T23:55:27Z\t30.2\t-97.7\t22847", "1\t2010-10-18T22:17:43Z\t30.2\t-97.7\t420315"],
    "twitch": ["1,33842865744,mithrain,154,156", "2,33846768288,alptv,166,169"],
    "amazon-ratings": ["AB9S9279OZ3QO,0078764343,5.0,1373155200", "A24SSUT5CSW8BH,0043396828,3.0,1377302400"],
    "recbole": ["user_id:token\titem_id:token\ttimestamp:float", "196\t242\t881250949", "186\t302\t891717742"],
    "csv": ["user,item,timestamp", "u1,i1,5", "u2,i2,3"],
    "sequences": ["1 1 2 3", "2 4 1"],
}


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("fmt", sorted(FILES))
def test_byte_order_mark_is_ignored(tmp_path, fmt, compressed):
    plain = read_interactions(write(tmp_path / "plain", FILES[fmt], compressed=compressed))
    with_bom = read_interactions(write(tmp_path / "bom", FILES[fmt], bom=True, compressed=compressed))
    assert plain.attrs["format"] == with_bom.attrs["format"] == fmt  # detected from the content as before
    pd.testing.assert_frame_equal(with_bom, plain)


def test_byte_order_mark_does_not_shift_error_positions(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbf1 1 2\n2 3 \xff4\n")
    with pytest.raises(EncodingError, match=r"line 2: not UTF-8 text \(byte 0xff at column 5\)"):
        read_interactions(path, format="sequences")


# ------------------------------------------------------------------------------------------ synthetic data
def test_synthetic_data_refuses_the_file_options_it_would_ignore(capsys):
    """The generator reads no file and filters nothing: --min-user-inter 5 used to be accepted and ignored."""
    from ttt4rec_edu.cli import main
    from ttt4rec_edu.data import DataError, load_data_source

    for options, named in (({"min_user_inter": 5}, "--min-user-inter"), ({"min_item_inter": 0}, "--min-item-inter"),
                           ({"format": "csv"}, "--format")):
        with pytest.raises(DataError, match=f"--data synthetic .* takes no {named} "):
            load_data_source("synthetic", **options)
    code = main(["data", "stats", "--data", "synthetic", "--min-user-inter", "5", "--min-item-inter", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "error: --data synthetic is generated, not read from a file: it takes no --min-user-inter, "
        "--min-item-inter (drop them)"]
    assert load_data_source("synthetic", offline=True).num_items > 0  # the options it does not ignore still pass
