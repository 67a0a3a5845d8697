"""Named training recipes (``ttt4rec_edu.recipes``): what each fixes, how a run records it, how older runs are
read, and how ``--recipe`` meets explicit options on the command line."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from ttt4rec_edu.cli import main
from ttt4rec_edu.experiments import collect_results, summarize, table_experiments, write_reports
from ttt4rec_edu.recipes import CUSTOM, OFFICIAL_BATCH_SIZE, RECIPE_FIELDS, RECIPES, recipe_of
from ttt4rec_edu.runner import RECORD_NAME
from ttt4rec_edu.train import CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, TrainConfig

BOOK_RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"


def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_official_recipe_is_the_authors_config_at_the_chosen_batch():
    official = RECIPES["official"]
    defaults = TrainConfig()
    # the authors' config.yaml: Adam at lr 1e-3, at most 300 epochs, patience 5 on valid NDCG@10 (the trainer's
    # defaults); the batch is the one chosen for CPU
    for key in ("epochs", "patience", "lr", "weight_decay", "valid_metric", "max_train_batches"):
        assert official[key] == getattr(defaults, key), key
    assert official["batch_size"] == OFFICIAL_BATCH_SIZE == 2048
    assert set(official) == set(RECIPE_FIELDS) == set(RECIPES["cpu6"])
    assert RECIPES["cpu6"]["epochs"] == 6 and RECIPES["cpu6"]["batch_size"] == 256


def test_a_config_records_the_recipe_its_values_make():
    assert TrainConfig(batch_size=OFFICIAL_BATCH_SIZE).to_dict()["recipe"] == "official"
    assert TrainConfig(epochs=6, batch_size=256).to_dict()["recipe"] == "cpu6"
    assert TrainConfig(epochs=6, batch_size=256, lr=3e-3).to_dict()["recipe"] == CUSTOM
    assert TrainConfig(epochs=6, batch_size=256, max_train_batches=5).to_dict()["recipe"] == CUSTOM
    # the trainer's defaults are the official recipe (batch 2048 kept by the measurement of issue 21)
    assert TrainConfig().to_dict()["recipe"] == "official"
    assert TrainConfig(batch_size=256).to_dict()["recipe"] == CUSTOM
    # an older record without the keys (or with None for "the trainer's default") has the defaults' values
    defaults = TrainConfig().to_dict()
    assert recipe_of({"epochs": 6, "patience": None, "batch_size": 256}, defaults) == "cpu6"
    assert recipe_of({"epochs": 300, "batch_size": OFFICIAL_BATCH_SIZE}, defaults) == "official"


def test_the_committed_six_epoch_runs_are_cpu6_without_editing_them():
    folders = sorted(BOOK_RESULTS.glob("runs/amazon-beauty/*/*/seed*"))
    assert len(folders) >= 50
    for folder in folders:   # none of them recorded a recipe: it is read from their settings
        assert "recipe" not in json.loads((folder / RECORD_NAME).read_text())
        assert "recipe" not in json.loads((folder / METRICS_NAME).read_text())["config"]
    rows = collect_results(BOOK_RESULTS, table_experiments("beauty"))
    assert len(rows) == len(folders) and set(rows["recipe"]) == {"cpu6"}
    # the committed results.csv (no recipe column) is summarised as cpu6 too
    committed = pd.read_csv(BOOK_RESULTS / "results.csv")
    assert set(summarize(committed.drop(columns=["recipe"], errors="ignore"))["recipe"]) == {"cpu6"}


def test_the_committed_converged_runs_are_official_and_were_ended_by_early_stopping():
    converged = BOOK_RESULTS / "converged"
    folders = sorted(converged.glob("runs/amazon-beauty/*/*/seed*"))
    assert folders and not any(converged.rglob(CHECKPOINT_NAME))   # results only
    rows = collect_results(converged, table_experiments("beauty"))
    assert len(rows) == len(folders) and set(rows["recipe"]) == {"official"}
    assert (rows["epochs"] < rows["max_epochs"]).all()   # none ended by the cap of 300
    for folder in folders:   # the labels in the files agree with the values (scripts/copy_results.py)
        assert json.loads((folder / RECORD_NAME).read_text())["recipe"] == "official"
        metrics = json.loads((folder / METRICS_NAME).read_text())
        assert metrics["config"]["recipe"] == "official" and metrics["stopped_early"]
    # the measurement that chose the batch: the same schedule at batch 256 is no named recipe
    measured = collect_results(converged / "batch256", table_experiments("beauty"))
    assert len(measured) >= 2 and set(measured["recipe"]) == {CUSTOM}
    assert set(measured["batch_size"]) == {256} and (measured["max_epochs"] == 300).all()


def test_recipe_and_contradicting_options_are_refused_in_one_line(tmp_path, capsys):
    argv = ["train", "--model", "pop", "--data", "synthetic", "--recipe", "official", "--epochs", "6",
            "--out", tmp_path / "t"]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "--recipe official contradicts --epochs 6" in err, err
    assert not (tmp_path / "t").exists()
    code, _, err = run_main(["reproduce", "--table", "beauty", "--recipe", "cpu6", "--batch-size", "2048",
                             "--dry-run", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "--batch-size 2048 (the recipe has 256)" in err, err
    code, _, err = run_main(["reproduce", "--table", "beauty", "--recipe", "fast", "--dry-run"], capsys)
    assert code == 2 and "--recipe" in err
    # an option that agrees with the recipe is fine
    code, out, err = run_main(["reproduce", "--table", "beauty", "--recipe", "cpu6", "--epochs", "6", "--seeds", "0",
                               "--dry-run", "--out", tmp_path / "r"], capsys)
    assert code == 0 and "would run" in out, err


def _tiny(out, *extra):
    return ["reproduce", "--table", "beauty", "--split", "3:2:5", "--models", "sasrec", "--seeds", "0",
            "--data", "synthetic", "--max-users", "20", "--device", "cpu", "--out", out, *extra]


@pytest.mark.slow
def test_a_run_with_the_official_settings_is_official_and_old_records_resume_and_collect(tmp_path, capsys,
                                                                                         monkeypatch):
    """What the lead does with the long measurement runs: runs made with the older code (no recipe recorded,
    options given one by one) are copied into a ``--recipe official`` folder, resumed and collected. (The
    recipe's 300 epochs are cut to 4 here, so that the test is quick.)"""
    monkeypatch.setitem(RECIPES, "official", {**RECIPES["official"], "epochs": 4})
    old = tmp_path / "measure"
    # an unfinished run made with the official values given one by one: 2 epochs so far, then "killed"
    code, _, err = run_main(_tiny(old, "--epochs", "2", "--patience", "5", "--batch-size", OFFICIAL_BATCH_SIZE),
                            capsys)
    assert code == 0, err
    seed0 = next(old.glob("runs/**/seed0"))
    for name in (METRICS_NAME, RECORD_NAME, RANKS_NAME):
        (seed0 / name).unlink()
    # the checkpoint's resume check does not hold the recipe (a label of values it holds): checkpoints of the
    # older code, which had no recipe, carry the same fingerprint and resume
    fingerprint = json.loads(torch.load(seed0 / CHECKPOINT_NAME, weights_only=True)["fingerprint"])
    assert "recipe" not in fingerprint["config"] and fingerprint["config"]["batch_size"] == OFFICIAL_BATCH_SIZE
    official = tmp_path / "converged"
    shutil.copytree(old / "runs", official / "runs")
    code, out, err = run_main(_tiny(official, "--recipe", "official"), capsys)
    assert code == 0, err
    assert "recipe official, results in" in out and "resume: amazon-beauty/3-2-5/sasrec seed 0" in out
    run = next(official.glob("runs/**/seed0"))
    metrics = json.loads((run / METRICS_NAME).read_text())
    assert metrics["epochs"] == 4 and len(metrics["history"]) == 4   # continued from epoch 2
    assert metrics["config"]["recipe"] == "official"
    assert json.loads((run / RECORD_NAME).read_text())["recipe"] == "official"
    assert set(pd.read_csv(official / "results.csv")["recipe"]) == {"official"}
    # a finished run recorded before recipes existed (no recipe key anywhere) is reused and read as official
    for name, drop in ((RECORD_NAME, lambda d: d.pop("recipe")), (METRICS_NAME, lambda d: d["config"].pop("recipe"))):
        record = json.loads((run / name).read_text())
        drop(record)
        (run / name).write_text(json.dumps(record))
    code, out, err = run_main(_tiny(official, "--recipe", "official"), capsys)
    assert code == 0 and "skip (finished): amazon-beauty/3-2-5/sasrec seed 0" in out, err
    rows = collect_results(official)
    assert list(rows["recipe"]) == ["official"]
    write_reports(tmp_path / "reports", rows)
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert f"recipe official: at most 4 epochs, patience 5, batch {OFFICIAL_BATCH_SIZE}" in summary
    # the same folder asked with another recipe: the finished run is not mixed into it
    code, _, err = run_main(_tiny(official, "--recipe", "cpu6"), capsys)
    assert code == 2 and "must not be mixed" in err


def test_train_records_its_recipe_everywhere(tmp_path, capsys):
    out = tmp_path / "pop"
    code, _, err = run_main(["train", "--model", "pop", "--data", "synthetic", "--recipe", "cpu6", "--out", out,
                             "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((out / METRICS_NAME).read_text())["config"]["recipe"] == "cpu6"
    record = json.loads((out / RECORD_NAME).read_text())
    assert (record["recipe"], record["model"], record["seed"]) == ("cpu6", "pop", TrainConfig().seed)
    # without --recipe the run is named by its values: the trainer's defaults are the official recipe, and one
    # changed value makes a custom run
    code, _, err = run_main(["train", "--model", "pop", "--data", "synthetic", "--out", tmp_path / "plain",
                             "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "plain" / RECORD_NAME).read_text())["recipe"] == "official"
    code, _, err = run_main(["train", "--model", "pop", "--data", "synthetic", "--out", tmp_path / "custom",
                             "--batch-size", "64", "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "custom" / RECORD_NAME).read_text())["recipe"] == CUSTOM
