"""The project's protocol beside RecBole 1.2 itself: samples and metrics, difference by difference.

Run by ``make fidelity`` with the separate environment ``.venv-fidelity`` (recbole==1.2.0 and its pins, see
``scripts/fidelity/requirements.txt``) and the repository on ``PYTHONPATH``. Offline: the data are
MovieLens-100K as shipped inside the recbole package and a small hand-made file written here.

For each data file:

1. **Samples.** RecBole's ``create_dataset`` + ``data_preparation`` (SASRec's sequential dataset, split
   3:2:5 by ratio in time order, users and items with >= 5 interactions, ``MAX_ITEM_LIST_LENGTH`` 50,
   ``normalize_all`` off) against ``load_dataset`` + ``build_splits`` with the same settings. Every sample
   is compared as (user, last 50 history items, target) in the files' own ids; printed: how many differ,
   for ``--timestamps recbole`` (zero expected) and ``exact`` (the float32 effect).
2. **Metrics.** Two scorers that need no training and give the same float32 score to the same (history,
   item) on both sides — integer arithmetic, so no rounding can differ: ``dot`` (a dot product of integer
   vectors, almost no ties) and ``coarse`` (the same on 20 levels, ties everywhere). RecBole's own
   ``Collector`` + ``Evaluator`` on its test batches against the project's ranks: HR/NDCG@10/50 under each
   tie policy, and ``metrics.topk_ranks`` (RecBole's rule, ``torch.topk``) on the same columns in RecBole's
   item order. Zero difference is expected between RecBole and ``topk_ranks`` always, and between RecBole
   and every tie policy for ``dot`` when it has no ties.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

MAX_LEN = 50
KS = (10, 50)
SPLIT = (0.3, 0.2, 0.5)
T0 = 875_664_000  # 1997-10-01, a multiple of 64: float32 spacing there is 64 s
DIM = 8


def hand_made_file(path: Path) -> None:
    """90 users, 70 items, times in bursts whose gaps (1..40 s) collide in float32, file order shuffled."""
    rng = np.random.default_rng(17)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    rows = []
    for user in range(90):
        count = int(rng.integers(8, 21))
        start = T0 + int(rng.integers(0, 200)) * 86_400
        gaps = np.where(rng.random(count) < 0.6, rng.integers(1, 40, count), rng.integers(3_600, 90_000, count))
        times = start + np.cumsum(gaps)
        items = rng.integers(1, 71, count)
        rows += [(f"u{user}", f"i{item}", int(t)) for item, t in zip(items, times)]
    order = rng.permutation(len(rows))  # the file is not in time order
    lines += [f"{u}\t{i}\t{t}" for u, i, t in (rows[k] for k in order)]
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ RecBole side


def recbole_side(data_path: Path, name: str, normalize: bool = False):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    config = Config(model="SASRec", dataset=name, config_dict={
        "data_path": str(data_path), "checkpoint_dir": tempfile.mkdtemp(), "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "normalize_all": normalize, "normalize_field": None,
        "user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)",
        "MAX_ITEM_LIST_LENGTH": MAX_LEN, "train_neg_sample_args": None, "loss_type": "CE",
        "eval_args": {"split": {"RS": list(SPLIT)}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Hit", "NDCG"], "topk": list(KS), "valid_metric": "NDCG@10",
        "device": "cpu", "use_gpu": False, "eval_batch_size": 256, "seed": 2020, "metric_decimal_place": 12,
        "log_wandb": False, "state": "ERROR",
    })
    logging.getLogger().setLevel(logging.ERROR)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return config, dataset, (train, valid, test)


def recbole_samples(dataset, part) -> list:
    feat = part.dataset.inter_feat
    users = dataset.id2token("user_id", feat["user_id"].numpy())
    items = dataset.field2id_token["item_id"]
    out = []
    for user, seq, length, target in zip(users, feat["item_id_list"].numpy(), feat["item_length"].numpy(),
                                         feat["item_id"].numpy()):
        out.append((str(user), tuple(items[seq[:length]].tolist()), str(items[target])))
    return out


# ------------------------------------------------------------------------------------------ project side


def project_side(path: Path, timestamps: str):
    from ttt4rec_edu.data import build_splits, load_dataset

    data = load_dataset(path, format="recbole", min_user_inter=5, min_item_inter=5, timestamps=timestamps)
    return data, build_splits(data, MAX_LEN, "3:2:5")


def project_samples(data, part) -> list:
    item_seq, lengths, targets = part.batch()
    items = np.asarray(data.item_tokens, dtype=object)
    out = []
    for user, seq, length, target in zip(part.user.tolist(), item_seq.numpy(), lengths.tolist(),
                                         targets.tolist()):
        out.append((data.user_tokens[user], tuple(items[seq[:length] - 1].tolist()), str(items[target - 1])))
    return out


# ------------------------------------------------------------------------------------------ scorers


def item_vectors(tokens) -> np.ndarray:
    """An integer vector per item token, the same on both sides (seeded by a checksum of the token)."""
    return np.stack([np.random.default_rng(zlib.crc32(str(t).encode())).integers(-10_000, 10_001, DIM)
                     for t in tokens]).astype(np.int64)


def scores_for(histories, column_tokens, scorer: str) -> torch.Tensor:
    """``(B, len(column_tokens))`` float32 scores; column ``j`` is the item ``column_tokens[j]``.

    The query is the sum of the history's item vectors, the score its dot product with the item's, in int64
    (exact), then rounded once to float32: the same value on both sides whatever the column order.
    ``coarse`` keeps 20 levels.
    """
    table = item_vectors(column_tokens)
    lookup = {t: table[j] for j, t in enumerate(column_tokens)}
    query = np.stack([np.sum([lookup[t] for t in h], axis=0) if h else np.zeros(DIM, np.int64)
                      for h in histories])
    dots = query @ table.T
    if scorer == "coarse":
        dots = np.floor_divide(dots, 200_000_000).clip(-10, 9)
    return torch.from_numpy(dots.astype(np.float32))


def recbole_metrics(config, dataset, test, scorer: str):
    """RecBole's Collector + Evaluator on its own test batches; also the scores, targets in its ids."""
    from recbole.evaluator import Collector, Evaluator

    collector = Collector(config)
    tokens = dataset.field2id_token["item_id"]  # column j = RecBole item id j; 0 = [PAD]
    all_scores, all_targets = [], []
    for interaction, _history, positive_u, positive_i in test:
        seqs = interaction["item_id_list"].numpy()
        lengths = interaction["item_length"].numpy()
        histories = [tokens[s[:n]].tolist() for s, n in zip(seqs, lengths)]
        scores = scores_for(histories, tokens[1:].tolist(), scorer)
        scores = torch.cat([torch.full((len(scores), 1), float("-inf")), scores], dim=1)
        collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
        all_scores.append(scores)
        all_targets.append(positive_i)
    result = Evaluator(config).evaluate(collector.get_data_struct())
    metrics = {f"{m}@{k}": float(result[f"{'hit' if m == 'hr' else m}@{k}"]) for m in ("hr", "ndcg") for k in KS}
    return metrics, torch.cat(all_scores), torch.cat(all_targets)


def project_metrics(data, part, scorer: str):
    from ttt4rec_edu.metrics import TIE_POLICIES, metrics_from_ranks, rank_ties_from_scores

    item_seq, lengths, targets = part.batch()
    tokens = list(data.item_tokens)
    histories = [[tokens[j - 1] for j in s[:n]] for s, n in zip(item_seq.tolist(), lengths.tolist())]
    scores = scores_for(histories, tokens, scorer)
    scores = torch.cat([torch.full((len(scores), 1), float("-inf")), scores], dim=1)
    ranks, ties = rank_ties_from_scores(scores, targets)
    return {p: metrics_from_ranks(ranks, KS, ties, p) for p in TIE_POLICIES}, ties


def topk_metrics(scores, targets) -> dict:
    from ttt4rec_edu.metrics import metrics_from_ranks, topk_ranks

    return metrics_from_ranks(topk_ranks(scores, targets, max(KS)), KS)


# ------------------------------------------------------------------------------------------ report


def _differing(a: list, b: list) -> int:
    """Samples that differ, user by user in time order (RecBole lists the users by their first interaction
    in time, the project by their first line in the file: the order of users is not compared)."""
    by_user = {}
    for side, samples in enumerate((a, b)):
        for sample in samples:
            by_user.setdefault(sample[0], ([], []))[side].append(sample)
    return sum(sum(x != y for x, y in zip(p, q)) + abs(len(p) - len(q)) for p, q in by_user.values())


def compare_samples(name, rb_parts, data_by_mode) -> int:
    differing = 0
    for mode, (data, splits) in data_by_mode.items():
        ours = [project_samples(data, p) for p in (splits.train, splits.valid, splits.test)]
        for label, a, b in zip(("train", "valid", "test"), rb_parts, ours):
            diff = _differing(a, b)
            print(f"  samples {label:<5} RecBole {len(a):>6}  project --timestamps {mode:<7} {len(b):>6}  "
                  f"differing {diff:>6} ({diff / max(len(a), 1):.1%})")
            if mode == "recbole":
                differing += diff
        print(f"  users whose order float32 changes: {data.meta['users_order_differs']} of {data.num_users}")
    return differing


def compare_metrics(config, dataset, rb_test, data, splits) -> int:
    differing = 0
    for scorer in ("dot", "coarse"):
        rb, rb_scores, rb_targets = recbole_metrics(config, dataset, rb_test, scorer)
        ours, ties = project_metrics(data, splits.test, scorer)
        emulated = topk_metrics(rb_scores, rb_targets)
        tied = float((ties > 0).double().mean())
        print(f"  scorer {scorer}: {tied:.1%} of test targets tie with another item")
        rows = [("RecBole 1.2 (Collector + Evaluator)", rb), ("project topk_ranks, RecBole's columns", emulated)]
        rows += [(f"project ties={p}", m) for p, m in ours.items()]
        for label, m in rows:
            shown = "  ".join(f"{k} {m[k]:.6f}" for k in rb)
            print(f"    {label:<38} {shown}")
        gap = max(abs(emulated[k] - rb[k]) for k in rb)
        print(f"    |topk_ranks - RecBole| max {gap:.2e}")
        differing += gap > 1e-9
        if tied == 0.0:
            gap = max(abs(ours[p][k] - rb[k]) for p in ours for k in rb)
            print(f"    no ties: |any policy - RecBole| max {gap:.2e}")
            differing += gap > 1e-9
    return differing


def run(name: str, data_dir: Path, normalized_too: bool = False) -> int:
    path = data_dir / name / f"{name}.inter"
    print(f"== {name} ({path.name})")
    config, dataset, parts = recbole_side(data_dir, name)
    rb_samples = [recbole_samples(dataset, p) for p in parts]
    by_mode = {mode: project_side(path, mode) for mode in ("recbole", "exact")}
    differing = compare_samples(name, rb_samples, by_mode)
    if normalized_too:  # RecBole's ml-100k preset rescales time to [0, 1] first: coarser still
        _, ndataset, nparts = recbole_side(data_dir, name, normalize=True)
        theirs = recbole_samples(ndataset, nparts[2])
        for mode, (data, splits) in by_mode.items():
            diff = _differing(theirs, project_samples(data, splits.test))
            print(f"  (for information, the project does not normalise) RecBole with normalize_all=True: "
                  f"test samples differing from --timestamps {mode}: {diff} ({diff / max(len(theirs), 1):.1%})")
    differing += compare_metrics(config, dataset, parts[2], *by_mode["recbole"])
    return differing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    import recbole

    print(f"recbole {recbole.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"device cpu; split 3:2:5, max length {MAX_LEN}, users and items >= 5")
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shipped = Path(recbole.__file__).parent / "dataset_example"
        (tmp / "ml-100k").mkdir()
        os.symlink(shipped / "ml-100k" / "ml-100k.inter", tmp / "ml-100k" / "ml-100k.inter")
        (tmp / "collisions").mkdir()
        hand_made_file(tmp / "collisions" / "collisions.inter")
        total += run("ml-100k", tmp, normalized_too=True)
        total += run("collisions", tmp)
    print(f"RESULT: {'zero differences' if total == 0 else f'{total} DIFFERENCES'} "
          "(samples with --timestamps recbole; RecBole's metrics vs topk_ranks, and vs every policy without ties)")
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
