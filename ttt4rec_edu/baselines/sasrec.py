"""SASRec — Self-Attentive Sequential Recommendation (Kang & McAuley, 2018), as in RecBole 1.2.

    item ids (batch, seq) → item embedding + learned position embedding (batch, seq, 64)
      → LayerNorm → Dropout → TransformerEncoder (2 layers, causal) → vector at the last real position
      → scores = vector @ item_embedding.T  (batch, num_items + 1)

Each transformer layer is *post-LN*, BERT style (RecBole's ``TransformerLayer``)::

    a = LayerNorm(x + Dropout(Dense(MultiHeadAttention(x))))     # attention probabilities also get Dropout
    y = LayerNorm(a + Dropout(W₂ GELU(W₁ a)))                     # W₁: 64 → 256, W₂: 256 → 64, exact (erf) GELU

Position t may attend to positions ≤ t that hold real items (causal mask + key padding mask). Masked scores
get −10000 added before the softmax, as in RecBole, which makes their probability exactly 0 in float32.

RecBole 1.2 defaults (``properties/model/SASRec.yaml``): n_layers 2, n_heads 2, hidden_size 64, inner_size 256,
hidden_dropout_prob 0.5, attn_dropout_prob 0.5, hidden_act gelu, layer_norm_eps 1e-12, initializer_range 0.02,
loss_type CE. Initialisation: every Linear and Embedding weight ~ N(0, 0.02²), Linear biases 0, LayerNorm
weight 1 and bias 0. The position table has ``max_len`` rows, so inputs may be at most ``max_len`` wide.

:class:`TransformerEncoder` here is reused by BERT4Rec with a bidirectional mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ttt4rec_edu.models import (ItemScoringModel, MAX_DEPTH, check_batch, check_dropout, check_number,
                                check_size, gather_last, register_model)

MASKED_SCORE = -10000.0  # RecBole's additive attention mask value


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, x·Φ(x) (the erf form RecBole uses)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class MultiHeadSelfAttention(nn.Module):
    """(batch, seq, hidden), additive mask (batch, 1, seq, seq) → (batch, seq, hidden), residual + LayerNorm inside."""

    def __init__(self, hidden_size: int, n_heads: int, hidden_dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.head_size = n_heads, hidden_size // n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_dropout = nn.Dropout(hidden_dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (batch, seq, hidden) → (batch, heads, seq, head_size)
            return t.view(batch, seq, self.n_heads, self.head_size).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + attn_mask  # (batch, heads, seq, seq)
        probs = self.attn_dropout(torch.softmax(scores, dim=-1))
        context = (probs @ v).transpose(1, 2).reshape(batch, seq, hidden)
        return self.layer_norm(x + self.out_dropout(self.dense(context)))


class FeedForward(nn.Module):
    """Position-wise: LayerNorm(x + Dropout(W₂ GELU(W₁ x))), (batch, seq, hidden) → same."""

    def __init__(self, hidden_size: int, inner_size: int, hidden_dropout: float, eps: float):
        super().__init__()
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.dropout = nn.Dropout(hidden_dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(x + self.dropout(self.dense_2(gelu(self.dense_1(x)))))


class TransformerEncoder(nn.Module):
    """``n_layers`` post-LN layers (attention, then feed-forward); (batch, seq, hidden) → same."""

    def __init__(self, n_layers: int, n_heads: int, hidden_size: int, inner_size: int,
                 hidden_dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.attention = nn.ModuleList(
            [MultiHeadSelfAttention(hidden_size, n_heads, hidden_dropout, attn_dropout, eps) for _ in range(n_layers)]
        )
        self.feed_forward = nn.ModuleList(
            [FeedForward(hidden_size, inner_size, hidden_dropout, eps) for _ in range(n_layers)]
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for attention, feed_forward in zip(self.attention, self.feed_forward):
            x = feed_forward(attention(x, attn_mask))
        return x


def attention_mask(lengths: torch.Tensor, seq: int, causal: bool) -> torch.Tensor:
    """Additive mask (batch, 1, seq, seq): 0 where query i may attend to key j, −10000 elsewhere.
    Keys must be real (j < length); with ``causal`` also j ≤ i."""
    positions = torch.arange(seq, device=lengths.device)
    allowed = (positions[None, :] < lengths[:, None])[:, None, None, :]          # (batch, 1, 1, seq)
    if causal:
        allowed = allowed & (positions[None, :] <= positions[:, None])[None, None]  # (batch, 1, seq, seq)
    allowed = allowed.expand(-1, 1, seq, seq)
    return torch.zeros(allowed.shape, device=lengths.device).masked_fill(~allowed, MASKED_SCORE)


def init_bert_style(module: nn.Module, std: float) -> None:
    """RecBole's transformer initialisation: N(0, std²) weights for Linear/Embedding, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def check_encoder_options(config) -> None:
    """The Transformer encoder's options of a config (SASRec's, BERT4Rec's), each checked with one clear
    ``ValueError`` naming it: sizes, heads dividing the width, dropouts, the LayerNorm epsilon, the init range."""
    check_size("n_layers", config.n_layers, MAX_DEPTH)
    check_size("hidden_size", config.hidden_size)
    check_size("n_heads", config.n_heads, config.hidden_size)
    if config.hidden_size % config.n_heads:
        raise ValueError(f"hidden_size must be a multiple of n_heads: {config.hidden_size} is not divisible "
                 f"by {config.n_heads}")
    check_size("inner_size", config.inner_size)
    check_dropout("hidden_dropout_prob", config.hidden_dropout_prob)
    check_dropout("attn_dropout_prob", config.attn_dropout_prob)
    check_number("layer_norm_eps", config.layer_norm_eps, low_open=True)
    check_number("initializer_range", config.initializer_range)


@dataclass
class SASRecConfig:
    """RecBole 1.2 SASRec defaults."""

    n_layers: int = 2
    n_heads: int = 2
    hidden_size: int = 64
    inner_size: int = 256
    hidden_dropout_prob: float = 0.5
    attn_dropout_prob: float = 0.5
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        check_encoder_options(self)


@register_model("sasrec", config=SASRecConfig, role="baseline", published=2018)
class SASRec(ItemScoringModel):
    """``sasrec``: score_all(item_seq (batch, seq ≤ max_len), lengths (batch,)) → (batch, num_items + 1)."""

    def __init__(self, num_items: int, max_len: int, cfg: Optional[SASRecConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or SASRecConfig()
        self.num_items, self.max_len = num_items, max_len
        self.item_embedding = nn.Embedding(num_items + 1, cfg.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.encoder = TransformerEncoder(cfg.n_layers, cfg.n_heads, cfg.hidden_size, cfg.inner_size,
                                          cfg.hidden_dropout_prob, cfg.attn_dropout_prob, cfg.layer_norm_eps)
        self.apply(lambda module: init_bert_style(module, cfg.initializer_range))

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids, (batch,) lengths → (batch, hidden): the causal encoder's output at position length − 1."""
        check_batch(item_seq, lengths, self.num_items, self.max_len)
        seq = item_seq.shape[1]
        positions = torch.arange(seq, device=item_seq.device)
        x = self.item_embedding(item_seq) + self.position_embedding(positions)[None]  # (batch, seq, hidden)
        x = self.dropout(self.layer_norm(x))
        x = self.encoder(x, attention_mask(lengths, seq, causal=True))
        return gather_last(x, lengths)

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, hidden): the input item embedding, shared as the output table."""
        return self.item_embedding.weight
