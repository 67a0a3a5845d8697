"""The trainer's CUDA-facing paths that a CPU can check (issue 27): evaluation never runs under autocast, so the
metrics do not depend on --bf16; a ``cuda:N`` beyond the GPUs torch sees is refused by ``TrainConfig.validate``
(hence by the command line in one line, before any data is read)."""
import pytest
import torch

import ttt4rec_edu.train as trainer
from ttt4rec_edu.data import SequenceData, build_splits
from ttt4rec_edu.metrics import compute_ranks
from ttt4rec_edu.models import build_model
from ttt4rec_edu.train import TrainConfig, TrainConfigError, check_device, train
from ttt4rec_edu.utils import set_seed


def _splits(items=400, users=80, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(1, items + 1, (int(torch.randint(6, 20, (1,), generator=gen)),),
                               generator=gen).tolist() for _ in range(users)]
    return build_splits(SequenceData(sequences, items, name="random"), 20, "3:2:5")


def _model(splits):
    set_seed(0)
    return build_model("sasrec", splits.num_items, splits.max_len).eval()


def test_bfloat16_scoring_would_change_the_ranks():
    """The hazard the trainer avoids: the same weights ranked under CPU bfloat16 autocast give other ranks
    (rounded scores tie and reorder), so evaluating under autocast would make the metrics depend on --bf16."""
    splits = _splits()
    model = _model(splits)
    plain, _ = compute_ranks(model, splits.test, with_ties=True, progress=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded, _ = compute_ranks(model, splits.test, with_ties=True, progress=False)
    assert not torch.equal(plain, rounded)


def test_evaluation_runs_outside_autocast_on_every_device(monkeypatch):
    """_evaluate_split switches autocast off itself: inside a caller's bfloat16 autocast, and with a trainer whose
    autocast is bfloat16 on the CPU too (as --bf16 on a GPU), it returns exactly the float32 metrics."""
    splits = _splits()
    model = _model(splits)
    cpu = torch.device("cpu")
    reference = trainer._evaluate_split(model, splits.test, TrainConfig(device="cpu", progress=False), cpu, "test")
    monkeypatch.setattr(trainer, "_autocast",
                        lambda device, bf16: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16))
    config = TrainConfig(device="cpu", progress=False, bf16=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = trainer._evaluate_split(model, splits.test, config, cpu, "test")
    assert under_autocast == reference
    # the whole run with epochs=0 (evaluation only): --bf16 changes nothing either
    plain = train(_model(splits), splits, TrainConfig(epochs=0, device="cpu", progress=False))
    bf16 = train(_model(splits), splits, TrainConfig(epochs=0, device="cpu", progress=False, bf16=True))
    assert plain["valid"] == bf16["valid"] and plain["test"] == bf16["test"]


def _one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_a_cuda_index_beyond_the_gpus_is_refused(monkeypatch):
    _one_gpu(monkeypatch)
    assert check_device("cuda") is None and check_device("cuda:0") is None and check_device("auto") is None
    assert check_device(torch.device("cuda", 0)) is None and check_device("cpu") is None
    assert "cuda:0 ... cuda:0" in check_device("cuda:1") and "1 CUDA GPU" in check_device(torch.device("cuda", 3))
    assert "auto, cpu, cuda or cuda:N" in check_device("gpu")
    with pytest.raises(TrainConfigError) as err:
        TrainConfig(device="cuda:1").validate()
    assert err.value.problems[0][0] == "device" and "got cuda:1" in err.value.problems[0][1]


def test_the_command_line_refuses_cuda_1_in_one_line_before_reading_data(monkeypatch, tmp_path, capsys):
    from ttt4rec_edu import cli

    _one_gpu(monkeypatch)
    missing = tmp_path / "never-read.csv"   # not there: the device is refused before any data is read
    code = cli.main(["train", "--model", "sasrec", "--data", str(missing), "--device", "cuda:1",
                     "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "--device must be cuda:0 ... cuda:0" in err, err
    assert not (tmp_path / "run").exists()
