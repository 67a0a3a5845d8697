"""Copy a results folder's *results* into another, never a checkpoint: every finished run's metrics.json,
experiment.json and test_ranks.npz; then the target's results.csv and summaries are written afresh from all the
runs it holds. Used to bring long runs made outside the repository (their checkpoints stay there, for
--resume) into book/results/converged:

    python scripts/copy_results.py RUNS_FOLDER book/results/converged

A run is copied only when it is finished (metrics.json and experiment.json both exist); a file already in the
target is replaced atomically, so an interrupted copy leaves every file whole. A run's recipe label is written
again from its recorded values (``ttt4rec_edu.recipes.recipe_of``, the rule the tables use), so a run made
before a recipe's values were fixed carries the label its values have now.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ttt4rec_edu.experiments import collect_results, write_reports
from ttt4rec_edu.recipes import recipe_of
from ttt4rec_edu.runner import RECORD_NAME, is_finished
from ttt4rec_edu.train import METRICS_NAME, RANKS_NAME, TrainConfig
from ttt4rec_edu.utils import atomic_write_bytes, atomic_write_json


def copy_results(source: Path, target: Path) -> list:
    """Copy the finished runs' result files under ``source/runs`` to ``target/runs``; return the runs copied."""
    if not (source / "runs").is_dir():
        raise ValueError(f"{source} has no runs/ folder: not a results folder")
    copied = []
    for metrics in sorted((source / "runs").rglob(METRICS_NAME)):
        run = metrics.parent
        if not is_finished(run):
            continue
        where = target / run.relative_to(source)
        where.mkdir(parents=True, exist_ok=True)
        metrics = json.loads((run / METRICS_NAME).read_text())
        record = json.loads((run / RECORD_NAME).read_text())
        recipe = recipe_of(metrics.get("config", {}), TrainConfig().to_dict())
        metrics.setdefault("config", {})["recipe"] = recipe
        record["recipe"] = recipe
        if (run / RANKS_NAME).exists():
            atomic_write_bytes(where / RANKS_NAME, (run / RANKS_NAME).read_bytes())
        atomic_write_json(where / METRICS_NAME, metrics)
        atomic_write_json(where / RECORD_NAME, record)   # the record last: it marks the run finished
        copied.append(str(run.relative_to(source / "runs")))
    write_reports(target, collect_results(target))
    return copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    try:
        copied = copy_results(args.source, args.target)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(copied)} finished runs copied (results only):", *copied, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
