"""NARM — Neural Attentive session-based Recommendation (Li et al., 2017), as in RecBole 1.2.

A GRU reads the sequence; two summaries of it are concatenated:

    h_1..h_n = GRU(Dropout(embedding(items)))             (batch, seq, hidden)
    c_global = h_n                                         the last real hidden state: "where the user is now"
    α_j      = v · σ(A₁ h_j + A₂ h_n)   for real j ≤ n     attention of the last state over every real state
    c_local  = Σ_j α_j h_j                                 "what the sequence is mainly about"
    vector   = B · Dropout([c_local ; c_global])           (batch, embedding)  — bilinear decoder
    scores   = vector @ item_embedding.T                   (batch, num_items + 1)

The weights α are *not* softmax-normalised (as in the paper and RecBole). Padding positions get α = 0:
RecBole multiplies σ(·) by the mask ``item_seq > 0``; here the mask is ``position < length``, identical on
right-padded input and also blind to anything written after the last real item.

RecBole 1.2 defaults (``properties/model/NARM.yaml``): embedding_size 64, hidden_size 128, n_layers 1,
dropout_probs [0.25, 0.5] (embedding, concatenated context), loss_type CE. Initialisation as RecBole:
embedding and every Linear xavier-normal (biases zero; A₁, A₂, v, B have none); the GRU (no biases) keeps
PyTorch's default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch import nn

from ttt4rec_edu.models import (ItemScoringModel, MAX_DEPTH, check_batch, check_dropout, check_size,
                                gather_last, register_model)


@dataclass
class NARMConfig:
    """RecBole 1.2 NARM defaults."""

    embedding_size: int = 64
    hidden_size: int = 128
    n_layers: int = 1
    dropout_probs: Tuple[float, float] = field(default=(0.25, 0.5))

    def __post_init__(self) -> None:
        check_size("embedding_size", self.embedding_size)
        check_size("hidden_size", self.hidden_size)
        check_size("n_layers", self.n_layers, MAX_DEPTH)
        if not isinstance(self.dropout_probs, (tuple, list)) or len(self.dropout_probs) != 2:
            raise ValueError(f"dropout_probs must be (embedding, context), got {self.dropout_probs!r}")
        for which, value in zip(("embedding", "context"), self.dropout_probs):
            check_dropout(f"dropout_probs ({which})", value)


@register_model("narm", config=NARMConfig, role="baseline", published=2017)
class NARM(ItemScoringModel):
    """``narm``: score_all(item_seq (batch, seq), lengths (batch,)) → (batch, num_items + 1)."""

    def __init__(self, num_items: int, max_len: int, cfg: Optional[NARMConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or NARMConfig()
        if len(cfg.dropout_probs) != 2:
            raise ValueError(f"dropout_probs must be (embedding, context), got {cfg.dropout_probs!r}")
        self.num_items, self.max_len = num_items, max_len
        self.item_embedding = nn.Embedding(num_items + 1, cfg.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(cfg.dropout_probs[0])
        self.gru = nn.GRU(cfg.embedding_size, cfg.hidden_size, cfg.n_layers, bias=False, batch_first=True)
        self.a_1 = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.a_2 = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.v_t = nn.Linear(cfg.hidden_size, 1, bias=False)
        self.ct_dropout = nn.Dropout(cfg.dropout_probs[1])
        self.b = nn.Linear(2 * cfg.hidden_size, cfg.embedding_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Embedding, nn.Linear)):
                nn.init.xavier_normal_(module.weight)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids, (batch,) lengths → (batch, embedding_size)."""
        check_batch(item_seq, lengths, self.num_items)
        states, _ = self.gru(self.emb_dropout(self.item_embedding(item_seq)))    # (batch, seq, hidden)
        c_global = gather_last(states, lengths)                                     # (batch, hidden)
        real = torch.arange(item_seq.shape[1], device=item_seq.device)[None, :] < lengths[:, None]
        gate = torch.sigmoid(self.a_1(states) + self.a_2(c_global)[:, None, :])    # (batch, seq, hidden)
        alpha = self.v_t(gate * real[..., None])                                    # (batch, seq, 1), 0 at padding
        c_local = (alpha * states).sum(dim=1)                                       # (batch, hidden)
        return self.b(self.ct_dropout(torch.cat([c_local, c_global], dim=1)))

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, embedding_size); row 0 (padding) is scored −inf by ``score_all``."""
        return self.item_embedding.weight
