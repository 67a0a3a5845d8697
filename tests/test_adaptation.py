"""The adaptation comparison (``ttt4rec_edu.adaptation``) on run folders whose ranks are known: the differences
are the per-sample ones, the seed intervals use the right pairing, and one seed gives no interval."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from ttt4rec_edu import analysis
from ttt4rec_edu.adaptation import (ARM_NAMES, PAIRS, arm_differences, arm_experiments, finished_seeds,
                                    is_derived, seed_differences, verdict)
from ttt4rec_edu.adaptation import (comparison_arms, comparison_table, main, reading, seed_differences_by_group,
                                    versus_arms)
from ttt4rec_edu.experiments import METRICS, run_dir
from ttt4rec_edu.runner import RECORD_NAME
from ttt4rec_edu.train import METRICS_NAME, RANKS_NAME


def _write_run(out, experiment, seed, ranks, derived=False):
    folder = run_dir(out, experiment, seed)
    folder.mkdir(parents=True)
    ranks = np.asarray(ranks, dtype=np.int32)
    np.savez(folder / RANKS_NAME, ranks=ranks)
    test = {m: float(analysis.per_sample_metric(ranks, m).mean()) for m in METRICS}
    metrics = {"test": test, "valid": test, "config": {}, "epochs": 4, "best_epoch": 2}
    if derived:
        metrics["derived_from"] = {"best_epoch": 3}
    (folder / METRICS_NAME).write_text(json.dumps(metrics))
    (folder / RECORD_NAME).write_text(json.dumps({"seed": seed}))


def test_the_three_arms_of_the_beauty_table():
    arms = arm_experiments("3:2:5")
    assert list(arms) == list(ARM_NAMES)
    assert arms["adapting"].adapt and arms["adapting"].adapt_at_test
    assert not arms["fixed W0"].adapt
    assert arms["η = 0 at test"].adapt and not arms["η = 0 at test"].adapt_at_test
    with pytest.raises(ValueError, match="no"):
        arm_experiments("3:2:5", table="2")   # the paper's Table 2 has no control arms


def test_differences_are_the_per_sample_ones_and_arms_without_runs_are_left_out(tmp_path):
    arms = arm_experiments("3:2:5")
    rng = np.random.default_rng(0)
    n = 60
    samples = pd.DataFrame({"user": np.repeat(np.arange(20), 3), "history": np.tile([1, 2, 3], 20)})
    ranks = {name: [rng.integers(1, 80, n) for _ in range(2)] for name in ("adapting", "fixed W0")}
    for name, per_seed in ranks.items():
        for s, r in enumerate(per_seed):
            _write_run(tmp_path, arms[name], s, r)
    seeds = {name: finished_seeds(tmp_path, arms[name]) for name in ARM_NAMES}
    assert seeds == {"adapting": [0, 1], "fixed W0": [0, 1], "η = 0 at test": []}
    groups = {"earlier items": analysis.length_buckets(samples["history"], edges=(1, 2, 3))}
    table = arm_differences(tmp_path, arms, seeds, samples, groups, metrics=["ndcg@10", "hr@50"], num_boot=200)
    assert set(table["difference"]) == {"adapt − fixed W0"}   # no η = 0 runs: that pair is left out
    for metric in ("ndcg@10", "hr@50"):
        mean = {name: np.mean([analysis.per_sample_metric(r, metric) for r in per_seed], axis=0)
                for name, per_seed in ranks.items()}
        expected = mean["adapting"] - mean["fixed W0"]
        row = table[(table["metric"] == metric) & (table["group"] == "all")].iloc[0]
        assert row["mean"] == pytest.approx(expected.mean(), abs=1e-12)
        assert row["low"] <= row["mean"] <= row["high"] and row["users"] == 20
        first = table[(table["metric"] == metric) & (table["group"] == "1")].iloc[0]
        assert first["mean"] == pytest.approx(expected[samples["history"].to_numpy() == 1].mean(), abs=1e-12)


def test_seed_intervals_pair_a_derived_arm_and_say_when_there_is_none(tmp_path):
    arms = arm_experiments("3:2:5")
    _write_run(tmp_path, arms["η = 0 at test"], 0, [1, 2], derived=True)
    _write_run(tmp_path, arms["fixed W0"], 0, [1, 2])
    assert is_derived(tmp_path, arms["η = 0 at test"], 0) and not is_derived(tmp_path, arms["fixed W0"], 0)
    results = pd.DataFrame({"arm": ["adapting"] * 3 + ["fixed W0"] * 3 + ["η = 0 at test"] * 3,
                            "seed": [0, 1, 2] * 3,
                            "ndcg@10": [0.30, 0.32, 0.34, 0.29, 0.30, 0.31, 0.20, 0.23, 0.24]})
    table = seed_differences(results, {"η = 0 at test": True}, metrics=["ndcg@10"]).set_index("difference")
    welch = table.loc["adapt − fixed W0"]
    assert welch["method"] == "Welch"
    assert (welch["mean"], welch["low"], welch["high"]) == pytest.approx(
        analysis.welch_interval([0.30, 0.32, 0.34], [0.29, 0.30, 0.31]))
    paired = table.loc["adapt − η = 0 at test"]
    assert paired["method"] == "paired by seed"   # seed k's η = 0 arm is seed k's weights
    assert (paired["mean"], paired["low"], paired["high"]) == pytest.approx(
        analysis.mean_interval([0.10, 0.09, 0.10]))
    one = seed_differences(results[results["seed"] == 0], {"η = 0 at test": True}, metrics=["ndcg@10"])
    assert one["low"].isna().all() and set(one["method"]) == {"one seed: no interval"}
    assert one.set_index("difference").loc["adapt − fixed W0", "mean"] == pytest.approx(0.01)
    assert set(PAIRS) == set(table.index)


@pytest.mark.parametrize("low, high, words", [(0.001, 0.002, "better"), (-0.002, -0.001, "worse"),
                                              (-0.001, 0.002, "cannot tell"), (math.nan, math.nan, "no interval"),
                                              (0.0, 0.001, "cannot tell")])
def test_verdict_says_only_what_the_interval_says(low, high, words):
    assert verdict(low, high) == words


def test_the_comparison_table_reads_the_folder_and_says_what_it_lacks(tmp_path, capsys):
    arms = arm_experiments("3:2:5")
    samples = pd.DataFrame({"user": [0, 0, 1, 2], "history": [1, 2, 1, 1]})
    for s, (a, f) in enumerate([([1, 3, 20, 2], [2, 3, 30, 5]), ([1, 2, 11, 4], [1, 9, 12, 4])]):
        _write_run(tmp_path, arms["adapting"], s, a)
        _write_run(tmp_path, arms["fixed W0"], s, f)
    table = comparison_table(tmp_path, samples=samples, num_boot=50).set_index(["difference", "metric"])
    assert len(table) == 2 * len(METRICS)
    row = table.loc["adapt − fixed W0", "NDCG@10"]
    assert row["seeds"] == "2/2" and row["method"] == "Welch"
    assert row["seeds: adapting is"] in {"better", "worse", "cannot tell"}
    none = table.loc["adapt − η = 0 at test", "HR@10"]   # no η = 0 runs: nothing is made up
    assert (none["users resampled (95%)"], none["users: adapting is"]) == ("—", "no runs")
    assert main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_the_reading_says_each_verdict_of_the_table_and_nothing_else():
    rows = []
    for metric, users, seeds in [("HR@10", "worse", "cannot tell"), ("HR@50", "better", "better"),
                                 ("NDCG@10", "worse", "worse"), ("NDCG@50", "cannot tell", "cannot tell")]:
        rows.append({"difference": "adapt − fixed W0", "metric": metric, "users: adapting is": users,
                     "seeds": "3/3", "method": "Welch", "seeds: adapting is": seeds})
        rows.append({"difference": "adapt − η = 0 at test", "metric": metric, "users: adapting is": "no runs",
                     "seeds": "0/0", "method": "no runs", "seeds: adapting is": "no interval"})
    assert reading(pd.DataFrame(rows)) == [
        "adapt − fixed W0, users resampled: adapting is better on HR@50; adapting is worse on HR@10, NDCG@10; "
        "cannot tell on NDCG@50.",
        "adapt − fixed W0, over seeds (3/3, Welch): adapting is better on HR@50; adapting is worse on NDCG@10; "
        "cannot tell on HR@10, NDCG@50.",
        "adapt − η = 0 at test, users resampled: no runs for HR@10, HR@50, NDCG@10, NDCG@50.",
        "adapt − η = 0 at test, over seeds (0/0): no interval (under two seeds) on HR@10, HR@50, NDCG@10, "
        "NDCG@50."]


def test_seed_intervals_by_group_are_each_groups_own_over_the_seeds(tmp_path):
    """Within a group every run's metric is its mean over the group's samples; the pairing is the overall one."""
    arms = arm_experiments("3:2:5")
    samples = pd.DataFrame({"user": [0, 1, 2, 3], "history": [1, 1, 5, 5]})
    ranks = {"adapting": [[1, 3, 20, 2], [1, 2, 11, 4], [2, 2, 9, 1]],
             "fixed W0": [[2, 3, 30, 5], [1, 9, 12, 4], [3, 1, 15, 2]],
             "η = 0 at test": [[5, 6, 40, 9], [4, 4, 30, 8], [6, 2, 25, 3]]}
    for name, per_seed in ranks.items():
        for s, r in enumerate(per_seed):
            _write_run(tmp_path, arms[name], s, r, derived=name == "η = 0 at test")
    seeds = {name: [0, 1, 2] for name in ARM_NAMES}
    groups = {"earlier items": analysis.length_buckets(samples["history"], edges=(1, 2))}
    table = seed_differences_by_group(tmp_path, arms, seeds, {"η = 0 at test": True}, samples, groups,
                                      metrics=["ndcg@10"]).set_index(["difference", "group"])
    assert set(table.index.get_level_values("group")) == {"1", "2+"}
    for group, rows in (("1", [0, 1]), ("2+", [2, 3])):
        value = {name: [analysis.per_sample_metric(np.array(r), "ndcg@10")[rows].mean() for r in per_seed]
                 for name, per_seed in ranks.items()}
        welch = table.loc[("adapt − fixed W0", group)]
        assert welch["method"] == "Welch" and (welch["mean"], welch["low"], welch["high"]) == pytest.approx(
            analysis.welch_interval(value["adapting"], value["fixed W0"]))
        paired = table.loc[("adapt − η = 0 at test", group)]
        assert paired["method"] == "paired by seed" and (paired["mean"], paired["low"]) == pytest.approx(
            analysis.mean_interval(np.subtract(value["adapting"], value["η = 0 at test"]))[:2])
    # a test split of another size is refused, not misaligned
    with pytest.raises(ValueError, match="holds 4 ranks but the test split has 3 samples"):
        seed_differences_by_group(tmp_path, arms, seeds, {}, samples.iloc[:3], {"x": [0, 0, 1]})


def test_versus_a_baseline_compares_ttt4rec_and_its_control_with_that_model(tmp_path, capsys):
    """``versus_arms`` / ``comparison_arms`` + ``comparison_table(versus=)``: the same two intervals for other
    pairs; the verdict columns and the reading name the table's subject, and the differences are those of the
    runs."""
    arms, pairs = versus_arms("3:2:5", "sasrec")
    assert list(arms) == ["TTT4Rec", "fixed W0", "SASRec"]
    assert arms["TTT4Rec"] == arm_experiments("3:2:5")["adapting"] and arms["SASRec"].model == "sasrec"
    assert pairs == {"TTT4Rec − SASRec": ("TTT4Rec", "SASRec"), "fixed W0 − SASRec": ("fixed W0", "SASRec")}
    samples = pd.DataFrame({"user": [0, 0, 1, 2], "history": [1, 2, 1, 1]})
    ranks = {"TTT4Rec": [[1, 3, 20, 2], [1, 2, 11, 4]], "SASRec": [[2, 3, 30, 5], [1, 9, 12, 4], [4, 4, 4, 4]]}
    for name, per_seed in ranks.items():
        for s, r in enumerate(per_seed):
            _write_run(tmp_path, arms[name], s, r)
    assert comparison_arms("3:2:5", "sasrec") == (arms, pairs, "the first")
    assert comparison_arms("3:2:5") == (arm_experiments("3:2:5"), PAIRS, "adapting")
    table = comparison_table(tmp_path, samples=samples, num_boot=50, versus="sasrec").set_index(
        ["difference", "metric"])
    row = table.loc["TTT4Rec − SASRec", "NDCG@10"]
    assert row["seeds"] == "2/3" and row["method"] == "Welch"
    value = {name: [analysis.per_sample_metric(np.array(r), "ndcg@10").mean() for r in per_seed]
             for name, per_seed in ranks.items()}
    expected = analysis.welch_interval(value["TTT4Rec"], value["SASRec"])
    assert row["over seeds (95%)"] == "{:+.4f} [{:+.4f}, {:+.4f}]".format(*expected)
    assert row["seeds: the first is"] == verdict(*expected[1:])
    assert table.loc["fixed W0 − SASRec", "HR@10"]["users: the first is"] == "no runs"
    words = reading(table.reset_index())
    assert words[0].startswith("TTT4Rec − SASRec, users resampled: ") and "adapting" not in " ".join(words)
    assert words[-2] == "fixed W0 − SASRec, users resampled: no runs for HR@10, HR@50, NDCG@10, NDCG@50."
    with pytest.raises(ValueError, match="no experiment matches"):
        versus_arms("3:2:5", "no-such-model")
    assert main([str(tmp_path), "--versus", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
