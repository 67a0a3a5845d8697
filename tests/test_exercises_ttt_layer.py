"""The chapter 3–5 exercise checks: each passes its reference solution and fails typical mistakes with a
specific hint (a check that cannot fail would teach nothing)."""
from __future__ import annotations

import pytest
import torch

from ttt4rec_edu import exercises
from ttt4rec_edu.exercises import ExerciseFailed
from ttt4rec_edu.exercises import (
    check_ln_l2_grad,
    check_meta_grad_linear,
    check_online_ttt_linear,
    check_token_scale,
)
from ttt4rec_edu.exercises.ttt_layer import _meta_grad_autograd, _online_linear_reference
from ttt4rec_edu.ttt import INNER_LN_EPS, TTTLayer, ln_fused_l2_bwd


from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)


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
