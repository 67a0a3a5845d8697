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

from ttt4rec_edu import viz  # noqa: E402
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
    assert all(isinstance(link, widgets.widget_link.Link) for link in explorer.links) and len(explorer.links) == 1 + 2 + 4
    assert 0 < explorer.state_bytes < 2 * (L + 5) * 6000               # small frames (palette PNGs)
