"""The command line: in-process ``main(argv)`` for most cases, a subprocess for a few (real entry point)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ttt4rec_edu.cli import main
from ttt4rec_edu.data.registry import get_dataset_info
import ttt4rec_edu.models as models_module

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data"
METRIC_KEYS = {"hr@10", "hr@50", "ndcg@10", "ndcg@50"}



class RecorderModel(nn.Module):
    """A small trainable model whose factory records the options the command line passed."""

    received = []

    def __init__(self, num_items, max_len, dim=8, **options):
        super().__init__()
        self.emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.out = nn.Linear(dim, dim)

    def encode(self, item_seq, lengths):
        return self.out(self.emb(item_seq).sum(1))

    def item_table(self):
        return self.emb.weight

    def score_all(self, item_seq, lengths):
        s = self.encode(item_seq, lengths) @ self.emb.weight.T
        s[:, 0] = float("-inf")
        return s


def _build_recorder(num_items, max_len, **overrides):
    RecorderModel.received.append(dict(overrides))
    return RecorderModel(num_items, max_len, **overrides)


@pytest.fixture
def recorder(monkeypatch):
    """Register ``cli-test-recorder`` for one test only (other test files see the real registry)."""
    info = models_module.ModelInfo("cli-test-recorder", _build_recorder, config=None, display="Recorder")
    monkeypatch.setitem(models_module._REGISTRY, "cli-test-recorder", info)
    RecorderModel.received.clear()
    return RecorderModel


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    """30 users × 6..12 interactions over 40 items, ``user,item,timestamp`` with a header."""
    rng = np.random.default_rng(0)
    lines = ["user,item,timestamp"]
    for u in range(30):
        for t in range(int(rng.integers(6, 13))):
            lines.append(f"u{u},i{int(rng.integers(0, 40))},{t}")
    path = tmp_path_factory.mktemp("cli") / "tiny.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def expect_error(argv, capsys, *fragments):
    code, out, err = run_main(argv, capsys)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_help_everywhere_with_examples(capsys):
    for argv in ([], ["data"], ["data", "stats"], ["train"], ["model-summary"]):
        code, out, _ = run_main(argv + ["--help"], capsys)
        assert code == 0 and "usage:" in out and "example" in out, argv
    assert "--adapt-at-test" in run_main(["train", "--help"], capsys)[1]


def test_data_stats_json_counts(tiny_csv, capsys):
    code, out, _ = run_main(["data", "stats", "--data", tiny_csv, "--json", "--split", "6:2:2",
                             "--max-len", "5"], capsys)
    assert code == 0
    stats = json.loads(out)
    lines = tiny_csv.read_text().splitlines()[1:]
    assert stats["interactions"] == len(lines)
    assert stats["users"] == 30 and stats["items"] == len({ln.split(",")[1] for ln in lines})
    assert stats["avg_seq_len"] == pytest.approx(len(lines) / 30)
    # every user with n interactions gives n - 1 samples
    assert stats["train"] + stats["valid"] + stats["test"] == len(lines) - 30
    assert stats["max_len"] == 5 and stats["split"] == "6:2:2"
    code, out, _ = run_main(["data", "stats", "--data", tiny_csv], capsys)
    assert code == 0 and "avg_seq_len" in out and "max length 50" in out  # files default to 50


def test_data_stats_synthetic(capsys):
    code, out, _ = run_main(["data", "stats", "--data", "synthetic", "--json"], capsys)
    stats = json.loads(out)
    assert code == 0 and stats["users"] > 0 and stats["test"] > 0


def test_bad_inputs_give_specific_errors(tiny_csv, tmp_path, capsys):
    expect_error(["data", "stats", "--data", "no-such-dataset"], capsys, "unknown dataset", "amazon-beauty")
    expect_error(["data", "stats", "--data", tmp_path / "missing.csv"], capsys, "missing.csv")
    expect_error(["data", "stats", "--data", tiny_csv, "--split", "3:2"], capsys, "malformed split")
    expect_error(["data", "stats", "--data", tiny_csv, "--split", "3:0:5"], capsys, "positive")
    expect_error(["data", "stats", "--data", tiny_csv, "--split", "3:-2:5"], capsys, "positive")
    expect_error(["data", "stats", "--data", tiny_csv, "--max-len", "0"], capsys, "max length must be > 0")
    expect_error(["data", "stats", "--data", tiny_csv, "--max-len", "-3"], capsys, "max length")
    expect_error(["train", "--model", "no-such-model", "--data", tiny_csv, "--out", tmp_path / "x"],
                 capsys, "unknown model 'no-such-model'", "pop")
    expect_error(["model-summary", "--model", "nope"], capsys, "unknown model")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    expect_error(["train", "--model", "pop", "--data", tiny_csv, "--out", blocker / "run"], capsys,
                 "not writable")
    expect_error(["train", "--model", "pop", "--data", tiny_csv, "--out", tmp_path / "p",
                  "--adapt-at-test", "off", "--no-progress"], capsys, "set_adapt_at_test")
    expect_error(["train", "--model", "pop", "--data", tiny_csv, "--model-arg", "oops"], capsys, "KEY=VALUE")
    expect_error(["train", "--model", "pop", "--data", tiny_csv, "--device", "bogus"], capsys, "--device bogus")
    if not torch.cuda.is_available():
        expect_error(["train", "--model", "pop", "--data", tiny_csv, "--device", "cuda"], capsys, "no CUDA GPU")
    expect_error(["model-summary", "--model", "pop", "--model-arg", "max_len=3"], capsys, "--max-len")
    expect_error(["model-summary", "--model", "pop", "--model-arg", "dim=3"], capsys, "rejected the options")


def test_train_pop_in_process(tiny_csv, tmp_path, capsys):
    out_dir = tmp_path / "pop"
    code, out, _ = run_main(["train", "--model", "pop", "--data", tiny_csv, "--out", out_dir, "--no-progress",
                             "--max-len", "4"], capsys)
    assert code == 0 and "metrics.json" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics["valid"]) == METRIC_KEYS and set(metrics["test"]) == METRIC_KEYS
    assert metrics["run"]["model"] == "pop" and metrics["data"]["max_len"] == 4
    assert metrics["data"]["users"] == 30


def test_model_options_passed_only_when_given_and_resume_mismatch(tiny_csv, tmp_path, capsys, recorder):
    common = ["train", "--model", "cli-test-recorder", "--data", tiny_csv, "--epochs", "1", "--batch-size", "8",
              "--no-progress"]
    code, _, err = run_main(common + ["--out", tmp_path / "a"], capsys)
    assert code == 0, err
    assert RecorderModel.received[-1] == {}
    code, _, err = run_main(common + ["--out", tmp_path / "b", "--backbone", "mamba", "--inner", "linear",
                                      "--model-arg", "dim=6", "--model-arg", "flag=true",
                                      "--model-arg", "label=x"], capsys)
    assert code == 0, err
    assert RecorderModel.received[-1] == {"backbone": "mamba", "inner": "linear", "dim": 6, "flag": True,
                                          "label": "x"}
    history = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert len(history) == 1 and history[0]["loss"] > 0
    # resuming folder "b" with other model options is refused with a specific message
    expect_error(common + ["--out", tmp_path / "b", "--resume", "--model-arg", "dim=4"], capsys,
                 "another model/config")
    # the same options resume fine and continue to epoch 2
    code, _, err = run_main(common[:5] + ["--epochs", "2"] + common[7:] +
                            ["--out", tmp_path / "b", "--resume", "--backbone", "mamba", "--inner", "linear",
                             "--model-arg", "dim=6", "--model-arg", "flag=true", "--model-arg", "label=x"],
                            capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs"] == 2


def test_model_summary_counts(capsys, recorder):
    code, out, _ = run_main(["model-summary", "--model", "cli-test-recorder", "--num-items", "99", "--json"],
                            capsys)
    summary = json.loads(out)
    expected = RecorderModel(99, 50)
    assert code == 0
    assert summary["modules"]["emb"]["parameters"] == 100 * 8
    assert summary["modules"]["out"]["parameters"] == 8 * 8 + 8
    assert summary["total"] == sum(p.numel() for p in expected.parameters())
    code, out, _ = run_main(["model-summary", "--model", "pop"], capsys)
    assert code == 0 and "total" in out


def test_model_summary_works_for_every_registered_model(capsys):
    from ttt4rec_edu.models import available_models, build_model

    for name in available_models():
        code, out, err = run_main(["model-summary", "--model", name, "--num-items", "50", "--max-len", "8",
                                   "--json"], capsys)
        assert code == 0, (name, err)
        summary = json.loads(out)
        torch.manual_seed(0)
        model = build_model(name, 50, 8)
        unique = {id(p): p.numel() for p in model.parameters()}
        assert summary["total"] == sum(unique.values()), name
        assert sum(m["parameters"] for m in summary["modules"].values()) == summary["total"], name


def _subprocess(args, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "ttt4rec_edu", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_subprocess_help_and_error():
    done = _subprocess(["train", "--help"])
    assert done.returncode == 0 and "examples:" in done.stdout
    done = _subprocess(["model-summary", "--model", "does-not-exist"])
    assert done.returncode == 2
    assert "error: unknown model 'does-not-exist'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (MIRROR / "amazon-beauty-5core.txt").exists(),
                    reason=f"no pre-filled data mirror at {MIRROR} (Amazon Beauty is needed offline)")
def test_subprocess_train_pop_on_amazon_beauty(tmp_path):
    out_dir = tmp_path / "pop-beauty"
    done = _subprocess(["train", "--model", "pop", "--data", "amazon-beauty", "--out", out_dir, "--offline",
                        "--no-progress", "--cache-dir", tmp_path / "cache"],
                       env_extra={"TTT4REC_DATA_MIRRORS": str(MIRROR)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    for key in ("valid", "test", "config", "data", "history", "device", "train_time_s", "epochs"):
        assert key in metrics
    assert set(metrics["test"]) == METRIC_KEYS
    assert metrics["data"]["users"] == 22363 and metrics["data"]["items"] == 12101
    # the counts the cost estimate uses for Amazon Beauty (not in the paper's Table 1: its registry entry's) are
    # this file's
    counts = {k: metrics["data"][k] for k in ("users", "items", "interactions")}
    assert counts == get_dataset_info("amazon-beauty").counts()
    # popularity is a weak but clearly non-random baseline: 10 of 12,101 items at random would hit 0.08 %
    assert 0.002 < metrics["test"]["hr@10"] < 0.1
    assert metrics["epochs"] == 0 and metrics["test"]["ndcg@10"] <= metrics["test"]["hr@10"]


def test_adapt_off_trains_the_fixed_w0_control_and_records_it(tiny_csv, tmp_path, capsys):
    """``--adapt off``: the model option ``adapt=False`` reaches TTT4Rec, is recorded in metrics.json and in the
    resume check; models without adaptation refuse it in one line."""
    out_dir = tmp_path / "fixed"
    argv = ["train", "--model", "ttt4rec", "--data", tiny_csv, "--epochs", "1", "--batch-size", "16",
            "--model-arg", "hidden_size=16", "--model-arg", "num_heads=2", "--model-arg", "ffn_size=32",
            "--adapt", "off", "--no-progress", "--out", out_dir]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["run"]["model_options"]["adapt"] is False
    expect_error(["train", "--model", "sasrec", "--data", tiny_csv, "--adapt", "off", "--out", tmp_path / "s"],
                 capsys, "--adapt", "sasrec has no test-time adaptation")
    expect_error(["train", "--model", "ttt4rec", "--data", tiny_csv, "--adapt", "maybe"], capsys, "on or off")
    expect_error(["train", "--model", "ttt4rec", "--data", tiny_csv, "--model-arg", "adapt=False",
                  "--out", tmp_path / "m"], capsys, "--adapt on|off")


def test_data_stats_reports_repeat_consumption(tmp_path, capsys):
    """``data stats`` gives the repeat fields (issue 22): 5 users who never repeat and 5 who alternate two items
    (every target after the second is already in its window): 8 of each alternating user's 9 targets repeat,
    so 40 of 90 targets are in their context, and half the users repeat."""
    rows = ["user,item,timestamp"]
    for user in range(10):
        items = range(1, 11) if user < 5 else [1, 2] * 5
        rows += [f"u{user},i{item},{t}" for t, item in enumerate(items)]
    path = tmp_path / "repeats.csv"
    path.write_text("\n".join(rows) + "\n")
    code, out, _ = run_main(["data", "stats", "--data", path, "--json", "--max-len", "5"], capsys)
    stats = json.loads(out)
    assert code == 0
    assert stats["users_with_repeat"] == 0.5
    assert stats["targets_in_context"] == pytest.approx(40 / 90)
    assert 0 < stats["test_targets_in_context"] < 1
    code, out, _ = run_main(["data", "stats", "--data", path, "--max-len", "5"], capsys)
    assert code == 0 and "users_with_repeat" in out and "test_targets_in_context" in out
