"""``python -m decoders``: see :mod:`decoders.cli`."""

import sys

from decoders.cli import main

if __name__ == "__main__":
    sys.exit(main())
