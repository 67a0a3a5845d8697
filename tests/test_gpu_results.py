"""ttt4rec_edu.gpu_results: the newest GPU results file is found (tiny smoke runs never), and the estimates are
recalibrated from its measured samples/s. The file here is fake and says so; nothing in it was measured."""
import json
import math

import pandas as pd
import pytest

from ttt4rec_edu.gpu_results import (GpuResultsError, calibration, comparison_tables, describe, gpu_result_files,
                                     headline_table, is_gpu_run, load_gpu_results, measured_epochs,
                                     newest_gpu_results, part_status, recalibrate)

FAKE_DEVICE = "FAKE TEST GPU (written by tests/test_gpu_results.py, nothing measured)"


def fake_doc(date="2001-02-03", started="2001-02-03T10:00:00+00:00", tiny=False, sasrec_rate=20000.0):
    parts = {k: {"title": k, "status": "ok", "reason": None, "elapsed_s": 1.0, "result": {}} for k in "abcde"}
    parts["c"]["result"] = {"batch_size": 2048, "data": {"name": "fake", "items": 12101, "max_len": 50},
                            "epochs": [
        {"variant": "sasrec", "model": "sasrec", "options": {}, "train_samples": 50000,
         "epoch_s": 50000 / sasrec_rate, "train_samples_per_s": sasrec_rate, "eval_samples_per_s": 1e5,
         "peak_memory_mib": 900.0},
        {"variant": "ttt4rec-transformer-mlp", "model": "ttt4rec",
         "options": {"backbone": "transformer", "inner": "mlp"}, "train_samples": 50000, "epoch_s": 10.0,
         "train_samples_per_s": 5000.0, "eval_samples_per_s": 5e4, "peak_memory_mib": 1500.0},
        {"variant": "pop", "model": "pop", "options": {}, "note": "no trainable parameters: evaluation only",
         "eval_samples_per_s": 1e6}]}
    parts["d"].update(status="skipped", reason="fake: not run")
    return {"schema": 1, "kind": "ttt4rec_edu gpu_check", "tiny": tiny, "date": date, "started_at": started,
            "command": "fake (tests/test_gpu_results.py)", "deadline_s": 420.0,
            "device": {"type": "cuda", "name": FAKE_DEVICE, "slug": "fake"},
            "environment": {"torch": "0.0-fake"}, "settings": {}, "parts": parts,
            "headline": [{"key": "ttt_vs_sasrec_epoch", "figure": "TTT4Rec epoch / SASRec epoch", "value": 4.0,
                          "goal": "<= 2", "met": False, "how": "fake"}]}


def write(folder, name, doc):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(doc))


def test_no_folder_or_no_file_means_nothing_measured(tmp_path):
    assert newest_gpu_results(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert newest_gpu_results(tmp_path / "empty") is None


def test_newest_file_wins_and_tiny_runs_are_ignored(tmp_path):
    write(tmp_path, "2001-02-03-fake.json", fake_doc())
    write(tmp_path, "2001-03-01-fake.json", fake_doc("2001-03-01", "2001-03-01T09:00:00+00:00", sasrec_rate=1e4))
    write(tmp_path, "2009-01-01-cpu-tiny.json", fake_doc("2009-01-01", "2009-01-01T00:00:00+00:00", tiny=True))
    newest = newest_gpu_results(tmp_path)
    assert newest["date"] == "2001-03-01" and newest["path"].endswith("2001-03-01-fake.json")
    assert FAKE_DEVICE in describe(newest) and "2001-03-01" in describe(newest)
    assert list(part_status(newest)["status"]) == ["ok", "ok", "ok", "skipped", "ok"]
    assert headline_table(newest)["measured ratio"].tolist() == [4.0]


def test_a_broken_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(GpuResultsError, match="x.json"):
        newest_gpu_results(tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(GpuResultsError, match="not a results file"):
        load_gpu_results(tmp_path / "x.json")


def test_calibration_and_recalibration_arithmetic(tmp_path):
    doc = fake_doc()
    epochs = measured_epochs(doc)
    assert list(epochs.index) == ["sasrec", "ttt4rec-transformer-mlp"]      # pop trains nothing
    # 0.5 GFLOP per SASRec sample at 20,000 samples/s = 10 TFLOP/s reached: exactly the assumption
    # 2 GFLOP per TTT4Rec sample at 5,000 samples/s = 10 TFLOP/s too; with an assumed 40 both are 4x off
    calib = calibration(doc, train_gflop={"sasrec": 0.5, "ttt4rec-transformer-mlp": 2.0}, assumed_tflops=10.0)
    assert calib.loc["sasrec", "achieved_tflops"] == pytest.approx(10.0)
    assert calib.loc["sasrec", "off_by"] == pytest.approx(1.0)
    assert calib.loc["sasrec", "estimate_epoch_s"] == pytest.approx(50000 * 0.5e9 / 10e12)
    calib = calibration(doc, train_gflop={"sasrec": 0.5, "ttt4rec-transformer-mlp": 2.0}, assumed_tflops=40.0)
    assert calib["off_by"].tolist() == pytest.approx([4.0, 4.0])
    assert calib.loc["ttt4rec-transformer-mlp", "measured_epoch_s"] == 10.0
    assert FAKE_DEVICE in calib.attrs["measured_on"]
    estimate = pd.DataFrame({"model": ["sasrec", "ttt4rec-transformer-mlp", "bert4rec"],
                             "estimate_gpu_hours_all_seeds": [1.0, 2.0, 3.0]})
    out = recalibrate(estimate, calib)
    assert out["recalibrated_gpu_hours_all_seeds"].tolist()[:2] == pytest.approx([4.0, 8.0])
    assert math.isnan(out.loc[2, "recalibrated_gpu_hours_all_seeds"])        # BERT4Rec was not measured
    assert FAKE_DEVICE in out.attrs["measured_on"]


def test_calibration_counts_the_flops_with_estimate_costs():
    """Without given FLOPs the calibration counts them (estimate_costs' Beauty cells), consistent with the
    estimate: the estimated epoch time is samples × FLOPs per sample / assumed throughput."""
    from ttt4rec_edu.estimate import ESTIMATE_GPU_TFLOPS, estimate_costs
    from ttt4rec_edu.experiments import Experiment

    doc = fake_doc()
    doc["parts"]["c"]["result"]["epochs"] = doc["parts"]["c"]["result"]["epochs"][:1]   # SASRec only
    calib = calibration(doc)
    cell = estimate_costs("beauty", experiments=[Experiment("beauty", "amazon-beauty", "3:2:5", "sasrec")],
                          measure_cpu=False)
    per_sample = float(cell["estimate_train_gflop_per_sample"].iloc[0])
    assert calib.loc["sasrec", "estimate_train_gflop_per_sample"] == pytest.approx(per_sample)
    assert calib.loc["sasrec", "estimate_epoch_s"] == pytest.approx(50000 * per_sample * 1e9
                                                                    / (ESTIMATE_GPU_TFLOPS * 1e12))
    assert calib.loc["sasrec", "off_by"] == pytest.approx(2.5 / calib.loc["sasrec", "estimate_epoch_s"])


def test_comparison_tables_are_labelled_with_device_and_date():
    """What chapter 10 displays when a results file exists: three tables, each labelled."""
    estimate = pd.DataFrame({"table": ["2", "2", "4"], "dataset": ["gowalla", "gowalla", "games"],
                             "split": ["3:2:5", "3:2:5", "6:2:2"],
                             "model": ["sasrec", "bert4rec", "ttt4rec-transformer-mlp"],
                             "estimate_gpu_hours_all_seeds": [1.0, 3.0, 0.5]})
    tables = comparison_tables(estimate, fake_doc(),
                               train_gflop={"sasrec": 0.5, "ttt4rec-transformer-mlp": 2.0})
    assert len(tables) == 3
    for title in tables:
        assert FAKE_DEVICE in title and "2001-02-03" in title
    epoch, cells, totals = tables.values()
    assert any(FAKE_DEVICE in column for column in epoch.columns)
    assert epoch.loc["sasrec", "estimate off by × (measured / estimated time)"] == pytest.approx(1.0)
    recalibrated = [c for c in cells.columns if c.startswith("RECALIBRATED")][0]
    assert cells[recalibrated].tolist()[0] == pytest.approx(1.0) and math.isnan(cells[recalibrated].tolist()[1])
    assert cells[recalibrated].tolist()[2] == pytest.approx(0.5 * 1.0)   # 2 GFLOP × 5,000/s = 10 TFLOP/s
    assert totals.loc["2", "cells without a measured model"] == 1
    assert totals.loc["4", "ESTIMATE GPU hours (3 seeds)"] == 0.5


def test_calibration_refuses_an_epoch_on_other_data():
    doc = fake_doc()
    doc["parts"]["c"]["result"]["data"] = {"name": "tiny synthetic", "items": 30, "max_len": 8}
    with pytest.raises(GpuResultsError, match="Amazon Beauty's 12,101 items"):
        calibration(doc, train_gflop={"sasrec": 0.5})


def test_a_cpu_run_is_never_shown_as_a_gpu_measurement(tmp_path):
    """scripts/gpu_check.py also runs on a CPU (--device cpu): such a file is not a GPU result. It is left out of the
    files and the newest one, and the calibration refuses it by name."""
    cpu = fake_doc("2001-05-01", "2001-05-01T00:00:00+00:00")
    cpu["device"] = {"type": "cpu", "name": "x86_64", "slug": "cpu"}
    write(tmp_path, "2001-05-01-000000-cpu.json", cpu)
    assert newest_gpu_results(tmp_path) is None
    write(tmp_path, "2001-02-03-fake.json", fake_doc())
    assert newest_gpu_results(tmp_path)["date"] == "2001-02-03"     # the older CUDA run, not the newer CPU one
    assert [d["device"]["type"] for d in gpu_result_files(tmp_path)] == ["cuda"]
    assert not is_gpu_run(cpu) and is_gpu_run(fake_doc()) and not is_gpu_run(fake_doc(tiny=True))
    with pytest.raises(GpuResultsError, match="measured on 'cpu', not on a CUDA GPU"):
        calibration(load_gpu_results(tmp_path / "2001-05-01-000000-cpu.json"), train_gflop={"sasrec": 0.5})


def test_a_targeted_rerun_of_one_part_does_not_replace_the_full_run(tmp_path):
    write(tmp_path, "2001-02-03-100000-fake.json", fake_doc())
    rerun = fake_doc(started="2001-02-03T10:20:00+00:00")
    rerun["settings"] = {"parts": "b"}
    write(tmp_path, "2001-02-03-102000-fake.json", rerun)
    assert len(gpu_result_files(tmp_path)) == 2                          # both listed
    assert newest_gpu_results(tmp_path)["path"].endswith("100000-fake.json")
    (tmp_path / "2001-02-03-100000-fake.json").unlink()
    assert newest_gpu_results(tmp_path)["path"].endswith("102000-fake.json")   # the only one left
