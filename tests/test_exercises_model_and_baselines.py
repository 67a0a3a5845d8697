"""The checks of the book's part *The model and its rivals* (ttt4rec_edu.exercises.model_and_baselines, chapters
6-8): each passes its reference solution and fails the usual mistakes with a specific hint (a check that cannot
fail would teach nothing). Chapter 7's check is the step size ‖W_t − W_{t−1}‖_F over a weight trajectory."""
from __future__ import annotations

import pytest
import torch

from ttt4rec_edu import exercises
from ttt4rec_edu.backbones import ResidualBlock
from ttt4rec_edu.baselines.bert4rec import append_token
from ttt4rec_edu.exercises import (ExerciseFailed, check_append_mask_token, check_delta_w_norms,
                                   check_ttt_block_params)
from ttt4rec_edu.viz import delta_w_norms


from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)


# ---- check_ttt_block_params -------------------------------------------------------------------------------

def formula(C, nh, ffn, b):
    f = C // nh
    return 4 * C * C + nh * C + nh + b + 2 * C + 2 * C + nh * (f * f + f) + 3 * C * ffn + 2 * C


def test_block_params_formula_and_counting_pass(capsys):
    assert_passes(check_ttt_block_params(formula), capsys)

    def by_counting(C, nh, ffn, b):
        block = ResidualBlock(C, nh, ffn, backbone="transformer", inner="linear", mini_batch_size=b)
        return sum(p.numel() for p in block.parameters())
    assert_passes(check_ttt_block_params(by_counting), capsys)


def test_released_block_size_is_the_documented_number():
    assert formula(64, 4, 256, 8) == 67_276  # ttt4rec_edu/ttt4rec.py docstring


@pytest.mark.parametrize("mistake, words", [
    (lambda C, nh, F, b: formula(C, nh, F, b) - C * C, ("four C × C", "θ_K")),
    (lambda C, nh, F, b: formula(C, nh, F, b) - b, ("token offsets δ",)),
    (lambda C, nh, F, b: formula(C, nh, F, b) - (nh * C + nh), ("gate per head",)),
    (lambda C, nh, F, b: formula(C, nh, F, b) - 3 * C * F, ("SwiGLU with 3 · C · ffn_size",)),
    (lambda C, nh, F, b: formula(C, nh, F, b) - 3 * C * F + 2 * C * F + F + C, ("paper text's FFN",)),
    (lambda C, nh, F, b: formula(C, nh, F, b) - 3 * C * F - 2 * C, ("TTT layer alone",)),
    (lambda C, nh, F, b: formula(C, nh, F, b) + C, ("final RMSNorm belongs to the model",)),
    (lambda C, nh, F, b: formula(C, nh, F, b) - 2 * C, ("a norm is missing",)),
])
def test_block_params_mistakes_get_specific_hints(mistake, words, capsys):
    assert_fails(check_ttt_block_params(mistake), capsys, *words)


def test_block_params_one_big_inner_matrix_and_mlp_inner_get_hints(capsys):
    def one_matrix(C, nh, F, b):
        f = C // nh
        return formula(C, nh, F, b) - nh * (f * f + f) + C * C + C
    assert_fails(check_ttt_block_params(one_matrix), capsys, "one small model per head")

    def mlp_inner(C, nh, F, b):
        f = C // nh
        return formula(C, nh, F, b) - nh * (f * f + f) + nh * (8 * f * f + 5 * f)
    assert_fails(check_ttt_block_params(mlp_inner), capsys, "TTT-MLP")


def test_block_params_bad_return_and_exception_are_reported(capsys):
    assert_fails(check_ttt_block_params(lambda *a: 1.5), capsys, "one whole number")
    result = check_ttt_block_params(lambda *a: 1 / 0)   # reported, not raised
    assert not result.passed and "ZeroDivisionError" in result.message
    capsys.readouterr()
    # an unknown wrong number gets the piece-by-piece sum
    assert_fails(check_ttt_block_params(lambda *a: 12345), capsys, "SwiGLU (3 × C × ffn) 49,152", "= 67,276")


def test_block_params_strict_mode_raises(monkeypatch, capsys):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(ExerciseFailed, match="θ_K"):
        check_ttt_block_params(lambda C, nh, F, b: formula(C, nh, F, b) - C * C)
    assert check_ttt_block_params(formula).passed


# ---- check_delta_w_norms (chapter 7) ----------------------------------------------------------------------

def test_reference_passes(capsys):
    result = check_delta_w_norms(delta_w_norms)
    assert result.passed and "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda W, W0: (W[1:] - W[:-1]).flatten(1).norm(dim=1), "first position has a step too"),
    (lambda W, W0: delta_w_norms(W, W0) ** 2, "squared norms"),
    (lambda W, W0: (W - W0).flatten(1).norm(dim=1), "everything written so far"),
    (lambda W, W0: W.flatten(1).norm(dim=1), "the size of the weights"),
    (lambda W, W0: (W - torch.cat([W0[None], W[:-1]])).abs().flatten(1).sum(dim=1), "L1 norm"),
    (lambda W, W0: torch.cat([(W[0] - W[0]).norm()[None], (W[1:] - W[:-1]).flatten(1).norm(dim=1)]),
     "the first one is W_0' − W0"),
    (lambda W, W0: 1 / 0, "ZeroDivisionError"),
])
def test_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_delta_w_norms(wrong)
    assert not result.passed and hint in result.message, result.message


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="squared norms"):
        check_delta_w_norms(lambda W, W0: delta_w_norms(W, W0) ** 2)


# ---- check_append_mask_token ------------------------------------------------------------------------------

def when_full(seq, lengths, mask, max_len):
    return append_token(seq, lengths, torch.full_like(lengths, mask), max_len, always_drop_oldest=False)


def by_loop(seq, lengths, mask, max_len):
    rows = []
    for row, n in zip(seq.tolist(), lengths.tolist()):
        history = row[:n][-(max_len - 1):] if n >= max_len else row[:n]
        rows.append(history + [mask])
    width = max_len                                   # a wider (but allowed) padding than the reference
    return (torch.tensor([r + [0] * (width - len(r)) for r in rows]),
            torch.tensor([len(r) for r in rows]))


def test_append_mask_reference_and_loop_pass(capsys):
    assert_passes(check_append_mask_token(when_full), capsys)
    assert_passes(check_append_mask_token(by_loop), capsys)


def test_append_mask_recbole_always_drop_gets_its_own_hint(capsys):
    def always(seq, lengths, mask, max_len):
        return append_token(seq, lengths, torch.full_like(lengths, mask), max_len, always_drop_oldest=True)
    assert_fails(check_append_mask_token(always), capsys, "RecBole 1.2", "eval_drop_oldest='always'")


def test_append_mask_after_the_padding_gets_right_padding_hint(capsys):
    def at_end(seq, lengths, mask, max_len):
        return torch.cat([seq, torch.full_like(seq[:, :1], mask)], 1), lengths + 1
    assert_fails(check_append_mask_token(at_end), capsys, "right after the last *real* item")


def test_append_mask_never_dropping_gets_no_room_hint(capsys):
    def no_drop(seq, lengths, mask, max_len):
        out = torch.zeros(seq.shape[0], seq.shape[1] + 1, dtype=seq.dtype)
        out[:, : seq.shape[1]] = seq
        out[torch.arange(seq.shape[0]), lengths] = mask
        return out, lengths + 1
    assert_fails(check_append_mask_token(no_drop), capsys, "has no room")


def test_append_mask_overwriting_newest_and_stale_lengths_get_hints(capsys):
    def overwrite(seq, lengths, mask, max_len):
        out = torch.zeros(seq.shape[0], max_len, dtype=seq.dtype)
        out[:, : seq.shape[1]] = seq
        out[torch.arange(seq.shape[0]), lengths.clamp(max=max_len - 1)] = mask
        return out, (lengths + 1).clamp(max=max_len)
    assert_fails(check_append_mask_token(overwrite), capsys, "*oldest*")

    def stale_lengths(seq, lengths, mask, max_len):
        return when_full(seq, lengths, mask, max_len)[0], lengths
    assert_fails(check_append_mask_token(stale_lengths), capsys, "lengths are not")


def test_append_mask_junk_after_mask_and_bad_return(capsys):
    def junk(seq, lengths, mask, max_len):
        out, n = when_full(seq, lengths, mask, max_len)
        wide = torch.full((out.shape[0], max_len), 99, dtype=out.dtype)
        wide[:, : out.shape[1]] = out
        return wide, n
    assert_fails(check_append_mask_token(junk), capsys, "only padding")
    assert_fails(check_append_mask_token(lambda *a: 3), capsys, "return a pair")
