"""Measured GPU results beside the cost ESTIMATES: reading ``scripts/gpu_check.py``'s files, recalibrating.

``scripts/gpu_check.py`` writes ``book/results/gpu/<date>-<device>.json`` (and a markdown summary) on a GPU
machine: per model, one Amazon Beauty training epoch at the paper's batch 2048 (samples/s, peak memory), a
full-sort evaluation, the TTT layer's timings and three headline ratios. This module reads the newest such file
(:func:`newest_gpu_results`: a run of every part before a targeted rerun of one; tiny smoke runs, marked
``"tiny": true``, and runs on any device but a CUDA GPU are never used, and :func:`calibration` refuses them) and
sets its numbers
beside :func:`ttt4rec_edu.estimate.estimate_costs`, which divides counted FLOPs by an *assumed* sustained
throughput (``ESTIMATE_GPU_TFLOPS``):

- :func:`calibration` — per model: the FLOPs of one training sample at Beauty's size (counted by
  ``estimate_costs``), the measured samples/s, hence the throughput the GPU really reached on that model
  (``achieved TFLOP/s = samples/s × FLOPs per sample``), and ``off_by = assumed / achieved``: the factor by
  which the estimate's time was too short (> 1) or too long (< 1) for a Beauty epoch;
- :func:`recalibrate` — an ``estimate_costs`` table with each cell's hours multiplied by its model's ``off_by``.

The recalibration assumes that a model reaches on the paper's datasets the FLOP rate it reached on Beauty. It
cannot be exact: Gowalla's 1.28 M items and longer contexts make larger matrix products, which GPUs usually
run at a higher rate, so recalibrated hours for the large datasets lean high; and the factor comes from training
epochs only (evaluation is assumed to be off by the same factor).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import pandas as pd

SCHEMA = 1
KIND = "ttt4rec_edu gpu_check"
#: where ``scripts/gpu_check.py`` writes by default (in a source checkout)
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "book" / "results" / "gpu"
PathLike = Union[str, Path]
#: (items, context length) of the Amazon Beauty 5-core data that part c of the GPU check trains on
BEAUTY_SHAPE = (12101, 50)


class GpuResultsError(ValueError):
    """A GPU results file that cannot be read or is not one of ``scripts/gpu_check.py``'s."""


def load_gpu_results(path: PathLike) -> Dict[str, Any]:
    """Read and check one results file; the returned dict has its ``path`` added."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GpuResultsError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise GpuResultsError(f"{path}: not a results file of scripts/gpu_check.py (kind {KIND!r} missing)")
    if doc.get("schema") != SCHEMA:
        raise GpuResultsError(f"{path}: schema {doc.get('schema')!r}, this library reads schema {SCHEMA}")
    missing = [k for k in ("date", "device", "parts", "environment") if k not in doc]
    if missing:
        raise GpuResultsError(f"{path}: missing {', '.join(missing)}")
    return {**doc, "path": str(path)}


def is_gpu_run(doc: Mapping[str, Any]) -> bool:
    """A real measurement on a CUDA GPU: not a tiny smoke run, and the device type is ``cuda``."""
    return not doc.get("tiny") and (doc.get("device") or {}).get("type") == "cuda"


def ran_every_part(doc: Mapping[str, Any]) -> bool:
    """The run selected every part (not a targeted rerun such as ``--parts c``; files without the setting are
    from before it existed and ran every part)."""
    selected = (doc.get("settings") or {}).get("parts") or "abcde"
    return set("abcd") <= set(selected)


def gpu_result_files(folder: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Every results file in ``folder`` (default :data:`DEFAULT_DIR`) measured on a CUDA GPU (:func:`is_gpu_run`:
    tiny smoke runs and CPU runs are left out), oldest first (by start time)."""
    folder = Path(DEFAULT_DIR if folder is None else folder)
    if not folder.is_dir():
        return []
    docs = [load_gpu_results(p) for p in sorted(folder.glob("*.json"))]
    docs = [d for d in docs if is_gpu_run(d)]
    return sorted(docs, key=lambda d: (str(d.get("started_at", d["date"])), d["path"]))


def newest_gpu_results(folder: Optional[PathLike] = None) -> Optional[Dict[str, Any]]:
    """The newest CUDA results file in ``folder`` that ran every part (a targeted rerun of one part only when no
    such run exists), or ``None`` when nothing was measured on a GPU yet."""
    docs = gpu_result_files(folder)
    full = [d for d in docs if ran_every_part(d)]
    return (full or docs)[-1] if docs else None


def check_gpu_run(doc: Mapping[str, Any]) -> None:
    """Raise :class:`GpuResultsError` unless ``doc`` was measured on a CUDA GPU (a CPU run is never shown as a
    GPU measurement)."""
    if not is_gpu_run(doc):
        kind = "a tiny smoke run" if doc.get("tiny") else f"measured on {(doc.get('device') or {}).get('type')!r}"
        raise GpuResultsError(f"{doc.get('path', 'the results')}: {kind}, not on a CUDA GPU; it is not a GPU "
                              "measurement")


def describe(doc: Mapping[str, Any]) -> str:
    """``"measured on NVIDIA H200 (cuda), 2026-12-01, torch 2.11.0, commit 1a2b3c4, by python3 scripts/gpu_check.py
    ..."``."""
    dev, env = doc["device"], doc.get("environment", {})
    commit = f", commit {str(env['git_commit'])[:12]}" if env.get("git_commit") else ""
    return (f"measured on {dev.get('name')} ({dev.get('type')}), {doc['date']}, torch {env.get('torch')}{commit}, "
            f"by {doc.get('command', 'scripts/gpu_check.py')}")


def part_status(doc: Mapping[str, Any]) -> pd.DataFrame:
    """One row per part: what it checks, its status, the reason when not ok, seconds."""
    return pd.DataFrame([{"part": k, "what": p.get("title"), "status": p.get("status"),
                          "reason": p.get("reason") or "", "seconds": p.get("elapsed_s")}
                         for k, p in doc["parts"].items()]).set_index("part")


def headline_table(doc: Mapping[str, Any]) -> pd.DataFrame:
    """The three headline ratios with their goals (``None`` where the run could not measure one)."""
    return pd.DataFrame([{"figure": r["figure"], "measured ratio": r["value"], "goal": r["goal"],
                          "goal met": r["met"], "how": r["how"]} for r in doc.get("headline", [])])


def measured_epochs(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Part c's one-epoch measurements, one row per model variant (index ``variant``)."""
    c = (doc["parts"].get("c") or {}).get("result") or {}
    rows = [r for r in c.get("epochs", []) if r.get("epoch_s") is not None and r.get("train_samples")]
    columns = ["variant", "model", "options", "train_samples", "epoch_s", "train_samples_per_s",
               "eval_samples_per_s", "peak_memory_mib"]
    frame = pd.DataFrame([{k: r.get(k) for k in columns} for r in rows], columns=columns)
    return frame.set_index("variant")


def beauty_train_gflop(epochs: pd.DataFrame) -> Dict[str, float]:
    """GFLOPs of one training sample at Amazon Beauty's size (12,101 items, context 50) for every measured
    variant, counted by :func:`ttt4rec_edu.estimate.estimate_costs` (its Beauty 3:2:5 cells)."""
    from .estimate import estimate_costs
    from .experiments import Experiment

    cells = [Experiment("beauty", "amazon-beauty", "3:2:5", row["model"],
                        (row["options"] or {}).get("backbone"), (row["options"] or {}).get("inner"))
             for _, row in epochs.iterrows()]
    if not cells:
        return {}
    frame = estimate_costs("beauty", experiments=cells, measure_cpu=False)
    return dict(zip(frame["model"], frame["estimate_train_gflop_per_sample"]))


def calibration(doc: Mapping[str, Any], train_gflop: Optional[Mapping[str, float]] = None,
                assumed_tflops: Optional[float] = None) -> pd.DataFrame:
    """Per measured model: estimated against measured Beauty epoch, achieved TFLOP/s, and ``off_by``.

    ``train_gflop``: GFLOPs per training sample per variant (default: counted by :func:`beauty_train_gflop`);
    ``assumed_tflops``: the estimate's assumed throughput (default ``ESTIMATE_GPU_TFLOPS``).
    """
    from .estimate import ESTIMATE_GPU_TFLOPS

    check_gpu_run(doc)
    assumed = float(ESTIMATE_GPU_TFLOPS if assumed_tflops is None else assumed_tflops)
    epochs = measured_epochs(doc)
    data = ((doc["parts"].get("c") or {}).get("result") or {}).get("data") or {}
    if len(epochs) and (data.get("items"), data.get("max_len")) != BEAUTY_SHAPE:
        raise GpuResultsError(
            f"{doc.get('path', 'the results')}: part c ran on {data.get('name')!r} ({data.get('items')} items, "
            f"context {data.get('max_len')}); the calibration counts FLOPs at Amazon Beauty's "
            f"{BEAUTY_SHAPE[0]:,} items and context {BEAUTY_SHAPE[1]}")
    gflop = dict(beauty_train_gflop(epochs) if train_gflop is None else train_gflop)
    rows = []
    for variant, row in epochs.iterrows():
        per_sample = gflop.get(variant, math.nan)
        estimated = row["train_samples"] * per_sample * 1e9 / (assumed * 1e12)
        achieved = row["train_samples_per_s"] * per_sample / 1e3
        rows.append({"variant": variant, "train_samples": int(row["train_samples"]),
                     "estimate_train_gflop_per_sample": per_sample,
                     "estimate_epoch_s": estimated, "measured_epoch_s": float(row["epoch_s"]),
                     "measured_train_samples_per_s": float(row["train_samples_per_s"]),
                     "measured_peak_memory_mib": row["peak_memory_mib"],
                     "achieved_tflops": achieved, "assumed_tflops": assumed,
                     "off_by": float(row["epoch_s"]) / estimated if estimated > 0 else math.nan})
    frame = pd.DataFrame(rows).set_index("variant") if rows else pd.DataFrame(
        columns=["train_samples", "estimate_train_gflop_per_sample", "estimate_epoch_s", "measured_epoch_s",
                 "measured_train_samples_per_s", "measured_peak_memory_mib", "achieved_tflops",
                 "assumed_tflops", "off_by"])
    frame.attrs["measured_on"] = describe(doc)
    return frame


def recalibrate(estimate: pd.DataFrame, calib: pd.DataFrame) -> pd.DataFrame:
    """``estimate`` (from ``estimate_costs``) with two columns more: the model's measured ``off_by`` and
    ``recalibrated_gpu_hours_all_seeds = estimate_gpu_hours_all_seeds × off_by`` (NaN for an unmeasured model)."""
    out = estimate.copy()
    factors = calib["off_by"].to_dict() if len(calib) else {}
    out["measured_off_by"] = [factors.get(model, math.nan) for model in out["model"]]
    out["recalibrated_gpu_hours_all_seeds"] = out["estimate_gpu_hours_all_seeds"] * out["measured_off_by"]
    out.attrs = {**estimate.attrs, "measured_on": calib.attrs.get("measured_on")}
    return out


def comparison_tables(estimate: pd.DataFrame, doc: Mapping[str, Any],
                      train_gflop: Optional[Mapping[str, float]] = None) -> Dict[str, pd.DataFrame]:
    """What chapter 10 shows beside its estimate, every title and column labelled with the device and date:
    the Beauty epoch estimated against measured per model, the estimate's cells recalibrated, and the totals
    per table. ``{title: frame}``, in that order."""
    label = f"{doc['device'].get('name')}, {doc['date']}"
    calib = calibration(doc, train_gflop)
    epoch = calib[["estimate_epoch_s", "measured_epoch_s", "measured_train_samples_per_s",
                   "achieved_tflops", "off_by", "measured_peak_memory_mib"]].rename(columns={
                       "estimate_epoch_s": "ESTIMATE epoch s",
                       "measured_epoch_s": f"MEASURED epoch s ({label})",
                       "measured_train_samples_per_s": "MEASURED samples/s",
                       "achieved_tflops": "achieved TFLOP/s (counted FLOPs / measured time)",
                       "off_by": "estimate off by × (measured / estimated time)",
                       "measured_peak_memory_mib": "MEASURED peak memory MiB"})
    recal = recalibrate(estimate, calib)
    hours = ["estimate_gpu_hours_all_seeds", "recalibrated_gpu_hours_all_seeds"]
    names = {"estimate_gpu_hours_all_seeds": "ESTIMATE GPU hours (3 seeds)",
             "measured_off_by": f"off by × (MEASURED, {label})",
             "recalibrated_gpu_hours_all_seeds": f"RECALIBRATED GPU hours ({label})"}
    cells = recal[["table", "dataset", "split", "model", "estimate_gpu_hours_all_seeds", "measured_off_by",
                   "recalibrated_gpu_hours_all_seeds"]].rename(columns=names)
    totals = recal.groupby("table")[hours].sum(min_count=1).rename(columns=names)
    totals["cells without a measured model"] = recal.groupby("table")["measured_off_by"].apply(
        lambda s: int(s.isna().sum()))
    return {f"One Amazon Beauty training epoch at batch {_batch(doc)}: ESTIMATE against MEASURED ({label})": epoch,
            f"Every estimated cell, recalibrated by its model's measured factor ({label})": cells,
            f"Per table: ESTIMATE and RECALIBRATED GPU hours ({label})": totals}


def _batch(doc: Mapping[str, Any]) -> Any:
    return ((doc["parts"].get("c") or {}).get("result") or {}).get("batch_size", "?")


__all__ = ["DEFAULT_DIR", "GpuResultsError", "load_gpu_results", "is_gpu_run", "ran_every_part", "check_gpu_run",
           "gpu_result_files", "newest_gpu_results",
           "describe", "part_status", "headline_table", "measured_epochs", "beauty_train_gflop", "calibration",
           "recalibrate", "comparison_tables"]
