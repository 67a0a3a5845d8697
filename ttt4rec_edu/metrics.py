"""Full-ranking evaluation: the exact rank of the target among *all* items, HR@K and NDCG@K.

The protocol (RecBole 1.2 full sort, as in the paper):

- every real item ``1..num_items`` is a candidate; the padding id 0 never ranks;
- the user's own history is **not** masked (an item seen before may be recommended again);
- ``rank = 1 + (number of items whose score is strictly higher than the target's score)`` is the *best*
  rank the target can get; ``ties`` = the number of *other* items whose score equals the target's;
- ``HR@K = mean(rank <= K)`` and ``NDCG@K = mean(1 / log2(rank + 1) if rank <= K else 0)`` — with a
  single relevant item the ideal DCG is 1, so no normalisation is left.

Tied scores (:data:`TIE_POLICIES`). A target tied with ``t`` other items could sit anywhere from
``rank`` to ``rank + t``. Continuous scores of a trained network almost never tie; integer scores do (the
popularity ranker's counts, a saturated or constant model), and there the policy decides the numbers:

- ``"optimistic"``: the target goes first among its ties (rank ``rank``) — the library's rule before the
  policies existed; a constant scorer gets HR@10 = 1;
- ``"pessimistic"``: the target goes last (rank ``rank + t``);
- ``"average"`` (the default): the *expected* HR@K and NDCG@K when the ties are broken uniformly at random,
  i.e. each of the ``t + 1`` positions with probability ``1 / (t + 1)`` — deterministic, and between the
  other two.

RecBole 1.2 (the paper's evaluator) takes ``torch.topk(scores, max(K))`` of the scores with the padding
column at ``-inf`` and counts a hit when the target's column is among them (``recbole/evaluator/
collector.py``). Which of several tied items ``torch.topk`` returns is not specified: torch's documentation
says the indices of tied elements are not guaranteed to be stable and may vary between invocations. On the CPU the
order is whatever ``std::partial_sort`` / ``std::nth_element`` leave (repeatable for one input and build here, but
no rule such as "lower id first": the top 10 of 1,000 equal scores are columns 8, 9, 4, 7, ... with torch 2.13 on a
CPU); CUDA's radix selection is a different algorithm again (not checked here: this project's machines have no GPU).
So RecBole's tie behaviour cannot be stated as a policy; :func:`topk_ranks` reproduces it by running the same
``torch.topk`` on the same columns (``make fidelity`` compares it with RecBole's own collector on the CPU). For
scores without ties all of these coincide; with ties, ``"average"`` is what RecBole gives in expectation when the
target's place among its ties has nothing to do with it being the target, which is why it is the default.

Memory. Gowalla has 1,280,969 items: one evaluation batch of 4096 sequences would need a ``4096 × 1.28 M`` float32
score matrix, 21 GB. We never build it. A model that exposes ``encode(item_seq, lengths) -> (B, d)`` and
``item_table() -> (num_items + 1, d)`` is scored against ``item_chunk`` items at a time, and only a per-row counter
of "items strictly above the target" survives each chunk (with ``with_ties``, also a counter of items scoring
exactly like the target; two items with identical vectors may still score a rounding apart when they fall in
different chunks, so exact ties are only guaranteed for the full-row ``score_all`` path and for exactly
representable scores). Any other model is scored through ``score_all`` on as many rows at a time as fit a memory
budget. Both paths give exactly the ranks of the one-shot computation (tests/test_metrics.py).
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
# On a CPU, evaluation works on cache-sized pieces: the encoder on blocks of CPU_ENCODE_ROWS sequences, the scores
# in (batch, item_chunk) blocks of at most CPU_SCORE_BLOCK_BYTES, one buffer reused. A 4096-row TTT4Rec forward
# or a (4096, 12101) score block spends most of its time on fresh memory; the pieces made the ranking about 3x and
# the encoder about 2.5x faster on Amazon Beauty (benchmarks/bench_speed.py prints the evaluation profile).
CPU_ENCODE_ROWS = 256
CPU_SCORE_BLOCK_BYTES = 8 * 2**20

TIE_POLICIES = ("optimistic", "pessimistic", "average")
DEFAULT_TIES = "average"


def check_tie_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`TIE_POLICIES`, else ``ValueError`` naming the choices."""
    if policy not in TIE_POLICIES:
        raise ValueError(f"ties must be one of {', '.join(TIE_POLICIES)}, got {policy!r}")
    return policy


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
    return rank_ties_from_scores(scores, targets, with_ties=False)


def rank_ties_from_scores(scores: torch.Tensor, targets: torch.Tensor, with_ties: bool = True):
    """``(ranks, ties)``: :func:`ranks_from_scores` and, per row, how many *other* real items score exactly
    like the target (``LongTensor (B,)`` each). ``with_ties=False`` returns the ranks alone."""
    _check_scores_targets(scores, targets)
    targets = targets.to(scores.device)
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    _check_target_scores(target_scores)
    if not with_ties:
        higher = _count_strictly_higher(scores[:, 1:], target_scores)  # padding column 0 left out
        return (higher + 1).to(torch.long)
    higher, equal = _count_higher_equal(scores[:, 1:], target_scores)
    return (higher + 1).to(torch.long), equal - 1  # the target equals itself


def _count_higher_equal(scores: torch.Tensor, threshold: torch.Tensor, in_place: bool = False):
    """``(#{j : scores[b, j] > threshold[b]}, #{j : scores[b, j] == threshold[b]})`` per row (``LongTensor``).

    The equal count compares the scores directly (so ``-inf`` ties with ``-inf``), before
    :func:`_count_strictly_higher` turns the block into its difference buffer."""
    equal = (scores == threshold).sum(dim=1).to(torch.long)
    return _count_strictly_higher(scores, threshold, in_place=in_place), equal


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
                  memory_budget: int = DEFAULT_MEMORY_BUDGET, with_ties: bool = False):
    """Exact ranks of ``targets`` under the scores ``query @ item_table.T``, without the full score matrix.

    Args:
        query: ``(B, d)`` sequence representations (``model.encode``).
        item_table: ``(num_items + 1, d)`` item representations (``model.item_table()``); row 0 is padding.
        targets: ``(B,)`` target item ids in ``1..num_items``.
        item_chunk: items scored at once; ``None`` picks the largest that fits ``memory_budget``.

    Returns:
        ``LongTensor (B,)``, equal to ``ranks_from_scores(query @ item_table.T, targets)``; with
        ``with_ties`` the pair ``(ranks, ties)`` of :func:`rank_ties_from_scores`.

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
        if query.device.type == "cpu":
            item_chunk = min(item_chunk, default_item_chunk(batch, CPU_SCORE_BLOCK_BYTES, query.element_size()))
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
    ties = torch.zeros(batch, dtype=torch.long, device=query.device)
    threshold = target_scores[:, None]
    buffer = torch.empty(batch * min(item_chunk, num_rows - 1), dtype=query.dtype, device=query.device)
    for start in range(1, num_rows, item_chunk):  # row 0 is padding: never a candidate
        stop = min(start + item_chunk, num_rows)
        # (B, chunk), written into the one buffer (a fresh block per chunk costs more than the product on a CPU)
        scores = torch.mm(query, item_table[start:stop].T, out=buffer[:batch * (stop - start)].view(batch, -1))
        # Leave the target's own column out: it is never strictly above (or tied with) itself by definition.
        # (gather + mask instead of indexing, so a GPU never has to wait for a host-side test)
        own = (targets >= start) & (targets < stop)
        local = (targets - start).clamp(0, stop - start - 1)
        own_score = scores.gather(1, local[:, None])[:, 0]
        counted_itself = (own_score > target_scores) & own
        if with_ties:
            tied_itself = (own_score == target_scores) & own
            chunk_higher, chunk_equal = _count_higher_equal(scores, threshold, in_place=True)
            ties += chunk_equal - tied_itself.to(torch.long)
        else:
            chunk_higher = _count_strictly_higher(scores, threshold, in_place=True)
        higher += chunk_higher - counted_itself.to(torch.long)
        del scores
    return (higher + 1, ties) if with_ties else higher + 1


def _check_k_ranks(ranks: torch.Tensor, k: int, what: str) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        raise ValueError(f"{what} of an empty set of ranks is undefined")
    if not bool((ranks >= 1).all()):  # also catches NaN
        raise ValueError(f"{what}: ranks are 1-based (>= 1), got a minimum of {ranks.min().item()}")


def per_sample_hits_gains(ranks: torch.Tensor, k: int, ties: Optional[torch.Tensor] = None,
                          policy: str = DEFAULT_TIES):
    """Per sample ``(hit, gain)`` at cut-off ``k`` as float64 tensors: HR@k and NDCG@k are their means.

    ``ranks``: best ranks (``1 + #higher``); ``ties``: other items tied with the target (``None``: no ties).
    ``"average"`` gives the expectation over a uniformly random order of the ``ties + 1`` tied items:
    ``hit = #{r in [rank, rank + ties] : r <= k} / (ties + 1)`` and ``gain`` the mean of ``1/log2(r + 1)``
    over the same positions.
    """
    check_tie_policy(policy)
    lo = torch.as_tensor(ranks).double()
    t = torch.zeros_like(lo) if ties is None else torch.as_tensor(ties).double().to(lo.device)
    r = lo if policy == "optimistic" else lo + t
    hit = (r <= k).double()
    gain = torch.where(r <= k, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r))
    if policy != "average" or not bool((t > 0).any()):
        return hit, gain  # without ties "average" is bit-for-bit the other two
    # cumulative gains G[m] = sum_{r=1..m} 1/log2(r+1), m = 0..k; positions past k add nothing
    cumulative = torch.zeros(k + 1, dtype=torch.float64, device=lo.device)
    cumulative[1:] = torch.cumsum(1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64,
                                                                 device=lo.device)), 0)
    first = (lo - 1).clamp(0, k).long()           # positions before the tie block
    last = (lo + t).clamp(0, k).long()            # last position of the block that is within k
    inside = (last - first).double()
    tied = t > 0
    return (torch.where(tied, inside / (t + 1), hit),
            torch.where(tied, (cumulative[last] - cumulative[first]) / (t + 1), gain))


def hit_rate(ranks: torch.Tensor, k: int, ties: Optional[torch.Tensor] = None,
             policy: str = DEFAULT_TIES) -> float:
    """``HR@k``: the share of targets ranked within the top ``k`` (``ranks`` are 1-based).

    With ``ties`` (other items tied with each target) the tie ``policy`` decides (module docstring)."""
    _check_k_ranks(ranks, k, "hit_rate")
    return float(per_sample_hits_gains(ranks, k, ties, policy)[0].mean())


def ndcg(ranks: torch.Tensor, k: int, ties: Optional[torch.Tensor] = None, policy: str = DEFAULT_TIES) -> float:
    """``NDCG@k`` with one relevant item: mean of ``1 / log2(rank + 1)`` over targets with ``rank <= k``.

    With ``ties`` (other items tied with each target) the tie ``policy`` decides (module docstring)."""
    _check_k_ranks(ranks, k, "ndcg")
    return float(per_sample_hits_gains(ranks, k, ties, policy)[1].mean())


def metrics_from_ranks(ranks: torch.Tensor, ks: Iterable[int] = (10, 50), ties: Optional[torch.Tensor] = None,
                       policy: str = DEFAULT_TIES) -> Dict[str, float]:
    """``{"hr@10": .., "hr@50": .., "ndcg@10": .., "ndcg@50": ..}`` from 1-based ranks.

    ``ties`` (``None``: none) are the other items tied with each target; ``policy`` one of
    :data:`TIE_POLICIES`. Without ties every policy gives the same numbers."""
    ks = list(ks)
    out: Dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(ranks, k, ties, policy)
    for k in ks:
        out[f"ndcg@{k}"] = ndcg(ranks, k, ties, policy)
    return out


def topk_ranks(scores: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """RecBole 1.2's evaluator, exactly: the target's position in ``torch.topk(scores, k)`` (1-based), or
    ``k + 1`` when it is not among them.

    ``scores (B, num_items + 1)``; column 0 (padding) is set to ``-inf`` first, as RecBole's sequential
    models do. HR@k' and NDCG@k' for every ``k' <= k`` computed from these ranks equal RecBole's on the same
    scores, device and torch build — tied items are ordered however ``torch.topk`` leaves them there.
    """
    _check_scores_targets(scores, targets)
    if not 1 <= k < scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1] - 1}, got {k}")
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    _, index = torch.topk(scores, k, dim=-1)
    found = index == targets.to(index.device)[:, None]
    position = found.to(torch.long).argmax(dim=1) + 1
    return torch.where(found.any(dim=1), position, torch.full_like(position, k + 1))


def has_embedding_hooks(model: nn.Module) -> bool:
    """True when ``model`` scores as ``encode(item_seq, lengths) @ item_table().T``."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "item_table", None))


def _score_rows_budget(num_columns: int, memory_budget: int) -> int:
    # score_all's block plus the one comparison buffer of ranks_from_scores, 4 bytes each
    return max(1, int(memory_budget) // (max(num_columns, 1) * 8))


@torch.no_grad()
def batch_ranks(model: nn.Module, item_seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                item_chunk: Optional[int] = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                with_ties: bool = False):
    """Ranks of one batch's targets under ``model`` (inputs already on the model's device).

    Uses ``encode`` + ``item_table`` in item chunks when the model has them, else ``score_all`` on row chunks
    sized so that each ``(rows, num_items + 1)`` block stays within ``memory_budget`` bytes. ``with_ties``:
    the pair ``(ranks, ties)`` (see :func:`rank_ties_from_scores`).
    """
    if has_embedding_hooks(model):
        rows = CPU_ENCODE_ROWS if item_seq.device.type == "cpu" else max(item_seq.shape[0], 1)
        query = torch.cat([model.encode(item_seq[i:i + rows], lengths[i:i + rows]).float()
                           for i in range(0, item_seq.shape[0], rows)]) if item_seq.shape[0] else \
            model.encode(item_seq, lengths).float()
        table = model.item_table().float()
        return chunked_ranks(query, table, targets, item_chunk=item_chunk, memory_budget=memory_budget,
                             with_ties=with_ties)
    ranks, ties = [], []
    rows = None
    start = 0
    while start < item_seq.shape[0]:
        if rows is None:  # score one row first to learn the width, then size the blocks
            stop = start + 1
        else:
            stop = min(start + rows, item_seq.shape[0])
        scores = model.score_all(item_seq[start:stop], lengths[start:stop]).float()
        if with_ties:
            block_ranks, block_ties = rank_ties_from_scores(scores, targets[start:stop])
            ties.append(block_ties)
        else:
            block_ranks = ranks_from_scores(scores, targets[start:stop])
        ranks.append(block_ranks)
        if rows is None:
            rows = _score_rows_budget(scores.shape[1], memory_budget)
        del scores
        start = stop
    return (torch.cat(ranks), torch.cat(ties)) if with_ties else torch.cat(ranks)


@torch.no_grad()
def compute_ranks(model: nn.Module, sample_set, batch_size: int = 4096, device=None,
                  item_chunk: Optional[int] = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                  progress: bool = False, desc: str = "eval", with_ties: bool = False):
    """``LongTensor (N,)``: the rank of every sample's target in ``sample_set`` (a :class:`SampleSet`);
    with ``with_ties`` the pair ``(ranks, ties)`` (other items tied with each target).

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
    out_ties = torch.empty(n, dtype=torch.long) if with_ties else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="seq", leave=False)
    try:
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            item_seq, lengths, targets = sample_set.batch(index)
            ranks = batch_ranks(model, item_seq.to(device), lengths.to(device), targets.to(device),
                                item_chunk=item_chunk, memory_budget=memory_budget, with_ties=with_ties)
            if with_ties:
                ranks, ties = ranks
                out_ties[start:start + len(index)] = ties.cpu()
            out[start:start + len(index)] = ranks.cpu()
            if bar is not None:
                bar.update(len(index))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return (out, out_ties) if with_ties else out


def evaluate(model: nn.Module, sample_set, ks: Sequence[int] = (10, 50), batch_size: int = 4096,
             device=None, item_chunk: Optional[int] = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
             progress: bool = False, desc: str = "eval", ties: str = DEFAULT_TIES) -> Dict[str, float]:
    """Full-ranking HR@K and NDCG@K of ``model`` on ``sample_set``, tied scores handled by the ``ties``
    policy (:data:`TIE_POLICIES`).

    Returns ``{"hr@10": .., "hr@50": .., "ndcg@10": .., "ndcg@50": ..}`` (one key pair per ``k`` in ``ks``).
    """
    check_tie_policy(ties)
    ranks, tied = compute_ranks(model, sample_set, batch_size=batch_size, device=device, item_chunk=item_chunk,
                                memory_budget=memory_budget, progress=progress, desc=desc, with_ties=True)
    return metrics_from_ranks(ranks, ks, tied, ties)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return resolve_device("auto")
