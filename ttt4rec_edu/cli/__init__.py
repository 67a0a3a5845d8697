"""The one command line: ``python -m ttt4rec_edu {data stats, train, reproduce, model-summary, instructor} ...``
(``--help`` on each; ``ttt4rec_edu/__main__.py`` only calls :func:`main`, and ``python -m ttt4rec_edu.exercises``
is the older spelling of ``instructor``).

One module per command family, under this package's face (:func:`build_parser`, :func:`main`):

- ``ttt4rec_edu.cli.options``      the one-line error, option types, the data/model/training options and recipes
- ``ttt4rec_edu.cli.training``     ``data stats``, ``train`` (also under ``torchrun``) and ``model-summary``
- ``ttt4rec_edu.cli.reproduce``    ``reproduce``: the paper's tables and the CPU-scale runs
- ``ttt4rec_edu.cli.instructor``   ``instructor {index,export,grade}``

The command line imports the library and nothing in the library imports it, or calls back into it: a command
turns its options into plain values once and the library does the rest. A run is set up by the library
(``ttt4rec_edu.runner.run_one``, for ``train`` and ``reproduce`` alike; ``train`` asks through a
``ttt4rec_edu.runner.TrainRequest``); the training options take their defaults from
:class:`ttt4rec_edu.train.TrainConfig`, and the library applies the recipe, resolves the device once per run and
checks the values with ``validate()``.

Every expected problem (unknown dataset, missing file, malformed split, bad max length, unknown model, a model
option of the wrong type, unwritable output folder, an output folder holding another run, a checkpoint of another
run, an option contradicting ``--recipe``) ends with one ``error: ...`` line on stderr and exit status 2 — no
traceback; so does any ``ValueError`` raised deeper down (a bad value the library refused). Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .instructor import add_instructor_parser
from .options import EXIT_USAGE, RAW, CliError, check_model_arg_types
from .reproduce import TABLE_HELP, add_reproduce_parser
from .training import add_data_parser, add_model_summary_parser, add_train_parser

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
  python -m ttt4rec_edu reproduce --table beauty --recipe official --device cpu --out converged/
  python -m ttt4rec_edu model-summary --model ttt4rec
  python -m ttt4rec_edu instructor export --chapter 3 --out handout/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ttt4rec_edu", formatter_class=RAW,
                                     description="TTT4Rec, the book: data, training and evaluation.",
                                     epilog=MAIN_EXAMPLES)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    add_data_parser(commands)
    add_train_parser(commands)
    add_reproduce_parser(commands)
    add_instructor_parser(commands)
    add_model_summary_parser(commands)
    return parser


def _expected_errors() -> tuple:
    from ..data import DataError
    from ..train import TrainError

    return (CliError, DataError, TrainError, ValueError)   # ValueError: bad values found deeper down


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage + the problem (or the help)
        return int(exit_.code or 0)
    try:
        return args.handler(args)
    except _expected_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (the last finished epoch's checkpoint is kept; use --resume)", file=sys.stderr)
        return 130


__all__ = ["main", "build_parser", "CliError", "EXIT_USAGE", "TABLE_HELP", "check_model_arg_types"]
