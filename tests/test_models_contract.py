"""The model contract of ttt4rec_edu.models, checked on every registered model: bad batches are refused with one
clear ValueError (also by ``pop``, which ignores its input), an empty batch gives an empty score table, and the one
parameter summary (rows, trainable counts, shared tensors counted once) that chapter 6 and ``model-summary`` use."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ttt4rec_edu.baselines import BASELINES, PopularityRecommender
from ttt4rec_edu import models
from ttt4rec_edu.models import (ParameterCount, available_models, baseline_names, build_model, check_batch,
                                model_config_class, model_info, parameter_summary, reference_names)

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
    if config_class is None:   # a model without a config takes no options
        with pytest.raises(TypeError, match="takes no options"):
            build_model(name, NUM_ITEMS, MAX_LEN, hidden_size=8)
        return
    built = getattr(model, "config", None) or model.cfg
    assert type(built) is config_class


def test_an_unknown_model_has_no_config_class():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        model_config_class("nope")


def test_pop_is_a_baseline_module_but_not_one_of_the_papers_five():
    assert "pop" in MODELS and isinstance(build_model("pop", NUM_ITEMS, MAX_LEN), PopularityRecommender)
    assert "pop" not in BASELINES and reference_names() == ("pop",)
    # the paper's five, in the order they were published (the tables' order), each with the paper's name
    assert BASELINES == baseline_names() == ("gru4rec", "narm", "sasrec", "bert4rec", "mamba4rec")
    assert [model_info(n).display for n in BASELINES + ("pop", "ttt4rec")] == \
        ["GRU4Rec", "NARM", "SASRec", "BERT4Rec", "Mamba4Rec", "Pop", "TTT4Rec"]


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


# ------------------------------------------------------------------------------------------- a new model, one file
TOY_MODULE = '''"""ToyRec: the mean of the history's item embeddings scored against every item (a new model)."""
from dataclasses import dataclass

from torch import nn

from ttt4rec_edu.models import ItemScoringModel, check_batch, register_model


@dataclass
class ToyRecConfig:
    hidden_size: int = 8


@register_model("toyrec", config=ToyRecConfig, display="ToyRec", role="baseline", published=2099)
class ToyRec(ItemScoringModel):
    def __init__(self, num_items, max_len, cfg=None):
        super().__init__()
        self.cfg = cfg or ToyRecConfig()
        self.num_items, self.max_len = num_items, max_len
        self.item_embedding = nn.Embedding(num_items + 1, self.cfg.hidden_size, padding_idx=0)

    def encode(self, item_seq, lengths):
        check_batch(item_seq, lengths, self.num_items, self.max_len)
        return self.item_embedding(item_seq).sum(1) / lengths.clamp(min=1)[:, None].float()

    def item_table(self):
        return self.item_embedding.weight
'''


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """A package of models outside the library holding one new file, toyrec.py, which the registry is told to
    search like ``ttt4rec_edu.baselines``; the registry is restored afterwards."""
    import sys

    package = tmp_path / "toy_models"
    package.mkdir()
    (package / "__init__.py").write_text('"""Models found by discovery."""\n')
    (package / "toyrec.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(models, "_SOURCES", dict(models._SOURCES))
    monkeypatch.setattr(models, "_DISCOVERED", [])
    monkeypatch.setattr(models, "_MODEL_PACKAGES", models._MODEL_PACKAGES + ("toy_models",))
    yield "toyrec"
    for name in ("toy_models", "toy_models.toyrec"):
        sys.modules.pop(name, None)


def test_a_new_model_is_one_new_file(toy_package, capsys):
    from ttt4rec_edu.cli import main
    from ttt4rec_edu.experiments import display_name, table_experiments

    name = toy_package
    assert name in available_models()          # found by discovery, registered by its own file
    assert baseline_names()[-1] == name and model_info(name).display == "ToyRec"
    assert type(build_model(name, NUM_ITEMS, MAX_LEN, hidden_size=4).cfg).__name__ == "ToyRecConfig"
    # the experiments' tables, reproduce --list and the tables' help count it without another edit
    table2 = [e for e in table_experiments("2") if e.model == name]
    assert [e.run_key for e in table2] == [f"{d}/3-2-5/toyrec" for d in ("gowalla", "twitch-100k",
                                                                          "amazon-video-games")]
    assert display_name(table2[0]) == "ToyRec"
    assert main(["reproduce", "--table", "4", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "table4/amazon-video-games/6-2-2/toyrec" in listed and "7 experiments × 3 seeds = 21 runs" in listed
    assert main(["reproduce", "--table", "2", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "ToyRec" in shown and "21 cells × 3 seeds = 63 runs" in shown
    # and the contract tests hold for it: every test above that runs on each registered model
    contract = [test for key, test in sorted(globals().items()) if key.startswith("test_")
                and any(mark.name == "parametrize" and mark.args[0] == "name"
                        for mark in getattr(test, "pytestmark", []))]
    assert len(contract) >= 6
    for test in contract:
        test(name)


def test_build_model_refuses_sizes_that_are_not_integers():
    for num_items, max_len, fragment in (("20", MAX_LEN, "num_items must be an integer, got '20' (str)"),
                                         (NUM_ITEMS, 8.0, "max_len must be an integer, got 8.0 (float)"),
                                         (NUM_ITEMS, 7.5, "max_len must be an integer"),
                                         (True, MAX_LEN, "num_items must be an integer, got True (bool)")):
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            build_model("gru4rec", num_items, max_len)
    import numpy as np

    assert build_model("gru4rec", np.int64(NUM_ITEMS), MAX_LEN).num_items == NUM_ITEMS  # NumPy integers are fine


@pytest.mark.parametrize("option, value, bound", [("hidden_size", 10 ** 9, models.MAX_WIDTH),
                                                  ("ffn_size", 10 ** 9, models.MAX_WIDTH),
                                                  ("mini_batch_size", 1 << 20, models.MAX_WIDTH),
                                                  ("conv_kernel", 1 << 20, models.MAX_WIDTH),
                                                  ("num_blocks", 10 ** 6, models.MAX_DEPTH)])
def test_ttt4rec_refuses_sizes_beyond_every_models_bounds(option, value, bound):
    """TTT4Rec's sizes have the upper bounds of the baselines' (``models.check_size``): a slip such as
    ``hidden_size=10**9`` gets one line before anything is allocated (the heads must divide hidden_size, so they
    are bounded too); the largest allowed value passes the check."""
    from ttt4rec_edu.ttt4rec import TTT4RecConfig

    with pytest.raises(ValueError, match=rf"^{option} must be an integer in \[1, {bound}\], got {value}$"):
        build_model("ttt4rec", NUM_ITEMS, MAX_LEN, **{option: value})
    if option in ("ffn_size", "num_blocks"):   # the bound itself is allowed (not built: that would be huge)
        TTT4RecConfig(num_items=NUM_ITEMS, **{option: bound})


def test_ttt4rec_registers_its_display_name():
    """The tables' name comes from the registration (``register_model(..., display="TTT4Rec")``), as every model's."""
    from ttt4rec_edu.experiments import PAPER_NAMES

    assert model_info("ttt4rec").display == PAPER_NAMES["ttt4rec"] == "TTT4Rec"
    assert dict(PAPER_NAMES) == {name: model_info(name).display for name in available_models()}


@pytest.mark.parametrize("name", MODELS)
def test_lists_arrays_and_left_padded_batches_are_refused(name):
    """Every model's ``score_all`` passes through ``check_batch``: a list or an array gets one clear error, and a
    left-padded batch (accepted before, and scored differently from the same sequences right-padded) too."""
    import numpy as np

    model = make(name)
    item_seq, lengths = batch()
    for seq, lens, what in ((item_seq.tolist(), lengths, "item_seq"), (item_seq.numpy(), lengths, "item_seq"),
                            (item_seq, lengths.tolist(), "lengths"), (item_seq, np.asarray(lengths), "lengths")):
        with pytest.raises(ValueError, match=rf"{what} must be a torch.Tensor \(LongTensor\), got (list|ndarray)"):
            model.score_all(seq, lens)
    left = torch.stack([torch.cat([row[length:], row[:length]]) for row, length in zip(item_seq, lengths)])
    assert not torch.equal(left, item_seq)
    with pytest.raises(ValueError, match="must be right-padded .* row 1 of length 5 has padding"):
        model.score_all(left, lengths)
    with pytest.raises(ValueError, match="must be right-padded .* row 1 of length 8 has padding"):
        model.score_all(left, torch.full_like(lengths, MAX_LEN))  # left padding counted into the length
    bad = item_seq.clone()
    bad[0, 6] = 0  # a padding id inside a length
    with pytest.raises(ValueError, match="row 0 of length 8 has padding \\(0\\) at position 6"):
        model.score_all(bad, lengths)
