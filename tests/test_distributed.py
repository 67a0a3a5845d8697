"""Data-parallel training (ttt4rec_edu.distributed): batch sharding, and 2 CPU processes under torchrun
matching one process with the same global batch."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ttt4rec_edu.distributed import DistContext, init_from_env, torchrun_env

REPO = Path(__file__).resolve().parents[1]


def context(rank, world):
    return DistContext(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"), backend="gloo")


@pytest.mark.parametrize("batch,world", [(10, 2), (11, 2), (7, 3), (2, 3), (1, 4)])
def test_shards_are_disjoint_cover_the_batch_and_weights_sum_to_one(batch, world):
    index = torch.randperm(100)[:batch]
    shards = [context(r, world).shard_batch(index) for r in range(world)]
    real = [(ids, w) for ids, w in shards if w > 0]
    # the real shards, in rank order, are exactly the global batch (disjoint, nothing lost, order kept)
    assert torch.equal(torch.cat([ids for ids, _ in real]), index)
    assert sum(w for _, w in shards) == pytest.approx(1.0)
    for ids, w in real:
        assert w == pytest.approx(len(ids) / batch)
    sizes = [len(ids) for ids, _ in real]
    assert max(sizes) - min(sizes) <= 1
    # a rank left without samples still computes (on one sample) but with weight 0
    for ids, w in shards:
        if w == 0:
            assert len(ids) == 1


def test_torchrun_env_detection(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_env() is None
    assert init_from_env("cpu") is None  # not under torchrun: nothing is initialised
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == (1, 2, 1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        torchrun_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        torchrun_env()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("model,option,epochs", [("gru4rec", "dropout_prob=0", 3), ("ttt4rec", "dropout=0", 2)])
def test_two_processes_match_one_process(tmp_path, model, option, epochs):
    """torchrun with 2 gloo processes == 1 process, same global batch (63: the last batch splits unevenly).

    GRU4Rec and TTT4Rec with dropout 0 are deterministic, so the only difference is floating-point summation order: each
    rank sums its slice's per-sample gradients and the all-reduce adds the two partial sums, where one process
    sums them all at once. That moves weights by a few float32 ulps per step, so the epoch losses agree to a
    relative 1e-5 and the evaluation ranks — integers — come out identical (allowed: at most one of the
    n test targets changing rank, a metric difference <= 1/n, which would need two scores within rounding).
    """
    rng = np.random.default_rng(0)
    lines = ["user,item,timestamp"]
    for u in range(60):
        for t in range(int(rng.integers(8, 16))):
            lines.append(f"u{u},i{int(rng.integers(0, 50))},{t}")
    data = tmp_path / "tiny.csv"
    data.write_text("\n".join(lines) + "\n")
    args = ["train", "--model", model, "--model-arg", option, "--data", str(data), "--max-len", "10",
            "--epochs", str(epochs), "--batch-size", "63", "--eval-batch-size", "40", "--device", "cpu",
            "--no-progress", "--seed", "7"]
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(port),
                          "-m", "ttt4rec_edu", *args, "--out", str(tmp_path / "ddp")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("wrote ") == 1  # rank 0 alone reports
    single = subprocess.run([sys.executable, "-m", "ttt4rec_edu", *args, "--out", str(tmp_path / "single")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]

    a = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    b = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert a["distributed"] == {"world_size": 2, "backend": "gloo", "gradient_sync": "all_reduce(sum)"}
    assert "distributed" not in b
    assert a["data"]["train"] == 244  # 4 global batches: 63, 63, 63, 55 (28 + 27 on the two ranks)
    assert a["data"]["valid"] % 2 == 1  # the evaluation shards are uneven too
    assert np.allclose([h["loss"] for h in a["history"]], [h["loss"] for h in b["history"]], rtol=1e-5, atol=0)
    n_test = a["data"]["test"]
    for split in ("valid", "test"):
        for metric, value in b[split].items():
            assert abs(a[split][metric] - value) <= 1.0 / n_test + 1e-12, (split, metric)
    for ha, hb in zip(a["history"], b["history"]):
        for metric, value in hb["valid"].items():
            assert abs(ha["valid"][metric] - value) <= 1.0 / a["data"]["valid"] + 1e-12
    assert a["best_epoch"] == b["best_epoch"] and a["epochs"] == b["epochs"] == epochs
    assert (tmp_path / "ddp" / "checkpoint.pt").is_file()
