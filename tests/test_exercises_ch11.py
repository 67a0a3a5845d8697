"""Chapter 11's check: the per-seed (paired) adaptation gain. Passes the reference and a pandas solution,
fails the usual mistakes with the specific hint."""
import numpy as np
import pytest

from ttt4rec_edu.drift_study import adaptation_gain
from ttt4rec_edu.exercises import ExerciseFailed, check_paired_gain


def reference(df):
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


def unpaired(df):
    on = df[df["adapt"] == True]["ndcg@10"]    # noqa: E712
    off = df[df["adapt"] == False]["ndcg@10"]  # noqa: E712
    return on.mean() - off.mean(), np.sqrt(on.var() + off.var())


def population_std(df):
    wide = df.pivot(index="seed", columns="adapt", values="ndcg@10")
    gain = wide[True] - wide[False]
    return gain.mean(), gain.std(ddof=0)


@pytest.mark.parametrize("solution", [reference, pivoted])
def test_correct_solutions_pass(solution, capsys):
    assert check_paired_gain(solution).passed and "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda df: tuple(-v for v in pivoted(df)[:1]) + (pivoted(df)[1],), "sign is reversed"),
    (population_std, "ddof=0"),
    (unpaired, "two unpaired groups"),
    (positional, "pair the rows by seed"),
    (lambda df: (0.0, 0.0), "mean over seeds"),
    (lambda df: 0.5, "return a pair"),
    (lambda df: 1 / 0, "ZeroDivisionError"),
])
def test_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_paired_gain(wrong)
    assert not result.passed and hint in result.message, result.message


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="two unpaired groups"):
        check_paired_gain(unpaired)
