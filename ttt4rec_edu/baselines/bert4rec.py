"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained by Cloze (masked-item) prediction, as in
RecBole 1.2.

Training (:meth:`BERT4Rec.calculate_loss`): hide some items of the history behind a ``[mask]`` token and
predict them from both sides::

    history      i1  i2  i3  i4  i5          (right-padded, ids 1..num_items)
    input        i1 [m]  i3 [m]  i5          each real position masked with probability mask_ratio (0.2)
    loss         cross-entropy over all items at the masked positions, targets i2 and i4

RecBole 1.2's ``MaskItemSequence`` also does, for a whole batch with probability ft_ratio (0.5), the
"fine-tuning" variant that masks only the last history item — the same task as test time. Both are here. As in
RecBole, the Cloze task uses the *history* only; the sample's next-item target is not used unless
``cloze_append_target=True`` (then it is appended to the history before masking). Differences from RecBole,
on purpose: every masked position counts in the loss (RecBole keeps at most int(0.2·max_len) of them and ignores
a mask at position 0), a batch with no masked position falls back to masking the last item (RecBole would divide
by zero), and the padding id takes no part in the softmax.

Evaluation (:meth:`BERT4Rec.encode`): append ``[mask]`` after the history and read the encoder's output at that
position. RecBole 1.2's ``reconstruct_test_data`` appends a padding column, writes the mask at index ``length``,
then drops the first column — so the oldest history item is *always* dropped, even for short histories
(length 1 leaves only the mask). ``eval_drop_oldest="always"`` (default) does exactly that;
``"when_full"`` drops the oldest item only when the history already fills ``max_len``. The target is never an input.

    [mask] → embedding + position → LayerNorm → Dropout → TransformerEncoder (2 layers, bidirectional over
    real positions) → Linear → GELU → LayerNorm → h (batch, 64);  score(item j) = h · e_j + bias_j

The mask token is id ``num_items + 1`` in the model's own embedding table (num_items + 2 rows); scores cover
ids 0..num_items only. ``encode`` returns [h, 1] and ``item_table`` returns [e_j, bias_j], so that
``encode @ item_table().T`` is exactly the score including the output bias.

RecBole 1.2 defaults (``properties/model/BERT4Rec.yaml``): n_layers 2, n_heads 2, hidden_size 64,
inner_size 256, hidden_dropout_prob 0.2, attn_dropout_prob 0.2, hidden_act gelu, layer_norm_eps 1e-12,
initializer_range 0.02, mask_ratio 0.2, ft_ratio 0.5, loss_type CE. Initialisation as SASRec (N(0, 0.02²)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ttt4rec_edu.baselines.sasrec import (TransformerEncoder, attention_mask, check_encoder_options,
                                          init_bert_style)
from ttt4rec_edu.losses import choose_chunk, chunked_cross_entropy, full_cross_entropy
from ttt4rec_edu.models import (ItemScoringModel, check_batch, check_number,
                                gather_last, register_model)

EVAL_DROP_OLDEST = ("always", "when_full")


@dataclass
class BERT4RecConfig:
    """RecBole 1.2 BERT4Rec defaults (+ the two documented evaluation/training switches)."""

    n_layers: int = 2
    n_heads: int = 2
    hidden_size: int = 64
    inner_size: int = 256
    hidden_dropout_prob: float = 0.2
    attn_dropout_prob: float = 0.2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    mask_ratio: float = 0.2
    ft_ratio: float = 0.5
    eval_drop_oldest: str = "always"
    cloze_append_target: bool = False

    def __post_init__(self) -> None:
        check_encoder_options(self)
        check_number("mask_ratio", self.mask_ratio, 0.0, 1.0)
        check_number("ft_ratio", self.ft_ratio, 0.0, 1.0)
        if self.eval_drop_oldest not in EVAL_DROP_OLDEST:
            raise ValueError(f"eval_drop_oldest must be one of {EVAL_DROP_OLDEST}, got {self.eval_drop_oldest!r}")
        if not isinstance(self.cloze_append_target, bool):
            raise ValueError(f"cloze_append_target must be True or False, got {self.cloze_append_target!r}")


def append_token(item_seq: torch.Tensor, lengths: torch.Tensor, token: torch.Tensor, max_len: int,
                 always_drop_oldest: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Write ``token`` (batch,) right after each history; drop the oldest item first when asked, or when the
    history already holds ``max_len`` items. Returns the new right-padded (batch, new_width) ids and the new
    lengths (the token sits at ``new_lengths − 1``). Nothing at or after ``lengths`` in the input is read."""
    drop = torch.ones_like(lengths) if always_drop_oldest else (lengths >= max_len).long()
    new_lengths = lengths - drop + 1
    new_width = int(new_lengths.max()) if new_lengths.numel() else 1   # an empty batch: one column, no rows
    columns = torch.arange(new_width, device=item_seq.device)[None, :]
    source = (columns + drop[:, None]).clamp(max=item_seq.shape[1] - 1)
    kept = columns < (new_lengths - 1)[:, None]
    out = torch.where(kept, item_seq.gather(1, source), torch.zeros_like(source))
    out.scatter_(1, (new_lengths - 1)[:, None], token[:, None])
    return out, new_lengths


@register_model("bert4rec", config=BERT4RecConfig, role="baseline", published=2019)
class BERT4Rec(ItemScoringModel):
    """``bert4rec``: score_all(item_seq (batch, seq ≤ max_len), lengths (batch,)) → (batch, num_items + 1)."""

    def __init__(self, num_items: int, max_len: int, cfg: Optional[BERT4RecConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or BERT4RecConfig()
        if cfg.eval_drop_oldest not in EVAL_DROP_OLDEST:
            raise ValueError(f"eval_drop_oldest must be one of {EVAL_DROP_OLDEST}, got {cfg.eval_drop_oldest!r}")
        if not 0.0 <= cfg.mask_ratio <= 1.0 or not 0.0 <= cfg.ft_ratio <= 1.0:
            raise ValueError(f"mask_ratio and ft_ratio must lie in [0, 1], got {cfg.mask_ratio}, {cfg.ft_ratio}")
        self.num_items, self.max_len = num_items, max_len
        self.mask_token = num_items + 1
        self.item_embedding = nn.Embedding(num_items + 2, cfg.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.encoder = TransformerEncoder(cfg.n_layers, cfg.n_heads, cfg.hidden_size, cfg.inner_size,
                                          cfg.hidden_dropout_prob, cfg.attn_dropout_prob, cfg.layer_norm_eps)
        self.output_ffn = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.output_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.output_bias = nn.Parameter(torch.zeros(num_items + 1))
        self.apply(lambda module: init_bert_style(module, cfg.initializer_range))

    def encode_positions(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids (may contain the mask token), (batch,) lengths → (batch, seq, hidden).
        Every position sees every real position (j < length), in both directions."""
        seq = item_seq.shape[1]
        positions = torch.arange(seq, device=item_seq.device)
        x = self.item_embedding(item_seq) + self.position_embedding(positions)[None]
        x = self.dropout(self.layer_norm(x))
        x = self.encoder(x, attention_mask(lengths, seq, causal=False))
        return self.output_ln(F.gelu(self.output_ffn(x)))

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq), (batch,) → (batch, hidden + 1): [output at the appended mask, 1]."""
        check_batch(item_seq, lengths, self.num_items, self.max_len)
        mask = torch.full_like(lengths, self.mask_token)
        masked_seq, new_lengths = append_token(item_seq, lengths, mask, self.max_len,
                                               always_drop_oldest=self.cfg.eval_drop_oldest == "always")
        hidden = self.encode_positions(masked_seq, new_lengths)
        h = gather_last(hidden, new_lengths)
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, hidden + 1): [item embedding, output bias] for ids 0..num_items (no mask token)."""
        return torch.cat([self.item_embedding.weight[: self.num_items + 1], self.output_bias[:, None]], dim=1)


    def cloze_mask(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq) bool: which real positions to hide this step (RecBole's MaskItemSequence, see above)."""
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)[None, :]
        last = positions == (lengths - 1)[:, None]
        if float(torch.rand(())) < self.cfg.ft_ratio:
            return last
        masked = (positions < lengths[:, None]) & (
            torch.rand(item_seq.shape, device=item_seq.device) < self.cfg.mask_ratio)
        return masked if bool(masked.any()) else last

    def calculate_loss(self, item_seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cloze loss: mean cross-entropy over all items at the masked positions.

        ``item_seq`` (batch, seq), ``lengths`` (batch,), ``targets`` (batch,) → a scalar."""
        check_batch(item_seq, lengths, self.num_items, self.max_len)
        if self.cfg.cloze_append_target:
            item_seq, lengths = append_token(item_seq, lengths, targets, self.max_len, always_drop_oldest=False)
        masked = self.cloze_mask(item_seq, lengths)
        hidden = self.encode_positions(item_seq.masked_fill(masked, self.mask_token), lengths)[masked]  # (M, d)
        # [h, 1] · [e_j, bias_j] = h·e_j + bias_j: the same logits as score_all, so the exact chunked loss can
        # take over when the (M × items) logits would not fit (Gowalla's 1.28 M items); padding is never a label.
        query = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1)
        chunk = choose_chunk(query.shape[0], self.num_items)
        if chunk is None:
            return full_cross_entropy(query, self.item_table(), item_seq[masked])
        return chunked_cross_entropy(query, self.item_table(), item_seq[masked], chunk=chunk)
