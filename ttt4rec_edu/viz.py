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
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

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
           "story_positions", "plot_user_story", "frame_html", "Explorer", "make_explorer"]


# ------------------------------------------------------------------------------------------------------------
# 4. Reading the library's own code in the book (chapter 4), and two pictures (chapters 4 and 5)
# ------------------------------------------------------------------------------------------------------------

def _split_comment(line: str):
    """``(code, comment)`` of one source line; ``comment`` is '' when the line has no trailing ``#`` comment
    outside a string literal. :func:`_scan` stops at that ``#``, so its length is where the comment starts."""
    start = len(_scan(line))
    return (line[:start].rstrip(), line[start:]) if start < len(line) else (line, "")


def _scan(line: str, depth: int = 0):
    """Bracket depth after each character of a code line (strings skipped): list of (char, depth after)."""
    out, quote, escaped = [], None, False
    for ch in line:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            out.append(("\0", depth))          # inside a string: never a place to break
            continue
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        out.append((ch, depth))
    return out


def _poor_comma(line: str, scanned, i: int) -> bool:
    """A comma not worth breaking after: inside a subscript ``x[a, b]`` or between the targets of a
    comprehension's ``for a, b in``."""
    import re
    depth = scanned[i][1]
    opener = max((j for j in range(i) if scanned[j][0] in "([{" and scanned[j][1] == depth), default=-1)
    if opener < 0:
        return False
    if line[opener] == "[" and opener > 0 and (line[opener - 1].isalnum() or line[opener - 1] in "_)]"):
        return True
    segment = line[opener + 1:i]
    return bool(re.search(r"\bfor\b(?!.*\bin\b)", segment))


def _break_inside_brackets(line: str, width: int, depth: int = 0) -> List[str]:
    """Break a too-long code line after a ``", "`` that lies inside brackets (``depth``: the brackets still
    open from earlier lines) and before ``width``: the outermost such comma, the last one of those. Python's
    implicit line joining keeps the code the same. Returns the line unchanged when there is none."""
    out, continued = [], depth > 0
    while len(line) > width:
        scanned = _scan(line, depth)
        # after ", " (cut behind the comma) or before " - ", " + ", " * ", " @ " (cut before the operator)
        candidates = [(d, i + 1) for i, (ch, d) in enumerate(scanned[:width])
                      if ch == "," and d > 0 and line[i + 1:i + 2] == " "
                      and not _poor_comma(line, scanned, i)]
        candidates += [(d, i) for i, (ch, d) in enumerate(scanned[:width - 2])
                       if ch == " " and d > 0 and line[i + 1:i + 3] in ("- ", "+ ", "* ", "@ ")
                       and line[:i].strip()]
        if not candidates:
            break
        low = min(d for d, _ in candidates)
        cut = max(i for d, i in candidates if d == low)
        opener = max((i for i, (ch, d) in enumerate(scanned[:cut]) if ch in "([{" and d == low), default=-1)
        indent = len(line) - len(line.lstrip())
        out.append(line[:cut].rstrip())
        rest = line[cut:].lstrip()
        column = indent if continued else indent + 4
        if opener >= 0 and opener + 1 + len(rest) <= width:
            column = opener + 1
        depth, continued = scanned[cut - 1][1], True
        line = " " * column + rest
    return out + [line]


def _multiline_string_rows(text: str) -> set:
    """1-based numbers of the lines that a multi-line string literal touches (by Python's tokenizer; a
    fragment the tokenizer rejects falls back to counting triple quotes)."""
    import io as _io
    import tokenize
    rows = set()
    try:
        for tok in tokenize.generate_tokens(_io.StringIO(text).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                rows.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        inside = False
        for number, line in enumerate(text.split("\n"), 1):
            marks = line.count('"' * 3) + line.count("'" * 3)
            if inside or marks:
                rows.add(number)
            inside = inside != (marks % 2 == 1)
    return rows


def fold_code(text: str, width: int = 88) -> str:
    """Lay out source code for a page of ``width`` characters without changing a token: a trailing comment
    that makes a line too long moves onto its own line above it, a comment line too long is wrapped, a call
    or list too long is broken after a comma inside its brackets. Lines that cannot be folded this way are
    left as they are."""
    import textwrap
    lines, depth = [], 0
    source = text.split("\n")
    string_lines = _multiline_string_rows(text)
    n = 0
    while n < len(source):
        line = source[n]
        n += 1
        if n in string_lines:            # part of a multi-line (doc)string: shown as it is
            lines.append(line)
            continue
        code, comment = _split_comment(line)
        indent = " " * (len(line) - len(line.lstrip()))
        if not code.strip() and comment and len(line) > width:
            # a block of comment lines with one too long: rewrap the block as one paragraph
            words = [comment.lstrip("# ")]
            while n < len(source) and source[n].strip().startswith("#") and source[n].startswith(indent) \
                    and not source[n][len(indent)].isspace():
                words.append(source[n].strip().lstrip("# "))
                n += 1
            lines.extend(textwrap.wrap(" ".join(words), width, initial_indent=indent + "# ",
                                       subsequent_indent=indent + "# ", break_on_hyphens=False))
            continue
        if len(line) > width:
            if comment and code.strip():
                lines.append(indent + comment)
                line = code
            lines.extend(_break_inside_brackets(line, width, depth))
        else:
            lines.append(line)
        scanned = _scan(code, depth)
        depth = scanned[-1][1] if scanned else depth
    return "\n".join(lines)


def source_lines(func, start: Optional[str] = None, end: Optional[str] = None, width: int = 88) -> str:
    """The real source of ``func`` (a function or method of this library), from the first line containing
    ``start`` to the first line after it containing ``end`` (both included; the whole function by default),
    dedented and folded to ``width`` (:func:`fold_code`). A first comment line names the file and the lines.
    Raises ``ValueError`` when ``start`` or ``end`` is not found, so a renamed line breaks the book's build
    instead of silently showing something else."""
    import inspect
    import textwrap
    lines, first = inspect.getsourcelines(func)
    i = 0
    if start is not None:
        hits = [n for n, line in enumerate(lines) if start in line]
        if not hits:
            raise ValueError(f"{func.__qualname__}: no line contains {start!r}")
        i = hits[0]
    j = len(lines) - 1
    if end is not None:
        hits = [n for n in range(i, len(lines)) if end in lines[n]]
        if not hits:
            raise ValueError(f"{func.__qualname__}: no line after {start!r} contains {end!r}")
        j = hits[0]
    module = inspect.getsourcefile(func) or "?"
    module = module.replace("\\", "/").split("/ttt4rec_edu/")[-1]
    header = f"# ttt4rec_edu/{module}, lines {first + i}-{first + j} ({func.__qualname__})"
    body = textwrap.dedent("".join(lines[i:j + 1])).rstrip("\n")
    return header + "\n" + fold_code(body, width)


def show_source(func, start: Optional[str] = None, end: Optional[str] = None, width: int = 88):
    """Display :func:`source_lines` as a highlighted Python block in a notebook (plain text elsewhere)."""
    text = source_lines(func, start, end, width)
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython is a dependency of the book, not of the library
        print(text)
        return
    display(Markdown(f"```python\n{text}\n```"))


def nested_function(func, name: str, **free):
    """A function defined *inside* ``func`` (e.g. ``coefficients`` in :meth:`ttt4rec_edu.ttt.TTTLayer.dual`),
    rebuilt from ``func``'s compiled code so that the book can call the library's own lines. Variables it
    takes from the enclosing function are passed by name in ``free`` (all of them, else ``TypeError``)."""
    import types
    code = next((c for c in func.__code__.co_consts if isinstance(c, types.CodeType) and c.co_name == name),
                None)
    if code is None:
        raise ValueError(f"{func.__qualname__} defines no function {name!r}")
    missing = [v for v in code.co_freevars if v not in free]
    if missing:
        raise TypeError(f"{name} needs the enclosing variables {missing}; pass them as keywords")
    closure = tuple(types.CellType(free[v]) for v in code.co_freevars)
    return types.FunctionType(code, func.__globals__, name, None, closure or None)


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
        ax.set_xticks([]); ax.set_yticks([])

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
        ax.annotate("", xy=(b.x, b.y), xytext=(a.x, a.y),
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=2.2 if inner else 1.0,
                                    shrinkA=14, shrinkB=14))
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
    ax.text(middle, -0.75, "inner loop: W_t = W_{t-1} - η_t ∇ℓ_t(W_{t-1}), one step per token (blue)",
            ha="center", fontsize=9, color="C0")
    ax.text(middle, 4.6, "outer loop: ∂ℒ/∂θ flows back along every edge; red dashes: one path, "
            "from ℒ through W_T, ..., W_1 and k_1, v_1 to θ_K, θ_V", ha="center", fontsize=9, color="C3")
    ax.set_xlim(-1.9, 2.6 * T + 2.4); ax.set_ylim(-1.8, 4.9); ax.axis("off")
    return fig


__all__ += ["fold_code", "source_lines", "show_source", "nested_function", "DualBlocks", "dual_blocks",
            "plot_dual_blocks", "GraphNode", "outer_loop_graph", "plot_outer_loop_graph"]
