"""The ``reproduce`` command: list, estimate, dry-run or run one table's experiments and write the reports.

The experiments, their runs and the reports are ``ttt4rec_edu.experiments``' (each run is set up by
:func:`ttt4rec_edu.runner.run_one`, like ``train``'s); the cost estimates are ``ttt4rec_edu.estimate``'s. The
tables' help (:data:`TABLE_HELP`) counts the cells and runs from the experiments themselves, so a new model or
dataset shows up here without an edit.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Dict, Tuple

from ..experiments import (TABLES, RunSettings, collect_results, display_name, format_summary,
                           paper_row, run_dir, run_experiments, select, summarize, table_experiments, write_reports)
from ..runner import checked_config, resolve_run_device, run_state, with_recipe
from .options import (RAW, add_recipe_option, add_source_options, add_timestamps_option, add_training_options,
                      positive_int)

# the RunSettings fields that are TrainConfig fields, set by their training options
REPRODUCE_FIELDS = ("epochs", "patience", "batch_size", "max_train_batches", "device", "bf16", "loss_chunk", "ties")
_SEEDS = (0, 1, 2)

_TABLE_TEXT = {   # what each table is; its models, datasets, cells and runs are counted from the experiments
    "2": ("Table 2: {models} on {datasets}, split 3:2:5",
          "ESTIMATE ~150 GPU hours (3 seeds, 50 epochs, 10 TFLOP/s; dominated by Gowalla's 1.28 M "
          "items, whose loss runs in exact item chunks; see --estimate)"),
    "3": ("Table 3: TTT4Rec {{Transformer, Mamba}} × {{Linear, MLP}} inner models on {datasets}, split 3:2:5",
          "ESTIMATE ~22 GPU hours (see --estimate)"),
    "4": ("Table 4: {models} on {datasets} with more training data, split 6:2:2",
          "ESTIMATE ~0.7 GPU hours (see --estimate)"),
    "beauty": ("CPU-scale (not in the paper): {models} + TTT4Rec with η = 0 at test + TTT4Rec trained and tested "
               "without adaptation (fixed W0) on Amazon Beauty 5-core, splits 3:2:5 and 6:2:2",
               "ESTIMATE ~0.2 GPU hours (--estimate also gives this machine's CPU hours)"),
}


def _table_help() -> Dict[str, Tuple[str, str, str]]:
    """``table -> (what, cells × seeds = runs, cost)`` for the help and chapter 10, counted from the tables."""
    out, keys_of = {}, {}
    for table, (what, cost) in _TABLE_TEXT.items():
        experiments = table_experiments(table)
        keys_of[table] = {e.run_key for e in experiments}
        models = [display_name(e) for e in experiments if e.adapt and e.adapt_at_test]
        datasets = list(dict.fromkeys(e.dataset for e in experiments))
        shared = [t for t in out if keys_of[t] & keys_of[table]]
        runs = f"{len(experiments)} cells × {len(_SEEDS)} seeds = {len(experiments) * len(_SEEDS)} runs"
        if shared:
            runs += "".join(f" ({len(keys_of[t] & keys_of[table])} cells shared with Table {t})" for t in shared)
        out[table] = (what.format(models=", ".join(dict.fromkeys(models)), datasets=", ".join(datasets)), runs,
                      cost)
    return out


TABLE_HELP = _table_help()


def _reproduce_epilog() -> str:
    lines = ["tables:"]
    for table, (what, runs, cost) in _table_help().items():   # counted now: a model registered since is in it
        lines += [f"  {table:<7} {what}", f"          {runs}; {cost}"]
    lines += ["", "examples:",
              "  python -m ttt4rec_edu reproduce --table 2 --device cuda --out results/",
              "  python -m ttt4rec_edu reproduce --table beauty --recipe official --device cpu --out converged/",
              "  python -m ttt4rec_edu reproduce --table 3 --dataset amazon-video-games --seeds 0",
              "  python -m ttt4rec_edu reproduce --table 2 --estimate",
              "  python -m ttt4rec_edu reproduce --table 4 --list",
              "  python -m ttt4rec_edu reproduce --table 2 --data synthetic --max-users 200 --epochs 1 "
              "--models sasrec ttt4rec --out /tmp/demo",
              "",
              "Writes OUT/results.csv (one row per run, with its recipe), OUT/summary.csv and OUT/summary.md "
              "(mean ± std over seeds beside the paper's value and the difference in percent). Finished runs are "
              "skipped and a killed run resumes from its checkpoint: rerun the same command to continue."]
    return "\n".join(lines)


def add_reproduce_parser(commands) -> argparse.ArgumentParser:
    """The ``reproduce`` subcommand (added to the command line's subparsers); its training options are the
    trainer's (``TrainConfig``), like ``train``'s."""
    p = commands.add_parser("reproduce", help="rerun the paper's tables and compare with its numbers",
                            formatter_class=RAW, epilog=_reproduce_epilog(),
                            description="Run the named experiments of one table (missing runs only) and "
                                        "summarise them beside the paper's numbers.")
    p.add_argument("--table", required=True, choices=TABLES, help="which table (see below)")
    p.add_argument("--dataset", nargs="+", default=None, metavar="D", help="only these datasets")
    p.add_argument("--split", nargs="+", default=None, metavar="A:B:C",
                   help="only these splits (the beauty table has 3:2:5 and 6:2:2)")
    p.add_argument("--models", nargs="+", default=None, metavar="M",
                   help="only these models (registry names, or variants such as ttt4rec-mamba-linear)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(_SEEDS), metavar="S",
                   help=f"seeds (default {' '.join(map(str, _SEEDS))})")
    p.add_argument("--out", default="results", metavar="DIR", help="results folder (default results/)")
    p.add_argument("--list", action="store_true", help="print the experiments with their keys; run nothing")
    p.add_argument("--dry-run", action="store_true", help="print what would run or be skipped; run nothing")
    p.add_argument("--estimate", action="store_true",
                   help="print the ESTIMATED GPU hours and memory of the table (FLOP counts); run nothing")
    g = p.add_argument_group("training (recorded with every run; a finished run is reused only under the same)")
    add_recipe_option(g)
    add_training_options(g, REPRODUCE_FIELDS)
    g.add_argument("--max-users", type=positive_int, default=None, metavar="N",
                   help="keep only the first N users of each dataset")
    g.add_argument("--data", dest="data_source", default=None, metavar="NAME_OR_PATH",
                   help="replace every dataset by this one (a registry name, a file, or 'synthetic')")
    add_timestamps_option(g)
    add_source_options(g)
    g.add_argument("--progress", action="store_true", help="progress bars and per-epoch lines of every run")
    p.set_defaults(handler=cmd_reproduce)
    return p


def _settings(args) -> RunSettings:
    """The run settings from the options (every RunSettings field has its option of the same name), with
    ``--recipe``'s values (the library refuses an option given beside it that contradicts it)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunSettings)}
    training = with_recipe(args.recipe, {name: values[name] for name in REPRODUCE_FIELDS},
                           getattr(args, "given", None) or ())
    # a recipe value reproduce has no option for (lr, ...) stays the trainer's; checked_config tells a difference
    return RunSettings(**{**values, **{name: training[name] for name in REPRODUCE_FIELDS}})


def cmd_reproduce(args) -> int:
    """``python -m ttt4rec_edu reproduce``: list, estimate, dry-run or run a table and write the reports."""
    experiments = select(table_experiments(args.table), args.dataset, args.models, args.split)
    if args.list:
        for exp in experiments:
            paper = paper_row(exp)
            shown = f"paper ndcg@10 {paper['ndcg@10']:.4f}" if paper else "not in the paper"
            print(f"{exp.key:<58} runs in {exp.run_key}  ({shown})")
        print(f"{len(experiments)} experiments × {len(args.seeds)} seeds = {len(experiments) * len(args.seeds)} runs")
        return 0
    if args.estimate:
        from ..estimate import estimate_costs, format_estimate

        print(format_estimate(estimate_costs(args.table, seeds=len(args.seeds), experiments=experiments)))
        return 0
    settings = _settings(args)
    # the trainer's check, before any run starts; the recipe every run will record (read from the values)
    recipe = checked_config(settings.train_config(seed=args.seeds[0]), args.recipe).to_dict()["recipe"]
    out = Path(args.out)
    if args.dry_run:
        shown = {"finished": "finished", "resumable": "would resume", "new": "would run"}
        for exp in experiments:
            for seed in args.seeds:
                print(f"{shown[run_state(run_dir(out, exp, seed))]:<13} {exp.key} seed {seed}")
        return 0
    device = resolve_run_device(settings.device)   # once for every run: the trainer takes it as it is
    settings = dataclasses.replace(settings, device=device)
    print(f"table {args.table}: {len(experiments)} experiments × {len(args.seeds)} seeds on {device}, "
          f"recipe {recipe}, results in {out}", flush=True)
    results = run_experiments(experiments, args.seeds, out, settings,
                              log=lambda line: print(line, flush=True))
    # the files cover every finished run in OUT (all tables run so far); the printout covers this request
    paths = write_reports(out, collect_results(out))
    print(format_summary(summarize(results)))
    print("(paper = the value printed in the paper; Δ% = 100·(ours − paper)/paper)")
    print(f"wrote {paths['results']}, {paths['summary']}, {paths['markdown']}")
    return 0


__all__ = ["TABLE_HELP", "add_reproduce_parser", "cmd_reproduce", "REPRODUCE_FIELDS"]
