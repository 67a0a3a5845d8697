"""Named experiments (ttt4rec_edu.experiments) and ``python -m ttt4rec_edu reproduce``."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from ttt4rec_edu.cli import main
from ttt4rec_edu.estimate import estimate_costs
from ttt4rec_edu.models import baseline_names
from ttt4rec_edu.experiments import (METRICS, Experiment, collect_results, format_summary, paper_results, paper_row,
                                     select, summarize, table_experiments)



def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_sizes_and_unique_keys():
    baselines = len(baseline_names())   # the paper's five; a new registered baseline joins Tables 2, 4 and beauty
    sizes = {"2": 3 * (baselines + 1), "3": 8, "4": baselines + 1, "beauty": 2 * (1 + baselines + 3)}
    every = []
    for table, size in sizes.items():
        exps = table_experiments(table)
        assert len(exps) == size
        assert len({e.key for e in exps}) == size and len({e.run_key for e in exps}) == size
        every += exps
    assert len({e.key for e in every}) == len(every)
    # the one cell Tables 2 and 3 share is trained once: same run folder
    shared = {e.run_key for e in table_experiments("2")} & {e.run_key for e in table_experiments("3")}
    assert shared == {"gowalla/3-2-5/ttt4rec-transformer-mlp", "amazon-video-games/3-2-5/ttt4rec-transformer-mlp"}
    assert table_experiments("table4") == table_experiments("4")
    with pytest.raises(ValueError, match="unknown table '5'"):
        table_experiments("5")
    assert [e.variant for e in select(table_experiments("3"), ["gowalla"], ["ttt4rec-mamba-linear"])] == \
        ["ttt4rec-mamba-linear"]
    with pytest.raises(ValueError, match="no experiment matches"):
        select(table_experiments("4"), ["gowalla"])
    beauty = select(table_experiments("beauty"), models=["ttt4rec"], splits=["6:2:2"])
    assert [e.variant for e in beauty] == ["ttt4rec-transformer-mlp", "ttt4rec-transformer-mlp-noadapt",
                                           "ttt4rec-transformer-mlp-fixed-w0"]
    fixed = beauty[-1]
    assert (fixed.adapt, fixed.adapt_at_test) == (False, True)
    assert fixed.model_overrides() == {"backbone": "transformer", "inner": "mlp", "adapt": False}
    assert beauty[1].model_overrides() == {"backbone": "transformer", "inner": "mlp"}  # η = 0 at test: same model
    assert paper_row(fixed) is None
    assert {e.split for e in beauty} == {"6:2:2"}


def test_paper_lookup_finds_every_cell_with_the_csv_values():
    paper = paper_results()
    matched = set()
    for table in ("2", "3", "4"):
        for exp in table_experiments(table):
            row = paper_row(exp)
            assert row is not None, exp.key
            hits = paper[(paper["table"] == f"table{table}") & (paper["dataset"] == exp.dataset)
                         & (paper["split"] == exp.split)
                         & (paper["model"].str.lower() == exp.model)
                         & (paper["backbone"] == (exp.backbone or ""))
                         & (paper["inner"] == (exp.inner or ""))]
            assert len(hits) == 1
            assert row == {m: float(hits[m].iloc[0]) for m in METRICS}
            matched.add(hits.index[0])
    assert matched == set(paper.index)  # every printed cell of Tables 2-4 has an experiment
    # spot check against the paper's text: Table 2, Gowalla, TTT4Rec NDCG@10 = 0.0449
    assert paper_row(Experiment("2", "gowalla", "3:2:5", "ttt4rec", "transformer", "mlp"))["ndcg@10"] == 0.0449
    assert paper_row(table_experiments("beauty")[0]) is None
    assert paper_row(Experiment("2", "gowalla", "3:2:5", "ttt4rec", "transformer", "mlp", False)) is None


def test_summary_mean_std_and_difference_by_hand():
    rows = []
    for seed, (h10, n10) in enumerate([(0.10, 0.04), (0.12, 0.05), (0.14, 0.06)]):
        rows.append({"table": "2", "dataset": "gowalla", "split": "3:2:5", "model": "sasrec", "backbone": "",
                     "inner": "", "adapt_at_test": True, "seed": seed, "hr@10": h10, "hr@50": 0.3,
                     "ndcg@10": n10, "ndcg@50": 0.1})
    rows.append({"table": "beauty", "dataset": "amazon-beauty", "split": "3:2:5", "model": "pop", "backbone": None,
                 "inner": None, "adapt_at_test": True, "seed": 0, "hr@10": 0.01, "hr@50": 0.05, "ndcg@10": 0.005,
                 "ndcg@50": 0.01})
    summary = summarize(pd.DataFrame(rows))
    sas = summary[summary["model"] == "sasrec"].iloc[0]
    assert sas["hr@10_mean"] == pytest.approx(0.12)
    assert sas["hr@10_std"] == pytest.approx(0.02)        # sample std (ddof 1) of 0.10, 0.12, 0.14
    assert sas["ndcg@10_std"] == pytest.approx(0.01)
    assert sas["hr@50_std"] == pytest.approx(0.0)
    assert sas["seeds"] == 3
    assert sas["paper_hr@10"] == 0.0934                   # Table 2, Gowalla, SASRec
    assert sas["diff_hr@10_pct"] == pytest.approx(100 * (0.12 - 0.0934) / 0.0934)
    pop = summary[summary["model"] == "pop"].iloc[0]
    assert math.isnan(pop["hr@10_std"]) and math.isnan(pop["paper_hr@10"]) and pop["seeds"] == 1
    text = format_summary(summary)
    assert "0.1200 ± 0.0200" in text and "0.0934" in text and "+28.5" in text
    markdown = format_summary(summary, markdown=True)
    assert markdown.splitlines()[1].startswith("|---") and "| 2 | gowalla | 3:2:5 | SASRec | 3 |" in markdown
    # one seed has no spread: never "± 0.0000"; a row under three seeds is marked † and the mark is explained
    pop_line = next(line for line in markdown.splitlines() if "| Pop" in line)
    assert "| Pop † | 1 |" in pop_line and "0.0100 (one seed)" in pop_line and "±" not in pop_line
    assert "SASRec †" not in markdown and markdown.splitlines()[-1].startswith("† fewer than 3 seeds")
    assert "† fewer than 3 seeds" in text and "0.0100 (one seed)" in text


@pytest.mark.slow
def test_tiny_reproduce_writes_reports_skips_finished_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["reproduce", "--table", "4", "--models", "gru4rec", "sasrec", "--seeds", "0", "1", "--data",
            "synthetic", "--max-users", "40", "--epochs", "1", "--device", "auto", "--out", out]
    code, text, err = run_main(argv, capsys)
    assert code == 0, err
    assert text.count("run: ") == 4 and "skip" not in text
    assert "amazon-video-games (data: synthetic" in text  # the printed table says the data was replaced
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4
    assert set(results["model"]) == {"gru4rec", "sasrec"} and set(results["seed"]) == {0, 1}
    assert set(results["device"]) == {"cpu"} and (results["epochs"] == 1).all()
    assert results["data"].str.contains("40 users").all()  # the cut synthetic data is named in every row
    for column in ["table", "dataset", "split", "model", "backbone", "inner", "seed", *METRICS, "epochs",
                   "train_time_s", "device"]:
        assert column in results
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 and (summary["seeds"] == 2).all()
    gru = results[results["model"] == "gru4rec"]["hr@10"]
    assert summary.loc[summary["model"] == "gru4rec", "hr@10_mean"].iloc[0] == pytest.approx(gru.mean())
    assert summary.loc[summary["model"] == "gru4rec", "paper_hr@10"].iloc[0] == 0.0764  # Table 4 GRU4Rec
    assert "paper" in (out / "summary.md").read_text()
    assert (results["max_epochs"] == 1).all() and (results["patience"] == 5).all()  # the settings, per row
    assert (results["batch_size"] == 2048).all()
    assert "at most 1 epochs, patience 5, batch 2048" in (out / "summary.md").read_text()

    # the second invocation retrains nothing: every run is skipped and no metrics.json is rewritten
    metric_files = sorted(out.glob("runs/**/metrics.json"))
    assert len(metric_files) == 4
    stamps = [f.stat().st_mtime_ns for f in metric_files]
    code, text, err = run_main(argv, capsys)
    assert code == 0, err
    assert text.count("skip (finished): ") == 4 and "run: " not in text
    assert [f.stat().st_mtime_ns for f in metric_files] == stamps
    assert len(pd.read_csv(out / "results.csv")) == 4

    # a killed run (checkpoint written, no metrics.json) resumes from its checkpoint, with the same result
    killed = out / "runs" / "amazon-video-games" / "6-2-2" / "sasrec" / "seed1"
    before = json.loads((killed / "metrics.json").read_text())["test"]
    (killed / "metrics.json").unlink()
    (killed / "experiment.json").unlink()
    code, text, err = run_main(argv, capsys)
    assert code == 0, err
    assert text.count("resume: ") == 1 and text.count("skip (finished): ") == 3
    assert json.loads((killed / "metrics.json").read_text())["test"] == before

    # dry run and list say what exists; other result-shaping settings in the same folder are refused
    code, text, _ = run_main(argv + ["--dry-run"], capsys)
    assert code == 0 and text.count("finished") == 4
    code, text, _ = run_main(["reproduce", "--table", "2", "--list"], capsys)
    assert code == 0 and "18 experiments × 3 seeds = 54 runs" in text and "table2/gowalla/3-2-5/sasrec" in text
    code, _, err = run_main(argv[:-2] + ["--epochs", "2", "--out", out], capsys)
    assert code == 2 and "use another --out folder" in err
    code, _, err = run_main(argv + ["--batch-size", "8"], capsys)
    assert code == 2 and "'batch_size': 8" in err and "use another --out folder" in err
    small = tmp_path / "batch8"
    code, _, err = run_main(argv[:-1] + [small, "--models", "gru4rec", "--seeds", "0", "--batch-size", "8"], capsys)
    assert code == 0, err
    run = small / "runs" / "amazon-video-games" / "6-2-2" / "gru4rec" / "seed0"
    assert json.loads((run / "metrics.json").read_text())["config"]["batch_size"] == 8
    assert json.loads((run / "experiment.json").read_text())["settings"]["batch_size"] == 8
    assert (run / "test_ranks.npz").exists()
    assert len(collect_results(out)) == 4


def test_reproduce_help_documents_every_table(capsys):
    code, text, _ = run_main(["reproduce", "--help"], capsys)
    assert code == 0
    for needle in ("Table 2", "Table 3", "Table 4", "beauty", "54 runs", "24 runs", "18 runs", "ESTIMATE",
                   "--loss-chunk", "--max-users", "--dry-run", "--list", "--estimate"):
        assert needle in text


def test_loss_chunk_flag_reaches_the_trainer(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [f"u{u},i{int(rng.integers(0, 30))},{t}" for u in range(20) for t in range(8)]
    data = tmp_path / "tiny.csv"
    data.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    code, _, err = run_main(["train", "--model", "gru4rec", "--data", data, "--epochs", "1", "--loss-chunk", "7",
                             "--no-progress", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["loss_chunk"] == 7
    code, _, err = run_main(["train", "--model", "gru4rec", "--data", data, "--loss-chunk", "0",
                             "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "positive number of items" in err
    code, _, err = run_main(["reproduce", "--table", "4", "--loss-chunk", "lots", "--list"], capsys)
    assert code == 2 and "expected auto, off or a positive number" in err


@pytest.mark.slow
def test_estimate_is_positive_for_every_table():
    for table, cells in {"2": 18, "3": 8, "4": 6, "beauty": 18}.items():
        frame = estimate_costs(table)
        assert len(frame) == cells
        numbers = [c for c in frame.columns if c.startswith("estimate_") and c != "estimate_loss_chunk"]
        assert set(frame.columns) - set(numbers) <= {"table", "dataset", "split", "model", "items", "max_len",
                                                     "counts_from", "estimate_loss_chunk"}
        trained = frame[frame["model"] != "pop"]
        assert (trained[numbers] > 0).all().all(), table
        assert "ESTIMATE" in frame.attrs["assumptions"]
    gowalla = estimate_costs("2").set_index(["dataset", "model"])
    # Gowalla's 1.28 M items: the trainer would chunk the loss, and the step costs far more than Amazon's
    assert gowalla.loc[("gowalla", "sasrec"), "estimate_loss_chunk"] != "plain"
    beauty = estimate_costs("beauty").set_index(["split", "model"])
    assert beauty.loc[("3:2:5", "sasrec"), "estimate_loss_chunk"] == "plain"  # 12,101 items: logits fit 1 GiB
    assert gowalla.loc[("gowalla", "sasrec"), "estimate_step_tflop_batch"] > \
        10 * gowalla.loc[("amazon-video-games", "sasrec"), "estimate_step_tflop_batch"]
    # the item-scoring matmuls alone: 3 products (forward, two backward) × 2 FLOPs × batch × d × items
    assert gowalla.loc[("gowalla", "sasrec"), "estimate_step_tflop_batch"] * 1e12 >= 6 * 2048 * 64 * 1280969


def test_fixed_w0_variant_is_named_recorded_and_summarised(tmp_path, capsys):
    """The control runs through reproduce like any cell: its own folder, ``adapt`` False in results.csv, a name in
    the summary that says what it is, and a model that was really built with adapt=False."""
    out = tmp_path / "results"
    argv = ["reproduce", "--table", "beauty", "--split", "6:2:2", "--models", "ttt4rec-transformer-mlp-fixed-w0",
            "--seeds", "0", "--data", "synthetic", "--max-users", "30", "--epochs", "1", "--max-train-batches",
            "1", "--device", "cpu", "--out", out]
    code, text, err = run_main(argv, capsys)
    assert code == 0, err
    run = out / "runs" / "amazon-beauty" / "6-2-2" / "ttt4rec-transformer-mlp-fixed-w0" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["model_options"] == {"backbone": "transformer", "inner": "mlp", "adapt": False}
    assert json.loads((run / "experiment.json").read_text())["adapt"] is False
    results = pd.read_csv(out / "results.csv")
    assert list(results["adapt"]) == [False] and list(results["adapt_at_test"]) == [True]
    assert "fixed W0: trained and tested without adaptation" in (out / "summary.md").read_text()
    with pytest.raises(ValueError, match="adapt=False already means"):
        Experiment("beauty", "amazon-beauty", "3:2:5", "ttt4rec", "transformer", "mlp", False, False)
    with pytest.raises(ValueError, match="sasrec has no test-time adaptation"):
        Experiment("beauty", "amazon-beauty", "3:2:5", "sasrec", adapt=False)
