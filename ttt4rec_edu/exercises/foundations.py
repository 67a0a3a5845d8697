"""Checks for the exercises of the book's first part, *Foundations*: chapter 1 (the evaluation protocol) and
chapter 2 (RoPE).

- ``check_split_counts`` (1): against :func:`ttt4rec_edu.data.protocol.split_counts`;
- ``check_ndcg`` (1): against hand-computed NDCG@k values (``_NDCG_HAND_CASES``);
- ``check_float32_collision`` (1): two different timestamps that float32 (RecBole's time field) cannot tell apart;
- ``check_hr_with_ties`` (1): against :func:`ttt4rec_edu.metrics.hit_rate` with the library's ties;
- ``check_rope_rotation`` (2): against :func:`ttt4rec_edu.rope.apply_rope` (interleaved pairs).

The signatures each check expects are in the package docstring (:mod:`ttt4rec_edu.exercises`) and in each
check's own docstring.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple

import numpy as np
import torch

from ..data.protocol import parse_split, split_counts
from ..metrics import hit_rate, rank_ties_from_scores
from ..rope import apply_rope
from ._core import ExerciseResult, _as_tensor, _call, _fail, _max_err, _report, _same, _tensor_answer

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
# Chapter 1, section 1.7: RecBole's float32 time and tied scores
# ----------------------------------------------------------------------------------------------------------

def check_float32_collision(times) -> ExerciseResult:
    """Check a pair ``(t1, t2)`` of timestamps that differ, yet are equal once stored as float32 (RecBole).

    Any two different numbers whose float32 roundings agree pass, e.g. Unix times a few seconds apart.
    """
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
