"""Two pictures of how TTT computes: the dual form's blocks of one mini-batch (chapter 4) and the outer loop's
computation graph through the inner chain W0 → W1 → … (chapter 5).

:func:`dual_blocks` computes the pieces of one mini-batch's output correction in the dual form (the masked matrix
``M``, the gradients ``G``, their product and its rank-one terms) and :func:`plot_dual_blocks` draws them;
:func:`outer_loop_graph` lays out the graph whose outer gradient runs through every inner step and
:func:`plot_outer_loop_graph` draws it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DualBlocks:
    """The pieces of one mini-batch's output correction in the dual form (one head, bare linear inner model
    with bias): ``M = tril(E ⊙ (Q Kᵀ + 1))`` (b, b), ``G`` (b, f), ``product = M @ G`` (b, f) and the rank-one
    terms ``terms[j] = M[:, j] ⊗ G[j]`` (b, b, f), whose sum over j is ``product``."""

    M: torch.Tensor
    G: torch.Tensor
    product: torch.Tensor
    terms: torch.Tensor
    bias: bool = True


def dual_blocks(Q: torch.Tensor, K: torch.Tensor, G: torch.Tensor, eta: torch.Tensor,
                tau: torch.Tensor, bias: bool = True) -> DualBlocks:
    """:class:`DualBlocks` for queries/keys ``Q, K`` (b, f), output gradients ``G`` (b, f), steps ``eta``
    (b,) and scales ``tau`` (b,). ``bias=False``: the bare linear model without a bias, ``M = E ⊙ tril(Q Kᵀ)``
    (the ``+ 1`` is the bias's share)."""
    b = Q.shape[0]
    if K.shape[0] != b or G.shape[0] != b or eta.shape != (b,) or tau.shape != (b,):
        raise ValueError(f"dual_blocks: Q, K, G need b = {b} rows and eta, tau shape ({b},); got "
                         f"{tuple(K.shape)}, {tuple(G.shape)}, {tuple(eta.shape)}, {tuple(tau.shape)}")
    E = torch.tril(tau[:, None] * eta[None, :])
    M = E * (Q @ K.T + (1.0 if bias else 0.0))
    terms = M.T[:, :, None] * G[:, None, :]              # terms[j] = column j of M times row j of G
    return DualBlocks(M=M, G=G, product=M @ G, terms=terms, bias=bias)


def plot_dual_blocks(blocks: DualBlocks, show_terms: int = 4):
    """The dual form as block matrices: ``M @ G = correction`` on the top row, and below it the same
    correction as a sum of rank-one matrices, column j of the causal ``M`` times row j of ``G`` (the first
    ``show_terms`` of them, then the rest summed). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    b, f = blocks.G.shape
    show_terms = max(1, min(show_terms, b - 1))
    fig = plt.figure(figsize=(10, 5.6))
    grid = fig.add_gridspec(2, 2 * (show_terms + 1) + 1, height_ratios=[1.15, 1.0], hspace=0.55, wspace=0.5)

    def panel(ax, matrix, title, vmax):
        ax.imshow(matrix.detach().numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])

    vmax_m = float(blocks.M.abs().max()) or 1.0
    vmax_p = float(blocks.product.abs().max()) or 1.0
    top = [fig.add_subplot(grid[0, 0:3]), fig.add_subplot(grid[0, 4:6]), fig.add_subplot(grid[0, 7:9])]
    name = "M = tril(E ⊙ (QKᵀ + 1))" if blocks.bias else "M = E ⊙ tril(QKᵀ)"
    panel(top[0], blocks.M, f"{name}\n(b × b, zero above the diagonal)", vmax_m)
    panel(top[1], blocks.G, "G (b × f)\nrow j = g_j", float(blocks.G.abs().max()) or 1.0)
    panel(top[2], blocks.product, "M G = correction\nrow i: Σ_{j≤i} M_ij g_j", vmax_p)
    fig.text(0.335, 0.74, "@", fontsize=16, ha="center")
    fig.text(0.60, 0.74, "=", fontsize=16, ha="center")
    for j in range(show_terms):
        ax = fig.add_subplot(grid[1, 2 * j:2 * j + 2])
        panel(ax, blocks.terms[j], f"M[:, {j + 1}] ⊗ g_{j + 1}", vmax_p)
        ax.set_xlabel("+" if j < show_terms else "", fontsize=12)
    rest = blocks.terms[show_terms:].sum(0)
    ax = fig.add_subplot(grid[1, 2 * show_terms:2 * show_terms + 2])
    panel(ax, rest, f"Σ of terms {show_terms + 1}..{b}", vmax_p)
    fig.suptitle("Dual form of one mini-batch: the causal coefficient matrix times G (top) is a sum of "
                 "rank-one updates (below)", fontsize=10)
    return fig


@dataclass
class GraphNode:
    name: str
    label: str
    x: float
    y: float
    kind: str          # "param" (outer-loop parameter), "inner" (inner state W_t), "data", "loss"


def outer_loop_graph(T: int = 3):
    """The computation graph of the outer loop through the inner one, for ``T`` tokens of one head: nodes
    (:class:`GraphNode`) and forward edges ``(src, dst)``. The inner chain ``W_0 → W_1 → … → W_T`` takes
    ``k_t, v_t, η_t`` at every step; every ``z_t = f(q_t; W_t)`` feeds the outer loss. Backpropagation runs
    every edge backwards, so the outer gradient reaches θ_K and θ_V only *through* the inner updates."""
    if T < 1:
        raise ValueError(f"outer_loop_graph needs T >= 1, got {T}")
    step = 2.6                                            # horizontal distance between tokens
    nodes = [GraphNode("theta", "θ_K, θ_V, θ_Q,\ngate (w, b)", -0.9, 2.6, "param"),
             GraphNode("W0", "W_0", 0.0, 0.0, "param"),
             GraphNode("loss", "outer loss ℒ", step * T + 1.2, -1.3, "loss")]
    edges = []
    for t in range(1, T + 1):
        x = step * t - 0.8
        nodes += [GraphNode(f"x{t}", f"x_{t}", x + 0.1, 3.9, "data"),
                  GraphNode(f"kv{t}", f"k_{t}, v_{t}, η_{t}", x - 0.45, 2.6, "data"),
                  GraphNode(f"q{t}", f"q_{t}", x + 0.75, 2.6, "data"),
                  GraphNode(f"W{t}", f"W_{t}", x, 0.0, "inner"),
                  GraphNode(f"z{t}", f"z_{t} = f(q_{t}; W_{t})", x + 0.75, 1.3, "data")]
        edges += [(f"x{t}", f"kv{t}"), ("theta", f"kv{t}"), (f"x{t}", f"q{t}"), ("theta", f"q{t}"),
                  ("W0" if t == 1 else f"W{t - 1}", f"W{t}"), (f"kv{t}", f"W{t}"),
                  (f"W{t}", f"z{t}"), (f"q{t}", f"z{t}"), (f"z{t}", "loss")]
    return nodes, edges


def plot_outer_loop_graph(T: int = 3):
    """Draw :func:`outer_loop_graph`: forward edges in grey, the inner chain in blue, and the backward path
    of the outer gradient from ℒ to θ_K, θ_V (through ``W_t``, ``W_{t−1}``, …, and ``k_t, v_t``) in red.
    Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    nodes, edges = outer_loop_graph(T)
    where = {n.name: n for n in nodes}
    colours = {"param": "#fde2b5", "inner": "#c9dcf5", "data": "#eeeeee", "loss": "#f6c4c4"}
    fig, ax = plt.subplots(figsize=(11, 5.0))
    for src, dst in edges:
        a, b = where[src], where[dst]
        inner = src.startswith("W") and dst.startswith("W")
        colour = "C0" if inner else ("0.8" if src == "theta" else "0.5")
        # z_t → ℒ runs straight down, under the W row, then right along the bottom: a straight line from z_t to
        # ℒ would cross the later W boxes and look like an edge through W_{t+1}
        route = "angle,angleA=90,angleB=0,rad=0" if dst == "loss" else "arc3,rad=0"
        ax.annotate("", xy=(b.x, b.y), xytext=(a.x, a.y),
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=2.2 if inner else 1.0,
                                    shrinkA=14, shrinkB=14, connectionstyle=route))
    # the backward path of one token's loss term: ℒ → z_T → W_T → ... → W_1 → k_1, v_1 → θ
    back = ["loss", f"z{T}", f"W{T}"] + [f"W{t}" for t in range(T - 1, 0, -1)] + ["kv1", "theta"]
    for src, dst in zip(back, back[1:]):
        a, b = where[src], where[dst]
        ax.annotate("", xy=(b.x, b.y - 0.12), xytext=(a.x, a.y - 0.12),
                    arrowprops=dict(arrowstyle="-|>", color="C3", lw=1.4, ls="--", shrinkA=16, shrinkB=16,
                                    connectionstyle="arc3,rad=-0.25"))
    for n in nodes:
        ax.text(n.x, n.y, n.label, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.35", fc=colours[n.kind], ec="0.4", lw=0.8))
    middle = 1.3 * T
    ax.text(middle, -1.85, "inner loop: W_t = W_{t-1} - η_t ∇ℓ_t(W_{t-1}), one step per token (blue)",
            ha="center", fontsize=9, color="C0")
    ax.text(middle, 4.6, "outer loop: ∂ℒ/∂θ flows back along every edge; red dashes: one path, "
            "from ℒ through W_T, ..., W_1 and k_1, v_1 to θ_K, θ_V", ha="center", fontsize=9, color="C3")
    ax.set_xlim(-1.9, 2.6 * T + 2.4)
    ax.set_ylim(-2.2, 4.9)
    ax.axis("off")
    return fig


__all__ = ["DualBlocks", "dual_blocks", "plot_dual_blocks", "GraphNode", "outer_loop_graph", "plot_outer_loop_graph"]
