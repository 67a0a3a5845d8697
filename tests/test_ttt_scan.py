"""The dual form's scan with a hand-written backward (``ttt4rec_edu.ttt_scan``, run by ``TTTLayer.dual_fast``):
its pieces against autograd, the whole scan with ``gradcheck``, and the layer against the readable ``TTTLayer.dual``
(outputs and the gradient of every input and parameter, float64, 1e-12)."""
import pytest
import torch
import torch.nn.functional as F

from ttt4rec_edu import ttt_scan
from ttt4rec_edu.ttt_scan import (_DualScan, _gelu_curvature, _gelu_parts, _ln_l2_grad, _ln_l2_grad_backward,
                                  dual_scan, pair_chunks)
from ttt4rec_edu.ttt import TTTLayer, _ln_l2_grad as ln_l2_grad_reference

F64 = torch.float64
EXACT = dict(rtol=1e-12, atol=1e-12)


def test_gelu_parts_and_curvature_equal_autograd():
    x = torch.linspace(-9, 9, 1001, dtype=F64).reshape(7, 11, 13)
    xg = x.clone().requires_grad_()
    value = F.gelu(xg, approximate="tanh")
    (slope,) = torch.autograd.grad(value.sum(), xg, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), xg)
    got_value, got_slope, s_pos, s_neg = _gelu_parts(x, *(torch.empty_like(x) for _ in range(3)))
    torch.testing.assert_close(got_value, value.detach(), **EXACT)
    torch.testing.assert_close(got_slope, slope.detach(), **EXACT)
    torch.testing.assert_close(s_pos + s_neg, torch.ones_like(x), **EXACT)
    got_curvature = _gelu_curvature(x, s_pos, s_neg, torch.empty_like(x), torch.empty_like(x))
    torch.testing.assert_close(got_curvature, curvature, **EXACT)


def test_ln_l2_grad_and_its_backward_equal_autograd():
    torch.manual_seed(0)
    z = torch.randn(5, 8, 16, dtype=F64, requires_grad=True)
    offset = torch.randn(5, 8, 16, dtype=F64, requires_grad=True)
    scale = (1 + 0.3 * torch.randn(5, 1, 16, dtype=F64)).requires_grad_()
    reference = ln_l2_grad_reference(z, scale, offset)
    g, saved = _ln_l2_grad(z.detach(), scale.detach(), offset.detach(), 1e-6)
    torch.testing.assert_close(g, reference.detach(), **EXACT)
    dg = torch.randn_like(g)
    dz_ref, doffset_ref, dscale_ref = torch.autograd.grad(reference, (z, offset, scale), dg)
    dz, d_ghat = _ln_l2_grad_backward(dg, g, saved, scale.detach())
    torch.testing.assert_close(dz, dz_ref, **EXACT)
    torch.testing.assert_close(d_ghat, doffset_ref, **EXACT)
    torch.testing.assert_close((d_ghat * saved[0]).sum(dim=1, keepdim=True), dscale_ref, **EXACT)


@pytest.mark.parametrize("L", [6, 7, 2])
def test_pair_chunks_layout_and_gradient(L):
    torch.manual_seed(0)
    k, q = (torch.randn(2, 3, L, 4, dtype=F64, requires_grad=True) for _ in range(2))
    kq = pair_chunks(k, q, 3)
    n = -(-L // 3)
    assert kq.shape == (n, 6, 6, 4)
    for c in range(n):
        for s in range(3):
            t = 3 * c + s
            expect_k = k[:, :, t].reshape(6, 4) if t < L else torch.zeros(6, 4, dtype=F64)
            expect_q = q[:, :, t].reshape(6, 4) if t < L else torch.zeros(6, 4, dtype=F64)
            assert torch.equal(kq[c, :, s], expect_k) and torch.equal(kq[c, :, 3 + s], expect_q)
    assert torch.autograd.gradcheck(lambda k, q: pair_chunks(k, q, 3), (k, q))


def scan_inputs(inner, n=3, BN=2, b=3, f=4, seed=0):
    """Random inputs of the scan, every one of them requiring a gradient (E need not be causal here: the
    function's gradient is checked as a function of all its inputs)."""
    gen = torch.Generator().manual_seed(seed)
    d = 4 * f if inner == "mlp" else f

    def r(*shape, scale=0.5):
        return (scale * torch.randn(*shape, generator=gen, dtype=F64)).requires_grad_()

    eta = r(n, BN, b, b, scale=0.3)
    inputs = [r(n, BN, 2 * b, f), r(n, BN, b, b, scale=0.3), eta, r(n, BN, b, 1, scale=0.3), r(n, BN, b, f),
              (1 + r(BN, 1, f, scale=0.3)).detach().requires_grad_(), r(BN, f, d), r(BN, 1, d)]
    inputs += [r(BN, d, f), r(BN, 1, f)] if inner == "mlp" else [None, None]
    return inputs


@pytest.mark.parametrize("block_rows", [512, 1])
@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_gradcheck_scan(inner, block_rows, monkeypatch):
    """The hand-written backward is the derivative of the forward, for every input (three chunks: the state's
    gradient is carried twice), with the rows in one block or one block per row."""
    monkeypatch.setattr(ttt_scan, "BLOCK_ROWS", block_rows)
    inputs = scan_inputs(inner)
    tensors = [t for t in inputs if t is not None]

    def fn(*args):
        it = iter(args)
        return _DualScan.apply(*[next(it) if t is not None else None for t in inputs], 1e-6)

    assert torch.autograd.gradcheck(fn, tuple(tensors), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_scan_without_gradient_and_in_blocks_gives_the_same_numbers(inner, monkeypatch):
    inputs = scan_inputs(inner, BN=5)
    with_grad = dual_scan(*inputs)
    with torch.no_grad():
        without = dual_scan(*inputs)
    assert with_grad.grad_fn is not None and without.grad_fn is None
    assert torch.equal(with_grad.detach(), without)
    monkeypatch.setattr(ttt_scan, "BLOCK_ROWS", 2)             # blocks of 2, 2 and 1 rows
    in_blocks = dual_scan(*inputs)
    torch.testing.assert_close(in_blocks, with_grad, **EXACT)
    tensors = [t for t in inputs if t is not None]
    weight = torch.randn_like(with_grad)
    for got, ref in zip(torch.autograd.grad((in_blocks * weight).sum(), tensors, allow_unused=True),
                        torch.autograd.grad((with_grad * weight).sum(), tensors, allow_unused=True)):
        assert (got is None) == (ref is None)            # TTT-Linear does not read E beyond A1
        if ref is not None:
            torch.testing.assert_close(got, ref, **EXACT)


def layer_case(inner, L, b, seed=0):
    torch.manual_seed(seed)
    layer = TTTLayer(8, 2, inner=inner, mini_batch_size=b).to(F64)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_((1.0 if "inner_ln_weight" in name else 0.0) + 0.4 * torch.randn_like(p))
    x = torch.randn(3, L, 8, dtype=F64, requires_grad=True)
    return layer, x


@pytest.mark.parametrize("inner", ["linear", "mlp"])
@pytest.mark.parametrize("L,b", [(7, 3), (9, 3), (2, 3), (17, 8), (5, 1)])
def test_hand_backward_equals_autograd_and_dual(inner, L, b):
    """dual_fast with the hand-written backward, dual_fast through autograd (what runs under autocast) and the
    readable dual: the same outputs and the same gradient for x and every parameter, float64, 1e-12."""
    layer, x = layer_case(inner, L, b)
    q, k, v = layer.views(x)
    lr, tau = layer.learning_rate(x), layer.token_scale()
    outs = {"hand": layer.dual_fast(q, k, v, lr, tau)[0],
            "autograd": layer.dual_fast(q, k, v, lr, tau, hand_backward=False)[0],
            "dual": layer.dual(q, k, v, lr, tau)[0]}
    weight = torch.randn_like(outs["dual"])
    inputs = [x] + list(layer.parameters())
    grads = {name: torch.autograd.grad((out * weight).sum(), inputs, retain_graph=True, allow_unused=True)
             for name, out in outs.items()}
    for name in ("hand", "autograd"):
        torch.testing.assert_close(outs[name], outs["dual"], **EXACT)
        for (pname, _), got, ref in zip([("x", x)] + list(layer.named_parameters()), grads[name], grads["dual"]):
            assert (got is None) == (ref is None), pname
            if ref is not None:
                torch.testing.assert_close(got, ref, **EXACT, msg=lambda m, p=f"{name} {pname}": f"{p}: {m}")


def graph_nodes(out):
    seen, stack = set(), [out.grad_fn]
    while stack:                                              # every node of the graph behind the output
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
    return {type(fn).__name__ for fn in seen}


def test_hand_backward_is_what_the_layer_runs_and_cpu_autocast_keeps_it_in_float32():
    layer, x = layer_case("mlp", 11, 4)
    layer = layer.float()
    x = x.detach().float().requires_grad_()
    q, k, v = layer.views(x)
    lr, tau = layer.learning_rate(x), layer.token_scale()
    out = layer.dual_fast(q, k, v, lr, tau)[0]
    assert "_DualScanBackward" in graph_nodes(out)
    torch.testing.assert_close(out, layer.dual(q, k, v, lr, tau)[0], rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):        # bfloat16 projections, the scan in float32
        q16, k16, v16 = layer.views(x)
        lr16 = layer.learning_rate(x)
        low = layer.dual_fast(q16, k16, v16, lr16, tau)[0]
    assert q16.dtype == torch.bfloat16 and low.dtype == torch.float32 and "_DualScanBackward" in graph_nodes(low)
    assert torch.equal(low, layer.dual_fast(q16.float(), k16.float(), v16.float(), lr16.float(), tau)[0])
    low.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):        # asked for: autograd's scan, in bfloat16
        slow = layer.dual_fast(q16, k16, v16, lr16, tau, hand_backward=False)[0]
    assert "_DualScanBackward" not in graph_nodes(slow)
    torch.testing.assert_close(slow.float(), low, rtol=0.05, atol=0.05)


def test_float32_gradients_stay_close_to_float64_with_large_steps():
    """The backward walks the inner weights back by undoing each update instead of storing every chunk's
    weights: equal up to rounding. In float32, with steps large enough to move W a lot, the gradients stay as
    close to float64's as autograd's own float32 scan does."""
    layer, x = layer_case("mlp", 40, 4)
    with torch.no_grad():
        layer.lr_gate_bias.fill_(3.0)
        layer.W1.mul_(3.0)
    weight = torch.randn(3, 40, 8, dtype=F64)
    ref = torch.autograd.grad((layer(x) * weight).sum(), [x] + list(layer.parameters()))
    layer32, x32 = layer.float(), x.detach().float().requires_grad_()
    q, k, v = layer32.views(x32)
    lr, tau = layer32.learning_rate(x32), layer32.token_scale()
    errors = {}
    for hand in (True, False):
        z = layer32.dual_fast(q, k, v, lr, tau, hand_backward=hand)[0]
        out = layer32.o_proj(layer32.post_norm(z.transpose(1, 2).reshape(x32.shape)))
        grads = torch.autograd.grad((out * weight.float()).sum(), [x32] + list(layer32.parameters()),
                                    retain_graph=True)
        errors[hand] = max(float((g.double() - r).norm() / r.norm()) for g, r in zip(grads, ref))
    assert errors[True] < 1e-4 and errors[True] < 3 * errors[False], errors     # measured: 7.9e-6, 1.1e-5
