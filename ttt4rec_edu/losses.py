"""Full-softmax cross-entropy over all items, exact and memory-bounded.

The paper trains every model with cross-entropy over *all* items. With the scores ``s = h Eᵀ`` of a batch
of sequence representations ``h ∈ R^{B×d}`` against the item table ``E ∈ R^{(N+1)×d}`` the loss is

    ℓ = (1/B) Σ_b [ log Σ_j exp(s_bj) − s_b,y_b ]        (column 0 = padding is excluded)

Gowalla has N = 1,280,969 items: at B = 2048 the ``B × N`` logits alone take ~10 GB in fp32, and autograd keeps
them (and the softmax) for the backward pass. :func:`chunked_cross_entropy` never holds more than a
``B × chunk`` block: the forward pass walks over item chunks keeping a running log-sum-exp, and the backward
pass *recomputes* each chunk's logits and uses

    ∂ℓ/∂h_b = (1/B) (Σ_j p_bj E_j − E_{y_b}),      ∂ℓ/∂E_j = (1/B) Σ_b (p_bj − [j = y_b]) h_b,

with ``p_bj = exp(s_bj − lse_b)``. The result equals ``F.cross_entropy(h @ E.T, y)`` (column 0 set to −inf)
up to floating-point summation order; ``tests/test_losses.py`` checks loss and both gradients.

The columns (:data:`LOSS_COLUMNS`). The sum above runs over the real items ``j = 1..N`` (``"items"``, this project's
default). The official TTT4Rec code (RecBole's ``CE`` loss) takes the softmax over all ``N + 1`` logits, the padding
item 0 included (``"all"``): padding is then one extra negative that is never a target, and the loss is a little
larger (the padding logit adds to the log-sum-exp). Both functions take ``include_padding=True`` for it. Measured
on Amazon Beauty (TTT4Rec, split 3:2:5, six epochs at batch 256, seeds 0-2, CPU), the choice does not change the
trained model: test NDCG@10 is 0.0336 ± 0.0006 either way, and per seed the metrics differ by at most 0.0003
(book chapter 1, section 1.7; runs in ``book/results/loss_ab``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


LOSS_COLUMNS = ("items", "all")  # softmax over items 1..N (default) or over all N + 1 columns (official code)


def check_loss_columns(columns: str) -> str:
    """``columns`` if it is one of :data:`LOSS_COLUMNS`, else ``ValueError`` naming the choices."""
    if columns not in LOSS_COLUMNS:
        raise ValueError(f"loss columns must be one of {', '.join(LOSS_COLUMNS)}, got {columns!r}")
    return columns


def full_cross_entropy(hidden: torch.Tensor, item_table: torch.Tensor, targets: torch.Tensor,
                       include_padding: bool = False) -> torch.Tensor:
    """Plain cross-entropy over all items: ``hidden (B, d)``, ``item_table (N+1, d)``, ``targets (B,)``.

    Materialises the ``(B, N+1)`` logits; column 0 (padding) never receives probability mass, unless
    ``include_padding`` (the official code's loss over all ``N + 1`` columns).
    """
    logits = hidden @ item_table.T
    if include_padding:
        return F.cross_entropy(logits, targets)
    padding_column = torch.zeros_like(logits[0], dtype=torch.bool)
    padding_column[0] = True
    return F.cross_entropy(logits.masked_fill(padding_column, float("-inf")), targets)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, item_table: torch.Tensor, targets: torch.Tensor, chunk: int,
                first: int = 1):
        batch = hidden.shape[0]
        num_rows = item_table.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # accumulate in at least fp32 (bf16 autocast)
        running_max = torch.full((batch,), float("-inf"), dtype=acc, device=hidden.device)
        running_sum = torch.zeros(batch, dtype=acc, device=hidden.device)
        for start in range(first, num_rows, chunk):  # first = 1: row 0 (padding) is not in the softmax
            logits = (hidden @ item_table[start:start + chunk].T).to(acc)
            chunk_max = logits.max(dim=1).values
            new_max = torch.maximum(running_max, chunk_max)
            running_sum = running_sum * torch.exp(running_max - new_max) + \
                torch.exp(logits - new_max[:, None]).sum(dim=1)
            running_max = new_max
        lse = running_max + torch.log(running_sum)
        target_logit = (hidden * item_table[targets]).sum(dim=1).to(acc)
        ctx.save_for_backward(hidden, item_table, targets, lse)
        ctx.chunk = chunk
        ctx.first = first
        return (lse - target_logit).mean().to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        hidden, item_table, targets, lse = ctx.saved_tensors
        chunk = ctx.chunk
        batch = hidden.shape[0]
        acc = lse.dtype
        scale = grad_output.to(acc) / batch
        h = hidden.to(acc)
        grad_hidden = torch.zeros(hidden.shape, dtype=acc, device=hidden.device)
        grad_table = torch.zeros(item_table.shape, dtype=acc, device=item_table.device)
        for start in range(ctx.first, item_table.shape[0], chunk):
            rows = item_table[start:start + chunk].to(acc)
            probs = torch.exp(h @ rows.T - lse[:, None]) * scale   # (B, chunk): softmax × upstream grad / B
            grad_hidden += probs @ rows
            grad_table[start:start + chunk] += probs.T @ h
        # the −s_{b, y_b} term
        grad_hidden -= scale * item_table[targets].to(acc)
        grad_table.index_add_(0, targets, -scale * h)
        return grad_hidden.to(hidden.dtype), grad_table.to(item_table.dtype), None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, item_table: torch.Tensor, targets: torch.Tensor,
                          chunk: int = 65536, include_padding: bool = False) -> torch.Tensor:
    """Exact full-softmax cross-entropy with memory ``O(B × chunk)`` instead of ``O(B × N)``.

    ``hidden (B, d)``, ``item_table (N+1, d)`` (row 0 = padding, excluded unless ``include_padding``),
    ``targets (B,)`` in ``1..N``. Returns the mean loss; gradients flow to ``hidden`` and ``item_table`` by
    recomputation.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if hidden.ndim != 2 or item_table.ndim != 2 or hidden.shape[1] != item_table.shape[1]:
        raise ValueError(f"expected hidden (B, d) and item_table (N+1, d), got {tuple(hidden.shape)} and "
                         f"{tuple(item_table.shape)}")
    return _ChunkedCrossEntropy.apply(hidden, item_table, targets, int(chunk), 0 if include_padding else 1)


def logits_bytes(batch_size: int, num_items: int, bytes_per_value: int = 4) -> int:
    """Memory of one ``(B, N+1)`` logits matrix — autograd keeps about three such blocks for CE."""
    return batch_size * (num_items + 1) * bytes_per_value


def choose_chunk(batch_size: int, num_items: int, budget_bytes: Optional[int] = None) -> Optional[int]:
    """``None`` when plain cross-entropy fits in ``budget_bytes`` (default 1 GiB), else an item chunk size
    whose ``(B, chunk)`` blocks stay within the budget."""
    budget = (1 << 30) if budget_bytes is None else int(budget_bytes)
    if 3 * logits_bytes(batch_size, num_items) <= budget:
        return None
    return max(1024, budget // (3 * 4 * max(batch_size, 1)))
