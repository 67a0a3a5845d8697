"""The residual block around the TTT layer, in its two backbones (paper §3.2, Fig. 1 and Fig. 2).

One block maps ``(batch, seq, hidden) -> (batch, seq, hidden)`` and is strictly causal: position ``t`` of the
output depends on positions ``<= t`` of the input only. As the official code runs it (ttt-lm-pytorch ``Block``):

    if pre_conv:  h = h + PreConv(h)                 PreConv = causal depthwise Conv1d(RMSNorm(h)), kernel 4
                  h = h + TTTLayer(Norm_seq(h))      pre-norm residual around the sequence-modeling block
                  h = h + FFN(Norm_ffn(h))           pre-norm residual around the feed-forward block

and the model applies one more norm after the last block (``ttt4rec_edu.ttt4rec``). The "extra layer
normalization before the output, inspired by NormFormer" of the paper is *inside* the TTT layer: its
``post_norm`` LayerNorm right before the output projection θ_O (``ttt4rec_edu.ttt``).

Two backbones (paper Fig. 2), chosen by name:

==============  ===========================================  =============================================
backbone        inside the TTT layer (``ttt4rec_edu.ttt``)   in the block (here)
==============  ===========================================  =============================================
"transformer"   separate θ_K, θ_Q, θ_V projections           no pre-convolution
"mamba"         one merged θ_K/θ_Q projection followed by    ``h = h + Conv(RMSNorm(h))`` before the TTT
                two causal depthwise convolutions (kernel 4)  residual
                giving Q and K; output gated by
                GELU(θ_G x) (tanh approximation)
==============  ===========================================  =============================================

The "mamba" row is what the TTT authors call the Mamba backbone: in their JAX code the ``ttt_linear`` /
``ttt_mlp`` blocks (as opposed to ``ttt_linear_base`` / ``ttt_mlp_base``) merge Q/K with two convolutions and
gate the output, and the TTT model configs set ``pre_conv=True`` with a convolution width of 4. In the PyTorch
port these are the three switches ``share_qk``, ``use_gate`` and ``pre_conv``; TTT4Rec's released ``main.py``
leaves all three ``False``, i.e. it runs the Transformer backbone.

Norm and feed-forward choices — the official code and the paper's text disagree, so both are here:

* ``norm="rms"`` (default, **official code**): RMSNorm, ``x · rsqrt(mean(x²) + 1e-6) · w``, computed in fp32.
  ``norm="layer"`` (**paper text**, "LayerNorm"): ``nn.LayerNorm(hidden, eps=1e-6)``.
* ``ffn="swiglu"`` (default, **official code**): ``W_down(silu(W_gate x) ⊙ W_up x)``, bias-free, 64 → 256 → 64.
  ``ffn="gelu"`` (**paper text**, "two fully connected layers with a non-linear activation in between", GELU):
  ``W_2 gelu(W_1 x + b_1) + b_2`` with biases, 64 → 256 → 64.

The pre-convolution always normalises with RMSNorm in the official code; here it follows ``norm`` so that
``norm="layer"`` really replaces every RMSNorm of the block.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .ttt import TTTConfig, TTTLayer

#: What each backbone switches on. ``share_qk`` and ``use_gate`` are TTT-layer options; ``pre_conv`` is the block's.
BACKBONES: Dict[str, Dict[str, bool]] = {
    "transformer": {"pre_conv": False, "share_qk": False, "use_gate": False},
    "mamba": {"pre_conv": True, "share_qk": True, "use_gate": True},
}
NORMS = ("rms", "layer")
FFNS = ("swiglu", "gelu")


class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction, no bias): ``(..., dim) -> (..., dim)``.

    Computed in fp32 whatever the input dtype (as the official code does, so that bf16/fp16 inputs do not lose
    the small ``mean(x²)``), then cast back and scaled by the learned weight (initialised to 1).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x32.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, dim: int, eps: float = 1e-6) -> nn.Module:
    """``"rms"`` → :class:`RMSNorm` (official code), ``"layer"`` → ``nn.LayerNorm`` (paper text)."""
    if kind == "rms":
        return RMSNorm(dim, eps=eps)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class SwiGLU(nn.Module):
    """Official feed-forward block: ``(B, L, hidden) -> (B, L, hidden)``, ``down(silu(gate(x)) * up(x))``.

    Three bias-free linear maps hidden → inner, hidden → inner, inner → hidden (3 · 64 · 256 = 49,152 params).
    """

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GeluFFN(nn.Module):
    """Paper-text feed-forward block: ``(B, L, hidden) -> (B, L, hidden)``, ``fc2(gelu(fc1(x)))`` with biases.

    ``2 · 64 · 256 + 256 + 64 = 33,088`` params at the default sizes. Exact (erf) GELU, as in the GELU paper.
    """

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def make_ffn(kind: str, hidden: int, inner: int) -> nn.Module:
    """``"swiglu"`` → :class:`SwiGLU` (official code), ``"gelu"`` → :class:`GeluFFN` (paper text)."""
    if kind == "swiglu":
        return SwiGLU(hidden, inner)
    if kind == "gelu":
        return GeluFFN(hidden, inner)
    raise ValueError(f"ffn must be one of {FFNS}, got {kind!r}")


class CausalDepthwiseConv1d(nn.Module):
    """Per-channel convolution over time that only looks back: ``(B, L, C) -> (B, L, C)``.

    ``out[:, t, c] = bias[c] + Σ_{j=0}^{k-1} w[c, j] · x[:, t - (k-1) + j, c]`` with ``x`` = 0 before the start.
    Implemented as ``nn.Conv1d(groups=C, padding=k-1)`` on both sides, keeping the first ``L`` outputs — the
    outputs that would have seen the future are the ones cut off. ``C · k + C`` parameters (320 at C = 64, k = 4).
    Keeps PyTorch's default Conv1d initialisation, as the official code does.
    """

    def __init__(self, channels: int, kernel_size: int = 4):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"conv kernel_size must be >= 1, got {kernel_size}")
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, padding=kernel_size - 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq_len = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :seq_len].transpose(1, 2)


class PreConv(nn.Module):
    """The Mamba backbone's block-level pre-convolution: ``(B, L, C) -> (B, L, C)``, ``Conv(Norm(x))``.

    The block adds it as a residual, ``h = h + PreConv(h)``, before the TTT residual. It mixes each position with
    its ``kernel_size - 1`` predecessors, channel by channel — a cheap local-context feature before the TTT layer.
    """

    def __init__(self, hidden: int, kernel_size: int = 4, norm: str = "rms", eps: float = 1e-6):
        super().__init__()
        self.norm = make_norm(norm, hidden, eps)
        self.conv = CausalDepthwiseConv1d(hidden, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class ResidualBlock(nn.Module):
    """One TTT4Rec residual block: ``(B, L, hidden) -> (B, L, hidden)``, causal.

    Args:
        hidden: model width C (64).
        num_heads: TTT heads (4; head dim C / heads = 16).
        ffn_size: feed-forward inner width (256).
        backbone: ``"transformer"`` or ``"mamba"`` (see the module docstring).
        inner: the TTT inner model, ``"mlp"`` or ``"linear"``.
        mini_batch_size, base_lr, rope_base, rope_positions: passed to :class:`ttt4rec_edu.ttt.TTTLayer` (the
            defaults of the layer's options are :class:`ttt4rec_edu.ttt.TTTConfig`'s).
        norm: ``"rms"`` (official) or ``"layer"`` (paper text); ffn: ``"swiglu"`` (official) or ``"gelu"`` (paper).
        conv_kernel: width of every causal convolution of the Mamba backbone (4).
        norm_eps: epsilon of the block's norms (1e-6).
    """

    def __init__(self, hidden: int = TTTConfig.hidden_size, num_heads: int = TTTConfig.num_heads, ffn_size: int = 256,
                 backbone: str = "transformer", inner: str = TTTConfig.inner,
                 mini_batch_size: int = TTTConfig.mini_batch_size, base_lr: float = TTTConfig.base_lr,
                 rope_base: float = TTTConfig.rope_base, rope_positions: str = TTTConfig.rope_positions,
                 norm: str = "rms", ffn: str = "swiglu", conv_kernel: int = TTTConfig.conv_kernel,
                 norm_eps: float = 1e-6):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {backbone!r}")
        switches = BACKBONES[backbone]
        self.backbone = backbone
        self.pre_conv: Optional[PreConv] = (
            PreConv(hidden, conv_kernel, norm, norm_eps) if switches["pre_conv"] else None
        )
        self.seq_norm = make_norm(norm, hidden, norm_eps)
        self.ttt = TTTLayer(
            hidden, num_heads, inner=inner, mini_batch_size=mini_batch_size, base_lr=base_lr, rope_base=rope_base,
            rope_positions=rope_positions, use_gate=switches["use_gate"], share_qk=switches["share_qk"],
            conv_kernel=conv_kernel,
        )
        self.ffn_norm = make_norm(norm, hidden, norm_eps)
        self.ffn = make_ffn(ffn, hidden, ffn_size)

    def forward(self, h: torch.Tensor, mode: str = "dual",
                return_trace: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, Any]]:
        """``h (B, L, hidden) -> (B, L, hidden)``; with ``return_trace`` also the TTT layer's trace."""
        if self.pre_conv is not None:
            h = h + self.pre_conv(h)
        trace = None
        if return_trace:
            ttt_out, trace = self.ttt(self.seq_norm(h), mode=mode, return_trace=True)
        else:
            ttt_out = self.ttt(self.seq_norm(h), mode=mode)
        h = h + ttt_out
        h = h + self.ffn(self.ffn_norm(h))
        return (h, trace) if return_trace else h
