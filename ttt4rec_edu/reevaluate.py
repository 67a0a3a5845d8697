"""η = 0 at test, from an adapting run's own best weights: a *derived* run.

The ablation "TTT4Rec, η = 0 at test" asks what a trained TTT4Rec loses when its inner loop is switched off at
test time. Trained as a run of its own (the committed 6-epoch runs, recipe ``cpu6``), it keeps the epoch with the
best validation score *measured with η = 0*, which may be another epoch than the adapting run keeps (chapter 9,
exercise ``ex-cpu-identical``): the comparison then mixes adaptation with model selection. Training cannot differ
(the inner loop runs during training in both), so the clean ablation needs no second training at all:

    take the adapting run's best weights (the ``best_state`` of its ``checkpoint.pt``, the weights its
    ``metrics.json`` reports), check that they give back its recorded validation metrics, and evaluate them
    again on the validation and test splits with η = 0.

:func:`derive_eta0_run` writes the result as a finished run folder of the ``-noadapt`` experiment
(``metrics.json``, ``test_ranks.npz``, ``experiment.json``), so tables and per-sample analyses read it like any
other run; both files say ``derived_from`` (the source run, its best epoch). ``reproduce --recipe official``
makes its η = 0 arm this way (``ttt4rec_edu.experiments.run_experiments``).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .checkpoint import read_checkpoint
from .runner import RECORD_NAME, first_missing, is_finished, remove_if_empty
from .train import CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, TrainConfig, evaluate_split
from .utils import atomic_write_json, json_safe, resolve_device

# a recomputed validation metric may differ from the recorded one by float rounding in another thread count
REPRODUCE_TOLERANCE = 1e-4


class DeriveError(ValueError):
    """The source run cannot give an η = 0 arm (unfinished, no checkpoint, not adapting, other data)."""


def _config_of(recorded: Dict[str, Any], **changes) -> TrainConfig:
    """The ``TrainConfig`` a ``metrics.json`` records (its ``recipe`` label is read from the values anyway)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in recorded.items() if k in names}
    if "ks" in values:
        values["ks"] = tuple(values["ks"])
    return dataclasses.replace(TrainConfig(**values), **changes)


def best_weights(source: Path) -> Dict[str, torch.Tensor]:
    """The weights a finished run reports: its checkpoint's ``best_state`` (checked against ``metrics.json``'s
    best epoch)."""
    return _best_weights(Path(source), _finished_metrics(Path(source)))


def _finished_metrics(source: Path) -> Dict[str, Any]:
    """``metrics.json`` of a finished run (else :class:`DeriveError`)."""
    if not is_finished(source):
        raise DeriveError(f"{source} is not a finished run (metrics.json and {RECORD_NAME} are needed)")
    return json.loads((source / METRICS_NAME).read_text())


def _best_weights(source: Path, metrics: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    path = source / CHECKPOINT_NAME
    if not path.exists():
        raise DeriveError(f"{path} is missing: the run's best weights live in its checkpoint")
    state = read_checkpoint(path, DeriveError).get("state") or {}
    if state.get("best_state") is None or int(state.get("best_epoch", -1)) != int(metrics["best_epoch"]):
        raise DeriveError(f"{path} does not hold the best weights of epoch {metrics['best_epoch']} that "
                          f"{source / METRICS_NAME} reports")
    return state["best_state"]


def derive_eta0_run(source: Path, target: Path, splits, record: Optional[Dict[str, Any]] = None,
                    device: Any = "cpu", progress: bool = False) -> Dict[str, Any]:
    """Write ``target`` as the η = 0-at-test arm of the adapting run ``source``; return its ``metrics.json``.

    Args:
        source: a finished run folder of an adapting model (``adapt_at_test`` on, a ``set_adapt_at_test`` hook).
        target: the run folder to write (it must not hold a finished run).
        splits: the :class:`ttt4rec_edu.data.Splits` the source was trained on (its counts are checked, and the
            recomputed validation metrics must give back the recorded ones).
        record: facts for ``experiment.json`` (the experiment, its settings), beside the seed and the recipe.
        device: where to evaluate; progress: tqdm bars.
    """
    from .models import build_model

    source, target = Path(source), Path(target)
    if is_finished(target):
        raise DeriveError(f"{target} already holds a finished run")
    metrics = _finished_metrics(source)
    run, recorded = metrics.get("run", {}), metrics.get("config", {})
    if not recorded.get("adapt_at_test", True):
        raise DeriveError(f"{source} was evaluated with η = 0 already; derive from an adapting run")
    weights = _best_weights(source, metrics)
    counts = {k: metrics["data"].get(k) for k in splits.counts()}
    if counts != splits.counts() or int(metrics["data"]["num_items"]) != int(splits.num_items):
        raise DeriveError(f"{source} was trained on other data ({counts}, {metrics['data']['num_items']} items) "
                          f"than these splits ({splits.counts()}, {splits.num_items} items)")
    model = build_model(run["model"], splits.num_items, splits.max_len, **run.get("model_options", {}))
    if not callable(getattr(model, "set_adapt_at_test", None)):
        raise DeriveError(f"model {run['model']!r} does not adapt at test time: there is no η = 0 arm to derive")
    model.load_state_dict(weights)
    device = resolve_device(device)
    model.to(device)
    started = time.time()
    adapting = _config_of(recorded, device=device, progress=progress)
    again = evaluate_split(model, splits.valid, adapting, device, desc="valid (adapting, check)")
    drift = max(abs(again[k] - metrics["valid"][k]) for k in metrics["valid"])
    if drift > REPRODUCE_TOLERANCE:
        raise DeriveError(f"the best weights of {source} do not give back its recorded validation metrics "
                          f"(largest difference {drift:.2e}): other data or code?")
    frozen = dataclasses.replace(adapting, adapt_at_test=False)
    created = first_missing(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        valid = evaluate_split(model, splits.valid, frozen, device, desc="valid (η = 0)")
        test = evaluate_split(model, splits.test, frozen, device, desc="test (η = 0)",
                              ranks_out=target / RANKS_NAME)
        derived = {"run": str(run.get("experiment") or source), "seed": recorded.get("seed"),
                   "best_epoch": metrics["best_epoch"],
                   "what": "the adapting run's best weights evaluated again with η = 0 at test",
                   "valid_check_difference": drift}
        result = copy.deepcopy(metrics)
        config = frozen.to_dict()
        result.update(valid=valid, test=test, config=config, device=str(device), derived_from=derived,
                      run={**run, "derived_from": derived})
        atomic_write_json(target / METRICS_NAME, json_safe(result))
    except BaseException:
        for name in (RANKS_NAME, METRICS_NAME):
            (target / name).unlink(missing_ok=True)
        remove_if_empty(target, created)
        raise
    # the record last: its presence beside metrics.json marks the run as finished (ttt4rec_edu.runner)
    atomic_write_json(target / RECORD_NAME, {**(record or {}), "seed": recorded.get("seed"),
                                             "recipe": config["recipe"], "derived_from": derived,
                                             "wall_s": time.time() - started})
    return result


__all__ = ["DeriveError", "REPRODUCE_TOLERANCE", "best_weights", "derive_eta0_run"]
