"""The model contract of ttt4rec_edu.models, checked on every registered model: bad batches are refused with one
clear ValueError (also by ``pop``, which ignores its input), an empty batch gives an empty score table, and the one
parameter summary (rows, trainable counts, shared tensors counted once) that chapter 6 and ``model-summary`` use."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ttt4rec_edu.baselines import BASELINES, PopularityRecommender
from ttt4rec_edu.models import (ParameterCount, available_models, build_model, check_batch, model_config_class,
                                parameter_summary)

NUM_ITEMS, MAX_LEN = 20, 8
MODELS = available_models()


def make(name):
    torch.manual_seed(0)
    return build_model(name, NUM_ITEMS, MAX_LEN).eval()


def batch(b=3, width=MAX_LEN):
    item_seq = torch.randint(1, NUM_ITEMS + 1, (b, width))
    lengths = torch.tensor([width, 5, 1][:b])
    item_seq[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    return item_seq, lengths


@pytest.mark.parametrize("name", MODELS)
def test_each_model_registers_the_config_class_its_options_fill(name):
    """The command line reads an option's type from this class: it must be the class of the built model's config."""
    model, config_class = make(name), model_config_class(name)
    if name == "pop":
        assert config_class is None
        return
    built = getattr(model, "config", None) or model.cfg
    assert type(built) is config_class


def test_an_unknown_model_has_no_config_class():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        model_config_class("nope")


def test_pop_is_a_baseline_module_but_not_one_of_the_papers_five():
    assert "pop" in MODELS and isinstance(build_model("pop", NUM_ITEMS, MAX_LEN), PopularityRecommender)
    assert "pop" not in BASELINES and len(BASELINES) == 5


@pytest.mark.parametrize("name", MODELS)
def test_a_one_dimensional_input_is_refused(name):
    """``pop`` used to return a (10, num_items + 1) table for 10 ids of one sequence."""
    ids = torch.arange(1, 11)
    with pytest.raises(ValueError, match=r"item_seq must be \(batch, seq\), got shape \(10,\)"):
        make(name).score_all(ids, torch.ones(10, dtype=torch.long))


@pytest.mark.parametrize("name", MODELS)
def test_float_lengths_are_refused_even_when_whole(name):
    """10.5 used to be truncated to 10 without a word; 10.0 is refused too (lengths are counts: LongTensor)."""
    item_seq, _ = batch(2)
    for lengths in (torch.tensor([8.0, 3.5]), torch.tensor([8.0, 3.0]), torch.tensor([8.0, 3.0], dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"lengths must be integers \(a LongTensor\), got dtype torch.float"):
            make(name).score_all(item_seq, lengths)
    with pytest.raises(ValueError, match="lengths must be integers"):
        make(name).score_all(item_seq, torch.tensor([True, True]))


@pytest.mark.parametrize("name", MODELS)
def test_non_integer_item_ids_and_other_bad_batches_are_refused(name):
    item_seq, lengths = batch()
    model = make(name)
    with pytest.raises(ValueError, match="item_seq must hold integer item ids, got dtype torch.float32"):
        model.score_all(item_seq.float(), lengths)
    with pytest.raises(ValueError, match=r"item ids must lie in \[0, 20\]"):
        model.score_all(item_seq.masked_fill(item_seq == item_seq[0, 0], NUM_ITEMS + 1), lengths)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 8\]"):
        model.score_all(item_seq, torch.tensor([8, 5, 0]))
    with pytest.raises(ValueError, match=r"lengths must be \(batch,\) = \(3,\)"):
        model.score_all(item_seq, lengths[:2])
    with pytest.raises(ValueError, match=r"at least one position \(seq >= 1\), got shape \(0, 0\)"):
        model.score_all(torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("name", MODELS)
def test_an_empty_batch_gives_an_empty_score_table(name):
    """B = 0: every model returns (0, num_items + 1) (BERT4Rec used to raise a raw RuntimeError from max())."""
    model = make(name)
    with torch.no_grad():
        scores = model.score_all(torch.zeros(0, MAX_LEN, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert scores.shape == (0, NUM_ITEMS + 1)
    assert scores.dtype == torch.float32


def test_check_batch_accepts_the_integer_dtypes_the_pipeline_uses():
    item_seq, lengths = batch()
    for dtype in (torch.int64, torch.int32):
        check_batch(item_seq.to(dtype), lengths.to(dtype), NUM_ITEMS, MAX_LEN)


# ------------------------------------------------------------------------------------------- parameter summary
class Tied(nn.Module):
    """An embedding whose weight is also the output layer's (weight tying), a frozen layer and an own parameter."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.embedding = nn.Embedding(10, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.dropout = nn.Dropout(0.1)
        self.output = nn.Linear(4, 10, bias=False)
        self.output.weight = self.embedding.weight


def test_parameter_summary_counts_shared_tensors_once_and_trainable_apart():
    summary = parameter_summary(Tied())
    assert summary.rows == (ParameterCount("(own)", 3, 3), ParameterCount("embedding", 40, 40),
                            ParameterCount("frozen", 20, 0))       # output's weight is embedding's; dropout: none
    assert (summary.total, summary.trainable) == (63, 43)
    assert summary.total == sum(p.numel() for p in Tied().parameters())  # parameters() yields a shared one once
    assert dict(summary) == {"(own)": 3, "embedding": 40, "frozen": 20, "total": 63}
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        parameter_summary(Tied(), depth=0)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_summary_rows_add_up_at_every_depth(name):
    model = make(name)
    distinct = sum({id(p): p.numel() for p in model.parameters()}.values())
    for depth in (1, 2, 3):
        summary = parameter_summary(model, depth=depth)
        assert summary.total == distinct == sum(row.total for row in summary.rows)
        assert summary.trainable == summary.total
        assert list(summary)[-1] == ("total", distinct)
