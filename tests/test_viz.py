"""ttt4rec_edu.viz: the user trace holds the TTT layer's real state, the pictures build, the explorer is complete.

A tiny untrained TTT4Rec (C = 16, 2 heads, TTT-MLP, b = 4) on a 11-item sequence; the proofs do not need training:
- shapes of every field of the UserTrace;
- W_t from the trace alone reproduces the layer's output at t (so W_t *is* the state), and the model's top-k is
  the top of the full scores (it contains the argmax; the true next item's rank agrees with the scores);
- ‖W_t − W_{t−1}‖_F on a hand-made trajectory; the static figure builds under Agg;
- the explorer has the user/head Dropdowns, one IntSlider per user with the right range, one frame per
  (user, head, t), and every control is jslinked to the Stack it drives (so it works without a kernel).
"""
import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ttt4rec_edu import diagrams, source_view, viz  # noqa: E402
from ttt4rec_edu.models import build_model  # noqa: E402

N_ITEMS, L = 30, 11


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("ttt4rec", N_ITEMS, 16, hidden_size=16, num_heads=2, ffn_size=32, mini_batch_size=4)
    with torch.no_grad():  # larger views than the N(0, 0.02) init, so the inner loop visibly moves W
        for proj in (m.blocks[0].ttt.q_proj, m.blocks[0].ttt.k_proj, m.blocks[0].ttt.v_proj):
            proj.weight.normal_(0, 0.5)
    return m


@pytest.fixture(scope="module")
def trace(model):
    items = np.array([3, 7, 7, 12, 1, 30, 5, 5, 9, 2, 14])
    return viz.user_trace(model, items, k=10, label="test user", switch_points=[4, 8], next_item=6)


def test_user_trace_shapes(trace):
    nh, f, d, C = 2, 8, 32, 16
    assert trace.W1.shape == (nh, L, f, d) and trace.b1.shape == (nh, L, d)
    assert trace.W2.shape == (nh, L, d, f) and trace.b2.shape == (nh, L, f)
    assert trace.W0["W1"].shape == (nh, f, d) and trace.W0["W2"].shape == (nh, d, f)
    for name in ("loss_before", "loss_after", "eta"):
        assert getattr(trace, name).shape == (nh, L)
    assert trace.tau.shape == (L,)
    assert trace.states.shape == trace.layer_input.shape == trace.layer_output.shape == (L, C)
    assert trace.topk.shape == trace.topk_scores.shape == (L, 10)
    assert trace.next_items.tolist() == [7, 7, 12, 1, 30, 5, 5, 9, 2, 14, 6]
    assert trace.length == L and trace.num_heads == nh
    assert viz.weight_deltas(trace).shape == (nh, L)
    assert (trace.loss_after <= trace.loss_before + 1e-4).float().mean() > 0.5  # updates mostly help


def test_w_t_from_the_trace_reproduces_the_layer_output(model, trace):
    layer = model.blocks[0].ttt
    for t in range(L):
        recomputed = viz.layer_output_at(layer, trace, t)
        assert torch.allclose(recomputed, trace.layer_output[t], atol=1e-5), t
    # and it is not trivially so: W_t moved away from W0, and reading with W0 gives another output
    assert (trace.W1[:, -1] - trace.W0["W1"]).abs().max() > 1e-3
    frozen = viz.UserTrace(**{**trace.__dict__, "W1": trace.W0["W1"][:, None].expand_as(trace.W1)})
    assert not torch.allclose(viz.layer_output_at(layer, frozen, L - 1), trace.layer_output[L - 1], atol=1e-5)


def test_topk_contains_the_argmax_and_ranks_agree_with_scores(model, trace):
    scores = trace.states @ model.item_table().detach().T
    scores[:, 0] = -float("inf")
    assert torch.equal(trace.topk[:, 0], scores.argmax(dim=1))
    assert 0 not in trace.topk.tolist()                       # padding never ranks
    assert (trace.topk_scores[:, :-1] >= trace.topk_scores[:, 1:]).all()
    for t in range(L):
        target = int(trace.next_items[t])
        assert int(trace.next_rank[t]) == int((scores[t] > scores[t, target]).sum()) + 1
        if int(trace.next_rank[t]) <= 10:
            assert target in trace.topk[t].tolist()


def test_delta_w_norms_by_hand():
    W0 = torch.zeros(2, 2)
    W = torch.stack([torch.tensor([[3.0, 4.0], [0.0, 0.0]]),     # step from W0: ‖(3, 4)‖ = 5
                     torch.tensor([[3.0, 4.0], [1.0, 0.0]]),     # one entry +1: 1
                     torch.tensor([[3.0, 4.0], [1.0, 0.0]]),     # no change: 0
                     torch.tensor([[1.0, 4.0], [1.0, 2.0]])])    # (−2, +2): √8
    assert torch.allclose(viz.delta_w_norms(W, W0), torch.tensor([5.0, 1.0, 0.0, 8 ** 0.5]))
    batched = viz.delta_w_norms(torch.stack([W, 2 * W]), torch.stack([W0, W0]))  # leading axes broadcast
    assert torch.allclose(batched[1], 2 * batched[0])


def test_user_trace_rejects_bad_input(model):
    with pytest.raises(ValueError, match="max_len=16"):
        viz.user_trace(model, np.arange(1, 20))
    with pytest.raises(ValueError, match="block must be"):
        viz.user_trace(model, [1, 2], block=3)


def test_static_figures_build(trace):
    fig = viz.plot_user_story(trace, head=1, which="W2")
    assert len(fig.axes) >= 6 + 4
    plt.close(fig)
    fig, axes = plt.subplots(1, 3)
    viz.plot_weights(trace, 0, 3, ax=axes[0])
    viz.plot_topk(trace, 3, ax=axes[1])
    viz.plot_eta(trace, ax=axes[2])
    assert "next item 1" in axes[1].get_title()
    plt.close(fig)
    assert set(viz.story_positions(trace, 6)) >= {3, 4}      # the positions around the first switch




def test_explorer_has_its_controls_and_one_frame_per_user_head_position(model, trace):
    short = viz.user_trace(model, [4, 5, 6, 7, 8], label="short user")
    explorer = viz.make_explorer([trace, short])
    assert explorer.frames == 2 * (L + 5)
    assert isinstance(explorer.user_selector, widgets.Dropdown) and len(explorer.user_selector.options) == 2
    assert isinstance(explorer.head_selector, widgets.Dropdown) and len(explorer.head_selector.options) == 2
    assert [(s.min, s.max) for s in explorer.sliders] == [(0, L - 1), (0, 4)]
    assert all(isinstance(s, widgets.IntSlider) for s in explorer.sliders)
    user_stack = explorer.widget.children[1]
    assert isinstance(user_stack, widgets.Stack) and len(user_stack.children) == 2
    t_stack = user_stack.children[0].children[1].children[1]          # user 0, head 1
    assert len(t_stack.children) == L and all(isinstance(c, widgets.HTML) for c in t_stack.children)
    assert "data:image/png;base64," in t_stack.children[3].value and "t = 3" in t_stack.children[3].value
    # every control is linked in the browser (jslink) to the stacks it drives
    def links_from(control, attribute):
        return [link.target[0] for link in explorer.links if link.source == (control, attribute)
                and isinstance(link.target[0], widgets.Stack) and link.target[1] == "selected_index"]
    assert links_from(explorer.user_selector, "index") == [user_stack]
    assert len(links_from(explorer.head_selector, "index")) == 2      # one head stack per user
    assert links_from(explorer.sliders[0], "value")[1] is t_stack       # one position stack per head
    assert [len(links_from(s, "value")) for s in explorer.sliders] == [2, 2]
    assert all(isinstance(link, widgets.widget_link.Link) for link in explorer.links)
    assert len(explorer.links) == 1 + 2 + 4
    assert 0 < explorer.state_bytes < 2 * (L + 5) * 6000               # small frames (palette PNGs)


# --- reading the library's code in the book (chapter 4) and the two pictures (chapters 4 and 5) --------------

def test_fold_code_keeps_every_token_and_fits_the_page():
    import ast
    import inspect

    from ttt4rec_edu import ttt
    from ttt4rec_edu.exercises import ttt_layer
    for module in (ttt, ttt_layer, viz):          # long, dense real code
        source = inspect.getsource(module)
        folded = source_view.fold_code(source, width=88)
        assert ast.dump(ast.parse(folded)) == ast.dump(ast.parse(source)), module.__name__
        before = sum(len(line) > 88 for line in source.split("\n"))
        after = sum(len(line) > 88 for line in folded.split("\n"))
        assert after < before, module.__name__
    # code lines (not strings) of the dual form all fit once folded
    walk = source_view.source_lines(ttt.TTTLayer.dual, "def run_chunk", "return u, new_params")
    assert max(len(line) for line in walk.split("\n")) <= 88
    # a trailing comment moves above its line; a long call breaks after a comma inside its brackets
    line = "    value = compute(alpha_parameter, beta_parameter, gamma_parameter)  # a long comment here"
    assert source_view.fold_code(line, 80).split("\n") == [
        "    # a long comment here", "    value = compute(alpha_parameter, beta_parameter, gamma_parameter)"]
    broken = source_view.fold_code("x = f(aaaaaaaa, bbbbbbbb, cccccccc, dddddddd)", 30).split("\n")
    assert len(broken) > 1 and all(len(b) <= 30 for b in broken)
    original = "x = f(aaaaaaaa, bbbbbbbb, cccccccc, dddddddd)"
    assert ast.dump(ast.parse("\n".join(broken))) == ast.dump(ast.parse(original))
    # a comma inside a string is never a break point
    text = 'y = g("a, b, c, d, e, f, g, h, i, j, k, l, m")'
    assert source_view.fold_code(text, 20) == text


def test_source_lines_shows_the_real_lines_and_fails_loudly():
    import inspect

    from ttt4rec_edu.ttt import TTTLayer
    text = source_view.source_lines(TTTLayer.dual, "def coefficients", "dim=-2)")
    header, *body = text.split("\n")
    lines, first = inspect.getsourcelines(TTTLayer.dual)
    start = next(i for i, line in enumerate(lines) if "def coefficients" in line)
    assert header.startswith(f"# ttt4rec_edu/ttt.py, lines {first + start}-")
    assert body[0] == "def coefficients(u, a, causal_eta):"
    assert "torch.cat(" in text
    with pytest.raises(ValueError, match="no line contains"):
        source_view.source_lines(TTTLayer.dual, "a line that is not there")
    with pytest.raises(ValueError, match="contains"):
        source_view.source_lines(TTTLayer.dual, "def coefficients", "no such end")


def test_nested_function_is_the_library_code():
    from ttt4rec_edu.ttt import TTTLayer
    coefficients = source_view.nested_function(TTTLayer.dual, "coefficients")
    gen = torch.Generator().manual_seed(0)
    n, fan_in = 5, 3
    u, a = torch.randn(n, fan_in, generator=gen), torch.randn(n, fan_in, generator=gen)
    E = torch.tril(torch.rand(n, n, generator=gen))
    coeff = coefficients(u, a, E)
    assert coeff.shape == (n + fan_in + 1, n)
    assert torch.allclose(coeff[:n], E * (u @ a.T + 1))                       # tril(E ⊙ (U Aᵀ + 1))
    assert torch.allclose(coeff[n:n + fan_in], (E[-1:].T * a).T)              # (E_b· ⊙ A)ᵀ
    assert torch.allclose(coeff[-1], E[-1])                                   # E_b·
    with pytest.raises(ValueError, match="defines no function"):
        source_view.nested_function(TTTLayer.dual, "nope")
    with pytest.raises(TypeError, match="enclosing variables"):
        source_view.nested_function(TTTLayer.dual, "run_chunk")


def test_dual_blocks_is_the_primal_loop_as_rank_one_sum():
    gen = torch.Generator().manual_seed(1)
    b, f = 6, 3
    W, c = torch.randn(f, f, generator=gen, dtype=torch.float64), torch.randn(f, generator=gen, dtype=torch.float64)
    Q, K, V = (torch.randn(b, f, generator=gen, dtype=torch.float64) for _ in range(3))
    eta = 0.1 * torch.rand(b, generator=gen, dtype=torch.float64)
    tau = 1.0 / torch.arange(1, b + 1, dtype=torch.float64)
    G = K @ W + c - V                                       # gradient of ½‖kW + c − v‖² at the output
    blocks = diagrams.dual_blocks(Q, K, G, eta, tau)
    assert torch.equal(blocks.M, torch.tril(blocks.M))      # causal
    assert torch.allclose(blocks.terms.sum(0), blocks.product)
    assert all(torch.linalg.matrix_rank(term) <= 1 for term in blocks.terms)
    # the picture's claim: Q W + c − M G equals reading every token with its own primal weights
    primal = []
    for i in range(b):
        W_i = W - tau[i] * sum(eta[j] * torch.outer(K[j], G[j]) for j in range(i + 1))
        c_i = c - tau[i] * sum(eta[j] * G[j] for j in range(i + 1))
        primal.append(Q[i] @ W_i + c_i)
    assert torch.allclose(Q @ W + c - blocks.product, torch.stack(primal))
    with pytest.raises(ValueError, match="dual_blocks"):
        diagrams.dual_blocks(Q, K[:-1], G, eta, tau)
    fig = diagrams.plot_dual_blocks(blocks, show_terms=3)
    assert len(fig.axes) == 3 + 3 + 1                       # M, G, MG; three terms and the rest
    plt.close(fig)


def test_outer_loop_graph_routes_the_outer_gradient_through_the_inner_chain():
    T = 4
    nodes, edges = diagrams.outer_loop_graph(T)
    names = {n.name for n in nodes}
    assert all(src in names and dst in names for src, dst in edges)
    parents = {}
    for src, dst in edges:
        parents.setdefault(dst, set()).add(src)

    def ancestors(node):
        seen, todo = set(), [node]
        while todo:
            for p in parents.get(todo.pop(), ()):
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    assert {"theta", "W0"} <= ancestors("loss")             # the outer gradient reaches θ and W_0
    for t in range(1, T + 1):
        assert f"W{t - 1}" in ancestors(f"W{t}") or t == 1  # the inner chain
        later = {f"x{s}" for s in range(t + 1, T + 1)}
        assert not (ancestors(f"z{t}") & later)             # causal: z_t never sees a later token
    # θ reaches W_T only through the views k_t, v_t: remove them and the chain carries nothing from θ
    assert "theta" not in {p for t in range(1, T + 1) for p in parents[f"W{t}"]}
    with pytest.raises(ValueError):
        diagrams.outer_loop_graph(0)
    fig = diagrams.plot_outer_loop_graph(3)
    assert len(fig.axes) == 1
    plt.close(fig)


def test_dual_blocks_without_bias_is_the_bare_dual_form():
    gen = torch.Generator().manual_seed(2)
    b, f = 5, 3
    W = torch.randn(f, f, generator=gen, dtype=torch.float64)
    Q, K, V = (torch.randn(b, f, generator=gen, dtype=torch.float64) for _ in range(3))
    eta, tau = torch.full((b,), 0.1, dtype=torch.float64), torch.ones(b, dtype=torch.float64)
    G = K @ W - V
    blocks = diagrams.dual_blocks(Q, K, G, eta, tau, bias=False)
    assert torch.allclose(Q @ W - blocks.product, Q @ W - 0.1 * torch.tril(Q @ K.T) @ G)
    assert not torch.allclose(blocks.M, diagrams.dual_blocks(Q, K, G, eta, tau).M)


def test_viz_re_exports_the_chapter_4_and_5_pictures_for_the_book():
    """Chapters 4-5 call ``viz.show_source``, ``viz.plot_outer_loop_graph``, ...: the same functions."""
    for module in (source_view, diagrams):
        for name in module.__all__:
            assert getattr(viz, name) is getattr(module, name) and name in viz.__all__


def test_outer_loop_picture_draws_no_edge_to_the_loss_through_a_box():
    """In the drawn graph, every z_t → ℒ arrow avoids the boxes of every other node (chapter 5's picture once ran
    the edge from z_2 to ℒ through the W_3 box)."""
    fig = diagrams.plot_outer_loop_graph(3)
    ax = fig.axes[0]
    fig.canvas.draw()
    boxes = {t.get_text(): t.get_bbox_patch().get_window_extent() for t in ax.texts
             if t.get_bbox_patch() is not None}
    to_loss = [a for a in ax.texts if isinstance(a, matplotlib.text.Annotation) and a.arrow_patch is not None
               and a.xy == next((n.x, n.y) for n in diagrams.outer_loop_graph(3)[0] if n.name == "loss")]
    assert len(to_loss) == 3
    for arrow in to_loss:
        path = arrow.arrow_patch.get_path()     # display coordinates once drawn
        points = path.interpolated(50).vertices
        start = tuple(points[0])
        for label, box in boxes.items():
            if label == "outer loss ℒ" or box.contains(*start):
                continue
            inside = [p for p in points if box.shrunk(0.9, 0.9).contains(*p)]
            assert not inside, f"an edge to the loss runs through the box {label!r}"
    plt.close(fig)


def test_source_without_docstrings_is_the_real_code_and_fits_the_page():
    """``source_lines(..., docstrings=False)``: the whole method with every docstring (its own and its inner
    functions') left out; what remains still parses, every line is a line of the file, and it fits 88 columns."""
    import ast
    import inspect
    import textwrap

    from ttt4rec_edu.ttt import TTTLayer

    text = source_view.source_lines(TTTLayer.dual, docstrings=False)
    header, body = text.split("\n", 1)
    assert "docstrings left out" in header and '"""' not in body
    assert max(map(len, text.splitlines())) <= 88
    ast.parse(body)
    real = textwrap.dedent("".join(inspect.getsourcelines(TTTLayer.dual)[0]))
    kept = source_view.source_lines(TTTLayer.dual)
    assert '"""' in kept and len(kept.splitlines()) > len(text.splitlines())
    assert all(line.strip() in real for line in body.splitlines() if line.strip() and
               not line.strip().startswith("#"))
    with pytest.raises(ValueError, match="whole function"):
        source_view.source_lines(TTTLayer.dual, start="def run_chunk", docstrings=False)
