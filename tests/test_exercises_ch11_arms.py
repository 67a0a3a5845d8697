"""Chapter 11's three-arm check: adapt − fixed W0 paired by seed, with a 95% Student-t interval of the mean.
Passes the library's reference and two hand-written solutions (float64 and float32 data), fails the usual
mistakes each with a hint that names it."""
import math

import numpy as np
import pytest

from ttt4rec_edu.analysis import student_t_quantile
from ttt4rec_edu.drift_study import arm_differences
from ttt4rec_edu.exercises import check_arm_interval


def reference(df):
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


def population_std(df):
    d = _paired(df)
    half = student_t_quantile(0.975, len(d) - 1) * d.std(ddof=0) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def unpaired(df):
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


@pytest.mark.parametrize("solution", [reference, by_hand, by_hand_float32])
def test_correct_solutions_pass(solution, capsys):
    assert check_arm_interval(solution).passed and "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (reversed_sign, "sign is reversed"),
    (against_eta0, "η = 0-at-test arm"),
    (with_normal_quantile, "normal 1.96"),
    (without_sqrt_n, "standard error"),
    (population_std, "ddof=0"),
    (unpaired, "two unpaired groups"),
    (lambda df: (0.0, -1.0, 1.0), "mean over seeds"),
    (lambda df: (0.1, 0.2), "return a triple"),
    (lambda df: 1 / 0, "ZeroDivisionError"),
])
def test_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_arm_interval(wrong)
    assert not result.passed and hint in result.message, result.message
