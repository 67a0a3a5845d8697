"""Small helpers shared by the library: devices, seeding, atomic file writes, JSON- and npz-ready data."""
from __future__ import annotations

import io
import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Tuple, Union

import numpy as np
import torch

PathLike = Union[str, "os.PathLike[str]"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU. Never hard-code a device elsewhere; call this.

    A ``torch.device`` is already resolved and comes back as it is (no second check): the command line resolves
    the device once per run and hands the result to the trainer and the metrics.
    """
    if isinstance(device, torch.device):
        return device
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch sees no CUDA GPU on this machine")
    return dev


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def quick_mode() -> bool:
    """The book's quick mode: ``TTT4REC_QUICK=1`` forces it on, ``0`` off; default on when no GPU is present."""
    value = os.environ.get("TTT4REC_QUICK")
    if value is None or value == "":
        return not torch.cuda.is_available()
    return value.strip().lower() not in {"0", "false", "no", "off"}


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> Tuple[int, str]:
    """``(fd, name)`` of a new temporary file in ``path``'s folder for an atomic write of ``path``, named
    ``.<file name>.<random>.tmp`` (what :func:`is_atomic_leftover` recognises). Its mode is what ``open`` would
    give a new file (``0o666 & ~umask``): ``mkstemp``'s private 0600 would otherwise survive the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(name, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, name


def is_atomic_leftover(file_name: str, target: str) -> bool:
    """Whether ``file_name`` is the temporary file an atomic write of ``target`` leaves when killed mid-write."""
    return file_name.startswith(f".{target}.") and file_name.endswith(".tmp")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename,
    so a crash never leaves a half-written file and an existing file is replaced only when complete."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through a temporary file + rename (a killed run never corrupts the last checkpoint)."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_safe(obj):
    """``obj`` ready for ``json``: keys as strings, tuples as lists, NumPy numbers as Python's, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """The bytes of a compressed ``.npz`` holding ``arrays`` (to be written atomically)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
