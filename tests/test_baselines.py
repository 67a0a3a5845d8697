"""The five baselines: the score_all contract, causality / no target leak, padding invariance, determinism,
gradients, the selective scan (reference loop ≡ chunked scan), BERT4Rec's mask handling, and that each one
learns a small sequential task clearly better than popularity with the shared trainer."""
import math

import pytest
import torch
import torch.nn.functional as F

from ttt4rec_edu.baselines import BASELINES
from ttt4rec_edu.baselines.bert4rec import append_token
from ttt4rec_edu.baselines.mamba4rec import (
    MambaBlock,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from ttt4rec_edu.models import available_models, build_model

NUM_ITEMS, MAX_LEN = 23, 9



def random_batch(generator, batch=5, width=MAX_LEN, num_items=NUM_ITEMS):
    """Right-padded ids (batch, width) and lengths (batch,), with a length-1 and a full-width row."""
    lengths = torch.randint(1, width + 1, (batch,), generator=generator)
    lengths[0], lengths[-1] = 1, width
    items = torch.randint(1, num_items + 1, (batch, width), generator=generator)
    real = torch.arange(width)[None, :] < lengths[:, None]
    return items * real, lengths


def make(name, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(name, NUM_ITEMS, MAX_LEN, **overrides)


def test_all_baselines_are_registered_and_reject_unknown_options():
    assert set(BASELINES) <= set(available_models())
    for name in BASELINES:
        with pytest.raises(TypeError):
            build_model(name, NUM_ITEMS, MAX_LEN, no_such_option=1)


@pytest.mark.parametrize("name", BASELINES)
def test_scores_shape_padding_column_and_embedding_hooks(name):
    model = make(name).eval()
    item_seq, lengths = random_batch(torch.Generator().manual_seed(1))
    scores = model.score_all(item_seq, lengths)
    assert scores.shape == (5, NUM_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    # The hooks the chunked metrics/loss rely on give exactly the same scores.
    via_hooks = model.encode(item_seq, lengths) @ model.item_table().T
    assert model.item_table().shape[0] == NUM_ITEMS + 1
    torch.testing.assert_close(via_hooks[:, 1:], scores[:, 1:], rtol=0, atol=0)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("seed", [0, 1])
def test_items_at_and_after_the_length_never_change_the_scores(name, seed):
    """Causality for every prefix: the prediction from position t uses items 1..t only. For BERT4Rec this is
    also "the target (which would sit at position `length`) and later items never reach the score"."""
    model = make(name).eval()
    gen = torch.Generator().manual_seed(10 + seed)
    items = torch.randint(1, NUM_ITEMS + 1, (4, MAX_LEN), generator=gen)
    for t in range(1, MAX_LEN + 1):
        lengths = torch.full((4,), t)
        junk = items.clone()
        junk[:, t:] = torch.randint(1, NUM_ITEMS + 1, (4, MAX_LEN - t), generator=gen)
        padded = items.clone()
        padded[:, t:] = 0
        reference = model.score_all(padded, lengths)
        torch.testing.assert_close(model.score_all(junk, lengths), reference, rtol=0, atol=0)


def test_bert4rec_when_full_policy_never_sees_the_target_either():
    model = make("bert4rec", eval_drop_oldest="when_full").eval()
    gen = torch.Generator().manual_seed(12)
    items = torch.randint(1, NUM_ITEMS + 1, (4, MAX_LEN), generator=gen)
    for t in range(1, MAX_LEN + 1):
        lengths = torch.full((4,), t)
        junk, padded = items.clone(), items.clone()
        junk[:, t:] = torch.randint(1, NUM_ITEMS + 1, (4, MAX_LEN - t), generator=gen)
        padded[:, t:] = 0
        torch.testing.assert_close(model.score_all(junk, lengths), model.score_all(padded, lengths), rtol=0, atol=0)


def test_transformer_attention_matches_torch_scaled_dot_product_attention():
    """SASRec's hand-written multi-head attention (head split, scaling, additive −10000 mask) agrees with
    PyTorch's fused attention given the same boolean mask."""
    from ttt4rec_edu.baselines.sasrec import attention_mask

    model = make("sasrec").eval()
    attention = model.encoder.attention[0]
    x = torch.randn(3, MAX_LEN, 64, generator=torch.Generator().manual_seed(8))
    lengths = torch.tensor([1, 4, MAX_LEN])
    additive = attention_mask(lengths, MAX_LEN, causal=True)
    allowed = additive == 0

    def heads(t):
        return t.view(3, MAX_LEN, 2, 32).transpose(1, 2)

    context = F.scaled_dot_product_attention(heads(attention.query(x)), heads(attention.key(x)),
                                             heads(attention.value(x)), attn_mask=allowed)
    expected = attention.layer_norm(x + attention.dense(context.transpose(1, 2).reshape(3, MAX_LEN, 64)))
    torch.testing.assert_close(attention(x, additive), expected, rtol=1e-5, atol=1e-5)
    # position i may look at keys j <= min(i, length - 1) only
    assert allowed[1, 0, 6].tolist() == [True] * 4 + [False] * (MAX_LEN - 4)
    assert allowed[2, 0, 2].tolist() == [True] * 3 + [False] * (MAX_LEN - 3)


@pytest.mark.parametrize("name", BASELINES)
def test_extra_right_padding_does_not_change_scores(name):
    model = make(name).eval()
    item_seq, lengths = random_batch(torch.Generator().manual_seed(2), width=5)
    narrow = model.score_all(item_seq, lengths)
    wide = model.score_all(F.pad(item_seq, (0, MAX_LEN - 5)), lengths)
    torch.testing.assert_close(wide, narrow, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BASELINES)
def test_eval_is_deterministic_and_train_mode_uses_dropout(name):
    model = make(name)
    item_seq, lengths = random_batch(torch.Generator().manual_seed(3))
    model.eval()
    torch.testing.assert_close(model.score_all(item_seq, lengths), model.score_all(item_seq, lengths),
                               rtol=0, atol=0)
    model.train()
    torch.manual_seed(0)
    first = model.score_all(item_seq, lengths)
    second = model.score_all(item_seq, lengths)
    assert not torch.equal(first[:, 1:], second[:, 1:]), "dropout should make two training passes differ"


@pytest.mark.parametrize("name", BASELINES)
def test_gradient_reaches_the_item_embeddings(name):
    model = make(name).train()
    item_seq, lengths = random_batch(torch.Generator().manual_seed(4))
    targets = torch.randint(1, NUM_ITEMS + 1, (5,), generator=torch.Generator().manual_seed(5))
    if hasattr(model, "calculate_loss"):
        loss = model.calculate_loss(item_seq, lengths, targets)
    else:
        loss = F.cross_entropy(model.score_all(item_seq, lengths), targets)
    loss.backward()
    grad = model.item_embedding.weight.grad
    assert torch.isfinite(grad).all()
    seen = torch.unique(item_seq[item_seq > 0])
    assert grad[seen].abs().sum(dim=1).gt(0).all(), "every input item's embedding gets a gradient"
    for pname, param in model.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_inputs_wider_than_max_len_or_bad_lengths_are_refused(name):
    model = make(name)
    with pytest.raises(ValueError, match="max_len"):
        model.score_all(torch.ones(2, MAX_LEN + 1, dtype=torch.long), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="lengths"):
        model.score_all(torch.ones(2, 4, dtype=torch.long), torch.tensor([0, 2]))


# ------------------------------------------------------------------------------------- selective scan


def random_scan_inputs(batch, seq, d_inner, d_state, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, d_inner, generator=g, dtype=dtype)
    delta = F.softplus(2 * torch.randn(batch, seq, d_inner, generator=g, dtype=dtype))  # some large steps
    A = -torch.exp(torch.randn(d_inner, d_state, generator=g, dtype=dtype) + 1.0)
    B = torch.randn(batch, seq, d_state, generator=g, dtype=dtype)
    C = torch.randn(batch, seq, d_state, generator=g, dtype=dtype)
    D = torch.randn(d_inner, generator=g, dtype=dtype)
    return x, delta, A, B, C, D


@pytest.mark.parametrize("seq", [1, 2, 7, 16, 17, 50])
@pytest.mark.parametrize("chunk_size", [1, 4, 16])
def test_chunked_scan_equals_reference_loop_fp64(seq, chunk_size):
    x, delta, A, B, C, D = random_scan_inputs(3, seq, 6, 5, seed=seq * 31 + chunk_size)
    expected = selective_scan_reference(x, delta, A, B, C, D)
    got = selective_scan_chunked(x, delta, A, B, C, D, chunk_size=chunk_size)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_reference_loop_matches_a_hand_unrolled_two_step_scan():
    x, delta, A, B, C, D = random_scan_inputs(1, 2, 1, 1, seed=7)
    a1, a2 = torch.exp(delta[0, 0, 0] * A[0, 0]), torch.exp(delta[0, 1, 0] * A[0, 0])
    h1 = delta[0, 0, 0] * x[0, 0, 0] * B[0, 0, 0]
    h2 = a2 * h1 + delta[0, 1, 0] * x[0, 1, 0] * B[0, 1, 0]
    expected = torch.stack([C[0, 0, 0] * h1 + D[0] * x[0, 0, 0], C[0, 1, 0] * h2 + D[0] * x[0, 1, 0]])
    assert a1 > 0  # (a1 multiplies the zero initial state)
    torch.testing.assert_close(selective_scan_reference(x, delta, A, B, C, D)[0, :, 0], expected)


def test_chunked_scan_gradients_equal_reference_gradients():
    inputs = [t.requires_grad_() for t in random_scan_inputs(2, 13, 4, 3, seed=11)]
    grads = []
    for fn in (selective_scan_reference, lambda *a: selective_scan_chunked(*a, chunk_size=4)):
        out = fn(*inputs)
        grads.append(torch.autograd.grad((out * torch.cos(out)).sum(), inputs))
    for g_ref, g_fast in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-10)


def test_scan_dispatch_on_cpu_and_shape_errors():
    x, delta, A, B, C, D = random_scan_inputs(2, 5, 3, 2, seed=3)
    expected = selective_scan_reference(x, delta, A, B, C, D)
    for impl in ("auto", "reference", "chunked"):
        torch.testing.assert_close(selective_scan(x, delta, A, B, C, D, impl=impl), expected)
    with pytest.raises(ValueError, match="impl"):
        selective_scan(x, delta, A, B, C, D, impl="fast")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="mamba-ssm"):
            selective_scan(x, delta, A, B, C, D, impl="cuda")
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_reference(x, delta, A, B[:, :4], C, D)


def test_mamba_block_is_causal_and_initialised_like_mamba():
    torch.manual_seed(0)
    block = MambaBlock(d_model=8, d_state=4, d_conv=4, expand=2).double()
    # S4D-real A = −(1..d_state) for every channel, D = 1, Δ = softplus(bias) in [dt_min, dt_max] at init.
    torch.testing.assert_close(-torch.exp(block.A_log), -torch.arange(1.0, 5.0, dtype=torch.float64).expand(16, 4))
    assert torch.equal(block.D, torch.ones(16, dtype=torch.float64))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 - 1e-9 and dt.max() <= 0.1 + 1e-9
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    out = block(x)
    for t in range(11):
        changed = x.clone()
        changed[:, t] += torch.randn(2, 8, dtype=torch.float64)
        new = block(changed)
        torch.testing.assert_close(new[:, :t], out[:, :t], rtol=0, atol=0)
        assert not torch.allclose(new[:, t], out[:, t])


def test_mamba4rec_scores_are_the_same_with_either_scan():
    item_seq, lengths = random_batch(torch.Generator().manual_seed(9))
    scores = [make("mamba4rec", scan_impl=impl, chunk_size=4).double().eval().score_all(item_seq, lengths)
              for impl in ("reference", "chunked")]
    torch.testing.assert_close(scores[1], scores[0], rtol=1e-12, atol=1e-12)


def test_mamba4rec_reinitialises_linears_like_the_official_code():
    model = make("mamba4rec")
    mamba = model.layers[0].mamba
    assert torch.equal(mamba.dt_proj.bias, torch.zeros_like(mamba.dt_proj.bias))
    assert abs(float(mamba.in_proj.weight.detach().std()) - 0.02) < 0.003
    assert model.layers[0].residual is False  # one layer: no residual around the Mamba block (official code)


# ------------------------------------------------------------------------------------------- BERT4Rec


def test_bert4rec_append_mask_matches_recbole_reconstruct_test_data():
    seq = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7], [8, 0, 0, 0]])
    lengths = torch.tensor([3, 4, 1])
    mask = torch.full((3,), 99)
    # RecBole 1.2: append a padding column, write the mask at index `length`, drop the first column.
    out, new_len = append_token(seq, lengths, mask, max_len=4, always_drop_oldest=True)
    assert out.tolist() == [[2, 3, 99, 0], [5, 6, 7, 99], [99, 0, 0, 0]]
    assert new_len.tolist() == [3, 4, 1]
    out, new_len = append_token(seq, lengths, mask, max_len=4, always_drop_oldest=False)
    assert out.tolist() == [[1, 2, 3, 99], [5, 6, 7, 99], [8, 99, 0, 0]]
    assert new_len.tolist() == [4, 4, 2]


def test_bert4rec_eval_policies_differ_only_in_dropping_the_oldest_item():
    item_seq, lengths = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0, 0]]), torch.tensor([3])
    always = make("bert4rec", seed=1).eval()
    when_full = make("bert4rec", seed=1, eval_drop_oldest="when_full").eval()
    # Dropping the oldest item by hand turns the "when_full" model's input into the "always" one's.
    torch.testing.assert_close(always.score_all(item_seq, lengths),
                               when_full.score_all(torch.tensor([[4, 5, 0, 0, 0, 0, 0, 0, 0]]), torch.tensor([2])))
    with pytest.raises(ValueError, match="eval_drop_oldest"):
        make("bert4rec", eval_drop_oldest="sometimes")


def test_bert4rec_cloze_loss_is_cross_entropy_at_the_masked_positions():
    model = make("bert4rec", ft_ratio=1.0).eval()  # ft_ratio 1 → always the "mask the last item" variant
    item_seq, lengths = random_batch(torch.Generator().manual_seed(6))
    targets = torch.ones(5, dtype=torch.long)
    loss = model.calculate_loss(item_seq, lengths, targets)
    masked_input = item_seq.clone()
    rows = torch.arange(5)
    masked_input[rows, lengths - 1] = model.mask_token
    hidden = model.encode_positions(masked_input, lengths)[rows, lengths - 1]
    logits = hidden @ model.item_embedding.weight[: NUM_ITEMS + 1].T + model.output_bias
    logits[:, 0] = -math.inf
    torch.testing.assert_close(loss, F.cross_entropy(logits, item_seq[rows, lengths - 1]))
    # Random masking hides only real positions, about mask_ratio of them.
    model = make("bert4rec", ft_ratio=0.0, mask_ratio=0.3)
    torch.manual_seed(0)
    long_seq, long_len = random_batch(torch.Generator().manual_seed(7), batch=400)
    masked = model.cloze_mask(long_seq, long_len)
    real = torch.arange(MAX_LEN)[None, :] < long_len[:, None]
    assert not (masked & ~real).any()
    assert abs(masked.sum().item() / real.sum().item() - 0.3) < 0.03


# ----------------------------------------------------------------------------------- learning a task


@pytest.fixture(scope="module")
def tiny_task():
    from ttt4rec_edu.data.protocol import build_splits
    from ttt4rec_edu.data.synthetic import make_drift_data
    from ttt4rec_edu.train import TrainConfig, train

    data = make_drift_data(num_users=80, num_items=60, num_topics=3, min_len=8, max_len=12, drift=0.0, seed=0,
                           transition_strength=0.9, num_successors=1)
    splits = build_splits(data, max_len=12, split="6:2:2")
    config = TrainConfig(epochs=8, batch_size=64, lr=5e-3, patience=100, device="cpu", progress=False, seed=0)
    pop = train(build_model("pop", splits.num_items, 12), splits, config)["test"]
    return splits, config, pop, train


@pytest.mark.slow
@pytest.mark.parametrize("name,options", [(name, {}) for name in BASELINES] + [
    ("ttt4rec", {"backbone": "transformer", "inner": "mlp"}),
    ("ttt4rec", {"backbone": "mamba", "inner": "linear"}),
])
def test_learns_a_sequential_task_clearly_better_than_popularity(name, options, tiny_task):
    """Every model, TTT4Rec included, beats popularity clearly on the synthetic sequential task."""
    splits, config, pop, train = tiny_task
    torch.manual_seed(0)
    result = train(build_model(name, splits.num_items, 12, **options), splits, config)["test"]
    assert result["ndcg@10"] > pop["ndcg@10"] + 0.1, (name, result, pop)
    assert result["hr@10"] >= pop["hr@10"], (name, result, pop)


def test_bert4rec_cloze_loss_chunked_equals_plain(monkeypatch):
    """With many items BERT4Rec's Cloze loss switches to the exact chunked cross-entropy: same loss, same grads."""
    import ttt4rec_edu.baselines.bert4rec as bert_module

    model = make("bert4rec").double()
    item_seq, lengths = random_batch(torch.Generator().manual_seed(3), batch=6)
    targets = torch.randint(1, NUM_ITEMS + 1, (6,), generator=torch.Generator().manual_seed(4))

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(11)  # the same random cloze mask in both runs
        loss = model.calculate_loss(item_seq, lengths, targets)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain_loss, plain_grads = loss_and_grads()
    monkeypatch.setattr(bert_module, "choose_chunk", lambda batch, items, budget=None: 5)
    chunked_loss, chunked_grads = loss_and_grads()
    torch.testing.assert_close(chunked_loss, plain_loss, rtol=1e-12, atol=1e-12)
    for got, want in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


NAN = float("nan")
BAD_OPTIONS = [  # (model, option, value, what the one error line says); each ended in a traceback or trained
    ("sasrec", "n_heads", 0, "n_heads must be an integer in [1, 64], got 0"),
    ("bert4rec", "n_heads", 0, "n_heads must be an integer in [1, 64], got 0"),
    ("sasrec", "n_heads", 3, "hidden_size must be a multiple of n_heads"),
    ("mamba4rec", "expand", 0, "expand must be an integer in [1, 65536], got 0"),
    ("mamba4rec", "d_state", 0, "d_state must be an integer in [1, 65536], got 0"),
    ("gru4rec", "dropout_prob", NAN, "dropout_prob must be a finite number in [0.0, 1.0), got nan"),
    ("mamba4rec", "dropout_prob", 1.0, "dropout_prob must be a finite number in [0.0, 1.0), got 1.0"),
    ("sasrec", "hidden_dropout_prob", NAN, "hidden_dropout_prob must be a finite number"),
    ("narm", "dropout_probs", (NAN, 0.5), "dropout_probs (embedding) must be a finite number"),
    ("sasrec", "initializer_range", NAN, "initializer_range must be a finite number >= 0.0, got nan"),
    ("mamba4rec", "initializer_range", NAN, "initializer_range must be a finite number >= 0.0, got nan"),
    ("sasrec", "layer_norm_eps", -1, "layer_norm_eps must be a finite number > 0.0, got -1"),
    ("bert4rec", "layer_norm_eps", -1, "layer_norm_eps must be a finite number > 0.0, got -1"),
    ("gru4rec", "hidden_size", 10 ** 9, "hidden_size must be an integer in [1, 65536], got 1000000000"),
    ("narm", "hidden_size", 10 ** 9, "hidden_size must be an integer in [1, 65536]"),
    ("sasrec", "hidden_size", 10 ** 9, "hidden_size must be an integer in [1, 65536]"),
    ("bert4rec", "mask_ratio", NAN, "mask_ratio must be a finite number in [0.0, 1.0], got nan"),
    ("mamba4rec", "expand", 4096, "hidden_size * expand must be at most 65536"),
]


@pytest.mark.parametrize("name,option,value,message", BAD_OPTIONS)
def test_the_baselines_configs_check_their_own_options(name, option, value, message):
    """Like TTTConfig: one ValueError naming the option, raised by the config itself before any tensor exists."""
    from ttt4rec_edu.models import model_config_class

    config_class = model_config_class(name)
    with pytest.raises(ValueError) as raised:
        config_class(**{option: value})
    assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ValueError, match=option.split()[0]):
        build_model(name, NUM_ITEMS, MAX_LEN, **{option: value})
    config_class()  # the defaults pass


def test_the_baselines_bad_options_are_one_line_from_the_command_line(tmp_path, capsys):
    from ttt4rec_edu.cli import main

    for name, option, value, message in BAD_OPTIONS:
        if isinstance(value, tuple):
            continue  # a tuple option is not a --model-arg
        out = tmp_path / f"{name}-{option}"
        code = main(["train", "--model", name, "--data", "synthetic", "--epochs", "1", "--no-progress",
                     "--model-arg", f"{option}={value}", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (name, option, err)
        assert "Traceback" not in err and not out.exists()
