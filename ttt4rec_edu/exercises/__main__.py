"""``python -m ttt4rec_edu.exercises {index,export,grade}``: the instructor tools under their older name.

Kept so that existing commands keep working; the one command line spells it ``python -m ttt4rec_edu instructor``.
"""
from .instructor import main

raise SystemExit(main())
