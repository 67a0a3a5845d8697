"""The checks of the book's part *The TTT layer* (ttt4rec_edu.exercises.ttt_layer, chapters 3-5): each passes its
reference solution and fails typical mistakes with a specific hint (a check that cannot fail would teach nothing).

The capstone check (chapter 4), TTT-Linear's dual form from scratch matched against TTTLayer.dual: two correct
answers written here independently of the library (a dual form with the LayerNorm gradient by autograd, and the
primal mini-batch loop that builds every W_i) pass; typical mistakes fail with a hint that names the mistake; a
raising or mis-shaped answer is reported as such; strict mode raises.
"""
from __future__ import annotations

import pytest
import torch

from ttt4rec_edu import exercises
from ttt4rec_edu.exercises import (ExerciseFailed, check_dual_form_linear, check_linear_inner_grad, check_ln_l2_grad,
                                   check_meta_grad_linear, check_online_ttt_linear, check_token_scale,
                                   check_ttt_linear_dual, ttt_layer)
from ttt4rec_edu.exercises.ttt_layer import (_CAPSTONE_MISTAKES, _meta_grad_autograd, _online_linear_reference,
                                             _ttt_linear_dual_variant, _ttt_linear_library)
from ttt4rec_edu.ttt import INNER_LN_EPS, TTTLayer, ln_fused_l2_bwd

from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)


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
    W0, q, k, v = (torch.randn(*shape).double() for shape in ((3, 3), (1, 3), (1, 3), (1, 3)))
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


# ---- check_ln_l2_grad -------------------------------------------------------------------------------------

def _ln_parts(z, target, gamma, beta):
    mean = z.mean(-1, keepdim=True)
    std = torch.sqrt(z.var(-1, keepdim=True, unbiased=False) + INNER_LN_EPS)
    z_hat = (z - mean) / std
    return z_hat, std, gamma * (gamma * z_hat + beta - target)


def test_ln_l2_grad_reference_and_autograd_pass(capsys):
    assert_passes(check_ln_l2_grad(ln_fused_l2_bwd), capsys)

    def by_autograd(z, target, gamma, beta):
        z = z.clone().requires_grad_()
        z_hat = torch.nn.functional.layer_norm(z, z.shape[-1:], eps=INNER_LN_EPS)
        loss = 0.5 * ((gamma * z_hat + beta - target) ** 2).sum()
        return torch.autograd.grad(loss, z)[0]
    assert_passes(check_ln_l2_grad(by_autograd), capsys)


def test_ln_l2_grad_output_gradient_only_gets_chain_rule_hint(capsys):
    def output_only(z, target, gamma, beta):
        return _ln_parts(z, target, gamma, beta)[2]
    assert_fails(check_ln_l2_grad(output_only), capsys, "chain it through the normalisation")


def test_ln_l2_grad_missing_projection_term_gets_sigma_hint(capsys):
    def no_projection(z, target, gamma, beta):
        z_hat, std, g = _ln_parts(z, target, gamma, beta)
        f = z.shape[-1]
        return (f * g - g.sum(-1, keepdim=True)) / (f * std)
    assert_fails(check_ln_l2_grad(no_projection), capsys, "σ depends on z too")


def test_ln_l2_grad_missing_mean_term_and_sign_and_gamma(capsys):
    def no_mean(z, target, gamma, beta):
        z_hat, std, g = _ln_parts(z, target, gamma, beta)
        f = z.shape[-1]
        return (f * g - z_hat * (g * z_hat).sum(-1, keepdim=True)) / (f * std)
    assert_fails(check_ln_l2_grad(no_mean), capsys, "the mean depends on z too")
    assert_fails(check_ln_l2_grad(lambda *a: -ln_fused_l2_bwd(*a)), capsys, "sign is flipped")

    # right for γ = 1 (the first case), caught on the second case with random γ
    assert_fails(check_ln_l2_grad(_grad_without_gamma), capsys, "multiply the residual by γ", "(5, 8)")


def _grad_without_gamma(z, target, gamma, beta):
    z_hat, std, _ = _ln_parts(z, target, gamma, beta)
    r = gamma * z_hat + beta - target                       # forgot the γ of the chain rule
    f = z.shape[-1]
    return (f * r - r.sum(-1, keepdim=True) - z_hat * (r * z_hat).sum(-1, keepdim=True)) / (f * std)


def test_ln_l2_grad_wrong_shape_and_exception(capsys):
    assert_fails(check_ln_l2_grad(lambda z, t, g, b: z.sum(0)), capsys, "z's shape")
    def broken(z, t, g, b):
        raise RuntimeError("boom")
    result = check_ln_l2_grad(broken)
    assert not result.passed and "raised RuntimeError" in result.message
    capsys.readouterr()


# ---- check_online_ttt_linear ------------------------------------------------------------------------------

def online(W0, Q, K, V, eta, read_before=False, frozen=False, sign=1.0, transpose=False):
    W, rows = W0, []
    for t in range(Q.shape[0]):
        if read_before:
            rows.append(Q[t:t + 1] @ W)
        at = W0 if frozen else W
        residual = K[t:t + 1] @ at - V[t:t + 1]
        grad = residual.T @ K[t:t + 1] if transpose else K[t:t + 1].T @ residual
        W = W - sign * eta[t] * grad
        if not read_before:
            rows.append(Q[t:t + 1] @ W)
    return torch.cat(rows), W


def test_online_reference_passes(capsys):
    assert_passes(check_online_ttt_linear(online), capsys)


@pytest.mark.parametrize("kwargs, words", [
    (dict(read_before=True), "after the update"),
    (dict(frozen=True), "mini-batch TTT"),
    (dict(sign=-1.0), "gradient descent subtracts"),
    (dict(transpose=True), "transpose"),
])
def test_online_typical_mistakes_get_specific_hints(capsys, kwargs, words):
    assert_fails(check_online_ttt_linear(lambda *a: online(*a, **kwargs)), capsys, words)


def test_online_wrong_final_weights_and_key_as_output(capsys):
    assert_fails(check_online_ttt_linear(lambda W0, Q, K, V, eta: (online(W0, Q, K, V, eta)[0], W0)), capsys,
                 "after all L updates")
    assert_fails(check_online_ttt_linear(lambda W0, Q, K, V, eta: online(W0, K, K, V, eta)), capsys,
                 "test view q_t")
    assert_fails(check_online_ttt_linear(lambda *a: online(*a)[0]), capsys, "return a pair")


def test_online_reference_matches_an_autograd_loop():
    """The check's hand-written reference (gradient k^T(kW - v), output read after the update) equals a loop
    that takes each inner gradient with autograd, as the library's token_loop does."""
    gen = torch.Generator().manual_seed(0)
    W0 = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    Q, K, V = (torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    eta = torch.full((5,), 0.3, dtype=torch.float64)
    W, rows = W0.clone().requires_grad_(), []
    for t in range(5):
        loss = 0.5 * ((K[t] @ W - V[t]) ** 2).sum()
        (g,) = torch.autograd.grad(loss, W)
        W = (W - eta[t] * g).detach().requires_grad_()
        rows.append(Q[t] @ W)
    Z, W_L = _online_linear_reference(W0, Q, K, V, eta)
    assert torch.allclose(torch.stack(rows), Z) and torch.allclose(W, W_L)


# ---- check_token_scale ------------------------------------------------------------------------------------

def test_token_scale_reference_is_the_library(capsys):
    layer = TTTLayer(16, 2, inner="linear", mini_batch_size=8).double()

    def from_layer(delta):
        if delta.shape[0] != 8:
            i = torch.arange(1, delta.shape[0] + 1, dtype=delta.dtype)
            return torch.clamp_min(1 / i + delta, 0)
        with torch.no_grad():
            layer.token_offset.copy_(delta)
        return layer.token_scale().detach()
    assert_passes(check_token_scale(from_layer), capsys)


@pytest.mark.parametrize("wrong, words", [
    (lambda d: 1 / torch.arange(1, d.shape[0] + 1, dtype=d.dtype) + d, "clamp at zero"),
    (lambda d: torch.clamp_min(1 / torch.arange(0, d.shape[0], dtype=d.dtype) + d, 0), "starts at 1"),
    (lambda d: torch.clamp_min(1 / torch.arange(2, d.shape[0] + 2, dtype=d.dtype) + d, 0), "i runs from 1 to b"),
    (lambda d: torch.clamp_min(1 / d.shape[0] + d, 0), "not on the size b"),
    (lambda d: 1 / torch.arange(1, d.shape[0] + 1, dtype=d.dtype), None),
    (lambda d: torch.clamp_min(1 / torch.arange(d.shape[0], 0, -1, dtype=d.dtype) + d, 0), "in order"),
    (lambda d: torch.zeros(d.shape[0] + 1, dtype=d.dtype), "shape (b,)"),
])
def test_token_scale_mistakes(capsys, wrong, words):
    result = check_token_scale(wrong)
    # 1/i without δ passes δ = 0 and must be caught on the second case with its own hint
    assert_fails(result, capsys, *([words] if words else ["add the learnable offset", "b=8, delta=[0.1"]))


# ---- check_meta_grad_linear -------------------------------------------------------------------------------

def meta(W0, q, k, v, y, eta, second_order=True, eta_sign=1.0, eta_zero=False):
    g = k @ W0 - v
    W1 = W0 - eta * torch.outer(k, g)
    r = q @ W1 - y
    grad_W = torch.outer(q, r) - (eta * float(q @ k) * torch.outer(k, r) if second_order else 0)
    grad_eta = 0.0 if eta_zero else -eta_sign * float(q @ k) * float(r @ g)
    return grad_W, grad_eta


def test_meta_grad_reference_passes(capsys):
    assert_passes(check_meta_grad_linear(meta), capsys)


def test_meta_grad_closed_form_equals_the_checks_autograd_reference():
    gen = torch.Generator().manual_seed(7)
    W0 = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    q, k, v, y = (torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(4))
    grad_W, grad_eta = _meta_grad_autograd(W0, q, k, v, y, 0.3)
    mine_W, mine_eta = meta(W0, q, k, v, y, 0.3)
    assert torch.allclose(grad_W, mine_W) and abs(grad_eta - mine_eta) < 1e-12
    first_order, _ = meta(W0, q, k, v, y, 0.3, second_order=False)
    assert not torch.allclose(grad_W, first_order)           # the second-order term is not negligible here


@pytest.mark.parametrize("kwargs, words", [
    (dict(second_order=False), "second-order term"),
    (dict(eta_zero=True), "η is learned too"),
    (dict(eta_sign=-1.0), "the sign"),
])
def test_meta_grad_mistakes(capsys, kwargs, words):
    assert_fails(check_meta_grad_linear(lambda *a: meta(*a, **kwargs)), capsys, words)


def test_meta_grad_transposed_and_flipped(capsys):
    assert_fails(check_meta_grad_linear(lambda *a: (meta(*a)[0].T, meta(*a)[1])), capsys, "transpose")
    assert_fails(check_meta_grad_linear(lambda *a: (-meta(*a)[0], meta(*a)[1])), capsys, "sign is flipped")
    assert_fails(check_meta_grad_linear(lambda *a: meta(*a)[0]), capsys, "return a pair")


def test_strict_mode_raises_for_these_checks_too(monkeypatch, capsys):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(ExerciseFailed, match="check_token_scale"):
        check_token_scale(lambda d: d)
    assert check_meta_grad_linear(meta).passed
    capsys.readouterr()


# ==== the capstone (chapter 4): check_ttt_linear_dual =============================================================

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


def test_capstone_hint_reference_is_the_library():
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
def test_capstone_correct_answers_pass(answer, capsys):
    assert_passes(check_ttt_linear_dual(answer), capsys)


def test_capstone_float32_answer_passes(capsys):
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
def test_capstone_typical_mistakes_fail_with_a_named_hint(mistake, words, capsys):
    def wrong(*args):
        return dual_from_scratch(*args, **mistake)
    assert_fails(check_ttt_linear_dual(wrong), capsys, "differs from TTTLayer.dual", *words)


def test_capstone_target_v_instead_of_v_minus_k_is_named(capsys):
    def target_v(q, k, v, *rest):
        return dual_from_scratch(q, k, v + k, *rest)          # G then uses target v, not v − k
    assert_fails(check_ttt_linear_dual(target_v), capsys, "v − k")


def test_capstone_no_tau_and_no_bias_are_named(capsys):
    def no_tau(q, k, v, eta, tau, *rest):
        return dual_from_scratch(q, k, v, eta, torch.ones_like(tau), *rest)
    assert_fails(check_ttt_linear_dual(no_tau), capsys, "τ_i")

    def no_bias(*args):
        return _ttt_linear_dual_variant(*args, bias=False)
    assert_fails(check_ttt_linear_dual(no_bias), capsys, "the bias learns too")


def test_capstone_unrecognised_error_still_gets_the_recipe(capsys):
    def off(*args):
        return 1.01 * dual_from_scratch(*args)
    assert_fails(check_ttt_linear_dual(off), capsys, "Z̄ = Q W + c")


def test_capstone_raising_and_misshaped_answers_are_reported(capsys):
    def raises(*args):
        raise RuntimeError("not yet")
    assert_fails(check_ttt_linear_dual(raises), capsys, "RuntimeError", "not yet", hint=False)

    def transposed(*args):
        return dual_from_scratch(*args).T
    assert_fails(check_ttt_linear_dual(transposed), capsys, "shape (L, f)")


def test_capstone_strict_mode_raises(monkeypatch):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(ExerciseFailed, match="carry the state"):
        check_ttt_linear_dual(lambda *args: dual_from_scratch(*args, carry=False))
