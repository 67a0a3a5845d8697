"""The paper's evaluation protocol (RecBole 1.2 sequential recommendation), in plain NumPy/PyTorch.

1. Each user's interactions are in time order: a sequence ``s = (s_1, ..., s_n)`` of item ids.
2. Every prefix predicts its next item (RecBole's data augmentation): the user gives ``n - 1`` samples,
   sample ``p`` (p = 1..n-1) has input ``s_1..s_p`` truncated to its last ``max_len`` items and target
   ``s_{p+1}``. Inputs are right-padded with id 0.
3. The samples of each user, in time order, are split by ratio into train / valid / test
   (3:2:5 in the paper, 6:2:2 in its Table 4) with RecBole 1.2's rounding (:func:`split_counts`).
   Valid and test inputs hold *all* earlier true items (also those whose samples are in train).

Worked example, n = 5 interactions → 4 samples, split 3:2:5: valid and test first get
floor(0.2·4) = 0 and floor(0.5·4) = 2, train the rest (2); walking back from the last part, valid's
0.2·4 = 0.8 lies strictly between 0 and 1, so valid takes one sample from train → train 1, valid 1, test 2.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

LEAVE_ONE_OUT = "loo"


@dataclass
class SequenceData:
    """Users' chronological item sequences with contiguous internal item ids ``1..num_items``.

    ``sequences[u]`` is an int64 array of user ``u``'s item ids in time order (ties in file order).
    ``item_tokens[j - 1]`` is the original id of internal item ``j`` and ``user_tokens[u]`` the original user id
    (both optional). ``name`` says where the data came from.
    """

    sequences: List[np.ndarray]
    num_items: int
    name: str = "data"
    user_tokens: Optional[List[str]] = None
    item_tokens: Optional[List[str]] = None
    meta: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sequences = [np.asarray(s, dtype=np.int64) for s in self.sequences]
        for u, seq in enumerate(self.sequences):
            if seq.ndim != 1:
                raise ValueError(f"{self.name}: sequence of user {u} is not one-dimensional")
            if seq.size and (seq.min() < 1 or seq.max() > self.num_items):
                raise ValueError(
                    f"{self.name}: user {u} has item ids outside 1..{self.num_items} "
                    f"(min {seq.min()}, max {seq.max()})"
                )

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def avg_seq_len(self) -> float:
        return self.num_interactions / max(self.num_users, 1)

    def __repr__(self) -> str:  # the dataclass default would print every sequence (millions of ids)
        return (f"SequenceData(name={self.name!r}, users={self.num_users:,}, items={self.num_items:,}, "
                f"interactions={self.num_interactions:,})")


def parse_split(spec) -> Tuple[float, ...]:
    """``"3:2:5"`` → ``(0.3, 0.2, 0.5)`` (normalised like RecBole); ``"loo"`` → leave-one-out marker ``()``.

    Also accepts a sequence of three numbers. Raises ``ValueError`` naming the problem otherwise.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in {LEAVE_ONE_OUT, "leave-one-out", "leave_one_out"}:
            return ()
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(
                f"malformed split {spec!r}: expected three parts train:valid:test such as 3:2:5, or 'loo'"
            )
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"malformed split {spec!r}: every part must be a number") from None
    else:
        values = [float(v) for v in spec]
        if len(values) != 3:
            raise ValueError(f"malformed split {spec!r}: expected three parts train:valid:test")
    if any(not np.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"malformed split {spec!r}: every part must be a positive number")
    total = sum(values)
    ratios = tuple(v / total for v in values)
    if not np.isfinite(total) or any(not np.isfinite(r) or r <= 0 for r in ratios):  # 1e308:1e308:1e308
        raise ValueError(f"malformed split {spec!r}: the parts are too large or too small to normalise; "
                         "use small numbers such as 3:2:5")
    return ratios


def split_counts(num_samples: int, ratios: Sequence[float]) -> Tuple[int, int, int]:
    """RecBole 1.2 ``_calcu_split_ids`` for one user: how many samples go to (train, valid, test).

    valid and test get ``floor(ratio * n)`` each and train the rest; then, walking from the last part
    backwards, a part whose ``ratio * n`` lies strictly between 0 and 1 takes one sample from train while
    train still has more than one. ``ratios == ()`` means leave-one-out: the last sample is test, the one
    before it valid, the rest train (fewer samples: test first, then valid, train keeps at least one).
    """
    n = int(num_samples)
    if n < 0:
        raise ValueError("num_samples must be >= 0")
    if len(ratios) == 0:  # leave-one-out, RecBole's _split_index_by_leave_one_out with 2 held out
        held = min(2, max(n - 1, 0))
        return (n - held, 1 if held == 2 else 0, 1 if held >= 1 else 0)
    cnt = [int(r * n) for r in ratios]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * n < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return tuple(cnt)  # type: ignore[return-value]


class SampleSet:
    """A set of (prefix → next item) samples, stored compactly and padded on demand.

    All users' sequences live in one flat array; sample ``i`` is ``(user[i], target_index[i])`` where
    ``target_index`` points into the flat array. :meth:`batch` builds the right-padded inputs
    ``item_seq: LongTensor[B, max_len]``, ``lengths: LongTensor[B]`` and ``targets: LongTensor[B]``
    without ever materialising all padded rows (Gowalla has 6.4 M samples).
    """

    def __init__(self, flat_items: torch.Tensor, user_start: torch.Tensor, user: torch.Tensor,
                 target_index: torch.Tensor, max_len: int, num_items: int):
        self.flat_items = flat_items
        self.user_start = user_start
        self.user = user
        self.target_index = target_index
        self.max_len = int(max_len)
        self.num_items = int(num_items)

    def __len__(self) -> int:
        return int(self.target_index.numel())

    @property
    def lengths(self) -> torch.Tensor:
        """``(N,)`` input lengths: ``min(max_len, number of earlier items of the user)``."""
        history = self.target_index - self.user_start[self.user]
        return history.clamp(max=self.max_len)

    @property
    def targets(self) -> torch.Tensor:
        """``(N,)`` target item ids."""
        return self.flat_items[self.target_index]

    def batch(self, index: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded inputs for the samples ``index`` (all when ``None``).

        Returns ``item_seq (B, max_len)`` right-padded with 0, ``lengths (B,)`` and ``targets (B,)``.
        """
        if index is None:
            index = torch.arange(len(self))
        index = torch.as_tensor(index, dtype=torch.long)
        target_index = self.target_index[index]
        lengths = (target_index - self.user_start[self.user[index]]).clamp(max=self.max_len)
        start = target_index - lengths
        offsets = torch.arange(self.max_len)
        positions = start[:, None] + offsets[None, :]
        valid = offsets[None, :] < lengths[:, None]
        positions = torch.where(valid, positions, torch.zeros_like(positions))
        item_seq = torch.where(valid, self.flat_items[positions], torch.zeros_like(positions))
        return item_seq, lengths, self.flat_items[target_index]

    def subset(self, index: torch.Tensor) -> "SampleSet":
        """The samples ``index`` as a new set sharing the flat item array."""
        index = torch.as_tensor(index, dtype=torch.long)
        return SampleSet(self.flat_items, self.user_start, self.user[index], self.target_index[index],
                         self.max_len, self.num_items)


@dataclass
class Splits:
    """``train``, ``valid`` and ``test`` sample sets of one dataset under one split and max length."""

    train: SampleSet
    valid: SampleSet
    test: SampleSet
    num_items: int
    max_len: int
    split: str

    def counts(self) -> Dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def digest(self) -> str:
        """SHA-256 (hex) of the samples' content: every set's item array, user starts, users and targets. Two
        splits with the same counts but other items, or another order within a user, get different digests
        (a checkpoint records it, so a run is never resumed on other data)."""
        h = hashlib.sha256()
        seen: Dict[int, int] = {}  # the sets share one flat item array: hash it once, then refer to it
        for part in (self.train, self.valid, self.test):
            for tensor in (part.flat_items, part.user_start, part.user, part.target_index):
                if id(tensor) in seen:
                    h.update(f"same as #{seen[id(tensor)]};".encode())
                    continue
                seen[id(tensor)] = len(seen)
                array = np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype="<i8")
                h.update(f"{array.size};".encode())
                h.update(array.tobytes())
        return h.hexdigest()


def build_splits(data: SequenceData, max_len: int, split="3:2:5") -> Splits:
    """Apply the protocol to ``data``: prefix samples truncated to ``max_len``, per-user chronological split.

    ``split`` is ``"3:2:5"``-style ratios (RecBole rounding, see :func:`split_counts`) or ``"loo"``.
    """
    if int(max_len) != max_len or max_len <= 0:
        raise ValueError(f"max length must be a positive integer, got {max_len!r}")
    ratios = parse_split(split)
    lengths = np.fromiter((len(s) for s in data.sequences), dtype=np.int64, count=data.num_users)
    user_start = np.zeros(data.num_users, dtype=np.int64)
    if data.num_users:
        user_start[1:] = np.cumsum(lengths)[:-1]
    flat = np.concatenate(data.sequences) if data.num_users else np.zeros(0, dtype=np.int64)

    parts: List[List[np.ndarray]] = [[], [], []]
    users: List[List[np.ndarray]] = [[], [], []]
    for u, n in enumerate(lengths.tolist()):
        n_samples = max(n - 1, 0)
        if n_samples == 0:
            continue
        counts = split_counts(n_samples, ratios)
        # targets of user u sit at flat positions start+1 .. start+n-1, in time order
        targets = user_start[u] + np.arange(1, n, dtype=np.int64)
        bounds = np.cumsum((0,) + counts)
        for part in range(3):
            chunk = targets[bounds[part]:bounds[part + 1]]
            if chunk.size:
                parts[part].append(chunk)
                users[part].append(np.full(chunk.size, u, dtype=np.int64))

    flat_t = torch.from_numpy(flat)
    start_t = torch.from_numpy(user_start)

    def make(part: int) -> SampleSet:
        tgt = np.concatenate(parts[part]) if parts[part] else np.zeros(0, dtype=np.int64)
        usr = np.concatenate(users[part]) if users[part] else np.zeros(0, dtype=np.int64)
        return SampleSet(flat_t, start_t, torch.from_numpy(usr), torch.from_numpy(tgt), int(max_len),
                         data.num_items)

    split_name = split if isinstance(split, str) else ":".join(str(x) for x in split)
    return Splits(make(0), make(1), make(2), data.num_items, int(max_len), split_name)
