"""Chapter 10's checks: bytes of the full logits and the decision to chunk the loss (check_logits_memory), and
mean ± sample std over seeds per cell of a results.csv (check_seed_summary). Each passes the library's own answer
and fails the usual mistakes with the specific hint."""
import numpy as np
import pytest

from ttt4rec_edu.exercises import ExerciseFailed, check_logits_memory, check_seed_summary
from ttt4rec_edu.losses import choose_chunk, logits_bytes


def reference(batch, items, budget):
    return logits_bytes(batch, items), choose_chunk(batch, items, budget)


def test_reference_passes(capsys):
    result = check_logits_memory(reference)
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
def test_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_logits_memory(wrong)
    assert not result.passed and hint in result.message, result.message


def test_strict_mode_raises(monkeypatch):
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
    # the sample std the check expects is the ddof=1 one: for 0.1, 0.2, 0.3 it is exactly 0.1
    assert np.isclose(np.std([0.1, 0.2, 0.3], ddof=1), 0.1)


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
