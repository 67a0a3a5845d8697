"""Chapter 1, section 1.7's checks: a float32 timestamp collision, and HR@10 with ties under two policies.

Each check must accept right answers written in different ways and reject the usual mistakes with a hint that
names the mistake.
"""
from __future__ import annotations

import numpy as np
import torch

from ttt4rec_edu.exercises import check_float32_collision, check_hr_with_ties
from ttt4rec_edu.metrics import hit_rate, rank_ties_from_scores

from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)


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


def test_not_a_pair_is_rejected(capsys):
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


def test_right_answers_pass(capsys):
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
        return hit_rate(ranks - 1, k, ties, policy) if policy == "optimistic" else library_hr(
            scores, targets, k, policy)

    assert_fails(check_hr_with_ties(zero_based), capsys, "1-based")

    def summed(scores, targets, k, policy):
        return library_hr(scores, targets, k, policy) * len(targets)

    assert_fails(check_hr_with_ties(summed), capsys, "mean over the samples")


def test_an_exception_is_reported(capsys):
    def broken(scores, targets, k, policy):
        raise KeyError(policy)

    assert_fails(check_hr_with_ties(broken), capsys, "KeyError", hint=False)
