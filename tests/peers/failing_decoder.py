"""A pymatching decoder worker that fails chosen blocks: for the tests of a run's verdict.

    python -m tests.peers.failing_decoder EP SERVICE --after K --every N

It decodes as ``python -m decoders --decoder pymatching`` does, except that, counting the
blocks it is given from 0, block ``K``, ``K + N``, ``K + 2N``, ... gets a ``bad_block``
error reply instead. With one such worker, ``--after 16`` lets a run's 16 warm-up
blocks through, so that the failures land in the measured stream.
"""

from __future__ import annotations

import argparse
from typing import Any

from client import Message, run_worker
from client.errors import BadBlock
from client.sync_client import Client
from decoders.registry import make_decoder
from decoders.service import DecoderService, block_shots


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("service")
    p.add_argument("--after", type=int, required=True)
    p.add_argument("--every", type=int, required=True)
    args = p.parse_args()
    seen = [0]

    with Client(args.endpoint, timeout=10.0) as models:
        service = DecoderService(make_decoder("pymatching"), models.fetch_model)

        def handle(messages: list[Message]) -> list[Any]:
            results = service.handle_batch(messages)
            for i in range(len(results)):
                k = seen[0] + i
                if k >= args.after and (k - args.after) % args.every == 0:
                    results[i] = BadBlock(f"block {k} failed on purpose")
            seen[0] += len(results)
            return results

        run_worker(
            args.endpoint, args.service, None,
            batch_handler=handle, batch_weight=block_shots, credit=4,
        )  # fmt: skip


if __name__ == "__main__":
    main()
