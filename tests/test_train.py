"""The outer loop: exact resume, early stopping with best-weight restore, errors, metrics.json."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import ttt4rec_edu.train as train_mod
from ttt4rec_edu.data.protocol import SequenceData, build_splits
from ttt4rec_edu.models import build_model
from ttt4rec_edu.metrics import compute_ranks, metrics_from_ranks
from ttt4rec_edu.train import (CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, ModelCapabilityError, NonFiniteLossError,
                               OutputDirError, ResumeError, TrainConfig, train)

METRIC_KEYS = {"hr@10", "hr@50", "ndcg@10", "ndcg@50"}



class TinyRec(nn.Module):
    """GRU-free little recommender: embeddings → dropout → mean of a linear map; scores by dot product.

    Dropout makes the run depend on torch's global RNG, which the checkpoint must carry for an exact resume.
    """

    def __init__(self, num_items, dim=8, dropout=0.3):
        super().__init__()
        self.num_items = num_items
        self.emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.adapt_calls = []

    def encode(self, item_seq, lengths):
        x = self.drop(self.emb(item_seq))                                   # (B, L, d)
        last = x[torch.arange(x.shape[0]), (lengths - 1).clamp(min=0)]      # (B, d)
        return self.proj(last)

    def item_table(self):
        return self.emb.weight

    def score_all(self, item_seq, lengths):
        s = self.encode(item_seq, lengths) @ self.item_table().T
        s[:, 0] = float("-inf")
        return s


class AdaptiveTinyRec(TinyRec):
    def set_adapt_at_test(self, flag):
        self.adapt_calls.append(bool(flag))


def tiny_splits(num_users=40, num_items=30, seed=0):
    """Users walk through items mostly in steps of +1 (so there is something to learn)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num_users):
        n = int(rng.integers(6, 14))
        start = int(rng.integers(1, num_items + 1))
        steps = np.where(rng.random(n) < 0.8, 1, rng.integers(2, 5, size=n))
        seqs.append((start - 1 + np.cumsum(steps)) % num_items + 1)
    return build_splits(SequenceData(seqs, num_items, name="tiny"), max_len=6, split="3:2:5")


def cfg(**kw):
    base = dict(epochs=4, batch_size=16, eval_batch_size=32, patience=10, seed=7, device="cpu", progress=False)
    base.update(kw)
    return TrainConfig(**base)


def fresh_model(seed=0, cls=TinyRec):
    torch.manual_seed(seed)
    return cls(30)


def test_train_writes_metrics_json(tmp_path):
    splits = tiny_splits()
    result = train(fresh_model(), splits, cfg(epochs=3), out_dir=tmp_path, data_stats={"users": 40})
    on_disk = json.loads((tmp_path / METRICS_NAME).read_text())
    assert set(on_disk["valid"]) == METRIC_KEYS and set(on_disk["test"]) == METRIC_KEYS
    for key in ("config", "data", "history", "device", "train_time_s", "epochs"):
        assert key in on_disk
    assert on_disk["epochs"] == 3 and len(on_disk["history"]) == 3
    assert on_disk["data"]["users"] == 40 and on_disk["data"]["train"] == len(splits.train)
    assert on_disk["config"]["lr"] == 1e-3 and on_disk["device"] == "cpu"
    assert on_disk["test"] == pytest.approx(result["test"])
    assert (tmp_path / CHECKPOINT_NAME).exists()
    # the losses go down on this learnable toy problem
    losses = [h["loss"] for h in on_disk["history"]]
    assert losses[-1] < losses[0]


def test_saved_test_ranks_are_the_test_metrics_per_sample(tmp_path):
    splits = tiny_splits()
    model = fresh_model()
    result = train(model, splits, cfg(epochs=2), out_dir=tmp_path)
    ranks = np.load(tmp_path / RANKS_NAME)["ranks"]
    # one rank per test sample, in the test split's order: the restored best model ranks them the same again
    assert ranks.dtype == np.int32 and ranks.shape == (len(splits.test),)
    assert np.array_equal(ranks, compute_ranks(model, splits.test, batch_size=7).numpy())
    assert metrics_from_ranks(torch.from_numpy(ranks).long()) == pytest.approx(result["test"])
    assert 1 <= ranks.min() and ranks.max() <= splits.num_items


def test_defaults_follow_the_paper():
    c = TrainConfig()
    assert (c.lr, c.batch_size, c.eval_batch_size, c.patience, c.epochs, c.seed) == \
        (1e-3, 2048, 4096, 5, 300, 2020)
    assert c.valid_metric == "ndcg@10" and c.device == "auto" and c.adapt_at_test


def test_resume_after_stop_matches_uninterrupted_run(tmp_path):
    splits = tiny_splits()
    straight = train(fresh_model(), splits, cfg(epochs=4), out_dir=tmp_path / "straight")
    # run 2 epochs and stop, then resume the same folder up to 4 with a *new* model object
    train(fresh_model(), splits, cfg(epochs=2), out_dir=tmp_path / "split")
    torch.manual_seed(999)  # global RNG disturbed on purpose: the checkpoint must restore it
    resumed = train(fresh_model(seed=123), splits, cfg(epochs=4), out_dir=tmp_path / "split", resume=True)
    assert resumed["epochs"] == 4
    assert resumed["valid"] == straight["valid"]
    assert resumed["test"] == straight["test"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    assert [h["valid"] for h in resumed["history"]] == [h["valid"] for h in straight["history"]]


def test_killed_run_keeps_files_and_resumes_exactly(tmp_path, monkeypatch):
    splits = tiny_splits()
    straight = train(fresh_model(), splits, cfg(epochs=4), out_dir=tmp_path / "straight")

    out = tmp_path / "killed"
    train(fresh_model(), splits, cfg(epochs=1), out_dir=out)
    metrics_before = (out / METRICS_NAME).read_bytes()
    real_epoch = train_mod.train_epoch
    calls = {"n": 0}

    def dying_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # killed during the third epoch of this run (epoch 4 overall)
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(fresh_model(), splits, cfg(epochs=4), out_dir=out, resume=True)
    assert (out / METRICS_NAME).read_bytes() == metrics_before  # never half-written or replaced
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["state"]["epoch"] == 3
    monkeypatch.setattr(train_mod, "train_epoch", real_epoch)
    resumed = train(fresh_model(), splits, cfg(epochs=4), out_dir=out, resume=True)
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]


def test_resume_from_another_model_or_config_is_refused(tmp_path):
    splits = tiny_splits()
    train(fresh_model(), splits, cfg(epochs=1), out_dir=tmp_path)
    torch.manual_seed(0)
    with pytest.raises(ResumeError, match="another model/config.*parameters"):
        train(TinyRec(30, dim=4), splits, cfg(epochs=2), out_dir=tmp_path, resume=True)
    with pytest.raises(ResumeError, match="lr"):
        train(fresh_model(), splits, cfg(epochs=2, lr=0.01), out_dir=tmp_path, resume=True)
    with pytest.raises(ResumeError, match="needs an output directory"):
        train(fresh_model(), splits, cfg(), resume=True)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ResumeError, match="cannot read checkpoint"):
        train(fresh_model(), splits, cfg(epochs=2), out_dir=tmp_path, resume=True)


def test_resume_on_other_data_of_the_same_shape_or_another_timestamps_mode_is_refused(tmp_path):
    """The fingerprint held only the data's counts: the same counts with other items resumed silently."""
    splits = tiny_splits()
    train(fresh_model(), splits, cfg(epochs=1), out_dir=tmp_path, run_info={"timestamps": "exact"})
    relabelled = build_splits(SequenceData([seq % 30 + 1 for seq in _sequences(splits)], 30, name="tiny"),
                              max_len=6, split="3:2:5")
    assert relabelled.counts() == splits.counts() and relabelled.digest() != splits.digest()
    assert tiny_splits().digest() == splits.digest()  # the same data built again: the same digest
    with pytest.raises(ResumeError, match="data.sha256: checkpoint '[0-9a-f]{64}' vs now '[0-9a-f]{64}'"):
        train(fresh_model(), relabelled, cfg(epochs=2), out_dir=tmp_path, resume=True,
              run_info={"timestamps": "exact"})
    with pytest.raises(ResumeError, match="timestamps: checkpoint 'exact' vs now 'recbole'"):
        train(fresh_model(), splits, cfg(epochs=2), out_dir=tmp_path, resume=True,
              run_info={"timestamps": "recbole"})
    resumed = train(fresh_model(), splits, cfg(epochs=2), out_dir=tmp_path, resume=True,
                    run_info={"timestamps": "exact"})
    assert resumed["epochs"] == 2


def _sequences(splits):
    """Each user's full sequence back from the splits' flat item array."""
    flat, starts = splits.train.flat_items, splits.train.user_start.tolist() + [len(splits.train.flat_items)]
    return [flat[a:b].numpy() for a, b in zip(starts[:-1], starts[1:])]


def test_a_checkpoint_written_before_the_data_digest_still_resumes_exactly(tmp_path):
    """Runs in progress were checkpointed without ``data.sha256`` and ``timestamps``: missing means unknown, not
    different, so they resume (exactly), and the next checkpoint records both."""
    splits = tiny_splits()
    straight = train(fresh_model(), splits, cfg(epochs=3), out_dir=tmp_path / "straight")
    train(fresh_model(), splits, cfg(epochs=1), out_dir=tmp_path / "old", run_info={"timestamps": "recbole"})
    path = tmp_path / "old" / CHECKPOINT_NAME
    ckpt = torch.load(path, weights_only=True)
    fingerprint = json.loads(ckpt["fingerprint"])
    del fingerprint["timestamps"], fingerprint["data"]["sha256"]
    ckpt["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
    torch.save(ckpt, path)
    resumed = train(fresh_model(), splits, cfg(epochs=3), out_dir=tmp_path / "old", resume=True,
                    run_info={"timestamps": "recbole"})
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
    rewritten = json.loads(torch.load(path, weights_only=True)["fingerprint"])
    assert rewritten["timestamps"] == "recbole" and rewritten["data"]["sha256"] == splits.digest()


def test_early_stopping_restores_best_weights(tmp_path, monkeypatch):
    splits = tiny_splits()
    scripted = iter([0.1, 0.3, 0.2, 0.3, 0.25, 0.1, 0.1, 0.1, 0.1])  # epoch 4 ties the best: RecBole keeps it
    snapshots = {}
    model = fresh_model()

    def fake_evaluate_split(m, sample_set, config, device, desc, dist=None, ranks_out=None):
        if desc.startswith("valid ") and desc.split()[-1].isdigit():
            epoch = int(desc.split()[-1])
            snapshots[epoch] = {k: v.clone() for k, v in m.state_dict().items()}
            score = next(scripted)
            return {"hr@10": score, "hr@50": score, "ndcg@10": score, "ndcg@50": score}
        return {"hr@10": -1.0, "hr@50": -1.0, "ndcg@10": -1.0, "ndcg@50": -1.0}

    monkeypatch.setattr(train_mod, "_evaluate_split", fake_evaluate_split)
    result = train(model, splits, cfg(epochs=50, patience=2), out_dir=tmp_path)
    # best at epoch 4 (tie counts), then epochs 5, 6, 7 do not reach it: 3 > patience 2 → stop after 7
    assert result["best_epoch"] == 4 and result["epochs"] == 7 and result["stopped_early"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[4][k]), k
    assert not torch.equal(model.emb.weight, snapshots[7]["emb.weight"])


def test_non_finite_loss_names_epoch_and_step(tmp_path):
    class Exploding(TinyRec):
        steps = 0

        def calculate_loss(self, item_seq, lengths, targets):
            Exploding.steps += 1
            loss = self.score_all(item_seq, lengths)[:, 1:].logsumexp(1).mean()
            return loss * (float("nan") if Exploding.steps == 3 else 1.0)

    splits = tiny_splits()
    metrics = tmp_path / METRICS_NAME
    metrics.write_text('{"keep": true}')
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3"):
        train(Exploding(30), splits, cfg(), out_dir=tmp_path)
    assert metrics.read_text() == '{"keep": true}'


def test_unwritable_output_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")

    class Watched(TinyRec):
        fitted = False

        def fit_statistics(self, *args):
            Watched.fitted = True

    with pytest.raises(OutputDirError, match="not writable"):
        train(Watched(30), tiny_splits(), cfg(), out_dir=blocker / "run")
    assert not Watched.fitted


def test_adapt_at_test_switch(tmp_path):
    splits = tiny_splits()
    with pytest.raises(ModelCapabilityError, match="set_adapt_at_test"):
        train(fresh_model(), splits, cfg(adapt_at_test=False))
    model = fresh_model(cls=AdaptiveTinyRec)
    train(model, splits, cfg(epochs=2, adapt_at_test=False))
    # 2 epoch validations + final valid + test, each switched off then back on
    assert model.adapt_calls == [False, True] * 4
    model = fresh_model(cls=AdaptiveTinyRec)
    train(model, splits, cfg(epochs=1))
    assert model.adapt_calls == []


def test_model_without_parameters_is_only_fitted_and_evaluated(tmp_path):
    splits = tiny_splits()
    pop = build_model("pop", splits.num_items, splits.max_len)
    result = train(pop, splits, cfg(), out_dir=tmp_path)
    assert result["epochs"] == 0 and result["history"] == [] and result["trainable_parameters"] == 0
    counts = torch.bincount(splits.train.targets, minlength=splits.num_items + 1).double()
    assert torch.equal(pop.item_count, counts)  # fitted on the whole training split, once
    assert 0 < result["test"]["hr@50"] <= 1
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_calculate_loss_is_used_when_defined():
    class OwnLoss(TinyRec):
        used = 0

        def calculate_loss(self, item_seq, lengths, targets):
            OwnLoss.used += 1
            return self.encode(item_seq, lengths).pow(2).mean()

    splits = tiny_splits()
    train(OwnLoss(30), splits, cfg(epochs=1, max_train_batches=2))
    assert OwnLoss.used == 2


def test_max_train_batches_and_config_validation():
    splits = tiny_splits()
    result = train(fresh_model(), splits, cfg(epochs=1, max_train_batches=1))
    first = result["history"][0]
    assert first["samples_per_s"] > 0
    # an epoch's time is its training plus its validation; CPU seconds are recorded for both apart
    assert first["time_s"] == pytest.approx(first["train_s"] + first["valid_s"])
    assert first["train_cpu_s"] > 0 and first["valid_cpu_s"] > 0
    with pytest.raises(ValueError, match="batch_size"):
        train(fresh_model(), splits, cfg(batch_size=0))
    with pytest.raises(ValueError, match="valid_metric"):
        train(fresh_model(), splits, cfg(valid_metric="ndcg@20"))
    assert math.isfinite(result["train_time_s"])


def test_resume_is_exact_for_registered_ttt4rec(tmp_path):
    """The real model (dropout, TTT inner loop) resumes exactly too, and accepts adapt_at_test=False."""
    from ttt4rec_edu.models import available_models

    if "ttt4rec" not in available_models():
        pytest.skip("ttt4rec is not registered in this checkout")
    splits = tiny_splits()

    def model():
        torch.manual_seed(5)
        return build_model("ttt4rec", splits.num_items, splits.max_len)

    c4, c2 = cfg(epochs=4, adapt_at_test=False), cfg(epochs=2, adapt_at_test=False)
    straight = train(model(), splits, c4, out_dir=tmp_path / "straight")
    train(model(), splits, c2, out_dir=tmp_path / "split")
    resumed = train(model(), splits, c4, out_dir=tmp_path / "split", resume=True)
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]


def test_batch_loss_is_full_softmax_cross_entropy_chunked_or_not(monkeypatch):
    import ttt4rec_edu.losses as losses
    from ttt4rec_edu.train import batch_loss

    splits = tiny_splits()
    model = fresh_model()
    model.eval()  # no dropout: the three losses must see the same scores
    item_seq, lengths, targets = splits.train.batch(torch.arange(20))
    scores = model.score_all(item_seq, lengths)[:, 1:]
    by_hand = (scores.logsumexp(1) - scores.gather(1, (targets - 1)[:, None])[:, 0]).mean()
    plain = batch_loss(model, item_seq, lengths, targets, splits.num_items)
    monkeypatch.setattr(losses, "choose_chunk", lambda batch, num_items: 7)  # as if the catalogue were huge
    chunked = batch_loss(model, item_seq, lengths, targets, splits.num_items)
    assert torch.allclose(plain, by_hand, atol=1e-6) and torch.allclose(chunked, by_hand, atol=1e-6)


def test_loss_chunk_setting_selects_plain_or_chunked_loss_with_equal_values(monkeypatch):
    import ttt4rec_edu.losses as losses
    from ttt4rec_edu.train import batch_loss

    splits = tiny_splits()
    model = fresh_model()
    model.eval()
    item_seq, lengths, targets = splits.train.batch(torch.arange(20))
    calls = []
    real_chunked = losses.chunked_cross_entropy
    monkeypatch.setattr(losses, "chunked_cross_entropy",
                        lambda h, table, y, chunk: calls.append(chunk) or real_chunked(h, table, y, chunk))
    auto = batch_loss(model, item_seq, lengths, targets, splits.num_items)           # tiny catalogue: plain
    assert calls == []
    forced = batch_loss(model, item_seq, lengths, targets, splits.num_items, loss_chunk=7)
    assert calls == [7]
    monkeypatch.setattr(losses, "choose_chunk", lambda batch, num_items: 5)          # as if it were huge
    batch_loss(model, item_seq, lengths, targets, splits.num_items, loss_chunk="auto")
    off = batch_loss(model, item_seq, lengths, targets, splits.num_items, loss_chunk="off")
    assert calls == [7, 5]                                                           # "off" never chunks
    assert torch.allclose(auto, forced, atol=1e-6) and torch.allclose(auto, off, atol=1e-6)
    for bad in (0, -3, "sometimes", True):
        with pytest.raises(ValueError, match="loss_chunk must be"):
            TrainConfig(loss_chunk=bad).validate()
    TrainConfig(loss_chunk=4096).validate()


def test_zero_epochs_evaluate_but_a_run_that_trains_needs_one():
    """One rule for epochs: the library evaluates an untrained model with epochs=0; a command's run must train."""
    from ttt4rec_edu.train import TrainConfigError

    TrainConfig(epochs=0).validate()
    with pytest.raises(TrainConfigError, match=r"epochs must be at least 1 \(0 epochs would train nothing\), got 0"):
        TrainConfig(epochs=0).validate(trains=True)
    with pytest.raises(TrainConfigError, match="epochs must be >= 0, got -1"):
        TrainConfig(epochs=-1).validate()
    TrainConfig(epochs=1).validate(trains=True)
