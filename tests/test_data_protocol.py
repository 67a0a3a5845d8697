"""The evaluation protocol (ttt4rec_edu/data/protocol.py) against RecBole 1.2 and against hand-made cases."""
import numpy as np
import pytest
import torch

from ttt4rec_edu.data import SequenceData, build_splits, parse_split, split_counts


def recbole_calcu_split_ids(tot, ratios):
    """Independent transcription of RecBole 1.2 ``Dataset._calcu_split_ids`` (returns the cut points),
    with ``split_by_ratio``'s normalisation of the ratios."""
    total = sum(ratios)
    ratios = [r / total for r in ratios]
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return list(np.cumsum(cnt)[:-1])


def recbole_leave_one_out(tot, leave_one_num=2):
    """RecBole 1.2 ``_split_index_by_leave_one_out`` for one user: sizes of (train, valid, test)."""
    index = list(range(tot))
    parts = [[] for _ in range(leave_one_num + 1)]
    legal = min(leave_one_num, tot - 1)
    pr = tot - legal
    parts[0].extend(index[:pr])
    for i in range(legal):
        parts[-legal + i].append(index[pr])
        pr += 1
    return tuple(len(p) for p in parts)


@pytest.mark.parametrize("spec,weights", [("3:2:5", (3, 2, 5)), ("6:2:2", (6, 2, 2))])
def test_split_counts_match_recbole(spec, weights):
    ratios = parse_split(spec)
    for n in range(2, 31):
        cuts = recbole_calcu_split_ids(n, list(weights))
        expected = (cuts[0], cuts[1] - cuts[0], n - cuts[1])
        assert split_counts(n, ratios) == expected, (spec, n)
        assert sum(split_counts(n, ratios)) == n


def test_split_counts_hand_computed():
    r325, r622 = parse_split("3:2:5"), parse_split("6:2:2")
    # worked example of protocol.py: 5 interactions -> 4 samples -> train 1, valid 1, test 2
    assert split_counts(4, r325) == (1, 1, 2)
    assert split_counts(2, r325) == (1, 0, 1)    # test 0.5*2 = 1; valid 0.4 would take one but train has 1
    assert split_counts(10, r325) == (3, 2, 5)
    assert split_counts(3, r325) == (1, 1, 1)    # floors (2, 0, 1); valid's 0.6 is in (0, 1) -> (1, 1, 1)
    assert split_counts(10, r622) == (6, 2, 2)
    assert split_counts(4, r622) == (2, 1, 1)    # 0.8 each: test then valid take one from train
    assert split_counts(19, r325) == (7, 3, 9)   # floor(3.8) = 3, floor(9.5) = 9, train the rest
    assert split_counts(1, r325) == (1, 0, 0)


def test_leave_one_out_matches_recbole():
    for n in range(1, 12):
        assert split_counts(n, parse_split("loo")) == recbole_leave_one_out(n), n
    assert split_counts(0, parse_split("loo")) == (0, 0, 0)
    assert split_counts(5, parse_split("loo")) == (3, 1, 1)


def test_parse_split():
    assert parse_split("3:2:5") == pytest.approx((0.3, 0.2, 0.5))
    assert parse_split([6, 2, 2]) == pytest.approx((0.6, 0.2, 0.2))
    assert parse_split("LOO") == ()
    for bad in ("3:2", "a:b:c", "3:0:5", "3:-1:5", "1:2:3:4"):
        with pytest.raises(ValueError, match="malformed split"):
            parse_split(bad)


def test_max_len_must_be_positive():
    data = SequenceData([np.array([1, 2, 3])], num_items=3)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="max length must be a positive integer"):
            build_splits(data, bad)
    with pytest.raises(ValueError, match="malformed split"):
        build_splits(data, 5, "3:2")


def test_sequence_data_rejects_bad_ids():
    with pytest.raises(ValueError, match="outside 1..3"):
        SequenceData([np.array([1, 4])], num_items=3)
    with pytest.raises(ValueError, match="outside"):
        SequenceData([np.array([0, 1])], num_items=3)


def test_samples_on_a_hand_made_sequence():
    # one user, 6 items -> 5 samples; 3:2:5: valid floor(1.0) = 1, test floor(2.5) = 2, train 2
    data = SequenceData([np.array([5, 3, 9, 1, 7, 2])], num_items=9)
    splits = build_splits(data, max_len=3, split="3:2:5")
    assert splits.counts() == {"train": 2, "valid": 1, "test": 2}
    seq, lengths, targets = splits.train.batch()
    assert seq.tolist() == [[5, 0, 0], [5, 3, 0]]          # right padding with 0
    assert lengths.tolist() == [1, 2] and targets.tolist() == [3, 9]
    seq, lengths, targets = splits.valid.batch()
    assert seq.tolist() == [[5, 3, 9]] and lengths.tolist() == [3] and targets.tolist() == [1]
    seq, lengths, targets = splits.test.batch()
    # valid/test inputs hold all true earlier items, truncated to the LAST max_len of them
    assert seq.tolist() == [[3, 9, 1], [9, 1, 7]] and lengths.tolist() == [3, 3]
    assert targets.tolist() == [7, 2]
    assert splits.test.targets.tolist() == [7, 2] and splits.test.lengths.tolist() == [3, 3]


def test_two_users_and_subset():
    data = SequenceData([np.array([1, 2, 3, 4, 5]), np.array([6, 7])], num_items=7)
    splits = build_splits(data, max_len=10, split="3:2:5")
    # user 0: 4 samples -> (1,1,2); user 1: 1 sample -> (1,0,0)
    assert splits.counts() == {"train": 2, "valid": 1, "test": 2}
    seq, lengths, targets = splits.train.batch()
    assert targets.tolist() == [2, 7] and lengths.tolist() == [1, 1]
    assert seq[:, :2].tolist() == [[1, 0], [6, 0]] and (seq[:, 1:] == 0).all()
    sub = splits.test.subset(torch.tensor([1]))
    assert len(sub) == 1 and sub.batch()[2].tolist() == [5] and sub.batch()[0][0, :4].tolist() == [1, 2, 3, 4]


def test_leave_one_out_split():
    data = SequenceData([np.array([4, 1, 2, 3]), np.array([1, 2]), np.array([3])], num_items=4)
    splits = build_splits(data, max_len=5, split="loo")
    # user 0: 3 samples -> train 1, valid 1, test 1; user 1: 1 sample -> train (RecBole keeps one in
    # train); user 2: a single item gives no sample
    assert splits.counts() == {"train": 2, "valid": 1, "test": 1}
    assert splits.test.targets.tolist() == [3] and splits.valid.targets.tolist() == [2]
    assert splits.train.targets.tolist() == [1, 2]


def test_total_samples_and_padding_on_random_data():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 51, size=rng.integers(1, 40)) for _ in range(200)]
    data = SequenceData(sequences, num_items=50)
    for split in ("3:2:5", "6:2:2", "loo"):
        splits = build_splits(data, max_len=7, split=split)
        total = sum(splits.counts().values())
        assert total == data.num_interactions - data.num_users  # every prefix but the empty one
        for part in (splits.train, splits.valid, splits.test):
            seq, lengths, targets = part.batch()
            assert seq.shape == (len(part), 7) and lengths.max() <= 7
            positions = torch.arange(7)[None, :]
            assert (seq[positions >= lengths[:, None]] == 0).all()   # padding only after the items
            assert (seq[positions < lengths[:, None]] > 0).all()
            for row in rng.choice(len(part), size=min(20, len(part)), replace=False):
                user = int(part.user[row])
                t = int(part.target_index[row] - part.user_start[user])  # position of the target
                history = data.sequences[user][:t][-7:]
                assert seq[row, :len(history)].tolist() == history.tolist()
                assert int(targets[row]) == data.sequences[user][t]
    # per user, the three parts are in time order: train targets precede valid precede test
    splits = build_splits(data, max_len=7, split="3:2:5")
    for u in range(0, 200, 17):
        pos = [(splits_part.target_index[splits_part.user == u]).tolist()
               for splits_part in (splits.train, splits.valid, splits.test)]
        flat = pos[0] + pos[1] + pos[2]
        assert flat == sorted(flat)
