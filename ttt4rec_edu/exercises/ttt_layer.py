"""Checks for the exercises of the book's second part, *The TTT layer*: chapter 3 (the inner loop), chapter 4
(mini-batch TTT and the dual form, with the capstone) and chapter 5 (the outer loop).

- ``check_linear_inner_grad`` (3): the gradient of ½‖x W + b − y‖², against autograd;
- ``check_ln_l2_grad`` (3): the gradient through the inner LayerNorm, against :func:`ttt4rec_edu.ttt.ln_fused_l2_bwd`;
- ``check_online_ttt_linear`` (3): the per-token loop, against an explicit loop (``_online_linear_reference``);
- ``check_dual_form_linear`` (4): one mini-batch in the dual form, against the explicit primal loop
  (``_minibatch_primal_linear``);
- ``check_token_scale`` (4): τ_i = max(0, 1/i + δ_i), as :meth:`ttt4rec_edu.ttt.TTTLayer.token_scale`;
- ``check_ttt_linear_dual`` (4, the capstone): one head of TTT-Linear, against :meth:`ttt4rec_edu.ttt.TTTLayer.dual`;
- ``check_meta_grad_linear`` (5): the outer gradient through one inner step, against autograd (``create_graph``).

Every case is float64 with a tolerance of 1e-9 (1e-5 for an answer computed in float32). The signatures each
check expects are in the package docstring (:mod:`ttt4rec_edu.exercises`) and in each check's own docstring.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from ..ttt import INNER_LN_EPS, TTTLayer, ln_fused_l2_bwd
from ._core import (_LOW_PRECISION_TOL, ExerciseResult, _as_tensor, _call, _fail, _float64_gen, _max_err,
                    _pair_answer, _randn, _report, _same, _tensor_answer)

# ----------------------------------------------------------------------------------------------------------
# Chapter 3: the inner loop
# ----------------------------------------------------------------------------------------------------------

def check_linear_inner_grad(fn: Callable[..., Tuple[torch.Tensor, torch.Tensor]]) -> ExerciseResult:
    """Check an analytic gradient ``fn(x, W, b, y) -> (grad_W, grad_b)`` of ``½‖x W + b − y‖²`` against autograd.

    Shapes: ``x (n, d_in)``, ``W (d_in, d_out)``, ``b (d_out,)``, ``y (n, d_out)``; the loss sums over all
    ``n · d_out`` entries. Cases (float64): ``n = 1`` (one token, the per-token loop) and ``n = 5, d_in = 3,
    d_out = 4`` (a mini-batch). Tolerance 1e-9.
    """
    name = "check_linear_inner_grad"
    gen = torch.Generator().manual_seed(3)
    for n, d_in, d_out in ((1, 4, 4), (5, 3, 4)):
        x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
        W = torch.randn(d_in, d_out, generator=gen, dtype=torch.float64, requires_grad=True)
        b = torch.randn(d_out, generator=gen, dtype=torch.float64, requires_grad=True)
        y = torch.randn(n, d_out, generator=gen, dtype=torch.float64)
        loss = 0.5 * ((x @ W + b - y) ** 2).sum()
        exp_W, exp_b = torch.autograd.grad(loss, (W, b))
        where = f"x {tuple(x.shape)}, W {tuple(W.shape)}"
        pair, failure = _pair_answer(name, fn, (x.clone(), W.detach().clone(), b.detach().clone(), y.clone()), where,
                                     "return a pair (grad_W, grad_b).")
        if failure is not None:
            return _report(failure)
        got_W, got_b = pair
        got_W, got_b = _as_tensor(got_W, exp_W), _as_tensor(got_b, exp_b)
        if got_W is None or got_b is None:
            return _report(_fail(name, f"for {where} the gradients are not tensors", "return two tensors."))
        if got_W.shape != exp_W.shape:
            hint = (f"grad_W has the shape of W, {tuple(exp_W.shape)}: it is xᵀ (x W + b − y), not its transpose."
                    if got_W.shape == exp_W.T.shape else f"grad_W must have W's shape {tuple(exp_W.shape)}.")
            return _report(_fail(name, f"for {where}: grad_W has shape {tuple(got_W.shape)}", hint))
        if got_b.shape != exp_b.shape:
            hint = ("grad_b has the shape of b: sum the residual over the n rows (b is shared by every row)."
                    if got_b.shape == (n, d_out) else f"grad_b must have b's shape {tuple(exp_b.shape)}.")
            return _report(_fail(name, f"for {where}: grad_b has shape {tuple(got_b.shape)}", hint))
        ok_W, ok_b = _same(got_W, exp_W, 1e-9), _same(got_b, exp_b, 1e-9)
        if ok_W and ok_b:
            continue
        wrong = "grad_W" if not ok_W else "grad_b"
        got_x, exp_x = (got_W, exp_W) if not ok_W else (got_b, exp_b)
        message = f"for {where}: {wrong} differs from autograd by up to {_max_err(got_x, exp_x):.3g}"
        if _same(got_x, -exp_x, 1e-9):
            hint = "the sign is flipped: the residual is prediction − target, (x W + b) − y."
        elif _same(got_x, 2 * exp_x, 1e-9):
            hint = "the ½ in the loss cancels the 2 from differentiating the square."
        elif n > 1 and _same(got_x, exp_x / n, 1e-9):
            hint = "the loss is a sum over rows, not a mean: do not divide by n."
        elif not ok_W and exp_W.shape == exp_W.T.shape and _same(got_W, exp_W.T, 1e-9):
            hint = "you return the transpose: grad_W = xᵀ r (rows follow W's d_in inputs), not rᵀ x."
        elif not ok_W and ok_b:
            hint = "grad_W = xᵀ r with r = x W + b − y (shape (n, d_out)); check the transpose and the product order."
        else:
            hint = "with r = x W + b − y: grad_W = xᵀ r and grad_b = r summed over the rows."
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "grad_W and grad_b match autograd for one token and for a "
                                              "mini-batch of 5."))


# ----------------------------------------------------------------------------------------------------------
# Chapter 3: the LayerNorm + L2 gradient and the per-token online loop
# ----------------------------------------------------------------------------------------------------------

def _ln_pieces(z: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor):
    """ẑ, σ and ĝ = γ ⊙ (LN(z) − target) — the ingredients of the LN backward (and of its usual mistakes)."""
    mean = z.mean(-1, keepdim=True)
    std = torch.sqrt(z.var(-1, keepdim=True, unbiased=False) + INNER_LN_EPS)
    z_hat = (z - mean) / std
    g_hat = gamma * (gamma * z_hat + beta - target)
    return z_hat, std, g_hat


def check_ln_l2_grad(fn: Callable[..., torch.Tensor]) -> ExerciseResult:
    """Check ``fn(z, target, gamma, beta) -> ∂ℓ/∂z`` for ``ℓ = ½ Σ_rows ‖γ ⊙ ẑ + β − target‖²``.

    ``ẑ = (z − mean(z)) / sqrt(var(z) + 1e-6)`` per row (population variance, as the inner LayerNorm of the TTT
    layer). Shapes: ``z, target (n, f)``, ``gamma, beta (f,)``; returns ``(n, f)``. Reference:
    :func:`ttt4rec_edu.ttt.ln_fused_l2_bwd` (itself tested against autograd). Cases (float64): ``n = 1, f = 4``
    with γ = 1, β = 0, and ``n = 5, f = 8`` with random γ, β. Tolerance 1e-9.
    """
    name = "check_ln_l2_grad"
    gen = _float64_gen(31)
    cases = []
    z, t = _randn(gen, 1, 4), _randn(gen, 1, 4)
    cases.append((z, t, torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)))
    z, t = _randn(gen, 5, 8), _randn(gen, 5, 8)
    cases.append((z, t, 1.0 + 0.5 * _randn(gen, 8), 0.3 * _randn(gen, 8)))
    for z, target, gamma, beta in cases:
        expected = ln_fused_l2_bwd(z, target, gamma, beta)
        where = f"z of shape {tuple(z.shape)}"
        got_t, failure = _tensor_answer(name, fn, (z.clone(), target.clone(), gamma.clone(), beta.clone()),
                                        expected, where, "the gradient with respect to z has z's shape (n, f).")
        if failure is not None:
            return _report(failure)
        if _same(got_t, expected, atol=1e-9):
            continue
        message = f"for {where}: largest difference from the reference {_max_err(got_t, expected):.3g}"
        z_hat, std, g_hat = _ln_pieces(z, target, gamma, beta)
        f = z.shape[-1]
        mean_term = g_hat.sum(-1, keepdim=True)
        proj_term = z_hat * (g_hat * z_hat).sum(-1, keepdim=True)
        no_gamma = (gamma * z_hat + beta - target)
        if _same(got_t, -expected, 1e-9):
            hint = "the sign is flipped: the residual is LN(z) − target (prediction minus target)."
        elif _same(got_t, g_hat, 1e-9) or _same(got_t, g_hat / std, 1e-9):
            hint = ("that is the gradient with respect to the LayerNorm's output (times γ); chain it through the "
                    "normalisation: (f·ĝ − Σĝ − ẑ·Σ(ĝ⊙ẑ)) / (f·σ).")
        elif _same(got_t, (f * no_gamma - no_gamma.sum(-1, keepdim=True)
                           - z_hat * (no_gamma * z_hat).sum(-1, keepdim=True)) / (f * std), 1e-9):
            hint = "multiply the residual by γ: ĝ = γ ⊙ (γ ⊙ ẑ + β − target), since LN(z) = γ ⊙ ẑ + β."
        elif _same(got_t, (f * g_hat - mean_term) / (f * std), 1e-9):
            hint = ("σ depends on z too: subtract ẑ · Σ(ĝ ⊙ ẑ) (the projection on ẑ), not only the mean Σĝ.")
        elif _same(got_t, (f * g_hat - proj_term) / (f * std), 1e-9):
            hint = "the mean depends on z too: subtract Σ_d ĝ_d from every feature (times 1/(f·σ))."
        elif _same(got_t, (f * g_hat - mean_term - proj_term) / f, 1e-9):
            hint = "divide by σ = sqrt(var(z) + 1e-6): ẑ = (z − μ)/σ, so every path into z carries a 1/σ."
        elif _same(got_t, (f * g_hat - mean_term - proj_term) / std, 1e-9):
            hint = "divide by f·σ, not σ: the mean and variance are averages over the f features."
        else:
            unbiased = torch.sqrt(z.var(-1, keepdim=True, unbiased=True) + INNER_LN_EPS)
            zu = (z - z.mean(-1, keepdim=True)) / unbiased
            gu = gamma * (gamma * zu + beta - target)
            alt = (f * gu - gu.sum(-1, keepdim=True) - zu * (gu * zu).sum(-1, keepdim=True)) / (f * unbiased)
            if _same(got_t, alt, 1e-6):
                hint = "LayerNorm uses the population variance (divide by f, unbiased=False), not f − 1."
            else:
                hint = ("with ẑ = (z − μ)/σ and ĝ = γ ⊙ (LN(z) − target): "
                        "∂ℓ/∂z = (f·ĝ − Σ_d ĝ_d − ẑ · Σ_d ĝ_d ẑ_d) / (f·σ), row by row.")
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "matches the fused LayerNorm + L2 backward (ln_fused_l2_bwd) for "
                                              "one row with γ = 1, β = 0 and five rows with random γ, β."))


def _online_linear_reference(W0, Q, K, V, eta, read_before=False, frozen=False, use_key=False):
    """Per-token online GD on ½‖k_t W − v_t‖²; the flags reproduce the common mistakes (for the hints)."""
    W, rows = W0, []
    for t in range(Q.shape[0]):
        if read_before:
            rows.append((K if use_key else Q)[t:t + 1] @ W)
        at = W0 if frozen else W
        grad = K[t:t + 1].T @ (K[t:t + 1] @ at - V[t:t + 1])
        W = W - eta[t] * grad
        if not read_before:
            rows.append((K if use_key else Q)[t:t + 1] @ W)
    return torch.cat(rows, 0), W


def check_online_ttt_linear(fn: Callable[..., Tuple[torch.Tensor, torch.Tensor]]) -> ExerciseResult:
    """Check the paper's per-token inner loop for a bare linear inner model, ``fn(W0, Q, K, V, eta) -> (Z, W_L)``.

    Inner loss of token t: ``ℓ_t(W) = ½ ‖k_t W − v_t‖²`` (row vectors; no bias, no LayerNorm). For t = 1..L:
    ``W_t = W_{t−1} − η_t ∇ℓ_t(W_{t−1})`` with ``∇ℓ_t(W) = k_tᵀ (k_t W − v_t)``, and the output row
    ``z_t = q_t W_t`` is read **after** the update. Shapes: ``W0 (f, f)``, ``Q, K, V (L, f)``, ``eta (L,)``;
    return ``Z (L, f)`` and the final weights ``W_L (f, f)``. Cases (float64): ``L = 3, f = 2`` and
    ``L = 10, f = 4``; tolerance 1e-9.
    """
    name = "check_online_ttt_linear"
    gen = _float64_gen(32)
    for L, f in ((3, 2), (10, 4)):
        W0 = 0.5 * _randn(gen, f, f)
        Q, K, V = (_randn(gen, L, f) / f ** 0.5 for _ in range(3))
        eta = 0.2 + 0.3 * torch.rand(L, generator=gen, dtype=torch.float64)
        exp_Z, exp_W = _online_linear_reference(W0, Q, K, V, eta)
        where = f"L={L}, f={f}"
        pair, failure = _pair_answer(name, fn, (W0.clone(), Q.clone(), K.clone(), V.clone(), eta.clone()), where,
                                     "return a pair (Z, W_L).")
        if failure is not None:
            return _report(failure)
        got_Z, got_W = pair
        got_Z, got_W = _as_tensor(got_Z, exp_Z), _as_tensor(got_W, exp_W)
        if got_Z is None or got_W is None or got_Z.shape != exp_Z.shape or got_W.shape != exp_W.shape:
            return _report(_fail(name, f"for {where}: expected Z {tuple(exp_Z.shape)} and W_L {tuple(exp_W.shape)}",
                                 "Z has one row z_t = q_t W_t per token (L, f); W_L has W0's shape (f, f)."))
        ok_Z, ok_W = _same(got_Z, exp_Z, 1e-9), _same(got_W, exp_W, 1e-9)
        if ok_Z and ok_W:
            continue

        def variant(W0=W0, Q=Q, K=K, V=V, eta=eta, **kw):   # this case's inputs, one of the usual mistakes
            return _online_linear_reference(W0, Q, K, V, eta, **kw)
        sign_flip = _online_linear_reference(W0, Q, K, V, -eta)
        transposed_W, rows = W0, []
        for t in range(L):
            transposed_W = transposed_W - eta[t] * (K[t:t + 1] @ transposed_W - V[t:t + 1]).T @ K[t:t + 1]
            rows.append(Q[t:t + 1] @ transposed_W)
        transposed = (torch.cat(rows, 0), transposed_W)
        if not ok_Z:
            message = f"for {where}: Z differs from online GD by up to {_max_err(got_Z, exp_Z):.3g}"
            candidates = [
                (variant(read_before=True)[0], "read z_t after the update: z_t = q_t W_t (the paper's "
                                               "z_t = f(θ_Q x_t; W_t)), not with W_{t−1}."),
                (variant(frozen=True)[0], "take each gradient at W_{t−1}, the weights after the previous token; "
                                          "freezing them at W0 is mini-batch TTT (chapter 4), not the per-token loop."),
                (variant(use_key=True)[0], "the output uses the test view q_t: z_t = q_t W_t (k_t is the training "
                                           "input)."),
                (sign_flip[0], "gradient descent subtracts: W_t = W_{t−1} − η_t k_tᵀ (k_t W_{t−1} − v_t)."),
                (transposed[0], "∇_W ℓ_t = k_tᵀ (k_t W − v_t), an (f, f) outer product with k_t on the left "
                                "(rows of W follow the input features); yours is its transpose."),
            ]
        else:
            message = f"for {where}: W_L differs from online GD by up to {_max_err(got_W, exp_W):.3g}"
            candidates = [
                (variant(frozen=True)[1], "W_L comes from L sequential steps, each gradient at the latest weights."),
                (sign_flip[1], "gradient descent subtracts: W_t = W_{t−1} − η_t k_tᵀ (k_t W_{t−1} − v_t)."),
                (transposed[1], "∇_W ℓ_t = k_tᵀ (k_t W − v_t), not its transpose."),
                (W0, "return the final weights W_L after all L updates, not W0."),
            ]
        hint = next((text for value, text in candidates if _same(got_Z if not ok_Z else got_W, value, 1e-9)),
                    "loop t = 1..L: g = k_t W − v_t; W ← W − η_t k_tᵀ g; z_t = q_t W (after the update).")
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "Z and W_L equal per-token online GD for L = 3 and L = 10."))


# ----------------------------------------------------------------------------------------------------------
# Chapter 4: the dual form
# ----------------------------------------------------------------------------------------------------------

def _minibatch_primal_linear(W0: torch.Tensor, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                             eta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The slow, obviously-correct mini-batch TTT-Linear step that the dual form must reproduce.

    Inner loss of token j: ½‖k_j W − v_j‖². Every gradient is taken at the mini-batch's starting weights W0;
    token i reads its output with W_i = W0 − η Σ_{j≤i} ∇ℓ_j(W0), i.e. after its own update.
    Shapes: W0 (f, f), Q/K/V (b, f). Returns Z (b, f) with rows q_i W_i, and W_b (f, f).
    """
    grads = [K[j:j + 1].T @ (K[j:j + 1] @ W0 - V[j:j + 1]) for j in range(K.shape[0])]  # each (f, f)
    rows, W_i = [], W0
    for i in range(Q.shape[0]):
        W_i = W0 - eta * sum(grads[: i + 1])
        rows.append(Q[i:i + 1] @ W_i)
    return torch.cat(rows, dim=0), W_i


def _online_linear(W0, Q, K, V, eta):
    """Per-token online GD (the b = 1 loop run over the whole block): used only to recognise that mistake."""
    W, rows = W0, []
    for i in range(Q.shape[0]):
        W = W - eta * K[i:i + 1].T @ (K[i:i + 1] @ W - V[i:i + 1])
        rows.append(Q[i:i + 1] @ W)
    return torch.cat(rows, 0), W


def _dual_variant(W0, Q, K, V, eta, mask):
    G = K @ W0 - V
    return Q @ W0 - eta * (mask(Q @ K.T)) @ G


def check_dual_form_linear(fn: Callable[..., Tuple[torch.Tensor, torch.Tensor]]) -> ExerciseResult:
    """Check a dual-form mini-batch step ``fn(W0, Q, K, V, eta) -> (Z, W_next)`` for TTT-Linear.

    Inner loss ½‖k W − v‖² (no bias, no LayerNorm: the bare linear inner model). The answer must equal the
    explicit primal loop :func:`_minibatch_primal_linear`: ``Z`` row i is ``q_i W_i`` with
    ``W_i = W0 − η Σ_{j≤i} k_jᵀ (k_j W0 − v_j)`` and ``W_next = W_b``. In matrix form:
    ``G = K W0 − V``, ``Z = Q W0 − η tril(Q Kᵀ) G``, ``W_next = W0 − η Kᵀ G``.
    Cases (float64): ``b = 4, f = 3`` and ``b = 8, f = 4``; tolerance 1e-9.
    """
    name = "check_dual_form_linear"
    gen = torch.Generator().manual_seed(4)
    for b, f, eta in ((4, 3, 0.1), (8, 4, 0.05)):
        W0 = torch.randn(f, f, generator=gen, dtype=torch.float64)
        Q, K, V = (torch.randn(b, f, generator=gen, dtype=torch.float64) for _ in range(3))
        exp_Z, exp_W = _minibatch_primal_linear(W0, Q, K, V, eta)
        where = f"b={b}, f={f}, eta={eta}"
        pair, failure = _pair_answer(name, fn, (W0.clone(), Q.clone(), K.clone(), V.clone(), eta), where,
                                     "return a pair (Z, W_next).")
        if failure is not None:
            return _report(failure)
        got_Z, got_W = pair
        got_Z, got_W = _as_tensor(got_Z, exp_Z), _as_tensor(got_W, exp_W)
        if got_Z is None or got_W is None or got_Z.shape != exp_Z.shape or got_W.shape != exp_W.shape:
            return _report(_fail(name, f"for {where}: expected Z {tuple(exp_Z.shape)} and W_next "
                                       f"{tuple(exp_W.shape)}",
                                 "Z has one row per token (b, f); W_next has W0's shape (f, f)."))
        ok_Z, ok_W = _same(got_Z, exp_Z, 1e-9), _same(got_W, exp_W, 1e-9)
        if ok_Z and ok_W:
            continue
        if not ok_Z:
            message = f"for {where}: Z differs from the primal loop by up to {_max_err(got_Z, exp_Z):.3g}"
            if _same(got_Z, _online_linear(W0, Q, K, V, eta)[0], 1e-9):
                hint = ("you update W after every token (online GD); in mini-batch TTT every gradient in the "
                        "mini-batch is taken at the starting weights W0.")
            elif _same(got_Z, _dual_variant(W0, Q, K, V, eta, lambda a: a), 1e-9):
                hint = "mask Q Kᵀ with tril: token i may only use the gradients of tokens j ≤ i (causality)."
            elif _same(got_Z, _dual_variant(W0, Q, K, V, eta, lambda a: torch.tril(a, -1)), 1e-9):
                hint = ("keep the diagonal (torch.tril(·), not tril(·, -1)): token i reads its output after its own "
                        "update.")
            elif _same(got_Z, _dual_variant(W0, Q, K, V, -eta, torch.tril), 1e-9):
                hint = "gradient descent subtracts: Z = Q W0 − η tril(Q Kᵀ) G with G = K W0 − V."
            else:
                hint = "with G = K W0 − V (the gradients w.r.t. the predictions): Z = Q W0 − η tril(Q Kᵀ) G."
        else:
            message = f"for {where}: W_next differs from W_b by up to {_max_err(got_W, exp_W):.3g}"
            if _same(got_W, _online_linear(W0, Q, K, V, eta)[1], 1e-9):
                hint = "W_next sums gradients taken at W0, not at the weights updated token by token."
            else:
                hint = "W_next = W0 − η Kᵀ G: the sum of all b gradients k_jᵀ g_j, each at W0."
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "Z and W_next equal the explicit primal loop for b = 4 and b = 8."))

# ----------------------------------------------------------------------------------------------------------
# Chapter 4: the in-mini-batch step scale τ
# ----------------------------------------------------------------------------------------------------------

def _token_scale(delta: torch.Tensor) -> torch.Tensor:
    i = torch.arange(1, delta.shape[0] + 1, dtype=delta.dtype)
    return torch.clamp_min(1.0 / i + delta, 0.0)


def check_token_scale(fn: Callable[[torch.Tensor], torch.Tensor]) -> ExerciseResult:
    """Check ``fn(delta) -> tau`` with ``τ_i = max(0, 1/i + δ_i)`` for the in-mini-batch index ``i = 1..b``.

    ``delta`` is the learnable offset ``δ`` of shape ``(b,)`` (``TTTLayer.token_offset``); the reference is
    :meth:`ttt4rec_edu.ttt.TTTLayer.token_scale`. Cases (float64): ``b = 8`` with ``δ = 0`` (the values at
    initialisation, ``1, 1/2, …, 1/8``), ``b = 8`` with an offset that drives two entries below zero, ``b = 3``.
    """
    name = "check_token_scale"
    cases = (
        torch.zeros(8, dtype=torch.float64),
        torch.tensor([0.1, -0.2, 0.05, -0.4, 0.0, -0.3, 0.2, -0.05], dtype=torch.float64),
        torch.tensor([-0.5, 0.25, 0.1], dtype=torch.float64),
    )
    for delta in cases:
        expected = _token_scale(delta)
        where = f"b={delta.shape[0]}, delta={[round(float(d), 3) for d in delta]}"
        got_t, failure = _tensor_answer(name, fn, (delta.clone(),), expected, where,
                                        "return one τ per position of the mini-batch: shape (b,).")
        if failure is not None:
            return _report(failure)
        if _same(got_t, expected, atol=1e-12):
            continue
        b = delta.shape[0]
        i = torch.arange(1, b + 1, dtype=torch.float64)
        message = f"for {where}: expected {[round(float(x), 4) for x in expected]}, got " \
                  f"{[round(float(x), 4) for x in got_t]}"
        if not torch.isfinite(got_t).all():
            hint = "the index i starts at 1 (the first token of a mini-batch has τ_1 = 1 + δ_1); 1/0 is infinite."
        elif _same(got_t, 1.0 / i + delta, 1e-12):
            hint = "clamp at zero: τ_i = max(0, 1/i + δ_i), so a large negative δ_i switches token i's update off."
        elif _same(got_t, _token_scale(delta.flip(0)).flip(0), 1e-12) or _same(got_t, expected.flip(0), 1e-12):
            hint = "τ_1 belongs to the first token of the mini-batch: 1/i with i = 1, 2, …, b in order."
        elif _same(got_t, torch.clamp_min(1.0 / b + delta, 0.0), 1e-12):
            hint = "the scale depends on the position i inside the mini-batch (1/i), not on the size b."
        elif _same(got_t, torch.clamp_min(1.0 / i, 0.0), 1e-12):
            hint = "add the learnable offset: τ_i = max(0, 1/i + δ_i)."
        elif _same(got_t, torch.clamp_min(1.0 / (i + 1) + delta, 0.0), 1e-12):
            hint = "i runs from 1 to b: τ_1 = 1 + δ_1, not 1/2 + δ_1."
        else:
            hint = "τ_i = max(0, 1/i + δ_i) with i = 1, …, b; at δ = 0 that is 1, 1/2, 1/3, …"
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "τ matches TTTLayer.token_scale for δ = 0, a clamped δ and b = 3."))


# ----------------------------------------------------------------------------------------------------------
# Capstone (chapter 4): TTT-Linear's dual form from scratch, matched against the library's TTTLayer.dual
# ----------------------------------------------------------------------------------------------------------

def _ttt_linear_dual_variant(q, k, v, eta, tau, W, c, gamma, beta, b, *, ln_grad=True, residual_target=True,
                             carry=True, bias=True, use_tau=True, diagonal=True, add_q=True):
    """One head of TTT-Linear in the dual form, with one switch per typical mistake (all True: the right
    answer). Shapes: q, k, v (L, f); eta (L,); tau (b,); W (f, f); c, gamma, beta (f,). Returns (L, f)."""
    L = q.shape[0]
    outputs = []
    W_start, c_start = W, c
    for s in range(0, L, b):
        Q, K, V, n = q[s:s + b], k[s:s + b], v[s:s + b], min(b, L - s)
        target = V - K if residual_target else V
        Z = K @ W + c
        G = ln_fused_l2_bwd(Z, target, gamma, beta) if ln_grad else Z - target
        scale = tau[:n] if use_tau else torch.ones(n, dtype=q.dtype)
        E = torch.tril(scale[:, None] * eta[s:s + n][None, :], 0 if diagonal else -1)
        A = Q @ K.T + (1.0 if bias else 0.0)
        Z_bar = Q @ W + c - (E * A) @ G
        z_hat = torch.nn.functional.layer_norm(Z_bar, Z_bar.shape[-1:], eps=INNER_LN_EPS)
        outputs.append((Q if add_q else 0.0) + gamma * z_hat + beta)
        W_next = W - K.T @ (E[-1][:, None] * G)
        c_next = c - (E[-1] @ G if bias else 0.0)
        W, c = (W_next, c_next) if carry else (W_start, c_start)
    return torch.cat(outputs)


def _ttt_linear_library(q, k, v, eta, tau, W, c, gamma, beta, b):
    """The library's answer: TTTLayer(f, 1 head, inner="linear", mini_batch_size=b).dual on one sequence."""
    f = q.shape[1]
    layer = TTTLayer(f, 1, inner="linear", mini_batch_size=b).to(q.dtype)
    with torch.no_grad():
        layer.W1.copy_(W[None])
        layer.b1.copy_(c[None])
        layer.inner_ln_weight.copy_(gamma[None])
        layer.inner_ln_bias.copy_(beta[None])
        out, _ = layer.dual(q[None, None], k[None, None], v[None, None], eta[None, None], tau)
    return out[0, 0]


_CAPSTONE_MISTAKES = (
    (dict(ln_grad=False), "g_j is the gradient *through the inner LayerNorm* (Chapter 3, eq-ln-grad; "
                          "ln_fused_l2_bwd(K W + c, V − K, γ, β)), not K W + c − target."),
    (dict(residual_target=False), "f(k; W) = k + LN(k W + c) has a residual, so the LayerNorm's target is "
                                  "v − k, not v."),
    (dict(carry=False), "carry the state: the next mini-batch starts from W_b = W − Kᵀ diag(E_b·) G and "
                        "c_b = c − E_b· G, not from the initial W, c."),
    (dict(bias=False), "the bias learns too: its share is the + 1 in tril(E ⊙ (Q Kᵀ + 1)) G, and the next "
                       "state's bias is c − E_b· G."),
    (dict(use_tau=False), "scale row i by τ_i: E_ij = τ_i η_j (j ≤ i), not η_j alone."),
    (dict(diagonal=False), "keep the diagonal (torch.tril(·), not tril(·, -1)): token i reads its output after "
                           "its own update."),
    (dict(add_q=False), "the inner model's output is q_i + LN(z̄_i): add the residual q_i."),
    (dict(ln_grad=False, carry=False), "two things at least: g_j goes through the inner LayerNorm, and the "
                                       "state is carried from one mini-batch to the next."),
)


def check_ttt_linear_dual(fn: Callable[..., torch.Tensor]) -> ExerciseResult:
    """Capstone: one head of the full TTT-Linear layer's inner loop in the dual form, matched against
    :meth:`ttt4rec_edu.ttt.TTTLayer.dual`.

    ``fn(q, k, v, eta, tau, W, c, gamma, beta, b) -> Z`` with q, k, v (L, f) (RoPE already applied), eta (L,)
    the learned steps η_t, tau (b,) the scales τ_i, W (f, f) and c (f,) the start weights W_0, gamma and beta
    (f,) the inner LayerNorm, b the mini-batch size. ``Z`` (L, f): row t is f(q_t; W_t) = q_t + LN(z̄_t).
    Cases (float64, tolerance 1e-9): L = 13, f = 4, b = 4 (a partial last mini-batch) and L = 8, f = 3, b = 8,
    with τ away from 1/i and random biases, so that each mistake of :data:`_CAPSTONE_MISTAKES` changes Z.
    """
    name = "check_ttt_linear_dual"
    gen = torch.Generator().manual_seed(14)
    for L, f, b in ((13, 4, 4), (8, 3, 8)):
        q, k, v = (torch.randn(L, f, generator=gen, dtype=torch.float64) for _ in range(3))
        eta = 0.05 + 0.3 * torch.rand(L, generator=gen, dtype=torch.float64)
        tau = 1.0 / torch.arange(1, b + 1, dtype=torch.float64) + 0.2 * torch.rand(b, generator=gen,
                                                                                   dtype=torch.float64)
        W = 0.5 * torch.randn(f, f, generator=gen, dtype=torch.float64)
        c = 0.5 * torch.randn(f, generator=gen, dtype=torch.float64)
        gamma = 1.0 + 0.3 * torch.randn(f, generator=gen, dtype=torch.float64)
        beta = 0.3 * torch.randn(f, generator=gen, dtype=torch.float64)
        args = (q, k, v, eta, tau, W, c, gamma, beta, b)
        expected = _ttt_linear_library(*args)
        where = f"L={L}, f={f}, b={b}"
        got, failure = _tensor_answer(name, fn, tuple(a.clone() if torch.is_tensor(a) else a for a in args),
                                      expected, where, "Z has one row per token: shape (L, f).")
        if failure is not None:
            return _report(failure)
        if _same(got, expected, 1e-9):
            continue
        message = f"for {where}: Z differs from TTTLayer.dual by up to {_max_err(got, expected):.3g}"
        for flags, hint in _CAPSTONE_MISTAKES:
            if _same(got, _ttt_linear_dual_variant(*args, **flags), 1e-9):
                return _report(_fail(name, message, hint))
        if L > b and _same(got[:b], expected[:b], 1e-9):
            return _report(_fail(name, message, "the first mini-batch is right: check what the next one starts "
                                                "from (W_b, c_b) and the partial last mini-batch (τ_1..τ_r)."))
        return _report(_fail(name, message, "per mini-batch: G = ∂ℓ/∂(K W + c) through the LayerNorm "
                                            "(target V − K), Z̄ = Q W + c − tril(E ⊙ (Q Kᵀ + 1)) G with "
                                            "E_ij = τ_i η_j, output Q + LN(Z̄), then carry W_b, c_b."))
    return _report(ExerciseResult(name, True, "Z equals TTTLayer.dual (TTT-Linear, one head) for b = 4 with a "
                                              "partial last mini-batch and for b = 8."))


# ----------------------------------------------------------------------------------------------------------
# Chapter 5: the outer gradient through one inner step (second-order term included)
# ----------------------------------------------------------------------------------------------------------

def _meta_grad_autograd(W0, q, k, v, y, eta):
    W0 = W0.clone().requires_grad_()
    eta_t = torch.tensor(float(eta), dtype=W0.dtype, requires_grad=True)
    inner = 0.5 * ((k @ W0 - v) ** 2).sum()
    (grad,) = torch.autograd.grad(inner, W0, create_graph=True)
    W1 = W0 - eta_t * grad
    outer = 0.5 * ((q @ W1 - y) ** 2).sum()
    gW, geta = torch.autograd.grad(outer, (W0, eta_t))
    return gW, float(geta)


def check_meta_grad_linear(fn: Callable[..., Tuple[torch.Tensor, float]]) -> ExerciseResult:
    """Check the outer gradient through one inner step, ``fn(W0, q, k, v, y, eta) -> (dL/dW0, dL/deta)``.

    One token, bare linear inner model, row vectors of shape ``(f,)``::

        inner step   W1 = W0 − η kᵀ(k W0 − v)          (gradient of ½‖k W − v‖² at W0)
        outer loss   L  = ½ ‖q W1 − y‖²

    Return ``dL/dW0`` (shape ``(f, f)``, including the path through the inner gradient) and ``dL/dη`` (a
    number). Reference: ``torch.autograd`` with ``create_graph=True``. Cases (float64): ``f = 3, η = 0.5`` and
    ``f = 5, η = 0.2``; tolerance 1e-9.
    """
    name = "check_meta_grad_linear"
    gen = _float64_gen(35)
    for f, eta in ((3, 0.5), (5, 0.2)):
        W0 = _randn(gen, f, f)
        q, k, v, y = (_randn(gen, f) for _ in range(4))
        exp_W, exp_eta = _meta_grad_autograd(W0, q, k, v, y, eta)
        where = f"f={f}, eta={eta}"
        got, error = _call(name, fn, W0.clone(), q.clone(), k.clone(), v.clone(), y.clone(), eta)
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        try:
            got_W, got_eta = got  # type: ignore[misc]
            got_eta = float(got_eta)
        except (TypeError, ValueError, RuntimeError):
            return _report(_fail(name, f"for {where} you returned {type(got).__name__}",
                                 "return a pair (grad_W0 of shape (f, f), grad_eta as a number)."))
        got_W = _as_tensor(got_W, exp_W)
        if got_W is None or got_W.shape != exp_W.shape:
            return _report(_fail(name, f"for {where}: grad_W0 must have W0's shape {tuple(exp_W.shape)}",
                                 "dL/dW0 has one entry per entry of W0."))
        # pieces of the derivation, to recognise the usual mistakes
        g = k @ W0 - v
        W1 = W0 - eta * torch.outer(k, g)
        r = q @ W1 - y
        first_order = torch.outer(q, r)
        second = -eta * float(q @ k) * torch.outer(k, r)
        ok_W = _same(got_W, exp_W, 1e-9)
        tol = _LOW_PRECISION_TOL if getattr(got_W, "_ttt4rec_low_precision", False) else 1e-9
        ok_eta = abs(got_eta - exp_eta) <= tol + tol * abs(exp_eta)
        if ok_W and ok_eta:
            continue
        if not ok_W:
            message = f"for {where}: grad_W0 differs from autograd by up to {_max_err(got_W, exp_W):.3g}"
            if _same(got_W, first_order, 1e-9):
                hint = ("this is the first-order answer qᵀr (r = q W1 − y): it treats the inner gradient as a "
                        "constant. W1 depends on W0 also through kᵀ(k W0 − v); that path adds the second-order "
                        "term −η (q·k) kᵀ r.")
            elif _same(got_W, first_order - second, 1e-9):
                hint = "the second-order term has a minus sign: dL/dW0 = qᵀr − η (q·k) kᵀr."
            elif _same(got_W, -exp_W, 1e-9):
                hint = "the sign is flipped: r = q W1 − y (prediction minus target)."
            elif _same(got_W, exp_W.T, 1e-9):
                hint = "you return the transpose: rows of dL/dW0 follow W0's inputs, so it is qᵀ r (q on the left)."
            else:
                hint = ("W1 = (I − η kᵀk) W0 + η kᵀv, so dL/dW0 = (I − η kᵀk) qᵀ r = qᵀ r − η (q·k) kᵀ r "
                        "with r = q W1 − y.")
        else:
            message = f"for {where}: grad_eta = {got_eta:.6g}, expected {exp_eta:.6g}"
            if abs(got_eta) < 1e-12:
                hint = "η is learned too: L depends on η through W1 = W0 − η kᵀ(k W0 − v), so dL/dη ≠ 0."
            elif abs(got_eta + exp_eta) <= tol + tol * abs(exp_eta):
                hint = "the sign: dW1/dη = −kᵀ(k W0 − v), so dL/dη = −(q·k)(r·g) with g = k W0 − v."
            else:
                hint = "dL/dη = ⟨qᵀr, −kᵀg⟩ = −(q·k)(r·g) with g = k W0 − v and r = q W1 − y."
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "dL/dW0 (with the second-order term) and dL/dη match autograd "
                                              "for f = 3 and f = 5."))

