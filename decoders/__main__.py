"""``python -m decoders``: decoder worker processes (not built yet)."""

import sys

if __name__ == "__main__":
    print("decoders: the decoder workers are not built yet.", file=sys.stderr)
    sys.exit(2)
