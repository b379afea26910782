"""``python -m broker``: see :mod:`broker.cli`."""

import sys

from broker.cli import main

if __name__ == "__main__":
    sys.exit(main())
