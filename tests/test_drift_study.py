"""Chapter 11's experiment grid: rows and columns of run_grid, the η = 0 ablation on the same weights,
summarize's statistics on a hand-made frame, the paired adaptation gain, and the error-bar plot."""
import math

import matplotlib

matplotlib.use("Agg")
import pandas as pd
import pytest
import torch

from ttt4rec_edu.drift_study import StudyConfig, adaptation_gain, plot_errorbars, run_grid, summarize

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
    # 2 settings x 2 seeds x (TTT4Rec on, TTT4Rec off, SASRec, pop)
    assert len(df) == 2 * 2 * 4
    for column in ("drift", "seed", "model", "adapt", "variant", "hr@10", "ndcg@10", "train_loss", "tau_b"):
        assert column in df.columns
    assert sorted(df["variant"].unique()) == sorted(["TTT4Rec", "TTT4Rec, η=0 at test", "SASRec", "pop"])
    assert df[["hr@10", "ndcg@10"]].apply(lambda s: s.between(0, 1)).all().all()
    assert (df["ndcg@10"] <= df["hr@10"] + 1e-12).all()          # NDCG@K <= HR@K for a single target
    assert len(cache) == 2 * 2 * 3                               # (setting, seed, model)


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
