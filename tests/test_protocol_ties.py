"""RecBole's float32 timestamps, tie policies of the metrics, and the loss over all N + 1 columns.

Hand-made data only: timestamps that collide in float32 but not in float64, scores with known ties.
"""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ttt4rec_edu import losses
from ttt4rec_edu.data import build_splits, load_dataset, order_differences, sort_times, to_sequences
from ttt4rec_edu.metrics import (TIE_POLICIES, chunked_ranks, compute_ranks, evaluate, hit_rate,
                                 metrics_from_ranks, ndcg, rank_ties_from_scores, ranks_from_scores,
                                 topk_ranks)
from ttt4rec_edu.models import build_model
from ttt4rec_edu.train import (LEGACY_CONFIG, ModelCapabilityError, RANKS_NAME, ResumeError, TrainConfig,
                               _fingerprint_diff, batch_loss, train)

# 1997-10-01 in seconds: float32 spacing there is 64 s, so +10 s and +30 s round to the same float32 value.
T0 = 875_664_000.0
NEG_INF = float("-inf")


# ------------------------------------------------------------------------------------------ timestamps


def test_the_hand_made_times_collide_in_float32_only():
    times = np.array([T0 + 30, T0 + 10])
    assert times[0] != times[1]
    assert np.float32(times[0]) == np.float32(times[1])
    assert sort_times(times, "exact").dtype == np.float64
    assert sort_times(times, "recbole").dtype == np.float32


def collision_table():
    # user a: item x at T0+30 is listed first in the file, y at T0+10 second; z a day later.
    # user b: times a day apart, exact in float32 → the same order in both modes.
    return pd.DataFrame({
        "user": ["a", "a", "b", "a", "b"],
        "item": ["x", "y", "x", "z", "y"],
        "timestamp": [T0 + 30, T0 + 10, T0, T0 + 86_400, T0 + 86_400],
    })


def tokens(data, user):
    return [data.item_tokens[j - 1] for j in data.sequences[user]]


def test_recbole_mode_keeps_file_order_of_float32_ties_exact_mode_sorts_seconds():
    table = collision_table()
    recbole = to_sequences(table, timestamps="recbole")
    exact = to_sequences(table, timestamps="exact")
    assert tokens(recbole, 0) == ["x", "y", "z"]  # equal in float32: file order
    assert tokens(exact, 0) == ["y", "x", "z"]    # the true order
    assert tokens(recbole, 1) == tokens(exact, 1) == ["x", "y"]
    assert recbole.meta["timestamps"] == "recbole" and exact.meta["timestamps"] == "exact"
    assert order_differences(table) == 1


def test_default_is_recbole_and_bad_mode_is_refused():
    assert tokens(to_sequences(collision_table()), 0) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="timestamps must be one of recbole, exact"):
        to_sequences(collision_table(), timestamps="float16")


def test_no_differences_when_float32_is_exact():
    table = collision_table()
    table["timestamp"] = [3.0, 1.0, 0.0, 7.0, 9.0]  # small integers: exact in float32
    assert order_differences(table) == 0
    assert to_sequences(table, timestamps="recbole").sequences[0].tolist() == \
        to_sequences(table, timestamps="exact").sequences[0].tolist()


def test_swap_of_the_same_item_is_not_a_difference():
    table = pd.DataFrame({"user": ["a", "a"], "item": ["x", "x"], "timestamp": [T0 + 30, T0 + 10]})
    assert order_differences(table) == 0


def test_load_dataset_records_mode_and_count(tmp_path):
    path = tmp_path / "tiny.inter"
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{t:.0f}" for u, i, t in zip(*collision_table().to_dict("list").values())]
    path.write_text("\n".join(lines) + "\n")
    data = load_dataset(path)
    assert data.meta["timestamps"] == "recbole" and data.meta["users_order_differs"] == 1
    assert tokens(data, 0) == ["x", "y", "z"]
    exact = load_dataset(path, timestamps="exact")
    assert tokens(exact, 0) == ["y", "x", "z"] and exact.meta["users_order_differs"] == 1
    # the swap changes user a's first sample: (x) -> y instead of (y) -> x
    for d, expected in ((data, (["x"], "y")), (exact, (["y"], "x"))):
        item_seq, lengths, targets = build_splits(d, 5, "loo").train.batch(torch.tensor([0]))
        history = [d.item_tokens[j - 1] for j in item_seq[0, :int(lengths[0])].tolist()]
        assert (history, d.item_tokens[int(targets[0]) - 1]) == expected


# ------------------------------------------------------------------------------------------ tie policies

# items 1..5; target 2 scores 0.5 like items 1 and 4, item 3 scores higher → best rank 2, 2 ties
TIED = torch.tensor([[NEG_INF, 0.5, 0.5, 0.8, 0.5, 0.1]])
TIED_TARGET = torch.tensor([2])


def test_rank_and_ties_by_hand():
    ranks, ties = rank_ties_from_scores(TIED, TIED_TARGET)
    assert ranks.tolist() == [2] and ties.tolist() == [2]
    assert ranks_from_scores(TIED, TIED_TARGET).tolist() == [2]


def test_padding_column_is_never_a_tie():
    scores = torch.tensor([[0.5, 0.5, 0.1, 0.2]])  # column 0 = padding equals the target's score
    assert rank_ties_from_scores(scores, torch.tensor([1]))[1].tolist() == [0]


def test_policies_by_hand():
    ranks, ties = rank_ties_from_scores(TIED, TIED_TARGET)
    # positions 2, 3, 4 equally likely under "average"
    assert hit_rate(ranks, 2, ties, "optimistic") == 1.0
    assert hit_rate(ranks, 2, ties, "pessimistic") == 0.0
    assert hit_rate(ranks, 2, ties, "average") == pytest.approx(1 / 3)
    assert hit_rate(ranks, 3, ties, "average") == pytest.approx(2 / 3)
    assert hit_rate(ranks, 4, ties, "average") == pytest.approx(1.0)
    assert ndcg(ranks, 3, ties, "optimistic") == pytest.approx(1 / np.log2(3))
    assert ndcg(ranks, 3, ties, "pessimistic") == 0.0
    assert ndcg(ranks, 3, ties, "average") == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 3)
    assert ndcg(ranks, 10, ties, "pessimistic") == pytest.approx(1 / np.log2(5))


def test_average_is_the_mean_over_all_tie_orders():
    # brute force: every placement of the target among its ties, equally likely
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (40, 21), generator=gen).float()
    scores[:, 0] = NEG_INF
    targets = torch.randint(1, 21, (40,), generator=gen)
    ranks, ties = rank_ties_from_scores(scores, targets)
    for k in (1, 3, 10):
        hits, gains = [], []
        for r, t in zip(ranks.tolist(), ties.tolist()):
            positions = np.arange(r, r + t + 1)
            hits.append(np.mean(positions <= k))
            gains.append(np.mean(np.where(positions <= k, 1 / np.log2(positions + 1), 0)))
        assert hit_rate(ranks, k, ties, "average") == pytest.approx(np.mean(hits))
        assert ndcg(ranks, k, ties, "average") == pytest.approx(np.mean(gains))
        assert hit_rate(ranks, k, ties, "pessimistic") <= hit_rate(ranks, k, ties, "average") <= \
            hit_rate(ranks, k, ties, "optimistic")


def test_constant_scorer_only_optimistic_is_perfect():
    scores = torch.zeros(4, 1001)
    scores[:, 0] = NEG_INF
    ranks, ties = rank_ties_from_scores(scores, torch.tensor([1, 10, 100, 1000]))
    assert metrics_from_ranks(ranks, (10,), ties, "optimistic")["hr@10"] == 1.0
    assert metrics_from_ranks(ranks, (10,), ties, "pessimistic")["hr@10"] == 0.0
    assert metrics_from_ranks(ranks, (10,), ties, "average")["hr@10"] == pytest.approx(10 / 1000)


def test_without_ties_all_policies_agree():
    ranks = torch.tensor([1, 3, 12, 60])
    values = [metrics_from_ranks(ranks, (10, 50), torch.zeros(4, dtype=torch.long), p) for p in TIE_POLICIES]
    assert values[0] == values[1] == values[2] == metrics_from_ranks(ranks, (10, 50))


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="ties must be one of optimistic, pessimistic, average"):
        metrics_from_ranks(torch.tensor([1]), (10,), torch.tensor([0]), "random")


def test_chunked_ties_equal_full_matrix_ties_for_integer_scores():
    # integer-valued embeddings: every dot product is exact, so chunking cannot move a tie
    gen = torch.Generator().manual_seed(1)
    query = torch.randint(-2, 3, (9, 3), generator=gen).float()
    table = torch.randint(-1, 2, (40, 3), generator=gen).float()
    targets = torch.randint(1, 40, (9,), generator=gen)
    expected = rank_ties_from_scores(query @ table.T, targets)
    assert expected[1].sum() > 0
    for chunk in (1, 4, 7, 39, 100):
        ranks, ties = chunked_ranks(query, table, targets, item_chunk=chunk, with_ties=True)
        assert ranks.tolist() == expected[0].tolist() and ties.tolist() == expected[1].tolist()
        assert chunked_ranks(query, table, targets, item_chunk=chunk).tolist() == expected[0].tolist()


def test_topk_ranks_is_torch_topk_position():
    scores = torch.tensor([[9.0, 0.1, 0.9, 0.5, 0.7, 0.3]])  # column 0 must not count
    assert topk_ranks(scores, torch.tensor([3]), 3).tolist() == [3]
    assert topk_ranks(scores, torch.tensor([1]), 3).tolist() == [4]  # outside the top 3
    # with ties the result is whatever torch.topk returns: between the pessimistic and optimistic rank
    ranks, ties = rank_ties_from_scores(TIED, TIED_TARGET)
    r = int(topk_ranks(TIED, TIED_TARGET, 5))
    assert int(ranks) <= r <= int(ranks + ties)


class _Counts(nn.Module):
    """A score_all model with integer scores (item id mod 4), so most targets tie."""

    def __init__(self, num_items):
        super().__init__()
        self.num_items = num_items
        self.dummy = nn.Parameter(torch.zeros(1))

    def score_all(self, item_seq, lengths):
        scores = (torch.arange(self.num_items + 1) % 4).float().expand(len(item_seq), -1).clone()
        scores[:, 0] = NEG_INF
        return scores + 0 * self.dummy


def _tiny_splits():
    from ttt4rec_edu.data import SequenceData

    gen = np.random.default_rng(0)
    seqs = [gen.integers(1, 31, size=int(n)) for n in gen.integers(4, 12, size=30)]
    return build_splits(SequenceData(seqs, 30), 5, "3:2:5")


def test_evaluate_and_train_use_the_policy(tmp_path):
    splits = _tiny_splits()
    model = _Counts(30)
    values = {p: evaluate(model, splits.test, ks=(10,), ties=p)["hr@10"] for p in TIE_POLICIES}
    assert values["pessimistic"] < values["average"] < values["optimistic"]
    config = TrainConfig(epochs=0, ks=(10,), valid_metric="hr@10", ties="pessimistic", progress=False,
                         device="cpu")
    result = train(model, splits, config, out_dir=tmp_path)
    assert result["test"]["hr@10"] == pytest.approx(values["pessimistic"])
    assert result["config"]["ties"] == "pessimistic"
    saved = np.load(tmp_path / RANKS_NAME)
    ranks, ties = compute_ranks(model, splits.test, with_ties=True)
    assert saved["ranks"].tolist() == ranks.tolist() and saved["ties"].tolist() == ties.tolist()
    with pytest.raises(ValueError, match="ties must be one of"):
        TrainConfig(ties="random").validate()


def test_old_checkpoints_mean_optimistic_ties_and_item_columns():
    config = TrainConfig().to_dict()
    old = {k: v for k, v in config.items() if k not in LEGACY_CONFIG}
    current_legacy = dict(config, **LEGACY_CONFIG)
    assert _fingerprint_diff({"config": old}, {"config": current_legacy}) == []
    diffs = _fingerprint_diff({"config": old}, {"config": dict(config, ties="average")})
    assert diffs == ["config.ties: checkpoint 'optimistic' vs now 'average'"]
    assert ResumeError  # a difference is refused on resume (tests/test_train.py covers the refusal)


# ------------------------------------------------------------------------------------------ loss columns


def _reference_all_columns(hidden, table, targets):
    return nn.functional.cross_entropy(hidden @ table.T, targets)


def test_loss_over_all_columns_includes_the_padding_logit():
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    table = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    table[0] *= 3  # a padding row that matters
    targets = torch.randint(1, 11, (6,), generator=gen)
    items = losses.full_cross_entropy(hidden, table, targets)
    everything = losses.full_cross_entropy(hidden, table, targets, include_padding=True)
    assert everything > items  # one more term in the log-sum-exp
    assert everything == pytest.approx(float(_reference_all_columns(hidden, table, targets)))
    for chunk in (1, 3, 100):
        h = hidden.clone().requires_grad_(True)
        e = table.clone().requires_grad_(True)
        loss = losses.chunked_cross_entropy(h, e, targets, chunk, include_padding=True)
        loss.backward()
        h2 = hidden.clone().requires_grad_(True)
        e2 = table.clone().requires_grad_(True)
        _reference_all_columns(h2, e2, targets).backward()
        assert float(loss.detach()) == pytest.approx(float(everything))
        assert torch.allclose(h.grad, h2.grad) and torch.allclose(e.grad, e2.grad)
        assert e.grad[0].abs().sum() > 0  # the padding row is trained, as in the official code
        assert losses.chunked_cross_entropy(hidden, table, targets, chunk) == pytest.approx(float(items))


def test_batch_loss_columns_option():
    model = build_model("sasrec", 20, 5)
    seq = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    targets = torch.tensor([4, 6])
    model.eval()
    with torch.no_grad():
        hidden, table = model.encode(seq, lengths), model.item_table()
        items = batch_loss(model, seq, lengths, targets, 20)
        everything = batch_loss(model, seq, lengths, targets, 20, loss_columns="all")
        chunked = batch_loss(model, seq, lengths, targets, 20, loss_chunk=3, loss_columns="all")
        reference_items = float(losses.full_cross_entropy(hidden, table, targets))
        reference_all = float(_reference_all_columns(hidden, table, targets))
    assert float(items) == pytest.approx(reference_items, rel=1e-5)
    assert float(everything) == pytest.approx(reference_all, rel=1e-5)
    assert float(chunked) == pytest.approx(float(everything), rel=1e-5)
    assert everything > items
    with pytest.raises(ValueError, match="loss columns must be one of items, all"):
        batch_loss(model, seq, lengths, targets, 20, loss_columns="padding")
    with pytest.raises(ModelCapabilityError, match="needs the padding logit"):
        batch_loss(_Counts(20), seq, lengths, targets, 20, loss_columns="all")
    assert TrainConfig().loss_columns == "items"  # the project's loss stays the default
    assert json.dumps(TrainConfig(loss_columns="all").to_dict())


# ------------------------------------------------------------------------------------------ command line


def run_main(argv, capsys):
    from ttt4rec_edu.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_data_stats_reports_the_mode_and_the_users_whose_order_differs(tmp_path, capsys):
    path = tmp_path / "tiny.inter"
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{t:.0f}" for u, i, t in zip(*collision_table().to_dict("list").values())]
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run_main(["data", "stats", "--data", path, "--split", "loo", "--json"], capsys)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["timestamps"] == "recbole" and stats["users_order_differs"] == 1
    code, out, err = run_main(["data", "stats", "--data", path, "--timestamps", "exact"], capsys)
    assert code == 0 and re.search(r"^users_order_differs +1$", out, re.M) and "exact" in out
    code, _, err = run_main(["data", "stats", "--data", path, "--timestamps", "float16"], capsys)
    assert code == 2 and "--timestamps" in err


def test_train_options_default_to_average_ties_and_the_item_columns(capsys):
    from ttt4rec_edu.cli import build_parser

    args = build_parser().parse_args(["train", "--model", "sasrec", "--data", "synthetic"])
    assert (args.ties, args.loss_columns) == ("average", "items")
    code, _, err = run_main(["train", "--model", "sasrec", "--data", "synthetic", "--ties", "random"], capsys)
    assert code == 2 and "--ties" in err


def test_reproduce_records_the_protocol_and_reads_old_records_as_the_old_behaviour(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["reproduce", "--table", "beauty", "--split", "3:2:5", "--models", "pop", "--seeds", "0",
            "--data", "synthetic", "--max-users", "40", "--device", "cpu", "--out", out]
    code, text, err = run_main(argv, capsys)
    assert code == 0, err
    record_path = next(out.glob("runs/**/experiment.json"))
    record = json.loads(record_path.read_text())
    assert (record["settings"]["timestamps"], record["settings"]["ties"]) == ("recbole", "average")
    metrics = json.loads((record_path.parent / "metrics.json").read_text())
    assert metrics["config"]["ties"] == "average"
    # an old record, written before these settings existed: it was made with exact times and optimistic ties
    for key in ("timestamps", "ties"):
        del record["settings"][key]
    record_path.write_text(json.dumps(record))
    # synthetic data has no times to round, and ties only turn saved ranks into metrics: the run is kept, the
    # log says under which policy it was evaluated, and results.csv keeps each run's own policy
    code, text, err = run_main(argv, capsys)
    assert code == 0 and "skip (finished)" in text and "(evaluated with ties=optimistic, kept)" in text, err
    results = pd.read_csv(out / "results.csv")
    assert (results["ties"].tolist(), results["timestamps"].tolist()) == (["optimistic"], ["exact"])
    code, text, err = run_main(argv + ["--timestamps", "exact", "--ties", "optimistic"], capsys)
    assert code == 0 and "skip (finished)" in text and "kept" not in text, err
    # a setting that shapes training still refuses to mix
    code, _, err = run_main(argv + ["--epochs", "3"], capsys)
    assert code == 2 and "must not be mixed" in err


def test_reproduce_refuses_a_run_whose_timestamps_gave_other_sequences(tmp_path, capsys):
    """Second-level times that collide in float32 order the data differently under recbole and exact: a run made
    under one is not reused under the other (while day-level data such as Amazon's is the same both ways)."""
    rows = ["user,item,timestamp"]
    for u in range(30):
        for t in reversed(range(8)):   # written newest first: exact times reorder them, float32 cannot
            # 900000000 + 3 t seconds: ~9e8 is a 64-second float32 step, so these all collide as float32
            rows.append(f"u{u},i{(u * 7 + (7 - t) * 3) % 25},{900000000 + 3 * t}")
    data = tmp_path / "collide.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "results"
    argv = ["reproduce", "--table", "beauty", "--split", "3:2:5", "--models", "pop", "--seeds", "0",
            "--data", data, "--device", "cpu", "--out", out]
    code, _, err = run_main(argv + ["--timestamps", "exact"], capsys)
    assert code == 0, err
    code, _, err = run_main(argv, capsys)   # default: recbole
    assert code == 2 and "must not be mixed" in err and "'timestamps': 'exact'" in err
