"""The memory-bounded cross-entropy equals plain full-softmax cross-entropy: loss and both gradients."""
import pytest
import torch

from ttt4rec_edu.losses import choose_chunk, chunked_cross_entropy, full_cross_entropy


def _problem(batch=7, num_items=23, dim=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, dim, generator=g, dtype=dtype, requires_grad=True)
    table = torch.randn(num_items + 1, dim, generator=g, dtype=dtype, requires_grad=True)
    targets = torch.randint(1, num_items + 1, (batch,), generator=g)
    targets[0] = targets[1]  # a repeated target exercises the index_add in the backward pass
    return hidden, table, targets


@pytest.mark.parametrize("chunk", [1, 4, 5, 22, 23, 1000])
def test_chunked_equals_plain_loss_and_gradients(chunk):
    hidden, table, targets = _problem()
    plain = full_cross_entropy(hidden, table, targets)
    g_hidden, g_table = torch.autograd.grad(plain, (hidden, table))
    chunked = chunked_cross_entropy(hidden, table, targets, chunk=chunk)
    c_hidden, c_table = torch.autograd.grad(chunked, (hidden, table))
    torch.testing.assert_close(chunked, plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_hidden, g_hidden, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_table, g_table, rtol=1e-10, atol=1e-12)
    assert torch.all(c_table[0] == 0), "the padding row never gets gradient"


def test_chunked_fp32_and_large_logits():
    hidden, table, targets = _problem(batch=16, num_items=300, dim=8, dtype=torch.float32, seed=3)
    with torch.no_grad():
        hidden.mul_(30.0)  # logits in the hundreds: a naive exp would overflow
    plain = full_cross_entropy(hidden, table, targets)
    chunked = chunked_cross_entropy(hidden, table, targets, chunk=64)
    assert torch.isfinite(chunked)
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-4)


def test_gradcheck_tiny():
    hidden, table, targets = _problem(batch=3, num_items=6, dim=2)
    assert torch.autograd.gradcheck(lambda h, e: chunked_cross_entropy(h, e, targets, chunk=4), (hidden, table))


def test_choose_chunk():
    assert choose_chunk(256, 12_101) is None  # Amazon Beauty fits
    chunk = choose_chunk(2048, 1_280_969)      # Gowalla does not: ~10 GB of fp32 logits
    assert chunk is not None and 3 * 4 * 2048 * chunk <= (1 << 30)


def test_bad_arguments():
    hidden, table, targets = _problem()
    with pytest.raises(ValueError, match="chunk"):
        chunked_cross_entropy(hidden, table, targets, chunk=0)
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_cross_entropy(hidden, table[:, :2], targets)
