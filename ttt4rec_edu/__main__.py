"""``python -m ttt4rec_edu ...``: runs the command line, which lives in ``ttt4rec_edu.cli`` (``--help`` there)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
