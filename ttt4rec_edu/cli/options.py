"""What the commands share: the one-line error, option types, the data, model and training options.

The training options are written once, here, from :class:`ttt4rec_edu.train.TrainConfig`'s fields
(:data:`TRAINING_OPTIONS`: the option of each field, its type and help; the default is the field's): ``train``
and ``reproduce`` add theirs with :func:`add_training_options`, which also notes which options were given (in
``args.given``). The values are the library's to check, once: ``--recipe NAME`` (``ttt4rec_edu.recipes``) sets the
recipe's options and refuses an option given beside it that contradicts it (``ttt4rec_edu.runner.with_recipe``),
so a run never records a recipe it was not made with, and ``TrainConfig.validate()`` checks every value
(``ttt4rec_edu.runner.checked_config`` names the options in its messages).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Dict, Iterable, List

from ..backbones import BACKBONES
from ..data.filtering import DEFAULT_TIMESTAMPS, TIMESTAMP_MODES
from ..data.registry import DEFAULT_MAX_LEN
from ..losses import LOSS_COLUMNS
from ..metrics import TIE_POLICIES
from ..recipes import RECIPE_HELP, RECIPES
from ..runner import shown_value
from ..train import TrainConfig
from ..ttt import INNER_MODELS

EXIT_USAGE = 2

RAW = argparse.RawDescriptionHelpFormatter


class CliError(Exception):
    """An expected problem with the user's input: printed as one line, exit status 2."""


_TRAINER = TrainConfig()  # the training defaults, written once (ttt4rec_edu.train.TrainConfig)


# ------------------------------------------------------------------------------------------- option types


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


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)
max_length = _int_at_least(1, "max length")


def integer(text: str) -> int:
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


def split_ratio(text: str) -> str:
    from ..data.protocol import parse_split

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


def add_timestamps_option(group) -> None:
    """``--timestamps``: how a file's times order each user's interactions (see the data chapter)."""
    group.add_argument("--timestamps", choices=TIMESTAMP_MODES, default=DEFAULT_TIMESTAMPS,
                       help="sort each user's interactions by float32 times as RecBole does (recbole, the "
                            "default) or by the exact float64 values (exact)")


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


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="a registered dataset (amazon-beauty, gowalla, twitch-100k, ...), a file, or 'synthetic'")
    g.add_argument("--format", default=None, metavar="F",
                   help="file format when it cannot be detected from the file (see the data chapter)")
    g.add_argument("--split", type=split_ratio, default="3:2:5", metavar="A:B:C",
                   help="train:valid:test ratios of each user's samples, or 'loo' (default 3:2:5)")
    g.add_argument("--max-len", type=max_length, default=None, metavar="N",
                   help=f"context length (default: the dataset's registry setting, {DEFAULT_MAX_LEN} for files)")
    g.add_argument("--min-user-inter", type=non_negative_int, default=None, metavar="N",
                   help="drop users with fewer interactions (default: the dataset's setting)")
    g.add_argument("--min-item-inter", type=non_negative_int, default=None, metavar="N",
                   help="drop items with fewer interactions (default: the dataset's setting)")
    add_source_options(g)
    add_timestamps_option(g)


def add_source_options(group) -> None:
    """``--cache-dir`` and ``--offline``: where the data files come from."""
    group.add_argument("--cache-dir", default=None, metavar="DIR", help="download cache (default: data/ cache)")
    group.add_argument("--offline", action="store_true", help="never download; use the cache and mirrors only")


def add_model_options(p: argparse.ArgumentParser) -> None:
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


# ------------------------------------------------------------------------------------------- training options


class _Given(argparse.Action):
    """Store the value and remember that the option was given (a recipe may not be contradicted silently)."""

    def __init__(self, *args, flag: bool = False, **kwargs):
        if flag:
            kwargs.update(nargs=0, const=True)
        self.flag = flag
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.flag else values)
        namespace.given = set(getattr(namespace, "given", None) or ()) | {self.dest}


# TrainConfig field -> its option: the argparse keywords besides the default (which is the field's)
TRAINING_OPTIONS: Dict[str, Dict[str, Any]] = {
    "epochs": dict(type=integer, help="maximum epochs"),
    "patience": dict(type=integer, help="early-stopping patience in epochs"),
    "batch_size": dict(type=integer, metavar="B",
                       help="training batch (smaller batches take more steps per epoch)"),
    "eval_batch_size": dict(type=integer, metavar="B", help="evaluation batch"),
    "lr": dict(type=_number, help="Adam learning rate"),
    "device": dict(help="auto | cpu | cuda | cuda:N"),
    "seed": dict(type=integer, help="random seed"),
    "bf16": dict(flag=True, help="bfloat16 autocast of the training steps (CUDA and CPU; evaluation stays float32)"),
    "max_train_batches": dict(type=integer, metavar="N", help="at most N training batches per epoch (quick runs)"),
    "adapt_at_test": dict(type=_on_off, metavar="on|off",
                          help="off: switch test-time adaptation off during evaluation (models that support it)"),
    "loss_chunk": dict(type=_loss_chunk, metavar="auto|off|N",
                       help="exact full-softmax loss in item chunks: auto (only when the (batch x items) logits "
                            "would not fit, e.g. Gowalla's 1.28 M items), off (always plain), or N items per "
                            "chunk (all give the same loss)"),
    # the choices of --ties and --loss-columns are TrainConfig.validate()'s to check (one check, one message)
    "ties": dict(metavar="{" + ",".join(sorted(TIE_POLICIES)) + "}",
                 help="items scoring exactly like the target: expected HR/NDCG over random tie orders (average), "
                      "target first (optimistic) or last"),
    "loss_columns": dict(metavar="{" + ",".join(LOSS_COLUMNS) + "}",
                         help="softmax over the items 1..N (items) or over all N + 1 columns, padding included, "
                              "as the official TTT4Rec code (all)"),
}


def add_training_options(group, names: Iterable[str]) -> None:
    """Add the options of the TrainConfig fields ``names`` (``--batch-size`` for ``batch_size``), each with the
    field's default and :data:`TRAINING_OPTIONS`' type and help."""
    for name in names:
        spec = dict(TRAINING_OPTIONS[name])
        default = getattr(_TRAINER, name)
        if default is not None and not spec.get("flag"):
            spec["help"] += f" (default {shown_value(default)})"
        group.add_argument("--" + name.replace("_", "-"), action=_Given, default=default, **spec)


def add_recipe_option(group) -> None:
    """``--recipe NAME``: a named set of training options (``ttt4rec_edu.recipes``)."""
    shown = "; ".join(f"{name}: {RECIPE_HELP[name]}" for name in RECIPES)
    group.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                       help=f"a named set of training options ({shown}); an option given beside it must agree "
                            "with it. Every run records its recipe, read from its values ('custom' when they "
                            "match none)")


# ------------------------------------------------------------------------------------------- models


_RESERVED_MODEL_ARGS = {"name": "--model", "num_items": "the data (or --num-items)",
                        "max_len": "--max-len", "adapt": "--adapt on|off"}


def model_overrides(args) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {}
    if args.backbone is not None:
        overrides["backbone"] = args.backbone
    if args.inner is not None:
        overrides["inner"] = args.inner
    if args.adapt is not None:
        from ..models import available_models, model_info

        if "adapt" not in model_info(args.model).options():   # a model adapts at test time when it has the option
            having = [n for n in available_models() if "adapt" in model_info(n).options()]
            raise CliError(f"--adapt: {args.model} has no test-time adaptation (only {', '.join(having)} has)")
        overrides["adapt"] = args.adapt
    for key, value in args.model_arg:
        if key in _RESERVED_MODEL_ARGS:
            raise CliError(f"--model-arg {key}=...: {key!r} is set by {_RESERVED_MODEL_ARGS[key]}, not by --model-arg")
        overrides[key] = value
    return overrides


def check_model_name(name: str) -> None:
    from ..models import available_models

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


def check_model_arg_types(name: str, overrides: Dict[str, Any]) -> None:
    """One line naming the option, its value and the type the model's config expects, for a ``--model-arg`` of the
    wrong type (``hidden_size=abc``), before the model's own code fails on it with a message about ``<``. The types
    and defaults are the fields of the config dataclass the model registered (``models.model_config_class``)."""
    from ..models import model_config_class

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


def build_model_or_fail(name: str, num_items: int, max_len: int, overrides: Dict[str, Any]):
    """The registered model ``name`` (its commands checked the name first, with ``check_model_name``)."""
    from ..models import build_model

    try:
        return build_model(name, num_items, max_len, **overrides)
    except TypeError as err:  # an option the model's factory does not take
        raise CliError(f"model {name!r} rejected the options {overrides}: {err}") from None


def print_table(rows: List[tuple]) -> None:
    width = max(len(str(k)) for k, _ in rows)
    for key, value in rows:
        if isinstance(value, float):
            value = f"{value:.4f}"
        print(f"{str(key):<{width}}  {value}")


__all__ = ["EXIT_USAGE", "RAW", "CliError", "TRAINING_OPTIONS", "add_training_options", "add_recipe_option",
           "add_data_options", "add_model_options", "add_source_options",
           "add_timestamps_option", "model_overrides", "check_model_name", "check_model_arg_types",
           "build_model_or_fail", "print_table"]
