"""``python -m bench`` (and ``nearloop bench``): the benchmark command line.

Each subcommand's module is imported only when that subcommand runs, so ``--help`` is
fast. To add a command, add its ``add_*_arguments`` and a branch in :func:`_dispatch`.
``--json`` and ``--plot`` create the folder they write in; the README's commands write
under ``bench-out/`` (ignored by git), so that a run never overwrites ``docs/bench/``
unless asked to.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.flood_config import (
    DEFAULT_HANDSHAKES,
    DEFAULT_PARALLEL,
    DEFAULT_QUIET_N,
    FloodConfig,
)
from bench.rtt_config import (
    BASELINES,
    DEFAULT_N,
    DEFAULT_PAYLOAD_BYTES,
    DEFAULT_PEERS,
    DEFAULT_ROUNDS,
    DEFAULT_SEED,
    DEFAULT_WARMUP,
    PEERS,
    RttConfig,
    parse_peers,
    with_extras,
)
from client.arguments import (
    RUN_FAILED,
    CommandParser,
    add_command,
    add_json,
    add_maxiter,
    add_p,
    add_seed,
    check_distance,
    distance,
    fail,
)
from decoders.names import DECODER_NAMES

PROG = "python -m bench"


def add_plot(p: argparse.ArgumentParser, what: str) -> None:
    """``--plot FILE.png``: write ``what`` there."""
    p.add_argument(
        "--plot", type=Path, metavar="FILE.png",
        help=f"write {what} to FILE.png, creating its folder (default: none written)",
    )  # fmt: skip


def add_rtt_arguments(p: argparse.ArgumentParser) -> None:
    """The ``rtt`` subcommand's options."""
    p.add_argument("--n", type=int, default=DEFAULT_N, help="timed round trips per peer")
    p.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="untimed round trips per peer first"
    )
    p.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS,
        help="split each peer's round trips into this many chunks, taken round-robin "
        "across peers",
    )  # fmt: skip
    p.add_argument("--payload-bytes", type=int, default=DEFAULT_PAYLOAD_BYTES, help="request size")
    p.add_argument(
        "--transport", choices=("ipc", "tcp"), default="ipc",
        help="ipc:// in a temp dir, or tcp:// on 127.0.0.1",
    )  # fmt: skip
    p.add_argument(
        "--peers", default=",".join(DEFAULT_PEERS),
        help=f"comma list from {', '.join(PEERS)} (default: {', '.join(DEFAULT_PEERS)}; the "
        f"ratios need {' and '.join(BASELINES)})",
    )  # fmt: skip
    p.add_argument(
        "--curve", action="store_true",
        help="add direct-curve, nearloop-curve and nearloop-curve-local (CURVE keys, ZAP "
        "allow-lists; the last with its worker on the broker's ipc endpoint), each beside its "
        "twin without CURVE (direct, nearloop); needs --transport tcp",
    )  # fmt: skip
    p.add_argument(
        "--metrics", action="store_true",
        help="add nearloop-metrics (the broker serving /metrics, scraped every second), "
        "beside its twin nearloop",
    )  # fmt: skip
    add_seed(p, default=DEFAULT_SEED, help="seeds the payload bytes")
    add_json(p, what="the results and metadata")
    add_plot(p, "a latency plot")


def add_flood_arguments(p: argparse.ArgumentParser) -> None:
    """The ``flood`` subcommand's options."""
    p.add_argument(
        "--handshakes", type=int, default=DEFAULT_HANDSHAKES,
        help="CURVE handshakes with unknown keys in the flood",
    )  # fmt: skip
    p.add_argument(
        "--parallel", type=int, default=DEFAULT_PARALLEL, help="handshakes in flight at once"
    )
    p.add_argument(
        "--n", type=int, default=DEFAULT_QUIET_N,
        help="round trips timed before the flood, and again after it",
    )  # fmt: skip
    p.add_argument(
        "--rate", type=float, default=0.0, metavar="HZ",
        help="at most HZ handshakes a second (default 0: as fast as they are refused)",
    )  # fmt: skip
    add_json(p, what="the results and metadata")
    add_plot(p, "a latency plot")


def add_decoders_arguments(p: argparse.ArgumentParser) -> None:
    """The ``decoders`` subcommand's options (defaults live in ``DecodersBenchConfig``)."""
    p.add_argument(
        "--device", choices=("cpu", "cuda", "both"),
        help="bp-gpu on numpy, on CuPy, or both side by side (default: both)",
    )  # fmt: skip
    p.add_argument(
        "--distance", type=distance, metavar="D",
        help="surface-code distance, odd and >= 3 (default: 5)",
    )  # fmt: skip
    add_p(p)
    p.add_argument(
        "--batch-shots", metavar="N,N,...",
        help="batch sizes to measure, comma-separated (default: 100,1000,10000)",
    )  # fmt: skip
    p.add_argument("--batches", type=int, help="timed batches per peer and size (default: 5)")
    p.add_argument(
        "--budget-s", type=float,
        help="seconds allowed per peer and size; fewer batches if over (default: 30)",
    )  # fmt: skip
    add_seed(p, help="seeds stim's sampling")
    p.add_argument(
        "--float-dtype", choices=("float64", "float32"),
        help="bp-gpu's float type (default: float64)",
    )  # fmt: skip
    add_json(p, what="the results and metadata")
    add_plot(p, "a throughput plot")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"need comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need integers >= 1, got {text!r}")
    return values


def _distances(text: str) -> tuple[int, ...]:
    try:
        return tuple(check_distance(d) for d in _int_list(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _transports(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    known = ("lane", "broker")
    if not values or any(v not in known for v in values):
        raise argparse.ArgumentTypeError(f"need some of {', '.join(known)}, got {text!r}")
    return values


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    """The ``stream`` subcommand's options."""
    p.add_argument(
        "--distances", type=_distances, default=(5, 9), metavar="D,D,...",
        help="surface-code distances, each odd and >= 3 (default: 5,9)",
    )  # fmt: skip
    add_p(p)
    p.add_argument(
        "--decoder", choices=DECODER_NAMES, default="pymatching", help="the workers' decoder"
    )
    p.add_argument("--shots", type=int, default=200_000, help="shots per throughput run")
    p.add_argument(
        "--block-shots", type=int, default=1000, help="shots per block in throughput runs"
    )
    p.add_argument(
        "--periods-us", type=_int_list, default=(2000, 1000, 500, 200, 100),
        metavar="T,T,...", help="the paced sweep's periods (default: 2000,1000,500,200,100)",
    )  # fmt: skip
    p.add_argument(
        "--paced-block-shots", type=int, default=100, help="shots per block in paced runs"
    )
    p.add_argument("--paced-blocks", type=int, default=1000, help="blocks per paced run, at least")
    p.add_argument(
        "--paced-seconds", type=float, default=1.0,
        help="each paced run lasts at least this long: short periods send more blocks",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=_int_list, default=(1, 2), metavar="N,N,...",
        help="decoder worker counts to run (default: 1,2)",
    )  # fmt: skip
    p.add_argument(
        "--transports", type=_transports, default=("lane", "broker"), metavar="T,T,...",
        help="lane (a shared-memory lane to each worker; fails without the lane extra) "
        "and/or broker (every block through the broker) (default: lane,broker)",
    )  # fmt: skip
    add_seed(p, help="seeds the syndrome samples")
    add_json(p, what="the results and metadata")
    add_plot(p, "the throughput and paced plots")


def add_vqe_arguments(p: argparse.ArgumentParser) -> None:
    """The ``vqe`` subcommand's options (defaults live in ``VqeBenchConfig``)."""
    p.add_argument("--optimizer", choices=("spsa", "cobyla"), help="the optimizer (default: spsa)")
    add_maxiter(p, help="timed optimizer iterations per peer, over as many VQE runs as it "
                "takes (default: 2000)")  # fmt: skip
    p.add_argument(
        "--rounds", type=int,
        help="chunks of iterations, taken round-robin across the peers (default: 5)",
    )  # fmt: skip
    p.add_argument("--warmup", type=int, help="untimed energy calls per peer first (default: 200)")
    add_seed(p, help="seeds the VQE runs")
    add_json(p, what="the results and metadata")
    add_plot(p, "a latency plot")


def add_soak_arguments(p: argparse.ArgumentParser) -> None:
    """The ``soak`` subcommand's options (defaults live in :mod:`bench.soak_config`)."""
    from bench import soak_config as c

    p.add_argument(
        "--minutes", type=float, default=c.DEFAULT_MINUTES, help="how long both loops run"
    )
    p.add_argument(
        "--window-s", type=float, default=c.DEFAULT_WINDOW_S,
        help="latency percentiles per window of this many seconds; the goals compare them",
    )  # fmt: skip
    p.add_argument(
        "--sample-s", type=float, default=c.DEFAULT_SAMPLE_S,
        help="read every process's RSS and open file descriptors this often",
    )  # fmt: skip
    p.add_argument(
        "--decoder-kill-at", type=float, default=c.DEFAULT_DECODER_KILL_AT, metavar="FRACTION",
        help="SIGKILL a decoder worker (and start a replacement) this far into the run",
    )  # fmt: skip
    p.add_argument(
        "--broker-kill-at", type=float, default=c.DEFAULT_BROKER_KILL_AT, metavar="FRACTION",
        help="SIGKILL the broker (and restart it on the same endpoint) this far into the run",
    )  # fmt: skip
    p.add_argument(
        "--kill-margin-s", type=float, default=c.DEFAULT_KILL_MARGIN_S,
        help="the p99 view 'excluding kills' leaves out the samples in flight at any moment "
        "from each kill to this long after its replacement's READY (both views are reported)",
    )  # fmt: skip
    p.add_argument(
        "--request-period-ms", type=float, default=c.DEFAULT_REQUEST_PERIOD_MS,
        help="a qpu estimate (H2, exact) this often",
    )  # fmt: skip
    p.add_argument(
        "--block-period-us", type=int, default=c.DEFAULT_BLOCK_PERIOD_US,
        help="a syndrome block this often",
    )  # fmt: skip
    p.add_argument(
        "--distance", type=distance, default=c.DEFAULT_DISTANCE, metavar="D",
        help="surface-code distance of the blocks (rounds = D)",
    )  # fmt: skip
    p.add_argument("--block-shots", type=int, default=c.DEFAULT_BLOCK_SHOTS, help="shots per block")
    add_p(p)
    p.add_argument(
        "--decoder-workers", type=int, default=c.DEFAULT_DECODER_WORKERS,
        help="pymatching workers (>= 2: one is killed)",
    )  # fmt: skip
    p.add_argument(
        "--request-timeout-s", type=float, default=c.DEFAULT_REQUEST_TIMEOUT_S,
        help="a request's (and a block's) timeout",
    )  # fmt: skip
    add_seed(p, help="seeds the parameters and the syndrome samples")
    add_json(p, what="the results and metadata")
    add_plot(p, "RSS, file descriptors and latency over time (default: next to --json)")


def build_parser(prog: str = PROG) -> CommandParser:
    """The ``python -m bench`` parser, one subparser per benchmark."""
    parser = CommandParser(
        prog=prog,
        description="nearloop benchmarks: peers side by side in one run, with ratios.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rtt = add_command(
        commands,
        "rtt",
        help="request round trip: a shared-memory floor, pyzmq, zmq.proxy, nearloop (sync "
        "and uvloop), rpcq",
        description="Round trip of one request at a time through each peer, interleaved.",
    )
    add_rtt_arguments(rtt)
    flood = add_command(
        commands,
        "flood",
        help="a good CURVE client's round trip before, during and after a flood of "
        "handshakes with bad keys",
        description="Time an allowed client through a CURVE broker while another process "
        "makes handshakes with unknown keys.",
    )
    add_flood_arguments(flood)
    decoders = add_command(
        commands,
        "decoders",
        help="bp-gpu throughput on numpy vs CuPy, with pymatching as the CPU reference",
        description="Decode the same stim batches with each peer at each batch size.",
    )
    add_decoders_arguments(decoders)
    stream = add_command(
        commands,
        "stream",
        help="syndrome stream vs the offline pipeline: throughput, reaction, paced sweep",
        description="Surface codes streamed through the broker to decoder workers, beside "
        "the offline single-process pipeline on the same parameters.",
    )
    add_stream_arguments(stream)
    vqe = add_command(
        commands,
        "vqe",
        help="H2 VQE loop iteration over a lane, through the broker and in-process",
        description="The same H2 VQE (exact estimator) over a lane to a local qpu worker, "
        "through its broker, and in-process, interleaved: per-iteration p50/p99/p99.9/max, "
        "the overhead of each and CPU use.",
    )
    add_vqe_arguments(vqe)
    soak = add_command(
        commands,
        "soak",
        help="both loops at a steady pace for minutes, with a decoder worker and the broker "
        "killed once each: RSS, file descriptors, losses, p99 per window",
        description="The parameter loop and a paced syndrome stream against a local stack for "
        "--minutes; a decoder worker and the broker are SIGKILLed (and replaced) along the way. "
        "Exits 1 if a request or block went unanswered; the goals are reported.",
    )
    add_soak_arguments(soak)
    return parser


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "rtt":
        try:
            config = RttConfig(
                n=args.n,
                warmup=args.warmup,
                rounds=args.rounds,
                payload_bytes=args.payload_bytes,
                transport=args.transport,
                peers=with_extras(
                    parse_peers(args.peers),
                    tuple(e for e in ("curve", "metrics") if getattr(args, e)),
                ),
                seed=args.seed,
                json_path=args.json,
                plot_path=args.plot,
            )
        except ValueError as exc:
            parser.error(str(exc))
        from bench.rtt import main as rtt_main

        return rtt_main(config)
    if args.command == "flood":
        from bench.auth_flood import main as flood_main

        try:
            fconfig = FloodConfig(
                handshakes=args.handshakes,
                parallel=args.parallel,
                quiet_n=args.n,
                rate=args.rate,
                json_path=args.json,
                plot_path=args.plot,
            )
        except ValueError as exc:
            parser.error(str(exc))
        return flood_main(fconfig)
    if args.command == "decoders":
        from bench.decoders_gpu import DecodersBenchConfig, parse_batch_shots
        from bench.decoders_gpu import main as decoders_main

        given = {
            "device": args.device,
            "distance": args.distance,
            "noise": args.p,
            "batches": args.batches,
            "budget_s": args.budget_s,
            "seed": args.seed,
            "float_dtype": args.float_dtype,
            "json_path": args.json,
            "plot_path": args.plot,
        }
        try:
            if args.batch_shots is not None:
                given["batch_shots"] = parse_batch_shots(args.batch_shots)
            dconfig = DecodersBenchConfig(**{k: v for k, v in given.items() if v is not None})
        except ValueError as exc:
            parser.error(str(exc))
        return decoders_main(dconfig)
    if args.command == "stream":
        from bench.stream import StreamBenchConfig
        from bench.stream import main as stream_main

        return stream_main(
            StreamBenchConfig(
                distances=args.distances,
                p=args.p,
                decoder=args.decoder,
                shots=args.shots,
                block_shots=args.block_shots,
                periods_us=args.periods_us,
                paced_block_shots=args.paced_block_shots,
                paced_blocks=args.paced_blocks,
                paced_seconds=args.paced_seconds,
                workers=args.workers,
                transports=args.transports,
                seed=args.seed,
                json_path=args.json,
                plot_path=args.plot,
            )
        )
    if args.command == "vqe":
        from bench.vqe import VqeBenchConfig
        from bench.vqe import main as vqe_main

        vgiven = {
            "optimizer": args.optimizer,
            "iterations": args.maxiter,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "seed": args.seed,
            "json_path": args.json,
            "plot_path": args.plot,
        }
        try:
            vconfig = VqeBenchConfig(**{k: v for k, v in vgiven.items() if v is not None})
        except ValueError as exc:
            parser.error(str(exc))
        return vqe_main(vconfig)
    if args.command == "soak":
        from bench.soak_config import SoakConfig

        try:
            sconfig = SoakConfig(
                minutes=args.minutes,
                window_s=args.window_s,
                sample_s=args.sample_s,
                decoder_kill_at=args.decoder_kill_at,
                broker_kill_at=args.broker_kill_at,
                kill_margin_s=args.kill_margin_s,
                request_period_ms=args.request_period_ms,
                block_period_us=args.block_period_us,
                distance=args.distance,
                block_shots=args.block_shots,
                p=args.p,
                decoder_workers=args.decoder_workers,
                request_timeout_s=args.request_timeout_s,
                seed=args.seed,
                json_path=args.json,
                plot_path=args.plot,
            )
        except ValueError as exc:
            parser.error(str(exc))
        from bench.soak import main as soak_main

        return soak_main(sconfig)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from bench.errors import BenchError
    from client.errors import NearloopError
    from control_sim.errors import ControlSimError

    try:
        return _dispatch(args.command_parser, args)
    except (BenchError, ControlSimError, NearloopError) as exc:
        return fail(exc, RUN_FAILED)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
