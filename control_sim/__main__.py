"""``python -m control_sim``: see :mod:`control_sim.cli`."""

import sys

from control_sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
