"""Chapter 11's experiment grid: rows and columns of run_grid, the η = 0 ablation on the same weights,
summarize's statistics on a hand-made frame, the paired adaptation gain, and the error-bar plot."""
import math

import matplotlib

matplotlib.use("Agg")
import pandas as pd
import pytest
import torch

from ttt4rec_edu.analysis import student_t_quantile
from ttt4rec_edu.drift_study import (StudyConfig, adaptation_gain, arm_differences, plot_errorbars, run_grid,
                                     summarize)

TINY = StudyConfig(num_users=40, num_items=30, num_topics=3, min_len=10, max_len=16, context=16,
                   hidden_size=16, num_heads=2, ffn_size=32, mini_batch_size=4, epochs=2, lr=1e-2,
                   batch_size=64, patience=2)


@pytest.fixture(scope="module")
def grid():
    torch.set_num_threads(1)
    cache = {}
    df = run_grid([{"drift": 0.0}, {"drift": 0.3}], seeds=[0, 1], base=TINY, cache=cache, device="cpu")
    return df, cache


def test_run_grid_rows_and_columns(grid):
    df, cache = grid
    # 2 settings x 2 seeds x (TTT4Rec on, TTT4Rec η = 0 at test, TTT4Rec fixed W0, SASRec, pop)
    assert len(df) == 2 * 2 * 5
    for column in ("drift", "seed", "model", "adapt", "variant", "hr@10", "ndcg@10", "train_loss", "tau_b"):
        assert column in df.columns
    assert sorted(df["variant"].unique()) == sorted(["TTT4Rec", "TTT4Rec, η=0 at test", "TTT4Rec, fixed W0",
                                                     "SASRec", "pop"])
    assert df[["hr@10", "ndcg@10"]].apply(lambda s: s.between(0, 1)).all().all()
    assert (df["ndcg@10"] <= df["hr@10"] + 1e-12).all()          # NDCG@K <= HR@K for a single target
    assert len(cache) == 2 * 2 * 4                               # (setting, seed, model)


def test_adapt_off_is_same_weights_other_scores(grid):
    df, _ = grid
    ttt = df[df["model"] == "ttt4rec"]
    on = ttt[ttt["adapt"] == True].set_index(["drift", "seed"])   # noqa: E712
    off = ttt[ttt["adapt"] == False].set_index(["drift", "seed"])  # noqa: E712
    assert len(on) == len(off) == 4
    # one trained model per run: identical training loss, best epoch and tau_b ...
    pd.testing.assert_series_equal(on["train_loss"], off["train_loss"])
    pd.testing.assert_series_equal(on["best_epoch"], off["best_epoch"])
    pd.testing.assert_series_equal(on["tau_b"], off["tau_b"])
    # ... but other test scores: with eta = 0 the inner weights never move
    assert (on["ndcg@10"] - off["ndcg@10"]).abs().max() > 1e-6
    assert (on["tau_b"] >= 0).all()                                   # tau is clamped at 0


def test_cache_reuses_runs(grid):
    df, cache = grid
    again = run_grid([{"drift": 0.3}], seeds=[1], base=TINY, cache=cache, device="cpu")
    expected = df[(df["drift"] == 0.3) & (df["seed"] == 1)].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, expected)


def test_unknown_setting_is_rejected():
    with pytest.raises(ValueError, match="unknown StudyConfig fields"):
        run_grid([{"drfit": 0.1}], seeds=[0], base=TINY)


def test_summarize_by_hand():
    df = pd.DataFrame({"x": [1, 1, 1, 2, 2], "variant": ["a"] * 5,
                       "hr@10": [0.1, 0.2, 0.6, 0.5, 0.5], "ndcg@10": [0.0, 0.3, 0.3, 0.2, 0.4]})
    s = summarize(df, ["x", "variant"])
    row = s.loc[(1, "a")]
    assert row["hr@10 mean"] == pytest.approx(0.3)
    # sample std (ddof=1): deviations -0.2, -0.1, 0.3 -> sqrt(0.14 / 2)
    assert row["hr@10 std"] == pytest.approx(math.sqrt(0.14 / 2))
    assert row["ndcg@10 mean"] == pytest.approx(0.2)
    assert row["ndcg@10 std"] == pytest.approx(math.sqrt((0.04 + 0.01 + 0.01) / 2))
    assert row["n"] == 3
    row2 = s.loc[(2, "a")]
    assert row2["hr@10 std"] == pytest.approx(0.0) and row2["ndcg@10 std"] == pytest.approx(math.sqrt(0.02))
    assert list(s.columns) == ["hr@10 mean", "hr@10 std", "ndcg@10 mean", "ndcg@10 std", "n"]
    with pytest.raises(KeyError, match="not in the frame"):
        summarize(df, ["missing"])


def test_adaptation_gain_pairs_runs():
    rows = []
    for seed, (on, off) in enumerate([(0.5, 0.4), (0.3, 0.4), (0.6, 0.3)]):
        rows += [{"d": 0, "seed": seed, "model": "ttt4rec", "adapt": True, "ndcg@10": on},
                 {"d": 0, "seed": seed, "model": "ttt4rec", "adapt": False, "ndcg@10": off},
                 {"d": 0, "seed": seed, "model": "pop", "adapt": None, "ndcg@10": 0.0}]
    g = adaptation_gain(pd.DataFrame(rows), "d").loc[0]
    assert g["gain mean"] == pytest.approx((0.1 - 0.1 + 0.3) / 3)
    assert g["gain std"] == pytest.approx(pd.Series([0.1, -0.1, 0.3]).std())
    assert g["n"] == 3


def test_plot_errorbars_returns_figure():
    from matplotlib.figure import Figure
    df = pd.DataFrame({"drift": [0, 0, 0.3, 0.3] * 2, "variant": ["A"] * 4 + ["B"] * 4,
                       "ndcg@10": [0.1, 0.2, 0.3, 0.35, 0.2, 0.2, 0.1, 0.3], "hr@10": [0.5] * 8})
    fig = plot_errorbars(df, "drift")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) >= 2 and ax.get_xlabel() == "drift"
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["A", "B"]
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_fixed_w0_arm_is_a_second_model_trained_without_adaptation(grid):
    """The control is trained separately (its own loss curve), with η = 0 throughout: its rows are not the
    η = 0-at-test evaluation of the adapting model."""
    df, _ = grid
    fixed = df[df["model"] == "ttt4rec-fixed-w0"].set_index(["drift", "seed"])
    ttt = df[(df["model"] == "ttt4rec") & (df["adapt"] == True)].set_index(["drift", "seed"])  # noqa: E712
    assert len(fixed) == 4 and (fixed["adapt"] == False).all()  # noqa: E712
    assert (fixed["variant"] == "TTT4Rec, fixed W0").all() and fixed["tau_b"].isna().all()
    assert ((fixed["train_loss"] - ttt["train_loss"]).abs() > 1e-6).all()
    diffs = arm_differences(df, "drift")
    assert set(diffs.index.get_level_values("difference")) == {
        "adapt − fixed W0", "adapt − η=0 at test", "fixed W0 − η=0 at test"}
    assert (diffs["n"] == 2).all()


def test_arm_differences_by_hand():
    """Paired by seed; mean ± t_{0.975, n-1} · s / sqrt(n); positive = seeds with a difference > 0."""
    rows = []
    arms = {"TTT4Rec": [0.50, 0.30, 0.60], "TTT4Rec, fixed W0": [0.40, 0.40, 0.30],
            "TTT4Rec, η=0 at test": [0.20, 0.10, 0.30]}
    for variant, values in arms.items():
        rows += [{"d": 0, "seed": seed, "variant": variant, "ndcg@10": v} for seed, v in enumerate(values)]
    rows.append({"d": 0, "seed": 0, "variant": "SASRec", "ndcg@10": 0.9})  # other models are ignored
    out = arm_differences(pd.DataFrame(rows), "d").loc[0]
    d = pd.Series([0.1, -0.1, 0.3])
    half = student_t_quantile(0.975, 2) * d.std() / math.sqrt(3)
    row = out.loc["adapt − fixed W0"]
    assert row["mean"] == pytest.approx(0.1) and row["n"] == 3 and row["positive"] == 2
    assert (row["low"], row["high"]) == (pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    assert half == pytest.approx(4.302653 * d.std() / math.sqrt(3), rel=1e-5)
    assert out.loc["fixed W0 − η=0 at test", "mean"] == pytest.approx(0.5 / 3)
    with pytest.raises(ValueError, match="no run has two TTT4Rec arms"):
        arm_differences(pd.DataFrame(rows[:3]), "d")


def test_plot_errorbars_t_interval_is_wider_than_std_for_two_seeds():
    """With 2 seeds the 95% t interval of the mean is 12.71 · s / sqrt(2) ≈ 9 s: far wider than ± s."""
    df = pd.DataFrame({"drift": [0, 0], "variant": ["A", "A"], "ndcg@10": [0.1, 0.2], "hr@10": [0.5, 0.5]})
    import matplotlib.pyplot as plt
    widths = {}
    for bars in ("t95", "std"):
        fig = plot_errorbars(df, "drift", bars=bars)
        segments = fig.axes[0].collections[0].get_segments()
        widths[bars] = float(segments[0][1][1] - segments[0][0][1])
        plt.close(fig)
    s = pd.Series([0.1, 0.2]).std()
    assert widths["std"] == pytest.approx(2 * s)
    assert widths["t95"] == pytest.approx(2 * 12.7062 * s / math.sqrt(2), rel=1e-4)
    with pytest.raises(ValueError, match="bars must be"):
        plot_errorbars(df, "drift", bars="sem")
