"""history_study: the counting heuristics by hand, the pairing of arms, and one tiny run with every arm."""
import numpy as np
import pandas as pd
import pytest
import torch

from ttt4rec_edu.data import SequenceData, build_splits
from ttt4rec_edu.history_study import (ARMS, AFTER_SWITCH, LastItemCounts, RecentItems, WorldConfig,
                                       paired_differences, run_one)


def _splits():
    # leave-one-out keeps one training sample per user: item 1 -> 5, 1 -> 5, 1 -> 2 (5: the most popular target)
    data = SequenceData([[1, 5, 3, 3], [1, 5, 3, 4], [1, 2, 3, 3]], num_items=6)
    return build_splits(data, max_len=3, split="loo")


def test_recent_items_ranks_the_users_own_items_most_recent_first():
    model = RecentItems(6).fit(_splits().train)
    scores = model.score_all(torch.tensor([[4, 2, 6], [2, 0, 0]]), torch.tensor([3, 1]))
    assert scores[0].argsort(descending=True)[:3].tolist() == [6, 2, 4]
    assert scores[1].argmax().item() == 2
    assert scores[1, 5] > scores[1, 1] and scores[1, 5] < 1          # then popularity, below any own item
    assert scores[:, 0].isinf().all()


def test_last_item_counts_reads_the_last_item_only():
    model = LastItemCounts(6).fit(_splits().train)
    a = model.score_all(torch.tensor([[4, 1, 0]]), torch.tensor([2]))
    b = model.score_all(torch.tensor([[6, 2, 1]]), torch.tensor([3]))
    assert torch.equal(a, b)
    assert a[0].argsort(descending=True)[:2].tolist() == [5, 2]      # followed item 1 twice, then once


def test_paired_differences_pairs_by_seed():
    rows = []
    for seed, (x, y) in enumerate([(0.5, 0.4), (0.3, 0.25), (0.6, 0.45)]):
        rows += [{"repeat": 0.2, "seed": seed, "arm": "A", "ndcg@10": x},
                 {"repeat": 0.2, "seed": seed, "arm": "B", "ndcg@10": y}]
    out = paired_differences(pd.DataFrame(rows), [("A", "B")], by=["repeat"])
    row = out.loc[(0.2, "A − B")]
    d = np.array([0.1, 0.05, 0.15])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)             # t_{0.975, 2}
    assert row["mean"] == pytest.approx(d.mean()) and row["n"] == 3 and row["positive"] == 3
    assert row["low"] == pytest.approx(d.mean() - half) and row["high"] == pytest.approx(d.mean() + half)
    with pytest.raises(KeyError, match="not both"):
        paired_differences(pd.DataFrame(rows), [("A", "C")], by=["repeat"])


def test_one_tiny_run_gives_every_arm_on_the_same_test_samples():
    cfg = WorldConfig(num_users=30, num_items=40, num_topics=4, min_len=8, max_len=12, context=8, epochs=1,
                      hidden_size=8, num_heads=2, ffn_size=16, taste=0.9, taste_drift=0.3)
    rows = run_one(cfg, seed=0)
    assert sorted(r["arm"] for r in rows) == sorted(ARMS)
    assert len({r["test_samples"] for r in rows}) == 1
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["TTT4Rec"]["time_s"] == by_arm["TTT4Rec, η=0 at test"]["time_s"]   # one trained model
    for r in rows:
        assert 0 <= r["ndcg@10"] <= r["hr@10"] <= 1
        assert any(np.isfinite(r[label]) for label, _, _ in AFTER_SWITCH)
    assert max(r["ndcg@10"] for r in rows) == by_arm["oracle"]["ndcg@10"]


def test_world_config_names_unknown_fields():
    with pytest.raises(ValueError, match="unknown WorldConfig fields"):
        WorldConfig().replace(rho=0.3)
