"""The history world (data.synthetic_history): its knobs, its ground truth and its oracle."""
import numpy as np
import pytest
import torch

from ttt4rec_edu.data import build_splits, make_history_data, oracle_ranks, repeat_stats, steps_since_switch
from ttt4rec_edu.history_study import LastItemCounts, RecentItems
from ttt4rec_edu.metrics import compute_ranks, metrics_from_ranks
from ttt4rec_edu.models import build_model
from ttt4rec_edu.train import TrainConfig, train
from ttt4rec_edu.utils import set_seed


def test_same_seed_same_data_other_seed_other_data():
    a = make_history_data(num_users=30, num_items=40, num_topics=4, repeat=0.3, taste=0.5, taste_drift=0.1, seed=3)
    b = make_history_data(num_users=30, num_items=40, num_topics=4, repeat=0.3, taste=0.5, taste_drift=0.1, seed=3)
    c = make_history_data(num_users=30, num_items=40, num_topics=4, repeat=0.3, taste=0.5, taste_drift=0.1, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    for key in ("oracle_rank", "oracle_ties", "sources", "taste_switches", "topics"):
        assert all(np.array_equal(x, y) for x, y in zip(a.meta[key], b.meta[key]))
    assert not all(np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7])
def test_the_stated_share_of_steps_are_repeats(rho):
    data = make_history_data(num_users=300, num_items=100, repeat=rho, seed=1)
    sources = np.concatenate([s[1:] for s in data.meta["sources"]])   # the first item cannot repeat
    n = sources.size
    share = float((sources == 2).mean())
    tolerance = 4 * np.sqrt(max(rho * (1 - rho), 1e-12) / n)           # four binomial standard errors
    assert abs(share - rho) <= tolerance, (share, rho, tolerance)
    # every repeat draw is an item of the user's own history, so the targets in a window long enough to hold
    # the whole history include at least the repeats
    wide = repeat_stats(data, split="3:2:5", max_len=data.meta["max_len"])
    assert wide["targets_in_context"] >= share - 1e-12


def test_a_repeat_is_always_an_item_of_the_users_own_history():
    data = make_history_data(num_users=100, num_items=100, repeat=0.5, seed=2)
    for seq, src in zip(data.sequences, data.meta["sources"]):
        for t in np.flatnonzero(src == 2):
            assert seq[t] in seq[:t]


def test_oracle_ranks_follow_the_distribution_rebuilt_from_the_ground_truth():
    """Without taste the next-item distribution is a function of (topic, last item, history): rebuild it
    from meta and the sequences alone and rank the target by it, as the generator's oracle did."""
    rho, markov, decay = 0.4, 0.6, 0.8
    data = make_history_data(num_users=40, num_items=60, num_topics=3, repeat=rho, markov=markov,
                             topic_switch=0.3, repeat_decay=decay, seed=5)
    pop, succ = data.meta["popularity"], data.meta["successors"]
    checked = 0
    for seq, topics, ranks, ties in zip(data.sequences, data.meta["topics"], data.meta["oracle_rank"],
                                        data.meta["oracle_ties"]):
        for t in range(1, len(seq)):
            recent = np.zeros(61)
            for s in range(t):
                recent[seq[s]] += decay ** (t - 1 - s)
            follow = markov * (topics[t] == topics[t - 1])
            p = rho * recent / recent.sum() + (1 - rho) * (follow * succ[seq[t - 1]] + (1 - follow) * pop[topics[t]])
            p_target = p[seq[t]]
            assert p_target > 0
            higher = int((p[1:] > p_target * (1 + 1e-9)).sum())
            close = int((np.abs(p[1:] - p_target) <= 1e-9 * p_target).sum()) - 1
            assert ranks[t] - 1 <= higher + close and ranks[t] - 1 + ties[t] >= higher, (t, ranks[t], higher)
            checked += 1
    assert checked > 500


def test_steps_since_switch_by_hand():
    data = make_history_data(num_users=50, num_items=40, num_topics=4, taste=0.9, taste_drift=0.2, seed=0)
    test = build_splits(data, max_len=10, split="3:2:5").test
    after = steps_since_switch(data, test)
    lengths = np.array([len(s) for s in data.sequences])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for i in range(0, len(test), 37):
        u = int(test.user[i])
        t = int(test.target_index[i]) - starts[u]
        switches = [s for s in data.meta["taste_switches"][u] if s <= t]
        assert after[i] == (t - switches[-1] if switches else -1)
    assert (after >= 0).any() and (after == -1).any()


def test_the_oracle_beats_every_model_on_average():
    """Including a trained model: the oracle ranks by the true distribution given the latent state."""
    data = make_history_data(num_users=80, num_items=60, num_topics=4, repeat=0.4, taste=0.8,
                             taste_drift=0.05, seed=0)
    splits = build_splits(data, max_len=15, split="3:2:5")
    ranks, ties = oracle_ranks(data, splits.test)
    oracle = metrics_from_ranks(torch.as_tensor(ranks), (10,), torch.as_tensor(ties), "average")
    set_seed(0)
    model = build_model("ttt4rec", splits.num_items, splits.max_len, hidden_size=16, num_heads=2, ffn_size=32)
    train(model, splits, TrainConfig(epochs=1, lr=1e-2, batch_size=256, ks=(10,), progress=False, seed=0,
                                     device="cpu"))
    models = {"ttt4rec": model, "recent": RecentItems(60).fit(splits.train),
              "last item": LastItemCounts(60).fit(splits.train), "pop": build_model("pop", 60, 15)}
    models["pop"].fit_statistics(*splits.train.batch())
    for name, m in models.items():
        r, t = compute_ranks(m, splits.test, with_ties=True)
        got = metrics_from_ranks(r, (10,), t, "average")
        assert got["ndcg@10"] < oracle["ndcg@10"] and got["hr@10"] < oracle["hr@10"], (name, got, oracle)


def test_taste_without_drift_never_switches_and_topics_stay_without_topic_switches():
    data = make_history_data(num_users=20, num_items=40, num_topics=4, taste=1.0, topic_switch=0.0, markov=0.0,
                             seed=0)
    assert all(s.size == 0 for s in data.meta["taste_switches"])
    for seq, topics in zip(data.sequences, data.meta["topics"]):
        assert (topics == topics[0]).all() and (data.meta["item_topic"][seq] == topics[0]).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(repeat=1.5), "repeat"), (dict(taste=-0.1), "taste"), (dict(taste_drift=2), "taste_drift"),
    (dict(drift_mode="sideways"), "drift_mode"), (dict(num_items=5, num_topics=4), "items per topic"),
    (dict(min_len=1), "min_len"), (dict(num_users=0), "num_users"), (dict(repeat_decay=0), "repeat_decay")])
def test_bad_settings_are_refused_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_history_data(**kwargs)
