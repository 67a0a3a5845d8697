"""Data-parallel training past one machine: ``torchrun --nproc_per_node N -m ttt4rec_edu train ...``.

``torchrun`` starts N copies of the command line and tells each who it is through environment variables:
``RANK`` (0..N-1 over all machines), ``WORLD_SIZE`` (N) and ``LOCAL_RANK`` (the GPU index on this machine).
:func:`init_from_env` reads them, joins the process group (``nccl`` between GPUs, ``gloo`` on CPU) and returns a
:class:`DistContext`; the trainer (``ttt4rec_edu.train``) then needs exactly four things from it:

1. **the same global batch, split** — every rank seeds its shuffling generator alike, so all draw the same
   permutation; :meth:`DistContext.shard_batch` gives rank ``r`` the ``r``-th contiguous slice of each batch
   (``torch.tensor_split``: sizes differ by at most one) and its *weight* ``n_r / n`` in the batch mean;
2. **summed gradients** — each rank back-propagates ``weight · mean-loss-of-its-slice``; the sum over ranks of
   those gradients is the gradient of the whole batch's mean loss, exactly what one process would compute.
   :meth:`DistContext.sum_gradients` flattens all gradients (and the weighted loss) into one buffer and does a
   single ``all_reduce(SUM)`` (plain all-reduce instead of ``DistributedDataParallel``: the trainer calls the
   model's ``encode``/``calculate_loss`` hooks rather than ``forward``, which DDP's bucketing relies on, and an
   unused parameter needs no special flag here);
3. **sharded evaluation** — the trainer's one evaluation call site (``train._evaluate_split``) ranks a
   contiguous shard of the samples per rank; :meth:`DistContext.gather_ranks` all-gathers the integer ranks
   (and the tie counts) in sample order, and HR/NDCG are computed once from all of them under the run's tie
   policy (the same numbers on every rank, so every rank takes the same early-stopping decision);
4. **one writer** — only rank 0 (:attr:`DistContext.is_main`) prints, writes checkpoints and ``metrics.json``.
   A resumed run reads the checkpoint on every rank (the folder must be visible to all ranks).

How close is N processes to one? The batch, the permutation, the initial weights (broadcast from rank 0) and
the optimizer are the same; only the order of floating-point additions differs (each rank sums its slice's
per-sample gradients, then the all-reduce adds the N partial sums). That changes weights by a few ulps per step
(relative ~1e-7 in float32), so losses agree to ~1e-6 relative and the integer ranks behind HR/NDCG agree
unless two items' scores are within that rounding of each other. ``tests/test_distributed.py`` checks this
against a single-process run. Models with randomness inside the loss (dropout, BERT4Rec's masking) draw
different random numbers in N processes than in one, so they match only in distribution.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as torch_dist
from torch import nn

from .utils import resolve_device

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def torchrun_env() -> Optional[Tuple[int, int, int]]:
    """``(rank, world_size, local_rank)`` when started by ``torchrun`` (all three variables set), else ``None``."""
    if not all(os.environ.get(name) for name in ENV_VARS):
        return None
    try:
        rank, world, local = (int(os.environ[name]) for name in ENV_VARS)
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                         + ", ".join(f"{n}={os.environ[n]!r}" for n in ENV_VARS)) from None
    if not (0 <= rank < world and local >= 0):
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


@dataclass
class DistContext:
    """This process's place in a data-parallel run (see the module docstring)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> Dict[str, object]:
        """What goes into ``metrics.json["distributed"]``."""
        return {"world_size": self.world_size, "backend": self.backend, "gradient_sync": "all_reduce(sum)"}

    # ------------------------------------------------------------------------------------------ training

    def shard_batch(self, index: torch.Tensor) -> Tuple[torch.Tensor, float]:
        """This rank's contiguous slice of the global batch ``index (B,)`` and its weight ``n_r / B``.

        A rank left with nothing (a last batch smaller than the world) still runs forward/backward on the
        batch's first sample with weight 0, so every rank joins the same collective calls.
        """
        mine = torch.tensor_split(index, self.world_size)[self.rank]
        if len(mine) == 0:
            return index[:1], 0.0
        return mine, len(mine) / len(index)

    def sum_gradients(self, model: nn.Module, extra: torch.Tensor) -> float:
        """All-reduce (sum) every parameter's gradient and the scalar ``extra`` in one flat buffer.

        Gradients a rank did not produce count as zeros. Returns the summed ``extra`` (the global mean loss when
        each rank passes ``weight · its loss``), identical on every rank.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        flat = torch.cat(pieces + [extra.reshape(1).float().to(self.device)])
        torch_dist.all_reduce(flat, op=torch_dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
        return float(flat[offset])

    def broadcast_model(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                torch_dist.broadcast(tensor.data, src=0)

    # ---------------------------------------------------------------------------------------- evaluation

    def gather_ranks(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """All-gather each rank's ``LongTensor`` of ranks (contiguous shards, in rank order) into ``(total,)``."""
        sizes = [len(s) for s in torch.tensor_split(torch.arange(total), self.world_size)]
        width = max(sizes)
        padded = torch.zeros(width, dtype=torch.long, device=self.device)
        padded[:len(local)] = local.to(self.device)
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch_dist.all_gather(gathered, padded)  # all_gather needs equal shapes: pad, then trim
        return torch.cat([g[:n] for g, n in zip(gathered, sizes)]).cpu()


def init_from_env(device: str = "auto") -> Optional[DistContext]:
    """Join the process group when started by ``torchrun``; ``None`` (and nothing done) otherwise.

    ``device``: ``auto`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``cuda`` also means
    ``cuda:LOCAL_RANK``; ``cpu`` forces CPU (``gloo``). The backend is ``nccl`` on CUDA, ``gloo`` on CPU.
    """
    env = torchrun_env()
    if env is None:
        return None
    rank, world, local = env
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if str(device) in ("auto", "cuda"):
            resolved = torch.device("cuda", local)
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=resolved, backend=backend)


def shutdown(context: Optional[DistContext], barrier: bool = True) -> None:
    """Leave the process group — after a barrier, so no rank exits while rank 0 still writes; without one
    after an error (a rank that failed alone would wait for the others forever)."""
    if context is not None and torch_dist.is_initialized():
        if barrier:
            torch_dist.barrier()
        torch_dist.destroy_process_group()


__all__ = ["DistContext", "ENV_VARS", "init_from_env", "shutdown", "torchrun_env"]
