"""What a checkpoint holds besides the weights: every random generator's state, and the atomic save.

A resumed run must end with exactly the metrics of an uninterrupted one, so a checkpoint keeps the state of every
random number generator the run draws from (Python's, NumPy's, torch's on the CPU and on every CUDA device, and
the trainer's shuffling ``torch.Generator``) beside the model's weights (copied to the CPU), the optimizer, the
trainer's counters and the fingerprint that says which run it belongs to. The trainer (``ttt4rec_edu.train``)
decides what goes in and checks, when resuming, that the fingerprint matches.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from .utils import atomic_torch_save

CHECKPOINT_FORMAT = 1


def rng_state(generator: torch.Generator) -> Dict[str, Any]:
    """The state of every generator a run draws from (``generator``: the trainer's shuffling one)."""
    np_state = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
        "shuffle": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved (the CUDA generators when this machine has as many devices)."""
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(obj):
    return [_to_lists(x) for x in obj] if isinstance(obj, (list, tuple)) else obj


def _to_tuples(obj):
    return tuple(_to_tuples(x) for x in obj) if isinstance(obj, (list, tuple)) else obj


def cpu_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: nn.Module, optimizer, generator: torch.Generator,
                    fingerprint: Dict[str, Any], state: Dict[str, Any]) -> None:
    """Write the checkpoint atomically (a run killed mid-write keeps the previous one)."""
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
        "model": cpu_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(generator),
        "state": {**state, "history": json.dumps(state["history"]),
                  "best_metric": float(state["best_metric"])},
    }, path)


def read_checkpoint(path, error: type = ValueError) -> Dict[str, Any]:
    """The content of a checkpoint written by :func:`save_checkpoint` (on the CPU, weights only); ``error``
    (the caller's error class) names the file when it cannot be read or is not such a checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable or not a checkpoint at all
        raise error(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise error(f"{path} is not a ttt4rec_edu checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


__all__ = ["CHECKPOINT_FORMAT", "rng_state", "set_rng_state", "cpu_state_dict", "save_checkpoint", "read_checkpoint"]
