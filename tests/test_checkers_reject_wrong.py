"""Every exercise check rejects plausible wrong answers and accepts correct ones written differently.

For each ``check_*`` of :mod:`ttt4rec_edu.exercises`: at least three wrong answers a student would plausibly
write (off-by-one, transpose, missing term, wrong normalisation, batch width for max_len, ...), each rejected
with a hint that names *that* mistake (the words listed beside it), and at least two correct answers written
differently (float32 and float64, a loop and a vectorised form, the library and a hand-written formula), each
accepted. A last test fails when a check exists without such cases, so a new check cannot skip them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttt4rec_edu import exercises
from ttt4rec_edu.exercises import foundations, ttt_layer
from ttt4rec_edu.data.protocol import split_counts
from ttt4rec_edu.rope import apply_rope
from ttt4rec_edu.ttt import ln_fused_l2_bwd

from exercise_asserts import _not_strict, assert_fails, assert_passes  # noqa: F401  (autouse fixture)


# ------------------------------------------------------------------------------------ chapter 1: split counts

def split_by_hand(n, ratios):
    counts = [0, int(ratios[1] * n), int(ratios[2] * n)]
    counts[0] = n - counts[1] - counts[2]
    for part in (2, 1):
        if counts[0] > 1 and 0 < ratios[part] * n < 1:
            counts[part] += 1
            counts[0] -= 1
    return counts                                   # a list, not a tuple


SPLIT = {
    "correct": [split_counts, split_by_hand, lambda n, r: np.array(split_counts(n, r), dtype=np.int64)],
    "wrong": [
        (lambda n, r: (n - int(r[1] * n) - int(r[2] * n), int(r[1] * n), int(r[2] * n)), ["bump"]),
        (lambda n, r: (n - round(r[1] * n) - round(r[2] * n), round(r[1] * n), round(r[2] * n)),
         ["does not round"]),
        (lambda n, r: split_counts(n, r)[::-1], ["order is (train, valid, test)"]),
        (lambda n, r: split_counts(n, (0.3, 0.2, 0.5)), ["the other split", "6:2:2 here"]),
        # right at 3:2:5, nonsense at 6:2:2: the generic hint names the split that was tested (issue 13)
        (lambda n, r: split_counts(n, r) if r[0] < 0.5 else (n - 2, 1, 1),
         ["split 6:2:2", "floor(0.2 n), test = floor(0.2 n)"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 1: NDCG@k

def ndcg64(ranks, k):
    r = ranks.double()
    return float(torch.where(r <= k, 1 / torch.log2(r + 1), torch.zeros_like(r)).mean())


def ndcg32(ranks, k):                               # a float32 tensor, not a Python float
    r = ranks.float()
    return torch.where(r <= k, 1 / torch.log2(r + 1), torch.zeros_like(r)).mean()


def _ndcg_with(discount, cut=lambda r, k: r <= k, reduce=torch.mean):
    def fn(ranks, k):
        r = ranks.double()
        return float(reduce(torch.where(cut(r, k), 1 / discount(r), torch.zeros_like(r))))
    return fn


NDCG = {
    "correct": [ndcg64, ndcg32],
    "wrong": [
        (_ndcg_with(torch.log2), ["log2(rank + 1)"]),
        (_ndcg_with(lambda r: torch.log(r + 1)), ["base-2"]),
        (_ndcg_with(lambda r: torch.log2(r + 1), cut=lambda r, k: r < k), ["rank <= k"]),
        (_ndcg_with(lambda r: torch.log2(r + 1), reduce=torch.sum), ["mean"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 2: RoPE

def rope_loop(x, positions, base, angle_dtype=torch.float64, pair_start=0, sign=1.0, exponent=2.0):
    """Interleaved RoPE by hand; the keyword arguments reproduce the usual mistakes."""
    f = x.shape[-1]
    i = torch.arange(f // 2, dtype=angle_dtype) + pair_start
    omega = base ** (-exponent * i / f)
    angles = (positions.to(angle_dtype)[:, None] * omega[None, :]).to(x.dtype) * sign
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * angles.cos() - b * angles.sin()
    out[..., 1::2] = b * angles.cos() + a * angles.sin()
    return out


ROPE = {
    "correct": [
        apply_rope,
        lambda x, p, base: rope_loop(x, p, base, angle_dtype=torch.float32),   # issue 13: float32 angles
        lambda x, p, base: rope_loop(x.float(), p, base, angle_dtype=torch.float32),  # all float32
    ],
    "wrong": [
        (lambda x, p, base: rope_loop(x, p, base, sign=-1.0), ["wrong way"]),
        (lambda x, p, base: foundations._rope_half_split(x, p, base), ["rotate_half"]),
        (lambda x, p, base: rope_loop(x, p + 1, base), ["positions start at 0"]),
        (lambda x, p, base: rope_loop(x, p, base, exponent=1.0), ["−2i/f", "not −i/f"]),
        (lambda x, p, base: rope_loop(x, p, base, pair_start=1), ["pair index i starts at 0"]),
    ],
}


def test_rope_blames_the_angles_only_when_they_are_wrong(capsys):
    """A float32-angle answer passes; an error that keeps lengths and angles is not called an angle error."""
    assert_passes(exercises.check_rope_rotation(ROPE["correct"][1]), capsys)

    def swapped(x, p, base):                 # right angles and lengths, members of each pair exchanged
        out = apply_rope(x, p, base)
        return out.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    result = exercises.check_rope_rotation(swapped)
    assert_fails(result, capsys)
    assert "angles are off" not in result.message


# ------------------------------------------------------------------------------------ chapter 3: gradients

def inner_grad(x, W, b, y):
    r = x @ W + b - y
    return x.T @ r, r.sum(0)


def inner_grad_autograd(x, W, b, y):
    W, b = W.clone().requires_grad_(), b.clone().requires_grad_()
    return torch.autograd.grad(0.5 * ((x @ W + b - y) ** 2).sum(), (W, b))


def inner_grad32(x, W, b, y):
    return inner_grad(x.float(), W.float(), b.float(), y.float())


LINEAR_GRAD = {
    "correct": [inner_grad, inner_grad_autograd, inner_grad32],
    "wrong": [
        (lambda *a: tuple(-g for g in inner_grad(*a)), ["sign is flipped"]),
        (lambda *a: tuple(2 * g for g in inner_grad(*a)), ["½"]),
        (lambda x, W, b, y: tuple(g / x.shape[0] for g in inner_grad(x, W, b, y)), ["not a mean"]),
        (lambda x, W, b, y: (inner_grad(x, W, b, y)[0].T, inner_grad(x, W, b, y)[1]), ["transpose"]),
    ],
}


def ln_autograd(z, target, gamma, beta):
    z = z.clone().requires_grad_()
    mu, var = z.mean(-1, keepdim=True), z.var(-1, keepdim=True, unbiased=False)
    out = gamma * (z - mu) / torch.sqrt(var + 1e-6) + beta
    return torch.autograd.grad(0.5 * ((out - target) ** 2).sum(), z)[0]


def _ln_formula(z, target, gamma, beta, mean=True, proj=True, chain=True, unbiased=False, sign=1.0):
    f = z.shape[-1]
    std = torch.sqrt(z.var(-1, keepdim=True, unbiased=unbiased) + 1e-6)
    z_hat = (z - z.mean(-1, keepdim=True)) / std
    g = gamma * (gamma * z_hat + beta - target)
    if not chain:
        return sign * g
    out = f * g - (g.sum(-1, keepdim=True) if mean else 0) - (z_hat * (g * z_hat).sum(-1, keepdim=True)
                                                              if proj else 0)
    return sign * out / (f * std)


LN_GRAD = {
    "correct": [ln_fused_l2_bwd, ln_autograd,
                lambda z, t, g, b: _ln_formula(z.float(), t.float(), g.float(), b.float())],
    "wrong": [
        (lambda *a: _ln_formula(*a, chain=False), ["chain it through the normalisation"]),
        (lambda *a: _ln_formula(*a, proj=False), ["σ depends on z too"]),
        (lambda *a: _ln_formula(*a, mean=False), ["the mean depends on z too"]),
        (lambda *a: _ln_formula(*a, sign=-1.0), ["sign is flipped"]),
        (lambda *a: _ln_formula(*a, unbiased=True), ["population variance"]),
    ],
}


def online(W0, Q, K, V, eta, read_before=False, frozen=False, sign=1.0, key_out=False):
    W, rows = W0, []
    for t in range(Q.shape[0]):
        out = K if key_out else Q
        if read_before:
            rows.append(out[t:t + 1] @ W)
        at = W0 if frozen else W
        W = W - sign * eta[t] * K[t:t + 1].T @ (K[t:t + 1] @ at - V[t:t + 1])
        if not read_before:
            rows.append(out[t:t + 1] @ W)
    return torch.cat(rows), W


def online_autograd(W0, Q, K, V, eta):
    W, rows = W0.clone(), []
    for t in range(Q.shape[0]):
        W = W.detach().requires_grad_()
        (g,) = torch.autograd.grad(0.5 * ((K[t] @ W - V[t]) ** 2).sum(), W)
        W = (W - eta[t] * g).detach()
        rows.append(Q[t] @ W)
    return torch.stack(rows), W


ONLINE = {
    "correct": [online, online_autograd, lambda *a: online(*(t.float() for t in a))],
    "wrong": [
        (lambda *a: online(*a, read_before=True), ["after the update"]),
        (lambda *a: online(*a, frozen=True), ["mini-batch TTT"]),
        (lambda *a: online(*a, sign=-1.0), ["gradient descent subtracts"]),
        (lambda *a: online(*a, key_out=True), ["test view q_t"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 4: dual form, τ

def dual(W0, Q, K, V, eta, mask=torch.tril, sign=1.0):
    G = K @ W0 - V
    return Q @ W0 - sign * eta * mask(Q @ K.T) @ G, W0 - sign * eta * K.T @ G


DUAL = {
    "correct": [dual, ttt_layer._minibatch_primal_linear,
                lambda W0, Q, K, V, eta: dual(W0.float(), Q.float(), K.float(), V.float(), eta)],
    "wrong": [
        (lambda *a: dual(*a, mask=lambda m: m), ["causality"]),
        (lambda *a: dual(*a, mask=lambda m: torch.tril(m, -1)), ["keep the diagonal"]),
        (lambda *a: dual(*a, sign=-1.0), ["gradient descent subtracts"]),
        (ttt_layer._online_linear, ["online GD"]),
    ],
}


def tau(delta):
    i = torch.arange(1, delta.shape[0] + 1, dtype=delta.dtype)
    return torch.clamp_min(1 / i + delta, 0.0)


TOKEN_SCALE = {
    "correct": [tau, lambda d: torch.relu(1 / torch.arange(1, len(d) + 1) + d.float()),
                lambda d: [max(0.0, 1 / (i + 1) + float(x)) for i, x in enumerate(d)]],
    "wrong": [
        (lambda d: 1 / torch.arange(1, len(d) + 1, dtype=d.dtype) + d, ["clamp at zero"]),
        (lambda d: torch.clamp_min(1 / torch.arange(0, len(d), dtype=d.dtype) + d, 0.0), ["starts at 1"]),
        (lambda d: torch.clamp_min(1 / len(d) + d, 0.0), ["position i inside the mini-batch"]),
        (lambda d: 1 / torch.arange(1, len(d) + 1, dtype=d.dtype), ["add the learnable offset"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 5: meta-gradient

def meta(W0, q, k, v, y, eta, second=True, second_sign=1.0, eta_zero=False):
    g = k @ W0 - v
    r = q @ (W0 - eta * torch.outer(k, g)) - y
    dW = torch.outer(q, r) - (second_sign * eta * (q @ k) * torch.outer(k, r) if second else 0)
    return dW, 0.0 if eta_zero else -float(q @ k) * float(r @ g)


def meta_autograd(W0, q, k, v, y, eta):
    return ttt_layer._meta_grad_autograd(W0, q, k, v, y, eta)


META = {
    "correct": [meta, meta_autograd, lambda W0, q, k, v, y, eta: meta(*(t.float() for t in (W0, q, k, v, y)), eta)],
    "wrong": [
        (lambda *a: meta(*a, second=False), ["first-order"]),
        (lambda *a: meta(*a, second_sign=-1.0), ["minus sign"]),
        (lambda *a: meta(*a, eta_zero=True), ["η is learned too"]),
        (lambda *a: (meta(*a)[0].T, meta(*a)[1]), ["transpose"]),
    ],
}


# ------------------------------------------------------------------------------------ chapters 6 and 8

def block_formula(C, nh, ffn, b):
    f = C // nh
    return 4 * C * C + nh * C + nh + b + 2 * C + 2 * C + nh * (f * f + f) + 3 * C * ffn + 2 * C


def block_counted(C, nh, ffn, b):
    from ttt4rec_edu.backbones import ResidualBlock
    block = ResidualBlock(C, nh, ffn, backbone="transformer", inner="linear", mini_batch_size=b)
    return sum(p.numel() for p in block.parameters())


BLOCK = {
    "correct": [block_formula, block_counted],
    "wrong": [
        (lambda C, nh, ffn, b: block_formula(C, nh, ffn, b) - C * C, ["four C × C projections"]),
        (lambda C, nh, ffn, b: block_formula(C, nh, ffn, b) - b, ["token offsets"]),
        (lambda C, nh, ffn, b: block_formula(C, nh, ffn, b) - 3 * C * ffn + 2 * C * ffn + ffn + C, ["SwiGLU"]),
        (lambda C, nh, ffn, b: block_formula(C, nh, ffn, b) + C, ["final RMSNorm belongs to the model"]),
    ],
}


def append_library(seq, lengths, mask, max_len):
    from ttt4rec_edu.baselines.bert4rec import append_token
    return append_token(seq, lengths, torch.full_like(lengths, mask), max_len, always_drop_oldest=False)


def append_loop(seq, lengths, mask, max_len, full_at=None, always=False, at_end=False):
    """By hand; ``full_at`` is the length at which a history counts as full (``max_len`` when right)."""
    full_at = max_len if full_at is None else full_at
    rows = []
    for row, n in zip(seq.tolist(), lengths.tolist()):
        history = row if at_end else row[:n]
        if always or n >= full_at:
            history = history[1:]
        rows.append(history + [mask])
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows]), torch.tensor([len(r) for r in rows])


APPEND = {
    "correct": [append_library, append_loop],
    "wrong": [
        (lambda s, n, m, L: append_loop(s, n, m, L, full_at=s.shape[1]), ["full only when it holds max_len"]),
        (lambda s, n, m, L: append_loop(s, n, m, L, always=True), ["RecBole"]),
        (lambda s, n, m, L: append_loop(s, n, m, L, at_end=True, full_at=10 ** 6), ["right padding"]),
        (lambda s, n, m, L: (append_library(s, n, m, L)[0], n), ["lengths are not"]),
    ],
}


def test_append_mask_batch_width_mistake_from_issue_13(capsys):
    """Batch width 3, max_len 5: testing fullness against the width gives [2, 3, 9]; the reference [1, 2, 3, 9]."""
    seq, lengths = torch.tensor([[1, 2, 3]]), torch.tensor([3])
    assert append_loop(seq, lengths, 9, 5, full_at=3)[0].tolist() == [[2, 3, 9]]
    assert append_library(seq, lengths, 9, 5)[0].tolist() == [[1, 2, 3, 9]]
    assert_fails(exercises.check_append_mask_token(lambda s, n, m, L: append_loop(s, n, m, L, full_at=s.shape[1])),
                 capsys, "max_len = 5", "widen the batch")


# ------------------------------------------------------------------------------------ chapter 7: ΔW norms

def dw_norms(W, W0):
    return (W - torch.cat([W0[None], W[:-1]])).flatten(1).norm(dim=1)


DELTA_W = {
    "correct": [dw_norms, lambda W, W0: dw_norms(W.float(), W0.float()),
                lambda W, W0: [float(torch.linalg.norm(W[t] - (W[t - 1] if t else W0))) for t in range(len(W))]],
    "wrong": [
        (lambda W, W0: dw_norms(W, W0) ** 2, ["squared norms"]),
        (lambda W, W0: (W - W0).flatten(1).norm(dim=1), ["‖W_t − W0‖"]),
        (lambda W, W0: (W - torch.cat([W0[None], W[:-1]])).abs().flatten(1).sum(1), ["L1"]),
        (lambda W, W0: (W[1:] - W[:-1]).flatten(1).norm(dim=1), ["first position has a step too"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 9: per length

def _length_gain(ranks, k, discount=lambda r: np.log2(r + 1.0), cut=lambda r, k: r <= k):
    r = np.asarray(ranks, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(cut(r, k), 1.0 / discount(r), 0.0)


def by_length(ranks, history, edges, k, gain=None, side="right"):
    gain = _length_gain(ranks, k) if gain is None else gain
    codes = np.searchsorted(np.asarray(edges), history, side=side) - 1
    if side == "left":
        codes = np.maximum(codes, 0)
    return [float(gain[codes == b].mean()) for b in range(len(edges))]


def by_length_library(ranks, history, edges, k):
    from ttt4rec_edu.analysis import length_buckets, metric_by_group
    groups = length_buckets(history, edges)
    return metric_by_group(ranks, groups, f"ndcg@{k}")[f"ndcg@{k}"].reindex(list(groups.categories))


LENGTH = {
    "correct": [by_length, by_length_library,
                lambda r, h, e, k: torch.tensor(by_length(r, h, e, k), dtype=torch.float32)],
    "wrong": [
        (lambda r, h, e, k: by_length(r, h, e, k, side="left"), ["half-open"]),
        (lambda r, h, e, k: by_length(r, h, e, k, gain=(np.asarray(r) <= k).astype(float)), ["HR@k"]),
        (lambda r, h, e, k: by_length(r, h, e, k, gain=_length_gain(r, k, discount=lambda x: np.log(x + 1))),
         ["base-2"]),
        (lambda r, h, e, k: [float(_length_gain(r, k).mean())] * len(e), ["mean over all samples"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 10

def logits_by_hand(batch, items, budget):
    size = batch * (items + 1) * 4
    return size, None if 3 * size <= budget else max(1024, budget // (12 * batch))


def logits_library(batch, items, budget):
    from ttt4rec_edu.losses import choose_chunk, logits_bytes
    return logits_bytes(batch, items), choose_chunk(batch, items, budget)


LOGITS = {
    "correct": [logits_by_hand, logits_library],
    "wrong": [
        (lambda b, n, budget: (b * n * 4, logits_by_hand(b, n, budget)[1]), ["num_items + 1"]),
        (lambda b, n, budget: (b * (n + 1) * 8, logits_by_hand(b, n, budget)[1]), ["float32"]),
        (lambda b, n, budget: (logits_by_hand(b, n, budget)[0],
                               None if b * (n + 1) * 4 <= budget else max(1024, budget // (12 * b))),
         ["about three of them"]),
        (lambda b, n, budget: (logits_by_hand(b, n, budget)[0],
                               None if 3 * b * (n + 1) * 4 <= budget else budget // (12 * b)), ["1024"]),
    ],
}

SEED_KEYS = ["dataset", "split", "model", "backbone", "inner"]
SEED_METRICS = ["hr@10", "hr@50", "ndcg@10", "ndcg@50"]


def seed_summary(runs, ddof=1, dropna=False, by=()):
    runs = runs.fillna({"backbone": "", "inner": ""}) if not dropna else runs
    grouped = runs.groupby(SEED_KEYS + list(by))[SEED_METRICS]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=ddof).add_suffix("_std"))
    return out.reset_index()


def seed_summary_library(runs):
    from ttt4rec_edu.experiments import summarize
    return summarize(runs)


SEEDS = {
    "correct": [seed_summary, seed_summary_library,
                lambda runs: runs.fillna({"backbone": "", "inner": ""}).groupby(SEED_KEYS)[SEED_METRICS]
                .agg(["mean", "std"])],
    "wrong": [
        (lambda runs: seed_summary(runs, ddof=0), ["population std"]),
        (lambda runs: seed_summary(runs, dropna=True), ["dropna=False"]),
        (lambda runs: seed_summary(runs, by=("seed",)), ["not by seed"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 11

def paired_gain(df, ddof=1, sign=1.0, positional=False):
    if positional:
        on = df[df["adapt"]]["ndcg@10"].to_numpy()
        off = df[~df["adapt"]]["ndcg@10"].to_numpy()
        d = on - off
    else:
        wide = df.pivot(index="seed", columns="adapt", values="ndcg@10")
        d = (wide[True] - wide[False]).to_numpy()
    return sign * float(np.mean(d)), float(np.std(d, ddof=ddof))


PAIRED = {
    "correct": [paired_gain,
                lambda df: paired_gain(df.astype({"ndcg@10": np.float64})),
                lambda df: (lambda d: (d.mean(), d.std()))(
                    df.groupby("seed").apply(lambda g: g.loc[g["adapt"], "ndcg@10"].iloc[0]
                                             - g.loc[~g["adapt"], "ndcg@10"].iloc[0]))],
    "wrong": [
        (lambda df: paired_gain(df, sign=-1.0), ["sign is reversed"]),
        (lambda df: paired_gain(df, ddof=0), ["ddof=0"]),
        (lambda df: paired_gain(df, positional=True), ["pair the rows by seed"]),
    ],
}


def arm_interval(df, quantile=None, sqrt_n=True, ddof=1, sign=1.0, dtype=np.float64):
    from ttt4rec_edu.analysis import student_t_quantile
    wide = df.astype({"ndcg@10": dtype}).pivot(index="seed", columns="variant", values="ndcg@10")
    d = sign * (wide["TTT4Rec"] - wide["TTT4Rec, fixed W0"])
    q = student_t_quantile(0.975, len(d) - 1) if quantile is None else quantile
    half = q * d.std(ddof=ddof) / (math.sqrt(len(d)) if sqrt_n else 1.0)
    return d.mean(), d.mean() - half, d.mean() + half


ARMS = {
    "correct": [arm_interval, lambda df: arm_interval(df, dtype=np.float32)],
    "wrong": [
        (lambda df: arm_interval(df, quantile=1.959964), ["Student"]),
        (lambda df: arm_interval(df, sqrt_n=False), ["sqrt"]),
        (lambda df: arm_interval(df, ddof=0), ["ddof"]),
        (lambda df: arm_interval(df, sign=-1.0), ["sign"]),
    ],
}



def crossover(df, control="TTT4Rec, fixed W0", quantile=None, rule="interval", largest=False, dtype=np.float64):
    """The smallest repeat rate whose paired 95% t interval of TTT4Rec − control lies above 0, by hand."""
    from ttt4rec_edu.analysis import student_t_quantile
    found = []
    for rho, part in df.astype({"ndcg@10": dtype}).groupby("repeat"):
        wide = part.pivot(index="seed", columns="arm", values="ndcg@10")
        d = wide["TTT4Rec"] - wide[control]
        q = student_t_quantile(0.975, len(d) - 1) if quantile is None else quantile
        low = d.mean() - q * d.std(ddof=1) / math.sqrt(len(d))
        if (low if rule == "interval" else d.mean()) > 0:
            found.append(float(rho))
    return (max(found) if largest else min(found)) if found else None


def crossover_library(df):
    from ttt4rec_edu.history_study import paired_differences
    table = paired_differences(df, [("TTT4Rec", "TTT4Rec, fixed W0")], by=["repeat"]).reset_index()
    above = table[table["low"] > 0]["repeat"]
    return float(above.min()) if len(above) else None


CROSSOVER = {
    "correct": [crossover, crossover_library, lambda df: crossover(df, dtype=np.float32)],
    "wrong": [
        (lambda df: crossover(df, control="TTT4Rec, η=0 at test"), ["fixed W0", "mismatch"]),
        (lambda df: crossover(df, rule="mean"), ["lower end"]),
        (lambda df: crossover(df, quantile=1.959964), ["Student"]),
        (lambda df: crossover(df, largest=True), ["smallest"]),
    ],
}

# ------------------------------------------------------------------------------------ capstone: TTT-Linear dual

def _capstone(**flags):
    return lambda *args: ttt_layer._ttt_linear_dual_variant(*args, **flags)


def _capstone32(*args):
    return ttt_layer._ttt_linear_dual_variant(*(a.float() if torch.is_tensor(a) else a for a in args))


CAPSTONE = {   # (written while that check was being added: the cases apply once it exists)
    "correct": [_capstone(), ttt_layer._ttt_linear_library, _capstone32],
    "wrong": [
        (_capstone(ln_grad=False), ["through the inner LayerNorm"]),
        (_capstone(carry=False), ["carry the state"]),
        (_capstone(use_tau=False), ["scale row i by τ_i"]),
        (_capstone(add_q=False), ["add the residual q_i"]),
    ],
}


# ------------------------------------------------------------------------------------ chapter 1.7: float32, ties

FLOAT32 = {   # this check takes the answer itself, a pair of timestamps, not a function
    "correct": [(1e9, 1e9 + 3), (2.0 ** 30, 2.0 ** 30 + 1), [np.int64(1_600_000_000), 1_600_000_010.0]],
    "wrong": [
        ((1e9, 1e9), ["the same time"]),
        ((1e6, 1e6 + 1), ["below 2**24"]),
        ((1e9, 1e9 + 200), ["move them closer"]),
        ((float("inf"), 1.0), ["inf and NaN"]),
    ],
}


def hr_ties(scores, targets, k, policy, self_tie=False, padding=False, geq=False, total=False):
    """HR@k with ties by hand, row by row; the keyword arguments reproduce the usual mistakes."""
    hits = []
    for row, target in zip(scores.tolist(), targets.tolist()):
        own = row[target]
        items = row if padding else row[1:]
        higher = sum(x > own for x in items)
        ties = sum(x == own for x in items) - (0 if self_tie else 1)
        if policy == "optimistic":
            hits.append(float(1 + higher + (ties if geq else 0) <= k))
        else:
            places = range(1 + higher, 2 + higher + ties)
            hits.append(sum(r <= k for r in places) / len(places))
    return sum(hits) if total else sum(hits) / len(hits)


def hr_ties_library(scores, targets, k, policy):
    from ttt4rec_edu.metrics import hit_rate, rank_ties_from_scores
    ranks, ties = rank_ties_from_scores(scores, targets)
    return hit_rate(ranks, k, ties, policy)


TIES = {
    "correct": [hr_ties, hr_ties_library, lambda s, t, k, p: hr_ties(s.float(), t, k, p)],
    "wrong": [
        (lambda *a: hr_ties(*a, self_tie=True), ["tied with itself"]),
        (lambda *a: hr_ties(*a, padding=True), ["column 0 is padding"]),
        (lambda *a: hr_ties(*a, geq=True), ["strictly higher"]),
        (lambda *a: hr_ties(*a, total=True), ["not the sum"]),
    ],
}


# ------------------------------------------------------------------------------------ the tests

CASES = {
    "check_split_counts": SPLIT, "check_ndcg": NDCG, "check_rope_rotation": ROPE,
    "check_linear_inner_grad": LINEAR_GRAD, "check_dual_form_linear": DUAL, "check_ln_l2_grad": LN_GRAD,
    "check_online_ttt_linear": ONLINE, "check_token_scale": TOKEN_SCALE, "check_meta_grad_linear": META,
    "check_ttt_block_params": BLOCK, "check_append_mask_token": APPEND, "check_delta_w_norms": DELTA_W,
    "check_metric_by_length": LENGTH, "check_logits_memory": LOGITS, "check_seed_summary": SEEDS,
    "check_paired_gain": PAIRED, "check_arm_interval": ARMS, "check_repeat_crossover": CROSSOVER,
}
for _name, _case in (("check_ttt_linear_dual", CAPSTONE), ("check_float32_collision", FLOAT32),
                     ("check_hr_with_ties", TIES)):
    if hasattr(exercises, _name):    # (written while those checks were being added)
        CASES[_name] = _case
CORRECT = [(name, i) for name, case in CASES.items() for i in range(len(case["correct"]))]
WRONG = [(name, i) for name, case in CASES.items() for i in range(len(case["wrong"]))]


@pytest.mark.parametrize("check, index", CORRECT, ids=[f"{c}-{i}" for c, i in CORRECT])
def test_correct_variant_is_accepted(check, index, capsys):
    assert_passes(getattr(exercises, check)(CASES[check]["correct"][index]), capsys)


@pytest.mark.parametrize("check, index", WRONG, ids=[f"{c}-{i}" for c, i in WRONG])
def test_wrong_answer_is_rejected_with_a_hint_naming_the_mistake(check, index, capsys):
    wrong, words = CASES[check]["wrong"][index]
    assert_fails(getattr(exercises, check)(wrong), capsys, *words)


def test_every_check_has_wrong_and_correct_cases():
    checks = sorted(name for name in dir(exercises) if name.startswith("check_")
                    and callable(getattr(exercises, name)))
    missing = [name for name in checks if name not in CASES]
    assert not missing, f"checks without wrong-answer tests in {__file__}: {missing}"
    for name, case in CASES.items():
        assert len(case["wrong"]) >= 3 and len(case["correct"]) >= 2, name
