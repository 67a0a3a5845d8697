"""Command line: ``python -m ttt4rec_edu {data stats, train, reproduce, model-summary} ...`` (``--help`` on each).

``train`` also runs data-parallel under ``torchrun --nproc_per_node N -m ttt4rec_edu train ...``
(``ttt4rec_edu.distributed``); ``reproduce`` reruns the paper's tables (``ttt4rec_edu.experiments``).

Every expected problem (unknown dataset, missing file, malformed split, bad max length, unknown model,
unwritable output folder, a checkpoint of another run) ends with one ``error: ...`` line on stderr and exit
status 2 — no traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

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

examples:
  python -m ttt4rec_edu data stats --data amazon-beauty
  python -m ttt4rec_edu train --model pop --data amazon-beauty --out runs/pop
  python -m ttt4rec_edu reproduce --table 2 --device cuda --out results/
  python -m ttt4rec_edu model-summary --model ttt4rec
"""


class CliError(Exception):
    """An expected problem with the user's input: printed as one line, exit status 2."""


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


def _split(text: str) -> str:
    from .data.protocol import parse_split

    try:
        parse_split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _loss_chunk(text: str):
    """``auto`` | ``off`` | a positive number of items → ``"auto"``, ``"off"`` or ``int``."""
    value = text.strip().lower()
    if value in {"auto", "off"}:
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, off or a positive number of items, got {text!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"the loss chunk must be a positive number of items, got {number}")
    return number


def add_loss_chunk_option(group) -> None:
    group.add_argument("--loss-chunk", type=_loss_chunk, default="auto", metavar="auto|off|N",
                       help="exact full-softmax loss in item chunks: auto (only when the (batch x items) logits "
                            "would not fit, e.g. Gowalla's 1.28 M items), off (always plain), or N items per "
                            "chunk (default auto; all give the same loss)")


def add_protocol_options(group, timestamps: bool = True, ties: bool = True) -> None:
    """``--timestamps`` and ``--ties``: the evaluation protocol's two RecBole details (see the data chapter)."""
    if timestamps:
        group.add_argument("--timestamps", choices=("recbole", "exact"), default="recbole",
                           help="sort each user's interactions by float32 times as RecBole does (recbole, the "
                                "default) or by the exact float64 values (exact)")
    if ties:
        group.add_argument("--ties", choices=("average", "optimistic", "pessimistic"), default="average",
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
    g.add_argument("--backbone", choices=("transformer", "mamba"), default=None,
                   help="TTT4Rec backbone (passed to the model only when given)")
    g.add_argument("--inner", choices=("linear", "mlp"), default=None,
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
    g.add_argument("--epochs", type=_non_negative_int, default=300, help="maximum epochs (default 300)")
    g.add_argument("--patience", type=_non_negative_int, default=5,
                   help="early-stopping patience in epochs (default 5)")
    g.add_argument("--batch-size", type=_positive_int, default=2048, help="training batch (default 2048)")
    g.add_argument("--eval-batch-size", type=_positive_int, default=4096, help="evaluation batch (default 4096)")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--seed", type=int, default=2020, help="random seed (default 2020)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only; ignored on CPU)")
    g.add_argument("--max-train-batches", type=_positive_int, default=None, metavar="N",
                   help="at most N training batches per epoch (quick runs)")
    g.add_argument("--adapt-at-test", type=_on_off, default=True, metavar="on|off",
                   help="off: switch test-time adaptation off during evaluation (models that support it)")
    add_loss_chunk_option(g)
    add_protocol_options(g, timestamps=False)
    g.add_argument("--loss-columns", choices=("items", "all"), default="items",
                   help="softmax over the items 1..N (default) or over all N + 1 columns, padding included, "
                        "as the official TTT4Rec code")
    g.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/MODEL-DATA)")
    g.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    g.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    tr.set_defaults(handler=cmd_train)

    from .experiments import add_reproduce_parser

    add_reproduce_parser(commands)

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


def _build_model(name: str, num_items: int, max_len: int, overrides: Dict[str, Any]):
    from .models import build_model

    _check_model_name(name)
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


def _train(args, context) -> int:
    from .train import TrainConfig, _check_out_dir, train
    from .utils import resolve_device, set_seed

    try:
        resolve_device(args.device)
    except RuntimeError as err:
        raise CliError(f"--device {args.device}: {err}") from None
    device = str(context.device) if context is not None else args.device
    is_main = context is None or context.is_main
    overrides = _model_overrides(args)
    out_dir = Path(args.out) if args.out else Path("runs") / f"{args.model}-{Path(args.data).stem}"
    _check_out_dir(out_dir)  # before any data is read or any epoch is spent
    data, splits, stats, max_len = _stats_and_splits(args)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         eval_batch_size=args.eval_batch_size, patience=args.patience, seed=args.seed,
                         device=device, bf16=args.bf16, max_train_batches=args.max_train_batches,
                         adapt_at_test=args.adapt_at_test, loss_chunk=args.loss_chunk,
                         progress=not args.no_progress and is_main, ties=args.ties,
                         loss_columns=args.loss_columns)
    set_seed(args.seed)  # the model's initial weights depend on the seed too
    model = _build_model(args.model, splits.num_items, max_len, overrides)
    run_info = {"model": args.model, "model_options": overrides, "data": args.data, "format": args.format,
                "data_name": data.name, "max_len": max_len, "split": args.split,
                "timestamps": args.timestamps}
    result = train(model, splits, config, out_dir=out_dir, resume=args.resume, data_stats=stats,
                   run_info=run_info, dist=context)
    if not is_main:
        return 0
    test = result["test"]
    shown = "  ".join(f"{k}={v:.4f}" for k, v in test.items())
    print(f"test: {shown}")
    print(f"wrote {out_dir / 'metrics.json'}")
    return 0


def parameter_summary(model) -> Dict[str, Any]:
    """``{"modules": [(name, parameters, trainable)], "total": n, "trainable": m}`` for top-level submodules
    (parameters owned by the model itself are listed as ``(self)``; shared tensors are counted once)."""
    seen = set()

    def count(params):
        total = trainable = 0
        for p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        return total, trainable

    rows = []
    own_total, own_trainable = count(model.parameters(recurse=False))
    if own_total:
        rows.append(("(self)", own_total, own_trainable))
    for name, child in model.named_children():
        total, trainable = count(child.parameters())
        rows.append((name, total, trainable))
    total = sum(r[1] for r in rows)
    trainable = sum(r[2] for r in rows)
    return {"modules": rows, "total": total, "trainable": trainable}


def cmd_model_summary(args) -> int:
    overrides = _model_overrides(args)
    model = _build_model(args.model, args.num_items, args.max_len, overrides)
    summary = parameter_summary(model)
    if args.json:
        print(json.dumps({"model": args.model, "class": type(model).__name__, "options": overrides,
                          "num_items": args.num_items, "max_len": args.max_len,
                          "modules": {n: {"parameters": t, "trainable": tr} for n, t, tr in summary["modules"]},
                          "total": summary["total"], "trainable": summary["trainable"]}))
        return 0
    print(f"{args.model} ({type(model).__name__}), num_items={args.num_items}, max_len={args.max_len}"
          + (f", options {overrides}" if overrides else ""))
    rows = [(name, f"{total:,}") for name, total, _ in summary["modules"]]
    rows.append(("total", f"{summary['total']:,}"))
    rows.append(("trainable", f"{summary['trainable']:,}"))
    _print_table(rows)
    return 0


# ------------------------------------------------------------------------------------------- entry point


def _expected_errors() -> tuple:
    from .data.readers import DataError
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
