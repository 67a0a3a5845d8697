"""The one command line: ``python -m ttt4rec_edu {data stats, train, reproduce, model-summary, instructor} ...``
(``--help`` on each; ``ttt4rec_edu/__main__.py`` only calls :func:`main`, and ``python -m ttt4rec_edu.exercises``
is the older spelling of ``instructor``).

``train`` also runs data-parallel under ``torchrun --nproc_per_node N -m ttt4rec_edu train ...``
(``ttt4rec_edu.distributed``); ``reproduce`` reruns the paper's tables (running and reports:
``ttt4rec_edu.experiments``; cost estimates: ``ttt4rec_edu.estimate``).

This module imports the library and nothing in the library imports it. The training options take their defaults
from :class:`ttt4rec_edu.train.TrainConfig` and are checked by its ``validate()``; the device is resolved once
per run, here, and handed on resolved.

Every expected problem (unknown dataset, missing file, malformed split, bad max length, unknown model, a model
option of the wrong type, unwritable output folder, an output folder holding another run, a checkpoint of another
run) ends with one ``error: ...`` line on stderr and exit status 2 — no traceback. Anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

from .experiments import (TABLES, ExperimentError, RunSettings, collect_results, format_summary, paper_row,
                          run_dir, run_experiments, select, summarize, table_experiments, write_reports)
from .backbones import BACKBONES
from .data.filtering import DEFAULT_TIMESTAMPS, TIMESTAMP_MODES
from .losses import LOSS_COLUMNS
from .metrics import TIE_POLICIES
from .train import CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME, WRITE_PROBE_PREFIX, TrainConfig, TrainConfigError
from .ttt import INNER_MODELS
from .utils import is_atomic_leftover

EXIT_USAGE = 2

_RAW = argparse.RawDescriptionHelpFormatter

DATA_STATS_EXAMPLES = """\
examples:
  python -m ttt4rec_edu data stats --data amazon-beauty
  python -m ttt4rec_edu data stats --data my_clicks.csv --split 6:2:2 --max-len 50 --json
  python -m ttt4rec_edu data stats --data synthetic
"""

TRAIN_EXAMPLES = """\
examples:
  python -m ttt4rec_edu train --model pop --data amazon-beauty --out runs/pop-beauty
  python -m ttt4rec_edu train --model ttt4rec --data amazon-beauty --epochs 20 --out runs/ttt-beauty
  python -m ttt4rec_edu train --model ttt4rec --data gowalla --backbone mamba --inner linear --bf16
  python -m ttt4rec_edu train --model ttt4rec --data clicks.csv --model-arg num_blocks=2 --resume --out runs/t
  python -m ttt4rec_edu train --model ttt4rec --data synthetic --adapt-at-test off --max-train-batches 5

  torchrun --nproc_per_node 4 -m ttt4rec_edu train --model ttt4rec --data gowalla --out runs/ttt-gowalla

The run writes OUT/metrics.json (valid and test HR@10/50, NDCG@10/50, config, data statistics, per-epoch
history) and OUT/checkpoint.pt after every epoch; --resume continues a killed run from that checkpoint.
An OUT that already holds files is never written over unasked: --resume continues its checkpoint, --overwrite
deletes the earlier run's files first, or choose a new --out.
Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) the run is data-parallel: each process takes a slice of every
global batch of --batch-size samples, gradients are summed across processes (gloo on CPU, nccl on GPU, one GPU
per process: cuda:LOCAL_RANK), evaluation is sharded and gathered, and only rank 0 prints and writes files.
"""

SUMMARY_EXAMPLES = """\
examples:
  python -m ttt4rec_edu model-summary --model ttt4rec
  python -m ttt4rec_edu model-summary --model ttt4rec --backbone mamba --inner linear --num-items 12101
  python -m ttt4rec_edu model-summary --model sasrec --json
"""

MAIN_EXAMPLES = """\
commands:
  data stats      dataset statistics and train/valid/test sample counts
  train           train a model and write OUT/metrics.json (data-parallel under torchrun)
  reproduce       rerun the paper's Tables 2-4 (or the CPU-scale 'beauty' table) beside the paper's numbers
  model-summary   parameter counts of a model, per submodule
  instructor      the exercise index of the instructor guide, student notebooks, grading

examples:
  python -m ttt4rec_edu data stats --data amazon-beauty
  python -m ttt4rec_edu train --model pop --data amazon-beauty --out runs/pop
  python -m ttt4rec_edu reproduce --table 2 --device cuda --out results/
  python -m ttt4rec_edu model-summary --model ttt4rec
  python -m ttt4rec_edu instructor export --chapter 3 --out handout/
"""


class CliError(Exception):
    """An expected problem with the user's input: printed as one line, exit status 2."""


_TRAINER = TrainConfig()  # the training defaults, written once (ttt4rec_edu.train.TrainConfig)


# ------------------------------------------------------------------------------------------- parsing


def _int_at_least(minimum: int, what: str = "value"):
    """An argparse ``type`` accepting whole numbers >= ``minimum``, with a message naming ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            bound = "> 0" if minimum == 1 else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"{what} must be {bound}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)
_max_len = _int_at_least(1, "max length")


def _integer(text: str) -> int:
    """A whole number; its range is :class:`TrainConfig`'s to check (``validate()``, the one check)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    """A number; its range is :class:`TrainConfig`'s to check."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _epochs(text: str) -> int:
    """At least one epoch: ``--epochs 0`` would train nothing and still write ``metrics.json`` (the library's
    ``TrainConfig(epochs=0)`` stays allowed: the book evaluates untrained models with it)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (0 epochs would train nothing), got {value}")
    return value


def _split(text: str) -> str:
    from .data.protocol import parse_split

    try:
        parse_split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _loss_chunk(text: str):
    """``auto`` | ``off`` | a number of items → ``"auto"``, ``"off"`` or ``int`` (TrainConfig checks it is
    positive)."""
    value = text.strip().lower()
    if value in {"auto", "off"}:
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, off or a positive number of items, got {text!r}") from None


def add_loss_chunk_option(group) -> None:
    group.add_argument("--loss-chunk", type=_loss_chunk, default=_TRAINER.loss_chunk, metavar="auto|off|N",
                       help="exact full-softmax loss in item chunks: auto (only when the (batch x items) logits "
                            "would not fit, e.g. Gowalla's 1.28 M items), off (always plain), or N items per "
                            "chunk (default auto; all give the same loss)")


def add_protocol_options(group, timestamps: bool = True, ties: bool = True) -> None:
    """``--timestamps`` and ``--ties``: the evaluation protocol's two RecBole details (see the data chapter)."""
    if timestamps:
        group.add_argument("--timestamps", choices=TIMESTAMP_MODES, default=DEFAULT_TIMESTAMPS,
                           help="sort each user's interactions by float32 times as RecBole does (recbole, the "
                                "default) or by the exact float64 values (exact)")
    if ties:
        group.add_argument("--ties", choices=sorted(TIE_POLICIES), default=_TRAINER.ties,
                           help="items scoring exactly like the target: expected HR/NDCG over random tie "
                                "orders (average, the default), target first (optimistic) or last")


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in {"on", "true", "yes", "1"}:
        return True
    if value in {"off", "false", "no", "0"}:
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def _model_arg(text: str):
    """``KEY=VALUE`` → ``(key, value)`` with the value read as int, float, bool, none or else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"bad option name {key!r} in {text!r}")
    return key, _parse_value(raw.strip())


def _parse_value(raw: str):
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    lowered = raw.lower()
    if lowered in {"true", "on", "yes"}:
        return True
    if lowered in {"false", "off", "no"}:
        return False
    if lowered in {"none", "null"}:
        return None
    return raw


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="a registered dataset (amazon-beauty, gowalla, twitch-100k, ...), a file, or 'synthetic'")
    g.add_argument("--format", default=None, metavar="F",
                   help="file format when it cannot be detected from the file (see the data chapter)")
    g.add_argument("--split", type=_split, default="3:2:5", metavar="A:B:C",
                   help="train:valid:test ratios of each user's samples, or 'loo' (default 3:2:5)")
    g.add_argument("--max-len", type=_max_len, default=None, metavar="N",
                   help="context length (default: the dataset's registry setting, 50 for files)")
    g.add_argument("--min-user-inter", type=_non_negative_int, default=None, metavar="N",
                   help="drop users with fewer interactions (default: the dataset's setting)")
    g.add_argument("--min-item-inter", type=_non_negative_int, default=None, metavar="N",
                   help="drop items with fewer interactions (default: the dataset's setting)")
    g.add_argument("--cache-dir", default=None, metavar="DIR", help="download cache (default: data/ cache)")
    g.add_argument("--offline", action="store_true", help="never download; use the cache and mirrors only")
    add_protocol_options(g, ties=False)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="NAME", help="a registered model (see model-summary)")
    g.add_argument("--backbone", choices=tuple(BACKBONES), default=None,
                   help="TTT4Rec backbone (passed to the model only when given)")
    g.add_argument("--inner", choices=INNER_MODELS, default=None,
                   help="TTT4Rec inner model (passed to the model only when given)")
    g.add_argument("--adapt", type=_on_off, default=None, metavar="on|off",
                   help="TTT4Rec: off = no inner step in training *or* at test (W_t = W0), the control "
                        "for --adapt-at-test off (passed to the model only when given)")
    g.add_argument("--model-arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="any other model option, repeatable (e.g. --model-arg mini_batch_size=16)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ttt4rec_edu", formatter_class=_RAW,
                                     description="TTT4Rec, the book: data, training and evaluation.",
                                     epilog=MAIN_EXAMPLES)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    data = commands.add_parser("data", help="dataset tools", formatter_class=_RAW,
                               description="Dataset tools.", epilog=DATA_STATS_EXAMPLES)
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_commands.required = True
    stats = data_commands.add_parser("stats", help="users, items, interactions, average length, sample counts",
                                     formatter_class=_RAW, epilog=DATA_STATS_EXAMPLES,
                                     description="Print dataset statistics after filtering and the number of "
                                                 "train/valid/test samples under the evaluation protocol.")
    _add_data_options(stats)
    stats.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    stats.set_defaults(handler=cmd_data_stats)

    tr = commands.add_parser("train", help="train and evaluate a model, write OUT/metrics.json",
                             formatter_class=_RAW, epilog=TRAIN_EXAMPLES,
                             description="Train a registered model with the paper's outer loop (Adam, early "
                                         "stopping on valid NDCG@10) and evaluate it on the test split.")
    _add_model_options(tr)
    _add_data_options(tr)
    g = tr.add_argument_group("training")
    d = _TRAINER
    g.add_argument("--epochs", type=_epochs, default=d.epochs, help=f"maximum epochs (default {d.epochs})")
    g.add_argument("--patience", type=_integer, default=d.patience,
                   help=f"early-stopping patience in epochs (default {d.patience})")
    g.add_argument("--batch-size", type=_integer, default=d.batch_size,
                   help=f"training batch (default {d.batch_size})")
    g.add_argument("--eval-batch-size", type=_integer, default=d.eval_batch_size,
                   help=f"evaluation batch (default {d.eval_batch_size})")
    g.add_argument("--lr", type=_number, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    g.add_argument("--device", default=d.device, help=f"auto | cpu | cuda | cuda:N (default {d.device})")
    g.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only; ignored on CPU)")
    g.add_argument("--max-train-batches", type=_integer, default=d.max_train_batches, metavar="N",
                   help="at most N training batches per epoch (quick runs)")
    g.add_argument("--adapt-at-test", type=_on_off, default=d.adapt_at_test, metavar="on|off",
                   help="off: switch test-time adaptation off during evaluation (models that support it)")
    add_loss_chunk_option(g)
    add_protocol_options(g, timestamps=False)
    g.add_argument("--loss-columns", choices=LOSS_COLUMNS, default=d.loss_columns,
                   help="softmax over the items 1..N (default) or over all N + 1 columns, padding included, "
                        "as the official TTT4Rec code")
    g.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/MODEL-DATA)")
    again = g.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    again.add_argument("--overwrite", action="store_true",
                       help=f"DIR holds an earlier run: delete its files ({CHECKPOINT_NAME}, {METRICS_NAME}, "
                            f"{RANKS_NAME}) and start afresh (nothing else in DIR is ever deleted)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    tr.set_defaults(handler=cmd_train)

    add_reproduce_parser(commands)

    add_instructor_parser(commands)

    ms = commands.add_parser("model-summary", help="parameter counts per submodule",
                             formatter_class=_RAW, epilog=SUMMARY_EXAMPLES,
                             description="Build a registered model and count its parameters per top-level "
                                         "submodule.")
    _add_model_options(ms)
    ms.add_argument("--num-items", type=_positive_int, default=12101,
                    help="item vocabulary size (default 12101, Amazon Beauty 5-core)")
    ms.add_argument("--max-len", type=_max_len, default=50, help="context length (default 50)")
    ms.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ms.set_defaults(handler=cmd_model_summary)
    return parser


# ------------------------------------------------------------------------------------------- helpers


_RESERVED_MODEL_ARGS = {"name": "--model", "num_items": "the data (or --num-items)",
                        "max_len": "--max-len", "adapt": "--adapt on|off"}


def _model_overrides(args) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {}
    if args.backbone is not None:
        overrides["backbone"] = args.backbone
    if args.inner is not None:
        overrides["inner"] = args.inner
    if args.adapt is not None:
        if args.model != "ttt4rec":
            raise CliError(f"--adapt: {args.model} has no test-time adaptation (only ttt4rec has)")
        overrides["adapt"] = args.adapt
    for key, value in args.model_arg:
        if key in _RESERVED_MODEL_ARGS:
            raise CliError(f"--model-arg {key}=...: {key!r} is set by {_RESERVED_MODEL_ARGS[key]}, not by --model-arg")
        overrides[key] = value
    return overrides


def _check_model_name(name: str) -> None:
    from .models import available_models

    names = available_models()
    if name not in names:
        raise CliError(f"unknown model {name!r}; available: {', '.join(names)}")


def _accepts(value, hint) -> bool:
    """Whether ``value`` (as ``--model-arg`` parsed it) fits a config field's type ``hint``; unknown kinds of
    hints (tuples, literals, ...) accept anything and are left to the model."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_accepts(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _check_model_arg_types(name: str, overrides: Dict[str, Any]) -> None:
    """One line naming the option, its value and the type the model's config expects, for a ``--model-arg`` of the
    wrong type (``hidden_size=abc``), before the model's own code fails on it with a message about ``<``. The types
    and defaults are the fields of the config dataclass the model registered (``models.model_config_class``)."""
    from .models import model_config_class

    config = model_config_class(name) if overrides else None
    if config is None:
        return
    try:
        hints = typing.get_type_hints(config)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults' types
        hints = {}
    for field in dataclasses.fields(config):
        if field.name not in overrides or field.default is dataclasses.MISSING:
            continue
        value, default = overrides[field.name], field.default
        hint = hints.get(field.name, type(default))
        if not _accepts(value, hint):
            expected = getattr(hint, "__name__", str(hint).replace("typing.", ""))
            raise CliError(f"--model-arg {field.name}={value!r}: {name}'s {field.name} takes {expected} "
                           f"values (default {default!r}), got {type(value).__name__} {value!r}")


def _build_model(name: str, num_items: int, max_len: int, overrides: Dict[str, Any]):
    """The registered model ``name`` (its commands checked the name first, with ``_check_model_name``)."""
    from .models import build_model

    try:
        return build_model(name, num_items, max_len, **overrides)
    except TypeError as err:  # an option the model's factory does not take
        raise CliError(f"model {name!r} rejected the options {overrides}: {err}") from None


def _load_data(args):
    """The ``SequenceData`` named by ``--data`` (registry name, file path or ``synthetic``)."""
    from .data import load_data_source

    return load_data_source(args.data, format=args.format, min_user_inter=args.min_user_inter,
                            min_item_inter=args.min_item_inter, cache_dir=args.cache_dir, offline=args.offline,
                            timestamps=args.timestamps)


def _effective_max_len(args, data) -> int:
    if args.max_len is not None:
        return args.max_len
    meta_len = (data.meta or {}).get("max_len")
    return int(meta_len) if meta_len else 50


def _stats_and_splits(args):
    from .data import build_splits, dataset_stats

    data = _load_data(args)
    max_len = _effective_max_len(args, data)
    splits = build_splits(data, max_len, args.split)
    stats = dict(dataset_stats(data))
    stats.update(splits.counts())
    return data, splits, stats, max_len


def _print_table(rows: List[tuple]) -> None:
    width = max(len(str(k)) for k, _ in rows)
    for key, value in rows:
        if isinstance(value, float):
            value = f"{value:.4f}"
        print(f"{str(key):<{width}}  {value}")


# ------------------------------------------------------------------------------------------- commands


def cmd_data_stats(args) -> int:
    data, splits, stats, max_len = _stats_and_splits(args)
    keys = ("users", "items", "interactions", "avg_seq_len", "train", "valid", "test")
    out = {k: stats[k] for k in keys}
    if "users_order_differs" in data.meta:  # read from a file: RecBole's float32 times vs the exact ones
        keys += ("timestamps", "users_order_differs")
        out.update(timestamps=args.timestamps, users_order_differs=data.meta["users_order_differs"])
    if args.json:
        print(json.dumps({**out, "name": data.name, "max_len": max_len, "split": args.split}))
    else:
        print(f"dataset {data.name} (max length {max_len}, split {args.split})")
        _print_table([(k, out[k]) for k in keys])
    return 0


def cmd_train(args) -> int:
    from . import distributed

    _check_model_name(args.model)
    try:
        context = distributed.init_from_env(args.device)  # None unless started by torchrun
    except (RuntimeError, ValueError) as err:
        raise CliError(f"torchrun / --device {args.device}: {err}") from None
    try:
        code = _train(args, context)
    except BaseException:  # no barrier: the other ranks may never reach it (torchrun stops them)
        distributed.shutdown(context, barrier=False)
        raise
    distributed.shutdown(context)
    return code


def _checked(config: TrainConfig) -> TrainConfig:
    """``config`` after :meth:`TrainConfig.validate` (the one check), its problems told by option name."""
    try:
        config.validate()
    except TrainConfigError as err:
        raise CliError("; ".join("--" + field.replace("_", "-") + message[len(field):]
                                 for field, message in err.problems)) from None
    return config


def _train_config(args, device, is_main: bool) -> TrainConfig:
    return _checked(TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                eval_batch_size=args.eval_batch_size, patience=args.patience, seed=args.seed,
                                device=device, bf16=args.bf16, max_train_batches=args.max_train_batches,
                                adapt_at_test=args.adapt_at_test, loss_chunk=args.loss_chunk,
                                progress=not args.no_progress and is_main, ties=args.ties,
                                loss_columns=args.loss_columns))


# The trainer's own files, and the temporary files its atomic writes leave when killed mid-write.
_RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, RANKS_NAME)


def _is_run_file(name: str) -> bool:
    return name in _RUN_FILES or any(is_atomic_leftover(name, f) for f in _RUN_FILES)


def _shown(names: List[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _claim_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` whose files a new run would silently replace or mix with, or clear it (``--overwrite``).

    An empty or missing folder is fine. With ``--resume`` a folder holding a checkpoint is fine (the trainer
    refuses a checkpoint of another model/config). Otherwise: ``--overwrite`` deletes the earlier run's own files
    (and only when nothing else is there), and without it every non-empty folder is refused in one line.
    """
    try:
        # another rank's writability probe (train._check_out_dir) is not a file of a run
        names = sorted(n for n in os.listdir(out_dir) if not n.startswith(WRITE_PROBE_PREFIX))
    except (FileNotFoundError, NotADirectoryError):
        return  # missing, or under a file: the writability check says so
    if not names or (resume and CHECKPOINT_NAME in names):
        return
    if overwrite:
        others = [n for n in names if not _is_run_file(n)]
        if others:
            raise CliError(f"--out {out_dir} holds files that are not a training run's ({_shown(others)}); "
                           "--overwrite deletes only a run's own files: choose a new --out")
        for name in names:
            (out_dir / name).unlink(missing_ok=True)  # under torchrun every rank clears the same folder
        return
    if CHECKPOINT_NAME in names:
        finished = " finished" if METRICS_NAME in names else ""
        raise CliError(f"--out {out_dir} holds {CHECKPOINT_NAME} of an earlier{finished} run: add --resume to "
                       "continue it, --overwrite to delete that run and start afresh, or choose a new --out")
    kind = "an earlier run's files" if all(_is_run_file(n) for n in names) else "files"
    raise CliError(f"--out {out_dir} is not empty (it holds {kind}: {_shown(names)}) and there is no "
                   f"{CHECKPOINT_NAME} to --resume; choose a new --out"
                   + (" or add --overwrite to replace that run" if kind != "files" else ""))


def _first_missing(path: Path) -> Optional[Path]:
    """The outermost folder of ``path`` that does not exist yet (what creating ``path`` would create), or None."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_if_empty(path: Path, created: Optional[Path]) -> None:
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


def _train(args, context) -> int:
    from .train import _check_out_dir, train
    from .utils import resolve_device, set_seed

    if context is not None:  # torchrun: init_from_env already resolved this rank's device
        device = context.device
    else:
        try:
            device = resolve_device(args.device)  # the one resolution of the run; the trainer takes it as is
        except RuntimeError as err:
            raise CliError(f"--device {args.device}: {err}") from None
    is_main = context is None or context.is_main
    config = _train_config(args, device, is_main)
    overrides = _model_overrides(args)
    _check_model_arg_types(args.model, overrides)
    out_dir = Path(args.out) if args.out else Path("runs") / f"{args.model}-{Path(args.data).stem}"
    _claim_out_dir(out_dir, args.resume, args.overwrite)
    created = _first_missing(out_dir)
    try:
        _check_out_dir(out_dir)  # before any data is read or any epoch is spent
        data, splits, stats, max_len = _stats_and_splits(args)
        set_seed(args.seed)  # the model's initial weights depend on the seed too
        model = _build_model(args.model, splits.num_items, max_len, overrides)
        run_info = {"model": args.model, "model_options": overrides, "data": args.data, "format": args.format,
                    "data_name": data.name, "max_len": max_len, "split": args.split,
                    "timestamps": args.timestamps}
        result = train(model, splits, config, out_dir=out_dir, resume=args.resume, data_stats=stats,
                       run_info=run_info, dist=context)
    except BaseException:  # a failed run leaves no empty folder behind (a folder with a checkpoint stays)
        _remove_if_empty(out_dir, created)
        raise
    if not is_main:
        return 0
    test = result["test"]
    shown = "  ".join(f"{k}={v:.4f}" for k, v in test.items())
    print(f"test: {shown}")
    print(f"wrote {out_dir / 'metrics.json'}")
    return 0


def cmd_model_summary(args) -> int:
    from .models import parameter_summary

    overrides = _model_overrides(args)
    _check_model_name(args.model)
    _check_model_arg_types(args.model, overrides)
    model = _build_model(args.model, args.num_items, args.max_len, overrides)
    summary = parameter_summary(model)  # depth 1: the model's top-level submodules, shared tensors counted once
    if args.json:
        print(json.dumps({"model": args.model, "class": type(model).__name__, "options": overrides,
                          "num_items": args.num_items, "max_len": args.max_len,
                          "modules": {row.name: {"parameters": row.total, "trainable": row.trainable}
                                      for row in summary.rows},
                          "total": summary.total, "trainable": summary.trainable}))
        return 0
    print(f"{args.model} ({type(model).__name__}), num_items={args.num_items}, max_len={args.max_len}"
          + (f", options {overrides}" if overrides else ""))
    rows = [(row.name, f"{row.total:,}") for row in summary.rows]
    rows.append(("total", f"{summary.total:,}"))
    rows.append(("trainable", f"{summary.trainable:,}"))
    _print_table(rows)
    return 0


# ------------------------------------------------------------------------------------------- reproduce


TABLE_HELP = {
    "2": ("Table 2: GRU4Rec, NARM, SASRec, BERT4Rec, Mamba4Rec, TTT4Rec (Transformer, MLP) on gowalla, "
          "twitch-100k, amazon-video-games, split 3:2:5", "18 cells × 3 seeds = 54 runs",
          "ESTIMATE ~150 GPU hours (3 seeds, 50 epochs, 10 TFLOP/s; dominated by Gowalla's 1.28 M "
          "items, whose loss runs in exact item chunks; see --estimate)"),
    "3": ("Table 3: TTT4Rec {Transformer, Mamba} × {Linear, MLP} inner models on gowalla and "
          "amazon-video-games, split 3:2:5", "8 cells × 3 seeds = 24 runs (2 cells shared with Table 2)",
          "ESTIMATE ~22 GPU hours (see --estimate)"),
    "4": ("Table 4: the six models on amazon-video-games with more training data, split 6:2:2",
          "6 cells × 3 seeds = 18 runs", "ESTIMATE ~0.7 GPU hours (see --estimate)"),
    "beauty": ("CPU-scale (not in the paper): Pop + the six models + TTT4Rec with η = 0 at test + TTT4Rec "
               "trained and tested without adaptation (fixed W0) on Amazon Beauty 5-core, splits 3:2:5 and 6:2:2",
               "18 cells × 3 seeds = 54 runs",
               "ESTIMATE ~0.2 GPU hours (--estimate also gives this machine's CPU hours)"),
}


def _reproduce_epilog() -> str:
    lines = ["tables:"]
    for table, (what, runs, cost) in TABLE_HELP.items():
        lines += [f"  {table:<7} {what}", f"          {runs}; {cost}"]
    lines += ["", "examples:",
              "  python -m ttt4rec_edu reproduce --table 2 --device cuda --out results/",
              "  python -m ttt4rec_edu reproduce --table 3 --dataset amazon-video-games --seeds 0",
              "  python -m ttt4rec_edu reproduce --table 2 --estimate",
              "  python -m ttt4rec_edu reproduce --table 4 --list",
              "  python -m ttt4rec_edu reproduce --table 2 --data synthetic --max-users 200 --epochs 1 "
              "--models sasrec ttt4rec --out /tmp/demo",
              "",
              "Writes OUT/results.csv (one row per run), OUT/summary.csv and OUT/summary.md (mean ± std over "
              "seeds beside the paper's value and the difference in percent). Finished runs are skipped and a "
              "killed run resumes from its checkpoint: rerun the same command to continue."]
    return "\n".join(lines)


def add_reproduce_parser(commands) -> argparse.ArgumentParser:
    """The ``reproduce`` subcommand (added to the command line's subparsers); its defaults are
    :class:`ttt4rec_edu.experiments.RunSettings`' (the trainer's)."""
    d = RunSettings()
    p = commands.add_parser("reproduce", help="rerun the paper's tables and compare with its numbers",
                            formatter_class=_RAW, epilog=_reproduce_epilog(),
                            description="Run the named experiments of one table (missing runs only) and "
                                        "summarise them beside the paper's numbers.")
    p.add_argument("--table", required=True, choices=TABLES, help="which table (see below)")
    p.add_argument("--dataset", nargs="+", default=None, metavar="D", help="only these datasets")
    p.add_argument("--split", nargs="+", default=None, metavar="A:B:C",
                   help="only these splits (the beauty table has 3:2:5 and 6:2:2)")
    p.add_argument("--models", nargs="+", default=None, metavar="M",
                   help="only these models (registry names, or variants such as ttt4rec-mamba-linear)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S", help="seeds (default 0 1 2)")
    p.add_argument("--device", default=d.device, help=f"auto | cpu | cuda | cuda:N (default {d.device})")
    p.add_argument("--out", default="results", metavar="DIR", help="results folder (default results/)")
    p.add_argument("--list", action="store_true", help="print the experiments with their keys; run nothing")
    p.add_argument("--dry-run", action="store_true", help="print what would run or be skipped; run nothing")
    p.add_argument("--estimate", action="store_true",
                   help="print the ESTIMATED GPU hours and memory of the table (FLOP counts); run nothing")
    g = p.add_argument_group("budgeted and tiny runs (CPU budgets, tests, demos; recorded with every run)")
    g.add_argument("--epochs", type=_epochs, default=d.epochs, help=f"maximum epochs (default {d.epochs})")
    g.add_argument("--patience", type=_integer, default=d.patience,
                   help=f"early-stopping patience (default {d.patience})")
    g.add_argument("--batch-size", type=_integer, default=d.batch_size, metavar="B",
                   help=f"training batch (default {d.batch_size}, the paper's; smaller batches take more steps per "
                        "epoch)")
    g.add_argument("--max-train-batches", type=_integer, default=d.max_train_batches, metavar="N",
                   help="at most N training batches per epoch")
    g.add_argument("--max-users", type=_positive_int, default=None, metavar="N",
                   help="keep only the first N users of each dataset")
    g.add_argument("--data", default=None, metavar="NAME_OR_PATH",
                   help="replace every dataset by this one (a registry name, a file, or 'synthetic')")
    add_protocol_options(g)
    t = p.add_argument_group("training")
    add_loss_chunk_option(t)
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    t.add_argument("--cache-dir", default=None, metavar="DIR", help="download cache (default: data/ cache)")
    t.add_argument("--offline", action="store_true", help="never download; use the cache and mirrors only")
    t.add_argument("--progress", action="store_true", help="progress bars and per-epoch lines of every run")
    p.set_defaults(handler=cmd_reproduce)
    return p


def cmd_reproduce(args) -> int:
    """``python -m ttt4rec_edu reproduce``: list, estimate, dry-run or run a table and write the reports."""
    from .utils import resolve_device

    experiments = select(table_experiments(args.table), args.dataset, args.models, args.split)
    if args.list:
        for exp in experiments:
            paper = paper_row(exp)
            shown = f"paper ndcg@10 {paper['ndcg@10']:.4f}" if paper else "not in the paper"
            print(f"{exp.key:<58} runs in {exp.run_key}  ({shown})")
        print(f"{len(experiments)} experiments × {len(args.seeds)} seeds = {len(experiments) * len(args.seeds)} runs")
        return 0
    if args.estimate:
        from .estimate import estimate_costs, format_estimate

        print(format_estimate(estimate_costs(args.table, seeds=len(args.seeds), experiments=experiments)))
        return 0
    settings = RunSettings(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
                           max_train_batches=args.max_train_batches,
                           max_users=args.max_users, data_source=args.data, device=args.device,
                           loss_chunk=args.loss_chunk, bf16=args.bf16, cache_dir=args.cache_dir,
                           offline=args.offline, progress=args.progress, timestamps=args.timestamps,
                           ties=args.ties)
    _checked(settings.train_config(seed=args.seeds[0]))  # the trainer's check, before any run starts
    out = Path(args.out)
    if args.dry_run:
        for exp in experiments:
            for seed in args.seeds:
                target = run_dir(out, exp, seed)
                state = ("finished" if (target / "metrics.json").exists() else
                         "would resume" if (target / "checkpoint.pt").exists() else "would run")
                print(f"{state:<13} {exp.key} seed {seed}")
        return 0
    try:
        device = resolve_device(args.device)  # once for every run: the trainer takes the resolved device as is
    except RuntimeError as err:
        raise ExperimentError(f"--device {args.device}: {err}") from None
    settings = dataclasses.replace(settings, device=device)
    print(f"table {args.table}: {len(experiments)} experiments × {len(args.seeds)} seeds on {device}, "
          f"results in {out}", flush=True)
    results = run_experiments(experiments, args.seeds, out, settings,
                              log=lambda line: print(line, flush=True))
    # the files cover every finished run in OUT (all tables run so far); the printout covers this request
    paths = write_reports(out, collect_results(out))
    print(format_summary(summarize(results)))
    print("(paper = the value printed in the paper; Δ% = 100·(ours − paper)/paper)")
    print(f"wrote {paths['results']}, {paths['summary']}, {paths['markdown']}")
    return 0


# ------------------------------------------------------------------------------------------- instructor


INSTRUCTOR_PROG = "python -m ttt4rec_edu instructor"


class _OneLineParser(argparse.ArgumentParser):
    """Misuse of an instructor command ends in one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:   # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _limit(text: str) -> float:
    """A grading limit: a finite number > 0 (a submission must never run without one)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}: a submission must never "
                                         "run without a limit")
    return value


def _add_book_option(parser: argparse.ArgumentParser) -> None:
    from .exercises.instructor import default_book_dir

    parser.add_argument("--book", type=Path, default=None,
                        help=f"the book's folder (default: the one beside the installed library, "
                             f"{default_book_dir()})")


def add_instructor_parser(commands) -> argparse.ArgumentParser:
    """``instructor {index,export,grade}``: the exercise index of the guide, student notebooks, grading
    (``ttt4rec_edu.exercises.instructor``). ``python -m ttt4rec_edu.exercises ...`` is the older spelling."""
    ins = commands.add_parser("instructor", help="exercise index, student notebooks, grading",
                              description="Instructor tools: exercise index, student notebooks, grading.")
    ins.__class__ = _OneLineParser   # an unknown SUBCOMMAND is one line too (add_parser has no class argument)
    sub = ins.add_subparsers(dest="instructor_command", metavar="SUBCOMMAND", parser_class=_OneLineParser)
    sub.required = True
    p_index = sub.add_parser("index", help="regenerate the generated blocks of the instructor guide in place")
    _add_book_option(p_index)
    p_index.add_argument("--page", type=Path, default=None, help="default: <book>/instructor.md")
    p_index.add_argument("--check", action="store_true", help="only report whether the page is up to date")
    p_export = sub.add_parser("export", help="write a chapter's student and solutions notebooks")
    p_export.add_argument("--chapter", type=int, required=True)
    p_export.add_argument("--out", type=Path, required=True, help="a folder (created if missing)")
    _add_book_option(p_export)
    p_grade = sub.add_parser("grade", help="run every submitted notebook in isolation and grade its exercises")
    p_grade.add_argument("--submissions", type=Path, required=True, help="a folder of submitted files")
    p_grade.add_argument("--out", type=Path, required=True, help="the CSV to write (reports go beside it)")
    p_grade.add_argument("--chapter", type=int, default=None,
                         help="the chapter assigned (default: read from each notebook's export metadata)")
    _add_book_option(p_grade)
    p_grade.add_argument("--timeout", type=_limit, default=600.0,
                         help="wall-clock seconds per submission, > 0 (default 600)")
    p_grade.add_argument("--cpu-seconds", type=_limit, default=None, help="CPU seconds (default: the timeout)")
    p_grade.add_argument("--memory-mb", type=_limit, default=8192, help="address space, MiB (default 8192)")
    p_grade.add_argument("--file-mb", type=_limit, default=256, help="largest file written, MiB (default 256)")
    p_grade.add_argument("--workdir", type=Path, default=None,
                         help="a folder copied into each submission's temporary folder (default: <book>/results)")
    p_grade.add_argument("--allow-root", action="store_true",
                         help="when run as root, run submissions as root too (default: as user 'nobody')")
    p_grade.add_argument("--allow-network", action="store_true",
                         help="do not cut the submissions off the network")
    for command, handler in ((p_index, _instructor_index), (p_export, _instructor_export),
                             (p_grade, _instructor_grade)):
        command.set_defaults(handler=cmd_instructor, instructor_handler=handler)
    return ins


def cmd_instructor(args) -> int:
    """Run one instructor command; its expected problems end in one line naming the command, exit status 2."""
    from .exercises.instructor import ExerciseMarkupError, GradingError

    try:
        return args.instructor_handler(args, _instructor_book(args))
    except (GradingError, ExerciseMarkupError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"{INSTRUCTOR_PROG} {args.instructor_command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _instructor_book(args) -> Path:
    from .exercises.instructor import GradingError, chapter_paths, default_book_dir

    book = args.book if args.book is not None else default_book_dir()
    if not book.is_dir():
        raise GradingError(f"no book folder at {book}" + ("" if args.book else " (beside the installed library): "
                                                          "pass --book"))
    if not chapter_paths(book):
        raise GradingError(f"{book} holds no chapters (NN_*.ipynb)")
    return book


def _instructor_index(args, book: Path) -> int:
    from .exercises.instructor import GradingError, chapter_paths, exercise_index, render_instructor_page

    page = args.page or book / "instructor.md"
    if not page.is_file():
        raise GradingError(f"no instructor page at {page}")
    old = page.read_text(encoding="utf-8")
    new = render_instructor_page(old, book, page)
    if args.check:
        if new != old:
            print(f"{page} is out of date: run `{INSTRUCTOR_PROG} index`", file=sys.stderr)
            return 1
        print(f"{page} is up to date")
        return 0
    if new != old:
        page.write_text(new, encoding="utf-8")
    print(f"{page}: {len(exercise_index(book))} exercises in {len(chapter_paths(book))} chapters"
          f"{'' if new != old else ' (unchanged)'}")
    return 0


def _instructor_export(args, book: Path) -> int:
    from .exercises.instructor import GradingError, export_chapter, find_chapter

    if args.out.exists() and not args.out.is_dir():
        raise GradingError(f"--out {args.out} is a file; name a folder")
    find_chapter(book, args.chapter)
    student, solutions = export_chapter(book, args.chapter, args.out)
    print(f"wrote {student}\nwrote {solutions}")
    return 0


def _instructor_grade(args, book: Path) -> int:
    from .exercises.instructor import GradingError, Limits, Submission, find_chapter, grade_folder

    if not args.submissions.is_dir():
        raise GradingError(f"--submissions {args.submissions} is not a folder")
    if args.out.is_dir():
        raise GradingError(f"--out {args.out} is a folder; name the CSV file to write")
    if args.chapter is not None:
        find_chapter(book, args.chapter)
    if args.workdir is not None and not args.workdir.is_dir():
        raise GradingError(f"--workdir {args.workdir} is not a folder")
    limits = Limits(args.timeout, args.cpu_seconds, int(args.memory_mb), int(args.file_mb)).validate()
    width, printed = 28, []

    def progress(s: Submission) -> None:
        if not printed:
            printed.append(True)
            print(f"{'submission':<{width}}  {'status':<10}  passed   reason")
        print(f"{s.name[:width]:<{width}}  {s.status:<10}  {s.passed:>2} / {len(s.verdicts):<2}  {s.reason}",
              flush=True)

    grade_folder(args.submissions, args.out, limits, book, args.chapter, args.workdir, args.allow_root,
                 not args.allow_network, progress)
    print(f"wrote {args.out} and {args.out.with_name(args.out.stem + '_reports')}/")
    return 0


# ------------------------------------------------------------------------------------------- entry point


def _expected_errors() -> tuple:
    from .data import DataError
    from .train import TrainError

    return (CliError, DataError, TrainError)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage + the problem (or the help)
        return int(exit_.code or 0)
    expected = _expected_errors()
    try:
        return args.handler(args)
    except expected as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:  # bad values detected deeper down (split, max length, config)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (the last finished epoch's checkpoint is kept; use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
