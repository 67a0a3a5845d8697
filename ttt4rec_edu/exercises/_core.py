"""The contract every exercise check keeps, and the helpers that keep it.

A check runs the reader's function on fixed (seeded) inputs, compares the answer with a reference and returns an
:class:`ExerciseResult` after printing it (``✓`` or ``✗`` with the first failing input and, for a common
mistake, a specific hint). The helpers here make every check say things the same way:

- :func:`_call` turns an exception raised by the reader's function into a failed result, never a traceback;
- :func:`_tensor_answer` and :func:`_pair_answer` unpack the answer (a tensor of the expected shape, a pair)
  or fail with one clear line;
- :func:`_as_tensor` and :func:`_same` compare with a float32 tolerance (1e-5) an answer computed in float32,
  so that a right answer is never rejected for its precision;
- :func:`_report` prints the verdict and, when ``TTT4REC_STRICT_CHECKS=1`` (the book build), raises
  :class:`ExerciseFailed` for a failed one.
"""
from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

STRICT_ENV = "TTT4REC_STRICT_CHECKS"
PAGE_WIDTH = 88   # the book's page: a printed verdict wraps to it (tests/test_book_output_width.py)


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
        return _fit_page(f"{'✓' if self.passed else '✗'} {self.name}: {self.message}")

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


def _fit_page(text: str, width: int = PAGE_WIDTH) -> str:
    """Each line of ``text`` wrapped to ``width`` columns at spaces, its continuations indented two columns more
    than the line itself; a line that fits, and a word longer than the page, are left whole."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out.extend(textwrap.wrap(line, width, subsequent_indent=indent + "  ", break_long_words=False,
                                 break_on_hyphens=False))
    return "\n".join(out)


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


def _float64_gen(seed: int) -> torch.Generator:
    """A seeded generator: every check draws the same inputs on every run."""
    return torch.Generator().manual_seed(seed)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard normal float64 numbers of ``shape`` from ``gen``."""
    return torch.randn(*shape, generator=gen, dtype=torch.float64)

