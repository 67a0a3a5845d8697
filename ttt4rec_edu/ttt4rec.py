"""TTT4Rec, the whole recommender: item ids in, one score per item out (paper §3, Fig. 1).

Forward pass, as the official code runs it (``main.py`` + ttt-lm-pytorch)::

    item_seq (B, L) right-padded ids, 0 = padding
      -> item_embedding                    (B, L, C)   nn.Embedding(num_items + 1, C, padding_idx=0)
      -> Dropout(0.2) -> LayerNorm(1e-12)  (B, L, C)   dropout *then* norm, as in the official code
      -> N residual blocks                 (B, L, C)   ttt4rec_edu.backbones.ResidualBlock (default N = 1)
      -> final norm                        (B, L, C)   RMSNorm (official) or LayerNorm (norm="layer")
      -> gather position lengths - 1       (B, C)      the last *real* item (right padding)
      -> @ item_embedding.weight.T         (B, N + 1)  tied item table, column 0 = -inf in score_all

There is no additive position embedding: order enters only through RoPE on Q and K inside the TTT layer (positions
reset every mini-batch in the official code) and through the causal inner loop itself. Every stage is causal or
position-wise, so the gathered vector at ``lengths - 1`` never sees the padding after it: right padding needs no
attention mask (the official code builds one and never uses it).

Training loss: the official code's cross-entropy runs over all ``n_items`` logits *including* the padding column,
so row 0 of the tied table (zero gradient from the lookup, thanks to ``padding_idx``) still learns through the
output layer as one extra negative that is never a target. Here column 0 is ``-inf`` in :meth:`TTT4Rec.score_all`
and ``ttt4rec_edu.losses`` leaves it out, so row 0 never changes — a negligible difference, stated for honesty.

Test-time training is the forward pass: the inner loop runs identically in training and evaluation, restarting
from the learned W0 for every sequence. :meth:`TTT4Rec.set_adapt_at_test` switches the inner updates off (η = 0,
W stays W0) for evaluation only — the ablation "what if the model did not adapt at test time?" (a model trained
to rely on its inner updates, then denied them: it measures that mismatch as much as adaptation). The control
that separates the two is ``TTT4RecConfig(adapt=False)`` (``build_model("ttt4rec", ..., adapt=False)``,
``--adapt off`` on the command line): η = 0 in training *and* evaluation, so every TTT layer is the fixed per-token
map ``f(q_t; W0)`` with exactly the same parameters. Note what that leaves: with the Transformer backbone nothing
else mixes positions (there is no attention), so the model sees only the last item — the inner loop is TTT4Rec's
only way of reading the history; the Mamba backbone keeps its short causal convolutions.

Parameter count (C = 64, 4 heads, FFN 256, TTT-MLP, Transformer backbone, 1 block;
:func:`ttt4rec_edu.models.parameter_summary` counts them):

=====================================  ====================  ======================================
part                                   ours                  official (TTT4Rec main.py)
=====================================  ====================  ======================================
item table (num_items + 1) × 64        64 · (N + 1)          same (RecBole's n_items counts padding)
embedding LayerNorm                    128                   128
one residual block                     74,700                74,700
final RMSNorm                          64                    64
TTTModel.embed_tokens 32000 × 64       —                     2,048,000 (created, never used)
=====================================  ====================  ======================================

The block's 74,700 = θ_Q, θ_K, θ_V, θ_O 4 · 64 · 64 = 16,384; learning-rate gate 4 · 64 + 4 = 260; learnable
token-index offsets 8; per-head inner LayerNorm 2 · 4 · 16 = 128; post_norm 128; inner MLP W1, b1, W2, b2 per head
4 · (16 · 64 + 64 + 64 · 16 + 16) = 8,512; SwiGLU 3 · 64 · 256 = 49,152; two RMSNorms 128. So our default model has
``64 · N + 74,956`` parameters and the released one ``64 · N + 2,122,956``: the 2,048,000 dead embedding
parameters inflate the official count (and its FLOP report) but never touch a prediction, so we do not carry them.
The other variants: TTT-Linear replaces the 8,512 inner-MLP parameters by 4 · (16 · 16 + 16) = 1,088 (block
67,276); the Mamba backbone drops θ_K (−4,096), adds two depthwise Q/K convolutions (+2 · 320), the gate θ_G
(+4,096) and the pre-convolution with its RMSNorm (+320 + 64): 75,724 with TTT-MLP, 68,300 with TTT-Linear.
``tests/test_ttt4rec.py`` checks all four.

Building one: ``build_model("ttt4rec", num_items, max_len, **options)`` (this module registers the name, and the
tables' display name "TTT4Rec", with ``ttt4rec_edu.models``) or ``TTT4Rec(TTT4RecConfig(...))``; the options are
the fields of :class:`TTT4RecConfig`, whose TTT-layer fields take their defaults and their checks from
``ttt4rec_edu.ttt.TTTConfig``.
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Iterator, List, Tuple, Union

import torch
from torch import nn

from .backbones import BACKBONES, FFNS, NORMS, ResidualBlock, make_norm
from .data.registry import DEFAULT_MAX_LEN
from .models import MAX_DEPTH, MAX_WIDTH, ItemScoringModel, check_batch, check_size, gather_last, register_model
from .ttt import MODES, TTTConfig, TTTLayer, check_int, check_real
#: The official code's unused ``TTTModel.embed_tokens`` (vocab 32000 × hidden 64), not carried here.
OFFICIAL_DEAD_EMBEDDING_PARAMS = 32000 * 64


@dataclass
class TTT4RecConfig:
    """Hyper-parameters of :class:`TTT4Rec`; defaults are the paper's / released code's, and those of the TTT layer
    come from :class:`ttt4rec_edu.ttt.TTTConfig` (the one place they are written).

    ``backbone`` ∈ {"transformer", "mamba"}; ``inner`` ∈ {"linear", "mlp"} (TTT-MLP is what main.py runs);
    ``norm`` ∈ {"rms" (official), "layer" (paper text)}; ``ffn`` ∈ {"swiglu" (official), "gelu" (paper text)};
    ``ttt_mode`` ∈ {"dual", "minibatch_loop", "token_loop"} — the ways ``ttt4rec_edu.ttt`` computes the inner
    loop ("dual" is the fast one; the loops are the readable references; "token_loop" is online GD and needs
    ``mini_batch_size=1``). ``adapt=False``: the inner loop never steps (η = 0 in training and at test, W_t = W0
    at every position) — the "trained and tested without adaptation" control; the parameters are the same.
    Checked when built: one ``ValueError`` naming the option for a bad value (the layer's options by ``TTTConfig``);
    the sizes have the upper bounds of every model's (``ttt4rec_edu.models.MAX_WIDTH``, ``MAX_DEPTH`` blocks).
    """

    num_items: int
    max_len: int = DEFAULT_MAX_LEN    # the context length of a file not in the registry (data.registry)
    hidden_size: int = TTTConfig.hidden_size
    num_heads: int = TTTConfig.num_heads
    ffn_size: int = 256
    num_blocks: int = 1
    backbone: str = "transformer"
    inner: str = TTTConfig.inner
    mini_batch_size: int = TTTConfig.mini_batch_size
    base_lr: float = TTTConfig.base_lr
    rope_base: float = TTTConfig.rope_base
    rope_positions: str = TTTConfig.rope_positions
    dropout: float = 0.2
    norm: str = "rms"
    ffn: str = "swiglu"
    ttt_mode: str = "dual"
    conv_kernel: int = TTTConfig.conv_kernel
    norm_eps: float = 1e-6
    embedding_ln_eps: float = 1e-12
    init_std: float = TTTConfig.init_std
    adapt: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.adapt, bool):
            raise ValueError(f"adapt must be True or False, got {self.adapt!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {self.backbone!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.ffn not in FFNS:
            raise ValueError(f"ffn must be one of {FFNS}, got {self.ffn!r}")
        if self.ttt_mode not in MODES:
            raise ValueError(f"ttt_mode must be one of {MODES}, got {self.ttt_mode!r}")
        check_int("num_items", self.num_items)
        check_int("max_len", self.max_len)
        check_int("num_blocks", self.num_blocks)
        check_int("ffn_size", self.ffn_size)
        # the TTT layer's options (sizes, inner model, step size, RoPE, init): checked where they are defined
        TTTConfig(hidden_size=self.hidden_size, num_heads=self.num_heads, inner=self.inner,
                  mini_batch_size=self.mini_batch_size, base_lr=self.base_lr, rope_base=self.rope_base,
                  rope_positions=self.rope_positions, conv_kernel=self.conv_kernel, init_std=self.init_std)
        if self.ttt_mode == "token_loop" and self.mini_batch_size != 1:
            raise ValueError(
                f"ttt_mode='token_loop' is online GD (one token at a time) and needs mini_batch_size=1, got "
                f"{self.mini_batch_size}; use 'minibatch_loop' or 'dual' for mini-batch TTT"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        check_real("norm_eps", self.norm_eps)
        check_real("embedding_ln_eps", self.embedding_ln_eps)
        # upper bounds, as every model's (ttt4rec_edu.models.check_size): hidden_size=10**9 is a slip that would try
        # to allocate terabytes, not an experiment (num_heads divides hidden_size, so it is bounded too)
        for name in ("hidden_size", "ffn_size", "mini_batch_size", "conv_kernel"):
            check_size(name, getattr(self, name), MAX_WIDTH)
        check_size("num_blocks", self.num_blocks, MAX_DEPTH)


class TTT4Rec(ItemScoringModel):
    """The TTT4Rec recommender (registry name ``"ttt4rec"``).

    ``forward(item_seq, lengths)`` returns the scores ``(B, num_items + 1)`` — the same as :meth:`score_all` — so
    ``model(item_seq, lengths)`` is a drop-in for every other registered model; :meth:`encode` returns the gathered
    ``(B, hidden)`` representation and :meth:`sequence_output` the per-position ``(B, L, hidden)`` states.
    """

    def __init__(self, config: TTT4RecConfig):
        super().__init__()
        self.config = config
        c = config
        self.item_embedding = nn.Embedding(c.num_items + 1, c.hidden_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(c.dropout)
        self.embedding_norm = nn.LayerNorm(c.hidden_size, eps=c.embedding_ln_eps)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                c.hidden_size, c.num_heads, c.ffn_size, backbone=c.backbone, inner=c.inner,
                mini_batch_size=c.mini_batch_size, base_lr=c.base_lr, rope_base=c.rope_base,
                rope_positions=c.rope_positions, norm=c.norm, ffn=c.ffn, conv_kernel=c.conv_kernel,
                norm_eps=c.norm_eps,
            )
            for _ in range(c.num_blocks)
        )
        self.final_norm = make_norm(c.norm, c.hidden_size, c.norm_eps)
        self.adapt_at_test = True
        if not c.adapt:  # the control: no inner step ever, in training or at test (W_t = W0)
            for layer in self.ttt_layers():
                layer.adapt = False
        self.apply(self._init_weights)

    # ----------------------------------------------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        """Official init: Linear/Embedding weights N(0, 0.02), Linear biases 0, LayerNorm (1, 0).

        As in the official code the padding row 0 of the item table is re-drawn too (here it never gets a gradient
        and never ranks: padding_idx blocks the lookup path, the ``-inf`` column the output path). Raw parameters
        (W0 of the inner model, lr gate, RMSNorm weights) keep the initialisation of the module that owns them
        (``TTTLayer.reset_parameters``: N(0, 0.02) / zeros / ones, as official); Conv1d keeps PyTorch's default,
        as in the official code.
        """
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def ttt_layers(self) -> List[TTTLayer]:
        """The TTT layer of every block, in order."""
        return [block.ttt for block in self.blocks]

    def set_adapt_at_test(self, flag: bool) -> None:
        """``False``: at evaluation (``model.eval()``) the inner loop takes no step, η = 0 and W stays W0.

        Training is never affected: the flag is only consulted when ``not self.training``.
        """
        if not isinstance(flag, bool):
            raise TypeError(f"set_adapt_at_test expects a bool, got {type(flag).__name__}")
        self.adapt_at_test = flag

    @contextmanager
    def _adaptation_for_this_pass(self) -> Iterator[None]:
        """Switch every TTT layer's ``adapt`` off for this forward pass when evaluating with adaptation off."""
        if self.training or self.adapt_at_test:
            yield
            return
        saved = [(layer, layer.adapt) for layer in self.ttt_layers()]
        try:
            for layer, _ in saved:
                layer.adapt = False
            yield
        finally:
            for layer, flag in saved:
                layer.adapt = flag

    # ----------------------------------------------------------------------------------------------------------
    def sequence_output(self, item_seq: torch.Tensor,
                        return_traces: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, List[Any]]]:
        """``item_seq (B, L) -> (B, L, hidden)``: the final-norm output at every position (causal).

        With ``return_traces`` also a list with each block's TTT trace (``ttt4rec_edu.ttt``), for the W_t explorer.
        """
        h = self.embedding_norm(self.embedding_dropout(self.item_embedding(item_seq)))
        traces: List[Any] = []
        with self._adaptation_for_this_pass():
            for block in self.blocks:
                if return_traces:
                    h, trace = block(h, mode=self.config.ttt_mode, return_trace=True)
                    traces.append(trace)
                else:
                    h = block(h, mode=self.config.ttt_mode)
        h = self.final_norm(h)
        return (h, traces) if return_traces else h

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, L) ids, (B,) lengths -> (B, hidden)``: the state at the last real position ``lengths - 1``."""
        check_batch(item_seq, lengths, self.config.num_items)
        return gather_last(self.sequence_output(item_seq), lengths)

    def item_table(self) -> torch.Tensor:
        """``(num_items + 1, hidden)``: the tied item embedding table (row 0 = padding)."""
        return self.item_embedding.weight


@register_model("ttt4rec", config=TTT4RecConfig, display="TTT4Rec")
def _build_ttt4rec(num_items: int, max_len: int, **overrides) -> TTT4Rec:
    known = {f.name for f in fields(TTT4RecConfig)} - {"num_items", "max_len"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"ttt4rec got unknown options {unknown}; known options: {sorted(known)}")
    return TTT4Rec(TTT4RecConfig(num_items=num_items, max_len=max_len, **overrides))
