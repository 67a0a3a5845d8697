"""The TTT layer: hand-written inner gradients vs autograd, the three inner-loop modes against each other,
outer-loop gradients, causality, padding, the trace, the adapt switch, the Mamba variant, and the official layout."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ttt4rec_edu.official_weights import load_official_state_dict, official_state_dict
from ttt4rec_edu.rope import apply_rope
from ttt4rec_edu.ttt import (TTTConfig, TTTLayer, TTTTrace, gelu_bwd, gelu_bwd2, gelu_with_slope, inner_layer_norm,
                             inner_model, ln_fused_l2_bwd)

F64 = torch.float64
FIXTURE = Path(__file__).parent / "fixtures" / "official_ttt_layer.pt"
TIGHT = dict(rtol=1e-9, atol=1e-10)      # float64
LOOSE = dict(rtol=1e-4, atol=1e-5)       # float32


def make_layer(inner="mlp", b=3, C=8, nh=2, dtype=F64, seed=0, **kw):
    """A small layer with every parameter moved away from its init (random δ ≠ 0, random η, random LN)."""
    torch.manual_seed(seed)
    layer = TTTLayer(C, nh, inner=inner, mini_batch_size=b, **kw).to(dtype)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name == "token_offset":
                p.copy_(0.4 * torch.randn_like(p))
            elif name.startswith("lr_gate"):
                p.normal_(0.0, 0.7)
            elif name in ("W1", "W2"):
                p.normal_(0.0, 0.5)
            elif name in ("inner_ln_weight", "post_norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.startswith("conv"):
                p.normal_(0.0, 0.4)
            elif "bias" in name or name in ("b1", "b2"):
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.4)
    return layer


def rand_x(B=2, L=7, C=8, dtype=F64, seed=1):
    torch.manual_seed(seed)
    return torch.randn(B, L, C, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# Hand-written backward pieces
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,atol", [(F64, 1e-10), (torch.float32, 1e-5)])
def test_ln_fused_l2_bwd_equals_autograd(dtype, atol):
    torch.manual_seed(0)
    z = torch.randn(3, 2, 5, 6, dtype=dtype, requires_grad=True)
    target = torch.randn(3, 2, 5, 6, dtype=dtype)
    gamma = 1 + 0.3 * torch.randn(2, 1, 6, dtype=dtype)
    beta = 0.3 * torch.randn(2, 1, 6, dtype=dtype)
    loss = 0.5 * (inner_layer_norm(z, gamma, beta) - target).pow(2).sum()
    grad, = torch.autograd.grad(loss, z)
    torch.testing.assert_close(ln_fused_l2_bwd(z.detach(), target, gamma, beta), grad, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype,atol", [(F64, 1e-12), (torch.float32, 1e-6)])
def test_gelu_bwd_equals_autograd(dtype, atol):
    # reference: autograd in float64 (torch's own float32 GELU backward is off by ~1e-6 where GELU saturates)
    x = torch.linspace(-6, 6, 1001, dtype=F64, requires_grad=True)
    grad, = torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)
    torch.testing.assert_close(gelu_bwd(x.detach().to(dtype)).double(), grad, rtol=0, atol=atol)


def test_gelu_second_derivative_and_fused_node_equal_autograd():
    x = torch.linspace(-6, 6, 401, dtype=F64, requires_grad=True)
    value = F.gelu(x, approximate="tanh")
    slope, = torch.autograd.grad(value.sum(), x, create_graph=True)
    curvature, = torch.autograd.grad(slope.sum(), x)
    torch.testing.assert_close(gelu_bwd2(x.detach()), curvature, rtol=0, atol=1e-12)
    # the fused (gelu, gelu') node: values, and its backward for both outputs
    fused_value, fused_slope = gelu_with_slope(x)
    torch.testing.assert_close(fused_value, value, rtol=0, atol=1e-14)
    torch.testing.assert_close(fused_slope, slope, rtol=0, atol=1e-12)
    w1, w2 = torch.randn(401, dtype=F64), torch.randn(401, dtype=F64)
    got, = torch.autograd.grad((fused_value * w1 + fused_slope * w2).sum(), x)
    torch.testing.assert_close(got, slope.detach() * w1 + curvature * w2, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# The three modes
# ---------------------------------------------------------------------------------------------------------

CASES = [(7, 3), (5, 8), (16, 4), (9, 1), (12, 5)]   # (L, b): remainder chunks, L < b, exact multiples, b = 1


@pytest.mark.parametrize("inner", ["linear", "mlp"])
@pytest.mark.parametrize("L,b", CASES)
def test_dual_equals_minibatch_loop_float64(inner, L, b):
    layer = make_layer(inner, b=b)
    x = rand_x(L=L)
    dual, trace_dual = layer(x, mode="dual", return_trace=True)
    loop, trace_loop = layer(x, mode="minibatch_loop", return_trace=True)
    torch.testing.assert_close(dual, loop, **TIGHT)
    for field in ("W1", "b1", "W2", "b2", "loss_before", "loss_after", "eta", "tau"):
        torch.testing.assert_close(getattr(trace_dual, field), getattr(trace_loop, field), **TIGHT)
    layer.adapt = False   # the comparison is not vacuous: adaptation changes the output
    assert (layer(x) - dual).abs().max() > 1e-3


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_dual_equals_minibatch_loop_float32(inner):
    layer = make_layer(inner, b=4, dtype=torch.float32)
    x = rand_x(L=11, dtype=torch.float32)
    torch.testing.assert_close(layer(x, mode="dual"), layer(x, mode="minibatch_loop"), **LOOSE)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_dual_with_b1_equals_per_token_online_gd(inner):
    layer = make_layer(inner, b=1)
    x = rand_x(L=6)
    dual, trace_dual = layer(x, mode="dual", return_trace=True)
    token, trace_token = layer(x, mode="token_loop", return_trace=True)
    torch.testing.assert_close(dual, token, **TIGHT)
    for field in ("W1", "b1", "W2", "b2", "loss_before", "loss_after"):
        torch.testing.assert_close(getattr(trace_dual, field), getattr(trace_token, field), **TIGHT)


@pytest.mark.parametrize("mamba", [False, True])
@pytest.mark.parametrize("inner", ["linear", "mlp"])
@pytest.mark.parametrize("L,b", CASES + [(50, 8)])
def test_fast_dual_equals_dual_float64(inner, L, b, mamba):
    """forward(mode="dual") runs TTTLayer.dual_fast; it computes TTTLayer.dual's numbers (the chapter's reading),
    outputs and every outer gradient, to 1e-12 in float64."""
    layer = make_layer(inner, b=b, use_gate=mamba, share_qk=mamba)
    x = rand_x(L=L).requires_grad_()
    q, k, v = layer.views(x)
    lr, tau = layer.learning_rate(x), layer.token_scale()
    fast, _ = layer.dual_fast(q, k, v, lr, tau)
    ref, _ = layer.dual(q, k, v, lr, tau)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(ref)
    inputs = [x] + list(layer.parameters())
    grads_fast = torch.autograd.grad((fast * weight).sum(), inputs, retain_graph=True, allow_unused=True)
    grads_ref = torch.autograd.grad((ref * weight).sum(), inputs, allow_unused=True)
    for (name, _), g_fast, g_ref in zip([("x", x)] + list(layer.named_parameters()), grads_fast, grads_ref):
        assert (g_fast is None) == (g_ref is None), name
        if g_ref is not None:
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    # forward's "dual" is the fast one, and a trace (recorded by the reference) leaves its output unchanged
    post = layer.post_norm(fast.transpose(1, 2).reshape(x.shape))
    post = F.gelu(layer.g_proj(x), approximate="tanh") * post if mamba else post
    assert torch.equal(layer(x), layer.o_proj(post))
    out, trace = layer(x, mode="dual", return_trace=True)
    assert torch.equal(out, layer(x)) and isinstance(trace, TTTTrace)


def test_token_loop_needs_mini_batch_size_1():
    layer = make_layer("linear", b=4)
    with pytest.raises(ValueError, match="mini_batch_size=1"):
        layer(rand_x(L=5), mode="token_loop")


def test_token_loop_under_no_grad_and_float32():
    layer = make_layer("mlp", b=1, dtype=torch.float32)
    x = rand_x(L=5, dtype=torch.float32)
    with torch.no_grad():
        token = layer(x, mode="token_loop")
    assert not token.requires_grad
    torch.testing.assert_close(token, layer(x, mode="dual").detach(), **LOOSE)


def test_bad_arguments():
    layer = make_layer("linear")
    with pytest.raises(ValueError, match="mode must be one of"):
        layer(rand_x(), mode="primal")
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, seq, 8\)"):
        layer(torch.randn(2, 5, 6, dtype=F64))
    with pytest.raises(ValueError, match="inner must be one of"):
        TTTLayer(8, 2, inner="rnn")
    with pytest.raises(ValueError, match="not divisible"):
        TTTLayer(10, 3)
    with pytest.raises(ValueError, match="rope_positions"):
        TTTLayer(8, 2, rope_positions="absolute")


@pytest.mark.parametrize("args,options,message", [
    ((64, 0), {}, r"num_heads must be >= 1 \(an integer\), got 0"),           # was a ZeroDivisionError
    ((0, 4), {}, r"hidden_size must be >= 1 \(an integer\), got 0"),         # was accepted
    ((-8, 4), {}, r"hidden_size must be >= 1"),
    ((64.0, 4), {}, r"hidden_size must be >= 1 \(an integer\), got 64.0"),
    ((66, 4), {}, r"hidden_size must be a multiple of num_heads: 66 is not divisible by 4"),
    ((8, 2), {"mini_batch_size": 0}, r"mini_batch_size must be >= 1 \(an integer\), got 0"),
    ((8, 2), {"mini_batch_size": True}, r"mini_batch_size must be >= 1 \(an integer\), got True"),
    ((8, 2), {"base_lr": float("nan")}, r"base_lr must be > 0.0 \(a finite number\), got nan"),
    ((8, 2), {"base_lr": float("inf")}, r"base_lr must be > 0.0 \(a finite number\), got inf"),
    ((8, 2), {"base_lr": 0.0}, r"base_lr must be > 0.0"),
    ((8, 2), {"base_lr": "1"}, r"base_lr must be > 0.0 \(a finite number\), got '1'"),
    ((8, 2), {"rope_base": float("nan")}, r"rope_base must be > 0.0 \(a finite number\), got nan"),
    ((8, 2), {"rope_base": -1000.0}, r"rope_base must be > 0.0"),
    ((8, 2), {"init_std": float("nan")}, r"init_std must be >= 0.0 \(a finite number\), got nan"),
    ((8, 2), {"init_std": -0.02}, r"init_std must be >= 0.0"),
    ((8, 2), {"conv_kernel": 0}, r"conv_kernel must be >= 1 \(an integer\), got 0"),
    ((8, 2), {"share_qk": "yes"}, r"share_qk must be True or False, got 'yes'"),
    ((8, 2), {"use_gate": 1}, r"use_gate must be True or False, got 1"),
])
def test_bad_options_raise_one_clear_value_error(args, options, message):
    with pytest.raises(ValueError, match=message):
        TTTLayer(*args, **options)
    hidden_size, num_heads = args
    with pytest.raises(ValueError, match=message):          # the config checks itself: the layer adds nothing
        TTTConfig(hidden_size=hidden_size, num_heads=num_heads, **options)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match=r"TTTLayer got unknown options \['mini_batch'\]; known options: \["):
        TTTLayer(8, 2, mini_batch=4)


def test_nan_base_lr_used_to_give_nan_outputs_silently():
    """The reason for the check above: η_t = base_lr · sigmoid(·) / f, so one NaN poisons every output."""
    layer = make_layer("linear", base_lr=1.0)
    layer.config.base_lr = float("nan")          # what TTTLayer(8, 2, base_lr=nan) used to build
    assert torch.isnan(layer(rand_x())).all()


def test_layer_reads_its_config_and_from_config_builds_the_same_layer():
    config = TTTConfig(hidden_size=16, num_heads=2, inner="linear", mini_batch_size=4, base_lr=0.5,
                       share_qk=True, use_gate=True, conv_kernel=3)
    torch.manual_seed(0)
    by_config = TTTLayer.from_config(config)
    torch.manual_seed(0)
    by_keywords = TTTLayer(16, 2, inner="linear", mini_batch_size=4, base_lr=0.5, share_qk=True, use_gate=True,
                           conv_kernel=3)
    assert by_config.config == config == by_keywords.config
    assert by_config.config is not config                  # a copy: changing config later leaves the layer alone
    assert (by_config.hidden_size, by_config.num_heads, by_config.head_dim, by_config.mini_batch_size,
            by_config.inner) == (16, 2, 8, 4, "linear")
    assert by_config.conv_q.kernel_size == (3,) and by_config.k_proj is None and by_config.g_proj is not None
    x = rand_x(C=16, dtype=torch.float32)
    torch.testing.assert_close(by_config(x), by_keywords(x), rtol=0, atol=0)
    assert TTTLayer(8, 2).config == TTTConfig(hidden_size=8, num_heads=2)      # defaults: TTTConfig's, once
    with pytest.raises(TypeError, match="from_config expects a TTTConfig, got dict"):
        TTTLayer.from_config({"hidden_size": 8, "num_heads": 2})


# ---------------------------------------------------------------------------------------------------------
# Outer-loop gradients
# ---------------------------------------------------------------------------------------------------------

def _outer_grads(layer, x, mode):
    x = x.clone().requires_grad_()
    out = layer(x, mode=mode)
    torch.manual_seed(5)
    loss = (out * torch.randn_like(out)).sum()
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad(loss, [x] + [p for _, p in layer.named_parameters()])
    return dict(zip(["x"] + names, grads))


@pytest.mark.parametrize("inner", ["linear", "mlp"])
@pytest.mark.parametrize("b,other", [(3, "minibatch_loop"), (1, "token_loop")])
def test_outer_gradients_agree_between_modes(inner, b, other):
    layer = make_layer(inner, b=b)
    x = rand_x(L=7)
    ref, got = _outer_grads(layer, x, other), _outer_grads(layer, x, "dual")
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-7, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}")
    # every kind of parameter gets a real gradient (θQ, θK, θV, W0, LN, η gate, δ)
    for name in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "W1", "b1", "inner_ln_weight",
                 "lr_gate_weight", "lr_gate_bias", "token_offset"):
        assert got[name].abs().max() > 1e-6, name


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_gradcheck_dual_form(inner):
    layer = make_layer(inner, b=3, C=8, nh=2)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]
    x = rand_x(B=1, L=7).requires_grad_()

    def fn(x, *flat):
        return functional_call(layer, dict(zip(names, flat)), (x,), {"mode": "dual"})

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


# ---------------------------------------------------------------------------------------------------------
# Causality and padding
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mamba", [False, True])
@pytest.mark.parametrize("mode,b", [("dual", 3), ("minibatch_loop", 3), ("token_loop", 1)])
def test_causality_exact(mode, b, mamba):
    layer = make_layer("mlp", b=b, use_gate=mamba, share_qk=mamba)
    x = rand_x(L=10)
    ref = layer(x, mode=mode)
    for t in (0, 2, 3, 6, 8):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:]) * 3
        out = layer(x2, mode=mode)
        assert torch.equal(out[:, :t + 1], ref[:, :t + 1]), f"output <= {t} changed"
        assert not torch.equal(out[:, t + 1:], ref[:, t + 1:])


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_right_padding_keeps_last_real_output(inner):
    layer = make_layer(inner, b=4)
    torch.manual_seed(3)
    real = torch.randn(2, 7, 8, dtype=F64)
    ref = layer(real)[:, -1]
    for pad in (1, 5, 9):
        padded = torch.cat([real, torch.randn(2, pad, 8, dtype=F64)], dim=1)
        out = layer(padded)
        # same length: bit-exact; a different length regroups the chunks' batched matmuls, so only ~1 ulp
        torch.testing.assert_close(out[:, 6], ref, rtol=0, atol=1e-13)
        padded2 = padded.clone()
        padded2[:, 7:] = torch.randn_like(padded2[:, 7:])
        assert torch.equal(layer(padded2)[:, 6], out[:, 6])


# ---------------------------------------------------------------------------------------------------------
# Trace and the adapt switch
# ---------------------------------------------------------------------------------------------------------

def _output_by_hand(layer, x, params_at):
    """o_t = post-process(q_t + LN(f_res(q_t; W_t))) using weights supplied per position."""
    q, _, _ = layer.views(x)
    gamma, beta = layer.inner_ln_weight[:, None], layer.inner_ln_bias[:, None]
    z = torch.cat([inner_model(q[:, :, t:t + 1], params_at(t), gamma, beta) for t in range(x.shape[1])], dim=2)
    out = layer.post_norm(z.transpose(1, 2).reshape(x.shape))
    if layer.g_proj is not None:
        out = F.gelu(layer.g_proj(x), approximate="tanh") * out
    return layer.o_proj(out)


@pytest.mark.parametrize("inner,mamba", [("linear", False), ("mlp", False), ("mlp", True)])
@pytest.mark.parametrize("mode,b", [("dual", 3), ("minibatch_loop", 3), ("token_loop", 1)])
def test_trace_reproduces_output_and_does_not_change_it(inner, mamba, mode, b):
    layer = make_layer(inner, b=b, use_gate=mamba, share_qk=mamba)
    x = rand_x(L=8)
    plain = layer(x, mode=mode)
    out, trace = layer(x, mode=mode, return_trace=True)
    assert isinstance(trace, TTTTrace)
    assert torch.equal(out, plain)
    B, L, nh, f = 2, 8, 2, 4
    d = 4 * f if inner == "mlp" else f
    assert trace.W1.shape == (B, nh, L, f, d) and trace.b1.shape == (B, nh, L, d)
    assert (trace.W2 is None) == (inner == "linear")
    if inner == "mlp":
        assert trace.W2.shape == (B, nh, L, d, f) and trace.b2.shape == (B, nh, L, f)
    assert trace.loss_before.shape == trace.loss_after.shape == trace.eta.shape == (B, nh, L)
    assert trace.tau.shape == (L,)
    torch.testing.assert_close(_output_by_hand(layer, x, trace.params_at), out, **TIGHT)
    # loss_before at t = 0 is the loss of token 0 under W0; eta is the documented gate
    _, k, v = layer.views(x)
    w0 = layer.initial_params(B)
    gamma, beta = layer.inner_ln_weight[:, None], layer.inner_ln_bias[:, None]
    l0 = 0.5 * (inner_model(k[:, :, :1], w0, gamma, beta) - v[:, :, :1]).pow(2).sum(-1)
    torch.testing.assert_close(trace.loss_before[:, :, :1], l0, **TIGHT)
    eta = torch.sigmoid(x @ layer.lr_gate_weight.t() + layer.lr_gate_bias).transpose(1, 2) / f
    torch.testing.assert_close(trace.eta, eta, **TIGHT)


def test_trace_tau_and_state_carry():
    layer = make_layer("linear", b=3)
    _, trace = layer(rand_x(L=7), return_trace=True)
    tau = torch.clamp_min(1.0 / torch.arange(1, 4, dtype=F64) + layer.token_offset.detach(), 0)
    torch.testing.assert_close(trace.tau, tau[[0, 1, 2, 0, 1, 2, 0]])
    # the state carried into chunk 2 is W of the chunk's last token: loss_before of token 3 uses W_2
    x = rand_x(L=7)
    _, trace = layer(x, return_trace=True)
    _, k, v = layer.views(x)
    gamma, beta = layer.inner_ln_weight[:, None], layer.inner_ln_bias[:, None]
    l3 = 0.5 * (inner_model(k[:, :, 3:4], trace.params_at(2), gamma, beta) - v[:, :, 3:4]).pow(2).sum(-1)
    torch.testing.assert_close(trace.loss_before[:, :, 3:4], l3, **TIGHT)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
@pytest.mark.parametrize("mode,b", [("dual", 3), ("minibatch_loop", 3), ("token_loop", 1)])
def test_adapt_off_reads_with_w0(inner, mode, b):
    layer = make_layer(inner, b=b)
    layer.adapt = False
    x = rand_x(L=7)
    out, trace = layer(x, mode=mode, return_trace=True)
    w0 = layer.initial_params(x.shape[0])
    torch.testing.assert_close(_output_by_hand(layer, x, lambda t: w0), out, **TIGHT)
    assert torch.equal(trace.W1, layer.W1.detach()[None, :, None].expand_as(trace.W1))
    assert torch.all(trace.eta == 0)


# ---------------------------------------------------------------------------------------------------------
# Mamba-backbone variant, RoPE positions, init
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_mamba_variant_modes_agree(inner):
    layer = make_layer(inner, b=3, use_gate=True, share_qk=True)
    assert layer.k_proj is None and layer.g_proj is not None
    x = rand_x(L=8)
    torch.testing.assert_close(layer(x, mode="dual"), layer(x, mode="minibatch_loop"), **TIGHT)


def test_share_qk_views_are_causal_depthwise_convolutions():
    layer = make_layer("linear", b=4, use_gate=True, share_qk=True)
    x = rand_x(L=6)
    q, k, _ = layer.views(x)
    p = x @ layer.q_proj.weight.t()                                         # (B, L, C)
    for conv, got in ((layer.conv_q, q), (layer.conv_k, k)):
        w, bias = conv.weight[:, 0], conv.bias                              # (C, 4), (C,)
        padded = torch.cat([torch.zeros(2, 3, 8, dtype=F64), p], dim=1)
        by_hand = torch.stack([(padded[:, t:t + 4] * w.t()).sum(1) + bias for t in range(6)], dim=1)
        heads = by_hand.reshape(2, 6, 2, 4).transpose(1, 2)
        torch.testing.assert_close(got, apply_rope(heads, torch.arange(6) % 4, 1000.0), **TIGHT)


def test_rope_position_modes_in_layer():
    x = rand_x(L=7)
    seq = make_layer("linear", b=3, rope_positions="sequence")
    q_seq, _, _ = seq.views(x)
    raw = (x @ seq.q_proj.weight.t()).reshape(2, 7, 2, 4).transpose(1, 2)
    torch.testing.assert_close(q_seq, apply_rope(raw, torch.arange(7), 1000.0), **TIGHT)
    mb = make_layer("linear", b=3)
    q_mb, _, _ = mb.views(x)
    torch.testing.assert_close(q_mb, apply_rope(raw, torch.arange(7) % 3, 1000.0), **TIGHT)


def test_default_init():
    torch.manual_seed(0)
    layer = TTTLayer(64, 4, inner="mlp", mini_batch_size=8)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert abs(getattr(layer, name).weight.std().item() - 0.02) < 0.002
    assert abs(layer.W1.std().item() - 0.02) < 0.002 and abs(layer.W2.std().item() - 0.02) < 0.002
    for zero in (layer.b1, layer.b2, layer.lr_gate_bias, layer.token_offset, layer.inner_ln_bias):
        assert torch.all(zero == 0)
    assert torch.all(layer.inner_ln_weight == 1) and torch.all(layer.post_norm.weight == 1)
    torch.testing.assert_close(layer.token_scale(), 1.0 / torch.arange(1, 9, dtype=torch.float32))
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == 16384 + 260 + 8 + 128 + 128 + 8512          # the spec's count for one TTT-MLP layer


# ---------------------------------------------------------------------------------------------------------
# The official layout
# ---------------------------------------------------------------------------------------------------------

OFFICIAL_SHAPES = {
    "q_proj.weight": (64, 64), "k_proj.weight": (64, 64), "v_proj.weight": (64, 64), "o_proj.weight": (64, 64),
    "learnable_ttt_lr_weight": (4, 1, 64), "learnable_ttt_lr_bias": (4, 1), "learnable_token_idx": (8,),
    "ttt_norm_weight": (4, 16), "ttt_norm_bias": (4, 16), "post_norm.weight": (64,), "post_norm.bias": (64,),
}


@pytest.mark.parametrize("inner,mamba", [("linear", False), ("mlp", False), ("linear", True), ("mlp", True)])
def test_official_names_and_shapes(inner, mamba):
    layer = TTTLayer(64, 4, inner=inner, mini_batch_size=8, use_gate=mamba, share_qk=mamba)
    expected = dict(OFFICIAL_SHAPES)
    expected.update({"W1": (4, 16, 16), "b1": (4, 1, 16)} if inner == "linear" else
                    {"W1": (4, 16, 64), "b1": (4, 1, 64), "W2": (4, 64, 16), "b2": (4, 1, 16)})
    if mamba:
        del expected["k_proj.weight"]
        expected.update({"conv_q.weight": (64, 1, 4), "conv_k.weight": (64, 1, 4), "conv_q.bias": (64,),
                         "conv_k.bias": (64,), "g_proj.weight": (64, 64)})
    sd = official_state_dict(layer)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    # loading random values under the official names puts each one in the right place
    torch.manual_seed(0)
    random_sd = {k: torch.randn(v) for k, v in expected.items()}
    load_official_state_dict(layer, random_sd)
    for k, v in official_state_dict(layer).items():
        assert torch.equal(v, random_sd[k]), k
    assert torch.equal(layer.token_offset, random_sd["learnable_token_idx"])     # δ only, no 1/i inside
    assert torch.equal(layer.lr_gate_weight, random_sd["learnable_ttt_lr_weight"][:, 0])
    assert torch.equal(layer.b1, random_sd["b1"][:, 0])


def test_official_load_errors():
    layer = TTTLayer(64, 4, inner="mlp", mini_batch_size=8)
    sd = official_state_dict(layer)
    missing = {k: v for k, v in sd.items() if k != "W2"}
    with pytest.raises(KeyError, match=r"missing keys \['W2'\]"):
        load_official_state_dict(layer, missing)
    with pytest.raises(KeyError, match=r"unexpected keys \['conv_q.weight'\]"):
        load_official_state_dict(layer, {**sd, "conv_q.weight": torch.zeros(64, 1, 4)})
    before = official_state_dict(layer)
    with pytest.raises(ValueError, match=r"'W1': expected shape \(4, 16, 64\), got \(4, 16, 16\)"):
        load_official_state_dict(layer, {**sd, "q_proj.weight": torch.ones(64, 64), "W1": torch.zeros(4, 16, 16)})
    assert all(torch.equal(v, before[k]) for k, v in official_state_dict(layer).items())   # nothing copied
    prefixed = {f"model.layers.0.seq_modeling_block.{k}": v for k, v in sd.items()}
    load_official_state_dict(layer, prefixed, prefix="model.layers.0.seq_modeling_block.")


@pytest.mark.parametrize("mode", ["dual", "minibatch_loop"])
def test_reproduces_official_layer_fixture(mode):
    """tests/fixtures/official_ttt_layer.pt was produced by running the official ttt-lm-pytorch TTTLinear /
    TTTMLP (fp32, position_ids = arange(L)) on random weights; here only its numbers are used."""
    data = torch.load(FIXTURE, weights_only=True)
    assert len(data["cases"]) == 8
    for name, case in data["cases"].items():
        layer = TTTLayer(data["hidden_size"], data["num_heads"], inner=case["inner"],
                         mini_batch_size=data["mini_batch_size"], rope_base=data["rope_base"],
                         use_gate=case["mamba"], share_qk=case["mamba"])
        load_official_state_dict(layer, case["state_dict"])
        x = case["x"].clone().requires_grad_()
        out = layer(x, mode=mode)
        torch.testing.assert_close(out, case["out"], rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        grad_x, = torch.autograd.grad((out * case["weight"]).sum(), x)
        torch.testing.assert_close(grad_x, case["grad_x"], rtol=1e-5, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_compile_option_falls_back_to_eager_with_a_warning(monkeypatch):
    """TTT4REC_COMPILE=1 routes forward(mode="dual") through torch.compile; when compiling fails the layer warns
    once and returns the eager numbers (compiling itself takes minutes, so the benchmark, not a test, times it)."""
    from ttt4rec_edu import ttt

    def broken_compile(fn, **kw):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(ttt, "_COMPILED", {})
    layer, x = make_layer("mlp", b=3), rand_x(L=7)
    eager = layer(x)
    monkeypatch.setenv(ttt.COMPILE_ENV, "1")
    with pytest.warns(UserWarning, match="torch.compile failed"):
        out = layer(x)
    assert torch.equal(out, eager)
    assert torch.equal(layer(x), eager)          # from then on eager, silently
