"""Checks for the book's coding exercises: run a reader's function, say clearly whether it is right.

Every ``check_*`` function takes the reader's function, runs it on fixed (seeded) inputs, compares it with a
reference — the library's own implementation, autograd, or hand-computed values — and returns an
:class:`ExerciseResult` after printing it::

    >>> from ttt4rec_edu.exercises import check_split_counts
    >>> check_split_counts(my_split_counts)          # doctest: +SKIP
    ✓ check_split_counts: matches split_counts for n = 1..40 at 3:2:5 and 6:2:2 (80 cases).

A wrong answer never passes silently: the result says ``✗``, shows the first input where the answer differs,
what was expected and what came back, and, where the mistake is a common one, a specific hint. An exception
raised inside the reader's function is caught and reported the same way.

When the environment variable ``TTT4REC_STRICT_CHECKS=1`` is set (``make book`` sets it) a failing check
also *raises* :class:`ExerciseFailed`, so a reference solution in the book that stops passing fails the build
instead of printing a cross nobody reads. A cell that demonstrates a failing check on purpose must then carry
the ``raises-exception`` tag.

Signatures the checks expect (each check's docstring has the details):

=============================  =================================================================  ========
check                          the reader's function                                              chapter
=============================  =================================================================  ========
``check_split_counts(fn)``     ``fn(num_samples: int, ratios: tuple[float, float, float])``       1
                               ``-> (train, valid, test)``
``check_ndcg(fn)``             ``fn(ranks: LongTensor[N], k: int) -> float`` (mean NDCG@k)         1
``check_rope_rotation(fn)``    ``fn(x: Tensor[..., seq, f], positions: LongTensor[seq],            2
                               base: float) -> Tensor`` (interleaved pairs)
``check_linear_inner_grad``    ``fn(x[n, d_in], W[d_in, d_out], b[d_out], y[n, d_out])             3
                               -> (grad_W, grad_b)`` of ½‖xW + b − y‖²
``check_dual_form_linear``     ``fn(W0[f, f], Q[b, f], K[b, f], V[b, f], eta: float)               4
                               -> (Z[b, f], W_next[f, f])``
=============================  =================================================================  ========
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch

from .data.protocol import parse_split, split_counts
from .rope import apply_rope

STRICT_ENV = "TTT4REC_STRICT_CHECKS"


class ExerciseFailed(AssertionError):
    """Raised by a failing check when ``TTT4REC_STRICT_CHECKS=1`` (the book build); carries the hint."""


@dataclass(frozen=True)
class ExerciseResult:
    """The verdict of one check: ``passed`` and a human-readable ``message`` (with a hint when it failed)."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.name}: {self.message}"

    def __repr__(self) -> str:
        return str(self)

    def _ipython_display_(self) -> None:
        # A check prints its verdict as it returns; when the call is a cell's last line, Jupyter would show
        # the returned object a second time. Show it only if it was not printed already.
        if not getattr(self, "_printed", False):
            print(self)

    def raise_if_failed(self) -> "ExerciseResult":
        """Raise :class:`ExerciseFailed` with the message when the check failed; return ``self`` otherwise."""
        if not self.passed:
            raise ExerciseFailed(str(self))
        return self


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _report(result: ExerciseResult) -> ExerciseResult:
    print(result)
    object.__setattr__(result, "_printed", True)  # frozen dataclass: a display flag, not part of the verdict
    if _strict():
        result.raise_if_failed()
    return result


def _fail(name: str, message: str, hint: Optional[str] = None) -> ExerciseResult:
    text = message if hint is None else f"{message}\n  Hint: {hint}"
    return ExerciseResult(name, False, text)


def _call(name: str, fn: Callable, *args) -> Tuple[object, Optional[ExerciseResult]]:
    """Run the reader's function; an exception becomes a failed result instead of a traceback."""
    try:
        return fn(*args), None
    except Exception as exc:  # the reader's code may raise anything; report it, do not crash the check
        return None, _fail(name, f"your function raised {type(exc).__name__}: {exc}")


def _as_tensor(value, like: torch.Tensor) -> Optional[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype=like.dtype, device=like.device)
    try:
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        return None


def _same(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 1e-6) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=atol, rtol=rtol))


def _max_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max()) if got.shape == expected.shape else float("nan")


# ----------------------------------------------------------------------------------------------------------
# Chapter 1: the evaluation protocol
# ----------------------------------------------------------------------------------------------------------

def _floor_only_counts(n: int, ratios: Sequence[float]) -> Tuple[int, int, int]:
    valid, test = int(ratios[1] * n), int(ratios[2] * n)
    return (n - valid - test, valid, test)


def _rounded_counts(n: int, ratios: Sequence[float]) -> Tuple[int, int, int]:
    valid, test = round(ratios[1] * n), round(ratios[2] * n)
    return (n - valid - test, valid, test)


def check_split_counts(fn: Callable[[int, Tuple[float, float, float]], Sequence[int]]) -> ExerciseResult:
    """Check ``fn(num_samples, ratios) -> (train, valid, test)`` against :func:`split_counts`.

    ``ratios`` is what :func:`~ttt4rec_edu.data.protocol.parse_split` returns, e.g. ``(0.3, 0.2, 0.5)``.
    Cases: every ``num_samples`` from 1 to 40 for the paper's splits 3:2:5 and 6:2:2.
    """
    name = "check_split_counts"
    cases = 0
    for spec in ("3:2:5", "6:2:2"):
        ratios = parse_split(spec)
        for n in range(1, 41):
            cases += 1
            got, error = _call(name, fn, n, ratios)
            if error is not None:
                return _report(_fail(name, f"for num_samples={n}, split {spec}: {error.message}"))
            expected = split_counts(n, ratios)
            try:
                got_tuple = tuple(int(c) for c in got)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                return _report(_fail(name, f"for num_samples={n}, split {spec} you returned {got!r}",
                                     "return three integers (train, valid, test)."))
            if got_tuple == expected:
                continue
            where = f"num_samples={n}, split {spec}: expected {expected}, got {got_tuple}"
            if len(got_tuple) != 3:
                hint = "return exactly three counts: (train, valid, test)."
            elif sum(got_tuple) != n:
                hint = f"the three counts must add up to num_samples ({n}); every sample goes somewhere."
            elif got_tuple == _floor_only_counts(n, ratios):
                hint = ("valid and test start at floor(ratio * n), but a part whose ratio * n lies strictly "
                        "between 0 and 1 then takes one sample from train (walking from test back to valid), "
                        "while train still has more than one.")
            elif got_tuple == _rounded_counts(n, ratios):
                hint = "RecBole truncates (floor) ratio * n for valid and test; it does not round."
            elif got_tuple[::-1] == expected:
                hint = "the order is (train, valid, test)."
            else:
                hint = ("compute valid = floor(0.2 n), test = floor(0.5 n) (for 3:2:5), train = the rest, "
                        "then apply the bump rule for parts with 0 < ratio * n < 1.")
            return _report(_fail(name, where, hint))
    return _report(ExerciseResult(name, True, f"matches split_counts for n = 1..40 at 3:2:5 and 6:2:2 "
                                              f"({cases} cases)."))


# (ranks, k, expected NDCG@k) worked out by hand: gain 1/log2(rank + 1) when rank <= k, else 0, then the mean.
_NDCG_HAND_CASES = (
    ([1], 10, 1.0),                                 # first place: 1/log2(2) = 1
    ([3], 10, 0.5),                                 # 1/log2(4) = 1/2
    ([7], 10, 1.0 / 3.0),                           # 1/log2(8) = 1/3
    ([7], 7, 1.0 / 3.0),                            # rank == k still counts
    ([8], 7, 0.0),                                  # rank k + 1 is outside the list
    ([1, 3], 10, 0.75),                             # mean of 1 and 1/2
    ([1, 3, 15, 100], 10, (1.0 + 0.5) / 4),         # two misses pull the mean down
    ([2], 10, 1.0 / math.log2(3)),                  # 0.6309...
)


def check_ndcg(fn: Callable[[torch.Tensor, int], float]) -> ExerciseResult:
    """Check ``fn(ranks, k) -> mean NDCG@k`` (1-based ranks, one relevant item per row) on hand-computed cases.

    The reference values are in ``_NDCG_HAND_CASES`` (and agree with :func:`ttt4rec_edu.metrics.ndcg`).
    """
    name = "check_ndcg"
    for ranks_list, k, expected in _NDCG_HAND_CASES:
        ranks = torch.tensor(ranks_list, dtype=torch.long)
        got, error = _call(name, fn, ranks.clone(), k)
        where = f"ranks={ranks_list}, k={k}"
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        try:
            value = float(got)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return _report(_fail(name, f"for {where} you returned {got!r}",
                                 "return one number: the mean NDCG@k over all ranks."))
        if math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9):
            continue
        message = f"for {where}: expected {expected:.6f}, got {value:.6f}"
        r = ranks.double()
        in_list = r <= k
        if ranks_list == [1] and not math.isfinite(value):
            hint = "rank 1 must give gain 1: the discount is log2(rank + 1), not log2(rank)."
        elif math.isclose(value, float(torch.where(in_list, 1 / torch.log2(r), 0 * r).mean()), rel_tol=1e-6):
            hint = "the discount is log2(rank + 1), not log2(rank): first place gets 1/log2(2) = 1."
        elif math.isclose(value, float(torch.where(in_list, 1 / torch.log(r + 1), 0 * r).mean()), rel_tol=1e-6):
            hint = "use the base-2 logarithm (torch.log2), not the natural logarithm."
        elif math.isclose(value, float(torch.where(r < k, 1 / torch.log2(r + 1), 0 * r).mean()), rel_tol=1e-6):
            hint = "a target at rank exactly k is still in the top k: keep rank <= k."
        elif math.isclose(value, float(torch.where(in_list, 1 / torch.log2(r + 1), 0 * r).sum()), rel_tol=1e-6):
            hint = "average over the targets (mean), do not sum."
        elif math.isclose(value, float(torch.where(in_list, 1 / torch.log2(r + 1), 1 / torch.log2(r + 1)).mean()),
                          rel_tol=1e-6):
            hint = "targets ranked below k contribute 0 to NDCG@k."
        else:
            hint = "each target contributes 1/log2(rank + 1) if rank <= k and 0 otherwise; report the mean."
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, f"all {len(_NDCG_HAND_CASES)} hand-computed cases agree."))


# ----------------------------------------------------------------------------------------------------------
# Chapter 2: RoPE
# ----------------------------------------------------------------------------------------------------------

def _rope_half_split(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """The *other* popular convention (pairs ``(x_i, x_{i + f/2})``), used only to recognise the mistake."""
    f = x.shape[-1]
    omega = base ** (-torch.arange(0, f, 2, dtype=x.dtype) / f)
    angles = positions.to(x.dtype)[:, None] * omega[None, :]
    first, second = x[..., : f // 2], x[..., f // 2:]
    return torch.cat((first * angles.cos() - second * angles.sin(), second * angles.cos() + first * angles.sin()), -1)


def check_rope_rotation(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> ExerciseResult:
    """Check ``fn(x, positions, base) -> rotated x`` against :func:`ttt4rec_edu.rope.apply_rope`.

    ``x`` is ``(..., seq, f)`` float64, ``positions`` a ``LongTensor[seq]``; feature pair ``(x[2i], x[2i+1])``
    must be rotated by the angle ``position * base ** (-2i / f)``. Cases: a ``(5, 8)`` input with positions
    0..4 at base 1000, a batched ``(2, 3, 6, 16)`` input with positions ``t mod 4`` at base 10000.
    """
    name = "check_rope_rotation"
    gen = torch.Generator().manual_seed(2)
    cases = (
        (torch.randn(5, 8, generator=gen, dtype=torch.float64), torch.arange(5), 1000.0),
        (torch.randn(2, 3, 6, 16, generator=gen, dtype=torch.float64), torch.arange(6) % 4, 10000.0),
    )
    for x, positions, base in cases:
        expected = apply_rope(x, positions, base)
        got, error = _call(name, fn, x.clone(), positions.clone(), base)
        where = f"x of shape {tuple(x.shape)}, positions {positions.tolist()}, base {base:g}"
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        got_t = _as_tensor(got, expected)
        if got_t is None or got_t.shape != expected.shape:
            shape = None if got_t is None else tuple(got_t.shape)
            return _report(_fail(name, f"for {where}: expected a tensor of shape {tuple(expected.shape)}, "
                                       f"got {shape}", "RoPE returns a tensor shaped like its input."))
        if _same(got_t, expected, atol=1e-9):
            continue
        message = f"for {where}: largest difference {_max_err(got_t, expected):.3g}"
        pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731 - norms of the (2i, 2i+1) pairs
        if _same(got_t, apply_rope(x, -positions, base), atol=1e-9):
            hint = "you rotate the wrong way: x'[2i] = x[2i] cos − x[2i+1] sin, x'[2i+1] = x[2i+1] cos + x[2i] sin."
        elif _same(got_t, _rope_half_split(x, positions, base), atol=1e-9):
            hint = ("you pair feature i with feature i + f/2 (the 'rotate_half' layout); this book pairs "
                    "adjacent features (x[2i], x[2i+1]).")
        elif _same(got_t, x, atol=1e-12):
            hint = "your output equals the input: every pair must be turned by position * omega_i."
        elif not _same(pair_norm(got_t), pair_norm(x), atol=1e-9):
            hint = ("a rotation keeps the length of every (x[2i], x[2i+1]) pair; yours changes it — check that "
                    "cos and sin use the same angle for both members of a pair.")
        else:
            hint = "the pairs keep their length, so the angles are off: omega_i = base ** (-2i / f), i = 0..f/2-1."
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "matches apply_rope (interleaved pairs) on 2 cases, "
                                              "including batched inputs and positions t mod b."))


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
        got, error = _call(name, fn, x.clone(), W.detach().clone(), b.detach().clone(), y.clone())
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        try:
            got_W, got_b = got  # type: ignore[misc]
        except (TypeError, ValueError):
            return _report(_fail(name, f"for {where} you returned {type(got).__name__}",
                                 "return a pair (grad_W, grad_b)."))
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
        got, error = _call(name, fn, W0.clone(), Q.clone(), K.clone(), V.clone(), eta)
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        try:
            got_Z, got_W = got  # type: ignore[misc]
        except (TypeError, ValueError):
            return _report(_fail(name, f"for {where} you returned {type(got).__name__}",
                                 "return a pair (Z, W_next)."))
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
                hint = "keep the diagonal (torch.tril(·), not tril(·, -1)): token i reads its output after its own update."
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


__all__ = [
    "ExerciseFailed",
    "ExerciseResult",
    "check_split_counts",
    "check_ndcg",
    "check_rope_rotation",
    "check_linear_inner_grad",
    "check_dual_form_linear",
]
