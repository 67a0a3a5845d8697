"""Mamba4Rec (Liu et al., 2024): a selective state-space model (Mamba) as the sequence encoder.

The whole model, as in the official code (chengkai-liu/Mamba4Rec, built on RecBole 1.2)::

    item ids (batch, seq) → embedding (batch, seq, hidden) → Dropout → LayerNorm
      → MambaLayer × num_layers → hidden state at the last real position (batch, hidden)
      → scores = hidden @ item_embedding.T  (batch, num_items + 1)

    MambaLayer(x):  h = Mamba(x)
                    h = LayerNorm(Dropout(h))          if num_layers == 1 (the official code adds no residual)
                    h = LayerNorm(Dropout(h) + x)      if num_layers > 1
                    return FeedForward(h)              (Linear 4×hidden → GELU → Dropout → Linear → Dropout,
                                                        residual, LayerNorm)

Defaults (Mamba4Rec's ``config.yaml``): hidden_size 64, num_layers 1, dropout_prob 0.2, d_state 32, d_conv 4,
expand 2, LayerNorm eps 1e-12, CE loss over all items. No position embedding: the causal convolution and the
recurrence know the order. Initialisation as the official model: every ``Linear`` and ``Embedding`` weight
~ N(0, 0.02²), every ``Linear`` bias = 0. That re-initialisation runs after the Mamba block is built, so it also
overwrites Mamba's own Δ initialisation (``dt_proj`` bias = inverse softplus of a log-uniform Δ in
[0.001, 0.1]): in Mamba4Rec, Δ starts near softplus(0) ≈ 0.69. ``A_log`` (S4D-real: A = −(1, 2, …, d_state)
for every channel), ``D`` (ones) and the convolution keep Mamba's initialisation.

The Mamba block (Gu & Dao, 2023), for one token stream ``u`` of shape (batch, seq, hidden)::

    x, z  = in_proj(u).chunk(2)                       # (batch, seq, d_inner) each, d_inner = expand·hidden
    x     = SiLU(causal depthwise conv1d(x))          # kernel d_conv, left padding only
    Δ, B, C = x_proj(x).split(dt_rank, d_state, d_state)
    Δ     = softplus(dt_proj(Δ))                      # (batch, seq, d_inner), input-dependent step size
    A     = −exp(A_log)                               # (d_inner, d_state), negative → decaying state
    h_t   = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t    # state (batch, d_inner, d_state)
    y_t   = h_t · C_t + D ⊙ x_t
    out   = out_proj(y ⊙ SiLU(z))

The recurrence is the *selective scan*. :func:`selective_scan_reference` is the per-token loop (the equation
above, line by line); :func:`selective_scan_chunked` computes the same numbers with far fewer sequential steps:
a parallel (doubling) scan inside chunks and a carried state between chunks. :func:`selective_scan` picks one:
the loop on the CPU (fastest there, see its docstring), the chunked scan on a GPU, and the fused CUDA kernel of
the optional ``mamba-ssm`` package when it is installed and the tensors are on a GPU; nothing here requires it.
Under autograd the pure-PyTorch scans keep every step's (batch, d_inner, d_state) state for the backward pass,
about batch · seq · d_inner · d_state floats per layer; the fused kernel recomputes them instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ttt4rec_edu.models import (ItemScoringModel, MAX_DEPTH, MAX_WIDTH, check_batch, check_dropout, check_number,
                                check_size, gather_last, register_model)

try:  # the optional fused kernel; any failure (not installed, built for another torch) means "not available"
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan_fn
except Exception:  # noqa: BLE001 - an optional accelerator must never break the import of this module
    _cuda_selective_scan_fn = None

SCAN_IMPLEMENTATIONS = ("auto", "reference", "chunked", "cuda")


def cuda_kernel_available() -> bool:
    """True when ``mamba-ssm``'s selective-scan CUDA kernel imported and a CUDA GPU is visible."""
    return _cuda_selective_scan_fn is not None and torch.cuda.is_available()


def _check_scan_shapes(x, delta, A, B, C, D) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, seq, d_inner), got shape {tuple(x.shape)}")
    batch, seq, d_inner = x.shape
    if delta.shape != x.shape:
        raise ValueError(f"delta must have the shape of x {tuple(x.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d_inner:
        raise ValueError(f"A must be (d_inner={d_inner}, d_state), got {tuple(A.shape)}")
    d_state = A.shape[1]
    for name, mat in (("B", B), ("C", C)):
        if mat.shape != (batch, seq, d_state):
            raise ValueError(f"{name} must be (batch, seq, d_state)={(batch, seq, d_state)}, got {tuple(mat.shape)}")
    if D is not None and D.shape != (d_inner,):
        raise ValueError(f"D must be (d_inner,)=({d_inner},), got {tuple(D.shape)}")


def selective_scan_reference(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The selective scan as a plain loop over time — the definition the faster versions must match.

    x, delta: (batch, seq, d_inner) — input and (already softplus-ed, positive) step size Δ.
    A: (d_inner, d_state) — negative; B, C: (batch, seq, d_state); D: (d_inner,) skip weight or None.
    Returns y: (batch, seq, d_inner) with h_t = exp(Δ_t A) h_{t−1} + Δ_t x_t B_t, y_t = C_t·h_t + D x_t, h_0 = 0.
    """
    _check_scan_shapes(x, delta, A, B, C, D)
    batch, seq, d_inner = x.shape
    state = x.new_zeros(batch, d_inner, A.shape[1])                      # (batch, d_inner, d_state)
    outputs = []
    for t in range(seq):
        decay = torch.exp(delta[:, t, :, None] * A)                       # (batch, d_inner, d_state), in (0, 1]
        drive = (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]    # (batch, d_inner, d_state)
        state = decay * state + drive
        outputs.append((state * C[:, t, None, :]).sum(-1))                 # (batch, d_inner)
    y = torch.stack(outputs, dim=1)
    return y if D is None else y + x * D


def selective_scan_chunked(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    chunk_size: int = 16,
) -> torch.Tensor:
    """Same result as :func:`selective_scan_reference` in ``ceil(seq / T) · (1 + ceil(log₂ T))`` sequential rounds
    of tensor operations instead of ``seq`` (T = ``chunk_size``; shapes as in the reference).

    The recurrence h_t = a_t h_{t−1} + b_t is a composition of affine maps, which is associative:
    (a₁, b₁) then (a₂, b₂) = (a₂a₁, a₂b₁ + b₂). Inside a chunk of T tokens a doubling (Hillis–Steele) scan
    combines each position with the one k = 1, 2, 4, … steps back; after log₂T rounds position t holds
    (∏_{s≤t} a_s, Σ_{s≤t} (∏_{s<r≤t} a_r) b_s) — the cumulative decay of the chunk and the state reached from a
    zero start. The state carried in from the previous chunk then enters as ``cumulative decay × carry``.
    Every factor is a decay in (0, 1], so nothing can overflow (unlike dividing by cumulative decays).
    Memory: a few (batch, chunk_size, d_inner, d_state) tensors at a time.
    """
    _check_scan_shapes(x, delta, A, B, C, D)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, seq, d_inner = x.shape
    carry = x.new_zeros(batch, 1, d_inner, A.shape[1])                   # state entering the chunk
    drive_all = delta * x                                                 # (batch, seq, d_inner)
    outputs = []
    for start in range(0, seq, chunk_size):
        stop = min(start + chunk_size, seq)
        decay = torch.exp(delta[:, start:stop, :, None] * A)             # (batch, T, d_inner, d_state)
        state = drive_all[:, start:stop, :, None] * B[:, start:stop, None, :]
        step = 1
        while step < stop - start:  # doubling scan: combine with the partial result `step` positions back
            state = torch.cat([state[:, :step], state[:, step:] + decay[:, step:] * state[:, :-step]], dim=1)
            decay = torch.cat([decay[:, :step], decay[:, step:] * decay[:, :-step]], dim=1)
            step *= 2
        state = state + decay * carry                                     # add what flows in from earlier chunks
        outputs.append(torch.einsum("btdn,btn->btd", state, C[:, start:stop]))
        carry = state[:, -1:]
    y = torch.cat(outputs, dim=1) if outputs else x.new_zeros(x.shape)
    return y if D is None else y + x * D


def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    impl: str = "auto",
    chunk_size: int = 16,
) -> torch.Tensor:
    """Dispatch. ``"auto"``: on a GPU, the ``mamba-ssm`` CUDA kernel when that package is installed (and the
    dtype is not float64, which the kernel does not take), else :func:`selective_scan_chunked`; on the CPU,
    the reference loop. Why the loop on the CPU: its per-step state (batch, d_inner, d_state) stays in cache,
    while the chunked scan streams log₂(chunk) passes over (batch, chunk, d_inner, d_state) blocks; measured
    with ``benchmarks/bench_scan.py`` on a busy 2-core CPU the loop was about 2–16× faster. The chunked scan's gain is
    fewer sequential steps, which is what counts where every step is a kernel launch (a GPU).
    ``"reference"``, ``"chunked"`` and ``"cuda"`` force one implementation. Shapes as in the reference."""
    if impl not in SCAN_IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {SCAN_IMPLEMENTATIONS}, got {impl!r}")
    use_cuda = impl == "cuda" or (
        impl == "auto" and _cuda_selective_scan_fn is not None and x.is_cuda and x.dtype != torch.float64
    )
    if use_cuda:
        if _cuda_selective_scan_fn is None or not x.is_cuda:
            raise RuntimeError("impl='cuda' needs the mamba-ssm package and CUDA tensors")
        _check_scan_shapes(x, delta, A, B, C, D)
        # The kernel wants channels-first (batch, d_inner, seq) and (batch, d_state, seq).
        y = _cuda_selective_scan_fn(
            x.transpose(1, 2).contiguous(),
            delta.transpose(1, 2).contiguous(),
            A.contiguous(),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            None if D is None else D.float(),
        )
        return y.transpose(1, 2)
    if impl == "reference" or (impl == "auto" and not x.is_cuda):
        return selective_scan_reference(x, delta, A, B, C, D)
    return selective_scan_chunked(x, delta, A, B, C, D, chunk_size=chunk_size)


class MambaBlock(nn.Module):
    """One Mamba (S6) block: (batch, seq, d_model) → (batch, seq, d_model), causal in ``seq``."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan_impl: str = "auto",
        chunk_size: int = 16,
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)  # Mamba's "auto" rank for the Δ projection
        self.scan_impl, self.chunk_size = scan_impl, chunk_size

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        # Depthwise (one filter per channel) and causal: pad d_conv − 1 on both sides, keep the first seq outputs.
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # Mamba's Δ initialisation: weight ~ U(±dt_rank^-1/2), bias = softplus⁻¹(Δ₀) with Δ₀ log-uniform.
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        dt0 = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt0 = dt0.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt0 + torch.log(-torch.expm1(-dt0)))  # inverse of softplus
        # S4D-real: A[c, n] = −(n + 1) for every channel c, stored as log so that A stays negative.
        a_init = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a_init))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (batch, seq, d_model) → (batch, seq, d_model)."""
        seq = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                           # (batch, seq, d_inner) each
        x = self.conv1d(x.transpose(1, 2))[..., :seq].transpose(1, 2)          # drop the look-ahead outputs
        x = F.silu(x)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))                                   # (batch, seq, d_inner) > 0
        # The recurrence multiplies many decays: run it in float32 at least, also under bf16/fp16 autocast.
        dtype = torch.promote_types(x.dtype, torch.float32)
        A = -torch.exp(self.A_log.to(dtype))                                   # (d_inner, d_state) < 0
        y = selective_scan(x.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), self.D.to(dtype),
                           impl=self.scan_impl, chunk_size=self.chunk_size)
        return self.out_proj(y * F.silu(z))


class PositionwiseFeedForward(nn.Module):
    """Mamba4Rec's FeedForward: LayerNorm(x + Dropout(W₂ Dropout(GELU(W₁ x)))), (batch, seq, d) → same."""

    def __init__(self, d_model: int, inner_size: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, inner_size)
        self.w_2 = nn.Linear(inner_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.gelu(self.w_1(x)))
        return self.layer_norm(self.dropout(self.w_2(h)) + x)


class MambaLayer(nn.Module):
    """Mamba block → Dropout → (residual when stacked) LayerNorm → position-wise feed-forward."""

    def __init__(self, cfg: "Mamba4RecConfig"):
        super().__init__()
        self.residual = cfg.num_layers > 1  # the official code: a single layer has no residual around Mamba
        self.mamba = MambaBlock(cfg.hidden_size, cfg.d_state, cfg.d_conv, cfg.expand,
                                scan_impl=cfg.scan_impl, chunk_size=cfg.chunk_size)
        self.dropout = nn.Dropout(cfg.dropout_prob)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)
        self.ffn = PositionwiseFeedForward(cfg.hidden_size, cfg.ffn_multiplier * cfg.hidden_size, cfg.dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.mamba(x))
        h = self.layer_norm(h + x if self.residual else h)
        return self.ffn(h)


@dataclass
class Mamba4RecConfig:
    """Mamba4Rec's defaults (official ``config.yaml``); ``scan_impl``/``chunk_size`` only choose how to compute."""

    hidden_size: int = 64
    num_layers: int = 1
    dropout_prob: float = 0.2
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    ffn_multiplier: int = 4
    initializer_range: float = 0.02
    scan_impl: str = "auto"
    chunk_size: int = 16

    def __post_init__(self) -> None:
        check_size("hidden_size", self.hidden_size)
        check_size("num_layers", self.num_layers, MAX_DEPTH)
        check_dropout("dropout_prob", self.dropout_prob)
        check_size("d_state", self.d_state)
        check_size("d_conv", self.d_conv)
        check_size("expand", self.expand)
        check_size("ffn_multiplier", self.ffn_multiplier)
        for name, multiplier in (("expand", self.expand), ("ffn_multiplier", self.ffn_multiplier)):
            if self.hidden_size * multiplier > MAX_WIDTH:
                raise ValueError(f"hidden_size * {name} must be at most {MAX_WIDTH}, got {self.hidden_size} * "
                                 f"{multiplier}")
        check_number("initializer_range", self.initializer_range)
        if self.scan_impl not in SCAN_IMPLEMENTATIONS:
            raise ValueError(f"scan_impl must be one of {SCAN_IMPLEMENTATIONS}, got {self.scan_impl!r}")
        check_size("chunk_size", self.chunk_size)


@register_model("mamba4rec", config=Mamba4RecConfig, role="baseline", published=2024)
class Mamba4Rec(ItemScoringModel):
    """``mamba4rec``: score_all(item_seq (batch, seq), lengths (batch,)) → (batch, num_items + 1)."""

    def __init__(self, num_items: int, max_len: int, cfg: Optional[Mamba4RecConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or Mamba4RecConfig()
        if cfg.scan_impl not in SCAN_IMPLEMENTATIONS:
            raise ValueError(f"scan_impl must be one of {SCAN_IMPLEMENTATIONS}, got {cfg.scan_impl!r}")
        self.num_items, self.max_len = num_items, max_len
        self.item_embedding = nn.Embedding(num_items + 1, cfg.hidden_size, padding_idx=0)
        self.dropout = nn.Dropout(cfg.dropout_prob)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)
        self.layers = nn.ModuleList([MambaLayer(cfg) for _ in range(cfg.num_layers)])
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # As the official Mamba4Rec (this also resets Mamba's dt_proj, see the module docstring).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids, (batch,) lengths → (batch, hidden): the output at the last real position.
        The encoder is causal, so right padding (and anything after ``lengths``) cannot reach it."""
        check_batch(item_seq, lengths, self.num_items)
        hidden = self.layer_norm(self.dropout(self.item_embedding(item_seq)))  # (batch, seq, hidden)
        for layer in self.layers:
            hidden = layer(hidden)
        return gather_last(hidden, lengths)

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, hidden): output scores are ``encode @ item_table().T`` (shared input embedding)."""
        return self.item_embedding.weight
