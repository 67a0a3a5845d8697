"""Rotary position embedding (RoPE, Su et al. 2021) as the TTT layer uses it.

RoPE encodes a position ``p`` by *rotating* a vector instead of adding something to it. The ``f`` features of a
head are grouped into ``f/2`` pairs and pair ``i`` is turned by the angle ``p * omega_i`` with the frequencies

    omega_i = mu ** (-2 i / f),      i = 0 .. f/2 - 1          (mu = "base", 1000 in TTT4Rec)

Because a rotation by ``a`` followed by the transpose of a rotation by ``b`` is a rotation by ``b - a``, the dot
product of a rotated query at position ``m`` and a rotated key at position ``n`` depends only on ``n - m``:
relative position, for free.

Pairing convention. The official TTT code permutes the features, applies Hugging Face's ``rotate_half`` and
permutes back; the net effect is the *interleaved* (GPT-J / EasyLM) convention implemented here directly:
pair ``i`` is the adjacent features ``(x[2i], x[2i+1])``::

    x'[2i]   = x[2i]   cos(p omega_i) - x[2i+1] sin(p omega_i)
    x'[2i+1] = x[2i+1] cos(p omega_i) + x[2i]   sin(p omega_i)

Positions. ``"minibatch"`` (what the official code computes): ``p = t mod b`` — the phase restarts at 0 in every
TTT mini-batch of ``b`` tokens, so the only positional signal is the place inside the mini-batch.
``"sequence"`` (what the paper's text describes): ``p = t``, the position in the whole sequence.

Angles are computed in float32 (as the official code does, so that bfloat16/float16 runs keep precise angles);
for float64 inputs they are computed in float64 so that float64 tests stay tight.
"""
from __future__ import annotations

import functools

import torch

POSITION_MODES = ("minibatch", "sequence")


def rope_positions(seq_len: int, mini_batch_size: int, mode: str = "minibatch",
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Integer position of every token, ``LongTensor[seq_len]``: ``t mod b`` ("minibatch") or ``t`` ("sequence")."""
    if mode not in POSITION_MODES:
        raise ValueError(f"rope position mode must be one of {POSITION_MODES}, got {mode!r}")
    t = torch.arange(seq_len, device=device)
    return t % mini_batch_size if mode == "minibatch" else t


def rope_frequencies(head_dim: int, base: float = 1000.0, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``omega_i = base ** (-2i / head_dim)`` for ``i = 0 .. head_dim/2 - 1``: ``Tensor[head_dim // 2]``."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    exponent = torch.arange(0, head_dim, 2, device=device).to(dtype) / head_dim
    return 1.0 / (base ** exponent)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 1000.0) -> torch.Tensor:
    """Rotate adjacent feature pairs of ``x`` by ``position * omega``.

    x: ``(..., seq, head_dim)`` (e.g. ``(batch, heads, seq, head_dim)``); positions: ``LongTensor[seq]``.
    Returns a tensor of the same shape and dtype. The norm of every ``(x[2i], x[2i+1])`` pair is preserved.
    """
    angle_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    omega = rope_frequencies(x.shape[-1], base, dtype=angle_dtype, device=x.device)       # (f/2,)
    angles = positions.to(angle_dtype)[:, None] * omega[None, :]                           # (seq, f/2)
    if x.dtype in (torch.float32, torch.float64):
        return rotate_pairs(x, torch.polar(torch.ones_like(angles), angles))
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)                          # half precision
    even, odd = x[..., 0::2], x[..., 1::2]                                                 # (..., seq, f/2)
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


def rotate_pairs(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` for float32/float64 ``x (..., seq, f)`` given ``turn = e^{i p ω}``, complex ``(seq, f/2)``
    (complex64 for float32 ``x``, complex128 for float64).

    A pair (a, b) is the complex number a + ib, and turning it by θ is multiplying by e^{iθ}:
    (a + ib)(cos θ + i sin θ) = (a cos θ − b sin θ) + i (b cos θ + a sin θ) — the formula above, in one op.
    """
    pairs = x.unflatten(-1, (-1, 2))
    if pairs.stride(-1) != 1 or any(s % 2 for s in pairs.stride()[:-1]) or pairs.storage_offset() % 2:
        pairs = pairs.contiguous()          # a complex view needs (real, imag) side by side; most views have it
    return torch.view_as_real(torch.view_as_complex(pairs) * turn).flatten(-2)


@functools.lru_cache(maxsize=64)
def rope_turns(seq_len: int, mini_batch_size: int, mode: str, head_dim: int, base: float, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
    """``e^{i p ω}`` for :func:`rope_positions` ``(seq_len, mini_batch_size, mode)``: complex ``(seq_len,
    head_dim/2)``, angles in ``dtype`` (float32 or float64). Cached: a layer computes its table once, not per call."""
    with torch.inference_mode(False):     # usable by training even when first asked for inside inference mode
        omega = rope_frequencies(head_dim, base, dtype=dtype, device=device)
        angles = rope_positions(seq_len, mini_batch_size, mode, device=device).to(dtype)[:, None] * omega[None, :]
        return torch.polar(torch.ones_like(angles), angles)
