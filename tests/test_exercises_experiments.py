"""The checks of the book's part *Experiments* (ttt4rec_edu.exercises.experiments, chapters 9-11): each passes the
reference solutions and fails the usual mistakes with the specific hint.

- check_metric_by_length (chapter 9), the mean NDCG@k per history-length bucket: the reference solution (plain
  numpy, not the library) passes in any sequence type, a hand-computed case agrees with the library's
  length_buckets + metric_by_group that the check uses as its reference;
- check_logits_memory (chapter 10), bytes of the full logits and the decision to chunk the loss, and
  check_seed_summary, mean ± sample std over seeds per cell of a results.csv: the library's own answers pass;
- check_paired_gain (chapter 11), the per-seed (paired) adaptation gain: the reference and a pandas solution pass;
- check_arm_interval (chapter 11), adapt − fixed W0 paired by seed with a 95% Student-t interval of the mean: the
  library's reference and two hand-written solutions (float64 and float32 data) pass;
- check_repeat_crossover (chapter 11), the smallest repeat rate at which TTT4Rec − fixed W0 has a paired 95% t
  interval above 0 (or None): the library's paired_differences passes, and each usual mistake gets its hint.
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ttt4rec_edu.analysis import length_buckets, metric_by_group, student_t_quantile
from ttt4rec_edu.drift_study import adaptation_gain, arm_differences
from ttt4rec_edu.exercises import (ExerciseFailed, check_arm_interval, check_logits_memory, check_metric_by_length,
                                   check_paired_gain, check_repeat_crossover, check_seed_summary)
from ttt4rec_edu.exercises.experiments import _LENGTH_CASES, _length_case
from ttt4rec_edu.losses import choose_chunk, logits_bytes


# ==== chapter 9: check_metric_by_length ===========================================================================

def _gain(ranks, k, discount=lambda r: np.log2(r + 1.0), cut=lambda r, k: r <= k):
    r = np.asarray(ranks, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(cut(r, k), 1.0 / discount(r), 0.0)


def _codes(history, edges):
    return np.searchsorted(np.asarray(edges), history, side="right") - 1


def length_reference(ranks, history, edges, k):
    """The exercise's solution: per-sample NDCG@k, then the mean within each bucket [e_i, e_{i+1}) and [e_-1, ∞)."""
    gain = _gain(ranks, k)
    codes = _codes(history, edges)
    return [float(gain[codes == b].mean()) for b in range(len(edges))]


def test_reference_passes_and_prints_a_tick(capsys, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_metric_by_length(length_reference)
    out = capsys.readouterr().out
    assert result.passed and out.startswith("✓ check_metric_by_length"), out
    assert "2 cases" in result.message and "12 buckets" in result.message


@pytest.mark.parametrize("container", [tuple, np.asarray, pd.Series, torch.tensor])
def test_any_one_dimensional_sequence_is_accepted(container, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    assert check_metric_by_length(lambda r, h, e, k: container(length_reference(r, h, e, k))).passed


def test_library_reference_column_passes(monkeypatch):
    # the library's own answer, as a reader using ttt4rec_edu.analysis would return it (a pandas Series)
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    assert check_metric_by_length(
        lambda r, h, e, k: metric_by_group(r, length_buckets(h, e), f"ndcg@{k}")[f"ndcg@{k}"]).passed


def test_hand_computed_case_matches_the_library():
    ranks, history, edges, k = np.array([1, 3, 11, 2]), np.array([1, 2, 5, 60]), (1, 3, 51), 10
    # [1, 3): histories 1 and 2 → ranks 1 and 3 → (1/log2(2) + 1/log2(4)) / 2 = (1 + 0.5) / 2
    # [3, 51): history 5 → rank 11 > k → 0;   [51, ∞): history 60 → rank 2 → 1/log2(3)
    by_hand = [(1 / math.log2(2) + 1 / math.log2(4)) / 2, 0.0, 1 / math.log2(3)]
    assert by_hand[0] == 0.75
    groups = length_buckets(history, edges)
    assert list(groups.categories) == ["1–2", "3–50", "51+"]
    table = metric_by_group(ranks, groups, "ndcg@10")
    assert np.allclose(table["ndcg@10"].to_numpy(), by_hand, atol=1e-12, rtol=0)
    assert table["samples"].tolist() == [2, 1, 1]
    assert np.allclose(length_reference(ranks, history, edges, k), by_hand, atol=1e-12, rtol=0)


def test_cases_have_every_bucket_filled_and_edges_as_histories():
    for seed, k, edges in _LENGTH_CASES:
        ranks, history = _length_case(seed, k, edges)
        assert len(ranks) == 400 and ranks.min() >= 1 and ranks.max() <= 200 and history.min() >= 1
        assert (np.bincount(_codes(history, edges), minlength=len(edges)) > 0).all()
        assert set(edges) <= set(history.tolist()) and (ranks == 1).any()


def _closed_lower(ranks, history, edges, k):          # history == edge goes to the bucket below
    gain = _gain(ranks, k)
    codes = np.maximum(np.searchsorted(np.asarray(edges), history, side="left") - 1, 0)
    return [float(gain[codes == b].mean()) for b in range(len(edges))]


def _closed_masks(ranks, history, edges, k):          # (a <= h) & (h <= b): an edge's samples counted twice
    gain = _gain(ranks, k)
    bounds = list(zip(edges[:-1], edges[1:])) + [(edges[-1], np.inf)]
    return [float(gain[(history >= a) & (history <= b)].mean()) for a, b in bounds]


def _per_bucket(gain_fn):
    def fn(ranks, history, edges, k):
        gain, codes = gain_fn(ranks, k), _codes(history, edges)
        return [float(gain[codes == b].mean()) for b in range(len(edges))]
    return fn


def _raise(ranks, history, edges, k):
    raise KeyError("bucket")


@pytest.mark.parametrize("wrong, hint", [
    (_per_bucket(lambda r, k: _gain(r, k, discount=np.log2)), "not log2(rank)"),
    (_per_bucket(lambda r, k: (np.asarray(r) <= k).astype(float)), "that is HR@k"),
    (_closed_lower, "half-open"),
    (_closed_masks, "history < b, not history <= b"),
    (lambda r, h, e, k: length_reference(r, h, e, k)[:-1], "the last bucket is open"),
    (_per_bucket(lambda r, k: _gain(r, k, discount=lambda x: np.log2(x + 2.0))), "1-based"),
    (_per_bucket(lambda r, k: _gain(r, k, discount=lambda x: np.log2(x + 2.0), cut=lambda x, k: x < k)),
     "1-based"),
    (lambda r, h, e, k: float(_gain(r, k).mean()), "expected 7 values"),
    (lambda r, h, e, k: [float(_gain(r, k).mean())] * len(e), "mean over all samples"),
    (lambda r, h, e, k: length_reference(r, h, e, k) + [0.0], "expected 7 values"),
    (_raise, "raised KeyError"),
    (lambda r, h, e, k: np.asarray(length_reference(r, h, e, k)) * np.r_[1.0, 1.0, 1.0, 1.1, 1.0, 1.0, 1.0][:len(e)],
     "first bucket that differs is '8–12'"),
])
def test_metric_by_length_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch, capsys):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_metric_by_length(wrong)
    assert not result.passed and hint in result.message, result.message
    assert capsys.readouterr().out.startswith("✗ check_metric_by_length")


def test_log2_rank_gives_inf_and_is_recognised(monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    bad = _per_bucket(lambda r, k: _gain(r, k, discount=np.log2))
    assert not np.isfinite(bad(*_length_case(90, 10, (1, 3, 5, 8, 13, 21, 51)), (1, 3, 5, 8, 13, 21, 51),
                               10)).all()
    result = check_metric_by_length(bad)
    assert "not finite" in result.message and "divides by zero" in result.message, result.message


def test_metric_by_length_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="that is HR@k"):
        check_metric_by_length(_per_bucket(lambda r, k: (np.asarray(r) <= k).astype(float)))
    assert check_metric_by_length(length_reference).passed   # a right answer goes through in strict mode


def test_float32_answer_gets_float32_tolerance_but_not_more(monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    as_float32 = lambda r, h, e, k: torch.tensor(length_reference(r, h, e, k), dtype=torch.float32)
    assert check_metric_by_length(as_float32).passed
    off = lambda r, h, e, k: np.asarray(length_reference(r, h, e, k)) + 1e-7  # float64 and 1e-7 off: too far
    result = check_metric_by_length(off)
    assert not result.passed and "largest difference is 1e-07" in result.message, result.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda r, h, e, k: [], "got 0"),
    (lambda r, h, e, k: np.zeros((len(e), 2)), "got an array of shape"),
    (lambda r, h, e, k: metric_by_group(r, length_buckets(h, e), f"ndcg@{k}"), "'ndcg@10' column"),
    (lambda r, h, e, k: "high", "one per bucket"),
])
def test_wrong_shapes_and_types_are_explained(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_metric_by_length(wrong)
    assert not result.passed and hint in result.message, result.message


# ==== chapter 10: check_logits_memory, check_seed_summary =========================================================

def logits_reference(batch, items, budget):
    return logits_bytes(batch, items), choose_chunk(batch, items, budget)


def test_logits_memory_reference_passes(capsys):
    result = check_logits_memory(logits_reference)
    assert result.passed and "✓" in capsys.readouterr().out


def test_hand_computed_values_behind_the_check():
    # Gowalla at the paper's batch: 2048 × 1,280,970 × 4 bytes ≈ 9.8 GiB for ONE logits matrix
    assert logits_bytes(2048, 1280969) == 2048 * 1280970 * 4 == 10_493_706_240
    assert choose_chunk(2048, 1280969, 1 << 30) == (1 << 30) // (12 * 2048) == 43690
    assert choose_chunk(2048, 12101, 1 << 30) is None             # Amazon Beauty: plain loss fits
    assert choose_chunk(2048, 10 ** 6, 1 << 20) == 1024           # the floor of 1024 items per chunk


def _chunk(batch, items, budget):
    return choose_chunk(batch, items, budget)


@pytest.mark.parametrize("wrong, hint", [
    (lambda b, n, g: (b * n * 4, _chunk(b, n, g)), "column 0 is the padding id"),
    (lambda b, n, g: (b * (n + 1) * 8, _chunk(b, n, g)), "4 bytes per value"),
    (lambda b, n, g: (b * (n + 1), _chunk(b, n, g)), "multiply by 4 bytes"),
    (lambda b, n, g: (3 * logits_bytes(b, n), _chunk(b, n, g)), "size of ONE"),
    (lambda b, n, g: (logits_bytes(b, n), None if logits_bytes(b, n) <= g else 4096), "about three of them"),
    (lambda b, n, g: (logits_bytes(b, n), 4096), "the plain loss fits here"),
    (lambda b, n, g: (logits_bytes(b, n), None if 3 * logits_bytes(b, n) <= g else g // (4 * b)),
     "3 × 4 bytes per (sample, item)"),
    (lambda b, n, g: (logits_bytes(b, n), None if 3 * logits_bytes(b, n) <= g else g // (12 * b)),
     "never goes below 1024"),
    (lambda b, n, g: logits_bytes(b, n), "return a pair"),
    (lambda b, n, g: 1 / 0, "ZeroDivisionError"),
])
def test_logits_memory_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_logits_memory(wrong)
    assert not result.passed and hint in result.message, result.message


def test_logits_memory_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="padding id"):
        check_logits_memory(lambda b, n, g: (b * n * 4, choose_chunk(b, n, g)))


# --------------------------------------------------------------------- check_seed_summary (results.csv → mean ± std)

KEYS = ["dataset", "split", "model", "backbone", "inner"]
METRICS = ["hr@10", "hr@50", "ndcg@10", "ndcg@50"]


def seed_reference(runs):
    runs = runs.copy()
    runs[["backbone", "inner"]] = runs[["backbone", "inner"]].fillna("")
    out = runs.groupby(KEYS)[METRICS].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    return out


def test_seed_summary_reference_and_multiindex_columns_pass(capsys):
    assert check_seed_summary(seed_reference).passed
    multi = lambda runs: runs.fillna({"backbone": "", "inner": ""}).groupby(KEYS)[METRICS].agg(["mean", "std"])
    assert check_seed_summary(multi).passed                      # (metric, stat) columns are accepted
    assert "✓" in capsys.readouterr().out


def test_seed_summary_hand_computed_std():
    # the check's reference (experiments.summarize) takes the sample std, ddof 1: for one cell whose three seeds
    # scored 0.1, 0.2, 0.3 it is exactly 0.1 (the population std, 0.0816, is what the check rejects)
    from ttt4rec_edu.experiments import summarize

    runs = pd.DataFrame({"table": "beauty", "dataset": "amazon-beauty", "split": "3:2:5", "model": "sasrec",
                         "backbone": "", "inner": "", "adapt_at_test": True, "seed": [0, 1, 2],
                         **{m: [0.1, 0.2, 0.3] for m in METRICS}})
    row = summarize(runs).iloc[0]
    for m in METRICS:
        assert (row[f"{m}_mean"], row[f"{m}_std"]) == pytest.approx((0.2, 0.1))
    assert row["seeds"] == 3


def _ddof0(runs):
    runs = runs.fillna({"backbone": "", "inner": ""})
    grouped = runs.groupby(KEYS)[METRICS]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std"))
    return out


def _zero_std_for_one_seed(runs):
    out = seed_reference(runs)
    return out.fillna(0.0)


@pytest.mark.parametrize("wrong, hint", [
    (lambda runs: seed_reference(runs.dropna(subset=["backbone"])), "groupby drops NaN keys"),
    (lambda runs: runs.groupby(KEYS)[METRICS].agg(["mean", "std"]), "groupby drops NaN keys"),
    (_ddof0, "population std"),
    (_zero_std_for_one_seed, "one seed has no sample standard deviation"),
    (lambda runs: seed_reference(runs.assign(backbone=runs["backbone"].where(runs["model"] != "ttt4rec", "x"),
                                             inner=runs["inner"].where(runs["model"] != "ttt4rec", "y"))),
     "cells returned, expected"),
    (lambda runs: seed_reference(runs).drop(columns=["ndcg@50_std"]), "'ndcg@50_std'"),
    (lambda runs: runs.fillna({"backbone": "", "inner": ""}).groupby(KEYS + ["seed"])[METRICS].mean()
     .add_suffix("_mean").join(runs.fillna({"backbone": "", "inner": ""}).groupby(KEYS + ["seed"])[METRICS]
                               .std().add_suffix("_std")), "not by seed"),
    (lambda runs: runs[METRICS].mean(), "return a pandas DataFrame"),
    (lambda runs: 1 / 0, "ZeroDivisionError"),
])
def test_seed_summary_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_seed_summary(wrong)
    assert not result.passed and hint in result.message, result.message


def test_seed_summary_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="population std"):
        check_seed_summary(_ddof0)


# ==== chapter 11: check_paired_gain ===============================================================================

def gain_reference(df):
    g = adaptation_gain(df.assign(model="ttt4rec", key=0), "key").iloc[0]
    return g["gain mean"], g["gain std"]


def pivoted(df):
    wide = df.pivot(index="seed", columns="adapt", values="ndcg@10")
    gain = wide[True] - wide[False]
    return gain.mean(), gain.std()


def positional(df):
    on = df[df["adapt"] == True]["ndcg@10"].to_numpy()    # noqa: E712
    off = df[df["adapt"] == False]["ndcg@10"].to_numpy()  # noqa: E712
    return (on - off).mean(), (on - off).std(ddof=1)


def gain_unpaired(df):
    on = df[df["adapt"] == True]["ndcg@10"]    # noqa: E712
    off = df[df["adapt"] == False]["ndcg@10"]  # noqa: E712
    return on.mean() - off.mean(), np.sqrt(on.var() + off.var())


def gain_population_std(df):
    wide = df.pivot(index="seed", columns="adapt", values="ndcg@10")
    gain = wide[True] - wide[False]
    return gain.mean(), gain.std(ddof=0)


@pytest.mark.parametrize("solution", [gain_reference, pivoted])
def test_paired_gain_correct_solutions_pass(solution, capsys):
    assert check_paired_gain(solution).passed and "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda df: tuple(-v for v in pivoted(df)[:1]) + (pivoted(df)[1],), "sign is reversed"),
    (gain_population_std, "ddof=0"),
    (gain_unpaired, "two unpaired groups"),
    (positional, "pair the rows by seed"),
    (lambda df: (0.0, 0.0), "mean over seeds"),
    (lambda df: 0.5, "return a pair"),
    (lambda df: 1 / 0, "ZeroDivisionError"),
])
def test_paired_gain_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_paired_gain(wrong)
    assert not result.passed and hint in result.message, result.message


def test_paired_gain_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="two unpaired groups"):
        check_paired_gain(gain_unpaired)


# ==== chapter 11: check_arm_interval ==============================================================================

def arms_reference(df):
    row = arm_differences(df.assign(key=0), "key").loc[(0, "adapt − fixed W0")]
    return row["mean"], row["low"], row["high"]


def _paired(df):
    wide = df.pivot(index="seed", columns="variant", values="ndcg@10")
    return wide["TTT4Rec"] - wide["TTT4Rec, fixed W0"]


def by_hand(df):
    d = _paired(df)
    half = student_t_quantile(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def by_hand_float32(df):
    """The same formula on float32 scores (a student's tensors): equal up to float32 rounding."""
    d = _paired(df.astype({"ndcg@10": np.float32}))
    half = np.float32(student_t_quantile(0.975, len(d) - 1)) * d.std(ddof=1) / np.float32(math.sqrt(len(d)))
    return d.mean(), d.mean() - half, d.mean() + half


def with_normal_quantile(df):
    d = _paired(df)
    half = 1.959964 * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def without_sqrt_n(df):
    d = _paired(df)
    half = student_t_quantile(0.975, len(d) - 1) * d.std(ddof=1)
    return d.mean(), d.mean() - half, d.mean() + half


def arms_population_std(df):
    d = _paired(df)
    half = student_t_quantile(0.975, len(d) - 1) * d.std(ddof=0) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def arms_unpaired(df):
    a = df[df["variant"] == "TTT4Rec"]["ndcg@10"]
    b = df[df["variant"] == "TTT4Rec, fixed W0"]["ndcg@10"]
    half = student_t_quantile(0.975, len(a) - 1) * math.sqrt(a.var() + b.var()) / math.sqrt(len(a))
    return a.mean() - b.mean(), a.mean() - b.mean() - half, a.mean() - b.mean() + half


def against_eta0(df):
    wide = df.pivot(index="seed", columns="variant", values="ndcg@10")
    d = wide["TTT4Rec"] - wide["TTT4Rec, η=0 at test"]
    return d.mean(), d.mean() - 0.01, d.mean() + 0.01


def reversed_sign(df):
    mean, low, high = by_hand(df)
    return -mean, -high, -low


@pytest.mark.parametrize("solution", [arms_reference, by_hand, by_hand_float32])
def test_arm_interval_correct_solutions_pass(solution, capsys):
    assert check_arm_interval(solution).passed and "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (reversed_sign, "sign is reversed"),
    (against_eta0, "η = 0-at-test arm"),
    (with_normal_quantile, "normal 1.96"),
    (without_sqrt_n, "standard error"),
    (arms_population_std, "ddof=0"),
    (arms_unpaired, "two unpaired groups"),
    (lambda df: (0.0, -1.0, 1.0), "mean over seeds"),
    (lambda df: (0.1, 0.2), "return a triple"),
    (lambda df: 1 / 0, "ZeroDivisionError"),
])
def test_arm_interval_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_arm_interval(wrong)
    assert not result.passed and hint in result.message, result.message


# ==== chapter 11: check_repeat_crossover ==========================================================================

def crossover_reference(df):
    from ttt4rec_edu.history_study import paired_differences
    table = paired_differences(df, [("TTT4Rec", "TTT4Rec, fixed W0")], by=["repeat"]).reset_index()
    above = table[table["low"] > 0]["repeat"]
    return float(above.min()) if len(above) else None


def crossover_unpaired(df):
    for rho, part in sorted(df.groupby("repeat"), key=lambda x: x[0]):
        a = part[part["arm"] == "TTT4Rec"]["ndcg@10"]
        b = part[part["arm"] == "TTT4Rec, fixed W0"]["ndcg@10"]
        half = student_t_quantile(0.975, len(a) - 1) * math.sqrt(a.var() + b.var()) / math.sqrt(len(a))
        if a.mean() - b.mean() - half > 0:
            return float(rho)
    return None


def test_repeat_crossover_reference_passes(capsys):
    assert check_repeat_crossover(crossover_reference).passed and "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (crossover_unpaired, "pair the two arms by seed"),
    (lambda df: 0.6, "return None"),
    (lambda df: "0.6?", "return a repeat rate or None"),
    (lambda df: 1 / 0, "ZeroDivisionError"),
])
def test_repeat_crossover_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_repeat_crossover(wrong)
    assert not result.passed and hint in result.message, result.message
