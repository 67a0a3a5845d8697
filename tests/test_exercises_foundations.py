"""The exercise checks: each one passes the reference solution and fails wrong answers with a specific hint.

A check that cannot fail would teach nothing, so every check is fed typical mistakes (forgotten bump rule,
log2(rank) instead of log2(rank + 1), the rotate_half pairing, a flipped gradient sign, a non-causal dual form,
...) and must name the mistake. Reference solutions are the library's own functions or a few lines of torch.
"""
from __future__ import annotations

import math

import pytest
import torch

from ttt4rec_edu import exercises
from ttt4rec_edu.data.protocol import split_counts
from ttt4rec_edu.exercises import foundations, ttt_layer
from ttt4rec_edu.exercises import (
    ExerciseFailed,
    ExerciseResult,
    check_dual_form_linear,
    check_linear_inner_grad,
    check_ndcg,
    check_rope_rotation,
    check_split_counts,
)
from ttt4rec_edu.metrics import ndcg
from ttt4rec_edu.rope import apply_rope


from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)


# ---- ExerciseResult and strict mode ---------------------------------------------------------------------

def test_result_prints_and_strict_mode_raises(monkeypatch, capsys):
    wrong = lambda n, ratios: (n, 0, 0)  # noqa: E731
    assert_fails(check_split_counts(wrong), capsys, "num_samples=2", "expected (1, 0, 1)")
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(ExerciseFailed, match="check_split_counts"):
        check_split_counts(wrong)
    assert check_split_counts(split_counts).passed  # strict mode lets a right answer through
    assert bool(ExerciseResult("x", True, "ok")) and not ExerciseResult("x", False, "no")


def test_result_is_shown_once_in_jupyter(capsys):
    result = check_split_counts(split_counts)
    assert capsys.readouterr().out.count("✓") == 1
    result._ipython_display_()          # the cell's last line: already printed, not shown again
    assert capsys.readouterr().out == ""
    ExerciseResult("by hand", False, "hint")._ipython_display_()   # never printed: shown
    assert capsys.readouterr().out.startswith("✗ by hand")


def test_exception_in_student_code_is_reported_not_raised(capsys):
    def broken(n, ratios):
        raise KeyError("oops")
    assert_fails(check_split_counts(broken), capsys, "raised KeyError", "num_samples=1", hint=False)


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


# ---- chapter 3 ------------------------------------------------------------------------------------------

def reference_linear_grad(x, W, b, y):
    r = x @ W + b - y
    return x.T @ r, r.sum(0)


def test_linear_inner_grad_reference_passes(capsys):
    assert_passes(check_linear_inner_grad(reference_linear_grad), capsys)


def test_linear_inner_grad_typical_mistakes_get_specific_hints(capsys):
    def flipped(x, W, b, y):
        gW, gb = reference_linear_grad(x, W, b, y)
        return -gW, -gb
    assert_fails(check_linear_inner_grad(flipped), capsys, "sign is flipped")

    def doubled(x, W, b, y):
        gW, gb = reference_linear_grad(x, W, b, y)
        return 2 * gW, 2 * gb
    assert_fails(check_linear_inner_grad(doubled), capsys, "cancels the 2")

    def transposed(x, W, b, y):
        gW, gb = reference_linear_grad(x, W, b, y)
        return gW.T, gb
    assert_fails(check_linear_inner_grad(transposed), capsys, "transpose", "x (1, 4)")  # square W: same shape

    def transposed_rect(x, W, b, y):
        gW, gb = reference_linear_grad(x, W, b, y)
        return (gW.T, gb) if x.shape[0] > 1 else (gW, gb)
    assert_fails(check_linear_inner_grad(transposed_rect), capsys, "shape of W", "x (5, 3)")

    def bias_not_summed(x, W, b, y):
        r = x @ W + b - y
        return x.T @ r, r
    # the first case has n = 1 (shape (1, 4) != (4,)), so the shape hint fires
    assert_fails(check_linear_inner_grad(bias_not_summed), capsys, "sum the residual over the n rows")

    def averaged(x, W, b, y):
        gW, gb = reference_linear_grad(x, W, b, y)
        return gW / x.shape[0], gb / x.shape[0]
    assert_fails(check_linear_inner_grad(averaged), capsys, "not a mean", "x (5, 3)")


# ---- chapter 4 ------------------------------------------------------------------------------------------

def reference_dual(W0, Q, K, V, eta):
    G = K @ W0 - V
    return Q @ W0 - eta * torch.tril(Q @ K.T) @ G, W0 - eta * K.T @ G


def test_dual_form_reference_passes_and_primal_loop_is_the_reference(capsys):
    assert_passes(check_dual_form_linear(reference_dual), capsys)
    # the primal loop itself: with b = 1 it is exactly one gradient step, read after the update
    W0, q, k, v = torch.randn(3, 3).double(), torch.randn(1, 3).double(), torch.randn(1, 3).double(), torch.randn(1, 3).double()
    Z, W1 = ttt_layer._minibatch_primal_linear(W0, q, k, v, 0.1)
    W0_ = W0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(0.5 * ((k @ W0_ - v) ** 2).sum(), W0_)
    assert torch.allclose(W1, W0 - 0.1 * grad) and torch.allclose(Z, q @ W1)


def test_dual_form_typical_mistakes_get_specific_hints(capsys):
    assert_fails(check_dual_form_linear(ttt_layer._online_linear), capsys, "online GD")

    def no_mask(W0, Q, K, V, eta):
        G = K @ W0 - V
        return Q @ W0 - eta * (Q @ K.T) @ G, W0 - eta * K.T @ G
    assert_fails(check_dual_form_linear(no_mask), capsys, "tril")

    def strict_mask(W0, Q, K, V, eta):
        G = K @ W0 - V
        return Q @ W0 - eta * torch.tril(Q @ K.T, -1) @ G, W0 - eta * K.T @ G
    assert_fails(check_dual_form_linear(strict_mask), capsys, "keep the diagonal")

    def ascent(W0, Q, K, V, eta):
        return reference_dual(W0, Q, K, V, -eta)
    assert_fails(check_dual_form_linear(ascent), capsys, "subtracts")

    def wrong_state(W0, Q, K, V, eta):
        Z, _ = reference_dual(W0, Q, K, V, eta)
        return Z, W0
    assert_fails(check_dual_form_linear(wrong_state), capsys, "W_next", "Kᵀ G")

    assert_fails(check_dual_form_linear(lambda W0, Q, K, V, eta: Q), capsys, "return a pair")
