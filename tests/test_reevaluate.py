"""η = 0 at test derived from the adapting run's best weights (``ttt4rec_edu.reevaluate``): it is exactly those
weights evaluated with the inner loop off, ``reproduce --recipe official`` makes its η = 0 arm that way, and bad
sources are refused without writing anything."""
import json

import numpy as np
import pytest
import torch

from ttt4rec_edu.data.registry import DataRequest
from ttt4rec_edu.experiments import (RunSettings, collect_results, run_dir, run_experiments, select,
                                     table_experiments)
from ttt4rec_edu.models import build_model
from ttt4rec_edu.recipes import RECIPES
from ttt4rec_edu.reevaluate import DeriveError, best_weights, derive_eta0_run
from ttt4rec_edu.runner import RECORD_NAME, is_finished
from ttt4rec_edu.train import CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME
from ttt4rec_edu.metrics import compute_ranks

ARMS = ["ttt4rec-transformer-mlp", "ttt4rec-transformer-mlp-noadapt"]


@pytest.fixture()
def official_runs(tmp_path, monkeypatch):
    """Seed 0 of TTT4Rec and its η = 0 arm under the official recipe (cut to 2 epochs), on 40 synthetic users."""
    monkeypatch.setitem(RECIPES, "official", {**RECIPES["official"], "epochs": 2, "batch_size": 64})
    experiments = select(table_experiments("beauty"), models=ARMS, splits=["3:2:5"])
    settings = RunSettings(epochs=2, batch_size=64, data_source="synthetic", max_users=40, device="cpu")
    logs = []
    rows = run_experiments(experiments, seeds=[0], out=tmp_path, settings=settings, log=logs.append)
    return tmp_path, experiments, settings, rows, logs


def _splits(settings, max_users=None):
    """The splits the runs read (the experiments' own data request)."""
    return DataRequest("synthetic", "3:2:5", 50, max_users=max_users or settings.max_users).load()[1]


def test_the_official_eta0_arm_is_the_adapting_runs_best_weights_with_the_loop_off(official_runs):
    out, (adapting, frozen), settings, rows, logs = official_runs
    assert any(line.startswith("derive") for line in logs) and len(rows) == 2
    source, target = run_dir(out, adapting, 0), run_dir(out, frozen, 0)
    assert is_finished(target) and not (target / CHECKPOINT_NAME).exists()   # nothing was trained
    a, b = (json.loads((f / METRICS_NAME).read_text()) for f in (source, target))
    assert b["derived_from"]["best_epoch"] == a["best_epoch"] and b["history"] == a["history"]
    assert b["config"]["adapt_at_test"] is False and b["config"]["recipe"] == "official"
    assert json.loads((target / RECORD_NAME).read_text())["derived_from"]["best_epoch"] == a["best_epoch"]
    # recomputed independently: the source's best weights, the inner loop switched off, every test rank
    splits = _splits(settings)
    model = build_model("ttt4rec", splits.num_items, splits.max_len, backbone="transformer", inner="mlp")
    model.load_state_dict(best_weights(source))
    model.eval()
    model.set_adapt_at_test(False)
    ranks, _ = compute_ranks(model, splits.test, batch_size=64, device=torch.device("cpu"), with_ties=True)
    saved = np.load(target / RANKS_NAME)["ranks"]
    assert np.array_equal(saved, ranks.numpy())
    # and the loop does something: the adapting run's own ranks differ
    assert not np.array_equal(saved, np.load(source / RANKS_NAME)["ranks"])
    assert set(rows["recipe"]) == {"official"}
    assert set(collect_results(out, [frozen], [0])["adapt_at_test"]) == {False}


def test_a_derived_arm_needs_its_finished_adapting_run(tmp_path, monkeypatch):
    monkeypatch.setitem(RECIPES, "official", {**RECIPES["official"], "epochs": 2, "batch_size": 64})
    frozen = select(table_experiments("beauty"), models=ARMS[1:], splits=["3:2:5"])
    settings = RunSettings(epochs=2, batch_size=64, data_source="synthetic", max_users=40, device="cpu")
    with pytest.raises(ValueError, match="finish .* first"):
        run_experiments(frozen, seeds=[0], out=tmp_path, settings=settings, log=lambda _: None)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def test_bad_sources_are_refused_and_nothing_is_written(official_runs, tmp_path):
    out, (adapting, frozen), settings, _, _ = official_runs
    source, splits = run_dir(out, adapting, 0), _splits(settings)
    target = tmp_path / "elsewhere" / "seed0"
    with pytest.raises(DeriveError, match="already holds a finished run"):   # never overwrites a result
        derive_eta0_run(source, run_dir(out, frozen, 0), splits)
    with pytest.raises(DeriveError, match="evaluated with η = 0 already"):
        derive_eta0_run(run_dir(out, frozen, 0), target, splits)
    other = _splits(settings, max_users=30)
    with pytest.raises(DeriveError, match="other data"):
        derive_eta0_run(source, target, other)
    # weights that do not give back the recorded validation metrics (another run's, or edited) are refused
    metrics = json.loads((source / METRICS_NAME).read_text())
    metrics["valid"]["ndcg@10"] += 0.01
    (source / METRICS_NAME).write_text(json.dumps(metrics))
    with pytest.raises(DeriveError, match="do not give back its recorded validation metrics"):
        derive_eta0_run(source, target, splits)
    (source / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(DeriveError, match="cannot read checkpoint"):
        derive_eta0_run(source, target, splits)
    (source / CHECKPOINT_NAME).unlink()
    with pytest.raises(DeriveError, match="best weights live in its checkpoint"):
        derive_eta0_run(source, target, splits)
    assert not (tmp_path / "elsewhere").exists()
