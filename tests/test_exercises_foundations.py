"""The checks of the book's part *Foundations* (ttt4rec_edu.exercises.foundations, chapters 1-2): each one passes
the reference solution and fails wrong answers with a specific hint.

A check that cannot fail would teach nothing, so every check is fed typical mistakes (forgotten bump rule,
log2(rank) instead of log2(rank + 1), the rotate_half pairing, ...) and must name the mistake; the checks of
section 1.7 (a float32 timestamp collision, HR@10 with ties under two policies) must also accept right answers
written in different ways. Reference solutions are the library's own functions or a few lines of torch.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ttt4rec_edu.data.protocol import split_counts
from ttt4rec_edu.exercises import (check_float32_collision, check_hr_with_ties, check_ndcg, check_rope_rotation,
                                   check_split_counts, foundations)
from ttt4rec_edu.metrics import hit_rate, ndcg, rank_ties_from_scores
from ttt4rec_edu.rope import apply_rope

from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)


# ---- chapter 1 ------------------------------------------------------------------------------------------

def test_split_counts_reference_passes(capsys):
    assert_passes(check_split_counts(split_counts), capsys)
    assert "80 cases" in check_split_counts(split_counts).message


def test_split_counts_without_bump_rule_gets_bump_hint(capsys):
    def floor_only(n, ratios):
        valid, test = int(ratios[1] * n), int(ratios[2] * n)
        return n - valid - test, valid, test
    # n = 3 at 3:2:5: floor gives valid 0, test 1; valid's 0.2 * 3 = 0.6 is in (0, 1), so it takes one from train
    assert_fails(check_split_counts(floor_only), capsys, "strictly between 0 and 1", "expected (1, 1, 1)")


def test_split_counts_rounding_and_order_mistakes(capsys):
    def rounded(n, ratios):
        valid, test = round(ratios[1] * n), round(ratios[2] * n)
        return n - valid - test, valid, test
    assert_fails(check_split_counts(rounded), capsys, "does not round")
    assert_fails(check_split_counts(lambda n, r: split_counts(n, r)[::-1]), capsys, "(train, valid, test)")
    assert_fails(check_split_counts(lambda n, r: (n, 1, 1)), capsys, "add up to num_samples")


def test_ndcg_reference_and_hand_cases_agree(capsys):
    assert_passes(check_ndcg(ndcg), capsys)
    for ranks, k, expected in foundations._NDCG_HAND_CASES:   # the hand values are right, independently
        gains = [1 / math.log2(r + 1) if r <= k else 0.0 for r in ranks]
        assert math.isclose(sum(gains) / len(gains), expected)


def test_ndcg_typical_mistakes_get_specific_hints(capsys):
    def log2_rank(ranks, k):
        r = ranks.double()
        return float(torch.where(r <= k, 1 / torch.log2(r), torch.zeros_like(r)).mean())
    assert_fails(check_ndcg(log2_rank), capsys, "log2(rank + 1)")

    def natural_log(ranks, k):
        r = ranks.double()
        return float(torch.where(r <= k, 1 / torch.log(r + 1), torch.zeros_like(r)).mean())
    assert_fails(check_ndcg(natural_log), capsys, "base-2")

    def strict_cutoff(ranks, k):
        r = ranks.double()
        return float(torch.where(r < k, 1 / torch.log2(r + 1), torch.zeros_like(r)).mean())
    assert_fails(check_ndcg(strict_cutoff), capsys, "rank <= k", "ranks=[7], k=7")

    def summed(ranks, k):
        r = ranks.double()
        return float(torch.where(r <= k, 1 / torch.log2(r + 1), torch.zeros_like(r)).sum())
    assert_fails(check_ndcg(summed), capsys, "mean")

    def no_cutoff(ranks, k):
        return float((1 / torch.log2(ranks.double() + 1)).mean())
    assert_fails(check_ndcg(no_cutoff), capsys, "contribute 0")

    assert_fails(check_ndcg(lambda ranks, k: "high"), capsys, "one number")


# ---- check_float32_collision ----------------------------------------------------------------------------

def test_collisions_are_accepted(capsys):
    assert_passes(check_float32_collision((875_664_010, 875_664_030)), capsys)   # MovieLens era, 64 s grid
    assert_passes(check_float32_collision([np.float64(1.3e9), np.float64(1.3e9 + 50)]), capsys)  # Gowalla
    assert_passes(check_float32_collision((0.1, 0.1 + 1e-9)), capsys)            # any two, fractional too


def test_equal_times_are_rejected(capsys):
    assert_fails(check_float32_collision((875_664_000, 875_664_000.0)), capsys, "same time", "must differ")


def test_times_too_far_apart_are_rejected(capsys):
    assert_fails(check_float32_collision((1e9, 1e9 + 100)), capsys, "spacing", "64", "move them closer")


def test_small_times_are_rejected_with_the_2_24_hint(capsys):
    assert_fails(check_float32_collision((1000, 1001)), capsys, "2**24", "Unix times")


def test_float16_collision_is_named(capsys):
    assert_fails(check_float32_collision((1000, 1000.25)), capsys, "float16", "not in float32")


def test_float32_not_a_pair_is_rejected(capsys):
    assert_fails(check_float32_collision(875_664_010), capsys, "pair")


# ---- check_hr_with_ties ---------------------------------------------------------------------------------

def library_hr(scores, targets, k, policy):
    ranks, ties = rank_ties_from_scores(scores, targets)
    return hit_rate(ranks, k, ties, policy)


def loop_hr(scores, targets, k, policy):
    """A plain loop in NumPy: every sample's places, averaged."""
    s = scores.numpy()
    hits = []
    for row, target in zip(s, targets.tolist()):
        items = row[1:]
        higher = int(np.sum(items > row[target]))
        ties = int(np.sum(items == row[target])) - 1
        places = np.arange(1 + higher, 2 + higher + ties)
        hits.append(float(places[0] <= k) if policy == "optimistic" else float(np.mean(places <= k)))
    return float(np.mean(hits))


def float32_hr(scores, targets, k, policy):
    """Vectorised, in float32."""
    s = scores.float()[:, 1:]
    own = scores.float().gather(1, targets[:, None])
    higher = (s > own).sum(1).float()
    ties = (s == own).sum(1).float() - 1
    if policy == "optimistic":
        return (higher + 1 <= k).float().mean()
    return ((k - higher).clamp(min=0).minimum(ties + 1) / (ties + 1)).mean()


def test_hr_with_ties_right_answers_pass(capsys):
    for fn in (library_hr, loop_hr, float32_hr):
        assert_passes(check_hr_with_ties(fn), capsys)


def test_hit_at_the_mean_rank_is_rejected(capsys):
    def mean_rank(scores, targets, k, policy):
        ranks, ties = rank_ties_from_scores(scores, targets)
        if policy == "optimistic":
            return hit_rate(ranks, k)
        return float(((ranks + ties / 2) <= k).double().mean())

    assert_fails(check_hr_with_ties(mean_rank), capsys, "policy='average'", "average rank")


def test_target_counted_as_its_own_tie_is_rejected(capsys):
    def with_self(scores, targets, k, policy):
        ranks, ties = rank_ties_from_scores(scores, targets)
        return hit_rate(ranks, k, ties + 1, policy)

    assert_fails(check_hr_with_ties(with_self), capsys, "tied with itself", "*other* items")


def test_pessimistic_for_optimistic_is_rejected(capsys):
    def geq(scores, targets, k, policy):
        ranks, ties = rank_ties_from_scores(scores, targets)
        return hit_rate(ranks, k, ties, "pessimistic" if policy == "optimistic" else policy)

    assert_fails(check_hr_with_ties(geq), capsys, "strictly higher")


def test_padding_column_counted_is_rejected(capsys):
    def with_padding(scores, targets, k, policy):
        padded = torch.cat([torch.full((len(scores), 1), float("-inf"), dtype=scores.dtype), scores], dim=1)
        ranks, ties = rank_ties_from_scores(padded, targets + 1)  # column 0 of scores becomes a real item
        return hit_rate(ranks, k, ties, policy)

    assert_fails(check_hr_with_ties(with_padding), capsys, "case 3", "padding")


def test_zero_based_rank_and_sum_are_rejected(capsys):
    def zero_based(scores, targets, k, policy):
        ranks, ties = rank_ties_from_scores(scores, targets)
        # by hand: the library's hit_rate refuses ranks below 1 since issue 24
        return float(((ranks - 1) <= k).double().mean()) if policy == "optimistic" else library_hr(
            scores, targets, k, policy)

    assert_fails(check_hr_with_ties(zero_based), capsys, "1-based")

    def summed(scores, targets, k, policy):
        return library_hr(scores, targets, k, policy) * len(targets)

    assert_fails(check_hr_with_ties(summed), capsys, "mean over the samples")


def test_hr_with_ties_exception_is_reported(capsys):
    def broken(scores, targets, k, policy):
        raise KeyError(policy)

    assert_fails(check_hr_with_ties(broken), capsys, "KeyError", hint=False)


# ---- chapter 2 ------------------------------------------------------------------------------------------

def test_rope_reference_passes(capsys):
    assert_passes(check_rope_rotation(apply_rope), capsys)


def test_rope_typical_mistakes_get_specific_hints(capsys):
    assert_fails(check_rope_rotation(lambda x, p, base: apply_rope(x, -p, base)), capsys, "wrong way")
    assert_fails(check_rope_rotation(foundations._rope_half_split), capsys, "adjacent features")
    assert_fails(check_rope_rotation(lambda x, p, base: x), capsys, "equals the input")

    def wrong_frequencies(x, p, base):  # omega_i = base ** (-i / f): pair norms kept, angles wrong
        f = x.shape[-1]
        omega = base ** (-torch.arange(f // 2, dtype=x.dtype) / f)
        ang = p.to(x.dtype)[:, None] * omega
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * ang.cos() - odd * ang.sin(), odd * ang.cos() + even * ang.sin()), -1).flatten(-2)
    assert_fails(check_rope_rotation(wrong_frequencies), capsys, "base ** (-2i / f)")

    def stretched(x, p, base):
        return 2 * apply_rope(x, p, base)
    assert_fails(check_rope_rotation(stretched), capsys, "keeps the length")
    assert_fails(check_rope_rotation(lambda x, p, base: x[..., :2]), capsys, "shaped like its input")
