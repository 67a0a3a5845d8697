"""``python -m ttt4rec_edu.exercises {index,export,grade}``: the instructor tools under their older name.

Kept so that existing commands keep working; it runs ``python -m ttt4rec_edu instructor ...`` of the one command
line (:mod:`ttt4rec_edu.cli`).
"""
import sys

from ..cli import main

raise SystemExit(main(["instructor", *sys.argv[1:]]))
