"""Repeat consumption (data.stats.repeat_stats) on sequences small enough to count by hand."""
import numpy as np
import pytest

from ttt4rec_edu.data import SequenceData, build_splits, repeat_stats
from ttt4rec_edu.data.stats import previous_occurrence


def test_previous_occurrence_by_hand():
    data = SequenceData([[1, 2, 1, 1], [2, 3, 2]], num_items=3)
    # flat: 1 2 1 1 | 2 3 2 ; user 1's item 2 does not see user 0's item 2
    assert previous_occurrence(data).tolist() == [-1, -1, 0, 2, -1, -1, 4]


def test_repeat_stats_by_hand():
    # user 0: 1 2 3 1 (the last target repeats item 1, three steps back); user 1: 4 5 6 7 (no repeat)
    data = SequenceData([[1, 2, 3, 1], [4, 5, 6, 7]], num_items=7)
    wide = repeat_stats(data, split="loo", max_len=3)
    assert wide["users_with_repeat"] == 0.5
    assert wide["targets_in_context"] == pytest.approx(1 / 6)     # 6 targets, one repeat within 3 items
    assert wide["test_targets"] == 2 and wide["test_targets_in_context"] == 0.5
    narrow = repeat_stats(data, split="loo", max_len=2)           # item 1 is 3 back: outside a window of 2
    assert narrow["targets_in_context"] == 0.0 and narrow["test_targets_in_context"] == 0.0
    assert narrow["users_with_repeat"] == 0.5                      # a property of the sequences, not the window


def test_repeat_stats_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    data = SequenceData([rng.integers(1, 8, size=rng.integers(2, 15)) for _ in range(40)], num_items=7)
    test = build_splits(data, max_len=4, split="3:2:5").test
    seq, lengths, targets = test.batch()
    expected = np.mean([int(t) in seq[i, :lengths[i]].tolist() for i, t in enumerate(targets.tolist())])
    assert repeat_stats(data, split="3:2:5", max_len=4)["test_targets_in_context"] == pytest.approx(expected)


def test_repeat_stats_rejects_a_bad_window():
    with pytest.raises(ValueError, match="positive integer"):
        repeat_stats(SequenceData([[1, 2]], num_items=2), max_len=0)


def test_repeat_stats_takes_splits_already_built():
    data = SequenceData([[1, 2, 1, 3, 2], [4, 4, 5, 6]], num_items=6)
    splits = build_splits(data, max_len=3, split="3:2:5")
    assert repeat_stats(data, splits, 3) == repeat_stats(data, "3:2:5", 3)
    with pytest.raises(ValueError, match="max length 3, not 4"):
        repeat_stats(data, splits, 4)
