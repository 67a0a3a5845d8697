"""The TTT layer: a sequence layer whose hidden state is a small model trained *while it reads* the sequence.

Paper (TTT4Rec, Sec. 3.3) in row-vector notation, per head, for token ``t`` with block input ``x_t``::

    training view   k_t = x_t θ_K        label view  v_t = x_t θ_V        test view  q_t = x_t θ_Q
    inner loss      ℓ_t(W) = ½ ‖ f(k_t; W) − v_t ‖²
    update          W_t = W_{t−1} − η_t ∇ℓ_t(W_{t−1})
    output          z_t = f(q_t; W_t)

The official code — ttt-lm-pytorch (https://github.com/test-time-training/ttt-lm-pytorch), which TTT4Rec
(https://github.com/ZhaoqiZachYang/TTT4Rec) copies verbatim — computes this with a few extra ingredients, all
implemented here:

* inner model ``f(x; W) = x + LN(f_res(x; W))`` with ``f_res`` Linear (``f × f`` + bias) or an MLP
  (``f → 4f → f``, tanh-GELU), one per head, starting every sequence from learned weights ``W0``;
* a learned, token-wise step ``η_t = base_lr · sigmoid(x_t·w_h + b_h) / f`` and an in-mini-batch factor
  ``τ_i = max(0, 1/i + δ_i)`` with learnable ``δ``;
* **mini-batch TTT**: tokens are processed in chunks of ``b``; all gradients of a chunk are taken at the
  chunk-start weights ``W``, and token ``i`` of the chunk reads with ``W_i = W − τ_i Σ_{j≤i} η_j ∇ℓ_j(W)``;
* RoPE on ``q``/``k`` (``ttt4rec_edu.rope``), a LayerNorm over heads, an optional GELU gate and ``θ_O``.

Three ways to run the inner loop (``TTTLayer.forward(x, mode=...)``), same parameters:

``"token_loop"``      the paper's equations literally, one token at a time, the inner gradient taken by
                      ``torch.autograd`` (``create_graph=True`` so the outer loop learns through it).
                      Needs ``mini_batch_size = 1`` — with ``b = 1`` mini-batch TTT *is* online GD.
``"minibatch_loop"``  the official semantics, written with explicit per-token weights ``W_i`` and the
                      hand-derived gradients (``ln_fused_l2_bwd``, ``gelu_bwd``; see ``inner_gradients``).
``"dual"``            (default) the same numbers without ever forming a per-token weight matrix: the sums
                      over ``j ≤ i`` become causal (``tril``) ``b × b`` matrices. This is what the official
                      code runs and what trains fast.

Where the paper's equations live: the inner loss is ``inner_loss``, the output ``f(q_t; W_t)`` is
``inner_model``, the update ``W_t = W_{t−1} − η_t ∇ℓ_t`` is the loop body of ``TTTLayer.token_loop`` (and, for
mini-batches, ``explicit_token_weights``); ``TTTLayer.dual`` derives the closed form in its docstring.
``TTTLayer.forward(x, return_trace=True)`` hands back every ``W_t`` (``TTTTrace``) for plotting.

Building a layer: :class:`TTTConfig` holds (and checks) every hyper-parameter and its default;
``TTTLayer(hidden_size, num_heads, **options)`` or ``TTTLayer.from_config(config)``. :data:`INNER_MODELS` and
:data:`MODES` name the inner models and the inner-loop modes (the model, ``ttt4rec_edu.ttt4rec``, uses these).
Loading the official layer's weights: ``ttt4rec_edu.official_weights``.

Shapes: ``B`` batch, ``L`` sequence length, ``C`` hidden size, ``nh`` heads, ``f = C / nh`` head size,
``d`` the inner hidden width (``f`` for Linear, ``4f`` for MLP), ``b`` mini-batch size. Inner weights are
per head and act on row vectors: ``z = x W + c`` with ``W: (f, d)``, ``c: (d,)``.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ttt4rec_edu.rope import POSITION_MODES, apply_rope, rope_positions, rope_turns, rotate_pairs
from ttt4rec_edu.ttt_scan import dual_scan, pair_chunks

#: How ``TTTLayer.forward(x, mode=...)`` runs the inner loop (same numbers; "dual" is the default, the fast one).
MODES = ("dual", "minibatch_loop", "token_loop")
#: The inner model f: TTT-Linear or TTT-MLP (the released model runs TTT-MLP).
INNER_MODELS = ("linear", "mlp")
INNER_LN_EPS = 1e-6
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# A list of per-layer (weight, bias) pairs: Linear → [(W1, c1)], MLP → [(W1, c1), (W2, c2)].
# Batched shapes: W (B, nh, fan_in, fan_out), c (B, nh, 1, fan_out), or with a per-token axis after nh.
InnerParams = List[Tuple[torch.Tensor, torch.Tensor]]


# ------------------------------------------------------------------------------------------------------------
# Small differentiable pieces: the inner LayerNorm, its fused backward with the L2 loss, and GELU's derivative
# ------------------------------------------------------------------------------------------------------------

def inner_layer_norm(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per-head LayerNorm over the last axis (population variance, eps 1e-6). z: (B, nh, ..., f); γ, β: (nh, 1, f)."""
    z_hat = F.layer_norm(z, z.shape[-1:], eps=INNER_LN_EPS)
    return gamma * z_hat + beta


def ln_fused_l2_bwd(z: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Gradient of ``½ ‖LN(z) − target‖²`` with respect to ``z`` (the standard LayerNorm input gradient).

    With ``ẑ = (z − mean) / σ`` and ``ĝ = γ ⊙ (LN(z) − target)``:
    ``∂ℓ/∂z = (f ĝ − Σ ĝ − ẑ Σ(ĝ ⊙ ẑ)) / (f σ)``.  Shapes: z, target (..., f); γ, β broadcastable to z.
    """
    centered = z - z.mean(dim=-1, keepdim=True)
    inv_std = torch.rsqrt(centered.pow(2).mean(dim=-1, keepdim=True) + INNER_LN_EPS)   # 1 / σ
    z_hat = centered * inv_std
    g_hat = gamma * (gamma * z_hat + beta - target)
    # (f ĝ − Σ ĝ − ẑ Σ(ĝ ẑ)) / (f σ), with the sums written as means
    return (g_hat - g_hat.mean(dim=-1, keepdim=True) - z_hat * (g_hat * z_hat).mean(dim=-1, keepdim=True)) * inv_std


def _ln_l2_grad(z: torch.Tensor, gamma_sq: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """:func:`ln_fused_l2_bwd` with ``γ²`` and ``γ ⊙ (β − target)`` computed by the caller (``ĝ = γ² ẑ + offset``),
    so a scan computes them once for all its chunks. Same formula, fewer small ops (``TTTLayer.dual_fast``)."""
    var, mean = torch.var_mean(z, dim=-1, keepdim=True, correction=0)
    inv_std = torch.rsqrt(var + INNER_LN_EPS)                                           # 1 / σ
    z_hat = (z - mean) * inv_std
    g_hat = torch.addcmul(offset, gamma_sq, z_hat)
    return (g_hat - g_hat.mean(dim=-1, keepdim=True) - z_hat * (g_hat * z_hat).mean(dim=-1, keepdim=True)) * inv_std


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (as the official JAX/PyTorch code)."""
    return F.gelu(x, approximate="tanh")


def gelu_bwd(x: torch.Tensor) -> torch.Tensor:
    """Derivative of the tanh-approximate GELU: ``½(1+t) + ½ x (1−t²) u′`` with ``t = tanh(u)``,
    ``u = √(2/π)(x + 0.044715 x³)``, ``u′ = √(2/π)(1 + 3·0.044715 x²)``. Written with ``½(1+t) = σ(2u)`` and
    ``½(1−t) = σ(−2u)``, which avoids the cancellation in ``1 ± t`` where GELU saturates (|x| ≳ 4) in float32."""
    u = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
    s_pos, s_neg = torch.sigmoid(2 * u), torch.sigmoid(-2 * u)
    return s_pos + 2 * x * s_pos * s_neg * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)


def gelu_bwd2(x: torch.Tensor) -> torch.Tensor:
    """Second derivative of the tanh-approximate GELU: ``(1−t²)(u′ + 3·0.044715·√(2/π) x² − x t u′²)``
    (needed by the outer loop, which differentiates through ``gelu_bwd``)."""
    u = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
    du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    s_pos, s_neg = torch.sigmoid(2 * u), torch.sigmoid(-2 * u)
    return 4 * s_pos * s_neg * (du + 3 * 0.044715 * _SQRT_2_OVER_PI * x * x - x * (s_pos - s_neg) * du * du)


class _GeluWithSlope(torch.autograd.Function):
    """``(gelu(x), gelu′(x))`` as one autograd node — a speed-up only: the inner gradient needs both, and the
    outer loop's backward through them is then two short expressions instead of a long chain of small ops.
    First-order only (``once_differentiable``): the outer loop needs d/dx of the inner gradient, never more."""

    # Same formulas as gelu_bwd / gelu_bwd2, sharing σ(±2u) between the value, the slope and the curvature.
    @staticmethod
    def forward(ctx, x):
        du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)                 # u′
        two_u = (2 * _SQRT_2_OVER_PI) * (x + 0.044715 * x ** 3)
        s_pos, s_neg = torch.sigmoid(two_u), torch.sigmoid(-two_u)       # ½(1 + t), ½(1 − t)
        bump = 2 * s_pos * s_neg                                         # ½(1 − t²)
        slope = s_pos + x * bump * du
        ctx.save_for_backward(x, du, s_pos, s_neg, bump, slope)
        return x * s_pos, slope

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value, grad_slope):
        x, du, s_pos, s_neg, bump, slope = ctx.saved_tensors
        grad = grad_value * slope if grad_value is not None else torch.zeros_like(x)
        if grad_slope is not None:
            curvature = 2 * bump * (du + (3 * 0.044715 * _SQRT_2_OVER_PI) * x * x - x * (s_pos - s_neg) * du * du)
            grad = grad + grad_slope * curvature
        return grad


def gelu_with_slope(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``gelu(x), gelu′(x)`` (tanh approximation), differentiable, in one autograd node."""
    return _GeluWithSlope.apply(x)


# ------------------------------------------------------------------------------------------------------------
# The inner model f(x; W) = x + LN(f_res(x; W)) and its loss
# ------------------------------------------------------------------------------------------------------------

def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x W + c`` for x (B, nh, n, fan_in). W is shared by the n tokens — (B, nh, fan_in, fan_out) — or one per
    token — (B, nh, n, fan_in, fan_out) with c (B, nh, n, fan_out)."""
    if weight.dim() == x.dim() + 1:
        return (x.unsqueeze(-2) @ weight).squeeze(-2) + bias
    return x @ weight + bias


def inner_residual(x: torch.Tensor, params: InnerParams) -> torch.Tensor:
    """``f_res(x; W)``: Linear, or Linear → GELU → Linear. x: (B, nh, n, f) → (B, nh, n, f)."""
    for layer, (weight, bias) in enumerate(params):
        if layer > 0:
            x = gelu(x)
        x = _affine(x, weight, bias)
    return x


def inner_model(x: torch.Tensor, params: InnerParams, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``f(x; W) = x + LN(f_res(x; W))``: the residual keeps ``x`` in the output, and the LayerNorm brings the
    correction to unit scale whatever ``W`` is, so ``f`` does not start near the identity (chapter 3, §3.4(a))."""
    return x + inner_layer_norm(inner_residual(x, params), gamma, beta)


def inner_loss(k: torch.Tensor, v: torch.Tensor, params: InnerParams, gamma: torch.Tensor,
               beta: torch.Tensor) -> torch.Tensor:
    """Self-supervised loss ``ℓ(W) = ½ ‖f(k; W) − v‖²`` per token: (B, nh, n, f) → (B, nh, n)."""
    return 0.5 * (inner_model(k, params, gamma, beta) - v).pow(2).sum(dim=-1)


def inner_gradients(k: torch.Tensor, v: torch.Tensor, params: InnerParams, gamma: torch.Tensor,
                    beta: torch.Tensor, z1: Optional[torch.Tensor] = None) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per-token gradient pieces of ``ℓ_j`` at the weights ``params`` (the chunk-start state), by hand.

    Returns, per inner layer, ``(a_j, g_j)``: the layer's input and the gradient at its output, so that
    ``∇_W ℓ_j = a_jᵀ g_j`` and ``∇_c ℓ_j = g_j``.  Shapes (B, nh, n, fan_in) and (B, nh, n, fan_out).
    The target of the inner LN is ``v − k`` because of the residual in ``f``. ``z1 = k W1 + c1`` may be passed
    in when the caller has already computed it.
    """
    if len(params) == 1:
        (w1, c1), = params
        z1 = k @ w1 + c1 if z1 is None else z1
        return [(k, ln_fused_l2_bwd(z1, v - k, gamma, beta))]
    (w1, c1), (w2, c2) = params
    z1 = k @ w1 + c1 if z1 is None else z1
    h, gelu_slope = gelu_with_slope(z1)                        # gelu(z1) and gelu′(z1)
    z2 = h @ w2 + c2
    g2 = ln_fused_l2_bwd(z2, v - k, gamma, beta)
    g1 = (g2 @ w2.transpose(-1, -2)) * gelu_slope              # chain rule through W2 and the GELU
    return [(k, g1), (h, g2)]


def explicit_token_weights(params: InnerParams, pieces, lr: torch.Tensor, tau: torch.Tensor) -> InnerParams:
    """Mini-batch TTT, primal form: ``W_i = W − τ_i Σ_{j≤i} η_j a_jᵀ g_j`` and ``c_i = c − τ_i Σ_{j≤i} η_j g_j``.

    params: chunk-start state; pieces: ``inner_gradients`` at that state; lr: η_j (B, nh, n); tau: τ_i (n,).
    Returns per-token weights, W (B, nh, n, fan_in, fan_out) and c (B, nh, n, fan_out).
    """
    tau = tau[:, None]                                                         # (n, 1)
    out = []
    for (weight, bias), (a, g) in zip(params, pieces):
        eta_g = lr.unsqueeze(-1) * g                                           # η_j g_j
        sum_grad_w = torch.cumsum(a.unsqueeze(-1) * eta_g.unsqueeze(-2), dim=2)  # Σ_{j≤i} η_j a_jᵀ g_j
        sum_grad_c = torch.cumsum(eta_g, dim=2)                                # Σ_{j≤i} η_j g_j
        out.append((weight.unsqueeze(2) - tau.unsqueeze(-1) * sum_grad_w, bias - tau * sum_grad_c))
    return out


# ------------------------------------------------------------------------------------------------------------
# The trace: W_t for every position, for plotting how a user's sequence moves the inner model
# ------------------------------------------------------------------------------------------------------------

@dataclass
class TTTTrace:
    """What the inner loop did, per batch element, head and position ``t`` (0-based).

    W1: (B, nh, L, f, d) and b1: (B, nh, L, d) — the inner weights ``W_t`` token ``t`` reads its output with
    (after its own update); d = f (Linear) or 4f (MLP).  W2: (B, nh, L, 4f, f), b2: (B, nh, L, f) for MLP, else None.
    loss_before / loss_after: (B, nh, L) — ``ℓ_t(W_{t−1})`` and ``ℓ_t(W_t)`` (``W_{−1}`` = W0).
    eta: (B, nh, L) — the learned step ``η_t = base_lr · sigmoid(x_t·w_h + b_h) / f`` (0 when ``adapt`` is off).
    tau: (L,) — ``τ_i`` for the in-mini-batch index of each position.
    With mini-batches (b > 1), ``W_t`` is the *effective* weight of token t: gradients frozen at the chunk start.
    """

    W1: torch.Tensor
    b1: torch.Tensor
    W2: Optional[torch.Tensor]
    b2: Optional[torch.Tensor]
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    eta: torch.Tensor
    tau: torch.Tensor

    def params_at(self, t: int) -> InnerParams:
        """The inner weights of position ``t`` in the ``InnerParams`` layout (biases as (B, nh, 1, d))."""
        params = [(self.W1[:, :, t], self.b1[:, :, t, None])]
        if self.W2 is not None:
            params.append((self.W2[:, :, t], self.b2[:, :, t, None]))
        return params


class _TraceRecorder:
    """Collects per-chunk pieces of a trace and concatenates them along the sequence axis."""

    def __init__(self):
        self.weights: List[InnerParams] = []
        self.loss_before: List[torch.Tensor] = []
        self.loss_after: List[torch.Tensor] = []

    def add_chunk(self, start: InnerParams, token_params: InnerParams, k, v, gamma, beta):
        """start: state before the chunk; token_params: per-token weights W_i of the chunk."""
        previous = [(torch.cat([w.unsqueeze(2), tw[:, :, :-1]], dim=2), torch.cat([c, tc[:, :, :-1]], dim=2))
                    for (w, c), (tw, tc) in zip(start, token_params)]            # W_{i−1}, with W_0 = start
        self.weights.append([(w.detach(), c.detach()) for w, c in token_params])
        self.loss_before.append(inner_loss(k, v, previous, gamma, beta).detach())
        self.loss_after.append(inner_loss(k, v, token_params, gamma, beta).detach())

    def finish(self, lr: torch.Tensor, tau_per_position: torch.Tensor) -> TTTTrace:
        layers = [[chunk[layer] for chunk in self.weights] for layer in range(len(self.weights[0]))]
        cat = [(torch.cat([w for w, _ in chunks], 2), torch.cat([c for _, c in chunks], 2)) for chunks in layers]
        (w1, b1), (w2, b2) = cat[0], (cat[1] if len(cat) > 1 else (None, None))
        return TTTTrace(W1=w1, b1=b1, W2=w2, b2=b2, loss_before=torch.cat(self.loss_before, 2),
                        loss_after=torch.cat(self.loss_after, 2), eta=lr.detach(), tau=tau_per_position.detach())


# ------------------------------------------------------------------------------------------------------------
# Optional: the dual-form scan through torch.compile
# ------------------------------------------------------------------------------------------------------------

#: ``TTT4REC_COMPILE=1`` in the environment: ``forward(mode="dual")`` runs ``torch.compile(TTTLayer.dual_fast)``.
#: Inductor fuses the scan's many small elementwise ops: on a CPU the scan's forward + backward took 0.53x the
#: time of the same scan run eagerly through autograd (B 256, L 50; measured before ``ttt4rec_edu.ttt_scan``),
#: after a compile of minutes (and one more per new shape). Off by default; if compiling fails (no C++ compiler,
#: an unsupported op), a warning and the eager path.
COMPILE_ENV = "TTT4REC_COMPILE"
_COMPILED: dict = {}


def _compiled_dual_fast(layer: "TTTLayer", q, k, v, lr, tau) -> torch.Tensor:
    if _COMPILED.get("failed"):
        return layer.dual_fast(q, k, v, lr, tau)[0]
    if "fn" not in _COMPILED:
        # the scan through autograd: Inductor fuses its elementwise ops (the hand-written backward is eager code)
        _COMPILED["fn"] = torch.compile(lambda self, *args: TTTLayer.dual_fast(self, *args, hand_backward=False)[0])
    try:
        return _COMPILED["fn"](layer, q, k, v, lr, tau)
    except Exception as err:      # noqa: BLE001 — any compiler failure: say so once, then run eager
        _COMPILED["failed"] = True
        warnings.warn(f"{COMPILE_ENV}=1 but torch.compile failed ({type(err).__name__}: {err}); running eager",
                      stacklevel=2)
        return layer.dual_fast(q, k, v, lr, tau)[0]


# ------------------------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------------------------

def check_int(name: str, value, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``; the message names the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (an integer), got {value!r}")


def check_real(name: str, value, minimum: float = 0.0, allow_minimum: bool = False) -> None:
    """``ValueError`` unless ``value`` is a finite real number ``> minimum`` (``>=`` with ``allow_minimum``).

    NaN and ±inf are refused: no option of the layer or the model means anything with them (a NaN base_lr would
    make every output NaN without a word)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value >= minimum if allow_minimum else value > minimum))
    if not ok:
        raise ValueError(f"{name} must be {'>=' if allow_minimum else '>'} {minimum} (a finite number), got {value!r}")


@dataclass
class TTTConfig:
    """Hyper-parameters of one :class:`TTTLayer` — the one place their defaults live (the model's
    ``TTT4RecConfig`` and the backbones' ``ResidualBlock`` take theirs from here). Checked when built: a bad value
    raises one ``ValueError`` that names the option.

    hidden_size C and num_heads nh (C divisible by nh; head size f = C / nh); inner ∈ :data:`INNER_MODELS`;
    mini_batch_size b (b = 1 is online GD); base_lr scales η_t; rope_base μ and rope_positions ∈
    ``ttt4rec_edu.rope.POSITION_MODES`` ("minibatch": t mod b, official; "sequence": t, the paper's text);
    use_gate / share_qk switch on the Mamba backbone's GELU gate / merged Q-K projection with two causal depthwise
    convolutions of width conv_kernel; init_std is the standard deviation of the N(0, σ) initialisation.
    """

    hidden_size: int = 64
    num_heads: int = 4
    inner: str = "mlp"
    mini_batch_size: int = 8
    base_lr: float = 1.0
    rope_base: float = 1000.0
    rope_positions: str = "minibatch"
    use_gate: bool = False
    share_qk: bool = False
    conv_kernel: int = 4
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_int("hidden_size", self.hidden_size)
        check_int("num_heads", self.num_heads)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size must be a multiple of num_heads: {self.hidden_size} is not divisible "
                             f"by {self.num_heads}")
        if self.inner not in INNER_MODELS:
            raise ValueError(f"inner must be one of {INNER_MODELS}, got {self.inner!r}")
        check_int("mini_batch_size", self.mini_batch_size)
        check_real("base_lr", self.base_lr)
        check_real("rope_base", self.rope_base)
        if self.rope_positions not in POSITION_MODES:
            raise ValueError(f"rope_positions must be one of {POSITION_MODES}, got {self.rope_positions!r}")
        for name in ("use_gate", "share_qk"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_int("conv_kernel", self.conv_kernel)
        check_real("init_std", self.init_std, allow_minimum=True)


_OPTION_NAMES = {f.name for f in fields(TTTConfig)} - {"hidden_size", "num_heads"}


class TTTLayer(nn.Module):
    """TTT-Linear / TTT-MLP layer. ``forward(x: (B, L, C)) -> (B, L, C)``.

    Two ways to build one, same result: ``TTTLayer(hidden_size, num_heads, **options)`` with the options of
    :class:`TTTConfig` by keyword (``TTTLayer(64, 4, inner="linear", mini_batch_size=1)``), or
    ``TTTLayer.from_config(config)`` from a :class:`TTTConfig`. Either way the layer keeps its own checked
    :class:`TTTConfig` in ``self.config`` and reads every hyper-parameter from there (``hidden_size``,
    ``num_heads``, ``inner``, ``mini_batch_size`` and ``head_dim`` are read-only views of it).

    ``adapt`` (attribute, default True): when False the inner step size is 0, so ``W_t = W0`` for every position
    and the output is ``f(q_t; W0)`` — the "no adaptation at test time" ablation. Set it with ``layer.adapt = False``.
    """

    def __init__(self, hidden_size: int, num_heads: int, **options: Any):
        super().__init__()
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise TypeError(f"TTTLayer got unknown options {unknown}; known options: {sorted(_OPTION_NAMES)}")
        self.config = TTTConfig(hidden_size=hidden_size, num_heads=num_heads, **options)
        self.adapt = True
        c = self.config
        C, nh, f = c.hidden_size, c.num_heads, self.head_dim
        d = 4 * f if c.inner == "mlp" else f                  # inner hidden width

        # Outer-loop parameters θ_Q, θ_K, θ_V (views), θ_O (output), optional gate θ_G.
        self.q_proj = nn.Linear(C, C, bias=False)
        self.k_proj = None if c.share_qk else nn.Linear(C, C, bias=False)
        self.v_proj = nn.Linear(C, C, bias=False)
        self.o_proj = nn.Linear(C, C, bias=False)
        self.g_proj = nn.Linear(C, C, bias=False) if c.use_gate else None
        # share_qk: Q and K come from one projection, then two different causal depthwise convolutions.
        self.conv_q = self._causal_conv(C, c.conv_kernel) if c.share_qk else None
        self.conv_k = self._causal_conv(C, c.conv_kernel) if c.share_qk else None
        # Learned step size η_t (one gate per head, fed the full C-dim input) and the in-chunk offset δ.
        self.lr_gate_weight = nn.Parameter(torch.empty(nh, C))
        self.lr_gate_bias = nn.Parameter(torch.zeros(nh))
        self.token_offset = nn.Parameter(torch.zeros(c.mini_batch_size))
        # LayerNorm inside the inner model (one per head) and after the heads are concatenated.
        self.inner_ln_weight = nn.Parameter(torch.ones(nh, f))
        self.inner_ln_bias = nn.Parameter(torch.zeros(nh, f))
        self.post_norm = nn.LayerNorm(C, eps=1e-6)
        # W0: the inner model's initial weights, one per head, learned by the outer loop, shared by all sequences.
        self.W1 = nn.Parameter(torch.empty(nh, f, d))
        self.b1 = nn.Parameter(torch.zeros(nh, d))
        self.W2 = nn.Parameter(torch.empty(nh, d, f)) if c.inner == "mlp" else None
        self.b2 = nn.Parameter(torch.zeros(nh, f)) if c.inner == "mlp" else None
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: TTTConfig) -> "TTTLayer":
        """A layer built from ``config``; it keeps a copy, so changing ``config`` later does not touch the layer."""
        if not isinstance(config, TTTConfig):
            raise TypeError(f"from_config expects a TTTConfig, got {type(config).__name__}")
        return cls(**asdict(config))

    # Read-only views of the config (the shapes of the parameters depend on them, so they cannot change).
    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    @property
    def inner(self) -> str:
        return self.config.inner

    @property
    def mini_batch_size(self) -> int:
        return self.config.mini_batch_size

    @property
    def head_dim(self) -> int:
        """f = C / nh."""
        return self.config.hidden_size // self.config.num_heads

    @staticmethod
    def _causal_conv(channels: int, kernel: int) -> nn.Conv1d:
        return nn.Conv1d(channels, channels, kernel, groups=channels, bias=True, padding=kernel - 1)

    def reset_parameters(self) -> None:
        """N(0, init_std) for projections, the lr gate and W0; zeros for biases and δ; LayerNorms (1, 0).
        The Conv1d layers keep PyTorch's default init (as the official code)."""
        std = self.config.init_std
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.g_proj):
            if proj is not None:
                nn.init.normal_(proj.weight, 0.0, std)
        for weight in (self.lr_gate_weight, self.W1, self.W2):
            if weight is not None:
                nn.init.normal_(weight, 0.0, std)
        for bias in (self.lr_gate_bias, self.token_offset, self.inner_ln_bias, self.b1, self.b2):
            if bias is not None:
                nn.init.zeros_(bias)
        nn.init.ones_(self.inner_ln_weight)
        self.post_norm.reset_parameters()

    # -- the pieces of the forward pass -------------------------------------------------------------------------

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, L, n·f) → (B, n, L, f), a view when it can be."""
        return t.unflatten(-1, (-1, self.head_dim)).transpose(1, 2)

    def views(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Test/training/label views q, k, v: (B, nh, L, f), RoPE already applied to q and k."""
        L = x.shape[1]
        if self.config.share_qk:
            p, v = F.linear(x, torch.cat([self.q_proj.weight, self.v_proj.weight])).chunk(2, dim=-1)
            p = p.transpose(1, 2)                                                       # (B, C, L)
            q = self.conv_q(p)[..., :L].transpose(1, 2)     # left padding + cut = output t sees p_{t−3..t}
            k = self.conv_k(p)[..., :L].transpose(1, 2)
            qk = torch.cat([q, k], dim=-1)
        else:   # x θ_Q, x θ_K, x θ_V as one matmul (faster than three)
            weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            qk, v = F.linear(x, weight).split([2 * self.hidden_size, self.hidden_size], dim=-1)
        qk, v = self._split_heads(qk), self._split_heads(v)            # (B, 2·nh, L, f): q's heads, then k's
        if qk.dtype in (torch.float32, torch.float64):
            # apply_rope, with the e^{ipω} table computed once per length (and q, k rotated in one op)
            turn = rope_turns(L, self.mini_batch_size, self.config.rope_positions, self.head_dim,
                              float(self.config.rope_base), qk.dtype, x.device)
            qk = rotate_pairs(qk, turn)
        else:
            positions = rope_positions(L, self.mini_batch_size, self.config.rope_positions, device=x.device)
            qk = apply_rope(qk, positions, self.config.rope_base)
        q, k = qk.chunk(2, dim=1)
        return q, k, v

    def learning_rate(self, x: torch.Tensor) -> torch.Tensor:
        """η_t = base_lr · sigmoid(x_t·w_h + b_h) / f per head: (B, L, C) → (B, nh, L). Zero when adapt is off."""
        gate = torch.sigmoid(x @ self.lr_gate_weight.t() + self.lr_gate_bias)            # (B, L, nh)
        lr = self.config.base_lr * gate.transpose(1, 2) / self.head_dim
        return lr if self.adapt else lr * 0.0

    def token_scale(self) -> torch.Tensor:
        """τ_i = max(0, 1/i + δ_i) for i = 1..b: (b,). With δ = 0, token i steps on the *mean* gradient so far."""
        i = torch.arange(1, self.mini_batch_size + 1, device=self.token_offset.device, dtype=self.token_offset.dtype)
        return torch.clamp_min(1.0 / i + self.token_offset, 0.0)

    def initial_params(self, batch_size: int) -> InnerParams:
        """W0 broadcast over the batch (a view, no copy): [(W (B, nh, fan_in, fan_out), c (B, nh, 1, fan_out))]."""
        layers = [(self.W1, self.b1)] + ([(self.W2, self.b2)] if self.inner == "mlp" else [])
        return [(w.unsqueeze(0).expand(batch_size, *w.shape), c[:, None, :].unsqueeze(0).expand(batch_size, -1, -1, -1))
                for w, c in layers]

    def _ln_params(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.inner_ln_weight[:, None, :], self.inner_ln_bias[:, None, :]     # (nh, 1, f)

    def _chunks(self, L: int) -> List[Tuple[int, int]]:
        """(start, end) of each mini-batch: ⌊L/b⌋ full ones, then the remainder (also when L < b)."""
        b = self.mini_batch_size
        return [(s, min(s + b, L)) for s in range(0, L, b)]

    # -- (a) the paper's per-token loop, autograd inner gradient ------------------------------------------------

    def token_loop(self, q, k, v, lr, tau, trace: bool = False):
        """``W_t = W_{t−1} − τ_1 η_t ∇ℓ_t(W_{t−1})``, ``z_t = f(q_t; W_t)``, ∇ by autograd. Needs b = 1."""
        if self.mini_batch_size != 1:
            raise ValueError(f"mode='token_loop' is online GD, one token at a time, and needs mini_batch_size=1 "
                             f"(this layer has mini_batch_size={self.mini_batch_size}); use mode='minibatch_loop' "
                             f"or 'dual' for mini-batch TTT")
        gamma, beta = self._ln_params()
        outer_grad = torch.is_grad_enabled()
        params = self.initial_params(q.shape[0])
        outputs, recorder = [], _TraceRecorder() if trace else None
        with torch.enable_grad():
            # The inner gradient needs leaves to differentiate; W0 stays connected to the outer graph when it can.
            params = [tuple(p if (outer_grad and p.requires_grad) else p.detach().requires_grad_() for p in layer)
                      for layer in params]
            for t in range(q.shape[2]):
                q_t, k_t, v_t = q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1]
                step = tau[0] * lr[:, :, t, None, None]                                    # (B, nh, 1, 1)
                loss = inner_loss(k_t, v_t, params, gamma, beta).sum()   # batch/heads independent: sum is fine
                grads = torch.autograd.grad(loss, [p for layer in params for p in layer], create_graph=outer_grad)
                new = [(w - step * gw, c - step * gc) for (w, c), gw, gc in zip(params, grads[0::2], grads[1::2])]
                if not outer_grad:
                    new = [tuple(p.detach().requires_grad_() for p in layer) for layer in new]
                if recorder is not None:
                    recorder.add_chunk(params, [(w.unsqueeze(2), c) for w, c in new], k_t, v_t, gamma, beta)
                params = new
                outputs.append(inner_model(q_t, params, gamma, beta))                      # z_t = f(q_t; W_t)
        out = torch.cat(outputs, dim=2)
        return (out if outer_grad else out.detach()), recorder

    # -- (b) mini-batch TTT with explicit per-token weights -----------------------------------------------------

    def minibatch_loop(self, q, k, v, lr, tau, trace: bool = False):
        """For each chunk: gradients at the chunk-start W, per-token ``W_i`` (primal form), ``z_i = f(q_i; W_i)``."""
        gamma, beta = self._ln_params()
        params = self.initial_params(q.shape[0])
        outputs, recorder = [], _TraceRecorder() if trace else None
        for s, e in self._chunks(q.shape[2]):
            pieces = inner_gradients(k[:, :, s:e], v[:, :, s:e], params, gamma, beta)   # all at chunk start
            token_params = explicit_token_weights(params, pieces, lr[:, :, s:e], tau[:e - s])
            outputs.append(inner_model(q[:, :, s:e], token_params, gamma, beta))
            if recorder is not None:
                recorder.add_chunk(params, token_params, k[:, :, s:e], v[:, :, s:e], gamma, beta)
            params = [(w[:, :, -1], c[:, :, -1:]) for w, c in token_params]               # state ← W_b
        return torch.cat(outputs, dim=2), recorder

    # -- (c) the dual form: same numbers, no per-token weights --------------------------------------------------

    def dual(self, q, k, v, lr, tau, trace: bool = False):
        """Mini-batch TTT in the dual form. For an inner layer with input rows ``a_j``, output gradients ``g_j``
        (both at the chunk start), the input ``u_i`` it sees at read time and steps ``E_ij = τ_i η_j``::

            u_i W_i + c_i = u_i W + c − Σ_{j≤i} E_ij (u_i·a_j + 1) g_j      →   U W + c − tril(E ⊙ (U Aᵀ + 1)) G

        (``+1`` is the bias's contribution). The next chunk starts from ``W − Aᵀ diag(E_b·) G``, ``c − Σ_j E_bj g_j``
        (``E_b·`` = last row of E). Both right-hand sides multiply ``G``, so one matmul does it all::

            [ tril(E ⊙ (U Aᵀ + 1)) ;  Aᵀ diag(E_b·) ;  E_b· ] @ G   =   [ output correction ; ΔW ; Δc ]

        The scan over chunks is sequential (each chunk's gradients need its start state); everything that does
        not depend on the state (for the first inner layer: the whole coefficient matrix) is built for all
        chunks at once, and inside a chunk everything is a handful of batched matmuls.
        """
        gamma, beta = self._ln_params()
        B, nh, L, f = q.shape
        b = self.mini_batch_size
        params = self.initial_params(B)
        recorder = _TraceRecorder() if trace else None
        n_full, rem = divmod(L, b)

        def stacked(t: torch.Tensor, start: int, n_chunks: int, size: int) -> torch.Tensor:
            """(B, nh, L, ...) → (B, nh, n_chunks, size, ...) for the tokens start .. start + n_chunks·size."""
            return t[:, :, start:start + n_chunks * size].reshape(B, nh, n_chunks, size, *t.shape[3:])

        def coefficients(u, a, causal_eta):
            """[tril(E ⊙ (U Aᵀ + 1)) ; Aᵀ diag(E_b·) ; E_b·]: (..., n + fan_in + 1, n)."""
            last_eta = causal_eta[..., -1:, :]                                              # (..., 1, n)
            return torch.cat([causal_eta * (u @ a.transpose(-1, -2) + 1.0),
                              last_eta.transpose(-1, -2).mul(a).transpose(-1, -2), last_eta], dim=-2)

        def run_chunk(params, kq, v_c, q_c, coeff1, causal_eta, lr_c, tau_c):
            n = q_c.shape[-2]
            k_c = kq[..., :n, :]
            (w1, c1) = params[0]
            z1, u = (kq @ w1 + c1).split([n, n], dim=-2)  # keys and queries through W1 in one matmul
            pieces = inner_gradients(k_c, v_c, params, gamma, beta, z1=z1)                # (a_j, g_j) per layer
            # u: the queries' path through the inner model. Each layer starts from U W + c (chunk-start weights)
            # and subtracts the correction that turns it into the per-token-updated u_i W_i + c_i.
            new_params = []
            for layer, ((w, c), (a, g)) in enumerate(zip(params, pieces)):
                if layer > 0:
                    u = gelu(u)
                    coeff = coefficients(u, a, causal_eta)
                    u = u @ w + c
                else:
                    coeff = coeff1
                correction, delta_w, delta_c = (coeff @ g).split([n, w.shape[-2], 1], dim=-2)
                u = u - correction
                new_params.append((w - delta_w, c - delta_c))
            if recorder is not None:
                recorder.add_chunk(params, explicit_token_weights(params, pieces, lr_c, tau_c), k_c, v_c, gamma, beta)
            return u, new_params                                       # f_res(q_i; W_i) for the chunk's tokens

        outputs = []
        for start, n_chunks, size in ((0, n_full, b), (n_full * b, 1 if rem else 0, rem)):
            if n_chunks == 0:
                continue
            # State-independent pieces for all chunks of this size at once: (B, nh, n_chunks, size, ...)
            qs, ks, vs, lrs = (stacked(t, start, n_chunks, size) for t in (q, k, v, lr))
            tau_c = tau[:size]
            causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
            causal_eta = (tau_c[:, None] * lrs[..., None, :]).masked_fill(~causal, 0.0)     # tril(τ_i η_j)
            coeff1 = coefficients(qs, ks, causal_eta)
            kq = torch.cat([ks, qs], dim=-2)
            # unbind (not indexing in the loop): its backward is one stack, not one zero-filled copy per chunk
            per_chunk = zip(*(t.unbind(2) for t in (kq, vs, qs, coeff1, causal_eta, lrs)))
            for kq_c, v_c, q_c, coeff1_c, eta_c, lr_c in per_chunk:
                z_res, params = run_chunk(params, kq_c, v_c, q_c, coeff1_c, eta_c, lr_c, tau_c)
                outputs.append(z_res)
        # f(q_t; W_t) = q_t + LN(f_res(q_t; W_t)), applied to the whole sequence at once
        return q + inner_layer_norm(torch.cat(outputs, dim=2), gamma, beta), recorder

    # -- (c′) the dual form again, arranged for speed: what forward(mode="dual") runs ---------------------------

    def dual_fast(self, q, k, v, lr, tau, trace: bool = False, hand_backward: bool = True):
        """The numbers of :meth:`dual` (``tests/test_ttt.py`` checks they agree to 1e-12 in float64, gradients
        too), arranged for speed rather than for reading; ``forward(mode="dual")`` runs this one (a trace is
        recorded by :meth:`dual`). The same equations, per inner layer with input rows ``a_j`` and gradients
        ``g_j`` at the chunk start, queries' input ``U`` and steps ``E = tril(τ_i η_j)``::

            U W_i + c_i = baddbmm(U W + c, E ⊙ (U Aᵀ + 1), G, α = −1)      (output, each token its own W_i)
            W_next = baddbmm(W, Aᵀ, E_b·ᵀ ⊙ G, α = −1),  c_next = c − Σ_j E_bj g_j

        What differs from :meth:`dual`: batch and heads are flattened into one axis and the chunks are the
        leading axis, so every chunk is a contiguous block and every product is one ``bmm``/``baddbmm`` (the bias
        add and the subtraction ride inside the matmul); keys and queries go through ``W`` by two matmuls, not
        one on a concatenation (no split, so the backward has no concatenation either); the three products with
        ``G`` stay separate (no coefficient stack); the inner LN's ``γ²`` and ``γ ⊙ (β − (v − k))`` are computed
        once for all chunks; the last chunk skips the state update nobody reads.

        On a CPU the scan itself is ``ttt4rec_edu.ttt_scan.dual_scan``: one autograd node with a hand-written
        backward (a reverse scan) instead of autograd's many small nodes (``benchmarks/bench_speed.py`` times
        both); under CPU autocast it stays in float32. ``hand_backward=False``, a GPU, or GPU autocast run the
        loop below through autograd instead; ``tests/test_ttt_scan.py`` checks both against :meth:`dual`.
        """
        # a trace (for plots) is recorded by the reference; the output stays this method's, so that asking for a
        # trace never changes the numbers
        recorder = self.dual(q, k, v, lr, tau, trace=True)[1] if trace else None
        if q.numel() == 0:  # no sequence or no token: nothing to arrange, and empty tensors cannot be reshaped
            return self.dual(q, k, v, lr, tau)[0], recorder
        if hand_backward and q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU autocast: the scan stays in float32 with its hand-written backward (bfloat16 would not speed up
            # its tiny products, and autograd's scan is slower)
            with torch.autocast("cpu", enabled=False):
                return self.dual_fast(*(t.float() for t in (q, k, v, lr, tau)))[0], recorder
        B, nh, L, f = q.shape
        BN, b = B * nh, self.mini_batch_size
        n_chunks = -(-L // b)
        pad = n_chunks * b - L

        def chunk_major(t: torch.Tensor) -> torch.Tensor:
            """(B, nh, L, ...) → (n_chunks, B·nh, b, ...), zeros after the end: one contiguous block per chunk."""
            t = F.pad(t, (0, 0) * (t.dim() - 3) + (0, pad)).reshape(B, nh, n_chunks, b, *t.shape[3:])
            return t.movedim(2, 0).reshape(n_chunks, BN, b, *t.shape[4:])

        # A short last chunk is padded to b tokens: token i reads only tokens j ≤ i (E is lower-triangular) and
        # the last chunk's state update is never computed, so the padding changes no number (zeros times zeros).
        # the hand-written scan is a CPU speed-up (measured on CPUs only); a GPU runs autograd's, as before
        hand = (hand_backward and q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled("cpu"))
        if hand:
            kq = pair_chunks(k, q, b)                                     # per chunk: its keys, then its queries
            ks, qs = kq[..., :b, :], kq[..., b:, :]
            vs, lrs = chunk_major(v), chunk_major(lr)
        else:
            qs, ks, vs, lrs = (chunk_major(t) for t in (q, k, v, lr))
        gamma, beta = (p[None].expand(B, -1, -1, -1).reshape(BN, 1, f) for p in self._ln_params())
        layers = [(w[None].expand(B, -1, -1, -1).reshape(BN, *w.shape[1:]),
                   c[None, :, None].expand(B, -1, -1, -1).reshape(BN, 1, -1))
                  for w, c in [(self.W1, self.b1)] + ([(self.W2, self.b2)] if self.inner == "mlp" else [])]
        eta = (tau[:, None] * lrs[..., None, :]).tril()                               # E = tril(τ_i η_j)
        attn1 = torch.addcmul(eta, eta, qs @ ks.transpose(-1, -2))                    # E ⊙ (Q Kᵀ + 1)
        eta_last = eta[..., -1:, :].transpose(-1, -2)                                 # E_b·ᵀ: (.., b, 1)
        ln_offset = gamma * (beta - (vs - ks))                                        # γ ⊙ (β − target)
        ln_scale = gamma * gamma
        if hand:
            # the scan with its hand-written backward (ttt4rec_edu.ttt_scan); under autocast, autograd's below
            z = dual_scan(kq, attn1, eta, eta_last.contiguous(), ln_offset, ln_scale,
                          *[t for layer in layers for t in layer], eps=INNER_LN_EPS)
            z = z.movedim(0, 1).reshape(B, nh, n_chunks * b, f)[:, :, :L]
            gamma, beta = self._ln_params()
            return q + inner_layer_norm(z, gamma, beta), recorder
        outputs = []
        per_chunk = zip(*(t.unbind(0) for t in (qs, ks, attn1, eta, eta_last, ln_offset)))
        for i, (q_c, k_c, attn1_c, eta_c, eta_last_c, offset_c) in enumerate(per_chunk):
            (w1, c1) = layers[0]
            z1 = torch.baddbmm(c1, k_c, w1)                                       # keys through W1
            u = torch.baddbmm(c1, q_c, w1)                                        # queries through W1
            if len(layers) == 1:
                pieces = [(k_c, _ln_l2_grad(z1, ln_scale, offset_c))]
            else:
                (w2, c2) = layers[1]
                h, slope = gelu_with_slope(z1)
                g2 = _ln_l2_grad(torch.baddbmm(c2, h, w2), ln_scale, offset_c)
                pieces = [(k_c, torch.bmm(g2, w2.transpose(-1, -2)) * slope), (h, g2)]
            u = torch.baddbmm(u, attn1_c, pieces[0][1], alpha=-1.0)               # U W1_i + c1_i
            if len(layers) == 2:
                x2 = gelu(u)
                attn2 = torch.addcmul(eta_c, eta_c, torch.bmm(x2, h.transpose(-1, -2)))
                u = torch.baddbmm(torch.baddbmm(c2, x2, w2), attn2, g2, alpha=-1.0)
            outputs.append(u)
            if i == n_chunks - 1:
                break
            layers = [(torch.baddbmm(w, a.transpose(-1, -2), eta_last_c * g, alpha=-1.0),      # W − Aᵀ(E_b·ᵀ ⊙ G)
                       c - (eta_last_c * g).sum(dim=-2, keepdim=True)) for (w, c), (a, g) in zip(layers, pieces)]
        z = torch.stack(outputs, dim=1).view(B, nh, n_chunks * b, f)[:, :, :L]
        gamma, beta = self._ln_params()
        return q + inner_layer_norm(z, gamma, beta), recorder

    # -- the whole layer ----------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, mode: str = "dual", return_trace: bool = False):
        """x: (B, L, C) → (B, L, C); with ``return_trace=True`` returns ``(output, TTTTrace)``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"expected x of shape (batch, seq, {self.hidden_size}), got {tuple(x.shape)}")
        B, L, C = x.shape
        q, k, v = self.views(x)
        lr, tau = self.learning_rate(x), self.token_scale()
        if mode == "dual" and not return_trace and os.environ.get(COMPILE_ENV) == "1":
            z, recorder = _compiled_dual_fast(self, q, k, v, lr, tau), None
        else:
            run = self.dual_fast if mode == "dual" else getattr(self, mode)   # dual_fast: dual's numbers, faster
            z, recorder = run(q, k, v, lr, tau, trace=return_trace)                      # (B, nh, L, f)
        out = self.post_norm(z.transpose(1, 2).reshape(B, L, C))
        if self.g_proj is not None:
            out = gelu(self.g_proj(x)) * out
        out = self.o_proj(out)
        if not return_trace:
            return out
        tau_per_position = tau[torch.arange(L, device=x.device) % self.mini_batch_size]
        return out, recorder.finish(lr, tau_per_position)
