"""Pop: score every item by how often it is a training target (RecBole 1.2's ``Pop``), registry name ``pop``.

The simplest honest reference line: it ignores the user's history entirely, so any sequential model should beat
it (the paper's tables do not list it; the book and the experiments put it beside the five baselines as a floor).

    fit_statistics(item_seq, lengths, targets)  →  item_count[j] = how many training targets are item j
    score_all(item_seq (batch, seq), lengths (batch,))  →  the same row item_count for every sequence,
                                                            (batch, num_items + 1), column 0 = -inf

There is nothing to learn by gradient descent (no parameters; the counts are a buffer, so they are saved with the
model's state dict), so the trainer only calls ``fit_statistics`` once with the whole training split.
"""
from __future__ import annotations

import torch
from torch import nn

from ttt4rec_edu.models import check_batch, register_model


@register_model("pop", display="Pop", role="reference")
class PopularityRecommender(nn.Module):
    """``pop``: score_all(item_seq (batch, seq), lengths (batch,)) → (batch, num_items + 1), history ignored."""

    def __init__(self, num_items: int, max_len: int):
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        self.register_buffer("item_count", torch.zeros(num_items + 1, dtype=torch.float64))

    @torch.no_grad()
    def fit_statistics(self, item_seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> None:
        """Count the training targets ``(batch,)``: ``item_count[j]`` = how many of them are item ``j``."""
        counts = torch.bincount(targets.reshape(-1).cpu(), minlength=self.num_items + 1).to(torch.float64)
        self.item_count.copy_(counts[: self.num_items + 1].to(self.item_count.device))

    def score_all(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, L), (B,) -> (B, num_items + 1)``: the same popularity row for every sequence.

        The batch is validated like every other model's (``check_batch``) although only its size is used: a
        wrong batch is a bug in the caller, and a model that ignores its input must not hide it. No ``max_len``
        check: there is no position table, so any width works.
        """
        check_batch(item_seq, lengths, self.num_items)
        scores = self.item_count.to(torch.float32).clone()
        scores[0] = float("-inf")
        return scores.unsqueeze(0).expand(item_seq.shape[0], -1)

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`score_all`."""
        return self.score_all(item_seq, lengths)
