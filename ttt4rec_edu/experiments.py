"""Named experiments: every cell of the paper's Tables 2–4, and the CPU-scale Amazon Beauty runs.

An :class:`Experiment` is one (table, dataset, split, model variant); it runs once per seed. A run's files go to
``OUT/runs/<run key>/seed<k>/`` (``metrics.json`` and ``checkpoint.pt`` from the trainer, ``experiment.json``
from here). The run key leaves the table out, so a cell that two tables share (TTT4Rec Transformer + MLP is in
both Table 2 and Table 3) is trained once. :func:`run_experiments` skips every run whose ``metrics.json``
exists and resumes a run whose checkpoint exists, so a killed reproduction simply continues where it stopped;
:func:`collect_results` turns the folder into one tidy table and :func:`summarize` puts mean ± std over seeds
beside the paper's number with the difference in percent.

The paper's numbers come from ``ttt4rec_edu/resources/paper_tables.csv`` (its Tables 2–4, copied verbatim);
they are always labelled ``paper_*`` — never mixed with what this code measured.

:func:`estimate_costs` says what a table will cost on a GPU *before* running it: FLOPs of one training step
counted by ``torch.utils.flop_counter.FlopCounterMode`` at each dataset's context length and item count, the
paper's Table 1 sizes for the number of samples, and stated assumptions for epochs and GPU throughput. Every
number it returns is an ESTIMATE and its columns say so.

Command line: ``python -m ttt4rec_edu reproduce --table 2 [--dataset D] [--models ...] [--seeds 0 1 2]
[--device cuda] [--out results/]`` (see ``reproduce --help``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd

METRICS = ("hr@10", "hr@50", "ndcg@10", "ndcg@50")
TABLES = ("2", "3", "4", "beauty")
RESOURCES = Path(__file__).resolve().parent / "resources"

# registry name → the name the paper's tables use
PAPER_NAMES = {
    "gru4rec": "GRU4Rec",
    "narm": "NARM",
    "sasrec": "SASRec",
    "bert4rec": "BERT4Rec",
    "mamba4rec": "Mamba4Rec",
    "ttt4rec": "TTT4Rec",
    "pop": "Pop",
}
BASELINES = ("gru4rec", "narm", "sasrec", "bert4rec", "mamba4rec")
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
        if self.model != "ttt4rec" and not (self.adapt and self.adapt_at_test):
            raise ExperimentError(f"{self.model} has no test-time adaptation to switch off")

    @property
    def variant(self) -> str:
        """``sasrec``, ``ttt4rec-transformer-mlp``, ``ttt4rec-mamba-linear-noadapt``,
        ``ttt4rec-transformer-mlp-fixed-w0``, ..."""
        variant = self.model
        if self.model == "ttt4rec":
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
        if self.model != "ttt4rec":
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
        return [Experiment("2", d, "3:2:5", m) for d in PAPER_DATASETS for m in BASELINES] + \
               [_ttt("2", d, "3:2:5") for d in PAPER_DATASETS]
    if table == "3":  # TTT4Rec {transformer, mamba} × {linear, mlp}
        return [_ttt("3", d, "3:2:5", b, i) for d in ("gowalla", "amazon-video-games")
                for b in ("mamba", "transformer") for i in ("linear", "mlp")]
    if table == "4":  # six models, Amazon Video Games, split 6:2:2
        return [Experiment("4", "amazon-video-games", "6:2:2", m) for m in BASELINES] + \
               [_ttt("4", "amazon-video-games", "6:2:2")]
    if table == "beauty":  # CPU-scale: pop + six models, both splits, and the two no-adaptation arms
        out = []
        for split in ("3:2:5", "6:2:2"):
            out += [Experiment("beauty", "amazon-beauty", split, m) for m in ("pop",) + BASELINES]
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
    is_ttt = experiment.model == "ttt4rec"
    match = paper[(paper["table"] == f"table{experiment.table}") & (paper["dataset"] == experiment.dataset)
                  & (paper["split"] == experiment.split) & (paper["model"] == PAPER_NAMES[experiment.model])
                  & (paper["backbone"] == ((experiment.backbone or "transformer") if is_ttt else ""))
                  & (paper["inner"] == ((experiment.inner or "mlp") if is_ttt else ""))]
    if len(match) != 1:
        return None
    return {m: float(match[m].iloc[0]) for m in METRICS}


# ------------------------------------------------------------------------------------------ running


@dataclass
class RunSettings:
    """How the runs are made. The first six shape the results: a finished run is only reused when they match."""

    epochs: Optional[int] = None            # None: the trainer's default (300, early stopping ends sooner)
    patience: Optional[int] = None          # None: 5
    batch_size: Optional[int] = None        # None: the trainer's 2048 (the paper's)
    max_train_batches: Optional[int] = None
    max_users: Optional[int] = None         # keep only the first users (a cut dataset)
    data_source: Optional[str] = None       # replace every dataset by this name/path or "synthetic"
    device: str = "auto"
    loss_chunk: object = "auto"
    bf16: bool = False
    cache_dir: Optional[str] = None
    offline: bool = False
    progress: bool = False
    timestamps: str = "recbole"             # RecBole's float32 times, or "exact" (ttt4rec_edu.data.filtering)
    ties: str = "average"                   # tied scores in HR/NDCG (ttt4rec_edu.metrics)

    RESULT_SHAPING = ("epochs", "patience", "batch_size", "max_train_batches", "max_users", "data_source",
                      "timestamps", "ties")
    # Result-shaping settings added later: a run recorded without them was made with these (the old behaviour).
    LEGACY_SHAPING = {"timestamps": "exact", "ties": "optimistic"}

    def shaping(self) -> Dict[str, object]:
        return {k: getattr(self, k) for k in self.RESULT_SHAPING}


def run_dir(out: Path, experiment: Experiment, seed: int) -> Path:
    return Path(out) / "runs" / experiment.run_key / f"seed{seed}"


def _load_cell_data(experiment: Experiment, settings: RunSettings):
    """The cell's ``SequenceData`` (or the replacement), cut to ``max_users``, and the paper's context length."""
    from .data import load_data_source
    from .data import SequenceData, get_dataset_info

    data = load_data_source(settings.data_source or experiment.dataset, cache_dir=settings.cache_dir,
                            offline=settings.offline, timestamps=settings.timestamps)
    if settings.max_users is not None:
        data = SequenceData(data.sequences[:settings.max_users], data.num_items,
                            name=f"{data.name}[:{settings.max_users} users]", meta=dict(data.meta))
    max_len = get_dataset_info(experiment.dataset).max_len  # the paper's setting for this cell
    return data, max_len


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


def run_experiments(experiments: Sequence[Experiment], seeds: Sequence[int] = (0, 1, 2),
                    out: Path = Path("results"), settings: Optional[RunSettings] = None,
                    log: Callable[[str], None] = print, **options) -> pd.DataFrame:
    """Run every (experiment, seed) whose ``metrics.json`` is missing; return :func:`collect_results` of them.

    ``settings`` or keyword ``options`` (any :class:`RunSettings` field, e.g. ``epochs=3, device="cuda"``)
    say how; options override the settings' fields.

    A run with a checkpoint but no ``metrics.json`` (killed) resumes from the checkpoint. A finished run made
    with other result-shaping settings (epochs, patience, batch_size, max_train_batches, max_users, data_source) is an
    error rather than silently mixed into the table: use another ``out`` folder.
    """
    from .data import build_splits, dataset_stats
    from .models import build_model
    from .train import TrainConfig, train
    from .utils import atomic_write_json, set_seed

    settings = dataclasses.replace(settings or RunSettings(), **options)
    out = Path(out)
    cache: Dict[tuple, tuple] = {}
    equivalent_orders: Dict[str, bool] = {}
    done: set = set()
    for exp in experiments:
        for seed in seeds:
            target = run_dir(out, exp, seed)
            if (exp.run_key, seed) in done:
                continue
            done.add((exp.run_key, seed))
            if (target / "metrics.json").exists() and (target / "experiment.json").exists():
                recorded = json.loads((target / "experiment.json").read_text()).get("settings", {})
                recorded = {**RunSettings.LEGACY_SHAPING, **recorded}
                note = _reuse_note(exp, target, recorded, settings, equivalent_orders)
                log(f"skip (finished): {exp.run_key} seed {seed}{note}")
                continue
            key = (exp.dataset, exp.split)
            if key not in cache:
                data, max_len = _load_cell_data(exp, settings)
                cache[key] = (data, build_splits(data, max_len, exp.split))
            data, splits = cache[key]
            resume = (target / "checkpoint.pt").exists()
            log(f"{'resume' if resume else 'run'}: {exp.run_key} seed {seed}")
            set_seed(seed)  # the initial weights depend on the seed too
            overrides = exp.model_overrides()
            model = build_model(exp.model, splits.num_items, splits.max_len, **overrides)
            config = TrainConfig(seed=seed, device=settings.device, adapt_at_test=exp.adapt_at_test,
                                 ties=settings.ties,
                                 loss_chunk=settings.loss_chunk, bf16=settings.bf16, progress=settings.progress,
                                 **({"epochs": settings.epochs} if settings.epochs is not None else {}),
                                 **({"patience": settings.patience} if settings.patience is not None else {}),
                                 **({"batch_size": settings.batch_size} if settings.batch_size is not None else {}),
                                 **({"max_train_batches": settings.max_train_batches}
                                    if settings.max_train_batches else {}))
            run_info = {"model": exp.model, "model_options": overrides, "experiment": exp.run_key,
                        "data": settings.data_source or exp.dataset, "data_name": data.name,
                        "max_len": splits.max_len, "split": exp.split}
            started = time.time()
            train(model, splits, config, out_dir=target, resume=resume, data_stats=dataset_stats(data),
                  run_info=run_info)
            # experiment.json last: its presence beside metrics.json marks the run as finished and complete
            atomic_write_json(target / "experiment.json",
                              {**asdict(exp), "run_key": exp.run_key, "seed": seed,
                               "wall_s": time.time() - started, "settings": settings.shaping()})
    return collect_results(out, experiments, seeds)


RESULT_COLUMNS = ["table", "dataset", "split", "model", "backbone", "inner", "adapt_at_test", "adapt", "seed",
                  *METRICS,
                  *(f"valid_{m}" for m in METRICS), "epochs", "best_epoch", "max_epochs", "patience", "batch_size",
                  "train_time_s", "device", "data", "timestamps", "ties", "run_key"]


def collect_results(out: Path, experiments: Optional[Sequence[Experiment]] = None,
                    seeds: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """One tidy row per (experiment, finished seed) under ``OUT/runs`` (default: every table's experiments,
    every seed found). A run shared by two tables appears once per table."""
    rows = []
    for exp in experiments if experiments is not None else all_experiments():
        base = Path(out) / "runs" / exp.run_key
        folders = [base / f"seed{s}" for s in seeds] if seeds is not None else sorted(base.glob("seed*"))
        for folder in folders:
            if not ((folder / "metrics.json").exists() and (folder / "experiment.json").exists()):
                continue
            info = json.loads((folder / "experiment.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text())
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
            recorded = {**RunSettings.LEGACY_SHAPING, **info.get("settings", {})}   # a run without them: legacy
            row.update(timestamps=recorded["timestamps"], ties=recorded["ties"])
            rows.append(row)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ----------------------------------------------------------------------------------------- summaries


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
    grouped = results.groupby(SUMMARY_KEYS + ["data"], dropna=False, sort=False)
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


def _cell_name(row) -> str:
    name = PAPER_NAMES.get(row["model"], row["model"])
    if row["model"] == "ttt4rec":
        name += f" ({row['backbone'] or 'transformer'}, {row['inner'] or 'mlp'}"
        if not row.get("adapt", True):
            name += ", fixed W0: trained and tested without adaptation)"
        else:
            name += ")" if row["adapt_at_test"] else ", η = 0 at test)"
    return name


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
        line = [str(row["table"]), dataset, row["split"], _cell_name(row), str(int(row["seeds"]))]
        for m in metrics:
            std = row[f"{m}_std"]
            line.append(f"{row[f'{m}_mean']:.4f} ± {0.0 if pd.isna(std) else std:.4f}")
            paper = row[f"paper_{m}"]
            line.append("—" if pd.isna(paper) else f"{paper:.4f}")
            line.append("—" if pd.isna(paper) else f"{row[f'diff_{m}_pct']:+.1f}")
        body.append(line)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


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
        settings = results[["max_epochs", "patience", "batch_size"]].drop_duplicates().to_dict("records")
        budgets = "Training settings of these runs: " + "; ".join(
            f"at most {s['max_epochs']} epochs, patience {s['patience']}, batch {s['batch_size']}"
            for s in settings) + " (the paper: at most 300 epochs, patience 5, batch 2048).\n\n"
    paths["markdown"].write_text(
        "# Reproduction summary\n\nOurs: mean ± sample std over seeds. *paper*: the value printed in the paper "
        "(TTT4Rec, Yang et al.), copied verbatim. Δ% = 100 · (ours − paper) / paper.\n\n" + budgets
        + format_summary(summary, markdown=True) + "\n")
    return paths


# ---------------------------------------------------------------------------------- cost ESTIMATES


ESTIMATE_EPOCHS = 50            # assumed epochs per run (early stopping decides the real number)
ESTIMATE_GPU_TFLOPS = 10.0      # assumed sustained fp32 throughput: ~50% of an A100's 19.5 TFLOP/s fp32 peak
ESTIMATE_BATCH = 2048           # the paper's training batch
_PROBE_BATCH = 8                # sequences per FLOP-counting probe
_PROBE_ITEMS = (1000, 3000)     # two item counts: FLOPs and memory are affine in the number of items


def _probe(variant: Tuple[str, Tuple[Tuple[str, str], ...]], num_items: int, max_len: int) -> Dict[str, float]:
    """FLOPs (train step: forward + backward; eval: forward) and autograd-saved bytes of ``_PROBE_BATCH``
    full-length sequences, and the parameter count, for one model at ``num_items``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model
    from .train import batch_loss

    name, overrides = variant
    torch.manual_seed(0)
    model = build_model(name, num_items, max_len, **dict(overrides))
    gen = torch.Generator().manual_seed(0)
    item_seq = torch.randint(1, num_items + 1, (_PROBE_BATCH, max_len), generator=gen)
    lengths = torch.full((_PROBE_BATCH,), max_len, dtype=torch.long)
    targets = torch.randint(1, num_items + 1, (_PROBE_BATCH,), generator=gen)
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, saved = set(), [0]

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_storages and ptr not in seen:
            seen.add(ptr)
            saved[0] += t.untyped_storage().nbytes()
        return t

    model.train()
    train_flops = 0
    if any(p.requires_grad for p in model.parameters()):  # pop has nothing to train
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = batch_loss(model, item_seq, lengths, targets, num_items, loss_chunk="off")
            loss.backward()
        train_flops = counter.get_total_flops()
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.score_all(item_seq, lengths)
    return {"train_flops": train_flops / _PROBE_BATCH, "eval_flops": counter.get_total_flops() / _PROBE_BATCH,
            "saved_bytes": saved[0] / _PROBE_BATCH, "params": sum(p.numel() for p in model.parameters())}


@lru_cache(maxsize=None)
def _affine_costs(variant, max_len: int) -> Dict[str, Tuple[float, float]]:
    """Per-sample costs as ``(a, b)`` with cost ≈ a + b · num_items, from probes at two item counts."""
    lo, hi = (_probe(variant, n, max_len) for n in _PROBE_ITEMS)
    span = _PROBE_ITEMS[1] - _PROBE_ITEMS[0]
    out = {}
    for key in lo:
        slope = max(hi[key] - lo[key], 0.0) / span
        out[key] = (max(lo[key] - slope * _PROBE_ITEMS[0], 0.0), slope)
    return out


@lru_cache(maxsize=None)
def _cpu_flops_per_second(variant, max_len: int) -> float:
    """Measured on this machine: FLOPs of training steps (batch 32, 2,000 items) per second of wall time."""
    import torch

    from .models import build_model
    from .train import batch_loss

    name, overrides = variant
    num_items, batch = 2000, 32
    torch.manual_seed(0)
    model = build_model(name, num_items, max_len, **dict(overrides))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    item_seq = torch.randint(1, num_items + 1, (batch, max_len))
    lengths = torch.full((batch,), max_len, dtype=torch.long)
    targets = torch.randint(1, num_items + 1, (batch,))
    a, b = _affine_costs(variant, max_len)["train_flops"]
    times = []
    for _ in range(3):  # the first step warms up (allocations, lazy init); keep the best of the other two
        start = time.perf_counter()
        optimizer.zero_grad()
        batch_loss(model, item_seq, lengths, targets, num_items).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch * (a + b * num_items) / min(times[1:])


def _variant_of(exp: Experiment):
    return exp.model, tuple(sorted(exp.model_overrides().items()))


def _split_shares(split: str) -> Tuple[float, float, float]:
    from .data import parse_split

    shares = parse_split(split)
    if not shares:
        raise ExperimentError("leave-one-out splits have no ratio shares to estimate with")
    return shares


def estimate_costs(table: str, epochs: int = ESTIMATE_EPOCHS, gpu_tflops: float = ESTIMATE_GPU_TFLOPS,
                   seeds: int = 3, batch_size: int = ESTIMATE_BATCH, measure_cpu: bool = True,
                   experiments: Optional[Sequence[Experiment]] = None) -> pd.DataFrame:
    """ESTIMATED GPU time and GPU memory of every cell of ``table`` (or of ``experiments`` only) — numbers to
    plan with, not measurements.

    Per cell: FLOPs of one training sample (forward + backward) and of one evaluation sample (forward, all items
    scored), counted with ``FlopCounterMode`` on full-length sequences at the dataset's context length and
    extrapolated to its item count (they are affine in the item count; counted at 1,000 and 3,000 items).
    Samples ≈ interactions − users from the paper's Table 1 (raw counts; the filters remove some, so this
    leans high), shared out by the split. One run = ``epochs`` × (train + valid) + one final valid + test pass.
    GPU hours = FLOPs / ``gpu_tflops``; FlopCounterMode counts matrix products only (not element-wise work,
    the optimizer or data loading), and TTT4Rec's inner loop runs mini-batch after mini-batch, so a real GPU
    reaches less than the assumed throughput on these small models — read the hours as a lower bound.
    ``estimate_cpu_hours_per_run`` divides the same FLOPs by the FLOP rate *measured* on this machine.

    Memory: fp32 weights + gradients + Adam's two moments (16 bytes per parameter), the autograd-saved
    activations of a ``batch_size`` batch (measured per sample), and the logits: ``3 · batch · items · 4`` bytes
    for the plain loss, or the trainer's item-chunk block when it switches to the chunked loss (``loss_chunk
    auto``; BERT4Rec's Cloze loss switches to the same exact chunked loss over its masked positions).
    """
    from . import losses
    from .data import get_dataset_info

    stats = paper_datasets()
    rows = []
    for exp in experiments if experiments is not None else table_experiments(table):
        max_len = get_dataset_info(exp.dataset).max_len
        if exp.dataset in stats.index:
            users, items, inter = (int(stats.loc[exp.dataset, k]) for k in ("users", "items", "interactions"))
            source = "paper Table 1 (raw)"
        else:  # amazon-beauty: the registry's description holds the 5-core counts
            users, items, inter = 22363, 12101, 198502
            source = "amazon-beauty 5-core"
        train_share, valid_share, test_share = _split_shares(exp.split)
        samples = inter - users
        train_n, valid_n, test_n = samples * train_share, samples * valid_share, samples * test_share
        variant = _variant_of(exp)
        costs = _affine_costs(variant, max_len)
        per = {k: a + b * items for k, (a, b) in costs.items()}
        trains = exp.model != "pop"
        run_flops = (epochs * (train_n * per["train_flops"] * trains + valid_n * per["eval_flops"])
                     + (valid_n + test_n) * per["eval_flops"])
        # memory: logits part of the saved bytes is replaced by the trainer's chunk block when it chunks
        params = per["params"]
        chunk = losses.choose_chunk(batch_size, items)  # BERT4Rec's Cloze loss chunks the same way
        act_a, act_b = costs["saved_bytes"]
        activations = batch_size * (act_a if chunk is not None else act_a + act_b * items)
        logits = 3 * batch_size * (chunk if chunk is not None else items + 1) * 4
        memory = 16 * params + activations + logits
        row = {"table": exp.table, "dataset": exp.dataset, "split": exp.split, "model": exp.variant,
               "items": items, "max_len": max_len, "counts_from": source,
               "estimate_train_samples": int(train_n),
               "estimate_train_gflop_per_sample": per["train_flops"] / 1e9,
               "estimate_step_tflop_batch": batch_size * per["train_flops"] / 1e12,
               "estimate_pflop_per_run": run_flops / 1e15,
               "estimate_gpu_hours_per_run": run_flops / (gpu_tflops * 1e12) / 3600,
               "estimate_gpu_hours_all_seeds": seeds * run_flops / (gpu_tflops * 1e12) / 3600,
               "estimate_parameters_millions": params / 1e6,
               "estimate_loss_chunk": "plain" if chunk is None else str(chunk),
               "estimate_gpu_memory_gib": memory / 2**30}
        if measure_cpu:
            rate = _cpu_flops_per_second(variant, max_len) if trains else math.nan
            row["estimate_cpu_gflops_measured"] = rate / 1e9
            row["estimate_cpu_hours_per_run"] = run_flops / rate / 3600 if trains else math.nan
            row["estimate_gpu_speedup_vs_this_cpu"] = gpu_tflops * 1e12 / rate if trains else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["assumptions"] = (f"ESTIMATE — epochs per run {epochs}; sustained GPU throughput {gpu_tflops} "
                                  f"TFLOP/s fp32 (about half an A100's 19.5 TFLOP/s peak); batch {batch_size}; "
                                  f"{seeds} seeds; samples from the paper's Table 1 raw counts")
    return frame


def format_estimate(frame: pd.DataFrame) -> str:
    """The estimate as a text table with its assumptions on top."""
    shown = frame[["dataset", "split", "model", "items", "max_len", "estimate_train_samples",
                   "estimate_step_tflop_batch", "estimate_gpu_hours_per_run", "estimate_gpu_hours_all_seeds",
                   "estimate_gpu_memory_gib"]
                  + [c for c in ("estimate_cpu_hours_per_run", "estimate_gpu_speedup_vs_this_cpu")
                     if c in frame]]
    total = frame["estimate_gpu_hours_all_seeds"].sum()
    return (f"{frame.attrs.get('assumptions', 'ESTIMATE')}\n"
            + shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")
            + f"\nESTIMATE total: {total:.3g} GPU hours for these {len(frame)} cells "
              f"(largest GPU memory need {frame['estimate_gpu_memory_gib'].max():.3g} GiB)")


# ----------------------------------------------------------------------------------- command line


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
    """The ``reproduce`` subcommand (added to the command line's subparsers)."""
    from .__main__ import _RAW, _non_negative_int, _positive_int, add_loss_chunk_option, add_protocol_options

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
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--out", default="results", metavar="DIR", help="results folder (default results/)")
    p.add_argument("--list", action="store_true", help="print the experiments with their keys; run nothing")
    p.add_argument("--dry-run", action="store_true", help="print what would run or be skipped; run nothing")
    p.add_argument("--estimate", action="store_true",
                   help="print the ESTIMATED GPU hours and memory of the table (FLOP counts); run nothing")
    g = p.add_argument_group("budgeted and tiny runs (CPU budgets, tests, demos; recorded with every run)")
    g.add_argument("--epochs", type=_non_negative_int, default=None, help="maximum epochs (default 300)")
    g.add_argument("--patience", type=_non_negative_int, default=None, help="early-stopping patience (default 5)")
    g.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help="training batch (default 2048, the paper's; smaller batches take more steps per epoch)")
    g.add_argument("--max-train-batches", type=_positive_int, default=None, metavar="N",
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
        print(format_estimate(estimate_costs(args.table, seeds=len(args.seeds), experiments=experiments)))
        return 0
    settings = RunSettings(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
                           max_train_batches=args.max_train_batches,
                           max_users=args.max_users, data_source=args.data, device=args.device,
                           loss_chunk=args.loss_chunk, bf16=args.bf16, cache_dir=args.cache_dir,
                           offline=args.offline, progress=args.progress, timestamps=args.timestamps,
                           ties=args.ties)
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
        device = resolve_device(args.device)
    except RuntimeError as err:
        raise ExperimentError(f"--device {args.device}: {err}") from None
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


__all__ = ["Experiment", "ExperimentError", "RunSettings", "METRICS", "TABLES", "PAPER_NAMES", "BASELINES",
           "table_experiments", "all_experiments", "select", "paper_results", "paper_datasets", "paper_row",
           "run_dir", "run_experiments", "collect_results", "summarize", "format_summary", "write_reports",
           "estimate_costs", "format_estimate", "add_reproduce_parser", "cmd_reproduce",
           "ESTIMATE_EPOCHS", "ESTIMATE_GPU_TFLOPS"]
