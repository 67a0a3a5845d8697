"""One training run, set up and run: its folder's rules, the model, ``train()``, its record.

:func:`run_one` is the one place a run is set up — the command line's ``train`` and the experiments'
``reproduce`` both call it: claim the output folder, prove it writable, read the data (a
:class:`ttt4rec_edu.data.registry.DataRequest`), seed, build the model,
:func:`ttt4rec_edu.train.train`, and write the run's record ``experiment.json`` (:data:`RECORD_NAME`) last.

The folder rules sit here beside the trainer, with the trainer's own file names (``train.CHECKPOINT_NAME``,
``METRICS_NAME``, ``RANKS_NAME``):

- :func:`is_finished` is the one rule for "this run is done": its ``metrics.json`` *and* its record are there
  (the record is written after ``metrics.json``, so a run killed between the two is not taken as done);
  :func:`run_state` says ``finished``, ``resumable`` (a checkpoint) or ``new``.
- :func:`claim_out_dir` refuses an output folder whose files a new run would silently replace or mix with, or
  clears it on request (``--overwrite``), and a failed run removes the empty folders it created.

A run asked for with plain values is a :class:`TrainRequest` (the command line's ``train`` makes one from its
options, once); :func:`run_request` does the rest in the library, in this order: the recipe
(:func:`with_recipe`: an option given beside ``--recipe`` must agree with it), the device (resolved once, or by
``torchrun``'s process group), the one check of the trainer's settings (:func:`checked_config`), then
:func:`run_one`, which reads the request's data. Its messages name the command line's options (``--epochs``),
as the folder rules' do (``--out``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

from .data.registry import DataRequest
from .recipes import RECIPE_FIELDS, contradictions, recipe_values
from .train import (CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, WRITE_PROBE_PREFIX, TrainConfig, TrainConfigError,
                    TrainError, check_out_dir, train)
from .utils import atomic_write_json, is_atomic_leftover, set_seed

RECORD_NAME = "experiment.json"   # what the run was (model, data, seed, settings, recipe); written last
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, RECORD_NAME)   # a run's own files


class RunFolderError(TrainError):
    """The output folder holds something a new run must not silently replace or mix with."""


class RunSetupError(TrainError):
    """The run cannot be set up as asked (e.g. a model option its factory does not take)."""


# ------------------------------------------------------------------------------------------- the folder


def is_finished(folder: Path) -> bool:
    """The one rule: a run is finished when its ``metrics.json`` and its record (``experiment.json``) exist."""
    folder = Path(folder)
    return (folder / METRICS_NAME).exists() and (folder / RECORD_NAME).exists()


def run_state(folder: Path) -> str:
    """``"finished"`` (:func:`is_finished`), ``"resumable"`` (a checkpoint, not finished) or ``"new"``."""
    folder = Path(folder)
    if is_finished(folder):
        return "finished"
    return "resumable" if (folder / CHECKPOINT_NAME).exists() else "new"


def is_run_file(name: str) -> bool:
    """A run's own file, or the temporary file its atomic write leaves when killed mid-write."""
    return name in RUN_FILES or any(is_atomic_leftover(name, f) for f in RUN_FILES)


def _shown(names: List[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def claim_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` whose files a new run would silently replace or mix with, or clear it (``overwrite``).

    An empty or missing folder is fine. With ``resume`` a folder holding a checkpoint is fine (the trainer
    refuses a checkpoint of another model/config). Otherwise: ``overwrite`` deletes the earlier run's own files
    (:data:`RUN_FILES`, and only when nothing else is there), and without it every non-empty folder is refused in
    one line (:class:`RunFolderError`).
    """
    try:
        # another rank's writability probe (train.check_out_dir) is not a file of a run
        names = sorted(n for n in os.listdir(out_dir) if not n.startswith(WRITE_PROBE_PREFIX))
    except (FileNotFoundError, NotADirectoryError):
        return  # missing, or under a file: the writability check says so
    if not names or (resume and CHECKPOINT_NAME in names):
        return
    if overwrite:
        others = [n for n in names if not is_run_file(n)]
        if others:
            raise RunFolderError(f"--out {out_dir} holds files that are not a training run's ({_shown(others)}); "
                                 "--overwrite deletes only a run's own files: choose a new --out")
        for name in names:
            (out_dir / name).unlink(missing_ok=True)  # under torchrun every rank clears the same folder
        return
    if CHECKPOINT_NAME in names:
        finished = " finished" if is_finished(out_dir) else ""
        raise RunFolderError(f"--out {out_dir} holds {CHECKPOINT_NAME} of an earlier{finished} run: add --resume "
                             "to continue it, --overwrite to delete that run and start afresh, or choose a new --out")
    kind = "an earlier run's files" if all(is_run_file(n) for n in names) else "files"
    raise RunFolderError(f"--out {out_dir} is not empty (it holds {kind}: {_shown(names)}) and there is no "
                         f"{CHECKPOINT_NAME} to --resume; choose a new --out"
                         + (" or add --overwrite to replace that run" if kind != "files" else ""))


def first_missing(path: Path) -> Optional[Path]:
    """The outermost folder of ``path`` that does not exist yet (what creating ``path`` would create), or None."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def remove_if_empty(path: Path, created: Optional[Path]) -> None:
    """Remove the empty folders this run created, from ``path`` up to ``created``; never anything else."""
    if created is None:
        return
    for folder in [path, *path.parents]:
        try:
            folder.rmdir()  # only an empty folder can go
        except OSError:
            return
        if folder == created:
            return


# ------------------------------------------------------------------------------------------- the run


def run_one(model_name: str, out_dir: Path, config: TrainConfig, data: Union[DataRequest, Tuple[Any, Any]], *,
            model_options: Optional[Dict[str, Any]] = None, run_info: Optional[Dict[str, Any]] = None,
            record: Optional[Dict[str, Any]] = None, resume: bool = False, overwrite: bool = False,
            claim: bool = True, dist=None) -> Dict[str, Any]:
    """Set up and run one training run; return its ``metrics.json`` content (``train()``'s result).

    Args:
        model_name: a registered model (``ttt4rec_edu.models``), built with ``model_options``.
        out_dir: the run's folder.
        config: the trainer's settings (its seed seeds the model's initial weights too; its device is used as it
            is); ``train()`` checks them unless they passed the check already (:func:`checked_config`).
        data: what to read (a :class:`ttt4rec_edu.data.registry.DataRequest`, read once the folder is proven
            writable), or the ``(SequenceData, Splits)`` already read (the experiments share one load per cell).
        run_info: facts recorded under ``run`` in ``metrics.json`` beside the model, its options and the data.
        record: facts written to ``experiment.json`` beside the seed, the recipe and the wall time.
        resume, overwrite: as ``train --resume`` / ``--overwrite``; ``claim=False`` skips :func:`claim_out_dir`
            (the experiments decide themselves whether a folder's run is resumed).
        dist: the ``torchrun`` context, or ``None``.

    A failed run leaves no empty folder behind (a folder holding a checkpoint stays).
    """
    from .data import dataset_stats
    from .models import build_model

    out_dir = Path(out_dir)
    options = dict(model_options or {})
    if claim:
        claim_out_dir(out_dir, resume, overwrite)
    created = first_missing(out_dir)
    started = time.time()
    try:
        check_out_dir(out_dir)  # before any data is read or any epoch is spent
        data, splits = data.load() if isinstance(data, DataRequest) else data
        set_seed(config.seed)  # the model's initial weights depend on the seed too
        try:
            model = build_model(model_name, splits.num_items, splits.max_len, **options)
        except TypeError as err:  # an option the model's factory does not take
            raise RunSetupError(f"model {model_name!r} rejected the options {options}: {err}") from None
        # the times' mode really used: a source without times (synthetic) records none
        info = {"model": model_name, "model_options": options, "data_name": data.name,
                "max_len": splits.max_len, "split": str(splits.split),
                "timestamps": (data.meta or {}).get("timestamps"), **(run_info or {})}
        result = train(model, splits, config, out_dir=out_dir, resume=resume, data_stats=dataset_stats(data),
                       run_info=info, dist=dist)
    except BaseException:
        remove_if_empty(out_dir, created)
        raise
    if dist is None or dist.is_main:
        # the record last: its presence beside metrics.json marks the run as finished (is_finished)
        atomic_write_json(out_dir / RECORD_NAME, {**(record or {}), "seed": config.seed,
                                                  "recipe": result["config"]["recipe"],
                                                  "wall_s": time.time() - started})
    return result


# ------------------------------------------------------------------------------------------- the request


def option_name(field_name: str) -> str:
    """The command line's option of a :class:`TrainConfig` field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def shown_value(value) -> str:
    """A setting as the command line writes it: ``on``/``off``, ``0.001``, ``256``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def with_recipe(recipe: Optional[str], values: Mapping[str, Any], given: Collection[str] = ()) -> Dict[str, Any]:
    """``values`` (:class:`TrainConfig` fields) with recipe ``recipe``'s values set; an option ``given`` beside the
    recipe that contradicts it is refused in one line (the override is never recorded silently under the recipe's
    name). ``recipe=None`` returns ``values`` unchanged."""
    values = dict(values)
    if recipe is None:
        return values
    asked = {name: values[name] for name in given if name in RECIPE_FIELDS and name in values}
    wrong = contradictions(recipe, asked)
    if wrong:
        fixed = recipe_values(recipe)
        shown = ", ".join(f"{option_name(k)} {shown_value(v)} (the recipe has {shown_value(fixed[k])})"
                          for k, v in wrong.items())
        raise RunSetupError(f"--recipe {recipe} contradicts {shown}: leave the option out, or leave --recipe "
                            "out to make a custom run")
    values.update(recipe_values(recipe))
    return values


def checked_config(config: TrainConfig, recipe: Optional[str] = None) -> TrainConfig:
    """``config`` after :meth:`TrainConfig.validate` (the one check; a command's run trains at least one epoch),
    its problems told by option name; with ``recipe``, also that the config is that recipe's (so no option the
    command lacks was left at another value)."""
    try:
        config.validate(trains=True)
    except TrainConfigError as err:
        raise RunSetupError("; ".join(option_name(name) + message[len(name):] for name, message in err.problems)) \
            from None
    made = config.to_dict()["recipe"]
    if recipe is not None and made != recipe:
        raise RunSetupError(f"--recipe {recipe}: the run's settings make recipe {made!r}")
    return config


def resolve_run_device(device):
    """``--device`` resolved once for a run (or a table of runs); the trainer takes the result as it is."""
    from .utils import resolve_device

    try:
        return resolve_device(device)
    except RuntimeError as err:
        raise RunSetupError(f"--device {device}: {err}") from None


@dataclass
class TrainRequest:
    """One training run asked for with plain values; :func:`run_request` checks, sets up and runs it.

    ``training`` holds :class:`TrainConfig` field values (the trainer's defaults for those left out; ``device``
    unresolved, ``progress`` as asked: only the writing rank shows it); ``given`` names the ones asked for
    explicitly, which ``recipe`` may not contradict. ``model_options`` go to the model's factory.
    """

    model: str
    data: DataRequest
    out_dir: Path
    training: Dict[str, Any] = field(default_factory=dict)
    recipe: Optional[str] = None
    given: FrozenSet[str] = frozenset()
    model_options: Dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False


def run_request(request: TrainRequest) -> Optional[Dict[str, Any]]:
    """Check and run ``request``: its recipe, its device (under ``torchrun``: join the process group, one GPU per
    process), the one check of its settings, then :func:`run_one`. Returns ``metrics.json``'s content on the
    process that writes (the only one, or rank 0), ``None`` on the other ranks."""
    from . import distributed

    values = with_recipe(request.recipe, request.training, request.given)
    device = values.get("device", "auto")
    try:
        context = distributed.init_from_env(device)   # None unless started by torchrun
    except (RuntimeError, ValueError) as err:
        raise RunSetupError(f"torchrun / --device {device}: {err}") from None
    try:
        result = _run_checked(request, values, context)
    except BaseException:   # no barrier: the other ranks may never reach it (torchrun stops them)
        distributed.shutdown(context, barrier=False)
        raise
    distributed.shutdown(context)
    return result if context is None or context.is_main else None


def _run_checked(request: TrainRequest, values: Dict[str, Any], context) -> Dict[str, Any]:
    is_main = context is None or context.is_main
    # torchrun: init_from_env resolved this rank's device; else the one resolution of the run
    device = context.device if context is not None else resolve_run_device(values.get("device", "auto"))
    config = checked_config(TrainConfig(**{**values, "device": device,
                                           "progress": values.get("progress", True) and is_main}), request.recipe)
    data = request.data
    return run_one(request.model, request.out_dir, config, data, model_options=request.model_options,
                   run_info={"data": data.source, "format": data.format}, resume=request.resume,
                   overwrite=request.overwrite, dist=context,
                   record={"model": request.model, "model_options": request.model_options, "data": data.source,
                           "split": data.split})


__all__ = ["RECORD_NAME", "RUN_FILES", "RunFolderError", "RunSetupError", "is_finished", "run_state",
           "is_run_file", "claim_out_dir", "first_missing", "remove_if_empty", "run_one", "TrainRequest",
           "run_request", "with_recipe", "checked_config", "resolve_run_device", "option_name", "shown_value"]
