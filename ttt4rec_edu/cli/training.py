"""The data and model commands: ``data stats``, ``train`` and ``model-summary``.

``train`` turns its options, once, into a plain :class:`ttt4rec_edu.runner.TrainRequest` (the trainer's values,
the recipe, the model's options, a :class:`ttt4rec_edu.data.registry.DataRequest`) and hands it to
:func:`ttt4rec_edu.runner.run_request`: the library applies the recipe, resolves the device, checks the settings
once and sets the run up (``run_one``, which ``reproduce`` uses too). Under ``torchrun`` (RANK, WORLD_SIZE,
LOCAL_RANK set) the run is data-parallel (``ttt4rec_edu.distributed``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.registry import DEFAULT_MAX_LEN, DataRequest
from ..runner import RUN_FILES, TrainRequest, run_request
from ..train import METRICS_NAME
from .options import (RAW, add_data_options, add_model_options, add_recipe_option, add_training_options,
                      build_model_or_fail, check_model_arg_types, check_model_name, max_length, model_overrides,
                      positive_int, print_table)

DATA_STATS_EXAMPLES = """\
examples:
  python -m ttt4rec_edu data stats --data amazon-beauty
  python -m ttt4rec_edu data stats --data my_clicks.csv --split 6:2:2 --max-len 50 --json
  python -m ttt4rec_edu data stats --data synthetic
"""

TRAIN_EXAMPLES = """\
examples:
  python -m ttt4rec_edu train --model pop --data amazon-beauty --out runs/pop-beauty
  python -m ttt4rec_edu train --model ttt4rec --data amazon-beauty --recipe official --out runs/ttt-beauty
  python -m ttt4rec_edu train --model ttt4rec --data amazon-beauty --epochs 20 --out runs/ttt-beauty-20
  python -m ttt4rec_edu train --model ttt4rec --data gowalla --backbone mamba --inner linear --bf16
  python -m ttt4rec_edu train --model ttt4rec --data clicks.csv --model-arg num_blocks=2 --resume --out runs/t
  python -m ttt4rec_edu train --model ttt4rec --data synthetic --adapt-at-test off --max-train-batches 5

  torchrun --nproc_per_node 4 -m ttt4rec_edu train --model ttt4rec --data gowalla --out runs/ttt-gowalla

The run writes OUT/metrics.json (valid and test HR@10/50, NDCG@10/50, config with its recipe, data statistics,
per-epoch history), OUT/checkpoint.pt after every epoch and, last, OUT/experiment.json (what the run was);
--resume continues a killed run from that checkpoint.
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

# the TrainConfig fields the train command sets (device and progress are set by the run itself)
TRAIN_FIELDS = ("epochs", "patience", "batch_size", "eval_batch_size", "lr", "device", "seed", "bf16",
                "max_train_batches", "adapt_at_test", "loss_chunk", "ties", "loss_columns")


def add_data_parser(commands) -> argparse.ArgumentParser:
    data = commands.add_parser("data", help="dataset tools", formatter_class=RAW,
                               description="Dataset tools.", epilog=DATA_STATS_EXAMPLES)
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_commands.required = True
    stats = data_commands.add_parser("stats", help="users, items, interactions, average length, sample counts",
                                     formatter_class=RAW, epilog=DATA_STATS_EXAMPLES,
                                     description="Print dataset statistics after filtering and the number of "
                                                 "train/valid/test samples under the evaluation protocol.")
    add_data_options(stats)
    stats.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    stats.set_defaults(handler=cmd_data_stats)
    return data


def add_train_parser(commands) -> argparse.ArgumentParser:
    tr = commands.add_parser("train", help="train and evaluate a model, write OUT/metrics.json",
                             formatter_class=RAW, epilog=TRAIN_EXAMPLES,
                             description="Train a registered model with the paper's outer loop (Adam, early "
                                         "stopping on valid NDCG@10) and evaluate it on the test split.")
    add_model_options(tr)
    add_data_options(tr)
    g = tr.add_argument_group("training")
    add_recipe_option(g)
    add_training_options(g, TRAIN_FIELDS)
    g.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/MODEL-DATA)")
    again = g.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    again.add_argument("--overwrite", action="store_true",
                       help=f"DIR holds an earlier run: delete its files ({', '.join(RUN_FILES)}) and start "
                            "afresh (nothing else in DIR is ever deleted)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    tr.set_defaults(handler=cmd_train)
    return tr


def add_model_summary_parser(commands) -> argparse.ArgumentParser:
    ms = commands.add_parser("model-summary", help="parameter counts per submodule",
                             formatter_class=RAW, epilog=SUMMARY_EXAMPLES,
                             description="Build a registered model and count its parameters per top-level "
                                         "submodule.")
    add_model_options(ms)
    ms.add_argument("--num-items", type=positive_int, default=12101,
                    help="item vocabulary size (default 12101, Amazon Beauty 5-core)")
    ms.add_argument("--max-len", type=max_length, default=DEFAULT_MAX_LEN,
                    help=f"context length (default {DEFAULT_MAX_LEN})")
    ms.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ms.set_defaults(handler=cmd_model_summary)
    return ms


# ------------------------------------------------------------------------------------------- data


def _data_request(args) -> DataRequest:
    """What ``--data`` and the data options ask to read (``ttt4rec_edu.data.registry.DataRequest``)."""
    return DataRequest(args.data, args.split, args.max_len, args.format, args.min_user_inter, args.min_item_inter,
                       args.cache_dir, args.offline, args.timestamps)


def cmd_data_stats(args) -> int:
    from ..data import dataset_stats, repeat_stats

    data, splits = _data_request(args).load()
    # repeat consumption (issue 22): the share of test targets, and of all targets, already in their own
    # context window, and the share of users with any repeated item
    repeats = repeat_stats(data, splits, splits.max_len)
    stats = {**dataset_stats(data), **splits.counts(), **repeats}
    keys = ("users", "items", "interactions", "avg_seq_len", "train", "valid", "test",
            "test_targets_in_context", "targets_in_context", "users_with_repeat")
    out = {k: stats[k] for k in keys}
    if "users_order_differs" in data.meta:  # read from a file: RecBole's float32 times vs the exact ones
        keys += ("timestamps", "users_order_differs")
        out.update(timestamps=args.timestamps, users_order_differs=data.meta["users_order_differs"])
    if args.json:
        print(json.dumps({**out, "name": data.name, "max_len": splits.max_len, "split": args.split}))
    else:
        print(f"dataset {data.name} (max length {splits.max_len}, split {args.split})")
        print_table([(k, out[k]) for k in keys])
    return 0


# ------------------------------------------------------------------------------------------- train


def cmd_train(args) -> int:
    """The options turned, once, into a :class:`ttt4rec_edu.runner.TrainRequest`; the library does the rest."""
    check_model_name(args.model)
    overrides = model_overrides(args)
    check_model_arg_types(args.model, overrides)
    training = {name: getattr(args, name) for name in TRAIN_FIELDS}
    out_dir = Path(args.out) if args.out else Path("runs") / f"{args.model}-{Path(args.data).stem}"
    request = TrainRequest(args.model, _data_request(args), out_dir,
                           training={**training, "progress": not args.no_progress}, recipe=args.recipe,
                           given=frozenset(getattr(args, "given", None) or ()), model_options=overrides,
                           resume=args.resume, overwrite=args.overwrite)
    result = run_request(request)
    if result is None:   # a torchrun rank other than 0: rank 0 prints and writes
        return 0
    shown = "  ".join(f"{k}={v:.4f}" for k, v in result["test"].items())
    print(f"test: {shown}")
    print(f"wrote {out_dir / METRICS_NAME}")
    return 0


# ------------------------------------------------------------------------------------------- model-summary


def cmd_model_summary(args) -> int:
    from ..models import parameter_summary

    check_model_name(args.model)
    overrides = model_overrides(args)
    check_model_arg_types(args.model, overrides)
    model = build_model_or_fail(args.model, args.num_items, args.max_len, overrides)
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
    print_table(rows)
    return 0


__all__ = ["add_data_parser", "add_train_parser", "add_model_summary_parser", "cmd_data_stats", "cmd_train",
           "cmd_model_summary", "TRAIN_FIELDS"]
