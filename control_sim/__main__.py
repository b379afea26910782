"""``python -m control_sim``: the simulated control runtime (not built yet)."""

import sys

if __name__ == "__main__":
    print("control_sim: the QPU service and syndrome source are not built yet.", file=sys.stderr)
    sys.exit(2)
