"""Chapter 9's check: the mean NDCG@k per history-length bucket (check_metric_by_length). The reference solution
(plain numpy, not the library) passes in any sequence type, a hand-computed case agrees with the library's
length_buckets + metric_by_group that the check uses as its reference, and each usual mistake fails with its
specific hint."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ttt4rec_edu.analysis import length_buckets, metric_by_group
from ttt4rec_edu.exercises import ExerciseFailed, check_metric_by_length
from ttt4rec_edu.exercises.experiments import _LENGTH_CASES, _length_case


def _gain(ranks, k, discount=lambda r: np.log2(r + 1.0), cut=lambda r, k: r <= k):
    r = np.asarray(ranks, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(cut(r, k), 1.0 / discount(r), 0.0)


def _codes(history, edges):
    return np.searchsorted(np.asarray(edges), history, side="right") - 1


def reference(ranks, history, edges, k):
    """The exercise's solution: per-sample NDCG@k, then the mean within each bucket [e_i, e_{i+1}) and [e_-1, ∞)."""
    gain = _gain(ranks, k)
    codes = _codes(history, edges)
    return [float(gain[codes == b].mean()) for b in range(len(edges))]


def test_reference_passes_and_prints_a_tick(capsys, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_metric_by_length(reference)
    out = capsys.readouterr().out
    assert result.passed and out.startswith("✓ check_metric_by_length"), out
    assert "2 cases" in result.message and "12 buckets" in result.message


@pytest.mark.parametrize("container", [tuple, np.asarray, pd.Series, torch.tensor])
def test_any_one_dimensional_sequence_is_accepted(container, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    assert check_metric_by_length(lambda r, h, e, k: container(reference(r, h, e, k))).passed


def test_library_reference_column_passes(monkeypatch):
    # the library's own answer, as a reader using ttt4rec_edu.analysis would return it (a pandas Series)
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    assert check_metric_by_length(
        lambda r, h, e, k: metric_by_group(r, length_buckets(h, e), f"ndcg@{k}")[f"ndcg@{k}"]).passed


def test_hand_computed_case_matches_the_library():
    ranks, history, edges, k = np.array([1, 3, 11, 2]), np.array([1, 2, 5, 60]), (1, 3, 51), 10
    # [1, 3): histories 1 and 2 → ranks 1 and 3 → (1/log2(2) + 1/log2(4)) / 2 = (1 + 0.5) / 2
    # [3, 51): history 5 → rank 11 > k → 0;   [51, ∞): history 60 → rank 2 → 1/log2(3)
    by_hand = [(1 / math.log2(2) + 1 / math.log2(4)) / 2, 0.0, 1 / math.log2(3)]
    assert by_hand[0] == 0.75
    groups = length_buckets(history, edges)
    assert list(groups.categories) == ["1–2", "3–50", "51+"]
    table = metric_by_group(ranks, groups, "ndcg@10")
    assert np.allclose(table["ndcg@10"].to_numpy(), by_hand, atol=1e-12, rtol=0)
    assert table["samples"].tolist() == [2, 1, 1]
    assert np.allclose(reference(ranks, history, edges, k), by_hand, atol=1e-12, rtol=0)


def test_cases_have_every_bucket_filled_and_edges_as_histories():
    for seed, k, edges in _LENGTH_CASES:
        ranks, history = _length_case(seed, k, edges)
        assert len(ranks) == 400 and ranks.min() >= 1 and ranks.max() <= 200 and history.min() >= 1
        assert (np.bincount(_codes(history, edges), minlength=len(edges)) > 0).all()
        assert set(edges) <= set(history.tolist()) and (ranks == 1).any()


def _closed_lower(ranks, history, edges, k):          # history == edge goes to the bucket below
    gain = _gain(ranks, k)
    codes = np.maximum(np.searchsorted(np.asarray(edges), history, side="left") - 1, 0)
    return [float(gain[codes == b].mean()) for b in range(len(edges))]


def _closed_masks(ranks, history, edges, k):          # (a <= h) & (h <= b): an edge's samples counted twice
    gain = _gain(ranks, k)
    bounds = list(zip(edges[:-1], edges[1:])) + [(edges[-1], np.inf)]
    return [float(gain[(history >= a) & (history <= b)].mean()) for a, b in bounds]


def _per_bucket(gain_fn):
    def fn(ranks, history, edges, k):
        gain, codes = gain_fn(ranks, k), _codes(history, edges)
        return [float(gain[codes == b].mean()) for b in range(len(edges))]
    return fn


def _raise(ranks, history, edges, k):
    raise KeyError("bucket")


@pytest.mark.parametrize("wrong, hint", [
    (_per_bucket(lambda r, k: _gain(r, k, discount=np.log2)), "not log2(rank)"),
    (_per_bucket(lambda r, k: (np.asarray(r) <= k).astype(float)), "that is HR@k"),
    (_closed_lower, "half-open"),
    (_closed_masks, "history < b, not history <= b"),
    (lambda r, h, e, k: reference(r, h, e, k)[:-1], "the last bucket is open"),
    (_per_bucket(lambda r, k: _gain(r, k, discount=lambda x: np.log2(x + 2.0))), "1-based"),
    (_per_bucket(lambda r, k: _gain(r, k, discount=lambda x: np.log2(x + 2.0), cut=lambda x, k: x < k)),
     "1-based"),
    (lambda r, h, e, k: float(_gain(r, k).mean()), "expected 7 values"),
    (lambda r, h, e, k: [float(_gain(r, k).mean())] * len(e), "mean over all samples"),
    (lambda r, h, e, k: reference(r, h, e, k) + [0.0], "expected 7 values"),
    (_raise, "raised KeyError"),
    (lambda r, h, e, k: np.asarray(reference(r, h, e, k)) * np.r_[1.0, 1.0, 1.0, 1.1, 1.0, 1.0, 1.0][:len(e)],
     "first bucket that differs is '8–12'"),
])
def test_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch, capsys):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_metric_by_length(wrong)
    assert not result.passed and hint in result.message, result.message
    assert capsys.readouterr().out.startswith("✗ check_metric_by_length")


def test_log2_rank_gives_inf_and_is_recognised(monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    bad = _per_bucket(lambda r, k: _gain(r, k, discount=np.log2))
    assert not np.isfinite(bad(*_length_case(90, 10, (1, 3, 5, 8, 13, 21, 51)), (1, 3, 5, 8, 13, 21, 51),
                               10)).all()
    result = check_metric_by_length(bad)
    assert "not finite" in result.message and "divides by zero" in result.message, result.message


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="that is HR@k"):
        check_metric_by_length(_per_bucket(lambda r, k: (np.asarray(r) <= k).astype(float)))
    assert check_metric_by_length(reference).passed   # a right answer goes through in strict mode


def test_float32_answer_gets_float32_tolerance_but_not_more(monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    as_float32 = lambda r, h, e, k: torch.tensor(reference(r, h, e, k), dtype=torch.float32)
    assert check_metric_by_length(as_float32).passed
    off = lambda r, h, e, k: np.asarray(reference(r, h, e, k)) + 1e-7  # float64 and 1e-7 off: too far
    result = check_metric_by_length(off)
    assert not result.passed and "largest difference is 1e-07" in result.message, result.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda r, h, e, k: [], "got 0"),
    (lambda r, h, e, k: np.zeros((len(e), 2)), "got an array of shape"),
    (lambda r, h, e, k: metric_by_group(r, length_buckets(h, e), f"ndcg@{k}"), "'ndcg@10' column"),
    (lambda r, h, e, k: "high", "one per bucket"),
])
def test_wrong_shapes_and_types_are_explained(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_metric_by_length(wrong)
    assert not result.passed and hint in result.message, result.message
