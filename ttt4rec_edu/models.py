"""The model registry: every recommender in the project is built and used the same way.

Contract (the trainer, the metrics, the book and the experiments rely on nothing else):

``build_model(name, num_items, max_len, **overrides) -> torch.nn.Module`` whose
``score_all(item_seq, lengths) -> Tensor[B, num_items + 1]`` takes a right-padded ``LongTensor[B, L]``
of item ids (0 = padding, real ids 1..num_items) and ``lengths: LongTensor[B]`` and returns one score per
item id; column 0 (padding) is ``-inf`` so it never ranks. Every model checks its batch with :func:`check_batch`
(one clear ``ValueError`` for a wrong shape, dtype, id or length) and returns an empty ``(0, num_items + 1)``
table for an empty batch (``B = 0``).

A new model is one new file. A model registers itself when its module is imported: ``@register_model(name,
config=ItsConfig)`` on the model class (built as ``Class(num_items, max_len, ItsConfig(**overrides))``; a class
without options gets ``config=None``) or on a factory ``f(num_items, max_len, **overrides)``, with the name the
tables print (``display``, by default the class's name) and its ``role``: ``"baseline"`` (one of the compared
models of the paper's tables, ordered by the year it was ``published``), ``"reference"`` (``pop``, the line every
model must beat) or ``None``. The registry finds the models itself, on first use: ``ttt4rec_edu.ttt4rec`` and every
module of the ``ttt4rec_edu.baselines`` package (:func:`discover`), so a file dropped there is a model of the
command line, the experiments' tables and the contract tests without another edit. :func:`available_models` lists
the names, :func:`baseline_names` the paper's baselines, :func:`model_info` the rest.

Code that depends on what a model can do asks the model (its config's fields, its hooks), never its name.

Optional hooks a model may define (the trainer checks with ``hasattr``):

- ``calculate_loss(item_seq, lengths, targets) -> scalar Tensor`` — its own training loss (e.g. BERT4Rec's
  Cloze loss). Without it the trainer uses full-softmax cross-entropy over ``score_all``.
- ``fit_statistics(item_seq, lengths, targets)`` — called once with the whole training split before training
  (e.g. ``pop`` counts item frequencies). A model without trainable parameters is not gradient-trained.
- ``encode(item_seq, lengths) -> Tensor[B, d]`` and ``item_table() -> Tensor[num_items + 1, d]`` — for models
  whose scores are ``encode @ item_table().T`` (all the neural ones; :class:`ItemScoringModel` provides
  ``score_all`` from them). The metrics then score in item chunks and the trainer can use an exact chunked
  cross-entropy, so 1.28 M Gowalla items never need a ``B × N`` matrix.
- ``set_adapt_at_test(flag: bool)`` — models with test-time adaptation (TTT4Rec) can switch it off at evaluation.

Helpers shared by the models: :func:`gather_last` (the state at each sequence's last real position) and
:func:`parameter_summary` (parameter counts per submodule: chapter 6's tables and ``model-summary``).
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import pkgutil
import typing
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]
ROLES = ("baseline", "reference", None)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model: how to build it and how the tables name and place it."""

    name: str
    factory: ModelFactory
    config: Optional[type]          # the dataclass its ``overrides`` fill (None: it takes none)
    display: str                    # the name the paper's tables print: "SASRec", "TTT4Rec", "Pop"
    role: Optional[str] = None      # "baseline" | "reference" | None (see the module docstring)
    published: Optional[int] = None  # a baseline's year: the tables list the baselines in this order

    def options(self) -> Tuple[str, ...]:
        """The names of the model's options (its config's fields, less those the data sets)."""
        if self.config is None:
            return ()
        return tuple(f.name for f in dataclasses.fields(self.config) if f.name not in ("num_items", "max_len"))


_REGISTRY: Dict[str, ModelInfo] = {}
_SOURCES: Dict[str, object] = {}   # name -> the class or factory that registered it
_DISCOVERED: List[bool] = []       # set once discover() has imported every model module

# Where the models live: this module and every module of this package are imported on first use (lazily, so that
# `import ttt4rec_edu.models` stays cheap).
_MODEL_MODULES = ("ttt4rec_edu.ttt4rec",)
_MODEL_PACKAGES = ("ttt4rec_edu.baselines",)


def check_batch(item_seq: torch.Tensor, lengths: torch.Tensor, num_items: Optional[int] = None,
                max_len: Optional[int] = None) -> None:
    """Validate a batch of the model contract, with a message that says what is wrong.

    ``item_seq (batch, seq)`` integer ids in ``[0, num_items]`` (0 = padding) with ``seq >= 1``, ``lengths
    (batch,)`` integers in ``[1, seq]`` (right padding: ids ``>= 1`` in the first ``lengths[b]`` positions, and
    whatever comes after them is never read; a left-padded batch is refused, it would be scored differently),
    and ``seq <= max_len`` for models with a position table.
    ``batch = 0`` is a valid (empty) batch. Lengths must have an integer dtype: a float tensor is refused even
    when its values are whole (10.0) — the data pipeline builds ``LongTensor`` lengths, so a float means the
    caller computed them some other way, and 10.5 would otherwise be truncated silently. A clear error here
    beats CUDA's device-side assert for an out-of-range id (it costs one sync per batch).
    """
    for field, value in (("item_seq", item_seq), ("lengths", lengths)):
        if not isinstance(value, torch.Tensor):  # a list or a NumPy array: torch.as_tensor(...) first
            raise ValueError(f"{field} must be a torch.Tensor (LongTensor), got {type(value).__name__}")
    if item_seq.dim() != 2:
        raise ValueError(f"item_seq must be (batch, seq), got shape {tuple(item_seq.shape)}")
    if item_seq.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"item_seq must hold integer item ids, got dtype {item_seq.dtype}")
    if item_seq.shape[1] < 1:
        raise ValueError(f"item_seq must have at least one position (seq >= 1), got shape {tuple(item_seq.shape)}")
    if num_items is not None and item_seq.numel() and \
            (int(item_seq.min()) < 0 or int(item_seq.max()) > num_items):
        raise ValueError(f"item ids must lie in [0, {num_items}] (0 = padding), got min {int(item_seq.min())}, "
                         f"max {int(item_seq.max())}")
    if lengths.dim() != 1 or lengths.shape[0] != item_seq.shape[0]:
        raise ValueError(f"lengths must be (batch,) = ({item_seq.shape[0]},), got shape {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers (a LongTensor), got dtype {lengths.dtype}")
    if max_len is not None and item_seq.shape[1] > max_len:
        raise ValueError(f"item_seq is {item_seq.shape[1]} wide but the model was built for max_len={max_len}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > item_seq.shape[1]):
        raise ValueError(f"lengths must lie in [1, {item_seq.shape[1]}] (right-padded sequences), got "
                         f"min {int(lengths.min())}, max {int(lengths.max())}")
    inside = torch.arange(item_seq.shape[1], device=item_seq.device) < lengths.to(item_seq.device)[:, None]
    padding_inside = (item_seq == 0) & inside  # what left padding gives, whatever lengths it comes with
    if item_seq.numel() and bool(padding_inside.any()):
        row, col = (int(i) for i in padding_inside.nonzero()[0])
        raise ValueError(f"item_seq must be right-padded (real ids >= 1 in the first lengths[b] positions; "
                         f"left padding is scored differently), but row {row} of length {int(lengths[row])} "
                         f"has padding (0) at position {col}")


def gather_last(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, seq, dim)`` states, ``(batch,)`` lengths → ``(batch, dim)``: the state at position ``lengths - 1``
    (the last real item of a right-padded sequence; RecBole's ``gather_indexes``)."""
    last = lengths.to(hidden.device).long() - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


# A model option beyond these is a slip (hidden_size=1e9 would try to allocate terabytes), not an experiment.
MAX_WIDTH = 1 << 16   # sizes: hidden, embedding, inner, state and head counts
MAX_DEPTH = 1 << 10   # layer counts


def check_size(name: str, value, maximum: int = MAX_WIDTH, minimum: int = 1) -> None:
    """A model config's integer option: ``ValueError`` naming it unless ``minimum <= value <= maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")


def check_number(name: str, value, low: float = 0.0, high: float = math.inf, high_open: bool = False,
                 low_open: bool = False) -> None:
    """A model config's real option: ``ValueError`` naming it unless finite and within ``[low, high]`` (an end is
    excluded with ``low_open``/``high_open``). NaN and inf are refused: a NaN dropout or init range gave NaN
    weights or outputs without a word."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) \
        and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}" \
            if math.isfinite(high) else f"{'>' if low_open else '>='} {low}"
        raise ValueError(f"{name} must be a finite number {interval}, got {value!r}")


def check_dropout(name: str, value) -> None:
    """A dropout probability: in ``[0, 1)``."""
    check_number(name, value, 0.0, 1.0, high_open=True)


class ItemScoringModel(nn.Module):
    """Base class of the neural recommenders: scores are ``encode(item_seq, lengths) @ item_table().T``.

    Subclasses implement ``encode -> (batch, d)`` and ``item_table -> (num_items + 1, d)``; this class provides
    ``score_all`` (column 0, the padding id, set to ``-inf`` so it never ranks) and ``forward`` (the same).
    """

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define encode(item_seq, lengths)")

    def item_table(self) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define item_table()")

    def score_all(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(batch, seq), (batch,) -> (batch, num_items + 1)``: a dot product with every item; column 0 is ``-inf``."""
        scores = self.encode(item_seq, lengths) @ self.item_table().T
        scores[:, 0] = float("-inf")
        return scores

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`score_all`."""
        return self.score_all(item_seq, lengths)


def _class_factory(name: str, cls: type, config: Optional[type]) -> ModelFactory:
    """Build ``cls(num_items, max_len, config(**overrides))`` (or ``cls(num_items, max_len)`` without a config)."""

    def factory(num_items: int, max_len: int, **overrides) -> nn.Module:
        if config is None:
            if overrides:
                raise TypeError(f"{name} takes no options, got {sorted(overrides)}")
            return cls(num_items, max_len)
        return cls(num_items, max_len, config(**overrides))

    return factory


def _built_class_name(factory) -> Optional[str]:
    """The name of the class a factory's return annotation names, if any."""
    try:
        hint = typing.get_type_hints(factory).get("return")
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved names nothing
        return None
    return hint.__name__ if isinstance(hint, type) else None


def register_model(name: str, config: Optional[type] = None, display: Optional[str] = None,
                   role: Optional[str] = None, published: Optional[int] = None) -> Callable:
    """Decorator registering a model under ``name``.

    On a model class: ``@register_model("sasrec", config=SASRecConfig, display="SASRec", role="baseline",
    published=2018)`` builds ``SASRec(num_items, max_len, SASRecConfig(**overrides))``. On a factory ``f(num_items,
    max_len, **overrides)``: the factory builds it. ``config`` is the dataclass the overrides fill (its fields are
    the model's options, with their types and defaults), ``None`` for a model without options; ``display`` defaults
    to the class's name (a factory's: the class its return annotation names); ``role`` and ``published`` place it
    in the tables (module docstring).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if role == "baseline" and published is None:
        raise ValueError(f"baseline {name!r} needs the year it was published (the tables' order)")

    def decorator(obj):
        factory = _class_factory(name, obj, config) if isinstance(obj, type) else obj
        shown = display or (obj.__name__ if isinstance(obj, type) else _built_class_name(obj)) or name
        if name in _SOURCES and _SOURCES[name] is not obj:
            raise ValueError(f"model name {name!r} is registered twice")
        _SOURCES[name] = obj
        _REGISTRY[name] = ModelInfo(name, factory, config, shown, role, published)
        return obj

    return decorator


def discover() -> None:
    """Import every module that holds models (this is how a new file becomes a registered model); once."""
    if _DISCOVERED:
        return
    _DISCOVERED.append(True)
    try:
        for module in _MODEL_MODULES:
            importlib.import_module(module)
        for package_name in _MODEL_PACKAGES:
            package = importlib.import_module(package_name)
            for found in pkgutil.iter_modules(package.__path__):
                if not found.name.startswith("_"):
                    importlib.import_module(f"{package_name}.{found.name}")
    except BaseException:
        _DISCOVERED.clear()   # the next call tries again (and fails the same way, visibly)
        raise


def model_info(name: str) -> ModelInfo:
    """What the registry knows of model ``name`` (a ``KeyError`` naming the available ones otherwise)."""
    discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return _REGISTRY[name]


def model_config_class(name: str) -> Optional[type]:
    """The config dataclass whose fields are model ``name``'s options (``None`` when it takes none)."""
    return model_info(name).config


def available_models() -> List[str]:
    """Names accepted by :func:`build_model`, sorted."""
    discover()
    return sorted(_REGISTRY)


def baseline_names() -> Tuple[str, ...]:
    """The paper's compared baselines, in the order of the year they were published (the tables' order)."""
    discover()
    baselines = [info for info in _REGISTRY.values() if info.role == "baseline"]
    return tuple(info.name for info in sorted(baselines, key=lambda info: (info.published, info.name)))


def reference_names() -> Tuple[str, ...]:
    """The reference lines (``pop``): models every sequential recommender must beat."""
    discover()
    return tuple(sorted(info.name for info in _REGISTRY.values() if info.role == "reference"))


def build_model(name: str, num_items: int, max_len: int, **overrides) -> nn.Module:
    """Build the model registered as ``name`` for ``num_items`` real items and contexts of ``max_len``."""
    info = model_info(name)
    for field, value in (("num_items", num_items), ("max_len", max_len)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # "10" or 5.0 is a caller's slip
            raise ValueError(f"{field} must be an integer, got {value!r} ({type(value).__name__})")
    num_items, max_len = int(num_items), int(max_len)
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    return info.factory(num_items=num_items, max_len=max_len, **overrides)


# --------------------------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParameterCount:
    """One row of :func:`parameter_summary`: a submodule's name and its parameter counts."""

    name: str
    total: int
    trainable: int


@dataclass(frozen=True)
class ParameterSummary:
    """What :func:`parameter_summary` returns: ``rows`` (one :class:`ParameterCount` per listed submodule, in module
    order), the model's ``total`` and ``trainable`` parameter counts; the rows add up to the totals.

    Iterating gives ``(name, total)`` pairs — every row, then ``("total", total)`` — so ``dict(summary)`` maps each
    row name and ``"total"`` to a parameter count (the form chapter 6's tables use).
    """

    rows: Tuple[ParameterCount, ...]
    total: int
    trainable: int

    def __iter__(self) -> Iterator[Tuple[str, int]]:
        for row in self.rows:
            yield row.name, row.total
        yield "total", self.total


def parameter_summary(model: nn.Module, depth: int = 1) -> ParameterSummary:
    """Parameter counts of ``model`` per submodule, down to ``depth`` levels of submodules.

    For TTT4Rec ``depth=1`` lists ``item_embedding``, ``embedding_norm``, ``blocks``, ``final_norm``; ``depth=2``
    splits ``blocks`` into ``blocks.0`` ...; ``depth=3`` splits a block into ``pre_conv``, ``seq_norm``, ``ttt``,
    ``ffn_norm``, ``ffn``. A module that is split and also holds parameters of its own gets a row ``"<name> (own)"``
    (``"(own)"`` for the model itself). Modules without parameters (dropout) are left out. A tensor shared by
    several modules (tied weights) is counted once, in the first row that holds it, so the rows add up to
    ``total`` — the number of distinct parameters, the size of the model.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    seen: Set[int] = set()
    rows: List[ParameterCount] = []

    def add(name: str, params: Iterable[nn.Parameter]) -> None:
        total = trainable = 0
        for p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        if total:
            rows.append(ParameterCount(name or "(own)", total, trainable))

    def visit(module: nn.Module, name: str, level: int) -> None:
        children = list(module.named_children())
        if level == depth or not children:
            add(name, module.parameters())
            return
        add(f"{name} (own)" if name else "", module.parameters(recurse=False))
        for child_name, child in children:
            visit(child, f"{name}.{child_name}" if name else child_name, level + 1)

    visit(model, "", 0)
    return ParameterSummary(tuple(rows), sum(r.total for r in rows), sum(r.trainable for r in rows))
