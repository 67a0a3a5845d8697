"""Reading finished runs (ttt4rec_edu.analysis): per-sample metrics, buckets, the user bootstrap, run files."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ttt4rec_edu.analysis import (RunFilesError, epoch_costs, learning_curves, length_buckets, load_test_ranks,
                                  match_samples, metric_by_group, paired_bootstrap, per_sample_metric, sample_table,
                                  seed_mean_metric)
from ttt4rec_edu.data.protocol import SequenceData, build_splits, split_counts
from ttt4rec_edu.experiments import RunSettings, _load_cell_data, run_experiments, select, table_experiments
from ttt4rec_edu.metrics import metrics_from_ranks


def test_per_sample_metrics_by_hand_and_their_means_are_the_library_metrics():
    ranks = np.array([1, 2, 10, 11, 50, 51])
    assert per_sample_metric(ranks, "hr@10").tolist() == [1, 1, 1, 0, 0, 0]
    assert per_sample_metric(ranks, "hr@50").tolist() == [1, 1, 1, 1, 1, 0]
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0, 0.0]
    assert per_sample_metric(ranks, "ndcg@10") == pytest.approx(expected)
    library = metrics_from_ranks(torch.tensor(ranks))
    for metric, value in library.items():
        assert per_sample_metric(ranks, metric).mean() == pytest.approx(value)
    for bad in ("mrr@10", "hr10", "ndcg@0", "hr@x"):
        with pytest.raises(ValueError, match="metric must look like"):
            per_sample_metric(ranks, bad)


def test_length_buckets_labels_edges_and_errors():
    buckets = length_buckets([1, 2, 3, 4, 5, 7, 8, 50, 51, 300], edges=(1, 3, 5, 8, 51))
    assert list(buckets.categories) == ["1–2", "3–4", "5–7", "8–50", "51+"]
    assert list(buckets) == ["1–2", "1–2", "3–4", "3–4", "5–7", "5–7", "8–50", "8–50", "51+", "51+"]
    assert list(length_buckets([1, 2], edges=(1, 2))) == ["1", "2+"]
    with pytest.raises(ValueError, match="increasing"):
        length_buckets([3], edges=(1, 5, 5))
    with pytest.raises(ValueError, match="below the first edge"):
        length_buckets([0, 3], edges=(1, 5))


def test_metric_by_group_means_and_counts():
    ranks = np.array([1, 20, 3, 100])
    table = metric_by_group(ranks, ["b", "a", "b", "a"], "hr@10")
    assert table.index.tolist() == ["a", "b"]
    assert table["hr@10"].tolist() == [0.0, 1.0] and table["samples"].tolist() == [2, 2]


def test_sample_table_has_users_and_uncut_histories_in_sample_order():
    seqs = [np.arange(1, 9), np.array([3, 4, 5, 6, 7])]  # 8 and 5 items → 7 and 4 samples
    splits = build_splits(SequenceData(seqs, 10, name="hand"), max_len=3, split="3:2:5")
    table = sample_table(splits.test)
    assert len(table) == len(splits.test)
    _, lengths, targets = splits.test.batch()
    assert table["input_length"].tolist() == lengths.tolist() and table["target"].tolist() == targets.tolist()
    # the test part of each user is its last samples (RecBole rounding: 3 of user 0's 7, 2 of user 1's 4)
    assert [split_counts(7, (0.3, 0.2, 0.5))[2], split_counts(4, (0.3, 0.2, 0.5))[2]] == [3, 2]
    assert table["user"].tolist() == [0, 0, 0, 1, 1]
    assert table["history"].tolist() == [5, 6, 7, 3, 4]
    assert table["input_length"].max() == 3  # cut at max_len, while the history is not


def test_match_samples_finds_the_test_samples_two_splits_share():
    # 7, 4 and 29 samples: 3:2:5 tests the last 3, 2 and 14 (RecBole rounding), 6:2:2 the last 1, 1 and 5
    seqs = [np.arange(1, 9), np.array([3, 4, 5, 6, 7]), np.arange(1, 31)]
    data = SequenceData(seqs, 40, name="hand")
    wide = sample_table(build_splits(data, max_len=3, split="3:2:5").test)
    narrow = sample_table(build_splits(data, max_len=3, split="6:2:2").test)
    assert (len(wide), len(narrow)) == (19, 7)
    index_wide, index_narrow = match_samples(wide, narrow)
    assert index_wide.tolist() == [2, 4, 14, 15, 16, 17, 18] and index_narrow.tolist() == list(range(7))
    for column in ("user", "history", "target"):
        assert wide[column].to_numpy()[index_wide].tolist() == narrow[column].to_numpy()[index_narrow].tolist()
    # the other way round: the same pairs, in the order of the first table
    back_narrow, back_wide = match_samples(narrow, wide)
    assert back_narrow.tolist() == list(range(7)) and back_wide.tolist() == index_wide.tolist()
    # a sample that is in only one table is not matched
    only_some = narrow.drop(index=[0, 3])
    a, b = match_samples(wide, only_some)
    assert len(a) == 5 and set(wide["history"].to_numpy()[a]) == set(only_some["history"])
    assert wide["history"].to_numpy()[a].tolist() == only_some["history"].to_numpy()[b].tolist()


def test_match_samples_rejects_tables_of_different_data():
    seqs = [np.arange(1, 9), np.array([3, 4, 5, 6, 7])]
    table = sample_table(build_splits(SequenceData(seqs, 10, name="hand"), max_len=3, split="3:2:5").test)
    other = table.copy()
    other.loc[1, "target"] = 9
    with pytest.raises(ValueError, match=r"1 matched samples have different targets \(e.g. user 0, history 6: "
                                         r"item 7 vs 9\)"):
        match_samples(table, other)
    with pytest.raises(ValueError, match="table_b lists a \\(user, history\\) sample twice"):
        match_samples(table, pd.concat([table, table.iloc[:1]]))
    with pytest.raises(ValueError, match=r"table_a lacks the column\(s\) \['history'\]"):
        match_samples(table.drop(columns="history"), table)


def test_paired_bootstrap_constant_difference_and_shares():
    users = np.repeat(np.arange(5), 3)
    result = paired_bootstrap(np.full(15, 0.25), users, num_boot=200)
    row = result.loc["all"]
    assert row["mean"] == pytest.approx(0.25) and row["low"] == pytest.approx(0.25)
    assert row["high"] == pytest.approx(0.25)
    assert row["samples"] == 15 and row["users"] == 5 and row["share_better"] == 1.0 and row["share_worse"] == 0.0


def test_paired_bootstrap_resamples_users_not_samples():
    # 200 users, 20 samples each; the difference is a per-user effect (identical within a user), so the
    # uncertainty is that of a mean over 200 users (sd 1 / sqrt(200)), not over 4000 samples
    rng = np.random.default_rng(1)
    effect = rng.normal(0.0, 1.0, size=200)
    users = np.repeat(np.arange(200), 20)
    result = paired_bootstrap(effect[users], users, num_boot=2000, seed=3)
    row = result.loc["all"]
    half_width = (row["high"] - row["low"]) / 2
    expected = 1.96 * effect.std(ddof=1) / math.sqrt(200)
    assert half_width == pytest.approx(expected, rel=0.15)
    assert row["low"] < row["mean"] < row["high"] and row["mean"] == pytest.approx(effect.mean())


def test_paired_bootstrap_groups_and_errors():
    users = np.array([0, 0, 1, 1, 2, 2])
    groups = length_buckets([1, 5, 1, 5, 1, 5], edges=(1, 3))
    diff = np.array([1.0, -1.0, 1.0, -1.0, 1.0, 0.0])
    result = paired_bootstrap(diff, users, groups, num_boot=100)
    assert result.index.tolist() == ["all", "1–2", "3+"]
    assert result.loc["1–2", "mean"] == 1.0 and result.loc["3+", "mean"] == pytest.approx(-2 / 3)
    assert result.loc["3+", "share_worse"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(diff, users[:-1])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(diff, users, level=1.5)


@pytest.mark.slow
def test_curves_costs_and_ranks_of_a_tiny_reproduction(tmp_path):
    experiments = select(table_experiments("beauty"), models=["gru4rec", "ttt4rec-transformer-mlp"],
                         splits=["3:2:5"])
    settings = RunSettings(epochs=2, patience=5, batch_size=32, max_users=40, data_source="synthetic", device="cpu")
    results = run_experiments(experiments, seeds=[0, 1], out=tmp_path, settings=settings, log=lambda _: None)
    assert len(results) == 4

    curves = learning_curves(tmp_path, experiments, seeds=[0, 1, 2])  # seed 2 never ran: skipped
    assert len(curves) == 2 * 2 * 2 and set(curves["epoch"]) == {1, 2}
    assert set(curves["variant"]) == {"gru4rec", "ttt4rec-transformer-mlp"}
    assert {"loss", "valid_ndcg@10", "time_s", "samples_per_s"} <= set(curves.columns)
    costs = epoch_costs(curves).set_index("variant")
    assert costs.loc["gru4rec", "seeds"] == 2 and costs.loc["gru4rec", "epochs"] == 2
    assert (costs["s_per_epoch"] > 0).all() and (costs["train_samples_per_s"] > 0).all()

    # the saved ranks line up with the rebuilt test split and give the run's own test metrics
    data, max_len = _load_cell_data(experiments[0], settings)
    test = build_splits(data, max_len, "3:2:5").test
    for exp in experiments:
        for seed in (0, 1):
            ranks = load_test_ranks(tmp_path, exp, seed, expected_samples=len(test))
            row = results[(results["model"] == exp.model) & (results["seed"] == seed)].iloc[0]
            for metric in ("hr@10", "ndcg@50"):
                assert per_sample_metric(ranks, metric).mean() == pytest.approx(row[metric])
    assert len(sample_table(test)) == len(test)
    # the seed mean is the mean of the two runs' per-sample metrics
    per_seed = [per_sample_metric(load_test_ranks(tmp_path, experiments[1], s), "hr@50") for s in (0, 1)]
    averaged = seed_mean_metric(tmp_path, experiments[1], [0, 1], expected_samples=len(test), metric="hr@50")
    assert averaged == pytest.approx((per_seed[0] + per_seed[1]) / 2)
    with pytest.raises(RunFilesError, match="seed2"):
        seed_mean_metric(tmp_path, experiments[1], [0, 2], expected_samples=len(test))
    with pytest.raises(ValueError, match="seeds is empty"):
        seed_mean_metric(tmp_path, experiments[1], [], expected_samples=len(test))

    with pytest.raises(ValueError, match="the test split has 3 samples"):
        load_test_ranks(tmp_path, experiments[0], 0, expected_samples=3)
    with pytest.raises(RunFilesError, match="seed2.*test_ranks.npz"):
        load_test_ranks(tmp_path, experiments[0], 2)
    metrics_file = tmp_path / "runs" / experiments[0].run_key / "seed0" / "metrics.json"
    assert json.loads(metrics_file.read_text())["config"]["batch_size"] == 32


def test_sequence_data_repr_is_a_one_line_summary():
    data = SequenceData([np.arange(1, 2001), np.array([1, 2, 3])], 2000, name="big")
    assert repr(data) == "SequenceData(name='big', users=2, items=2,000, interactions=2,003)"


def test_student_t_quantiles_match_the_printed_tables():
    from ttt4rec_edu.analysis import student_t_quantile
    # two-sided 95% critical values of any statistics table
    for df, value in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)):
        assert student_t_quantile(0.975, df) == pytest.approx(value, abs=1e-3)
    assert student_t_quantile(0.95, 4) == pytest.approx(2.132, abs=1e-3)
    assert student_t_quantile(0.025, 4) == pytest.approx(-2.776, abs=1e-3)
    assert abs(student_t_quantile(0.5, 3)) < 1e-9
    for bad in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, 2.5)):
        with pytest.raises(ValueError):
            student_t_quantile(*bad)


def test_mean_interval_by_hand():
    from ttt4rec_edu.analysis import mean_interval
    mean, low, high = mean_interval([0.1, -0.1, 0.3])
    half = 4.302653 * 0.2 / math.sqrt(3)  # s = 0.2
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.1 - half, rel=1e-5)
    assert high == pytest.approx(0.1 + half, rel=1e-5)
    one = mean_interval([0.4])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])
    for bad in ([], [0.1, float("nan")]):
        with pytest.raises(ValueError, match="finite values"):
            mean_interval(bad)


def test_test_steps_count_each_users_samples_in_time_order():
    from ttt4rec_edu.analysis import test_steps
    table = pd.DataFrame({"user": [7, 3, 7, 3, 7, 9], "history": [10, 4, 11, 5, 12, 2],
                          "target": [1, 2, 3, 4, 5, 6]})
    assert test_steps(table).tolist() == [1, 1, 2, 2, 3, 1]
    shuffled = table.iloc[[4, 0, 5, 3, 2, 1]]   # any row order: the step follows history, not the row
    assert test_steps(shuffled).tolist() == [3, 1, 1, 2, 2, 1]
    with pytest.raises(ValueError, match="lacks the column"):
        test_steps(table.drop(columns="history"))
    with pytest.raises(ValueError, match="twice"):
        test_steps(pd.concat([table, table.iloc[:1]]))


def test_test_steps_on_a_real_split_start_after_the_validation_part():
    """On a protocol split, a user's step-1 test sample is the one right after their last validation sample."""
    from ttt4rec_edu.analysis import sample_table, test_steps
    sequences = [list(range(1, 12)), list(range(3, 20)), [5, 6, 7, 8, 9]]
    splits = build_splits(SequenceData(sequences, num_items=20, name="hand"), max_len=5, split="3:2:5")
    test, valid = sample_table(splits.test), sample_table(splits.valid)
    steps = test_steps(test)
    first = test[steps == 1].set_index("user")["history"]
    last_valid = valid.groupby("user")["history"].max()
    assert (first.loc[last_valid.index] == last_valid + 1).all()
    assert (pd.Series(steps).groupby(test["user"].to_numpy()).max() ==
            test.groupby("user").size()).all()


def test_paired_differences_is_paired_bootstrap_per_pair():
    from ttt4rec_edu.analysis import paired_bootstrap, paired_differences
    rng = np.random.default_rng(4)
    users = rng.integers(0, 30, size=200)
    frame = pd.DataFrame({"a": rng.random(200), "b": rng.random(200), "c": rng.random(200)})
    groups = pd.Categorical(np.where(users % 2 == 0, "even", "odd"))
    out = paired_differences(frame, {"a − b": ("a", "b"), "c − a": ("c", "a")}, users, groups, num_boot=200)
    assert list(out.index.get_level_values("difference").unique()) == ["a − b", "c − a"]
    alone = paired_bootstrap(frame["c"] - frame["a"], users, groups, num_boot=200)
    pd.testing.assert_frame_equal(out.loc["c − a"], alone, check_names=False)
    assert out.loc[("a − b", "all"), "mean"] == pytest.approx((frame["a"] - frame["b"]).mean())
    with pytest.raises(KeyError, match=r"no column\(s\) \['z'\]"):
        paired_differences(frame, {"z − a": ("z", "a")}, users)


def test_welch_interval_by_hand():
    from ttt4rec_edu.analysis import student_t_quantile, welch_interval
    a, b = [0.30, 0.34, 0.35], [0.30, 0.31, 0.32, 0.33]
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    nu = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)          # 2.98...: rounded down to 2
    assert 2 < nu < 3
    diff, low, high = welch_interval(a, b)
    half = student_t_quantile(0.975, 2) * math.sqrt(va + vb)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == (pytest.approx(diff - half), pytest.approx(diff + half))
    assert welch_interval([1, 1], [0, 0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=">= 2 finite values"):
        welch_interval([0.3], [0.2, 0.1])


def test_student_t_quantile_is_the_printed_table_and_refuses_bad_input():
    from ttt4rec_edu.analysis import mean_interval, student_t_quantile

    # two-sided 95% critical values as printed in every t table
    for df, value in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert student_t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)
    assert student_t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)   # symmetric
    assert student_t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    for p, df in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, 2.5)):
        with pytest.raises(ValueError):
            student_t_quantile(p, df)
    # the interval uses it: mean ± t · s / sqrt(n) of 1, 2, 3 (s = 1, n = 3, t = 4.303)
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert (mean, high - mean) == pytest.approx((2.0, 4.303 / math.sqrt(3)), abs=5e-4)
    assert low == pytest.approx(2 * mean - high)


def test_paired_bootstraps_is_paired_bootstrap_per_key_exactly():
    """One shared draw of the users gives each difference exactly the rows of its own bootstrap (same seed), with
    and without groups; a difference of another length is refused."""
    from ttt4rec_edu.analysis import paired_bootstrap, paired_bootstraps
    rng = np.random.default_rng(7)
    users = rng.integers(0, 40, size=300)
    groups = length_buckets(rng.integers(1, 30, size=300), edges=(1, 5, 13))
    differences = {("ndcg@10", "a − b"): rng.normal(size=300), ("hr@50", "a − b"): rng.random(300) - 0.4,
                   "third": np.where(rng.random(300) < 0.5, 1.0, 0.0)}
    for g in (None, groups):
        shared = paired_bootstraps(differences, users, g, num_boot=250, seed=11)
        assert list(shared) == list(differences)
        for key, d in differences.items():
            pd.testing.assert_frame_equal(shared[key], paired_bootstrap(d, users, g, num_boot=250, seed=11),
                                          check_exact=True)
    assert not shared["third"].equals(shared["ndcg@10", "a − b"])   # each key its own rows, not the first's
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstraps({"x": np.zeros(300), "y": np.zeros(299)}, users)
