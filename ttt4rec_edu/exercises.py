"""Checks for the book's coding exercises: run a reader's function, say clearly whether it is right.

Every ``check_*`` function takes the reader's function, runs it on fixed (seeded) inputs, compares it with a
reference — the library's own implementation, autograd, or hand-computed values — and returns an
:class:`ExerciseResult` after printing it::

    >>> from ttt4rec_edu.exercises import check_split_counts
    >>> check_split_counts(my_split_counts)          # doctest: +SKIP
    ✓ check_split_counts: matches split_counts for n = 1..40 at 3:2:5 and 6:2:2 (80 cases).

A wrong answer never passes silently: the result says ``✗``, shows the first input where the answer differs,
what was expected and what came back, and, where the mistake is a common one, a specific hint. An exception
raised inside the reader's function is caught and reported the same way. An answer computed in float32 is
compared with float32's tolerance (1e-5) instead of a check's float64 one: a right answer is never rejected for
its precision, while every mistake the hints name is far larger than that.

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
from .ttt import INNER_LN_EPS, ln_fused_l2_bwd

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


_LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)
_LOW_PRECISION_TOL = 1e-5   # float32 keeps ~7 significant digits; every mistake the hints name is far larger


def _as_tensor(value, like: torch.Tensor) -> Optional[torch.Tensor]:
    """``value`` as a tensor of ``like``'s dtype; an answer computed in float32 (or lower) is marked, so that
    :func:`_same` compares it with a float32 tolerance instead of float64's."""
    low = str(getattr(value, "dtype", "")).split(".")[-1] in {"float32", "float16", "bfloat16"}
    try:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to(dtype=like.dtype, device=like.device)
        else:
            tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        return None
    if low and like.dtype not in _LOW_PRECISION:
        tensor = tensor.clone()
        tensor._ttt4rec_low_precision = True
    return tensor


def _same(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 1e-6) -> bool:
    """``allclose`` with the same shape; a float32 answer (see :func:`_as_tensor`) gets float32's tolerance."""
    if getattr(got, "_ttt4rec_low_precision", False):
        atol, rtol = max(atol, _LOW_PRECISION_TOL), max(rtol, _LOW_PRECISION_TOL)
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=atol, rtol=rtol))


def _tensor_answer(name: str, fn: Callable, args: tuple, expected: torch.Tensor, where: str,
                   shape_hint: str) -> Tuple[Optional[torch.Tensor], Optional[ExerciseResult]]:
    """Call the reader's ``fn(*args)`` and turn its answer into a tensor shaped like ``expected``; on an exception,
    a non-tensor or a wrong shape return the failed result instead (with ``shape_hint`` for the shape case)."""
    got, error = _call(name, fn, *args)
    if error is not None:
        return None, _fail(name, f"for {where}: {error.message}")
    got_t = _as_tensor(got, expected)
    if got_t is None or got_t.shape != expected.shape:
        shape = None if got_t is None else tuple(got_t.shape)
        return None, _fail(name, f"for {where}: expected a tensor of shape {tuple(expected.shape)}, got {shape}",
                           shape_hint)
    return got_t, None


def _pair_answer(name: str, fn: Callable, args: tuple, where: str,
                 pair_hint: str) -> Tuple[Optional[tuple], Optional[ExerciseResult]]:
    """Call the reader's ``fn(*args)`` and unpack its answer into two values; on an exception, or an answer that
    is not a pair, return the failed result instead (with ``pair_hint`` for the second case)."""
    got, error = _call(name, fn, *args)
    if error is not None:
        return None, _fail(name, f"for {where}: {error.message}")
    try:
        first, second = got  # type: ignore[misc]
    except (TypeError, ValueError):
        return None, _fail(name, f"for {where} you returned {type(got).__name__}", pair_hint)
    return (first, second), None


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
                hint = ("the bump rule is missing: valid and test start at floor(ratio * n), but a part whose "
                        "ratio * n lies strictly "
                        "between 0 and 1 then takes one sample from train (walking from test back to valid), "
                        "while train still has more than one.")
            elif got_tuple == _rounded_counts(n, ratios):
                hint = "RecBole truncates (floor) ratio * n for valid and test; it does not round."
            elif any(got_tuple == split_counts(n, parse_split(other)) for other in ("3:2:5", "6:2:2")
                     if other != spec):
                hint = (f"that is the answer for the other split: use the ratios passed in ({spec} here), "
                        "not fixed ones.")
            elif got_tuple[::-1] == expected:
                hint = "the order is (train, valid, test)."
            else:
                hint = (f"compute valid = floor({ratios[1]:g} n), test = floor({ratios[2]:g} n) (split {spec}), "
                        "train = the rest, then apply the bump rule for parts with 0 < ratio * n < 1.")
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


_ROPE_ATOL = 1e-5


def _rope_angles(x: torch.Tensor, rotated: torch.Tensor) -> torch.Tensor:
    """The angle (radians, in (−π, π]) by which each (x[2i], x[2i+1]) pair was turned into ``rotated``'s."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, d = rotated[..., 0::2], rotated[..., 1::2]
    return torch.atan2(a * d - b * c, a * c + b * d)


def _rope_angle_hint(x: torch.Tensor, got: torch.Tensor, positions: torch.Tensor, base: float,
                     fn: Callable) -> str:
    """The pairs keep their length: say which angles are wrong, naming the usual mistake when it is one; but
    first make sure the answer turns every pair by an angle that depends on the position only (a rotation):
    the same call on another input must turn each pair by the same angles."""
    f = x.shape[-1]
    i = torch.arange(f // 2, dtype=torch.float64)
    got_angles = _rope_angles(x, got)
    wrap = lambda a: torch.remainder(a + math.pi, 2 * math.pi) - math.pi  # noqa: E731
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(22), dtype=x.dtype)
    again, error = _call("check_rope_rotation", fn, other.clone(), positions.clone(), base)
    again_t = None if error is not None else _as_tensor(again, other)
    if again_t is None or again_t.shape != other.shape or \
            bool((wrap(_rope_angles(other, again_t) - got_angles).abs() > 1e-4).any()):
        return ("each pair keeps its length, but it is not turned by one angle per (position, pair): on another "
                "input the same pair turns by a different angle. A rotation is x'[2i] = x[2i] cos − x[2i+1] sin, "
                "x'[2i+1] = x[2i+1] cos + x[2i] sin, with the same angle for both members.")

    def turned_by(pos: torch.Tensor, omega: torch.Tensor) -> bool:
        want = wrap(pos.to(torch.float64)[:, None] * omega[None, :])
        return bool((wrap(got_angles - want).abs() < 1e-4).all())

    omega = base ** (-2 * i / f)
    if turned_by(positions + 1, omega):
        return "positions start at 0: the first token is not rotated (angle 0 · omega_i)."
    if turned_by(positions, base ** (-i / f)):
        return "the exponent is −2i/f with i = 0..f/2−1 the pair index (omega_i = base ** (-2i / f)), not −i/f."
    if turned_by(positions, base ** (-2 * (i + 1) / f)):
        return "the pair index i starts at 0: pair 0 turns by position · base ** 0 = position radians."
    if turned_by(positions, base ** (2 * i / f)):
        return "omega_i = base ** (−2i / f) falls with i: the exponent is negative."
    want = wrap(positions.to(torch.float64)[:, None] * omega[None, :])
    diff = wrap(got_angles - want).abs()
    if not bool((diff > 1e-4).any()):   # right lengths and angles, yet different values: pairs moved around
        return ("every pair is turned by the right angle, but the pairs are not where they were: rotate each "
                "(x[2i], x[2i+1]) in place.")
    first = [int(k) for k in torch.nonzero(diff > 1e-4)[0]]
    *_, t, pair = first
    return (f"the pairs keep their length, but the angles are off: pair {pair} at position "
            f"{int(positions[t])} turns by {float(got_angles[tuple(first)]):.4f} rad, expected "
            f"{float(want[t, pair]):.4f} (position · base ** (−2·{pair}/{f})).")


def check_rope_rotation(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> ExerciseResult:
    """Check ``fn(x, positions, base) -> rotated x`` against :func:`ttt4rec_edu.rope.apply_rope`.

    ``x`` is ``(..., seq, f)`` float64, ``positions`` a ``LongTensor[seq]``; feature pair ``(x[2i], x[2i+1])``
    must be rotated by the angle ``position * base ** (-2i / f)``. Cases: a ``(5, 8)`` input with positions
    0..4 at base 1000, a batched ``(2, 3, 6, 16)`` input with positions ``t mod 4`` at base 10000. Tolerance
    1e-5: angles computed in float32 (``torch.arange`` without a dtype) are fine.
    """
    name = "check_rope_rotation"
    gen = torch.Generator().manual_seed(2)
    cases = (
        (torch.randn(5, 8, generator=gen, dtype=torch.float64), torch.arange(5), 1000.0),
        (torch.randn(2, 3, 6, 16, generator=gen, dtype=torch.float64), torch.arange(6) % 4, 10000.0),
    )
    for x, positions, base in cases:
        expected = apply_rope(x, positions, base)
        where = f"x of shape {tuple(x.shape)}, positions {positions.tolist()}, base {base:g}"
        got_t, failure = _tensor_answer(name, fn, (x.clone(), positions.clone(), base), expected, where,
                                        "RoPE returns a tensor shaped like its input.")
        if failure is not None:
            return _report(failure)
        if _same(got_t, expected, atol=_ROPE_ATOL, rtol=0.0):
            continue
        message = f"for {where}: largest difference {_max_err(got_t, expected):.3g}"
        pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731 - norms of the (2i, 2i+1) pairs
        if _same(got_t, apply_rope(x, -positions, base), atol=_ROPE_ATOL):
            hint = "you rotate the wrong way: x'[2i] = x[2i] cos − x[2i+1] sin, x'[2i+1] = x[2i+1] cos + x[2i] sin."
        elif _same(got_t, _rope_half_split(x, positions, base), atol=_ROPE_ATOL):
            hint = ("you pair feature i with feature i + f/2 (the 'rotate_half' layout); this book pairs "
                    "adjacent features (x[2i], x[2i+1]).")
        elif _same(got_t, x, atol=1e-12):
            hint = "your output equals the input: every pair must be turned by position * omega_i."
        elif not _same(pair_norm(got_t), pair_norm(x), atol=_ROPE_ATOL):
            hint = ("a rotation keeps the length of every (x[2i], x[2i+1]) pair; yours changes it — check that "
                    "cos and sin use the same angle for both members of a pair.")
        else:
            hint = _rope_angle_hint(x, got_t, positions, base, fn)
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




# ==========================================================================================================
# Checks for the coding exercises of chapters 3–5 (the inner loop, the dual form, the outer loop).
#
# Same contract as the checks above: each ``check_*`` runs the
# reader's function on fixed, seeded float64 inputs, compares it with a reference (the library's own function,
# autograd, or hand-derived formulas), prints an :class:`~ttt4rec_edu.exercises.ExerciseResult` — ``✓`` or ``✗``
# with the first failing input and, for the usual mistakes, a specific hint — and returns it. With
# ``TTT4REC_STRICT_CHECKS=1`` a failing check raises :class:`~ttt4rec_edu.exercises.ExerciseFailed`.
#
# =================================  ==================================================================  =======
# check                              the reader's function                                               chapter
# =================================  ==================================================================  =======
# ``check_ln_l2_grad(fn)``           ``fn(z[n, f], target[n, f], gamma[f], beta[f]) -> grad[n, f]``       3
#                                    of ``½ Σ_rows ‖γ ⊙ LN(z) + β − target‖²`` w.r.t. ``z``
# ``check_online_ttt_linear(fn)``    ``fn(W0[f, f], Q[L, f], K[L, f], V[L, f], eta[L])``                  3
#                                    ``-> (Z[L, f], W_L[f, f])``: per-token online GD, output after update
# ``check_token_scale(fn)``          ``fn(delta[b]) -> tau[b]``, ``τ_i = max(0, 1/i + δ_i)``, i = 1..b     4
# ``check_meta_grad_linear(fn)``     ``fn(W0[f, f], q[f], k[f], v[f], y[f], eta: float)``                 5
#                                    ``-> (dL/dW0[f, f], dL/deta: float)`` through one inner step
# =================================  ==================================================================  =======
# ==========================================================================================================

def _float64_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


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
        variant = lambda **kw: _online_linear_reference(W0, Q, K, V, eta, **kw)  # noqa: E731
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
                (variant(use_key=True)[0], "the output uses the test view q_t: z_t = q_t W_t (k_t is the training input)."),
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


__all__ = [
    "ExerciseFailed",
    "ExerciseResult",
    "check_split_counts",
    "check_ndcg",
    "check_rope_rotation",
    "check_linear_inner_grad",
    "check_dual_form_linear",
    "check_ln_l2_grad", "check_online_ttt_linear", "check_token_scale", "check_meta_grad_linear",
]


# ==========================================================================================================
# Checks for the coding exercises of chapters 6 (backbones and the full model) and 8 (the baselines).
#
# Same contract as the checks above (seeded/fixed inputs, a reference from the library, ✓/✗ with a specific
# hint, ExerciseFailed under TTT4REC_STRICT_CHECKS=1).
#
# ================================  ===================================================================  =======
# check                             the reader's function                                                chapter
# ================================  ===================================================================  =======
# ``check_ttt_block_params(fn)``    ``fn(C: int, nh: int, ffn_size: int, b: int) -> int``: parameters of    6
#                                   one TTT-Linear residual block, Transformer backbone, official choices
#                                   (RMSNorm, SwiGLU); reference: a built ``ResidualBlock``
# ``check_append_mask_token(fn)``   ``fn(item_seq[B, L], lengths[B], mask_token: int, max_len: int)``       8
#                                   ``-> (new_seq[B, W], new_lengths[B])``: the mask right after each
#                                   history, the oldest item dropped only when the history is full;
#                                   reference: ``ttt4rec_edu.baselines.bert4rec.append_token``
# ================================  ===================================================================  =======
# ==========================================================================================================

def _ttt_linear_block_pieces(C: int, nh: int, ffn_size: int, b: int) -> dict:
    """The parameter count of a TTT-Linear Transformer-backbone block, piece by piece (see ttt4rec_edu.model)."""
    f = C // nh
    return {
        "views θ_Q, θ_K, θ_V": 3 * C * C,
        "output θ_O": C * C,
        "learning-rate gate (weight nh×C, bias nh)": nh * C + nh,
        "token offsets δ": b,
        "inner LayerNorm (γ, β per head)": 2 * C,
        "post_norm LayerNorm": 2 * C,
        "inner Linear W0 (nh × (f×f + f))": nh * (f * f + f),
        "SwiGLU (3 × C × ffn)": 3 * C * ffn_size,
        "seq_norm + ffn_norm (RMSNorm)": 2 * C,
    }


def _built_block_params(C: int, nh: int, ffn_size: int, b: int) -> int:
    from .backbones import ResidualBlock  # local import: exercises must not import the whole model stack early
    block = ResidualBlock(C, nh, ffn_size, backbone="transformer", inner="linear", mini_batch_size=b)
    return sum(p.numel() for p in block.parameters())


def check_ttt_block_params(fn: Callable[[int, int, int, int], int]) -> ExerciseResult:
    """Check ``fn(C, nh, ffn_size, b) -> int``: the parameters of one TTT4Rec residual block with the
    Transformer backbone, a TTT-**Linear** inner model, RMSNorm and SwiGLU (the official choices), hidden size
    ``C``, ``nh`` heads, feed-forward width ``ffn_size`` and mini-batch size ``b``.

    Reference: the parameter count of a built :class:`ttt4rec_edu.backbones.ResidualBlock`. Cases
    ``(C, nh, ffn_size, b)``: ``(64, 4, 256, 8)`` (the released sizes: 67,276), ``(32, 2, 128, 8)``,
    ``(48, 3, 96, 4)``, ``(24, 6, 64, 16)``. The answer must be exact.
    """
    name = "check_ttt_block_params"
    for C, nh, ffn_size, b in ((64, 4, 256, 8), (32, 2, 128, 8), (48, 3, 96, 4), (24, 6, 64, 16)):
        expected = _built_block_params(C, nh, ffn_size, b)
        pieces = _ttt_linear_block_pieces(C, nh, ffn_size, b)
        assert sum(pieces.values()) == expected, "the piece-by-piece count no longer matches the library"
        where = f"C={C}, nh={nh}, ffn_size={ffn_size}, b={b}"
        got, error = _call(name, fn, C, nh, ffn_size, b)
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        try:
            got_int = int(got)  # type: ignore[arg-type]
            if got_int != got:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            return _report(_fail(name, f"for {where} you returned {got!r}",
                                 "return one whole number: the sum of the numel() of every parameter."))
        if got_int == expected:
            continue
        f = C // nh
        mistakes = (
            (-C * C, "count four C × C projections: the Transformer backbone has separate θ_Q, θ_K, θ_V "
                     "(the Mamba backbone merges θ_Q/θ_K) and the output projection θ_O."),
            (-(nh * (f * f + f)) + C * C + C,
             "the inner model is one small model per head: nh × (f × f + f) with f = C / nh, i.e. C²/nh + C "
             "weights, not one C × C matrix."),
            (-(nh * (f * f + f)) + nh * (f * 4 * f + 4 * f + 4 * f * f + f),
             "that is TTT-MLP's inner model (f → 4f → f per head); this block uses TTT-Linear: nh × (f × f + f)."),
            (-b, "the learnable token offsets δ of τ_i = max(0, 1/i + δ_i): one per mini-batch position, b of them."),
            (-(nh * C + nh), "the learned step size η_t has a gate per head: weight (nh, C) and bias (nh)."),
            (-(nh * C), "the learning-rate gate's weight is (nh, C): every head reads the full C-dim input."),
            (-nh, "the learning-rate gate has a bias per head too (nh numbers)."),
            (-3 * C * ffn_size + 2 * C * ffn_size + ffn_size + C,
             "the official feed-forward block is SwiGLU: three bias-free C × ffn_size matrices (gate, up, down), "
             "not two linear layers with biases (that is the paper text's FFN, ffn='gelu')."),
            (-3 * C * ffn_size, "the block also holds the feed-forward residual: SwiGLU with 3 · C · ffn_size weights."),
            (-3 * C * ffn_size - 2 * C,
             "that is the TTT layer alone; the block adds two RMSNorms (seq_norm, ffn_norm: C each) and SwiGLU."),
            (+C, "the final RMSNorm belongs to the model (applied once after the last block), not to each block."),
        )
        hint = None
        for delta, text in mistakes:
            if got_int == expected + delta:
                hint = text
                break
        if hint is None and got_int in (expected - 2 * C, expected - 4 * C, expected - 6 * C, expected - C):
            hint = ("a norm is missing: the per-head inner LayerNorm (γ, β: 2C in all), the post_norm LayerNorm "
                    "before θ_O (2C), and the block's two RMSNorms (C each).")
        if hint is None:
            hint = "add up: " + " + ".join(f"{k} {v:,}" for k, v in pieces.items()) + f" = {expected:,}."
        return _report(_fail(name, f"for {where}: expected {expected:,} parameters, got {got_int:,}", hint))
    return _report(ExerciseResult(name, True, "matches the built ResidualBlock (TTT-Linear, Transformer backbone) "
                                              "for the released sizes (67,276) and three other shapes."))


def _append_when_full(item_seq: torch.Tensor, lengths: torch.Tensor, mask_token: int, max_len: int):
    from .baselines.bert4rec import append_token
    return append_token(item_seq, lengths, torch.full_like(lengths, mask_token), max_len, always_drop_oldest=False)


def check_append_mask_token(fn: Callable[..., Tuple[torch.Tensor, torch.Tensor]]) -> ExerciseResult:
    """Check ``fn(item_seq, lengths, mask_token, max_len) -> (new_seq, new_lengths)``: BERT4Rec's evaluation input.

    ``item_seq (B, L)`` right-padded ids (0 = padding, ``L <= max_len``), ``lengths (B,)``. Write ``mask_token``
    right after each history, at index ``lengths``; a history that already holds ``max_len`` items first drops
    its *oldest* item (shifts left by one), because the position table has ``max_len`` rows. Return the new
    right-padded ids (any width from ``max(new_lengths)`` to ``max_len``, zeros after each sequence) and the new
    lengths. Reference: ``append_token(..., always_drop_oldest=False)`` (the model's ``eval_drop_oldest=
    "when_full"``; RecBole's default always drops the oldest item, see chapter 8).
    """
    name = "check_append_mask_token"
    cases = (
        (torch.tensor([[3, 1, 4, 0, 0], [5, 9, 2, 6, 5], [7, 0, 0, 0, 0]]), torch.tensor([3, 5, 1]), 10, 5),
        (torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]]), torch.tensor([2, 1]), 8, 6),
        (torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([3, 3]), 7, 3),
        (torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2]), 9, 5),   # a batch narrower than max_len
    )
    for item_seq, lengths, mask_token, max_len in cases:
        exp_seq, exp_len = _append_when_full(item_seq, lengths, mask_token, max_len)
        where = f"item_seq={item_seq.tolist()}, lengths={lengths.tolist()}, mask_token={mask_token}, max_len={max_len}"
        pair, failure = _pair_answer(name, fn, (item_seq.clone(), lengths.clone(), mask_token, max_len), where,
                                     "return a pair (new_seq (B, W), new_lengths (B,)).")
        if failure is not None:
            return _report(failure)
        got_seq, got_len = pair
        got_seq, got_len = _as_tensor(got_seq, exp_seq), _as_tensor(got_len, exp_len)
        if got_seq is None or got_seq.dim() != 2 or got_seq.shape[0] != exp_seq.shape[0]:
            return _report(_fail(name, f"for {where}: new_seq must be a (batch, width) tensor of ids",
                                 "one row per sequence, right-padded with 0."))
        if got_len is None or got_len.shape != exp_len.shape:
            return _report(_fail(name, f"for {where}: new_lengths must have shape {tuple(exp_len.shape)}",
                                 "return one length per sequence."))
        got_list = got_seq.tolist()
        message = f"for {where}: expected {exp_seq.tolist()} with lengths {exp_len.tolist()}, got {got_list} " \
                  f"with lengths {got_len.tolist()}"
        # widen the reference with padding to the reader's width, when that width is allowed
        width = got_seq.shape[1]
        padded = torch.zeros(exp_seq.shape[0], max(width, exp_seq.shape[1]), dtype=exp_seq.dtype)
        padded[:, : exp_seq.shape[1]] = exp_seq
        seq_ok = width >= exp_seq.shape[1] and width <= max_len and torch.equal(got_seq, padded[:, :width])
        if seq_ok and torch.equal(got_len, exp_len):
            continue
        at_end = torch.cat([item_seq, torch.full_like(item_seq[:, :1], mask_token)], dim=1)
        always, _ = _always_drop(item_seq, lengths, mask_token, max_len)
        # the "overwrite the newest item" mistake: the mask at index min(lengths, max_len - 1)
        ow_width = min(max_len, max(item_seq.shape[1], int(lengths.max()) + 1))
        overwrite = torch.zeros(item_seq.shape[0], ow_width, dtype=item_seq.dtype)
        overwrite[:, : min(ow_width, item_seq.shape[1])] = item_seq[:, :ow_width]
        overwrite[torch.arange(item_seq.shape[0]), lengths.clamp(max=max_len - 1)] = mask_token
        by_width, _ = _append_when_full(item_seq, lengths, mask_token, item_seq.shape[1])
        if item_seq.shape[1] < max_len and _same_ids(got_seq, by_width):
            hint = (f"a history is full only when it holds max_len = {max_len} items; this batch is only "
                    f"{item_seq.shape[1]} wide, so a row of {item_seq.shape[1]} items still has room: widen the "
                    "batch by one column instead of dropping the oldest item.")
        elif _same_ids(got_seq, at_end):
            hint = ("right padding: the mask goes right after the last *real* item, at index lengths, not after "
                    "the padding at the end of the row.")
        elif seq_ok and not torch.equal(got_len, exp_len):
            hint = ("the ids are right but the lengths are not: the mask sits at new_lengths − 1, so a history "
                    "with room grows by one and a full one keeps max_len.")
        elif _same_ids(got_seq, always):
            hint = ("this drops the oldest item of *every* history: that is RecBole 1.2's evaluation "
                    "(eval_drop_oldest='always'). Here drop it only when the history already holds max_len items.")
        elif width > max_len:
            hint = ("a full history (lengths == max_len) has no room for the mask: drop its oldest item first "
                    "(shift the row left by one). The position table has only max_len rows.")
        elif _same_ids(got_seq, overwrite):
            hint = ("for a full history drop the *oldest* item (shift left) and put the mask last; overwriting the "
                    "last item throws away the most recent interaction, the most informative one.")
        elif exp_seq.shape[1] <= width <= max_len and torch.equal(got_seq[:, : exp_seq.shape[1]], exp_seq):
            hint = "after each sequence's mask there must be only padding (0)."
        else:
            hint = ("keep the history in order, write mask_token at index lengths (right after the last real "
                    "item), shift a full row left by one first, and pad the rest with 0.")
        return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, "matches append_token(..., always_drop_oldest=False) on rows with "
                                              "room, full rows, a batch of full rows and a batch narrower than "
                                              "max_len."))


def _always_drop(item_seq: torch.Tensor, lengths: torch.Tensor, mask_token: int, max_len: int):
    from .baselines.bert4rec import append_token
    return append_token(item_seq, lengths, torch.full_like(lengths, mask_token), max_len, always_drop_oldest=True)


def _same_ids(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to extra zero-padding columns on either side's right."""
    width = max(got.shape[1], expected.shape[1])
    a = torch.zeros(got.shape[0], width, dtype=torch.long)
    b = torch.zeros(expected.shape[0], width, dtype=torch.long)
    a[:, : got.shape[1]] = got.long()
    b[:, : expected.shape[1]] = expected.long()
    return got.shape[0] == expected.shape[0] and torch.equal(a, b)


__all__ += ["check_ttt_block_params", "check_append_mask_token"]


# ==========================================================================================================
# Chapter 7: watching W_t evolve — the size of each step of the hidden state
#
# ``check_delta_w_norms(fn)``: ``fn(W[L, rows, cols], W0[rows, cols]) -> norms[L]`` with
# ``norms[t] = ‖W_t − W_{t−1}‖_F`` and ``W_{−1} = W0`` (reference: ``ttt4rec_edu.viz.delta_w_norms``).
# ==========================================================================================================

def check_delta_w_norms(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> ExerciseResult:
    """Check ``fn(W, W0) -> (L,)``: the Frobenius norm of every step ``W_t − W_{t−1}`` of a weight trajectory
    ``W (L, rows, cols)`` that started from ``W0 (rows, cols)`` (so the first step is ``W_0' − W0``)."""
    from .viz import delta_w_norms
    name = "check_delta_w_norms"
    gen = _float64_gen(70)
    for L, rows, cols in ((6, 3, 5), (9, 4, 4)):
        W0 = _randn(gen, rows, cols)
        W = W0 + torch.cumsum(0.3 * _randn(gen, L, rows, cols), dim=0)          # a random walk from W0
        where = f"W of shape {(L, rows, cols)}"
        expected = delta_w_norms(W, W0)
        got, error = _call(name, fn, W.clone(), W0.clone())
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        got = _as_tensor(got, expected)
        if got is None:
            return _report(_fail(name, f"for {where} you returned {type(got).__name__}",
                                 "return a tensor with one norm per position, shape (L,)."))
        got = got.flatten()
        if got.numel() == L - 1:
            return _report(_fail(name, f"for {where} you returned {L - 1} norms, expected {L}",
                                 "the first position has a step too: W_0' − W0, where W0 is the learned start "
                                 "(pass it in front of the trajectory before taking differences)."))
        if got.numel() != L:
            return _report(_fail(name, f"for {where} you returned {got.numel()} values, expected {L}",
                                 "one norm per position: flatten each step (rows × cols) and take its norm."))
        if _same(got, expected, 1e-9):
            continue
        previous = torch.cat([W0[None], W[:-1]])
        if _same(got, expected ** 2, 1e-9):
            hint = "these are squared norms: take the square root of the sum of squares."
        elif _same(got, (W - W0).flatten(1).norm(dim=1), 1e-9):
            hint = "this is ‖W_t − W0‖ (everything written so far), not the single step ‖W_t − W_{t−1}‖."
        elif _same(got, W.flatten(1).norm(dim=1), 1e-9):
            hint = "this is ‖W_t‖, the size of the weights, not of the step W_t − W_{t−1}."
        elif _same(got, (W - previous).abs().flatten(1).sum(dim=1), 1e-9):
            hint = "this is the sum of absolute values (an L1 norm); the Frobenius norm is √(Σ entries²)."
        elif _same(got[1:], (W[1:] - W[:-1]).flatten(1).norm(dim=1), 1e-9):
            hint = "the later steps are right; the first one is W_0' − W0 (the learned start)."
        else:
            hint = "norms[t] = √(Σ_ij (W[t] − W[t−1])_ij²) with W[−1] = W0."
        return _report(_fail(name, f"for {where}: your norms differ from the reference by up to "
                                   f"{_max_err(got, expected):.3g}", hint))
    return _report(ExerciseResult(name, True, "‖W_t − W_{t−1}‖_F (with W_{−1} = W0) matches for two trajectories."))


__all__ += ["check_delta_w_norms"]


# ==========================================================================================================
# Chapter 11: when does test-time training help? — the paired adaptation gain
#
# ``check_paired_gain(fn)``: ``fn(df) -> (mean, std)`` where ``df`` has one row per (seed, adapt) of the same
# TTT4Rec runs (columns ``seed``, ``adapt``, ``ndcg@10``, rows in any order); the gain of a seed is NDCG@10
# with adaptation minus NDCG@10 with η = 0 at test; return its mean and sample standard deviation (ddof = 1)
# over seeds (reference: ``ttt4rec_edu.drift_study.adaptation_gain``).
# ==========================================================================================================

def check_paired_gain(fn: Callable[[object], Tuple[float, float]]) -> ExerciseResult:
    """Check ``fn(df) -> (mean, std)``: the per-seed gain ``ndcg@10(adapt=True) − ndcg@10(adapt=False)``,
    paired by ``seed``, then its mean and sample standard deviation (ddof = 1) across seeds."""
    import math

    import numpy as np
    import pandas as pd

    name = "check_paired_gain"
    rng = np.random.default_rng(110)
    for n in (4, 7):
        seeds = rng.permutation(np.arange(10, 10 + n))
        level = rng.uniform(0.2, 0.5, size=n)                  # seed-to-seed spread shared by both rows
        gain = rng.normal(0.01, 0.01, size=n)
        on = pd.DataFrame({"seed": seeds, "adapt": True, "ndcg@10": level + gain})
        off = pd.DataFrame({"seed": seeds, "adapt": False, "ndcg@10": level})
        df = pd.concat([on, off.sample(frac=1.0, random_state=int(n))], ignore_index=True)
        df = df.sample(frac=1.0, random_state=int(n) + 1).reset_index(drop=True)   # rows in any order
        expected = (float(np.mean(gain)), float(np.std(gain, ddof=1)))
        got, error = _call(name, fn, df.copy())
        where = f"for {n} seeds"
        if error is not None:
            return _report(_fail(name, f"{where}: {error.message}"))
        try:
            mean, std = (float(v) for v in got)
        except (TypeError, ValueError):
            return _report(_fail(name, f"{where} you returned {got!r}", "return a pair (mean, std) of numbers."))
        close = lambda a, b: math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)   # noqa: E731
        if close(mean, expected[0]) and close(std, expected[1]):
            continue
        if close(mean, -expected[0]):
            hint = "the sign is reversed: the gain is adapt=True minus adapt=False."
        elif close(mean, expected[0]) and close(std, float(np.std(gain, ddof=0))):
            hint = "this is the population standard deviation (ddof=0); use the sample one (ddof=1)."
        elif close(mean, expected[0]) and close(std, math.sqrt(np.var(level + gain, ddof=1) + np.var(level, ddof=1))):
            hint = ("this spread is of two unpaired groups; subtract within each seed first, then take the "
                    "standard deviation of the differences (the seed-to-seed spread cancels).")
        elif not close(mean, expected[0]):
            hint = "the mean gain is mean over seeds of ndcg@10(adapt=True) − ndcg@10(adapt=False)."
        else:
            hint = ("the mean is right but not the spread: pair the rows by seed (e.g. pivot on seed × adapt); "
                    "the rows come in any order, so subtracting positionally mixes seeds.")
        return _report(_fail(name, f"{where} expected mean {expected[0]:.5f}, std {expected[1]:.5f}; "
                                   f"got {mean:.5f}, {std:.5f}", hint))
    return _report(ExerciseResult(name, True, "mean and sample std of the per-seed gain match for 4 and 7 seeds."))


__all__ += ["check_paired_gain"]


# ==========================================================================================================
# Chapter 10: rerunning the paper on a GPU — how big are the full logits, and when to chunk the loss
#
# ``check_logits_memory(fn)``: ``fn(batch_size: int, num_items: int, budget_bytes: int) -> (bytes, chunk)``
# with ``bytes`` = size of one fp32 ``(batch, num_items + 1)`` logits matrix and ``chunk`` = ``None`` when the
# plain loss (about three such blocks kept by autograd) fits in ``budget_bytes``, else the item chunk size of
# the trainer's rule (references: ``ttt4rec_edu.losses.logits_bytes`` and ``choose_chunk``).
# ``check_seed_summary(fn)``: ``fn(runs: DataFrame) -> DataFrame``, mean and sample std over seeds per cell of a
# results.csv (reference: ``ttt4rec_edu.experiments.summarize``).
# ==========================================================================================================

_LOGITS_CASES = (  # (batch, items, budget): Amazon Beauty, Amazon Video Games, Twitch, Gowalla, and edge cases
    (2048, 12101, 1 << 30), (2048, 50210, 1 << 30), (2048, 739991, 1 << 30), (2048, 1280969, 1 << 30),
    (256, 1280969, 1 << 30), (2048, 1280969, 8 << 30), (4096, 21844, 1 << 30), (4096, 21845, 1 << 30),
    (2048, 10 ** 6, 1 << 20),
)


def check_logits_memory(fn: Callable[[int, int, int], Tuple[int, Optional[int]]]) -> ExerciseResult:
    """Check ``fn(batch_size, num_items, budget_bytes) -> (logits_bytes, chunk_or_None)`` against
    :func:`ttt4rec_edu.losses.logits_bytes` (fp32, padding column included) and
    :func:`ttt4rec_edu.losses.choose_chunk` (``None`` when ``3 · logits_bytes <= budget``, else
    ``max(1024, budget // (3 · 4 · batch))``) on the paper's datasets at batch 2048 and a few edge cases."""
    from .losses import choose_chunk, logits_bytes
    name = "check_logits_memory"
    for batch, items, budget in _LOGITS_CASES:
        where = f"batch {batch}, {items:,} items, budget {budget / 2**30:g} GiB"
        expected_bytes, expected_chunk = logits_bytes(batch, items), choose_chunk(batch, items, budget)
        got, error = _call(name, fn, batch, items, budget)
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return _report(_fail(name, f"for {where} you returned {got!r}",
                                 "return a pair (bytes of one logits matrix, chunk size or None)."))
        got_bytes, got_chunk = got
        try:
            got_bytes = int(got_bytes)
        except (TypeError, ValueError):
            return _report(_fail(name, f"for {where} the byte count {got_bytes!r} is not a number"))
        if got_bytes != expected_bytes:
            if got_bytes == batch * items * 4:
                hint = "the logits have num_items + 1 columns: column 0 is the padding id (scored as −inf)."
            elif got_bytes in (batch * (items + 1) * 2, batch * (items + 1) * 8):
                hint = "the logits are float32: 4 bytes per value."
            elif got_bytes == batch * (items + 1):
                hint = "that is the number of values; multiply by 4 bytes (float32)."
            elif got_bytes == 3 * expected_bytes:
                hint = "return the size of ONE (batch, num_items + 1) matrix; the factor 3 belongs in the decision."
            else:
                hint = "bytes = batch × (num_items + 1) × 4."
            return _report(_fail(name, f"for {where} you said {got_bytes:,} bytes, expected {expected_bytes:,}",
                                 hint))
        if (got_chunk is None) != (expected_chunk is None):
            if expected_chunk is None:
                hint = ("the plain loss fits here: autograd keeps about 3 logits-sized blocks, and "
                        f"3 × {expected_bytes:,} ≤ {budget:,} bytes — return None.")
            elif budget >= expected_bytes:
                hint = "one matrix fits, but autograd keeps about three of them (logits, softmax, gradient)."
            else:
                hint = "chunk when 3 × bytes > budget; return None only when the plain loss fits."
            return _report(_fail(name, f"for {where} you returned chunk={got_chunk!r}, expected {expected_chunk!r}",
                                 hint))
        if expected_chunk is not None and got_chunk != expected_chunk:
            if got_chunk == budget // (4 * batch) or got_chunk == budget // (3 * batch):
                hint = "a chunk block costs 3 × 4 bytes per (sample, item): chunk = budget // (12 × batch)."
            elif got_chunk == budget // (12 * batch) and got_chunk < 1024:
                hint = "the trainer never goes below 1024 items per chunk: max(1024, budget // (12 × batch))."
            else:
                hint = "chunk = max(1024, budget // (3 × 4 × batch))."
            return _report(_fail(name, f"for {where} you returned chunk={got_chunk!r}, expected {expected_chunk}",
                                 hint))
    return _report(ExerciseResult(name, True, f"logits bytes and the chunking decision match choose_chunk "
                                              f"in {len(_LOGITS_CASES)} cases (the paper's datasets included)."))


__all__ += ["check_logits_memory"]

_SEED_CELL_KEYS = ("dataset", "split", "model", "backbone", "inner")


def _seed_runs():
    """A results.csv-like frame: 4 cells (a baseline with empty backbone/inner, two TTT4Rec variants of the same
    dataset, one cell with a single seed), seeded random metrics."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(100)
    cells = [("amazon-video-games", "6:2:2", "sasrec", None, None, 3),
             ("amazon-video-games", "6:2:2", "ttt4rec", "transformer", "mlp", 3),
             ("amazon-video-games", "6:2:2", "ttt4rec", "mamba", "linear", 3),
             ("gowalla", "3:2:5", "gru4rec", None, None, 1)]
    rows = []
    for dataset, split, model, backbone, inner, n_seeds in cells:
        base = rng.uniform(0.02, 0.1)
        for seed in range(n_seeds):
            hr10 = base + rng.normal(0, 0.005)
            rows.append({"table": "4" if split == "6:2:2" else "2", "dataset": dataset, "split": split,
                         "model": model, "backbone": backbone, "inner": inner, "adapt_at_test": True,
                         "seed": seed, "hr@10": hr10, "hr@50": 2.4 * hr10 + rng.normal(0, 0.01),
                         "ndcg@10": 0.5 * hr10 + rng.normal(0, 0.002), "ndcg@50": 0.8 * hr10 + rng.normal(0, 0.003),
                         "data": dataset})
    return pd.DataFrame(rows)  # backbone / inner are NaN for the baselines, as when read back from a CSV


def check_seed_summary(fn) -> ExerciseResult:
    """Check ``fn(runs: DataFrame) -> DataFrame``: one row per cell (``dataset, split, model, backbone, inner``,
    as columns or as the index, empty backbone/inner for baselines) with columns ``<metric>_mean`` and
    ``<metric>_std`` (sample std, ddof 1; NaN for a single seed) of ``hr@10, hr@50, ndcg@10, ndcg@50``.
    Reference: :func:`ttt4rec_edu.experiments.summarize` on a results.csv-like frame with four cells."""
    import pandas as pd

    from .experiments import METRICS, summarize
    name = "check_seed_summary"
    runs = _seed_runs()
    expected = summarize(runs).fillna({"backbone": "", "inner": ""})
    expected = expected.set_index(list(_SEED_CELL_KEYS))
    got, error = _call(name, fn, runs.copy())
    if error is not None:
        return _report(error)
    if not isinstance(got, pd.DataFrame):
        return _report(_fail(name, f"you returned {type(got).__name__}",
                             "return a pandas DataFrame with one row per cell."))
    got = got.copy()
    if isinstance(got.columns, pd.MultiIndex):  # (metric, "mean") → "metric_mean"
        got.columns = ["_".join(str(p) for p in col if str(p)) for col in got.columns]
    if any(k not in got.columns for k in _SEED_CELL_KEYS):
        got = got.reset_index()
    missing = [k for k in _SEED_CELL_KEYS if k not in got.columns]
    if missing:
        return _report(_fail(name, f"the cell keys {missing} are neither columns nor index levels",
                             "group by dataset, split, model, backbone and inner (all five name a cell)."))
    wanted = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    absent = [c for c in wanted if c not in got.columns]
    if absent:
        return _report(_fail(name, f"columns {absent} are missing",
                             "name the columns like summarize does: 'hr@10_mean', 'hr@10_std', ..."))
    got[["backbone", "inner"]] = got[["backbone", "inner"]].fillna("")
    got = got.set_index(list(_SEED_CELL_KEYS))
    if len(got) < len(expected):
        lost = [k for k in expected.index if k not in got.index]
        if lost and all(k[3] == "" for k in lost):
            hint = ("the baselines disappeared: their backbone/inner are NaN and groupby drops NaN keys by "
                    "default — fillna('') first, or groupby(..., dropna=False).")
        else:
            hint = "every (dataset, split, model, backbone, inner) is its own cell."
        return _report(_fail(name, f"{len(got)} cells returned, expected {len(expected)}; missing {lost}", hint))
    if len(got) > len(expected) or got.index.duplicated().any():
        return _report(_fail(name, f"{len(got)} rows returned, expected {len(expected)} cells (one row each)",
                             "group by the cell keys only, not by seed."))
    got = got.loc[expected.index]
    for m in METRICS:
        diff = (got[f"{m}_mean"] - expected[f"{m}_mean"]).abs()
        if not (diff < 1e-12).all():
            return _report(_fail(name, f"{m}_mean differs by up to {diff.max():.3g}",
                                 "the mean over the seeds of each cell (keep the two TTT4Rec variants apart)."))
        exp_std, got_std = expected[f"{m}_std"], got[f"{m}_std"]
        single = exp_std.isna()
        many = ~single
        if not ((got_std[many] - exp_std[many]).abs() < 1e-12).all():
            counts = runs.fillna({"backbone": "", "inner": ""}).groupby(list(_SEED_CELL_KEYS))["seed"].count()
            n = counts.loc[expected.index[many]].to_numpy()
            population = exp_std[many] * ((n - 1) / n) ** 0.5
            if ((got_std[many] - population).abs() < 1e-12).all():
                hint = "that is the population std (ddof=0, np.std's default); use the sample std, ddof=1."
            else:
                hint = "the sample standard deviation (ddof=1) over the seeds of each cell."
            return _report(_fail(name, f"{m}_std differs from the reference", hint))
        if not got_std[single].isna().all():
            return _report(_fail(name, f"{m}_std of the single-seed cell is {got_std[single].tolist()}, expected NaN",
                                 "one seed has no sample standard deviation: leave it NaN (pandas' .std() does)."))
    return _report(ExerciseResult(name, True, f"mean and sample std over seeds match summarize() for "
                                              f"{len(expected)} cells (baselines and a single-seed cell included)."))


__all__ += ["check_seed_summary"]


# ==========================================================================================================
# Chapter 9: training and evaluating on a CPU — a metric per history-length bucket
#
# ``check_metric_by_length(fn)``: ``fn(ranks[N], history[N], edges, k) -> len(edges) floats``: the mean NDCG@k
# of the test samples in each bucket ``[edges[i], edges[i+1])`` and in the open last bucket ``[edges[-1], ∞)``;
# reference: ``metric_by_group(ranks, length_buckets(history, edges), f"ndcg@{k}")`` (ttt4rec_edu.analysis).
# ==========================================================================================================

_LENGTH_CASES = ((90, 10, (1, 3, 5, 8, 13, 21, 51)),   # (seed, k, edges): the book's buckets, context 50
                 (91, 5, (1, 2, 6, 20, 40)))


def _length_case(seed: int, k: int, edges: Tuple[int, ...]):
    """``(ranks int64 (400,), history int64 (400,))``: ranks in 1..200 (half of them drawn from 1..2k, so that
    every bucket has hits), histories in 1..80. Every edge and every edge − 1 occurs as a history (so buckets
    ``[a, b)`` and ``[a, b]`` differ) with a rank in 2..k (so NDCG@k differs from HR@k and from 0-based ranks in
    every bucket); some ranks are 1 (so log2(rank) divides by zero)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 400
    ranks = np.where(rng.random(n) < 0.5, rng.integers(1, 2 * k + 1, n), rng.integers(1, 201, n))
    history = rng.integers(1, 81, n)
    on_edges = sorted(set(edges) | {e - 1 for e in edges if e - 1 >= edges[0]})
    history[:len(on_edges)] = on_edges
    ranks[:len(on_edges)] = rng.integers(2, k + 1, len(on_edges))
    codes = np.searchsorted(np.asarray(edges), history, side="right") - 1
    counts = np.bincount(codes, minlength=len(edges))
    assert (counts > 0).all() and (ranks == 1).any(), f"case seed={seed} has an empty bucket: {counts}"
    return ranks.astype(np.int64), history.astype(np.int64)


def _means_per_code(gain, codes, buckets: int):
    import numpy as np

    return np.array([gain[codes == b].mean() if (codes == b).any() else np.nan for b in range(buckets)])


def _length_variants(ranks, history, edges, k: int) -> dict:
    """The usual wrong answers, each recomputed with numpy: name → ``len(edges)`` bucket values."""
    import numpy as np

    r = ranks.astype(np.float64)
    e = np.asarray(edges)
    nb = len(edges)
    hit = r <= k
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = {
            "log2_rank": np.where(hit, 1.0 / np.log2(r), 0.0),
            "hr": hit.astype(np.float64),
            "zero_based": np.where(hit, 1.0 / np.log2(r + 2.0), 0.0),
            "zero_based_strict": np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0),
            "natural_log": np.where(hit, 1.0 / np.log(r + 1.0), 0.0),
            "right": np.where(hit, 1.0 / np.log2(r + 1.0), 0.0),
        }
    right = np.searchsorted(e, history, side="right") - 1
    variants = {name: _means_per_code(g, right, nb) for name, g in gains.items() if name != "right"}
    gain = gains["right"]
    # [a, b] instead of [a, b): a history equal to an edge goes to the lower bucket ...
    lower = np.maximum(np.searchsorted(e, history, side="left") - 1, 0)
    variants["closed"] = _means_per_code(gain, lower, nb)
    # ... or, with masks (a <= h) & (h <= b), to both buckets
    masks = [(history >= a) & (history <= b) for a, b in zip(edges[:-1], edges[1:])] + [history >= edges[-1]]
    variants["closed_overlap"] = np.array([gain[m].mean() for m in masks])
    variants["overall"] = np.full(nb, gain.mean())
    return variants


_LENGTH_HINTS = {
    "log2_rank": "the discount is log2(rank + 1), not log2(rank): rank 1 gets 1/log2(2) = 1, while 1/log2(1) "
                 "divides by zero (inf/nan).",
    "hr": "that is HR@k (a hit counts 1); NDCG@k weighs a hit by 1/log2(rank + 1).",
    "zero_based": "the ranks are 1-based (1 = best): the gain is 1/log2(rank + 1), not 1/log2(rank + 2).",
    "zero_based_strict": "the ranks are 1-based (1 = best): the gain is 1/log2(rank + 1) for rank <= k, not "
                         "1/log2(rank + 2) for rank < k.",
    "natural_log": "use the base-2 logarithm (np.log2), not the natural logarithm.",
    "closed": "the buckets are half-open, [edges[i], edges[i+1]): a history equal to an edge belongs to the "
              "bucket that starts there, not to the one below (np.searchsorted(edges, history, side='right') - 1).",
    "closed_overlap": "the buckets are half-open, [edges[i], edges[i+1]): use history < b, not history <= b, so "
                      "that a history equal to an edge is counted once, in the bucket that starts there.",
    "overall": "that is the mean over all samples, repeated; average the per-sample NDCG@k within each bucket.",
}


def check_metric_by_length(fn: Callable[..., Sequence[float]]) -> ExerciseResult:
    """Check ``fn(ranks, history, edges, k) -> len(edges) floats``: the mean NDCG@k per history-length bucket.

    ``ranks``: ``int64 (N,)``, the 1-based rank of each test sample's target; ``history``: ``int64 (N,)``, how many
    earlier items that sample's user had (>= 1); ``edges``: increasing ints, e.g. ``(1, 3, 5, 8, 13, 21, 51)``;
    ``k``: the cut-off. Buckets are ``[edges[i], edges[i+1])`` for ``i = 0 .. len(edges) - 2`` and the open
    ``[edges[-1], ∞)``; per sample ``NDCG@k = 1/log2(rank + 1)`` if ``rank <= k`` else 0. Any 1-D sequence is
    accepted (list, tuple, numpy array, pandas Series, torch tensor), compared with atol 1e-9 (1e-6 for a float32
    answer). Reference:
    ``metric_by_group(ranks, length_buckets(history, edges), f"ndcg@{k}")`` of :mod:`ttt4rec_edu.analysis`,
    on two seeded cases of 400 samples with no empty bucket.
    """
    import numpy as np
    import pandas as pd

    from .analysis import length_buckets, metric_by_group

    name = "check_metric_by_length"
    buckets_checked = 0
    for seed, k, edges in _LENGTH_CASES:
        ranks, history = _length_case(seed, k, edges)
        groups = length_buckets(history, edges)
        labels = list(groups.categories)
        table = metric_by_group(ranks, groups, f"ndcg@{k}")
        expected = table[f"ndcg@{k}"].reindex(labels).to_numpy(dtype=np.float64)
        where = f"k={k}, edges={edges} ({len(ranks)} samples)"
        got, error = _call(name, fn, ranks.copy(), history.copy(), edges, k)
        if error is not None:
            return _report(_fail(name, f"for {where}: {error.message}"))
        if isinstance(got, pd.DataFrame):
            return _report(_fail(name, f"for {where} you returned a DataFrame with columns {list(got.columns)}",
                                 f"return one number per bucket (e.g. the 'ndcg@{k}' column of "
                                 "metric_by_group's table, in bucket order)."))
        try:
            if isinstance(got, torch.Tensor):
                low_precision = got.dtype in (torch.float32, torch.float16, torch.bfloat16)
                values = got.detach().cpu().to(torch.float64).numpy()
            else:
                low_precision = getattr(np.asarray(got), "dtype", None) in (np.float32, np.float16)
                values = np.asarray(got, dtype=np.float64)
        except (TypeError, ValueError, RuntimeError):
            return _report(_fail(name, f"for {where} you returned {type(got).__name__}: {got!r}"[:300],
                                 f"return a sequence of {len(edges)} floats, one per bucket."))
        atol = 1e-6 if low_precision else 1e-9   # torch.tensor(list of floats) is float32: ~7 significant digits
        expected_len = f"expected {len(edges)} values, one per bucket {labels}"
        overall = float(expected @ table["samples"].reindex(labels).to_numpy()) / len(ranks)
        if values.size == 1 and values.ndim <= 1:
            value = float(values.reshape(-1)[0])
            hint = ("that is the mean over all samples: " if math.isclose(value, overall, abs_tol=atol)
                    else "") + "split the samples by bucket and average NDCG@k within each bucket."
            return _report(_fail(name, f"for {where}: {expected_len}, got one number ({value:.6g})", hint))
        if values.ndim != 1:
            return _report(_fail(name, f"for {where}: {expected_len}, got an array of shape {values.shape}",
                                 "return a flat sequence (1-D), the buckets in order."))
        if len(values) == len(edges) - 1:
            same = np.allclose(values, expected[:-1], atol=atol, rtol=0.0, equal_nan=True)
            return _report(_fail(name, f"for {where}: {expected_len}, got {len(values)}",
                                 f"{'your values match the first buckets, but ' if same else ''}the last bucket "
                                 f"is open: [{edges[-1]}, ∞) holds every history >= {edges[-1]} "
                                 f"('{labels[-1]}'; with the default edges, histories longer than the context of "
                                 "50), so there is one bucket per edge, not one per pair of edges."))
        if len(values) != len(edges):
            return _report(_fail(name, f"for {where}: {expected_len}, got {len(values)}",
                                 f"one value per bucket: {len(edges) - 1} half-open buckets [edges[i], edges[i+1]) "
                                 f"and the open last one [{edges[-1]}, ∞)."))
        if np.allclose(values, expected, atol=atol, rtol=0.0):
            buckets_checked += len(edges)
            continue
        variants = _length_variants(ranks, history, edges, k)
        bad = ~np.isfinite(values)
        if bad.any():
            wrong = [labels[i] for i in np.flatnonzero(bad)]
            if np.array_equal(bad, ~np.isfinite(variants["log2_rank"])):
                hint = _LENGTH_HINTS["log2_rank"]
            else:
                hint = ("no bucket is empty here, so every mean is finite: look for a division by zero or a log "
                        "of 0 in the per-sample NDCG@k.")
            return _report(_fail(name, f"for {where}: buckets {wrong} are not finite: {values.tolist()}", hint))
        for variant, variant_values in variants.items():
            if np.allclose(values, variant_values, atol=atol, rtol=0.0):
                return _report(_fail(name, f"for {where}: expected {np.round(expected, 6).tolist()}, got "
                                           f"{np.round(values, 6).tolist()}", _LENGTH_HINTS[variant]))
        diff = np.abs(values - expected)
        first = int(np.flatnonzero(diff > atol)[0])
        return _report(_fail(name, f"for {where}: the largest difference is {diff.max():.3g}; the first bucket that "
                                   f"differs is '{labels[first]}': expected {expected[first]:.6f}, got "
                                   f"{values[first]:.6f}",
                             "per sample NDCG@k = 1/log2(rank + 1) if rank <= k else 0; bucket i holds the samples "
                             "with edges[i] <= history < edges[i+1] (the last: history >= edges[-1]); report each "
                             "bucket's mean, in bucket order."))
    return _report(ExerciseResult(name, True, f"matches metric_by_group(length_buckets(...)) on "
                                              f"{len(_LENGTH_CASES)} cases ({buckets_checked} buckets, k = "
                                              f"{' and '.join(str(c[1]) for c in _LENGTH_CASES)})."))


__all__ += ["check_metric_by_length"]


# ==========================================================================================================
# Chapter 11: the three arms — what adapting adds over the control trained without adaptation
#
# ``check_arm_interval(fn)``: ``fn(df) -> (mean, low, high)`` where ``df`` has one row per (seed, variant) of the
# three TTT4Rec arms (columns ``seed``, ``variant`` ∈ ``ttt4rec_edu.drift_study.ARMS``, ``ndcg@10``, rows in any
# order); the difference of a seed is NDCG@10 of ``"TTT4Rec"`` minus NDCG@10 of ``"TTT4Rec, fixed W0"``; return
# its mean over seeds and the 95% Student-t interval of that mean, ``mean ± t_{0.975, n−1} · s / sqrt(n)``
# (reference: ``ttt4rec_edu.drift_study.arm_differences``).
# ==========================================================================================================

def check_arm_interval(fn: Callable[[object], Tuple[float, float, float]]) -> ExerciseResult:
    """Check ``fn(df) -> (mean, low, high)``: the per-seed difference ``TTT4Rec − TTT4Rec, fixed W0`` (paired by
    ``seed``), its mean over seeds and the 95% Student-t interval of the mean."""
    import math

    import numpy as np
    import pandas as pd

    from .analysis import student_t_quantile

    name = "check_arm_interval"
    rng = np.random.default_rng(111)
    for n in (5, 8):
        seeds = rng.permutation(np.arange(20, 20 + n))
        level = rng.uniform(0.2, 0.5, size=n)               # each seed's data: shared by the three arms
        diff = rng.normal(0.01, 0.02, size=n)
        mismatch = rng.normal(-0.05, 0.01, size=n)
        arms = {"TTT4Rec": level + diff, "TTT4Rec, fixed W0": level, "TTT4Rec, η=0 at test": level + mismatch}
        df = pd.concat([pd.DataFrame({"seed": seeds, "variant": v, "ndcg@10": x}) for v, x in arms.items()])
        df = df.sample(frac=1.0, random_state=n).reset_index(drop=True)   # rows in any order
        s = float(np.std(diff, ddof=1))
        t = student_t_quantile(0.975, n - 1)
        mean = float(np.mean(diff))
        expected = (mean, mean - t * s / math.sqrt(n), mean + t * s / math.sqrt(n))
        got, error = _call(name, fn, df.copy())
        where = f"for {n} seeds"
        if error is not None:
            return _report(_fail(name, f"{where}: {error.message}"))
        try:
            values = tuple(float(v) for v in got)
            if len(values) != 3:
                raise ValueError
        except (TypeError, ValueError):
            return _report(_fail(name, f"{where} you returned {got!r}",
                                 "return a triple (mean, low, high) of numbers."))
        close = lambda a, b: math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)  # float32 answers pass   # noqa: E731
        if all(close(a, b) for a, b in zip(values, expected)):
            continue
        got_mean, low, high = values
        half = (high - low) / 2
        other = float(np.mean(level + mismatch))
        if close(got_mean, -mean):
            hint = 'the sign is reversed: the difference is "TTT4Rec" minus "TTT4Rec, fixed W0".'
        elif close(got_mean, float(np.mean(level + diff)) - other):
            hint = ('this compares with the η = 0-at-test arm; the control is "TTT4Rec, fixed W0" (trained '
                    "without adaptation), not the adapting model's weights evaluated with η = 0.")
        elif not close(got_mean, mean):
            hint = "the mean is the mean over seeds of NDCG@10(TTT4Rec) − NDCG@10(TTT4Rec, fixed W0)."
        elif close(half, 1.959964 * s / math.sqrt(n)):
            hint = (f"this is the normal 1.96; with {n} seeds use Student's t with n − 1 = {n - 1} degrees of "
                    f"freedom ({t:.3f}, ttt4rec_edu.analysis.student_t_quantile(0.975, {n - 1})).")
        elif close(half, t * s):
            hint = "this interval is for one seed's difference; the mean's uses the standard error s / sqrt(n)."
        elif close(half, t * float(np.std(diff, ddof=0)) / math.sqrt(n)):
            hint = "this uses the population standard deviation (ddof=0); use the sample one (ddof=1)."
        elif close(half, t * math.sqrt(np.var(level + diff, ddof=1) + np.var(level, ddof=1)) / math.sqrt(n)):
            hint = ("this spread is of two unpaired groups; subtract within each seed first, then take the "
                    "spread of the differences (the seed-to-seed level cancels).")
        else:
            hint = ("the mean is right but not the interval: pair by seed (pivot on seed × variant; rows come in "
                    "any order), then mean ± t_{0.975, n−1} · s / sqrt(n) with the sample std s.")
        return _report(_fail(name, f"{where} expected ({expected[0]:.5f}, {expected[1]:.5f}, "
                                   f"{expected[2]:.5f}); got ({got_mean:.5f}, {low:.5f}, {high:.5f})", hint))
    return _report(ExerciseResult(name, True, "the paired mean and its 95% t interval match for 5 and 8 seeds."))


__all__ += ["check_arm_interval"]


# ------------------------------------------------------------------------------------------------------------
# Capstone (chapter 4): TTT-Linear's dual form from scratch, matched against the library's TTTLayer.dual
# ------------------------------------------------------------------------------------------------------------

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
    from .ttt import TTTLayer
    f = q.shape[1]
    layer = TTTLayer(f, 1, inner="linear", mini_batch_size=b).to(q.dtype)
    with torch.no_grad():
        layer.W1.copy_(W[None]); layer.b1.copy_(c[None])
        layer.inner_ln_weight.copy_(gamma[None]); layer.inner_ln_bias.copy_(beta[None])
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


__all__ += ["check_ttt_linear_dual"]


# ----------------------------------------------------------------------------------------------------------
# Chapter 1, section 1.7: RecBole's float32 time and tied scores
# ----------------------------------------------------------------------------------------------------------

def check_float32_collision(times) -> ExerciseResult:
    """Check a pair ``(t1, t2)`` of timestamps that differ, yet are equal once stored as float32 (RecBole).

    Any two different numbers whose float32 roundings agree pass, e.g. Unix times a few seconds apart.
    """
    import numpy as np

    name = "check_float32_collision"
    try:
        t1, t2 = times
        a, b = float(t1), float(t2)
    except (TypeError, ValueError):
        return _report(_fail(name, f"expected a pair of numbers (t1, t2), got {times!r}",
                             "write the answer as a tuple of two timestamps, e.g. (t1, t2)."))
    if not (math.isfinite(a) and math.isfinite(b)):
        return _report(_fail(name, f"got ({a}, {b})", "use two finite times in seconds (inf and NaN are no "
                                                      "timestamps)."))
    if a == b:
        return _report(_fail(name, f"t1 = t2 = {a!r}: these are the same time",
                             "the two times must differ (in float64, as the reader returns them) and still be "
                             "equal in float32."))
    if np.float32(a) != np.float32(b):
        spacing = float(np.spacing(np.float32(max(abs(a), abs(b)))))
        if max(abs(a), abs(b)) < 60_000 and np.float16(a) == np.float16(b):
            hint = (f"these collide in float16, not in float32 (RecBole's float field): float32's spacing near "
                    f"{max(abs(a), abs(b)):.4g} is {spacing:.3g}.")
        elif max(abs(a), abs(b)) < 2**24:
            hint = ("below 2**24 (about 1.7e7) float32 holds every whole second exactly: take Unix times, "
                    "about 1e9 s (2001), where float32's spacing is 64 or 128 s.")
        else:
            hint = (f"they are {abs(a - b):.3g} s apart, but float32's spacing near {max(abs(a), abs(b)):.4g} s "
                    f"is {spacing:.3g} s (np.spacing(np.float32(t))): move them closer.")
        return _report(_fail(name, f"float32({a!r}) = {float(np.float32(a))!r} and float32({b!r}) = "
                                   f"{float(np.float32(b))!r} differ", hint))
    return _report(ExerciseResult(name, True, f"{a!r} and {b!r} differ by {abs(a - b):.3g} s but are both "
                                              f"{float(np.float32(a))!r} in float32: RecBole cannot order them, "
                                              "the file order decides."))


def _tie_cases():
    """Scores on a few levels (many ties), column 0 = padding; one case with a high padding score."""
    gen = torch.Generator().manual_seed(1)
    cases = []
    for rows, items, levels, pad in ((6, 8, 3, float("-inf")), (40, 30, 4, float("-inf")),
                                     (25, 50, 6, 10.0)):
        scores = torch.randint(0, levels, (rows, items + 1), generator=gen).double()
        scores[:, 0] = pad
        targets = torch.randint(1, items + 1, (rows,), generator=gen)
        cases.append((scores, targets))
    return cases


def _hr_variant(scores: torch.Tensor, targets: torch.Tensor, k: int, policy: str, mistake: str = "") -> float:
    """HR@k as the reference computes it, or with one typical ``mistake`` (see ``_TIE_MISTAKES``)."""
    real = scores if mistake == "padding" else scores[:, 1:]
    own = scores.gather(1, targets[:, None])
    higher = (real > own).sum(1).double()
    ties = (real == own).sum(1).double() - (0 if mistake == "self" else 1)  # other items with its score
    first = higher if mistake == "zero_based" else higher + 1                  # best place of the target
    if policy == "optimistic":
        hit = (first + (ties if mistake == "geq" else 0) <= k).double()
    elif mistake == "mean_rank":
        hit = (first + ties / 2 <= k).double()
    else:  # places first .. first + ties, equally likely
        hit = (k - first + 1).clamp(min=0).minimum(ties + 1) / (ties + 1)
    return float(hit.sum() if mistake == "sum" else hit.mean())


_TIE_MISTAKES = (
    ("mean_rank", "average the hit over the t + 1 places the target can take, (places <= k) / (t + 1); the hit "
                  "at the average rank 1 + #higher + t/2 is a different (0/1) number."),
    ("self", "the target is tied with itself: t counts the *other* items with its score "
             "(#{j : x_j == x_y} - 1)."),
    ("padding", "column 0 is padding: leave it out (scores[:, 1:]) whatever its score."),
    ("geq", "optimistic counts only the items scoring strictly higher (>): tied items do not push the target "
            "down."),
    ("zero_based", "the rank is 1-based: rank = 1 + #{items scoring higher}."),
    ("sum", "HR@k is the mean over the samples, not the sum."),
)


def check_hr_with_ties(fn: Callable) -> ExerciseResult:
    """Check ``fn(scores, targets, k, policy) -> HR@k`` for ``policy`` ``"optimistic"`` and ``"average"``.

    ``scores (B, num_items + 1)`` with column 0 the padding item (ignored, whatever its score), ``targets (B,)``
    in ``1..num_items``. ``"optimistic"``: rank = 1 + #items scoring strictly higher. ``"average"``: the
    expected HR@k when the target's ``t`` tied items are put in a uniformly random order, i.e. the share of the
    ``t + 1`` places ``1 + #higher .. 1 + #higher + t`` that are ``<= k``, averaged over the samples. The
    reference is :func:`ttt4rec_edu.metrics.hit_rate` with the library's ties.
    """
    from .metrics import hit_rate, rank_ties_from_scores

    name = "check_hr_with_ties"
    count = 0
    for case, (scores, targets) in enumerate(_tie_cases()):
        ranks, ties = rank_ties_from_scores(scores, targets)
        for policy in ("optimistic", "average"):
            for k in (1, 3, 10):
                expected = hit_rate(ranks, k, ties, policy)
                where = f"case {case + 1} ({scores.shape[0]} rows, {scores.shape[1] - 1} items), k={k}, " \
                        f"policy={policy!r}"
                got, error = _call(name, fn, scores.clone(), targets.clone(), k, policy)
                if error is not None:
                    return _report(_fail(name, f"for {where}: {error.message}"))
                try:
                    value = float(got)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    return _report(_fail(name, f"for {where} you returned {got!r}", "return one number: HR@k."))
                count += 1
                if math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9):
                    continue
                message = f"for {where}: expected {expected:.6f}, got {value:.6f}"
                for mistake, hint in _TIE_MISTAKES:
                    if math.isclose(value, _hr_variant(scores, targets, k, policy, mistake), rel_tol=1e-6,
                                    abs_tol=1e-9):
                        return _report(_fail(name, message, hint))
                if policy == "average" and math.isclose(value, hit_rate(ranks, k, ties, "pessimistic"),
                                                        rel_tol=1e-6, abs_tol=1e-9):
                    hint = "that is the pessimistic rule (the target after all its ties); average over the places."
                else:
                    hint = ("optimistic: 1 + #{x_j > x_y} <= k; average: #{places r in [1 + higher, 1 + higher "
                            "+ t] with r <= k} / (t + 1); then the mean over the samples.")
                return _report(_fail(name, message, hint))
    return _report(ExerciseResult(name, True, f"all {count} cases agree (optimistic and average, k = 1, 3, 10, "
                                              "a padding column with a high score included)."))


__all__ += ["check_float32_collision", "check_hr_with_ties"]


if __name__ == "__main__":   # python -m ttt4rec_edu.exercises {index,export,grade}: the instructor tools
    from .instructor import main
    raise SystemExit(main())
