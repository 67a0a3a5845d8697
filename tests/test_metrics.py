"""Full-ranking metrics: hand-computed values, the strictly-higher tie rule, padding, chunked ≡ unchunked."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from ttt4rec_edu.data.protocol import SequenceData, build_splits
from ttt4rec_edu.metrics import (batch_ranks, chunked_ranks, compute_ranks, default_item_chunk, evaluate,
                                 hit_rate, metrics_from_ranks, ndcg, ranks_from_scores)

NEG_INF = float("-inf")



def test_ranks_by_hand():
    # items 1..5; column 0 is padding
    scores = torch.tensor([
        [NEG_INF, 0.1, 0.9, 0.5, 0.7, 0.3],  # target 3 (0.5): 0.9, 0.7 higher → rank 3
        [NEG_INF, 0.1, 0.9, 0.5, 0.7, 0.3],  # target 2 (0.9): nobody higher → rank 1
        [NEG_INF, 0.1, 0.9, 0.5, 0.7, 0.3],  # target 1 (0.1): all four others higher → rank 5
    ])
    ranks = ranks_from_scores(scores, torch.tensor([3, 2, 1]))
    assert ranks.tolist() == [3, 1, 5]
    assert ranks.dtype == torch.long


def test_ties_use_strictly_higher_rule():
    # target 2 tied with items 1 and 4 at 0.5; only item 3 (0.8) is strictly higher → rank 2
    scores = torch.tensor([[NEG_INF, 0.5, 0.5, 0.8, 0.5]])
    assert ranks_from_scores(scores, torch.tensor([2])).tolist() == [2]
    # all items tied: every target is rank 1
    flat = torch.zeros(1, 6)
    assert ranks_from_scores(flat, torch.tensor([4])).tolist() == [1]


def test_padding_never_ranks_even_with_a_huge_score():
    scores = torch.tensor([[1e9, 0.2, 0.1]])  # a model that forgot to mask column 0
    assert ranks_from_scores(scores, torch.tensor([1])).tolist() == [1]
    q = torch.tensor([[1.0, 0.0]])
    table = torch.tensor([[100.0, 0.0], [1.0, 0.0], [0.5, 0.0]])  # padding row scores 100
    assert chunked_ranks(q, table, torch.tensor([1]), item_chunk=1).tolist() == [1]


def test_hr_and_ndcg_by_hand():
    ranks = torch.tensor([1, 3, 10, 11, 60])
    assert hit_rate(ranks, 10) == pytest.approx(3 / 5)
    assert hit_rate(ranks, 50) == pytest.approx(4 / 5)
    assert hit_rate(ranks, 1) == pytest.approx(1 / 5)
    expected10 = (1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(11)) / 5
    expected50 = expected10 + (1 / math.log2(12)) / 5
    assert ndcg(ranks, 10) == pytest.approx(expected10, abs=1e-12)
    assert ndcg(ranks, 50) == pytest.approx(expected50, abs=1e-12)
    assert metrics_from_ranks(ranks) == {
        "hr@10": pytest.approx(0.6), "hr@50": pytest.approx(0.8),
        "ndcg@10": pytest.approx(expected10), "ndcg@50": pytest.approx(expected50)}


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="k must be"):
        hit_rate(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="empty"):
        ndcg(torch.tensor([], dtype=torch.long), 10)
    for bad in ([0], torch.tensor([3, -1]), torch.tensor([float("nan")])):  # ndcg([0], 10) was inf
        with pytest.raises(ValueError, match="1-based"):
            ndcg(bad, 10)
        with pytest.raises(ValueError, match="1-based"):
            hit_rate(bad, 10)
    assert ndcg([1], 10) == 1.0 and hit_rate([1, 11], 10) == 0.5
    with pytest.raises(ValueError, match="real item ids"):
        ranks_from_scores(torch.zeros(1, 4), torch.tensor([0]))  # padding as a target
    with pytest.raises(ValueError, match="real item ids"):
        ranks_from_scores(torch.zeros(1, 4), torch.tensor([4]))  # out of range
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(torch.tensor([[NEG_INF, float("nan"), 0.0]]), torch.tensor([1]))


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 50, 1000, None])
def test_chunked_equals_unchunked_exactly(chunk):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(37, 16, generator=gen)
    table = torch.randn(301, 16, generator=gen)
    targets = torch.randint(1, 301, (37,), generator=gen)
    full = ranks_from_scores(q @ table.T, targets)
    assert torch.equal(chunked_ranks(q, table, targets, item_chunk=chunk), full)
    assert full.min() >= 1 and full.max() <= 300


def test_chunked_with_exact_ties():
    # integer embeddings → exact float arithmetic; duplicate rows make genuine ties with the target
    gen = torch.Generator().manual_seed(1)
    table = torch.randint(-3, 4, (41, 4), generator=gen).float()
    table[7] = table[5]
    table[20] = table[5]
    q = torch.randint(-3, 4, (12, 4), generator=gen).float()
    targets = torch.full((12,), 5, dtype=torch.long)
    full = ranks_from_scores(q @ table.T, targets)
    for chunk in (1, 4, 6, 40, 100):
        assert torch.equal(chunked_ranks(q, table, targets, item_chunk=chunk), full)
    # the tied copies 7 and 20 never push target 5 down: its rank counts only strictly higher items
    scores = q @ table.T
    manual = 1 + (scores[:, 1:] > scores[:, 5:6]).sum(1)
    assert torch.equal(full, manual)


class DotModel(nn.Module):
    """score = mean of the history's item embeddings · item embedding, with the encode/item_table hooks."""

    def __init__(self, num_items, dim=8):
        super().__init__()
        self.emb = nn.Embedding(num_items + 1, dim, padding_idx=0)

    def _encode(self, item_seq, lengths):
        return self.emb(item_seq).sum(1) / lengths.clamp(min=1)[:, None].float()

    def score_all(self, item_seq, lengths):
        s = self._encode(item_seq, lengths) @ self.emb.weight.T
        s[:, 0] = NEG_INF
        return s

    def encode(self, item_seq, lengths):
        return self._encode(item_seq, lengths)

    def item_table(self):
        return self.emb.weight


class NoHooksModel(DotModel):
    """Same scores, but only through ``score_all`` (the metrics' row-chunk fallback)."""

    encode = None
    item_table = None


def _tiny_splits(num_users=30, num_items=50, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, num_items + 1, size=rng.integers(3, 12)) for _ in range(num_users)]
    return build_splits(SequenceData(seqs, num_items), max_len=5, split="3:2:5")


def test_evaluate_hooks_and_fallback_agree_with_full_scores():
    torch.manual_seed(0)
    splits = _tiny_splits()
    with_hooks = DotModel(50)
    without = NoHooksModel(50)
    without.load_state_dict(with_hooks.state_dict())
    item_seq, lengths, targets = splits.test.batch()
    with torch.no_grad():
        reference = ranks_from_scores(with_hooks.score_all(item_seq, lengths), targets)
    # small batches / chunks / memory budgets force many chunks on both paths
    r1 = compute_ranks(with_hooks, splits.test, batch_size=7, item_chunk=3)
    r2 = compute_ranks(without, splits.test, batch_size=7, memory_budget=1)  # 1 row per score_all block
    r3 = compute_ranks(without, splits.test, batch_size=4096)
    assert torch.equal(r1, reference) and torch.equal(r2, reference) and torch.equal(r3, reference)
    m = evaluate(with_hooks, splits.test, ks=(10, 50), batch_size=5, item_chunk=11)
    assert set(m) == {"hr@10", "hr@50", "ndcg@10", "ndcg@50"}
    assert m == metrics_from_ranks(reference)
    assert 0 <= m["ndcg@10"] <= m["hr@10"] <= m["hr@50"] <= 1


def test_evaluate_restores_training_mode_and_rejects_empty():
    model = DotModel(50)
    model.train()
    splits = _tiny_splits()
    evaluate(model, splits.valid)
    assert model.training
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, splits.valid.subset(torch.zeros(0, dtype=torch.long)))


def test_pop_model_through_fallback_path():
    from ttt4rec_edu.models import build_model

    splits = _tiny_splits()
    pop = build_model("pop", 50, 5)
    pop.fit_statistics(*splits.train.batch())
    ranks = batch_ranks(pop, *splits.test.batch())
    counts = pop.item_count
    targets = splits.test.targets
    manual = 1 + (counts[1:][None, :] > counts[targets][:, None]).sum(1)
    assert torch.equal(ranks, manual)


def test_default_item_chunk_respects_budget():
    chunk = default_item_chunk(4096, 512 * 2**20)
    assert 4096 * chunk * 4 <= 512 * 2**20 and chunk == 32768
    assert default_item_chunk(10**9, 1) == 1


def test_chunked_tie_across_chunk_boundary():
    """Targets 1 and 2 score the same (0.4) but sit in different chunks: both get rank 1, item 3 rank 3."""
    q = torch.tensor([[1.0, 1.0]])
    table = torch.tensor([[0.0, 0.0], [0.25, 0.15], [0.2, 0.2], [0.0, 0.1]])
    scores = q @ table.T
    assert scores[0, 1] == scores[0, 2]  # an exact tie in float32
    for target in (1, 2):
        assert chunked_ranks(q, table, torch.tensor([target]), item_chunk=1).tolist() == [1]
    assert chunked_ranks(q, table, torch.tensor([3]), item_chunk=2).tolist() == [3]


def test_infinite_scores_follow_the_strictly_higher_rule():
    inf = float("inf")
    scores = torch.tensor([
        [NEG_INF, NEG_INF, 0.5, NEG_INF, 2.0],  # target 1 at -inf: items 2 and 4 are higher → 3
        [NEG_INF, inf, 0.5, inf, 2.0],          # target 3 at +inf tied with item 1 → 1
        [NEG_INF, inf, 0.5, inf, 2.0],          # target 4 (2.0): two +inf higher → 3
    ])
    targets = torch.tensor([1, 3, 4])
    assert ranks_from_scores(scores, targets).tolist() == [3, 1, 3]
    direct = 1 + (scores[:, 1:] > scores.gather(1, targets[:, None])).sum(1)
    assert ranks_from_scores(scores, targets).tolist() == direct.tolist()


def test_cpu_evaluation_in_blocks_gives_the_one_block_ranks(monkeypatch):
    """On a CPU batch_ranks encodes CPU_ENCODE_ROWS sequences at a time and chunked_ranks scores blocks of at most
    CPU_SCORE_BLOCK_BYTES into one reused buffer (speed, issue 26): the ranks and ties are those of one block."""
    from ttt4rec_edu import metrics
    from ttt4rec_edu.models import build_model

    torch.manual_seed(0)
    model = build_model("ttt4rec", 300, 12).eval()
    item_seq = torch.randint(1, 301, (70, 12))
    lengths = torch.randint(1, 13, (70,))
    targets = torch.randint(1, 301, (70,))
    with torch.no_grad():
        expected = ranks_from_scores(model.score_all(item_seq, lengths), targets)
    monkeypatch.setattr(metrics, "CPU_ENCODE_ROWS", 16)              # 70 rows: five blocks, the last one short
    monkeypatch.setattr(metrics, "CPU_SCORE_BLOCK_BYTES", 70 * 4 * 37)  # 37 items per block, the last one short
    ranks, ties = batch_ranks(model, item_seq, lengths, targets, with_ties=True)
    assert torch.equal(ranks, expected)
    query, table = model.encode(item_seq, lengths).detach(), model.item_table().detach()
    assert torch.equal(ties, chunked_ranks(query, table, targets, item_chunk=301, with_ties=True)[1])
