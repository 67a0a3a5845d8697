"""GRU4Rec (Hidasi et al., 2016; Tan et al., 2016), as RecBole 1.2 implements it for next-item prediction.

    item ids (batch, seq) → embedding (batch, seq, 64) → Dropout(0.3) → GRU (hidden 128, no biases)
      → Linear 128 → 64 at every position → the vector at the last real position (batch, 64)
      → scores = vector @ item_embedding.T  (batch, num_items + 1)

RecBole 1.2 defaults (``properties/model/GRU4Rec.yaml``): embedding_size 64, hidden_size 128, num_layers 1,
dropout_prob 0.3, loss_type CE (full softmax over all items). Initialisation as RecBole: item embedding
xavier-normal; the first GRU layer's input and recurrent weights xavier-uniform (RecBole touches only layer 0);
the dense layer keeps PyTorch's default. The input embedding doubles as the output item table.
The GRU reads left to right, so the vector at position t depends on items 1..t only and right padding
never reaches a real position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ttt4rec_edu.models import (ItemScoringModel, MAX_DEPTH, check_batch, check_dropout, check_size,
                                gather_last, register_model)


@dataclass
class GRU4RecConfig:
    """RecBole 1.2 GRU4Rec defaults."""

    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout_prob: float = 0.3

    def __post_init__(self) -> None:
        check_size("embedding_size", self.embedding_size)
        check_size("hidden_size", self.hidden_size)
        check_size("num_layers", self.num_layers, MAX_DEPTH)
        check_dropout("dropout_prob", self.dropout_prob)


@register_model("gru4rec", config=GRU4RecConfig, role="baseline", published=2016)
class GRU4Rec(ItemScoringModel):
    """``gru4rec``: score_all(item_seq (batch, seq), lengths (batch,)) → (batch, num_items + 1)."""

    def __init__(self, num_items: int, max_len: int, cfg: Optional[GRU4RecConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or GRU4RecConfig()
        self.num_items, self.max_len = num_items, max_len
        self.item_embedding = nn.Embedding(num_items + 1, cfg.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(cfg.dropout_prob)
        self.gru = nn.GRU(cfg.embedding_size, cfg.hidden_size, num_layers=cfg.num_layers, bias=False,
                          batch_first=True)
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        nn.init.xavier_normal_(self.item_embedding.weight)
        nn.init.xavier_uniform_(self.gru.weight_ih_l0)
        nn.init.xavier_uniform_(self.gru.weight_hh_l0)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids, (batch,) lengths → (batch, embedding_size): the output at the last real position."""
        check_batch(item_seq, lengths, self.num_items)
        hidden, _ = self.gru(self.emb_dropout(self.item_embedding(item_seq)))  # (batch, seq, hidden_size)
        hidden = self.dense(hidden)                                              # (batch, seq, embedding_size)
        return gather_last(hidden, lengths)

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, embedding_size); row 0 (padding) is scored −inf by ``score_all``."""
        return self.item_embedding.weight
