"""One run set up and run (``ttt4rec_edu.runner.run_one``): the folder rules, the one finished-run rule, the record
written last, what a run reads (``ttt4rec_edu.data.registry.DataRequest``), and a train request checked once by
the library (``run_request``)."""
import json

import pytest

from ttt4rec_edu.data.registry import DEFAULT_MAX_LEN, DataRequest
from ttt4rec_edu.runner import (RECORD_NAME, RUN_FILES, RunFolderError, RunSetupError, claim_out_dir, is_finished,
                                run_one, run_state)
from ttt4rec_edu.train import CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, TrainConfig

TINY = DataRequest("synthetic", max_users=20)


def test_the_one_finished_rule_needs_metrics_and_the_record(tmp_path):
    assert run_state(tmp_path / "missing") == "new"
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"")
    assert run_state(tmp_path) == "resumable"
    (tmp_path / METRICS_NAME).write_text("{}")   # killed between metrics.json and the record: not finished
    assert not is_finished(tmp_path) and run_state(tmp_path) == "resumable"
    (tmp_path / RECORD_NAME).write_text("{}")
    assert is_finished(tmp_path) and run_state(tmp_path) == "finished"
    assert set(RUN_FILES) == {CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, RECORD_NAME}


def test_a_data_request_reads_cuts_and_splits():
    data, splits = TINY.load()
    assert len(data.sequences) == 20 and data.name.endswith("[:20 users]")
    assert splits.max_len == DEFAULT_MAX_LEN == TINY.context_length(data)   # synthetic: no registry setting
    assert DataRequest("synthetic", max_len=7).context_length(data) == 7
    assert TINY == DataRequest("synthetic", max_users=20) and hash(TINY) == hash(DataRequest("synthetic",
                                                                                               max_users=20))


def test_run_one_writes_the_record_last_and_guards_its_folder(tmp_path):
    out = tmp_path / "runs" / "pop"
    config = TrainConfig(epochs=6, batch_size=256, device="cpu", progress=False, seed=3)
    result = run_one("pop", out, config, TINY, record={"note": "test"})
    record = json.loads((out / RECORD_NAME).read_text())
    assert (record["note"], record["seed"], record["recipe"]) == ("test", 3, "cpu6") == \
        ("test", 3, result["config"]["recipe"])
    assert result["run"]["model"] == "pop" and result["run"]["timestamps"] is None   # synthetic has no times
    assert is_finished(out)
    with pytest.raises(RunFolderError, match="not empty"):   # a second run is not written over unasked
        run_one("pop", out, config, TINY)
    claim_out_dir(out, resume=False, overwrite=True)           # --overwrite deletes the run's own files only
    assert not out.exists() or not any(out.iterdir())
    # a run that cannot be set up leaves no empty folder behind, up to the first folder it created
    failed = tmp_path / "new" / "deeper"
    with pytest.raises(RunSetupError, match="rejected the options"):
        run_one("pop", failed, config, TINY, model_options={"hidden_size": 8})
    assert not (tmp_path / "new").exists()


def test_a_train_request_is_checked_once_by_the_library(tmp_path, monkeypatch):
    """``run_request`` does what the command line used to do between its calls into the library: the recipe, the
    device, the one check of the settings (``validate()`` runs once per run: ``train()`` does not check the same
    values again), then ``run_one``."""
    from ttt4rec_edu.runner import TrainRequest, run_request

    calls = []
    validate = TrainConfig.validate
    monkeypatch.setattr(TrainConfig, "validate", lambda self, trains=False: calls.append(trains) or
                        validate(self, trains))
    request = TrainRequest("pop", TINY, tmp_path / "pop", training={"epochs": 1, "batch_size": 64, "device": "cpu",
                                                                     "progress": False})
    result = run_request(request)
    assert calls == [True] and result["config"]["epochs"] == 1 and is_finished(tmp_path / "pop")
    assert json.loads((tmp_path / "pop" / RECORD_NAME).read_text())["data"] == "synthetic"
    # a recipe sets its values; one given beside it must agree (told by option name, before anything is written)
    contradicting = TrainRequest("pop", TINY, tmp_path / "cpu6", training={"epochs": 2, "device": "cpu"},
                                 recipe="cpu6", given=frozenset({"epochs"}))
    with pytest.raises(RunSetupError, match=r"^--recipe cpu6 contradicts --epochs 2 \(the recipe has 6\)"):
        run_request(contradicting)
    with pytest.raises(RunSetupError, match="^--batch-size must be >= 1, got 0$"):
        run_request(TrainRequest("pop", TINY, tmp_path / "bad", training={"batch_size": 0, "device": "cpu"}))
    assert not (tmp_path / "cpu6").exists() and not (tmp_path / "bad").exists()


def test_train_checks_a_config_changed_after_its_check():
    config = TrainConfig(epochs=1)
    config.validate()
    config.ensure_valid()            # the same values: not checked again
    config.batch_size = 0            # changed since: checked anew
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        config.ensure_valid()


def test_a_recipe_sets_its_values_in_a_request_that_names_none():
    """A library caller's request need not list the recipe's options: ``with_recipe`` sets them all."""
    from ttt4rec_edu.recipes import recipe_values
    from ttt4rec_edu.runner import with_recipe

    values = with_recipe("cpu6", {"device": "cpu"})
    assert values == {"device": "cpu", **recipe_values("cpu6")}
    assert TrainConfig(**values).to_dict()["recipe"] == "cpu6"
    assert with_recipe(None, {"epochs": 2}) == {"epochs": 2}
