"""Checks for the exercises of the book's third part, *The model and its rivals*: chapter 6 (backbones and the
full model), chapter 7 (watching W_t evolve) and chapter 8 (the baselines).

- ``check_ttt_block_params`` (6): against the parameter count of a built
  :class:`ttt4rec_edu.backbones.ResidualBlock`;
- ``check_delta_w_norms`` (7): against :func:`ttt4rec_edu.viz.delta_w_norms`;
- ``check_append_mask_token`` (8): against ``ttt4rec_edu.baselines.bert4rec.append_token(...,
  always_drop_oldest=False)``.

The signatures each check expects are in the package docstring (:mod:`ttt4rec_edu.exercises`) and in each
check's own docstring.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from ..backbones import ResidualBlock
from ..baselines.bert4rec import append_token
from ..viz import delta_w_norms
from ._core import (ExerciseResult, _as_tensor, _call, _fail, _float64_gen, _max_err, _pair_answer, _randn, _report,
                    _same)

# ----------------------------------------------------------------------------------------------------------
# Chapter 6: the parameters of one TTT4Rec residual block
# ----------------------------------------------------------------------------------------------------------

def _ttt_linear_block_pieces(C: int, nh: int, ffn_size: int, b: int) -> dict:
    """The parameter count of a TTT-Linear Transformer-backbone block, piece by piece (see ttt4rec_edu.ttt4rec)."""
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
            (-3 * C * ffn_size, "the block also holds the feed-forward residual: SwiGLU with 3 · C · ffn_size "
                                "weights."),
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


# ----------------------------------------------------------------------------------------------------------
# Chapter 7: watching W_t evolve — the size of each step of the hidden state
# ----------------------------------------------------------------------------------------------------------

def check_delta_w_norms(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> ExerciseResult:
    """Check ``fn(W, W0) -> (L,)``: the Frobenius norm of every step ``W_t − W_{t−1}`` of a weight trajectory
    ``W (L, rows, cols)`` that started from ``W0 (rows, cols)`` (so the first step is ``W_0' − W0``)."""
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


# ----------------------------------------------------------------------------------------------------------
# Chapter 8: BERT4Rec's evaluation input — the mask token after each history
# ----------------------------------------------------------------------------------------------------------

def _append_when_full(item_seq: torch.Tensor, lengths: torch.Tensor, mask_token: int, max_len: int):
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
    return append_token(item_seq, lengths, torch.full_like(lengths, mask_token), max_len, always_drop_oldest=True)


def _same_ids(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to extra zero-padding columns on either side's right."""
    width = max(got.shape[1], expected.shape[1])
    a = torch.zeros(got.shape[0], width, dtype=torch.long)
    b = torch.zeros(expected.shape[0], width, dtype=torch.long)
    a[:, : got.shape[1]] = got.long()
    b[:, : expected.shape[1]] = expected.long()
    return got.shape[0] == expected.shape[0] and torch.equal(a, b)
