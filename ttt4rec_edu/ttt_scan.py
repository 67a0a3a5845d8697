"""The dual form's scan over mini-batches with a hand-written backward: what ``TTTLayer.dual_fast`` runs.

``TTTLayer.dual`` (``ttt4rec_edu.ttt``) is the readable reference and lets autograd differentiate it; every
elementwise step of the inner loop then becomes an autograd node that saves its inputs and, in the backward,
runs one or more small kernels of its own. This module computes the same numbers as one
``torch.autograd.Function`` whose forward keeps only what the backward reads and whose backward is a reverse scan
over the chunks, written out by hand — the way the official JAX and Triton kernels do it. ``tests/test_ttt_scan.py``
checks it against ``dual`` to 1e-12 in float64 (outputs and the gradient of every input) and with ``gradcheck``.

Per chunk of ``b`` tokens (batch and heads flattened into one axis, ``BN``), with keys ``K``, queries ``Q``, steps
``E = tril(τ_i η_j)`` and its last row ``e = E_b·``, for TTT-MLP (TTT-Linear stops after the first layer)::

    z1 = K W1 + c1,  u1 = Q W1 + c1                       (one matmul on [K; Q])
    h  = gelu(z1),   z2 = h W2 + c2,   g2 = ∂ℓ/∂z2 = LN-L2-grad(z2)          (the inner LN's fused backward)
    p  = g2 W2ᵀ,     g1 = p ⊙ gelu′(z1)
    U1 = u1 − A1 g1,  A1 = E ⊙ (Q Kᵀ + 1)                 (every query its own W1_i, c1_i)
    x2 = gelu(U1),   A2 = E ⊙ (x2 hᵀ + 1),   out = x2 W2 + c2 − A2 g2
    W1 ← W1 − Kᵀ (e ⊙ g1),  c1 ← c1 − Σ_j e_j g1_j,  W2 ← W2 − hᵀ (e ⊙ g2),  c2 ← c2 − Σ_j e_j g2_j

The forward keeps one copy of the weights and updates it in place. The backward runs these lines in reverse,
last chunk first, carrying the gradient of the state (``dW1, dc1, dW2, dc2``) to the chunk before, and gets each
chunk's start weights back by undoing its update (``W1 + Kᵀ (e ⊙ g1)``: the same product added back, equal to
the forward's weights up to rounding). GELU's value, slope and (for the backward, saved as ``p ⊙ gelu″(z1)``)
curvature are written with sigmoids. The LN-L2 gradient ``g = r (ĝ − mean ĝ − ẑ mean(ĝ ẑ))`` with
``ẑ = (z − μ) r``, ``r = 1/σ``, ``ĝ = γ² ẑ + γ (β − target)`` has the backward, for an incoming ``dg``::

    dB = r dg,   dĝ = dB − mean(dB) − ẑ mean(dB ẑ)                  (→ γ (β − target) and, times ẑ, → γ²)
    dẑ = γ² dĝ − mean(ĝ ẑ) dB − ĝ mean(dB ẑ)
    dz = r (dẑ − mean(dẑ) − ẑ (mean(dẑ ẑ) + mean(dg g)))            (the last term: r's own dependence on z)

Shapes (``n`` chunks; the caller pads a short last chunk with zeros, which changes no number because ``E`` is
lower-triangular and the last chunk's state update is skipped): ``kq`` (n, BN, 2b, f) keys then queries;
``attn1``, ``eta`` (n, BN, b, b); ``eta_last`` (n, BN, b, 1) = ``eᵀ``; ``ln_offset`` (n, BN, b, f) =
``γ (β − (v − k))``; ``ln_scale`` (BN, 1, f) = ``γ²``; ``W1`` (BN, f, d), ``c1`` (BN, 1, d), ``W2`` (BN, d, f),
``c2`` (BN, 1, f), or ``W2 = c2 = None`` for TTT-Linear. Output: ``f_res(q_i; W_i)`` before the inner LN,
(n, BN, b, f).

Speed on a CPU comes from moving less memory: no autograd node per elementwise step, GELU through sigmoids,
temporaries in buffers reused by every chunk, and the rows (batch × heads) taken in blocks of
:data:`BLOCK_ROWS`, so that a block's inner weights stay in the caches while its chunks are scanned.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch.autograd.function import once_differentiable

_BETA = math.sqrt(2.0 / math.pi)
_KAPPA = 0.044715


def _gelu_parts(x: torch.Tensor, work: torch.Tensor, value_out: torch.Tensor, s_pos_out: torch.Tensor):
    """``gelu(x), gelu′(x), σ(2u), σ(−2u)`` (tanh approximation, ``u = β (x + κ x³)``), written with
    ``½(1 ± tanh u) = σ(±2u)``: sigmoids are several times cheaper than tanh on a CPU, and ``σ(−2u)`` computed
    directly (not as ``1 − σ(2u)``) keeps float32 accurate where GELU saturates. ``σ(−2u)`` is written into
    ``work``, ``σ(2u)`` into ``s_pos_out`` and ``gelu(x)`` into ``value_out`` (buffers of x's shape)."""
    x_sq = x * x
    two_u = torch.mul(x_sq, _KAPPA, out=work).add_(1.0).mul_(x).mul_(2 * _BETA)
    s_pos = torch.sigmoid(two_u, out=s_pos_out)
    s_neg = two_u.neg_().sigmoid_()
    value = torch.mul(x, s_pos, out=value_out)
    slope = x_sq.mul_(3 * _KAPPA * _BETA).add_(_BETA).mul_(x).mul_(s_pos).mul_(s_neg).mul_(2.0).add_(s_pos)
    return value, slope, s_pos, s_neg


def _gelu_curvature(x: torch.Tensor, s_pos: torch.Tensor, s_neg: torch.Tensor, out: torch.Tensor,
                    work: torch.Tensor) -> torch.Tensor:
    """``gelu″(x) = 4 σ(2u) σ(−2u) (2u′ − β − x (σ(2u) − σ(−2u)) u′²)``, ``u′ = β + 3κβ x²``, into ``out``."""
    du = torch.mul(x, x, out=out).mul_(3 * _KAPPA * _BETA).add_(_BETA)
    tilt = torch.sub(s_pos, s_neg, out=work).mul_(x).mul_(du).mul_(du)
    return du.mul_(2.0).sub_(_BETA).sub_(tilt).mul_(s_pos).mul_(s_neg).mul_(4.0)


def _ln_l2_grad(z, ln_scale, ln_offset, eps):
    """The inner LN's fused L2 backward and what its own backward needs: ``g, (ẑ, r, ĝ, mean(ĝ ẑ))``."""
    z_hat = z - z.mean(dim=-1, keepdim=True)            # (var_mean over rows of 16 is several times slower)
    r = torch.rsqrt((z_hat * z_hat).mean(dim=-1, keepdim=True).add_(eps))
    z_hat.mul_(r)
    g_hat = torch.addcmul(ln_offset, ln_scale, z_hat)
    m2 = (g_hat * z_hat).mean(dim=-1, keepdim=True)
    g = (g_hat - g_hat.mean(dim=-1, keepdim=True)).sub_(z_hat * m2).mul_(r)
    return g, (z_hat, r, g_hat, m2)


def _ln_l2_grad_backward(dg, g, saved, ln_scale):
    """For ``dg = ∂L/∂g``: ``(∂L/∂z, ∂L/∂ĝ)`` (``∂L/∂ĝ`` is the gradient of ``γ (β − target)``)."""
    z_hat, r, g_hat, m2 = saved
    d_b = dg * r
    m_db_z = (d_b * z_hat).mean(dim=-1, keepdim=True)
    d_ghat = (d_b - d_b.mean(dim=-1, keepdim=True)).sub_(z_hat * m_db_z)
    d_zhat = (ln_scale * d_ghat).sub_(m2 * d_b).sub_(g_hat * m_db_z)
    centre = (d_zhat * z_hat).mean(dim=-1, keepdim=True).add_((dg * g).mean(dim=-1, keepdim=True))
    dz = (d_zhat - d_zhat.mean(dim=-1, keepdim=True)).sub_(z_hat * centre).mul_(r)
    return dz, d_ghat


def _forward(kq, attn1, eta, eta_last, ln_offset, ln_scale, w1, c1, w2, c2, eps, save: Optional[List], out):
    """The scan, written into ``out``. With ``save`` a list, appends per chunk what the backward reads, then the
    final inner weights. The weights are one copy updated in place, chunk after chunk (the backward gets each
    chunk's start weights back by undoing the updates); temporaries that the backward does not read live in a
    few buffers reused by every chunk."""
    n, BN, b2, f = kq.shape
    b = b2 // 2
    mlp = w2 is not None
    w1, c1 = w1.clone(), c1.clone()
    if mlp:
        w2, c2 = w2.clone(), c2.clone()
    d = w1.shape[-1]
    z1u1 = kq.new_empty(BN, b2, d)
    # σ(−2u), σ(2u) at z1; U1; σ(−2u), σ(2u) at U1; e ⊙ g1
    work = [kq.new_empty(BN, b, d) for _ in range(5 if mlp else 0)] + [kq.new_empty(BN, b, d)]
    hx = kq.new_empty(BN, 2 * b, d) if mlp and save is None else None
    for i in range(n):
        kq_i = kq[i]
        k_i = kq_i[:, :b]
        torch.baddbmm(c1, kq_i, w1, out=z1u1)                            # [K; Q] W1 + c1
        z1, u1 = z1u1[:, :b], z1u1[:, b:]
        if mlp:
            # h and x2 side by side: two of ∂L/∂W2's three terms are then one matmul, [h; x2]ᵀ [∂L/∂z2; ∂L/∂out]
            hx = kq.new_empty(BN, 2 * b, d) if save is not None else hx
            h, slope1, sp1, sn1 = _gelu_parts(z1, work[0], hx[:, :b], work[1])
            g2, ln_saved = _ln_l2_grad(torch.baddbmm(c2, h, w2), ln_scale, ln_offset[i], eps)
            p = torch.bmm(g2, w2.transpose(-1, -2))
            g1 = p * slope1                                               # p ⊙ gelu′(z1)
            big_u = torch.baddbmm(u1, attn1[i], g1, alpha=-1.0, out=work[2])   # U1
            x2, slope_u = _gelu_parts(big_u, work[3], hx[:, b:], work[4])[:2]  # gelu(U1), gelu′(U1)
            s2 = torch.bmm(x2, h.transpose(-1, -2))                       # x2 hᵀ
            a2 = torch.addcmul(eta[i], eta[i], s2)                        # E ⊙ (x2 hᵀ + 1)
            torch.baddbmm(torch.baddbmm(c2, x2, w2), a2, g2, alpha=-1.0, out=out[i])
            if save is not None:
                # p ⊙ gelu″(z1): what the backward multiplies ∂L/∂g1 by to reach z1 through gelu′
                p_curv = p.mul_(_gelu_curvature(z1, sp1, sn1, work[2], work[3]))
                save.append((hx, slope1, p_curv, g1, slope_u, s2, a2, g2, ln_saved))
        else:
            g1, ln_saved = _ln_l2_grad(z1, ln_scale, ln_offset[i], eps)
            torch.baddbmm(u1, attn1[i], g1, alpha=-1.0, out=out[i])
            if save is not None:
                save.append((g1, ln_saved))
        if i == n - 1:
            break
        # W ← W − Aᵀ (e ⊙ G), c ← c − Σ_j e_j g_j, in place
        e = eta_last[i]
        eg1 = torch.mul(e, g1, out=work[-1])
        w1.baddbmm_(k_i.transpose(-1, -2), eg1, alpha=-1.0)
        c1.sub_(eg1.sum(dim=1, keepdim=True))
        if mlp:
            eg2 = e * g2
            w2.baddbmm_(h.transpose(-1, -2), eg2, alpha=-1.0)
            c2.sub_(eg2.sum(dim=1, keepdim=True))
    if save is not None:
        save.append((w1, w2) if mlp else (w1,))
    return out


def _backward(grad_out, kq, attn1, eta, eta_last, ln_scale, saved, mlp, d_kq, d_attn1, d_eta, d_eta_last, d_offset):
    """The scan in reverse: per chunk, the gradients of its inputs (written into ``d_kq`` .. ``d_offset``;
    ``d_eta_last`` zero-filled by the caller) and of the state it started from (returned). ``saved``: what
    :func:`_forward` saved, the final weights last."""
    n, BN, b2, f = kq.shape
    b = b2 // 2
    w1, w2 = (*(t.clone() for t in saved[-1]), None)[:2]     # the final weights, walked back chunk by chunk
    d = w1.shape[-1]
    d_scale = torch.zeros_like(ln_scale)
    # buffers reused by every chunk: ∂L/∂[z1; u1], ∂L/∂g1, ∂L/∂h, ∂L/∂x2, ∂L/∂p, [∂L/∂z2; ∂L/∂out], ∂L/∂g2,
    # ∂L/∂K (from the update), scratch
    d_z1u1 = kq.new_empty(BN, b2, d)
    dg1, dh, dx2, dp = (kq.new_empty(BN, b, d) if k == 0 or mlp else None for k in range(4))
    dzy = kq.new_empty(BN, 2 * b, f) if mlp else None
    dg2, d_k_state, scratch = kq.new_empty(BN, b, f), kq.new_empty(BN, b, f), kq.new_empty(BN, b, d)
    d_w1 = d_c1 = d_w2 = d_c2 = None                     # the state's gradients: none after the last chunk
    for i in range(n - 1, -1, -1):
        kq_i, dy = kq[i], grad_out[i]
        k_i = kq_i[:, :b]
        e = eta_last[i]
        carry = d_w1 is not None
        if mlp:
            hx, slope1, p_curv, g1, slope_u, s2, a2, g2, ln_saved = saved[i]
            h, x2 = hx[:, :b], hx[:, b:]
        else:
            g1, ln_saved = saved[i]
        if i < n - 1:
            # the chunk's start weights: its update undone (W + Aᵀ (e ⊙ G), the same product the forward took
            # away; equal to the weights the forward used up to rounding). The biases are not needed.
            w1.baddbmm_(k_i.transpose(-1, -2), torch.mul(e, g1, out=scratch))
            if mlp:
                w2.baddbmm_(h.transpose(-1, -2), e * g2)
        # the state update W' = W − Aᵀ (e ⊙ G), c' = c − Σ e ⊙ G, read backwards
        if carry:
            n_dg1 = torch.baddbmm(d_c1, k_i, d_w1, out=dg1)                 # −∂L/∂(e ⊙ g1)
            torch.bmm(g1, d_w1.transpose(-1, -2), out=d_k_state).mul_(e)   # −∂L/∂K from the update
            d_e = torch.mul(n_dg1, g1, out=scratch).sum(dim=-1, keepdim=True)
            n_dg1.mul_(e)                                                  # −∂L/∂g1 from the update
            if mlp:
                n_dg2 = torch.baddbmm(d_c2, h, d_w2, out=dg2)
                torch.bmm(g2, d_w2.transpose(-1, -2), out=dh).mul_(-e)     # ∂L/∂h from the update
                d_e.add_((n_dg2 * g2).sum(dim=-1, keepdim=True))
                n_dg2.mul_(-e)                                             # ∂L/∂g2 from the update
            torch.neg(d_e, out=d_eta_last[i])
        if mlp:
            # out = x2 W2 + c2 − A2 g2,  A2 = E ⊙ (x2 hᵀ + 1)
            n_da2 = torch.bmm(dy, g2.transpose(-1, -2))                    # −∂L/∂A2
            torch.addcmul(n_da2, n_da2, s2, out=d_eta[i]).neg_()
            n_ds2 = n_da2.mul_(eta[i])                                     # −∂L/∂(x2 hᵀ)
            a2t, n_ds2t = a2.transpose(-1, -2), n_ds2.transpose(-1, -2)
            if carry:
                dg2.baddbmm_(a2t, dy, alpha=-1.0)
                dh.baddbmm_(n_ds2t, x2, alpha=-1.0)
            else:
                torch.bmm(a2t, dy, out=dg2).neg_()
                torch.bmm(n_ds2t, x2, out=dh).neg_()
                d_w2 = torch.zeros_like(w2)
                d_c2 = torch.zeros(BN, 1, f, dtype=kq.dtype, device=kq.device)
            torch.bmm(dy, w2.transpose(-1, -2), out=dx2).baddbmm_(n_ds2, h, alpha=-1.0)
            d_c2.add_(dy.sum(dim=1, keepdim=True))
            # U1 = u1 − A1 g1
            du = torch.mul(dx2, slope_u, out=d_z1u1[:, b:])
            torch.bmm(du, g1.transpose(-1, -2), out=d_attn1[i]).neg_()
            a1t = attn1[i].transpose(-1, -2)
            (dg1.baddbmm_(a1t, du) if carry else torch.bmm(a1t, du, out=dg1)).neg_()
            # g1 = p ⊙ gelu′(z1),  p = g2 W2ᵀ
            torch.mul(dg1, slope1, out=dp)
            d_curv = dg1.mul_(p_curv)                                      # ∂L/∂z1 through gelu′
            dg2.baddbmm_(dp, w2)
            d_w2.baddbmm_(dp.transpose(-1, -2), g2)
            # g2 = LN-L2-grad(z2),  z2 = h W2 + c2
            dz2, d_ghat = _ln_l2_grad_backward(dg2, g2, ln_saved, ln_scale)
            dh.baddbmm_(dz2, w2.transpose(-1, -2))
            d_c2.add_(dz2.sum(dim=1, keepdim=True))
            dzy[:, :b], dzy[:, b:] = dz2, dy
            d_w2.baddbmm_(hx.transpose(-1, -2), dzy)                       # hᵀ dz2 + x2ᵀ dy
            torch.mul(dh, slope1, out=d_z1u1[:, :b]).add_(d_curv)          # h = gelu(z1)
        else:
            # out = u1 − A1 g1
            d_z1u1[:, b:] = dy
            torch.bmm(dy, g1.transpose(-1, -2), out=d_attn1[i]).neg_()
            a1t = attn1[i].transpose(-1, -2)
            (dg1.baddbmm_(a1t, dy) if carry else torch.bmm(a1t, dy, out=dg1)).neg_()
            dz1, d_ghat = _ln_l2_grad_backward(dg1, g1, ln_saved, ln_scale)
            d_z1u1[:, :b] = dz1
        d_offset[i] = d_ghat
        d_scale.add_((d_ghat * ln_saved[0]).sum(dim=1, keepdim=True))
        # [K; Q] W1 + c1
        torch.bmm(d_z1u1, w1.transpose(-1, -2), out=d_kq[i])
        if carry:
            d_kq[i][:, :b].sub_(d_k_state)
            d_w1.baddbmm_(kq_i.transpose(-1, -2), d_z1u1)
            d_c1.add_(d_z1u1.sum(dim=1, keepdim=True))
        else:
            d_w1 = torch.bmm(kq_i.transpose(-1, -2), d_z1u1)
            d_c1 = d_z1u1.sum(dim=1, keepdim=True)
    return d_scale, d_w1, d_c1, d_w2, d_c2


#: The scan runs on blocks of at most this many (batch × head) rows, one block after the other: a block's inner
#: weights and temporaries then stay in the CPU's caches through a chunk (measured by benchmarks/bench_speed.py).
BLOCK_ROWS = 256


def _blocks(rows: int, size: int) -> List[slice]:
    return [slice(start, start + size) for start in range(0, rows, size)]


def _rows(tensors, block: slice, axis: int):
    return [None if t is None else t[(slice(None),) * axis + (block,)] for t in tensors]


class _DualScan(torch.autograd.Function):
    """The scan as one autograd node (first order: nothing differentiates the layer's gradient again)."""

    @staticmethod
    def forward(ctx, kq, attn1, eta, eta_last, ln_offset, ln_scale, w1, c1, w2, c2, eps):
        n, BN, b2, f = kq.shape
        out = kq.new_empty(n, BN, b2 // 2, f)
        flat: List = []
        ctx.blocks = _blocks(BN, BLOCK_ROWS)          # the backward walks the same blocks
        for block in ctx.blocks:
            saved: List = []
            _forward(*_rows((kq, attn1, eta, eta_last, ln_offset), block, 1),
                     *_rows((ln_scale, w1, c1, w2, c2), block, 0), eps, saved, out[:, block])
            flat += [t for chunk in saved[:-1] for t in chunk[:-1] + chunk[-1]] + list(saved[-1])
        # saved through autograd (not as attributes), so that they are freed as soon as the backward has run
        ctx.save_for_backward(kq, attn1, eta, eta_last, ln_scale, *flat)
        ctx.mlp = w2 is not None
        ctx.per_block = len(flat) // len(ctx.blocks)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        kq, attn1, eta, eta_last, ln_scale, *flat = ctx.saved_tensors
        n, BN, b2, f = kq.shape
        n_state = 2 if ctx.mlp else 1
        per_chunk = (ctx.per_block - n_state) // n
        grad_out = grad_out.contiguous()
        d_kq, d_attn1, d_eta_last = torch.empty_like(kq), torch.empty_like(attn1), torch.zeros_like(eta_last)
        d_eta = torch.empty_like(eta) if ctx.mlp else None
        d_offset = kq.new_empty(n, BN, b2 // 2, f)
        state = []
        for index, block in enumerate(ctx.blocks):
            mine = flat[index * ctx.per_block:(index + 1) * ctx.per_block]
            saved = [(*mine[i:i + per_chunk - 4], tuple(mine[i + per_chunk - 4:i + per_chunk]))
                     for i in range(0, n * per_chunk, per_chunk)] + [tuple(mine[n * per_chunk:])]
            state.append(_backward(*_rows((grad_out, kq, attn1, eta, eta_last), block, 1), ln_scale[block],
                                   saved, ctx.mlp, *_rows((d_kq, d_attn1, d_eta, d_eta_last, d_offset), block, 1)))
        state = [None if parts[0] is None else torch.cat(parts) for parts in zip(*state)]
        return (d_kq, d_attn1, d_eta, d_eta_last, d_offset, *state, None)


class _PairChunks(torch.autograd.Function):
    """(B, nh, L, f) keys and queries → (n, B·nh, 2b, f): per chunk, its ``b`` keys then its ``b`` queries,
    zeros after the end. One copy each way (autograd's pad, reshape and concatenation would take several)."""

    @staticmethod
    def forward(ctx, k, q, b):
        B, nh, L, f = k.shape
        n_full, rem = divmod(L, b)
        n = n_full + (1 if rem else 0)
        out = k.new_zeros(n, B, nh, 2, b, f)
        for side, t in enumerate((k, q)):
            out[:n_full, :, :, side] = t[:, :, :n_full * b].reshape(B, nh, n_full, b, f).permute(2, 0, 1, 3, 4)
            if rem:
                out[n_full, :, :, side, :rem] = t[:, :, n_full * b:]
        ctx.shape = (B, nh, L, f)
        return out.view(n, B * nh, 2 * b, f)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        B, nh, L, f = ctx.shape
        n, _, b2, _ = grad.shape
        grad = grad.view(n, B, nh, 2, b2 // 2, f).permute(3, 1, 2, 0, 4, 5).reshape(2, B, nh, n * b2 // 2, f)
        return grad[0, :, :, :L], grad[1, :, :, :L], None


def pair_chunks(k: torch.Tensor, q: torch.Tensor, b: int) -> torch.Tensor:
    """The scan's ``kq`` input from keys and queries (B, nh, L, f), chunks of ``b`` tokens."""
    return _PairChunks.apply(k, q, b)


def dual_scan(kq, attn1, eta, eta_last, ln_offset, ln_scale, w1, c1, w2=None, c2=None, eps: float = 1e-6):
    """``f_res(q_i; W_i)`` for every chunk (shapes in the module docstring). Differentiable through the
    hand-written backward when a gradient is asked for; otherwise the plain scan, keeping nothing."""
    inputs = [t for t in (kq, attn1, eta, eta_last, ln_offset, ln_scale, w1, c1, w2, c2) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _DualScan.apply(kq, attn1, eta, eta_last, ln_offset, ln_scale, w1, c1, w2, c2, eps)
    n, BN, b2, f = kq.shape
    out = kq.new_empty(n, BN, b2 // 2, f)
    for block in _blocks(BN, BLOCK_ROWS):
        _forward(*_rows((kq, attn1, eta, eta_last, ln_offset), block, 1),
                 *_rows((ln_scale, w1, c1, w2, c2), block, 0), eps, None, out[:, block])
    return out
