"""RoPE: norm preservation, relative positions, and two independent constructions of the same rotation."""
import math

import pytest
import torch

from ttt4rec_edu.rope import apply_rope, rope_frequencies, rope_positions

F64 = torch.float64


def test_positions_modes():
    assert rope_positions(11, 4, "minibatch").tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]
    assert rope_positions(5, 4, "sequence").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="rope position mode"):
        rope_positions(5, 4, "absolute")


def test_frequencies_hand_computed():
    omega = rope_frequencies(8, base=1000.0, dtype=F64)
    expected = torch.tensor([1000.0 ** (-2 * i / 8) for i in range(4)], dtype=F64)
    torch.testing.assert_close(omega, expected, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="even head dimension"):
        rope_frequencies(7)


def test_single_pair_hand_computed():
    # head_dim 2 → one pair with omega = 1: position p rotates (1, 0) to (cos p, sin p).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]], dtype=F64)
    p = torch.tensor([1, 2, 3])
    out = apply_rope(x, p, base=1000.0)
    expected = torch.tensor([[math.cos(1), math.sin(1)], [-math.sin(2), math.cos(2)],
                             [3 * math.cos(3) - 4 * math.sin(3), 4 * math.cos(3) + 3 * math.sin(3)]], dtype=F64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)


def test_norm_preserved_per_pair():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 16, dtype=F64)
    out = apply_rope(x, torch.arange(9), base=1000.0)
    pair_norm = lambda t: t.reshape(*t.shape[:-1], 8, 2).norm(dim=-1)
    torch.testing.assert_close(pair_norm(out), pair_norm(x), rtol=1e-13, atol=1e-13)
    assert not torch.allclose(out, x)          # positions > 0 actually rotate


def test_position_zero_is_identity_and_dtype_kept():
    x = torch.randn(4, 16)
    out = apply_rope(x, torch.zeros(4, dtype=torch.long))
    assert out.dtype == torch.float32
    assert torch.equal(out, x)


def test_relative_position_property():
    torch.manual_seed(1)
    q, k = torch.randn(16, dtype=F64), torch.randn(16, dtype=F64)

    def score(m, n):
        rq = apply_rope(q[None], torch.tensor([m]), base=1000.0)[0]
        rk = apply_rope(k[None], torch.tensor([n]), base=1000.0)[0]
        return (rq * rk).sum()

    for shift in (0, 1, 5, 17):
        ref = score(0, shift)
        for m in (1, 3, 40):
            torch.testing.assert_close(score(m, m + shift), ref, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(score(0, 1), score(0, 2))   # the score does depend on the offset


def test_equals_block_rotation_matrix():
    torch.manual_seed(2)
    f, base = 8, 1000.0
    x = torch.randn(6, f, dtype=F64)
    positions = torch.tensor([0, 1, 2, 7, 13, 100])
    out = apply_rope(x, positions, base)
    for row, p in enumerate(positions.tolist()):
        R = torch.zeros(f, f, dtype=F64)
        for i in range(f // 2):
            a = p * base ** (-2 * i / f)
            # column-vector rotation of the pair (x_{2i}, x_{2i+1})
            R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), -math.sin(a)],
                                                                 [math.sin(a), math.cos(a)]], dtype=F64)
        torch.testing.assert_close(out[row], R @ x[row], rtol=1e-12, atol=1e-12)


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def _permute_rotate_half_unpermute(x, positions, base):
    """The official code's route: permute to halves, HF rotate_half with cat(freqs, freqs), undo the permute."""
    *lead, L, f = x.shape
    xp = x.reshape(*lead, L, f // 2, 2).transpose(-1, -2).reshape(*lead, L, f)
    inv_freq = 1.0 / (base ** (torch.arange(0, f, 2, dtype=torch.int64).float() / f))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    yp = xp * cos + _rotate_half(xp) * sin
    return yp.reshape(*lead, L, 2, f // 2).transpose(-1, -2).reshape(*lead, L, f)


@pytest.mark.parametrize("mode", ["minibatch", "sequence"])
def test_equals_permute_rotate_half_unpermute(mode):
    torch.manual_seed(3)
    x = torch.randn(2, 4, 21, 16)
    positions = rope_positions(21, 8, mode)
    ours = apply_rope(x, positions, base=1000.0)
    ref = _permute_rotate_half_unpermute(x, positions, 1000.0)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_half_precision_path_matches_float32():
    torch.manual_seed(4)
    x = torch.randn(3, 10, 16)
    positions = rope_positions(10, 8, "minibatch")
    ref = apply_rope(x, positions)
    out = apply_rope(x.to(torch.bfloat16), positions)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=0.05)


def test_cached_turns_and_rotate_pairs_equal_apply_rope():
    """The layer's fast route (ttt.TTTLayer.views): a cached e^{ipω} table and one complex multiply on a strided
    view, no copy; the same numbers as apply_rope, and a table first built in inference mode still trains."""
    from ttt4rec_edu.rope import rope_turns, rotate_pairs

    rope_turns.cache_clear()
    with torch.inference_mode():
        rope_turns(11, 4, "minibatch", 16, 1000.0, F64, torch.device("cpu"))
    turn = rope_turns(11, 4, "minibatch", 16, 1000.0, F64, torch.device("cpu"))
    assert rope_turns.cache_info().hits == 1
    qkv = torch.randn(2, 11, 3 * 16, dtype=F64, requires_grad=True)
    qk = qkv[..., :32].unflatten(-1, (2, 16)).transpose(1, 2)          # (2, 2, 11, 16), a strided view
    out = rotate_pairs(qk, turn)
    torch.testing.assert_close(out, apply_rope(qk, rope_positions(11, 4, "minibatch")), rtol=0, atol=1e-15)
    out.sum().backward()                                               # the cached table works under autograd
    assert qkv.grad[..., 32:].abs().max() == 0 and qkv.grad[..., :32].abs().max() > 0
