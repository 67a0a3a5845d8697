"""The synthetic interest-drift generator: structure, determinism, ground truth, drift control, learnability."""
import numpy as np
import pytest

from ttt4rec_edu.data import SequenceData, build_splits, dataset_stats, make_drift_data


def hit_rates(data):
    """HR@10 on each user's last item of popularity vs a first-order Markov (bigram) predictor, both
    counted on everything but the last item."""
    n = data.num_items
    pop = np.zeros(n + 1)
    bigram = np.zeros((n + 1, n + 1))
    for seq in data.sequences:
        train = seq[:-1]
        np.add.at(pop, train, 1)
        np.add.at(bigram, (train[:-1], train[1:]), 1)
    top_pop = set((np.argsort(-pop[1:], kind="stable")[:10] + 1).tolist())
    pop_hits = bigram_hits = 0
    for seq in data.sequences:
        pop_hits += int(seq[-1] in top_pop)
        scores = bigram[seq[-2], 1:] + 1e-6 * pop[1:]  # popularity breaks ties
        bigram_hits += int(seq[-1] in set((np.argsort(-scores, kind="stable")[:10] + 1).tolist()))
    return pop_hits / data.num_users, bigram_hits / data.num_users


def test_same_structure_as_real_data():
    data = make_drift_data(num_users=300, num_items=120, num_topics=6, min_len=10, max_len=30, seed=3)
    assert isinstance(data, SequenceData) and data.num_users == 300 and data.num_items == 120
    lengths = [len(s) for s in data.sequences]
    assert min(lengths) >= 10 and max(lengths) <= 30
    assert all(s.dtype == np.int64 and s.min() >= 1 and s.max() <= 120 for s in data.sequences)
    assert len(data.user_tokens) == 300 and data.item_tokens == [str(j) for j in range(1, 121)]
    assert data.meta["max_len"] == 30 and data.meta["source"] == "synthetic"
    splits = build_splits(data, max_len=data.meta["max_len"], split="3:2:5")  # usable by the protocol
    assert sum(splits.counts().values()) == data.num_interactions - data.num_users
    assert dataset_stats(data)["users"] == 300


def test_deterministic_by_seed():
    a = make_drift_data(num_users=200, seed=7, drift=0.1)
    b = make_drift_data(num_users=200, seed=7, drift=0.1)
    c = make_drift_data(num_users=200, seed=8, drift=0.1)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert all(np.array_equal(x, y) for x, y in zip(a.meta["topics"], b.meta["topics"]))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))


@pytest.mark.parametrize("mode", ["switch", "gradual"])
def test_ground_truth_is_consistent(mode):
    data = make_drift_data(num_users=400, num_items=200, num_topics=8, drift=0.1, mode=mode, seed=0)
    item_topic = data.meta["item_topic"]
    assert item_topic[0] == -1 and set(item_topic[1:].tolist()) == set(range(8))
    for seq, topics, switches in zip(data.sequences, data.meta["topics"], data.meta["switch_points"]):
        assert len(topics) == len(seq)
        assert np.array_equal(item_topic[seq], topics)  # every item comes from the topic behind it
        assert np.all((switches >= 1) & (switches < len(seq)))
    if mode == "switch":  # a switch point is exactly where the topic changes
        for topics, switches in zip(data.meta["topics"], data.meta["switch_points"]):
            assert np.array_equal(np.flatnonzero(topics[1:] != topics[:-1]) + 1, switches)


@pytest.mark.parametrize("mode", ["switch", "gradual"])
def test_drift_rate_controls_switches(mode):
    counts = []
    for drift in (0.0, 0.05, 0.2):
        data = make_drift_data(num_users=1000, num_items=200, num_topics=8, min_len=30, max_len=30,
                               drift=drift, mode=mode, seed=1)
        per_user = np.mean([len(s) for s in data.meta["switch_points"]])
        counts.append(per_user)
        if drift == 0.0:  # no drift: one topic per user for the whole sequence
            assert all(len(set(t.tolist())) == 1 for t in data.meta["topics"])
    assert counts[0] == 0 and counts[0] < counts[1] < counts[2]
    if mode == "switch":  # a jump with probability drift at each of the 29 steps after the first
        assert counts[1] == pytest.approx(0.05 * 29, rel=0.2) and counts[2] == pytest.approx(0.2 * 29, rel=0.2)
    else:  # the interest moves drift * 29 topics; the dominant topic changes at every half-way crossing
        assert counts[1] == 1 and counts[2] == 6  # 1.45 topics crosses 0.5 once; 5.8 crosses 0.5..5.5


def test_gradual_blends_neighbouring_topics():
    data = make_drift_data(num_users=500, num_items=200, num_topics=10, min_len=40, max_len=40, drift=0.05,
                           mode="gradual", seed=2)
    for topics, interest in zip(data.meta["topics"], data.meta["interest"]):
        # topics move at most one step around the ring at a time (no sudden jumps)
        step = np.abs(np.diff(topics))
        assert np.all((step <= 1) | (step == 9))
        move = (np.diff(interest) + 5) % 10 - 5  # signed move around the ring of 10 topics
        assert np.allclose(np.abs(move), 0.05)  # the interest drifts by exactly `drift` topics per step


def test_learnable_and_popularity_not_uniform():
    data = make_drift_data(num_users=2000, num_items=500, num_topics=10, drift=0.05, seed=1)
    pop_hr, bigram_hr = hit_rates(data)
    assert bigram_hr > 3 * pop_hr and bigram_hr > 0.5  # sequence structure beats popularity clearly
    assert pop_hr > 10 / 500 * 2                       # popularity is itself better than random
    counts = np.sort(np.bincount(np.concatenate(data.sequences), minlength=501)[1:])[::-1]
    assert counts[:50].sum() / counts.sum() > 0.2      # top 10% of items: well above a uniform 10%
    # the more drift, the less a bigram can predict
    drifting = make_drift_data(num_users=2000, num_items=500, num_topics=10, drift=0.5, seed=1)
    assert hit_rates(drifting)[1] < bigram_hr


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        make_drift_data(mode="sideways")
    with pytest.raises(ValueError, match="drift"):
        make_drift_data(drift=1.5)
    with pytest.raises(ValueError, match="2 items per topic"):
        make_drift_data(num_items=10, num_topics=8)
    with pytest.raises(ValueError, match="min_len"):
        make_drift_data(min_len=20, max_len=10)
