"""Named experiments: every cell of the paper's Tables 2–4, and the CPU-scale Amazon Beauty runs.

An :class:`Experiment` is one (table, dataset, split, model variant); it runs once per seed. A run's files go to
``OUT/runs/<run key>/seed<k>/`` (``metrics.json`` and ``checkpoint.pt`` from the trainer, ``experiment.json`` from
the run setup, ``ttt4rec_edu.runner``). The run key leaves the table out, so a cell that two tables share (TTT4Rec
Transformer + MLP is in both Table 2 and Table 3) is trained once. :func:`run_experiments` skips every finished
run and resumes a run whose checkpoint exists, so a killed reproduction simply continues where it stopped;
:func:`collect_results` turns the folder into one tidy table and :func:`summarize` puts mean ± std over seeds
beside the paper's number with the difference in percent.

The paper's numbers come from ``ttt4rec_edu/resources/paper_tables.csv`` (its Tables 2–4, copied verbatim)
and ``paper_datasets.csv`` (its Table 1); they are always labelled ``paper_*`` — never mixed with what this code
measured. What a table will cost on a GPU before running it is estimated apart, in ``ttt4rec_edu.estimate``.

Run settings (:class:`RunSettings`) take their defaults from the trainer's :class:`ttt4rec_edu.train.TrainConfig`;
every run records its recipe (``ttt4rec_edu.recipes``: ``official``, ``cpu6`` or ``custom``) in ``experiment.json``
and in its results row, and :func:`summarize` never averages runs of different recipes. Command line: ``python -m
ttt4rec_edu reproduce --table 2 [--dataset D] [--models ...] [--seeds 0 1 2] [--recipe official] [--device cuda]
[--out results/]`` (see ``reproduce --help``; the command itself is in ``ttt4rec_edu.cli.reproduce``).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from .baselines import BASELINES   # noqa: F401  (re-exported; the tables ask the registry, which knows new ones)
from .models import baseline_names, model_info, reference_names
from .data.filtering import DEFAULT_TIMESTAMPS
from .recipes import recipe_of
from .reevaluate import derive_eta0_run
from .runner import RECORD_NAME, is_finished
from .train import METRICS_NAME, TrainConfig

METRICS = ("hr@10", "hr@50", "ndcg@10", "ndcg@50")
TABLES = ("2", "3", "4", "beauty")
RESOURCES = Path(__file__).resolve().parent / "resources"



class _DisplayNames(Mapping):
    """Registry name → the name the paper's tables use (``"sasrec"`` → ``"SASRec"``), as each model registered it
    (``ttt4rec_edu.models.register_model(..., display=...)``); a model registered later is in it too."""

    def __getitem__(self, name: str) -> str:
        return model_info(name).display

    def __iter__(self) -> Iterator[str]:
        from .models import available_models

        return iter(available_models())

    def __len__(self) -> int:
        return len(list(iter(self)))


PAPER_NAMES: Mapping[str, str] = _DisplayNames()


def _options(model: str) -> Tuple[str, ...]:
    """Model ``model``'s options (its config's fields); none for a name the registry does not know."""
    try:
        return model_info(model).options()
    except KeyError:
        return ()


def _has_variants(model: str) -> bool:
    """Whether the model comes in backbone × inner-model variants (TTT4Rec: Tables 2-3)."""
    return {"backbone", "inner"} <= set(_options(model))


def _adapts(model: str) -> bool:
    """Whether the model adapts at test time, so that adaptation can be switched off (its ``adapt`` option)."""
    return "adapt" in _options(model)
PAPER_DATASETS = ("gowalla", "twitch-100k", "amazon-video-games")


class ExperimentError(ValueError):
    """A request the experiments cannot honour (unknown table, nothing selected, mixed settings in one folder)."""


@dataclass(frozen=True)
class Experiment:
    """One cell of a results table. ``backbone``/``inner``/``adapt_at_test``/``adapt`` only matter for ``ttt4rec``.

    ``adapt_at_test=False``: the trained model is evaluated with η = 0 (variant suffix ``-noadapt``).
    ``adapt=False``: the model is trained *and* evaluated with η = 0, W_t = W0 everywhere (suffix ``-fixed-w0``),
    the control that tells adaptation from the train/test mismatch of ``-noadapt``.
    """

    table: str
    dataset: str
    split: str
    model: str
    backbone: Optional[str] = None
    inner: Optional[str] = None
    adapt_at_test: bool = True
    adapt: bool = True

    def __post_init__(self) -> None:
        if not self.adapt and not self.adapt_at_test:
            raise ExperimentError("adapt=False already means no adaptation at test; leave adapt_at_test True")
        if not (self.adapt and self.adapt_at_test) and not _adapts(self.model):
            raise ExperimentError(f"{self.model} has no test-time adaptation to switch off")

    @property
    def variant(self) -> str:
        """``sasrec``, ``ttt4rec-transformer-mlp``, ``ttt4rec-mamba-linear-noadapt``,
        ``ttt4rec-transformer-mlp-fixed-w0``, ..."""
        variant = self.model
        if _has_variants(self.model):
            variant += f"-{self.backbone or 'transformer'}-{self.inner or 'mlp'}"
            if not self.adapt_at_test:
                variant += "-noadapt"
            if not self.adapt:
                variant += "-fixed-w0"
        return variant

    @property
    def run_key(self) -> str:
        """Folder of this cell's runs, without the table: ``gowalla/3-2-5/ttt4rec-transformer-mlp``."""
        return f"{self.dataset}/{self.split.replace(':', '-')}/{self.variant}"

    @property
    def key(self) -> str:
        """A unique name, e.g. ``table2/gowalla/3-2-5/ttt4rec-transformer-mlp``."""
        table = f"table{self.table}" if self.table.isdigit() else self.table
        return f"{table}/{self.run_key}"

    def model_overrides(self) -> Dict[str, str]:
        if not _has_variants(self.model):
            return {}
        overrides = {"backbone": self.backbone or "transformer", "inner": self.inner or "mlp"}
        if not self.adapt:
            overrides["adapt"] = False
        return overrides


def _ttt(table, dataset, split, backbone="transformer", inner="mlp", adapt_at_test=True,
         adapt=True) -> Experiment:
    return Experiment(table, dataset, split, "ttt4rec", backbone, inner, adapt_at_test, adapt)


def table_experiments(table: str) -> List[Experiment]:
    """All experiments of a table: ``"2"``, ``"3"``, ``"4"`` (the paper's) or ``"beauty"`` (our CPU-scale runs)."""
    table = str(table).lower().removeprefix("table")
    if table == "2":  # six models × three datasets, split 3:2:5
        return [Experiment("2", d, "3:2:5", m) for d in PAPER_DATASETS for m in baseline_names()] + \
               [_ttt("2", d, "3:2:5") for d in PAPER_DATASETS]
    if table == "3":  # TTT4Rec {transformer, mamba} × {linear, mlp}
        return [_ttt("3", d, "3:2:5", b, i) for d in ("gowalla", "amazon-video-games")
                for b in ("mamba", "transformer") for i in ("linear", "mlp")]
    if table == "4":  # six models, Amazon Video Games, split 6:2:2
        return [Experiment("4", "amazon-video-games", "6:2:2", m) for m in baseline_names()] + \
               [_ttt("4", "amazon-video-games", "6:2:2")]
    if table == "beauty":  # CPU-scale: pop + six models, both splits, and the two no-adaptation arms
        out = []
        for split in ("3:2:5", "6:2:2"):
            out += [Experiment("beauty", "amazon-beauty", split, m) for m in reference_names() + baseline_names()]
            out += [_ttt("beauty", "amazon-beauty", split),
                    _ttt("beauty", "amazon-beauty", split, adapt_at_test=False),
                    _ttt("beauty", "amazon-beauty", split, adapt=False)]
        return out
    raise ExperimentError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")


def all_experiments() -> List[Experiment]:
    return [e for t in TABLES for e in table_experiments(t)]


def select(experiments: Iterable[Experiment], datasets: Optional[Sequence[str]] = None,
           models: Optional[Sequence[str]] = None, splits: Optional[Sequence[str]] = None) -> List[Experiment]:
    """Filter by dataset names, model names (registry names like ``sasrec ttt4rec``, or variants like
    ``ttt4rec-mamba-linear``) and splits (``3:2:5``)."""
    chosen = [e for e in experiments
              if (not datasets or e.dataset in datasets)
              and (not models or e.model in models or e.variant in models)
              and (not splits or e.split in splits)]
    if not chosen:
        raise ExperimentError(f"no experiment matches datasets={list(datasets or [])} models={list(models or [])} "
                              f"splits={list(splits or [])}")
    return chosen


# ------------------------------------------------------------------------------------ the paper's numbers


@lru_cache(maxsize=1)
def _paper_table() -> pd.DataFrame:
    return pd.read_csv(RESOURCES / "paper_tables.csv", dtype={"backbone": str, "inner": str}) \
        .fillna({"backbone": "", "inner": ""})


def paper_results() -> pd.DataFrame:
    """The paper's Tables 2–4 as a DataFrame (columns table, dataset, split, model, backbone, inner, metrics)."""
    return _paper_table().copy()


def paper_datasets() -> pd.DataFrame:
    """The paper's Table 1 (raw users, items, interactions, average length, minimum length, context)."""
    return pd.read_csv(RESOURCES / "paper_datasets.csv").set_index("dataset")


def paper_row(experiment: Experiment) -> Optional[Dict[str, float]]:
    """The paper's metrics for this cell (``{"hr@10": ...}``), or ``None`` where the paper has no such cell
    (our ``beauty`` table, the no-adaptation arms)."""
    if not experiment.table.isdigit() or not experiment.adapt_at_test or not experiment.adapt:
        return None
    paper = _paper_table()
    is_ttt = _has_variants(experiment.model)
    match = paper[(paper["table"] == f"table{experiment.table}") & (paper["dataset"] == experiment.dataset)
                  & (paper["split"] == experiment.split) & (paper["model"] == PAPER_NAMES[experiment.model])
                  & (paper["backbone"] == ((experiment.backbone or "transformer") if is_ttt else ""))
                  & (paper["inner"] == ((experiment.inner or "mlp") if is_ttt else ""))]
    if len(match) != 1:
        return None
    return {m: float(match[m].iloc[0]) for m in METRICS}


# ------------------------------------------------------------------------------------------ running


_TRAINER = TrainConfig()  # the trainer's defaults: the one place they are written


@dataclass
class RunSettings:
    """How the runs are made. Those in ``RESULT_SHAPING`` (epochs, patience, batch_size, max_train_batches,
    max_users, data_source, timestamps, ties) shape the results: a finished run is only reused when they match
    (``timestamps`` may differ where both modes give the same sequences, ``ties`` where only the evaluation differs:
    see :func:`run_experiments`).

    Every field that is a :class:`ttt4rec_edu.train.TrainConfig` field takes the trainer's default (at most 300
    epochs, patience 5, batch 2048: the authors' config) and reaches the trainer under its own name:
    :meth:`train_config` is the one place a run's ``TrainConfig`` is made. A named recipe
    (``ttt4rec_edu.recipes``) is a set of these values; each run records the one its values make.
    """

    epochs: int = _TRAINER.epochs           # upper bound; early stopping usually ends much sooner
    patience: int = _TRAINER.patience
    batch_size: int = _TRAINER.batch_size
    max_train_batches: Optional[int] = _TRAINER.max_train_batches
    max_users: Optional[int] = None         # keep only the first users (a cut dataset)
    data_source: Optional[str] = None       # replace every dataset by this name/path or "synthetic"
    device: object = _TRAINER.device        # "auto", "cpu", "cuda:1", ... or an already resolved torch.device
    loss_chunk: object = _TRAINER.loss_chunk
    bf16: bool = _TRAINER.bf16
    cache_dir: Optional[str] = None
    offline: bool = False
    progress: bool = False                  # quiet by default (the trainer's own default is True)
    timestamps: str = DEFAULT_TIMESTAMPS    # RecBole's float32 times, or "exact" (ttt4rec_edu.data.filtering)
    ties: str = _TRAINER.ties               # tied scores in HR/NDCG (ttt4rec_edu.metrics)

    RESULT_SHAPING = ("epochs", "patience", "batch_size", "max_train_batches", "max_users", "data_source",
                      "timestamps", "ties")
    # Result-shaping settings added later: a run recorded without them was made with these (the old behaviour).
    LEGACY_SHAPING = {"timestamps": "exact", "ties": "optimistic"}
    # Recorded as None ("the trainer's default") before the defaults were written here: the trainer's value.
    LEGACY_DEFAULTS = {"epochs": _TRAINER.epochs, "patience": _TRAINER.patience, "batch_size": _TRAINER.batch_size}

    def shaping(self) -> Dict[str, object]:
        return {k: getattr(self, k) for k in self.RESULT_SHAPING}

    @classmethod
    def recorded_shaping(cls, recorded: Dict[str, object]) -> Dict[str, object]:
        """A run's recorded settings (``experiment.json``) in today's terms: missing keys and ``None`` defaults
        mean what they meant when the run was made."""
        out = {**cls.LEGACY_SHAPING, **recorded}
        out.update({k: v for k, v in cls.LEGACY_DEFAULTS.items() if out.get(k, None) is None})
        return out

    def train_config(self, seed: int, adapt_at_test: bool = True) -> TrainConfig:
        """The trainer's settings for one run: every field of these settings that is a ``TrainConfig`` field,
        under its name (validate it with ``.validate()``: the trainer's own check)."""
        trainer = {f.name for f in dataclasses.fields(TrainConfig)}
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in trainer}
        return TrainConfig(**shared, seed=seed, adapt_at_test=adapt_at_test)


def run_dir(out: Path, experiment: Experiment, seed: int) -> Path:
    return Path(out) / "runs" / experiment.run_key / f"seed{seed}"


def _cell_request(experiment: Experiment, settings: RunSettings):
    """What the cell reads: its dataset (or the replacement), cut to ``max_users``, at the paper's context length
    for the cell's dataset."""
    from .data.registry import DataRequest, get_dataset_info

    return DataRequest(settings.data_source or experiment.dataset, experiment.split,
                       get_dataset_info(experiment.dataset).max_len, cache_dir=settings.cache_dir,
                       offline=settings.offline, timestamps=settings.timestamps, max_users=settings.max_users)


def _load_cell_data(experiment: Experiment, settings: RunSettings):
    """The cell's ``SequenceData`` (or the replacement), cut to ``max_users``, and the paper's context length."""
    request = _cell_request(experiment, settings)
    return request.load_data(), request.max_len


def _same_order_both_ways(experiment: Experiment, settings: RunSettings, memo: Dict[str, bool]) -> bool:
    """Whether ``--timestamps recbole`` and ``exact`` give this cell's data the same sequences (then a run made
    under either is the same run). True for day-level times such as Amazon's, false for Gowalla's seconds."""
    key = settings.data_source or experiment.dataset
    if key not in memo:
        both = [_load_cell_data(experiment, dataclasses.replace(settings, timestamps=t))[0] for t in
                ("recbole", "exact")]
        first, second = both[0].sequences, both[1].sequences
        memo[key] = len(first) == len(second) and all(
            len(a) == len(b) and all(int(x) == int(y) for x, y in zip(a, b)) for a, b in zip(first, second))
    return memo[key]


def _reuse_note(experiment: Experiment, target: Path, recorded: Dict[str, object], settings: RunSettings,
                memo: Dict[str, bool]) -> str:
    """Check a finished run's recorded settings against this call's; return a note for the log, or raise.

    Everything that shapes training must match. Two evaluation-protocol settings are judged by their effect:
    ``timestamps`` may differ when both give the same sequences (checked on the data), and ``ties`` may differ
    because it only turns saved ranks into metrics — results.csv keeps each run's own policy in its ``ties``
    column, so a table never mixes them unseen."""
    now = settings.shaping()
    differs = {k for k in now if recorded.get(k) != now[k]}
    if "timestamps" in differs and _same_order_both_ways(experiment, settings, memo):
        differs.discard("timestamps")
    if differs - {"ties"}:
        raise ExperimentError(
            f"{target} was finished with settings {recorded}, now {now}; "
            "results of different settings must not be mixed — use another --out folder "
            "(or the same settings, e.g. --timestamps / --ties)")
    return f" (evaluated with ties={recorded['ties']}, kept)" if "ties" in differs else ""


# Under this recipe the η = 0-at-test arm is not trained: it is the adapting run's best weights evaluated again
# (ttt4rec_edu.reevaluate). The committed 6-epoch runs (cpu6) trained it as a run of its own, and stay as they are.
DERIVED_ETA0_RECIPE = "official"


def derives_eta0(experiment: Experiment, config: TrainConfig) -> bool:
    """Whether this run of ``experiment`` is derived from its adapting twin rather than trained."""
    return not experiment.adapt_at_test and config.to_dict()["recipe"] == DERIVED_ETA0_RECIPE


def run_experiments(experiments: Sequence[Experiment], seeds: Sequence[int] = (0, 1, 2),
                    out: Path = Path("results"), settings: Optional[RunSettings] = None,
                    log: Callable[[str], None] = print, **options) -> pd.DataFrame:
    """Run every (experiment, seed) whose ``metrics.json`` is missing; return :func:`collect_results` of them.

    ``settings`` or keyword ``options`` (any :class:`RunSettings` field, e.g. ``epochs=3, device="cuda"``)
    say how; options override the settings' fields.

    Under the ``official`` recipe the η = 0-at-test arm is not trained but derived: the adapting run of the same
    seed (finished first: it comes first in every table) is evaluated again from its best weights with η = 0
    (:func:`ttt4rec_edu.reevaluate.derive_eta0_run`), so the two arms are the same weights.

    Each run is set up by :func:`ttt4rec_edu.runner.run_one` (as ``train``'s). A run that is not finished
    (:func:`ttt4rec_edu.runner.is_finished`: ``metrics.json`` and ``experiment.json``) but has a checkpoint (killed)
    resumes from it. A finished run made with other result-shaping settings (``RunSettings.RESULT_SHAPING``:
    epochs, patience, batch_size, max_train_batches, max_users, data_source, timestamps, ties) is an error rather
    than silently mixed into the table — use another ``out`` folder — except ``timestamps`` where both modes give
    the cell the same sequences and ``ties``, which only turns saved ranks into metrics (results.csv keeps each
    run's own policy).
    """
    from .runner import run_one, run_state

    settings = dataclasses.replace(settings or RunSettings(), **options)
    out = Path(out)
    cache: Dict[object, tuple] = {}   # DataRequest -> (data, splits)
    equivalent_orders: Dict[str, bool] = {}
    done: set = set()
    for exp in experiments:
        for seed in seeds:
            target = run_dir(out, exp, seed)
            if (exp.run_key, seed) in done:
                continue
            done.add((exp.run_key, seed))
            if is_finished(target):
                recorded = json.loads((target / RECORD_NAME).read_text()).get("settings", {})
                recorded = RunSettings.recorded_shaping(recorded)
                note = _reuse_note(exp, target, recorded, settings, equivalent_orders)
                log(f"skip (finished): {exp.run_key} seed {seed}{note}")
                continue
            request = _cell_request(exp, settings)
            if request not in cache:   # one load per cell, shared by its seeds
                cache[request] = request.load()
            config = settings.train_config(seed, exp.adapt_at_test)
            record = {**asdict(exp), "run_key": exp.run_key, "settings": settings.shaping()}
            if derives_eta0(exp, config):
                twin = dataclasses.replace(exp, adapt_at_test=True)
                source = run_dir(out, twin, seed)
                if not is_finished(source):
                    raise ExperimentError(
                        f"the η = 0-at-test arm of recipe {DERIVED_ETA0_RECIPE!r} evaluates the adapting run's best "
                        f"weights again: finish {source} first (reproduce --models {twin.variant} --seeds {seed})")
                log(f"derive (η = 0 at test from {source.parent.name} seed {seed}'s best weights): "
                    f"{exp.run_key} seed {seed}")
                derive_eta0_run(source, target, cache[request][1], device=settings.device,
                                progress=settings.progress, record=record)
                continue
            resume = run_state(target) == "resumable"
            log(f"{'resume' if resume else 'run'}: {exp.run_key} seed {seed}")
            run_one(exp.model, target, config, cache[request],
                    model_options=exp.model_overrides(), resume=resume, claim=False,
                    run_info={"experiment": exp.run_key, "data": settings.data_source or exp.dataset},
                    record=record)
    return collect_results(out, experiments, seeds)


RESULT_COLUMNS = ["table", "dataset", "split", "model", "backbone", "inner", "adapt_at_test", "adapt", "seed",
                  *METRICS,
                  *(f"valid_{m}" for m in METRICS), "epochs", "best_epoch", "max_epochs", "patience", "batch_size",
                  "train_time_s", "device", "data", "timestamps", "ties", "recipe", "run_key"]


def collect_results(out: Path, experiments: Optional[Sequence[Experiment]] = None,
                    seeds: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """One tidy row per (experiment, finished seed) under ``OUT/runs`` (default: every table's experiments,
    every seed found). A run shared by two tables appears once per table."""
    rows = []
    for exp in experiments if experiments is not None else all_experiments():
        base = Path(out) / "runs" / exp.run_key
        folders = [base / f"seed{s}" for s in seeds] if seeds is not None else sorted(base.glob("seed*"))
        for folder in folders:
            if not is_finished(folder):
                continue
            info = json.loads((folder / RECORD_NAME).read_text())
            metrics = json.loads((folder / METRICS_NAME).read_text())
            row = {"table": exp.table, "dataset": exp.dataset, "split": exp.split, "model": exp.model,
                   "backbone": exp.backbone or "", "inner": exp.inner or "", "adapt_at_test": exp.adapt_at_test,
                   "adapt": exp.adapt, "seed": int(info["seed"])}
            row.update({m: metrics["test"][m] for m in METRICS})
            row.update({f"valid_{m}": metrics["valid"][m] for m in METRICS})
            config = metrics.get("config", {})  # the trainer's settings: a budgeted run says so in every row
            row.update(max_epochs=config.get("epochs"), patience=config.get("patience"),
                       batch_size=config.get("batch_size"))
            row.update(epochs=metrics.get("epochs"), best_epoch=metrics.get("best_epoch"),
                       train_time_s=metrics.get("train_time_s"), device=metrics.get("device"),
                       data=(metrics.get("run") or {}).get("data_name", exp.dataset), run_key=exp.run_key)
            recorded = RunSettings.recorded_shaping(info.get("settings", {}))   # a run without them: legacy
            row.update(timestamps=recorded["timestamps"], ties=recorded["ties"],
                       # read from the values, never from the recorded label: a recipe is a name for values,
                       # and a run recorded before a recipe's values were fixed keeps its values, not its label
                       recipe=recipe_of(config, _TRAINER.to_dict()))
            rows.append(row)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ----------------------------------------------------------------------------------------- summaries


# the seeds of a full cell (the paper's tables are rerun with seeds 0, 1, 2): a row with fewer is marked †
FULL_ROW_SEEDS = 3

SUMMARY_KEYS = ["table", "dataset", "split", "model", "backbone", "inner", "adapt_at_test", "adapt"]


def summarize(results: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean ± sample std (ddof 1) over seeds per cell, beside the paper's value and the difference in percent
    ``100 · (ours − paper) / paper``. Cells the paper does not have get NaN in the ``paper_*`` columns.

    Rows are also kept apart by the ``data`` column (the data really used): a run on replacement or cut data
    (``--data``, ``--max-users``) is never averaged with a real one, and the text tables name that data."""
    if results.empty:
        return pd.DataFrame()
    results = results.copy()
    results[["backbone", "inner"]] = results[["backbone", "inner"]].fillna("")
    if "adapt" not in results:  # a results.csv written before the fixed-W0 control existed
        results["adapt"] = True
    results["adapt"] = results["adapt"].fillna(True).astype(bool)
    # the data actually used (a replacement or a cut dataset is kept apart from the real one)
    results["data"] = results["data"].fillna(results["dataset"]) if "data" in results else results["dataset"]
    results = _with_recipes(results)
    # a cell's runs of different recipes (6 epochs, early stopping) are never averaged together
    grouped = results.groupby(SUMMARY_KEYS + ["data", "recipe"], dropna=False, sort=False)
    summary = grouped[list(metrics)].agg(["mean", "std"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    summary["seeds"] = grouped["seed"].count()
    summary = summary.reset_index()
    paper_rows = [paper_row(Experiment(str(r["table"]), r["dataset"], r["split"], r["model"], r["backbone"] or None,
                                       r["inner"] or None, bool(r["adapt_at_test"]), bool(r["adapt"])))
                  for _, r in summary.iterrows()]
    for m in metrics:
        summary[f"paper_{m}"] = [row[m] if row else math.nan for row in paper_rows]
        summary[f"diff_{m}_pct"] = 100.0 * (summary[f"{m}_mean"] - summary[f"paper_{m}"]) / summary[f"paper_{m}"]
    return summary


def _with_recipes(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with every row's recipe: rows of a results.csv written before runs recorded it get the recipe
    their recorded epochs, patience and batch match (``ttt4rec_edu.recipes.recipe_of``)."""

    def inferred(row) -> str:
        recorded = {"epochs": row.get("max_epochs"), "patience": row.get("patience"),
                    "batch_size": row.get("batch_size")}
        return recipe_of({k: None if pd.isna(v) else int(v) for k, v in recorded.items()}, _TRAINER.to_dict())

    recorded = results["recipe"] if "recipe" in results else [None] * len(results)
    recipes = [r if isinstance(r, str) and r else inferred(row) for r, (_, row) in zip(recorded, results.iterrows())]
    return results.assign(recipe=recipes)


def _cell_name(row) -> str:
    name = PAPER_NAMES.get(row["model"], row["model"])
    if _has_variants(row["model"]):
        name += f" ({row['backbone'] or 'transformer'}, {row['inner'] or 'mlp'}"
        if not row.get("adapt", True):
            name += ", fixed W0: trained and tested without adaptation)"
        else:
            name += ")" if row["adapt_at_test"] else ", η = 0 at test)"
    return name


def display_name(experiment: Experiment) -> str:
    """How the tables name an experiment's model: ``SASRec``, ``TTT4Rec (transformer, mlp)``, ..."""
    return _cell_name({"model": experiment.model, "backbone": experiment.backbone or "", "inner": experiment.inner
                       or "", "adapt": experiment.adapt, "adapt_at_test": experiment.adapt_at_test})


def seed_cell(mean: float, std: float) -> str:
    """One metric of a summary row: ``mean ± std`` over seeds, or the value alone with "(one seed)" when the std is
    NaN (a spread of one value is not zero, it is unknown)."""
    return f"{mean:.4f}" + (" (one seed)" if pd.isna(std) else f" ± {std:.4f}")


def format_summary(summary: pd.DataFrame, metrics: Sequence[str] = METRICS, markdown: bool = False) -> str:
    """A text (or markdown) table: per metric ``mean ± std`` (ours, n seeds), the paper's value and Δ%."""
    if summary.empty:
        return "(no finished runs)"
    header = ["table", "dataset", "split", "model", "seeds"]
    for m in metrics:
        header += [f"{m} ours (mean ± std)", f"{m} paper", f"{m} Δ%"]
    body = []
    for _, row in summary.iterrows():
        dataset = row["dataset"]
        if str(row.get("data", dataset)).split("[")[0] != dataset or "[" in str(row.get("data", "")):
            dataset += f" (data: {row['data']})"  # replaced or cut: the paper's number is not comparable
        seeds = int(row["seeds"])
        name = _cell_name(row) + (" †" if seeds < FULL_ROW_SEEDS else "")
        line = [str(row["table"]), dataset, row["split"], name, str(seeds)]
        for m in metrics:
            line.append(seed_cell(row[f"{m}_mean"], row[f"{m}_std"]))
            paper = row[f"paper_{m}"]
            line.append("—" if pd.isna(paper) else f"{paper:.4f}")
            line.append("—" if pd.isna(paper) else f"{row[f'diff_{m}_pct']:+.1f}")
        body.append(line)
    note = (f"\n† fewer than {FULL_ROW_SEEDS} seeds (a cell of one seed has no spread)."
            if (summary["seeds"] < FULL_ROW_SEEDS).any() else "")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + ("\n" + note if note else "")
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines) + note


def write_reports(out: Path, results: pd.DataFrame) -> Dict[str, Path]:
    """``OUT/results.csv`` (tidy, one row per run and table), ``OUT/summary.csv`` and ``OUT/summary.md``.

    ``reproduce`` passes every finished run under ``OUT`` (:func:`collect_results`), so running Table 2 and then
    Table 3 into the same folder leaves one CSV with both."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    paths = {"results": out / "results.csv", "summary": out / "summary.csv", "markdown": out / "summary.md"}
    results.to_csv(paths["results"], index=False)
    summary.to_csv(paths["summary"], index=False)
    budgets = ""
    if not results.empty:
        settings = _with_recipes(results)[["recipe", "max_epochs", "patience", "batch_size"]] \
            .drop_duplicates().to_dict("records")
        budgets = "Training settings of these runs: " + "; ".join(
            f"recipe {s['recipe']}: at most {s['max_epochs']} epochs, patience {s['patience']}, batch "
            f"{s['batch_size']}" for s in settings) + " (the authors' config.yaml: at most 300 epochs, patience 5; " \
            "the paper and the config: batch 2048).\n\n"
    paths["markdown"].write_text(
        "# Reproduction summary\n\nOurs: mean ± sample std over seeds. *paper*: the value printed in the paper "
        "(TTT4Rec, Yang et al.), copied verbatim. Δ% = 100 · (ours − paper) / paper.\n\n" + budgets
        + format_summary(summary, markdown=True) + "\n")
    return paths


__all__ = ["Experiment", "ExperimentError", "RunSettings", "METRICS", "TABLES", "PAPER_NAMES", "BASELINES",
           "table_experiments", "all_experiments", "select", "paper_results", "paper_datasets", "paper_row",
           "run_dir", "run_experiments", "collect_results", "summarize", "display_name", "seed_cell",
           "format_summary", "write_reports"]
