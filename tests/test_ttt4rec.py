"""The full TTT4Rec model and its residual blocks (ttt4rec_edu.ttt4rec, ttt4rec_edu.backbones).

What is proved here: the score contract for all four variants (backbone × inner model), exact parameter counts
derived by hand, causality and right-padding invariance of the gathered representation, eval determinism, the
adapt-at-test ablation (changes evaluation, never training; with adaptation off the Transformer-backbone TTT layer
sees one token only), gradients reaching every parameter, the paper-text norm/FFN options, the three TTT modes
agreeing through the whole model, the registry hooks and input errors.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ttt4rec_edu.backbones import (CausalDepthwiseConv1d, GeluFFN, PreConv, ResidualBlock, RMSNorm, SwiGLU,
                                   make_ffn, make_norm)
from ttt4rec_edu.models import available_models, build_model, parameter_summary
from ttt4rec_edu.ttt import TTTConfig
from ttt4rec_edu.ttt4rec import TTT4Rec, TTT4RecConfig

NUM_ITEMS = 30
VARIANTS = [(b, i) for b in ("transformer", "mamba") for i in ("mlp", "linear")]


def make_model(backbone="transformer", inner="mlp", seed=0, **overrides) -> TTT4Rec:
    torch.manual_seed(seed)
    return build_model("ttt4rec", NUM_ITEMS, 24, backbone=backbone, inner=inner, **overrides)


def random_batch(batch=4, width=20, lengths=(20, 13, 8, 1), seed=1):
    """Right-padded ids (0 after each length), like ttt4rec_edu.data.protocol.SampleSet.batch."""
    gen = torch.Generator().manual_seed(seed)
    item_seq = torch.randint(1, NUM_ITEMS + 1, (batch, width), generator=gen)
    lengths = torch.tensor(lengths[:batch])
    item_seq[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    return item_seq, lengths


# ---------------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("backbone,inner", VARIANTS)
def test_score_all_shape_and_padding_column(backbone, inner):
    model = make_model(backbone, inner).eval()
    item_seq, lengths = random_batch()
    with torch.no_grad():
        scores = model.score_all(item_seq, lengths)
        hidden = model.encode(item_seq, lengths)
    assert scores.shape == (4, NUM_ITEMS + 1)
    assert hidden.shape == (4, 64)
    assert model.item_table().shape == (NUM_ITEMS + 1, 64)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    # scores are exactly encode @ item_table.T (the hook pair the metrics and the chunked loss rely on)
    torch.testing.assert_close(scores[:, 1:], (hidden @ model.item_table().T)[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(model(item_seq, lengths), scores, rtol=0, atol=0)


def test_registry_builds_with_overrides_and_rejects_bad_options():
    assert "ttt4rec" in available_models()
    model = build_model("ttt4rec", 50, 20, backbone="mamba", inner="linear", num_blocks=2, mini_batch_size=4)
    assert isinstance(model, TTT4Rec)
    assert (model.config.backbone, model.config.inner, model.config.num_items, model.config.max_len) == (
        "mamba", "linear", 50, 20)
    assert len(model.blocks) == 2 and all(block.pre_conv is not None for block in model.blocks)
    assert build_model("ttt4rec", 50, 20).blocks[0].pre_conv is None  # Transformer backbone: no pre-conv
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model("ttt4rec", 50, 20, backbone="rwkv")
    with pytest.raises(ValueError, match="inner must be one of"):
        build_model("ttt4rec", 50, 20, inner="attention")
    with pytest.raises(ValueError, match="norm must be one of"):
        build_model("ttt4rec", 50, 20, norm="batch")
    with pytest.raises(ValueError, match="ffn must be one of"):
        build_model("ttt4rec", 50, 20, ffn="relu")
    with pytest.raises(ValueError, match="ttt_mode must be one of"):
        build_model("ttt4rec", 50, 20, ttt_mode="fast")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        build_model("ttt4rec", 50, 20, hidden_size=66)
    with pytest.raises(TypeError, match="unknown options"):
        build_model("ttt4rec", 50, 20, hiden_size=32)
    with pytest.raises(ValueError, match="num_blocks must be >= 1"):
        TTT4RecConfig(num_items=50, num_blocks=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        TTT4RecConfig(num_items=50, dropout=1.0)


@pytest.mark.parametrize("option,value,message", [
    ("base_lr", float("nan"), r"base_lr must be > 0.0 \(a finite number\), got nan"),   # gave NaN scores silently
    ("base_lr", float("inf"), r"base_lr must be > 0.0"),
    ("rope_base", float("nan"), r"rope_base must be > 0.0"),
    ("init_std", float("inf"), r"init_std must be >= 0.0"),
    ("norm_eps", float("nan"), r"norm_eps must be > 0.0 \(a finite number\), got nan"),
    ("norm_eps", 0.0, r"norm_eps must be > 0.0"),
    ("embedding_ln_eps", float("inf"), r"embedding_ln_eps must be > 0.0"),
    ("dropout", float("nan"), r"dropout must be in \[0, 1\), got nan"),
    ("num_heads", 0, r"num_heads must be >= 1 \(an integer\), got 0"),
    ("hidden_size", 0, r"hidden_size must be >= 1 \(an integer\), got 0"),
    ("ffn_size", 0, r"ffn_size must be >= 1 \(an integer\), got 0"),
    ("num_blocks", 2.5, r"num_blocks must be >= 1 \(an integer\), got 2.5"),
    ("mini_batch_size", "8", r"mini_batch_size must be >= 1 \(an integer\), got '8'"),
    ("conv_kernel", 0, r"conv_kernel must be >= 1"),
    ("rope_positions", "absolute", r"rope_positions must be one of"),
])
def test_bad_options_raise_one_clear_value_error(option, value, message):
    with pytest.raises(ValueError, match=message):
        TTT4RecConfig(num_items=50, **{option: value})
    with pytest.raises(ValueError, match=message):
        build_model("ttt4rec", 50, 20, **{option: value})


def test_layer_defaults_come_from_the_layer_config():
    model = build_model("ttt4rec", 50, 20)
    layer = model.blocks[0].ttt
    assert layer.config == TTTConfig(hidden_size=64, num_heads=4)
    config = TTT4RecConfig(num_items=50)
    assert {name: getattr(config, name) for name in ("hidden_size", "num_heads", "inner", "mini_batch_size", "base_lr",
                                                     "rope_base", "rope_positions", "conv_kernel", "init_std")} == {
        name: getattr(layer.config, name) for name in ("hidden_size", "num_heads", "inner", "mini_batch_size",
                                                       "base_lr", "rope_base", "rope_positions", "conv_kernel",
                                                       "init_std")}


def test_bad_inputs_raise_specific_errors():
    model = make_model().eval()
    item_seq, lengths = random_batch()
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 20\]"):
        model.encode(item_seq, torch.tensor([20, 13, 8, 0]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 20\]"):
        model.encode(item_seq, torch.tensor([21, 13, 8, 1]))
    with pytest.raises(ValueError, match="lengths must be"):
        model.encode(item_seq, lengths[:3])
    with pytest.raises(ValueError, match="item_seq must be"):
        model.encode(item_seq[0], lengths[:1])
    with pytest.raises(ValueError, match="integer item ids"):
        model.encode(item_seq.float(), lengths)
    for bad_id in (NUM_ITEMS + 1, -1):
        bad = item_seq.clone()
        bad[0, 0] = bad_id
        with pytest.raises(ValueError, match=r"item ids must lie in \[0, 30\]"):
            model.encode(bad, lengths)
    with pytest.raises(TypeError, match="expects a bool"):
        model.set_adapt_at_test("off")


# ------------------------------------------------------------------------------------------- parameter counts
C, HEADS, HEAD_DIM, B_MINI, FFN = 64, 4, 16, 8, 256
QKVO = 4 * C * C                                       # θ_Q, θ_K, θ_V, θ_O: 16,384
LR_GATE = HEADS * C + HEADS                            # per-head linear η gate: 260
TOKEN_IDX = B_MINI                                     # learnable offsets of 1/i: 8
INNER_LN = 2 * HEADS * HEAD_DIM                        # per-head γ, β of the inner LayerNorm: 128
POST_NORM = 2 * C                                      # LayerNorm before θ_O: 128
INNER_MLP = HEADS * (HEAD_DIM * 4 * HEAD_DIM + 4 * HEAD_DIM + 4 * HEAD_DIM * HEAD_DIM + HEAD_DIM)  # 8,512
INNER_LINEAR = HEADS * (HEAD_DIM * HEAD_DIM + HEAD_DIM)  # 1,088
SWIGLU = 3 * C * FFN                                   # 49,152
TWO_RMSNORMS = 2 * C                                   # 128
DEPTHWISE_CONV = C * 4 + C                             # kernel 4 weights + bias per channel: 320
MAMBA_DELTA = (-C * C                                  # θ_K merged into θ_Q
               + 2 * DEPTHWISE_CONV                    # conv_q, conv_k
               + C * C                                 # gate θ_G (bias-free)
               + C + DEPTHWISE_CONV)                   # pre-conv: its RMSNorm + conv
EXPECTED_BLOCK = {
    ("transformer", "mlp"): QKVO + LR_GATE + TOKEN_IDX + INNER_LN + POST_NORM + INNER_MLP + SWIGLU + TWO_RMSNORMS,
    ("transformer", "linear"): QKVO + LR_GATE + TOKEN_IDX + INNER_LN + POST_NORM + INNER_LINEAR + SWIGLU
    + TWO_RMSNORMS,
}
EXPECTED_BLOCK[("mamba", "mlp")] = EXPECTED_BLOCK[("transformer", "mlp")] + MAMBA_DELTA
EXPECTED_BLOCK[("mamba", "linear")] = EXPECTED_BLOCK[("transformer", "linear")] + MAMBA_DELTA


@pytest.mark.parametrize("backbone,inner", VARIANTS)
def test_hand_derived_counts_match_the_spec_numbers(backbone, inner):
    # the block the model builds has the spec's number of parameters, and so does the hand derivation above
    spec = {("transformer", "mlp"): 74_700, ("transformer", "linear"): 67_276,
            ("mamba", "mlp"): 75_724, ("mamba", "linear"): 68_300}[(backbone, inner)]
    block = make_model(backbone, inner).blocks[0]
    assert sum(p.numel() for p in block.parameters()) == spec == EXPECTED_BLOCK[(backbone, inner)]


@pytest.mark.parametrize("backbone,inner", VARIANTS)
def test_parameter_counts(backbone, inner):
    model = make_model(backbone, inner)
    block = sum(p.numel() for p in model.blocks[0].parameters())
    assert block == EXPECTED_BLOCK[(backbone, inner)]
    item_table, embedding_ln, final_rmsnorm = (NUM_ITEMS + 1) * C, 2 * C, C
    total = item_table + embedding_ln + block + final_rmsnorm
    rows = dict(parameter_summary(model, depth=2))
    assert rows == {"item_embedding": item_table, "embedding_norm": embedding_ln, "blocks.0": block,
                    "final_norm": final_rmsnorm, "total": total}
    deep = parameter_summary(model, depth=3)
    assert sum(n for name, n in deep if name.startswith("blocks.0.")) == block
    assert dict(deep)["blocks.0.ffn"] == SWIGLU


# ----------------------------------------------------------------------------------- causality and padding
@pytest.mark.parametrize("backbone,inner", VARIANTS)
def test_causal_exactly_in_eval(backbone, inner):
    """Changing items after position t never changes the state at t (bit for bit)."""
    model = make_model(backbone, inner).eval()
    item_seq, _ = random_batch(batch=2, width=21, lengths=(21, 21))
    with torch.no_grad():
        reference = model.sequence_output(item_seq)
        for t in (0, 5, 7, 8, 17):  # inside, at the end of, at the start of a mini-batch; in the remainder chunk
            changed = item_seq.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] % NUM_ITEMS) + 1  # every later item replaced
            out = model.sequence_output(changed)
            assert torch.equal(out[:, : t + 1], reference[:, : t + 1]), t
            assert not torch.allclose(out[:, t + 1:], reference[:, t + 1:])


@pytest.mark.parametrize("backbone,inner", [("transformer", "mlp"), ("mamba", "linear")])
def test_appending_padding_never_changes_scores(backbone, inner):
    model = make_model(backbone, inner).double().eval()
    item_seq, lengths = random_batch(batch=3, width=13, lengths=(13, 9, 2))
    with torch.no_grad():
        reference = model.score_all(item_seq, lengths)
        for width in (14, 16, 24, 31):
            padded = F.pad(item_seq, (0, width - item_seq.shape[1]))  # zeros = padding on the right
            torch.testing.assert_close(model.score_all(padded, lengths), reference, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------- dropout and adaptation
def test_dropout_only_in_training():
    model = make_model()
    item_seq, lengths = random_batch()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(item_seq, lengths), model.encode(item_seq, lengths))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model.encode(item_seq, lengths), model.encode(item_seq, lengths))


@pytest.mark.parametrize("backbone,inner", [("transformer", "mlp"), ("mamba", "linear")])
def test_adapt_at_test_off_changes_evaluation_only(backbone, inner):
    model = make_model(backbone, inner)
    item_seq, lengths = random_batch()

    def train_pass():
        model.train()
        torch.manual_seed(7)  # same dropout mask both times
        return model.encode(item_seq, lengths)

    def eval_pass():
        model.eval()
        with torch.no_grad():
            return model.encode(item_seq, lengths)

    train_on, eval_on = train_pass(), eval_pass()
    model.set_adapt_at_test(False)
    train_off, eval_off = train_pass(), eval_pass()
    assert torch.equal(train_on, train_off)  # training never sees the flag
    assert not torch.allclose(eval_on, eval_off, atol=1e-4)
    assert all(layer.adapt for layer in model.ttt_layers())  # the layers' own switch is restored afterwards
    model.set_adapt_at_test(True)
    assert torch.equal(eval_pass(), eval_on)


def test_without_adaptation_the_transformer_ttt_layer_sees_one_token():
    """η = 0 ⇒ W stays W0 ⇒ z_t = f(θ_Q x_t; W0): with one block and no pre-conv, the gathered state depends only
    on the last item (and its position mod the mini-batch, through RoPE) — the history is invisible. With
    adaptation on, the history matters. This is what "test-time training" buys."""
    model = make_model("transformer", "mlp").double().eval()
    gen = torch.Generator().manual_seed(3)
    histories = torch.randint(1, NUM_ITEMS + 1, (3, 12), generator=gen)
    histories[:, -1] = 5  # same last item, at the same position, different histories
    lengths = torch.full((3,), 12)
    with torch.no_grad():
        adapted = model.encode(histories, lengths)
        model.set_adapt_at_test(False)
        frozen = model.encode(histories, lengths)
    torch.testing.assert_close(frozen[1:], frozen[:1].expand(2, -1), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(adapted[1:], adapted[:1].expand(2, -1), atol=1e-6)


def test_sequence_output_traces_follow_the_adapt_switch():
    """The W_t explorer reads traces through the model: one per block; η = 0 and W_t ≡ W0 when adaptation is off."""
    model = make_model(num_blocks=2).eval()
    item_seq, _ = random_batch(batch=2, width=10, lengths=(10, 10))
    with torch.no_grad():
        h, traces = model.sequence_output(item_seq, return_traces=True)
        torch.testing.assert_close(h, model.sequence_output(item_seq), rtol=0, atol=0)
        assert len(traces) == 2 and traces[0].eta.shape == (2, 4, 10) and (traces[0].eta > 0).all()
        model.set_adapt_at_test(False)
        _, frozen = model.sequence_output(item_seq, return_traces=True)
    assert torch.count_nonzero(frozen[0].eta) == 0
    w0 = model.blocks[0].ttt.W1
    torch.testing.assert_close(frozen[0].W1, w0[None, :, None].expand_as(frozen[0].W1), rtol=0, atol=0)
    assert not torch.allclose(traces[0].W1, frozen[0].W1)


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("backbone,inner", VARIANTS)
def test_one_training_step_reaches_every_parameter(backbone, inner):
    model = make_model(backbone, inner).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    item_seq, lengths = random_batch()
    targets = torch.tensor([3, 7, 11, 29])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = F.cross_entropy(model.score_all(item_seq, lengths), targets)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    assert torch.count_nonzero(model.item_embedding.weight.grad[0]) == 0  # padding row: padding_idx=0
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert set(changed) == set(before)


# --------------------------------------------------------------------------------------- options and modes
def test_paper_text_norm_and_ffn_options():
    model = make_model(norm="layer", ffn="gelu").eval()
    assert not any(isinstance(m, RMSNorm) for m in model.modules())
    assert isinstance(model.blocks[0].ffn, GeluFFN) and isinstance(model.final_norm, nn.LayerNorm)
    assert isinstance(make_model().blocks[0].ffn, SwiGLU)
    mamba = make_model("mamba", norm="layer", ffn="gelu").eval()
    assert isinstance(mamba.blocks[0].pre_conv.norm, nn.LayerNorm)
    item_seq, lengths = random_batch()
    for m in (model, mamba):
        with torch.no_grad():
            scores = m.score_all(item_seq, lengths)
        assert scores.shape == (4, NUM_ITEMS + 1) and torch.isfinite(scores[:, 1:]).all()
    # GELU FFN: 64 -> 256 -> 64 with biases
    assert sum(p.numel() for p in model.blocks[0].ffn.parameters()) == 2 * C * FFN + FFN + C


@pytest.mark.parametrize("backbone,inner", [("transformer", "mlp"), ("mamba", "linear")])
def test_ttt_modes_agree_through_the_whole_model(backbone, inner):
    """Dual form ≡ explicit mini-batch loop (b = 8, L = 19: two full chunks and a remainder of 3), and with
    b = 1 both ≡ the per-token online-GD loop — checked on the final scores, same weights (same seed)."""
    item_seq, lengths = random_batch(batch=2, width=19, lengths=(19, 11))

    def scores(mode, mini_batch_size):
        model = make_model(backbone, inner, ttt_mode=mode, mini_batch_size=mini_batch_size).double().eval()
        return model.score_all(item_seq, lengths)[:, 1:].detach()

    torch.testing.assert_close(scores("minibatch_loop", 8), scores("dual", 8), rtol=1e-9, atol=1e-10)
    item_seq, lengths = item_seq[:, :9], torch.tensor([9, 6])  # b = 1: nine sequential steps are plenty
    online = scores("token_loop", 1)
    torch.testing.assert_close(scores("dual", 1), online, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(scores("minibatch_loop", 1), online, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="needs mini_batch_size=1"):
        make_model(ttt_mode="token_loop")


def test_initialisation_follows_the_official_code():
    model = make_model()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            assert abs(module.weight.std().item() - 0.02) < 0.003, name
            if getattr(module, "bias", None) is not None:
                assert torch.count_nonzero(module.bias) == 0, name
        if isinstance(module, (nn.LayerNorm, RMSNorm)):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
    assert model.embedding_norm.eps == 1e-12
    assert model.embedding_dropout.p == 0.2


# ------------------------------------------------------------------------------------------- small pieces
def test_rmsnorm_hand_value_and_fp32_compute():
    norm = RMSNorm(4, eps=1e-6)
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    expected = x / math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6)
    torch.testing.assert_close(norm(x), expected)
    # mean(x²) = 1e-8 would underflow to 0 in fp16 (giving 1e-4 / sqrt(1e-6) = 0.1); fp32 inside keeps it
    half_norm = RMSNorm(4, eps=1e-6).half()
    tiny = torch.full((1, 4), 1e-4, dtype=torch.float16)
    out = half_norm(tiny)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), torch.full((1, 4), 1e-4 / math.sqrt(1e-8 + 1e-6)), rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("group", 4)
    with pytest.raises(ValueError, match="ffn must be one of"):
        make_ffn("mish", 4, 8)


def test_causal_depthwise_conv_hand_formula():
    conv = CausalDepthwiseConv1d(3, kernel_size=4)
    x = torch.randn(2, 9, 3)
    w, b = conv.conv.weight[:, 0, :], conv.conv.bias  # (3, 4), (3,)
    padded = F.pad(x, (0, 0, 3, 0))  # three zeros before the start
    expected = torch.stack([b + (padded[:, t:t + 4, :] * w.T).sum(dim=1) for t in range(9)], dim=1)
    torch.testing.assert_close(conv(x), expected)


def test_mamba_block_applies_the_pre_conv_residual_first():
    torch.manual_seed(0)
    block = ResidualBlock(backbone="mamba", inner="linear").double()
    h = torch.randn(2, 11, 64, dtype=torch.float64)
    assert isinstance(block.pre_conv, PreConv)
    after_conv = h + block.pre_conv.conv(block.pre_conv.norm(h))
    after_ttt = after_conv + block.ttt(block.seq_norm(after_conv))
    expected = after_ttt + block.ffn(block.ffn_norm(after_ttt))
    torch.testing.assert_close(block(h), expected, rtol=0, atol=0)


# ------------------------------------------------------------------------- the control: adapt=False everywhere
@pytest.mark.parametrize("backbone,inner", VARIANTS)
def test_fixed_w0_trace_is_w0_at_every_position_in_training_and_eval(backbone, inner):
    """``adapt=False``: η = 0 and W_t = W0 at every position, in training mode as well as at evaluation, and the
    same parameters as the adapting model (the control differs in behaviour only)."""
    model = make_model(backbone, inner, adapt=False)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in make_model(backbone, inner).named_parameters()]
    item_seq, _ = random_batch(batch=2, width=12, lengths=(12, 12))
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            _, traces = model.sequence_output(item_seq, return_traces=True)
        layer = model.blocks[0].ttt
        assert torch.count_nonzero(traces[0].eta) == 0
        for name in ("W1", "b1") + (("W2", "b2") if inner == "mlp" else ()):
            w0, trace = getattr(layer, name), getattr(traces[0], name)
            torch.testing.assert_close(trace, w0[None, :, None].expand_as(trace), rtol=0, atol=0)
    model.set_adapt_at_test(True)  # asking for adaptation at test does not switch the control's layers on
    model.eval()
    with torch.no_grad():
        _, traces = model.sequence_output(item_seq, return_traces=True)
    assert torch.count_nonzero(traces[0].eta) == 0


def test_fixed_w0_carries_nothing_from_earlier_positions():
    """With adapt=False the TTT layer is a per-token map: changing every earlier token leaves the layer's output
    at a position unchanged (with adaptation on, it changes) — the inner state carries nothing forward."""
    for adapt, carries in ((False, False), (True, True)):
        model = make_model("transformer", "mlp", adapt=adapt).double().train()  # training mode: no eval switch
        layer = model.blocks[0].ttt
        gen = torch.Generator().manual_seed(5)
        x = torch.randn(2, 16, layer.hidden_size, generator=gen, dtype=torch.float64)
        x[1, :-1] = torch.randn(15, layer.hidden_size, generator=gen, dtype=torch.float64)  # other history
        x[1, -1] = x[0, -1]
        with torch.no_grad():
            out = layer(x)
        assert torch.allclose(out[0, -1], out[1, -1], atol=1e-12) != carries


def test_fixed_w0_still_trains_w0_and_the_projections():
    """The control learns: W0 (and the inner LayerNorm), θ_Q and θ_O get gradients. θ_K, θ_V and the η gate only
    act through inner steps, so with η = 0 their gradient is exactly zero — the control has the same parameters,
    of which these three are inert."""
    model = make_model("transformer", "mlp", adapt=False).train()
    item_seq, lengths = random_batch()
    F.cross_entropy(model.score_all(item_seq, lengths), torch.tensor([3, 7, 11, 29])).backward()
    inert = {"k_proj.weight", "v_proj.weight", "lr_gate_weight", "lr_gate_bias", "token_offset"}
    for name, p in model.blocks[0].ttt.named_parameters():
        if name in inert:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_fixed_w0_rejects_a_non_bool():
    with pytest.raises(ValueError, match="adapt must be True or False"):
        make_model(adapt="off")
