"""scripts/copy_results.py: long runs made outside the repository come into book/results as results only (never a
checkpoint), only finished runs come, their recipe label is read again from their values, and the tables are
written afresh; a folder that is not a results folder is refused in one line."""
import importlib.util
import json
from pathlib import Path

import pandas as pd

from ttt4rec_edu.experiments import RunSettings, run_experiments, select, table_experiments
from ttt4rec_edu.runner import RECORD_NAME
from ttt4rec_edu.train import CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "copy_results.py"
spec = importlib.util.spec_from_file_location("copy_results", SCRIPT)
copy_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(copy_results)


def test_results_come_without_checkpoints_and_with_the_label_their_values_have(tmp_path, capsys):
    source, target = tmp_path / "runs-outside", tmp_path / "book-results"
    exps = select(table_experiments("beauty"), models=["sasrec"], splits=["3:2:5"])
    settings = RunSettings(epochs=1, batch_size=64, data_source="synthetic", max_users=20, device="cpu")
    run_experiments(exps, seeds=[0, 1], out=source, settings=settings, log=lambda _: None)
    runs = sorted((source / "runs").rglob("seed*"))
    assert all((run / CHECKPOINT_NAME).exists() for run in runs)
    # seed 1 "killed" before it finished; seed 0 recorded with a stale recipe label
    (runs[1] / RECORD_NAME).unlink()
    record = json.loads((runs[0] / RECORD_NAME).read_text())
    (runs[0] / RECORD_NAME).write_text(json.dumps({**record, "recipe": "official"}))
    assert copy_results.main([str(source), str(target)]) == 0
    copied = sorted((target / "runs").rglob("seed*"))
    assert [p.name for p in copied] == ["seed0"]
    assert sorted(p.name for p in copied[0].iterdir()) == sorted([METRICS_NAME, RECORD_NAME, RANKS_NAME])
    assert (copied[0] / RANKS_NAME).read_bytes() == (runs[0] / RANKS_NAME).read_bytes()
    assert json.loads((copied[0] / RECORD_NAME).read_text())["recipe"] == "custom"   # 1 epoch: no recipe
    assert json.loads((copied[0] / METRICS_NAME).read_text())["config"]["recipe"] == "custom"
    assert list(pd.read_csv(target / "results.csv")["seed"]) == [0]
    assert (target / "summary.md").exists()
    assert "1 finished runs copied" in capsys.readouterr().out


def test_a_folder_without_runs_is_refused_in_one_line(tmp_path, capsys):
    assert copy_results.main([str(tmp_path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no runs/ folder" in err
    assert not (tmp_path / "out").exists()
