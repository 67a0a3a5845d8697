"""The capstone check (chapter 4): TTT-Linear's dual form from scratch, matched against TTTLayer.dual.

Two correct answers written here independently of the library (a dual form with the LayerNorm gradient by
autograd, and the primal mini-batch loop that builds every W_i) pass; typical mistakes fail with a hint that
names the mistake; a raising or mis-shaped answer is reported as such; strict mode raises.
"""
from __future__ import annotations

import pytest
import torch

from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)
from ttt4rec_edu import exercises
from ttt4rec_edu.exercises import ExerciseFailed, check_ttt_linear_dual
from ttt4rec_edu.exercises.ttt_layer import _CAPSTONE_MISTAKES, _ttt_linear_dual_variant, _ttt_linear_library

EPS = 1e-6   # the inner LayerNorm's epsilon


def _ln(z, gamma, beta):
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    return gamma * (z - mu) / torch.sqrt(var + EPS) + beta


def _ln_grad_autograd(z, target, gamma, beta):
    """∂/∂z of ½‖LN(z) − target‖², row by row, by autograd."""
    z = z.detach().clone().requires_grad_()
    loss = 0.5 * ((_ln(z, gamma, beta) - target) ** 2).sum()
    return torch.autograd.grad(loss, z)[0]


def dual_from_scratch(q, k, v, eta, tau, W, c, gamma, beta, b, *, carry=True, diagonal=0, add_q=True,
                      ln_grad=True):
    out = []
    for s in range(0, q.shape[0], b):
        Q, K, V = q[s:s + b], k[s:s + b], v[s:s + b]
        n = Q.shape[0]
        Z = K @ W + c
        G = _ln_grad_autograd(Z, V - K, gamma, beta) if ln_grad else Z - (V - K)
        E = torch.tril(tau[:n, None] * eta[None, s:s + n], diagonal)
        Z_bar = Q @ W + c - torch.tril(E * (Q @ K.T + 1)) @ G
        out.append((Q if add_q else 0) + _ln(Z_bar, gamma, beta))
        if carry:
            W, c = W - K.T @ (E[-1, :, None] * G), c - E[-1] @ G
    return torch.cat(out)


def primal_loop(q, k, v, eta, tau, W, c, gamma, beta, b):
    """Every token's own weights W_i = W − τ_i Σ_{j≤i} η_j k_jᵀ g_j, read by that token's query."""
    rows = []
    for s in range(0, q.shape[0], b):
        n = min(b, q.shape[0] - s)
        G = _ln_grad_autograd(k[s:s + n] @ W + c, v[s:s + n] - k[s:s + n], gamma, beta)
        for i in range(n):
            W_i = W - tau[i] * sum(eta[s + j] * torch.outer(k[s + j], G[j]) for j in range(i + 1))
            c_i = c - tau[i] * sum(eta[s + j] * G[j] for j in range(i + 1))
            rows.append(q[s + i] + _ln(q[s + i] @ W_i + c_i, gamma, beta))
        W, c = W_i, c_i            # the last token's weights start the next mini-batch
    return torch.stack(rows)


def test_the_hint_reference_is_the_library():
    gen = torch.Generator().manual_seed(3)
    L, f, b = 11, 3, 4
    q, k, v = (torch.randn(L, f, generator=gen, dtype=torch.float64) for _ in range(3))
    args = (q, k, v, 0.2 * torch.rand(L, generator=gen, dtype=torch.float64),
            1.0 / torch.arange(1, b + 1, dtype=torch.float64) - 0.05, torch.randn(f, f, generator=gen,
                                                                                  dtype=torch.float64),
            torch.randn(f, generator=gen, dtype=torch.float64), 1 + 0.1 * torch.randn(f, generator=gen,
                                                                                     dtype=torch.float64),
            0.1 * torch.randn(f, generator=gen, dtype=torch.float64), b)
    expected = _ttt_linear_library(*args)
    assert torch.allclose(_ttt_linear_dual_variant(*args), expected, atol=1e-12)
    assert torch.allclose(dual_from_scratch(*args), expected, atol=1e-12)
    assert torch.allclose(primal_loop(*args), expected, atol=1e-12)
    for flags, _ in _CAPSTONE_MISTAKES:      # every named mistake really changes the answer
        assert not torch.allclose(_ttt_linear_dual_variant(*args, **flags), expected, atol=1e-6), flags


@pytest.mark.parametrize("answer", [dual_from_scratch, primal_loop], ids=["dual", "primal"])
def test_correct_answers_pass(answer, capsys):
    assert_passes(check_ttt_linear_dual(answer), capsys)


def test_a_float32_answer_passes(capsys):
    def in_float32(*args):
        *tensors, b = args
        return dual_from_scratch(*(t.float() for t in tensors), b)
    assert_passes(check_ttt_linear_dual(in_float32), capsys)


@pytest.mark.parametrize("mistake, words", [
    (dict(ln_grad=False), ("through the inner LayerNorm",)),
    (dict(carry=False), ("carry the state",)),
    (dict(diagonal=-1), ("keep the diagonal",)),
    (dict(add_q=False), ("add the residual q_i",)),
])
def test_typical_mistakes_fail_with_a_named_hint(mistake, words, capsys):
    def wrong(*args):
        return dual_from_scratch(*args, **mistake)
    assert_fails(check_ttt_linear_dual(wrong), capsys, "differs from TTTLayer.dual", *words)


def test_target_v_instead_of_v_minus_k_is_named(capsys):
    def target_v(q, k, v, *rest):
        return dual_from_scratch(q, k, v + k, *rest)          # G then uses target v, not v − k
    assert_fails(check_ttt_linear_dual(target_v), capsys, "v − k")


def test_no_tau_and_no_bias_are_named(capsys):
    def no_tau(q, k, v, eta, tau, *rest):
        return dual_from_scratch(q, k, v, eta, torch.ones_like(tau), *rest)
    assert_fails(check_ttt_linear_dual(no_tau), capsys, "τ_i")

    def no_bias(*args):
        return _ttt_linear_dual_variant(*args, bias=False)
    assert_fails(check_ttt_linear_dual(no_bias), capsys, "the bias learns too")


def test_unrecognised_error_still_gets_the_recipe(capsys):
    def off(*args):
        return 1.01 * dual_from_scratch(*args)
    assert_fails(check_ttt_linear_dual(off), capsys, "Z̄ = Q W + c")


def test_raising_and_misshaped_answers_are_reported(capsys):
    def raises(*args):
        raise RuntimeError("not yet")
    assert_fails(check_ttt_linear_dual(raises), capsys, "RuntimeError", "not yet", hint=False)

    def transposed(*args):
        return dual_from_scratch(*args).T
    assert_fails(check_ttt_linear_dual(transposed), capsys, "shape (L, f)")


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(ExerciseFailed, match="carry the state"):
        check_ttt_linear_dual(lambda *args: dual_from_scratch(*args, carry=False))
