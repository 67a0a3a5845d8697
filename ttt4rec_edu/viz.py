"""Watching the TTT layer's hidden state ``W_t`` move while a model reads one user's history (book chapter 7).

Three steps, each a function:

1. :func:`user_trace` runs a trained TTT4Rec on one user's item sequence in eval mode and collects, for one
   block's TTT layer, what the inner loop did at every position ``t`` — the effective inner weights ``W_t`` of
   every head, the inner loss before/after the update, the learned step ``η_t`` — together with the model's
   top-k items at ``t`` and the true next item. The result is a :class:`UserTrace` (plain tensors, batch axis
   dropped).
2. Plotting functions draw one aspect of a trace on a matplotlib axis (heatmap of ``W_t``, the size of the
   step ``‖W_t − W_{t−1}‖_F`` over ``t``, the inner loss, ``η_t``, the top-k list), with the user's known
   interest switches as dashed vertical lines; :func:`plot_user_story` puts them together into one static
   small-multiples figure that tells the story without a kernel.
3. :func:`make_explorer` precomputes one small HTML frame per (user, head, t) and switches between them with
   ``ipywidgets.Stack`` + ``jslink`` only, so the slider and the selectors keep working on the static web page
   (no Python behind it) as well as in Colab.

Shapes (one user, one TTT layer): ``L`` positions, ``nh`` heads, ``f`` head size, ``d`` inner hidden width
(``f`` for TTT-Linear, ``4f`` for TTT-MLP), ``C = nh·f`` model width, ``N`` items. Positions are 0-based.
For TTT-MLP the "weights" shown are ``W1`` (``f × 4f``, the first inner layer, which reads the views) unless
``which="W2"`` (``4f × f``) is asked for. With mini-batch TTT (``b > 1``, the released setting) ``W_t`` is the
*effective* weight token ``t`` reads with: gradients frozen at the chunk start, ``W_t = W − τ_i Σ_{j≤i} η_j ∇ℓ_j(W)``
(``ttt4rec_edu.ttt``).

The book's other pictures live beside this module: the library's code shown in chapter 4
(``ttt4rec_edu.source_view``) and the dual-form blocks and outer-loop graph of chapters 4-5
(``ttt4rec_edu.diagrams``). Their functions are re-exported here, so chapters that call ``viz.show_source`` or
``viz.plot_outer_loop_graph`` keep working.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .diagrams import DualBlocks, GraphNode, dual_blocks, outer_loop_graph, plot_dual_blocks, plot_outer_loop_graph
from .source_view import fold_code, nested_function, show_source, source_lines

WEIGHT_NAMES = ("W1", "W2")


# ------------------------------------------------------------------------------------------------------------
# 1. The user trace
# ------------------------------------------------------------------------------------------------------------

@dataclass
class UserTrace:
    """What one TTT layer and the whole model did on one user's sequence (tensors on the CPU).

    items: (L,) item ids read; next_items: (L,) the true next item after position t (0 = unknown).
    W1: (nh, L, f, d), b1: (nh, L, d); W2: (nh, L, d, f), b2: (nh, L, f) or None (TTT-Linear).
    W0: {"W1": (nh, f, d), "b1": (nh, d), ["W2": (nh, d, f), "b2": (nh, f)]} — the learned start ``W_{−1}``.
    loss_before, loss_after, eta: (nh, L) — ``ℓ_t(W_{t−1})``, ``ℓ_t(W_t)``, ``η_t``. tau: (L,).
    layer_input: (L, C) what the TTT layer read; layer_output: (L, C) what it returned.
    states: (L, C) the model's final per-position output; topk: (L, k) item ids, topk_scores: (L, k);
    next_rank: (L,) rank of the true next item among all N items (1 = best; 0 where the next item is unknown).
    switch_points: positions where the user's interest changed (synthetic data), or empty.
    """

    label: str
    items: torch.Tensor
    next_items: torch.Tensor
    W1: torch.Tensor
    b1: torch.Tensor
    W2: Optional[torch.Tensor]
    b2: Optional[torch.Tensor]
    W0: Dict[str, torch.Tensor]
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    eta: torch.Tensor
    tau: torch.Tensor
    layer_input: torch.Tensor
    layer_output: torch.Tensor
    states: torch.Tensor
    topk: torch.Tensor
    topk_scores: torch.Tensor
    next_rank: torch.Tensor
    switch_points: List[int] = field(default_factory=list)
    item_topics: Optional[np.ndarray] = None   # topic of each item id (synthetic data), for captions

    @property
    def length(self) -> int:
        return int(self.items.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.W1.shape[0])

    def weights(self, which: str = "W1") -> torch.Tensor:
        """The weight matrix ``which`` over positions: (nh, L, rows, cols)."""
        if which not in WEIGHT_NAMES:
            raise ValueError(f"which must be one of {WEIGHT_NAMES}, got {which!r}")
        if which == "W2" and self.W2 is None:
            raise ValueError("this trace comes from TTT-Linear, which has only W1; use which='W1'")
        return self.W1 if which == "W1" else self.W2


def user_trace(model, items: Sequence[int], k: int = 10, block: int = 0, label: str = "user",
               switch_points: Optional[Sequence[int]] = None, next_item: int = 0,
               item_topics: Optional[np.ndarray] = None) -> UserTrace:
    """Run ``model`` (a TTT4Rec) in eval mode on one user's ``items`` (L,) and collect a :class:`UserTrace`.

    ``block`` picks the residual block whose TTT layer is traced; ``k`` the length of the top-k lists; the true
    next item at position ``t`` is ``items[t + 1]``, and ``next_item`` (0 = unknown) after the last one.
    The top-k at ``t`` scores the model's state at ``t`` against ``model.item_table()`` (padding never ranks).
    """
    seq = torch.as_tensor(np.asarray(items), dtype=torch.long).flatten()
    if seq.numel() == 0:
        raise ValueError("user_trace needs at least one item")
    if seq.numel() > model.config.max_len:
        raise ValueError(f"the sequence has {seq.numel()} items but the model was trained with max_len="
                         f"{model.config.max_len}; pass the last {model.config.max_len} items")
    if not 0 <= block < len(model.blocks):
        raise ValueError(f"block must be in 0..{len(model.blocks) - 1}, got {block}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    captured = {}
    layer = model.blocks[block].ttt
    hook = layer.register_forward_hook(lambda mod, args, out: captured.update(x=args[0], out=out[0]))
    try:
        with torch.no_grad():
            states, traces = model.sequence_output(seq[None].to(device), return_traces=True)
            scores = states[0] @ model.item_table().T                              # (L, N + 1)
    finally:
        hook.remove()
        model.train(was_training)
    scores[:, 0] = -float("inf")
    trace = traces[block]
    nxt = torch.cat([seq[1:], torch.tensor([int(next_item)])])
    top_scores, top_items = scores.topk(k, dim=-1)
    known = nxt > 0
    target_scores = scores.gather(1, nxt.clamp_min(0).to(device)[:, None])
    rank = (scores > target_scores).sum(dim=1).cpu() + 1
    W0 = {"W1": layer.W1.detach().cpu(), "b1": layer.b1.detach().cpu()}
    if layer.W2 is not None:
        W0.update(W2=layer.W2.detach().cpu(), b2=layer.b2.detach().cpu())
    first = (lambda t: None if t is None else t[0].detach().cpu())
    return UserTrace(
        label=label, items=seq, next_items=nxt, W1=first(trace.W1), b1=first(trace.b1), W2=first(trace.W2),
        b2=first(trace.b2), W0=W0, loss_before=first(trace.loss_before), loss_after=first(trace.loss_after),
        eta=first(trace.eta), tau=trace.tau.detach().cpu(), layer_input=captured["x"][0].detach().cpu(),
        layer_output=captured["out"][0].detach().cpu(), states=states[0].detach().cpu(),
        topk=top_items.cpu(), topk_scores=top_scores.cpu(), next_rank=torch.where(known, rank, 0),
        switch_points=[int(p) for p in (switch_points if switch_points is not None else [])],
        item_topics=item_topics)


def delta_w_norms(W: torch.Tensor, W0: torch.Tensor) -> torch.Tensor:
    """``‖W_t − W_{t−1}‖_F`` for every position, with ``W_{−1} = W0``.

    W: (..., L, rows, cols) weights over positions; W0: (..., rows, cols) the start. Returns (..., L).
    """
    previous = torch.cat([W0.unsqueeze(-3), W[..., :-1, :, :]], dim=-3)
    return (W - previous).flatten(-2).norm(dim=-1)


def weight_deltas(ut: UserTrace, which: str = "W1") -> torch.Tensor:
    """``‖W_t − W_{t−1}‖_F`` of one weight matrix, every head and position: (nh, L)."""
    return delta_w_norms(ut.weights(which), ut.W0[which])


def layer_output_at(layer, ut: UserTrace, t: int) -> torch.Tensor:
    """Recompute the TTT layer's output at position ``t`` from the traced ``W_t`` alone: (C,).

    ``z_t = f(q_t; W_t)`` per head (``ttt4rec_edu.ttt.inner_model``), heads concatenated, then the layer's
    post-norm and output projection. Matching ``ut.layer_output[t]`` shows that ``W_t`` *is* the layer's state.
    Runs on the layer's device; returns a CPU tensor like the trace's.
    """
    from .ttt import gelu, inner_model
    device, dtype = layer.W1.device, layer.W1.dtype
    with torch.no_grad():
        x = ut.layer_input[None].to(device, dtype)                               # (1, L, C)
        q, _, _ = layer.views(x)                                                 # (1, nh, L, f)
        params = [(ut.W1[None, :, t].to(device), ut.b1[None, :, t, None].to(device))]
        if ut.W2 is not None:
            params.append((ut.W2[None, :, t].to(device), ut.b2[None, :, t, None].to(device)))
        gamma, beta = layer.inner_ln_weight[:, None, :], layer.inner_ln_bias[:, None, :]
        z = inner_model(q[:, :, t:t + 1], params, gamma, beta)                   # (1, nh, 1, f)
        out = layer.post_norm(z.transpose(1, 2).reshape(1, 1, -1))
        if layer.g_proj is not None:
            out = gelu(layer.g_proj(x[:, t:t + 1])) * out
        return layer.o_proj(out)[0, 0].cpu()


# ------------------------------------------------------------------------------------------------------------
# 2. Static pictures (matplotlib)
# ------------------------------------------------------------------------------------------------------------

def _axes(ax, figsize=(6, 2.6)):
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def draw_switch_points(ax, switch_points: Sequence[int], label: bool = True) -> None:
    """Dashed vertical lines at the user's known interest switches (t where the topic changed)."""
    for i, p in enumerate(switch_points):
        ax.axvline(p, color="k", ls="--", lw=0.9, alpha=0.7, label="interest switch" if (label and i == 0) else None)


def plot_weights(ut: UserTrace, head: int, t: int, which: str = "W1", relative_to_init: bool = False,
                 ax=None, vmax: Optional[float] = None):
    """Heatmap of head ``head``'s inner weights at position ``t`` (rows: inputs, columns: outputs).

    ``relative_to_init=True`` shows ``W_t − W_0``: what this user has written into the memory so far.
    """
    ax = _axes(ax, (4, 1.6))
    W = ut.weights(which)[head, t]
    if relative_to_init:
        W = W - ut.W0[which][head]
    vmax = float(W.abs().max()) if vmax is None else vmax
    image = ax.imshow(W.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    name = f"{which}_t − {which}_0" if relative_to_init else f"{which}_t"
    ax.set_title(f"{name}, head {head}, t = {t}", fontsize=9)
    ax.set_xticks([]); ax.set_yticks([])
    return image


def plot_delta_norms(ut: UserTrace, which: str = "W1", head: Optional[int] = None, ax=None):
    """``‖W_t − W_{t−1}‖_F`` over t, one line per head (or only ``head``), switches as dashed lines."""
    ax = _axes(ax)
    norms = weight_deltas(ut, which)
    for h in (range(ut.num_heads) if head is None else [head]):
        ax.plot(norms[h].numpy(), marker=".", ms=3, lw=1, label=f"head {h}")
    draw_switch_points(ax, ut.switch_points)
    ax.set_ylabel(f"‖Δ{which}_t‖_F"); ax.set_xlabel("position t"); ax.grid(alpha=0.3)
    return ax


def plot_inner_loss(ut: UserTrace, head: Optional[int] = None, ax=None):
    """Inner loss before (``ℓ_t(W_{t−1})``) and after (``ℓ_t(W_t)``) each update over t (mean over heads by default)."""
    ax = _axes(ax)
    pick = (lambda v: v.mean(0)) if head is None else (lambda v: v[head])
    ax.plot(pick(ut.loss_before).numpy(), lw=1, label="before the update")
    ax.plot(pick(ut.loss_after).numpy(), lw=1, label="after the update")
    draw_switch_points(ax, ut.switch_points, label=False)
    ax.set_ylabel("inner loss"); ax.set_xlabel("position t"); ax.grid(alpha=0.3)
    return ax


def plot_eta(ut: UserTrace, head: Optional[int] = None, ax=None):
    """The learned step size ``η_t`` over t, one line per head (or only ``head``)."""
    ax = _axes(ax)
    for h in (range(ut.num_heads) if head is None else [head]):
        ax.plot(ut.eta[h].numpy(), lw=1, label=f"head {h}")
    draw_switch_points(ax, ut.switch_points, label=False)
    ax.set_ylabel("η_t"); ax.set_xlabel("position t"); ax.grid(alpha=0.3)
    return ax


def plot_next_rank(ut: UserTrace, k: Optional[int] = None, ax=None):
    """Rank of the true next item over t (log scale, inverted: rank 1 at the top, so the points *above* the
    dotted line are in the top-k)."""
    ax = _axes(ax)
    k = ut.topk.shape[1] if k is None else k
    known = ut.next_rank > 0
    t = torch.arange(ut.length)[known]
    ax.semilogy(t.numpy(), ut.next_rank[known].numpy(), marker=".", ms=4, lw=0.8, color="C2")
    ax.axhline(k + 0.5, color="C3", ls=":", lw=1, label=f"top-{k}")
    draw_switch_points(ax, ut.switch_points, label=False)
    ax.invert_yaxis()
    ax.set_ylabel("rank of next item\n(1 = top)"); ax.set_xlabel("position t"); ax.grid(alpha=0.3)
    return ax


def plot_topk(ut: UserTrace, t: int, ax=None, item_names: Optional[Sequence[str]] = None):
    """The model's top-k items after reading position t, as bars of their scores; the true next item in red."""
    ax = _axes(ax, (3.2, 2.6))
    items, scores = ut.topk[t].tolist(), ut.topk_scores[t].numpy()
    target = int(ut.next_items[t])
    colours = ["C3" if i == target else "C0" for i in items]
    names = [str(i) if item_names is None else str(item_names[i]) for i in items]
    ax.barh(range(len(items))[::-1], scores, color=colours)
    ax.set_yticks(range(len(items))[::-1]); ax.set_yticklabels(names, fontsize=7)
    rank = int(ut.next_rank[t])
    status = "unknown" if target == 0 else (f"rank {rank}" + (" (red)" if rank <= len(items) else ""))
    ax.set_title(f"top-{len(items)} at t = {t}; next item {target}: {status}", fontsize=8)
    ax.set_xlabel("score")
    return ax


def story_positions(ut: UserTrace, count: int = 8) -> List[int]:
    """``count`` positions spread over the sequence, including the positions right after each switch."""
    around = [p for s in ut.switch_points for p in (s - 1, s) if 0 <= p < ut.length]
    spread = np.linspace(0, ut.length - 1, count).round().astype(int).tolist()
    chosen = sorted(set(around))[:count // 2]
    for p in spread:
        if len(chosen) >= count:
            break
        if p not in chosen:
            chosen.append(p)
    return sorted(set(chosen))[:count]


def plot_user_story(ut: UserTrace, head: int = 0, which: str = "W1", positions: Optional[Sequence[int]] = None,
                    relative_to_init: bool = True):
    """The static small-multiples figure: heatmaps of one head's weights at 6–8 positions (one shared colour
    scale) above four lines over t — ``‖ΔW_t‖_F``, inner loss before/after, ``η_t`` and the rank of the true
    next item — all with the user's interest switches drawn. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    positions = story_positions(ut) if positions is None else list(positions)
    W = ut.weights(which)[head]
    if relative_to_init:
        W = W - ut.W0[which][head]
    vmax = float(W[positions].abs().max())
    n = len(positions)
    fig = plt.figure(figsize=(max(2.0 * n, 10), 7.2))
    grid = fig.add_gridspec(3, max(n, 4), height_ratios=[1.0, 1.1, 1.1], hspace=0.6, wspace=0.25)
    image = None
    for i, t in enumerate(positions):
        ax = fig.add_subplot(grid[0, i])
        image = plot_weights(ut, head, t, which, relative_to_init, ax=ax, vmax=vmax)
        switched = " ⟵ switch" if t in ut.switch_points else ""
        ax.set_title(f"t = {t}{switched}", fontsize=9)
    fig.colorbar(image, ax=fig.axes[:n], shrink=0.8, pad=0.01)
    half = max(n, 4) // 2
    lines = [fig.add_subplot(grid[1, :half]), fig.add_subplot(grid[1, half:]),
             fig.add_subplot(grid[2, :half]), fig.add_subplot(grid[2, half:])]
    plot_delta_norms(ut, which, head=None, ax=lines[0])
    lines[0].legend(fontsize=7, ncol=3)
    plot_inner_loss(ut, head=head, ax=lines[1]); lines[1].legend(fontsize=7)
    plot_eta(ut, head=None, ax=lines[2])
    plot_next_rank(ut, ax=lines[3]); lines[3].legend(fontsize=7)
    for ax in lines:
        for t in positions:
            ax.axvline(t, color="C1", lw=4, alpha=0.12)
    name = f"{which}_t − {which}_0" if relative_to_init else f"{which}_t"
    fig.suptitle(f"{ut.label}: {name} of head {head} at the shaded positions (top); over all positions (below)",
                 fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------------------
# 3. The explorer: precomputed frames, switched in the browser
# ------------------------------------------------------------------------------------------------------------

def _png_data_uri(matrix: np.ndarray, vmax: float, levels: int = 32) -> str:
    """One pixel per entry as a ``data:image/png`` URI: a palette PNG with ``levels`` colours of RdBu_r on the
    symmetric scale ±vmax (a palette keeps a 16 × 64 map under a kilobyte, so hundreds of frames stay small)."""
    from matplotlib import colormaps
    from PIL import Image
    index = np.clip(np.round((matrix / vmax + 1) / 2 * (levels - 1)), 0, levels - 1).astype(np.uint8)
    palette = (colormaps["RdBu_r"](np.linspace(0, 1, levels))[:, :3] * 255).round().astype(np.uint8)
    image = Image.frombytes("P", (index.shape[1], index.shape[0]), np.ascontiguousarray(index).tobytes())
    image.putpalette(palette.flatten().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _heatmap_html(matrix: np.ndarray, vmax: float, caption: str, scale: int) -> str:
    rows, cols = matrix.shape
    return (f'<figure style="margin:0">'
            f'<img src="{_png_data_uri(matrix, vmax)}" width="{cols * scale}" height="{rows * scale}" '
            f'style="image-rendering:pixelated;border:1px solid #999" alt="{html.escape(caption)}"/>'
            f'<figcaption style="font-size:11px">{html.escape(caption)} (±{vmax:.2g})</figcaption></figure>')


def frame_html(ut: UserTrace, head: int, t: int, which: str = "W1", scales: Optional[Dict[str, float]] = None,
               scale: int = 4) -> str:
    """One explorer frame as HTML: heatmaps of ``W_t − W_0`` and ``ΔW_t`` (pixel images), the numbers of step
    ``t`` and the top-k list with the true next item marked. ``scales`` fixes the colour ranges (per user/head)."""
    W = ut.weights(which)[head]
    accumulated = (W[t] - ut.W0[which][head]).numpy()
    delta = (W[t] - (W[t - 1] if t > 0 else ut.W0[which][head])).numpy()
    scales = scales or {"acc": float(np.abs(accumulated).max()), "delta": float(np.abs(delta).max())}
    item = int(ut.items[t])
    target = int(ut.next_items[t])

    def item_text(i: int) -> str:
        return f"{i} (topic {int(ut.item_topics[i])})" if ut.item_topics is not None and i > 0 else str(i)

    switch = " — <b>interest switch here</b>" if t in ut.switch_points else ""
    entries = []
    for i, s in zip(ut.topk[t].tolist(), ut.topk_scores[t].tolist()):
        mark = "color:#c00;font-weight:bold;" if i == target else ""
        entries.append(f'<li style="{mark}margin:0">{html.escape(item_text(i))} '
                       f'<span style="color:#666">{s:.2f}</span></li>')
    rank = int(ut.next_rank[t])
    norm = float(np.linalg.norm(delta))
    info = (f"<div style='font-size:12px;line-height:1.35;min-width:16em'><b>{html.escape(ut.label)}</b>, head {head}, "
            f"t = {t} of {ut.length - 1}{switch}<br>read item {html.escape(item_text(item))}<br>"
            f"η_t = {float(ut.eta[head, t]):.4f}, τ = {float(ut.tau[t]):.3f}<br>"
            f"inner loss {float(ut.loss_before[head, t]):.3f} → {float(ut.loss_after[head, t]):.3f}<br>"
            f"‖Δ{which}_t‖_F = {norm:.4f}<br>"
            f"true next item: {html.escape(item_text(target)) if target else 'unknown'}"
            f"{f' (rank {rank})' if target else ''}</div>")
    top = (f"<div style='font-size:11px;line-height:1.25'>top-{len(entries)} after t"
           f"<ol style='margin:0;padding-left:2.2em'>"
           f"{''.join(entries)}</ol></div>")
    maps = (_heatmap_html(accumulated, scales["acc"], f"{which}_t − {which}_0", scale)
            + _heatmap_html(delta, scales["delta"], f"Δ{which}_t = {which}_t − {which}_(t−1)", scale))
    return (f"<div style='display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start'>{info}"
            f"<div style='display:flex;flex-direction:column;gap:6px'>{maps}</div>{top}</div>")


@dataclass
class Explorer:
    """The widget tree of :func:`make_explorer` and handles to its controls (for tests and for live use).

    Displaying an ``Explorer`` displays ``widget``. ``frames`` counts the precomputed HTML frames.
    """

    widget: object
    user_selector: object
    head_selector: object
    sliders: List[object]
    frames: int
    state_bytes: int
    links: List[object] = field(default_factory=list)    # the jslinks (source control → stack it drives)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def make_explorer(traces: Sequence[UserTrace], which: str = "W1", scale: int = 4) -> Explorer:
    """An ipywidgets explorer over users × heads × positions that needs no kernel once rendered.

    Every (user, head, t) frame is precomputed by :func:`frame_html` into an ``HTML`` widget. Frames sit in
    nested ``Stack`` widgets (user → head → t); the user ``Dropdown``, the head ``Dropdown`` and one
    ``IntSlider`` per user (range 0..L_u − 1) drive the stacks' ``selected_index`` through ``jslink`` (the
    dropdowns by their ``index``, which is what the browser side knows), which runs
    in the browser. So on the static book page moving the slider changes the picture, and in a live kernel
    (Colab) it behaves the same. Colour scales are fixed per (user, head), so frames of one user compare.
    """
    import ipywidgets as widgets
    if not traces:
        raise ValueError("make_explorer needs at least one UserTrace")
    heads = traces[0].num_heads
    if any(ut.num_heads != heads for ut in traces):
        raise ValueError("all traces must come from layers with the same number of heads")
    head_selector = widgets.Dropdown(options=[(f"head {h}", h) for h in range(heads)], value=0,
                                     description="head")
    user_selector = widgets.Dropdown(options=[(ut.label, i) for i, ut in enumerate(traces)], value=0,
                                     description="user", layout=widgets.Layout(width="32em"))
    user_pages, sliders, links, frames, state_bytes = [], [], [], 0, 0
    for ut in traces:
        slider = widgets.IntSlider(value=0, min=0, max=ut.length - 1, step=1, description="position t",
                                   continuous_update=True, layout=widgets.Layout(width="40em"))
        head_pages = []
        for h in range(heads):
            W = ut.weights(which)[h]
            start = ut.W0[which][h]
            previous = torch.cat([start[None], W[:-1]])                         # W_{t−1}, (L, rows, cols)
            scales = {"acc": float((W - start).abs().max()) or 1.0, "delta": float((W - previous).abs().max()) or 1.0}
            pages = []
            for t in range(ut.length):
                text = frame_html(ut, h, t, which, scales, scale)
                state_bytes += len(text)
                pages.append(widgets.HTML(value=text))
            frames += len(pages)
            t_stack = widgets.Stack(children=pages, selected_index=0)
            links.append(widgets.jslink((slider, "value"), (t_stack, "selected_index")))
            head_pages.append(t_stack)
        head_stack = widgets.Stack(children=head_pages, selected_index=0)
        links.append(widgets.jslink((head_selector, "index"), (head_stack, "selected_index")))
        user_pages.append(widgets.VBox([slider, head_stack]))
        sliders.append(slider)
    user_stack = widgets.Stack(children=user_pages, selected_index=0)
    links.append(widgets.jslink((user_selector, "index"), (user_stack, "selected_index")))
    box = widgets.VBox([widgets.HBox([user_selector, head_selector]), user_stack])
    return Explorer(widget=box, user_selector=user_selector, head_selector=head_selector, sliders=sliders,
                    frames=frames, state_bytes=state_bytes, links=links)


__all__ = ["UserTrace", "user_trace", "delta_w_norms", "weight_deltas", "layer_output_at", "draw_switch_points",
           "plot_weights", "plot_delta_norms", "plot_inner_loss", "plot_eta", "plot_next_rank", "plot_topk",
           "story_positions", "plot_user_story", "frame_html", "Explorer", "make_explorer",
           # re-exported from ttt4rec_edu.source_view and ttt4rec_edu.diagrams (chapters 4-5 call them as viz.*)
           "fold_code", "source_lines", "show_source", "nested_function", "DualBlocks", "dual_blocks",
           "plot_dual_blocks", "GraphNode", "outer_loop_graph", "plot_outer_loop_graph"]
