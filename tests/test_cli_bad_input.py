"""The command line's bad-input cases of issue 15: an occupied ``--out``, a checkpoint rerun without ``--resume``,
``--epochs 0``, no empty folder after a failed run, ``--model-arg`` values of the wrong type, the training
options checked by ``TrainConfig`` alone, and the device resolved once per run."""
import json
import sys

import numpy as np
import pytest
import torch

import ttt4rec_edu.utils as utils
from ttt4rec_edu.cli import main
from ttt4rec_edu.train import CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    """20 users × 8 interactions over 30 items (``user,item,timestamp``)."""
    rng = np.random.default_rng(0)
    rows = [f"u{u},i{int(rng.integers(0, 30))},{t}" for u in range(20) for t in range(8)]
    path = tmp_path_factory.mktemp("bad") / "tiny.csv"
    path.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(argv, capsys) -> str:
    code, out, err = run(argv, capsys)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "error:" in lines[-1], err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err  # one line, or argparse's usage + one line
    return err


def train_args(tiny_csv, out, *extra):
    return ["train", "--model", "gru4rec", "--data", tiny_csv, "--epochs", "1", "--batch-size", "16",
            "--max-len", "5", "--no-progress", "--out", out, *extra]


def test_an_occupied_out_is_refused_and_overwrite_clears_the_old_run(tiny_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train_args(tiny_csv, out), capsys)[0] == 0
    first = json.loads((out / METRICS_NAME).read_text())
    # the same command again: the finished run is not silently replaced
    err = error_line(train_args(tiny_csv, out), capsys)
    assert str(out) in err and CHECKPOINT_NAME in err and "finished" in err
    assert "--resume" in err and "--overwrite" in err and "new --out" in err
    assert json.loads((out / METRICS_NAME).read_text()) == first
    # a folder of something else (no checkpoint): refused, and --overwrite deletes nothing that is not a run's
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    err = error_line(train_args(tiny_csv, foreign), capsys)
    assert "not empty" in err and "todo.txt" in err and "new --out" in err
    err = error_line(train_args(tiny_csv, foreign, "--overwrite"), capsys)
    assert "todo.txt" in err and (foreign / "todo.txt").read_text() == "mine"
    # --resume on a folder without a checkpoint is refused too (nothing to resume, something to lose)
    (out / CHECKPOINT_NAME).rename(tmp_path / "kept.pt")
    err = error_line(train_args(tiny_csv, out, "--resume"), capsys)
    assert METRICS_NAME in err and "--overwrite" in err
    (tmp_path / "kept.pt").rename(out / CHECKPOINT_NAME)
    # --overwrite clears the old run's files before the new run writes (a failing new run leaves none of them)
    (out / ".metrics.json.abc.tmp").write_text("left by a killed write")
    err = error_line(train_args(tiny_csv, out, "--overwrite", "--model-arg", "hidden_size=0"), capsys)
    assert not any((out / name).exists() for name in (CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME))
    assert not out.exists() or not any(out.iterdir())
    code, _, err = run(train_args(tiny_csv, out, "--overwrite", "--seed", "3"), capsys)
    assert code == 0, err
    assert json.loads((out / METRICS_NAME).read_text())["config"]["seed"] == 3
    assert error_line(train_args(tiny_csv, out, "--overwrite", "--resume"), capsys)  # argparse: not both


def test_a_killed_run_is_not_restarted_without_resume(tiny_csv, tmp_path, capsys):
    out = tmp_path / "killed"
    assert run(train_args(tiny_csv, out), capsys)[0] == 0
    (out / METRICS_NAME).unlink()  # killed after its first checkpoint
    (out / RANKS_NAME).unlink()
    checkpoint = (out / CHECKPOINT_NAME).read_bytes()
    err = error_line(train_args(tiny_csv, out), capsys)
    assert f"{CHECKPOINT_NAME} of an earlier run" in err and "--resume" in err
    assert (out / CHECKPOINT_NAME).read_bytes() == checkpoint and not (out / METRICS_NAME).exists()
    # --resume continues it; a checkpoint of another model/config is still refused by the trainer
    err = error_line(train_args(tiny_csv, out, "--resume", "--model-arg", "hidden_size=8"), capsys)
    assert "another model/config" in err
    code, _, err = run(train_args(tiny_csv, out, "--resume"), capsys)
    assert code == 0, err
    assert json.loads((out / METRICS_NAME).read_text())["epochs"] == 1


def test_zero_epochs_is_refused_by_the_command_line(tiny_csv, tmp_path, capsys):
    for command in (train_args(tiny_csv, tmp_path / "zero", "--epochs", "0"),
                    ["reproduce", "--table", "4", "--epochs", "0", "--dry-run", "--out", tmp_path / "r"]):
        code, out, err = run(command, capsys)
        assert code == 2 and "--epochs" in err and "at least 1" in err and "train nothing" in err
    assert not (tmp_path / "zero").exists()


def test_a_failed_run_leaves_no_empty_folder_and_keeps_what_was_there(tiny_csv, tmp_path, capsys):
    nested = tmp_path / "runs" / "deep" / "pop"
    error_line(["train", "--model", "pop", "--data", tiny_csv, "--adapt-at-test", "off", "--no-progress",
                "--out", nested], capsys)  # fails inside the trainer, after the folder was made
    assert not (tmp_path / "runs").exists()  # every folder it created is gone again
    existing = tmp_path / "mine"
    existing.mkdir()
    error_line(["train", "--model", "pop", "--data", tiny_csv, "--adapt-at-test", "off", "--no-progress",
                "--out", existing], capsys)
    assert existing.is_dir()  # an empty folder that was there before stays
    error_line(["train", "--model", "pop", "--data", tmp_path / "missing.csv", "--out", tmp_path / "m"], capsys)
    assert not (tmp_path / "m").exists()


def test_model_args_of_the_wrong_type_name_option_value_and_type(tiny_csv, tmp_path, capsys):
    err = error_line(["model-summary", "--model", "ttt4rec", "--model-arg", "hidden_size=abc"], capsys)
    assert "--model-arg hidden_size='abc'" in err and "int" in err and "str" in err and "'<'" not in err
    err = error_line(["model-summary", "--model", "sasrec", "--model-arg", "hidden_dropout_prob=high"], capsys)
    assert "hidden_dropout_prob" in err and "float" in err
    err = error_line(["model-summary", "--model", "bert4rec", "--model-arg", "cloze_append_target=3"], capsys)
    assert "cloze_append_target=3" in err and "bool" in err
    err = error_line(["model-summary", "--model", "ttt4rec", "--model-arg", "dropout=yes"], capsys)
    assert "dropout=True" in err and "float" in err
    err = error_line(train_args(tiny_csv, tmp_path / "t", "--model-arg", "hidden_size=abc"), capsys)
    assert "hidden_size='abc'" in err and not (tmp_path / "t").exists()
    # right types still pass: an int where a float is expected, a string option
    code, _, err = run(["model-summary", "--model", "sasrec", "--model-arg", "hidden_dropout_prob=0",
                        "--json"], capsys)
    assert code == 0, err
    code, _, err = run(["model-summary", "--model", "ttt4rec", "--model-arg", "hidden_size=32",
                        "--model-arg", "num_heads=2", "--model-arg", "norm=layer", "--json"], capsys)
    assert code == 0, err
    # reading the config's types leaves the random numbers alone (same initial weights)
    from ttt4rec_edu.cli import check_model_arg_types

    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    check_model_arg_types("gru4rec", {"hidden_size": 16})
    assert torch.equal(torch.rand(3), expected)


def test_training_options_are_checked_by_trainconfig_with_option_names(tiny_csv, tmp_path, capsys):
    for option, value, fragment in (("--batch-size", "0", "--batch-size must be >= 1, got 0"),
                                    ("--patience", "-1", "--patience must be >= 0, got -1"),
                                    ("--lr", "-1", "--lr must be a positive number"),
                                    ("--lr", "nan", "--lr must be a positive number"),
                                    ("--eval-batch-size", "0", "--eval-batch-size must be >= 1"),
                                    ("--max-train-batches", "0", "--max-train-batches must be >= 1"),
                                    ("--loss-chunk", "-5", "--loss-chunk must be 'auto', 'off' or a positive")):
        err = error_line(train_args(tiny_csv, tmp_path / "c", option, value), capsys)
        assert fragment in err, (option, err)
    assert not (tmp_path / "c").exists()
    err = error_line(["reproduce", "--table", "4", "--batch-size", "0", "--dry-run", "--out", tmp_path], capsys)
    assert "--batch-size must be >= 1, got 0" in err
    err = error_line(train_args(tiny_csv, tmp_path / "c", "--batch-size", "many"), capsys)
    assert "expected an integer, got 'many'" in err


def test_the_command_line_takes_its_defaults_from_trainconfig(monkeypatch):
    from ttt4rec_edu.cli import build_parser
    from ttt4rec_edu.experiments import RunSettings
    from ttt4rec_edu.train import TrainConfig

    args = build_parser().parse_args(["train", "--model", "pop", "--data", "synthetic"])
    defaults = TrainConfig()
    for field in ("epochs", "patience", "batch_size", "eval_batch_size", "lr", "device", "seed",
                  "max_train_batches", "adapt_at_test", "loss_chunk", "ties", "loss_columns"):
        assert getattr(args, field) == getattr(defaults, field), field
    repro = build_parser().parse_args(["reproduce", "--table", "4"])
    settings = RunSettings()
    for field in ("epochs", "patience", "batch_size", "max_train_batches", "device", "loss_chunk", "ties"):
        assert getattr(repro, field) == getattr(settings, field) == getattr(defaults, field), field
    # a run recorded before the defaults were written (None = the trainer's) matches today's defaults
    old_record = {"epochs": 6, "patience": None, "batch_size": None, "max_train_batches": None,
                  "max_users": None, "data_source": None}
    assert RunSettings.recorded_shaping(old_record) \
        == {**RunSettings().shaping(), "epochs": 6, "timestamps": "exact", "ties": "optimistic"}


def test_the_device_is_resolved_once_per_run(tiny_csv, tmp_path, capsys, monkeypatch):
    original = utils.resolve_device
    calls = []

    def counting(device="auto"):
        calls.append(device)
        return original(device)

    for module in list(sys.modules.values()):  # every module that holds the function, however it imported it
        if getattr(module, "__name__", "").startswith("ttt4rec_edu") and \
                getattr(module, "resolve_device", None) is original:
            monkeypatch.setattr(module, "resolve_device", counting)
    code, _, err = run(train_args(tiny_csv, tmp_path / "dev", "--device", "cpu"), capsys)
    assert code == 0, err
    resolutions = [c for c in calls if not isinstance(c, torch.device)]
    assert resolutions == ["cpu"], calls
    # a resolved device is returned as it is, without a second check
    cpu = torch.device("cpu")
    assert original(cpu) is cpu
    assert json.loads((tmp_path / "dev" / METRICS_NAME).read_text())["config"]["device"] == "cpu"


def test_a_split_too_large_to_normalise_is_refused(tiny_csv, tmp_path, capsys):
    from ttt4rec_edu.data.protocol import parse_split

    for spec in ("1e308:1e308:1e308", "1e308:1e308:1", (1e308, 1e308, 1e308)):  # the sum overflows to inf
        with pytest.raises(ValueError, match="too large or too small"):
            parse_split(spec)
    assert parse_split("1e300:1e300:2e300") == (0.25, 0.25, 0.5)
    err = error_line(train_args(tiny_csv, tmp_path / "s", "--split", "1e308:1e308:1e308"), capsys)
    assert "--split" in err and "too large" in err and not (tmp_path / "s").exists()


def test_devices_other_than_cpu_and_cuda_get_one_line(tiny_csv, tmp_path, capsys):
    from ttt4rec_edu.train import check_device

    for device in ("meta", "mps"):  # meta trained into a traceback, mps too on a build without it
        assert "CPU and CUDA only" in check_device(device)
        err = error_line(train_args(tiny_csv, tmp_path / device, "--device", device), capsys)
        assert "--device must be auto, cpu, cuda or cuda:N" in err and device in err
        assert not (tmp_path / device).exists()
    assert check_device("cpu") is None and check_device("auto") is None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_output_files_respect_the_umask(tiny_csv, tmp_path, capsys):
    """Every file a run writes goes through an atomic write, whose temporary file mkstemp made 0600: a run's
    metrics were then unreadable to the group however the umask was set."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        assert utils.current_umask() == 0o027
        utils.atomic_write_json(tmp_path / "a.json", {"x": 1})
        utils.atomic_torch_save({"x": 1}, tmp_path / "a.pt")
        for name in ("a.json", "a.pt"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
        os.umask(0o002)
        code, _, err = run(train_args(tiny_csv, tmp_path / "run"), capsys)
        assert code == 0, err
    finally:
        os.umask(old)
    written = sorted(p for p in (tmp_path / "run").iterdir() if p.is_file())
    assert {CHECKPOINT_NAME, METRICS_NAME} <= {p.name for p in written}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path.name


def test_resume_with_another_timestamps_mode_or_other_data_is_refused(tiny_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train_args(tiny_csv, out, "--timestamps", "exact"), capsys)[0] == 0
    kept = (out / CHECKPOINT_NAME).read_bytes()
    # the tiny file's times order both modes alike, so only the mode differs: still another run's checkpoint
    err = error_line(train_args(tiny_csv, out, "--resume", "--epochs", "2", "--timestamps", "recbole"), capsys)
    assert "timestamps: checkpoint 'exact' vs now 'recbole'" in err
    # the same file with user u0's times reversed: the same users, items and counts, another order
    other = tmp_path / "other.csv"
    lines = tiny_csv.read_text().splitlines()
    reversed_u0 = [f"u0,{line.split(',')[1]},{7 - int(line.split(',')[2])}" if line.startswith("u0,") else line
                   for line in lines]
    other.write_text("\n".join(reversed_u0) + "\n")
    err = error_line(train_args(other, out, "--resume", "--epochs", "2", "--timestamps", "exact"), capsys)
    assert "data.sha256" in err
    assert (out / CHECKPOINT_NAME).read_bytes() == kept  # nothing written by a refused resume
    code, _, err = run(train_args(tiny_csv, out, "--resume", "--epochs", "2", "--timestamps", "exact"), capsys)
    assert code == 0, err
