"""Full-ranking evaluation: the exact rank of the target among *all* items, HR@K and NDCG@K.

The protocol (RecBole 1.2 full sort, as in the paper):

- every real item ``1..num_items`` is a candidate; the padding id 0 never ranks;
- the user's own history is **not** masked (an item seen before may be recommended again);
- ``rank = 1 + (number of items whose score is strictly higher than the target's score)``, so an item
  tied with the target never pushes it down (the optimistic, deterministic tie rule);
- ``HR@K = mean(rank <= K)`` and ``NDCG@K = mean(1 / log2(rank + 1) if rank <= K else 0)`` — with a
  single relevant item the ideal DCG is 1, so no normalisation is left.

Memory. Gowalla has 1,280,969 items: one evaluation batch of 4096 sequences would need a
``4096 × 1.28 M`` float32 score matrix, 21 GB. We never build it. A model that exposes
``encode(item_seq, lengths) -> (B, d)`` and ``item_table() -> (num_items + 1, d)`` is scored
against ``item_chunk`` items at a time, and only a per-row counter of "items strictly above the target"
survives each chunk. Any other model is scored through ``score_all`` on as many rows at a time as fit a
memory budget. Both paths give exactly the ranks of the one-shot computation (tests/test_metrics.py).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import nn

from .utils import resolve_device

# Bytes of scratch memory the chunked scorers aim to stay under (per evaluation batch). 512 MiB keeps
# 4096 Gowalla sequences far below the 2 GiB the design allows, with room for the model itself.
DEFAULT_MEMORY_BUDGET = 512 * 2**20

TARGET_BLOCK_ROWS = 256  # rows per block when computing the targets' own scores in chunked_ranks


def _check_scores_targets(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, num_items + 1), got shape {tuple(scores.shape)}")
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"targets must be (batch,) = ({scores.shape[0]},), got shape {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(
            f"targets must be real item ids 1..{scores.shape[1] - 1}, "
            f"got range {int(targets.min())}..{int(targets.max())}"
        )


def _check_target_scores(target_scores: torch.Tensor) -> None:
    # A NaN target compares False with everything and would silently get rank 1: refuse it instead.
    if torch.isnan(target_scores).any():
        raise ValueError("the model produced a NaN score for a target item; ranks would be meaningless")


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target within its row of scores.

    Args:
        scores: ``(B, num_items + 1)`` — column ``j`` is the score of item id ``j``; column 0 (padding) is
            ignored whatever its value.
        targets: ``(B,)`` target item ids in ``1..num_items``.

    Returns:
        ``LongTensor (B,)``: ``1 + #{j >= 1 : scores[b, j] > scores[b, targets[b]]}``.
    """
    _check_scores_targets(scores, targets)
    targets = targets.to(scores.device)
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    _check_target_scores(target_scores)
    higher = _count_strictly_higher(scores[:, 1:], target_scores)  # padding column 0 left out
    return (higher + 1).to(torch.long)


def _count_strictly_higher(scores: torch.Tensor, threshold: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """``#{j : scores[b, j] > threshold[b]}`` per row, as ``LongTensor (B,)``.

    Computed as ``(scores - threshold) > 0`` written back as 1.0 / 0.0 into one float buffer: for IEEE floats
    ``a - b > 0`` exactly when ``a > b`` (also for ±inf, where ``inf - inf`` is NaN and counts as not higher),
    and summing ones in float32 is exact below 2**24 columns. This needs one score-sized buffer (none with
    ``in_place``) instead of a bool mask plus the integer copy that ``mask.sum()`` would make.
    """
    if scores.shape[1] >= 2**24:
        raise ValueError("score blocks must have fewer than 2**24 columns; score in item chunks")
    diff = scores.sub_(threshold) if in_place else scores - threshold
    return diff.gt_(0).sum(dim=1).to(torch.long)


def default_item_chunk(batch_size: int, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                       bytes_per_score: int = 4) -> int:
    """Largest item chunk whose ``(batch, chunk)`` score block fits ``memory_budget`` bytes (< 2**24)."""
    per_item = max(int(batch_size), 1) * bytes_per_score
    return int(min(max(1, int(memory_budget) // per_item), 2**24 - 1))


def chunked_ranks(query: torch.Tensor, item_table: torch.Tensor, targets: torch.Tensor,
                  item_chunk: Optional[int] = None,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """Exact ranks of ``targets`` under the scores ``query @ item_table.T``, without the full score matrix.

    Args:
        query: ``(B, d)`` sequence representations (``model.encode``).
        item_table: ``(num_items + 1, d)`` item representations (``model.item_table()``); row 0 is padding.
        targets: ``(B,)`` target item ids in ``1..num_items``.
        item_chunk: items scored at once; ``None`` picks the largest that fits ``memory_budget``.

    Returns:
        ``LongTensor (B,)``, equal to ``ranks_from_scores(query @ item_table.T, targets)``.

    Peak scratch memory is about ``B * item_chunk * 4`` bytes (one float32 score block, reused in place).
    The target's own score comes from the same matrix-product routine as everyone else's (a product with the
    gathered target rows), and the target's own column is never counted, so rounding can never make an item
    "beat itself".
    """
    if query.dim() != 2 or item_table.dim() != 2 or query.shape[1] != item_table.shape[1]:
        raise ValueError(
            f"query (B, d) and item_table (N + 1, d) must share d, got {tuple(query.shape)} and "
            f"{tuple(item_table.shape)}"
        )
    num_rows = item_table.shape[0]
    if targets.dim() != 1 or targets.shape[0] != query.shape[0]:
        raise ValueError(f"targets must be (batch,) = ({query.shape[0]},), got shape {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) >= num_rows):
        raise ValueError(f"targets must be real item ids 1..{num_rows - 1}")
    batch = query.shape[0]
    if item_chunk is None:
        item_chunk = default_item_chunk(batch, memory_budget, query.element_size())
    if item_chunk < 1:
        raise ValueError(f"item_chunk must be >= 1, got {item_chunk}")
    targets = targets.to(query.device)
    item_table = item_table.to(query.device, query.dtype)

    # Target scores from the same matrix-product routine as the chunks: (b, d) @ (d, b), then the diagonal.
    # Small row blocks keep this cost (B · b · d) negligible next to the B · N · d of the scoring itself.
    target_scores = torch.empty(batch, dtype=query.dtype, device=query.device)
    rows_at_once = max(1, min(batch, TARGET_BLOCK_ROWS, math.isqrt(max(int(memory_budget) // 4, 1))))
    for start in range(0, batch, rows_at_once):
        stop = min(start + rows_at_once, batch)
        block = query[start:stop] @ item_table[targets[start:stop]].T  # (b, b)
        target_scores[start:stop] = block.diagonal()
    _check_target_scores(target_scores)

    higher = torch.zeros(batch, dtype=torch.long, device=query.device)
    threshold = target_scores[:, None]
    for start in range(1, num_rows, item_chunk):  # row 0 is padding: never a candidate
        stop = min(start + item_chunk, num_rows)
        scores = query @ item_table[start:stop].T  # (B, chunk)
        # Leave the target's own column out: it is never strictly above itself by definition.
        # (gather + mask instead of indexing, so a GPU never has to wait for a host-side test)
        own = (targets >= start) & (targets < stop)
        local = (targets - start).clamp(0, stop - start - 1)
        counted_itself = (scores.gather(1, local[:, None])[:, 0] > target_scores) & own
        higher += _count_strictly_higher(scores, threshold, in_place=True) - counted_itself.to(torch.long)
        del scores
    return higher + 1


def hit_rate(ranks: torch.Tensor, k: int) -> float:
    """``HR@k``: the share of targets ranked within the top ``k`` (``ranks`` are 1-based)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ranks.numel() == 0:
        raise ValueError("hit_rate of an empty set of ranks is undefined")
    return float((ranks <= k).double().mean())


def ndcg(ranks: torch.Tensor, k: int) -> float:
    """``NDCG@k`` with one relevant item: mean of ``1 / log2(rank + 1)`` over targets with ``rank <= k``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ranks.numel() == 0:
        raise ValueError("ndcg of an empty set of ranks is undefined")
    ranks = ranks.double()
    gains = torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))
    return float(gains.mean())


def metrics_from_ranks(ranks: torch.Tensor, ks: Iterable[int] = (10, 50)) -> Dict[str, float]:
    """``{"hr@10": .., "hr@50": .., "ndcg@10": .., "ndcg@50": ..}`` from 1-based ranks."""
    ks = list(ks)
    out: Dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(ranks, k)
    for k in ks:
        out[f"ndcg@{k}"] = ndcg(ranks, k)
    return out


def has_embedding_hooks(model: nn.Module) -> bool:
    """True when ``model`` scores as ``encode(item_seq, lengths) @ item_table().T``."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "item_table", None))


def _score_rows_budget(num_columns: int, memory_budget: int) -> int:
    # score_all's block plus the one comparison buffer of ranks_from_scores, 4 bytes each
    return max(1, int(memory_budget) // (max(num_columns, 1) * 8))


@torch.no_grad()
def batch_ranks(model: nn.Module, item_seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                item_chunk: Optional[int] = None, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """Ranks of one batch's targets under ``model`` (inputs already on the model's device).

    Uses ``encode`` + ``item_table`` in item chunks when the model has them, else ``score_all`` on row chunks
    sized so that each ``(rows, num_items + 1)`` block stays within ``memory_budget`` bytes.
    """
    if has_embedding_hooks(model):
        query = model.encode(item_seq, lengths).float()
        table = model.item_table().float()
        return chunked_ranks(query, table, targets, item_chunk=item_chunk, memory_budget=memory_budget)
    ranks = []
    rows = None
    start = 0
    while start < item_seq.shape[0]:
        if rows is None:  # score one row first to learn the width, then size the blocks
            stop = start + 1
        else:
            stop = min(start + rows, item_seq.shape[0])
        scores = model.score_all(item_seq[start:stop], lengths[start:stop]).float()
        ranks.append(ranks_from_scores(scores, targets[start:stop]))
        if rows is None:
            rows = _score_rows_budget(scores.shape[1], memory_budget)
        del scores
        start = stop
    return torch.cat(ranks)


@torch.no_grad()
def compute_ranks(model: nn.Module, sample_set, batch_size: int = 4096, device=None,
                  item_chunk: Optional[int] = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                  progress: bool = False, desc: str = "eval") -> torch.Tensor:
    """``LongTensor (N,)``: the rank of every sample's target in ``sample_set`` (a :class:`SampleSet`).

    The model is put in ``eval()`` mode for the call (and restored afterwards); samples are scored
    ``batch_size`` at a time on ``device`` (default: where the model's parameters/buffers live, else
    ``resolve_device("auto")``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(sample_set)
    if n == 0:
        raise ValueError("cannot evaluate on an empty sample set")
    device = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    out = torch.empty(n, dtype=torch.long)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="seq", leave=False)
    try:
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            item_seq, lengths, targets = sample_set.batch(index)
            ranks = batch_ranks(model, item_seq.to(device), lengths.to(device), targets.to(device),
                                item_chunk=item_chunk, memory_budget=memory_budget)
            out[start:start + len(index)] = ranks.cpu()
            if bar is not None:
                bar.update(len(index))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return out


def evaluate(model: nn.Module, sample_set, ks: Sequence[int] = (10, 50), batch_size: int = 4096,
             device=None, item_chunk: Optional[int] = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
             progress: bool = False, desc: str = "eval") -> Dict[str, float]:
    """Full-ranking HR@K and NDCG@K of ``model`` on ``sample_set``.

    Returns ``{"hr@10": .., "hr@50": .., "ndcg@10": .., "ndcg@50": ..}`` (one key pair per ``k`` in ``ks``).
    """
    ranks = compute_ranks(model, sample_set, batch_size=batch_size, device=device, item_chunk=item_chunk,
                          memory_budget=memory_budget, progress=progress, desc=desc)
    return metrics_from_ranks(ranks, ks)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return resolve_device("auto")
