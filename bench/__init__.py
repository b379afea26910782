"""nearloop benchmarks, run as ``python -m bench <command>``: peers side by side in one run.

Commands: ``rtt`` (request round trip through each peer). Each command writes a table, and
optionally JSON and a plot; see ``python -m bench <command> --help``.
"""

__all__: list[str] = []
