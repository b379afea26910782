"""``python -m bench soak``: both loops at a steady pace for minutes, with two kills.

A local stack (:class:`~control_sim.stack.local_stack.LocalStack`: a broker on ipc://,
one ``qpu`` worker, ``--decoder-workers`` pymatching workers) serves the parameter loop
and the syndrome loop of :mod:`bench.soak_loops`, each on its own thread, for
``--minutes``. Along the way:

- at ``--decoder-kill-at`` of the run, decoder worker 0 is SIGKILLed and a replacement
  is started (a new process, a new series);
- at ``--broker-kill-at``, the broker is SIGKILLed and a new one is started on the same
  endpoint.

A sampler thread (:mod:`bench.proc_sampler`) reads the RSS and open file descriptors of
every process (this one, the broker, each worker; each incarnation its own series) every
``--sample-s``. :mod:`bench.soak_report` cuts the latencies into windows and evaluates
the goals. The exit status is 1 when a request or a block went unanswered (or a loop
failed), else 0; the goals are reported, not turned into the exit status, as in the
other benchmarks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

from bench.errors import BenchError
from bench.machine import banner, describe_machine, library_versions
from bench.proc_sampler import ProcSampler, ProcSeries
from bench.soak_config import SoakConfig
from bench.soak_loops import DRAIN_TIMEOUT_S, ParamLoop, StreamLoop
from bench.soak_report import build_report, format_report, plot, unanswered
from client.arguments import write_json
from control_sim.stack.local_stack import LocalStack, StackSpec
from control_sim.stack.processes import STOP_TIMEOUT_S, interrupts_raise

JOIN_TIMEOUT_S: Final = DRAIN_TIMEOUT_S + 30.0
"""How long the end of the run waits for a loop's thread (its drain is bounded)."""


@dataclass(slots=True)
class KillEvent:
    """One kill: what was killed, when, and the process that took its place."""

    what: str
    killed: str
    killed_pid: int
    at_s: float
    replacement: str = ""
    replacement_pid: int = 0
    started_s: float = 0.0
    ready_s: float = 0.0


class Chaos:
    """Kills and replaces processes of a :class:`LocalStack`, keeping the sampler's
    series in step (the killed one ends, the new one starts)."""

    def __init__(self, stack: LocalStack, sampler: ProcSampler) -> None:
        self.stack = stack
        self.sampler = sampler
        self.series: dict[str, ProcSeries] = {}
        self.events: list[KillEvent] = []

    def watch(self, name: str, role: str, pid: int) -> None:
        """Start sampling a process."""
        self.series[name] = self.sampler.watch(name, role, pid)

    def _kill(self, what: str, name: str) -> KillEvent:
        proc = self.stack.servers.process(name)
        event = KillEvent(what, name, proc.pid, self.sampler.now_s())
        self.sampler.ended(self.series[name])
        proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name} (pid {proc.pid}) survived SIGKILL") from None
        # Its pipes are this process's descriptors: close them now, or each replacement
        # would show here as two descriptors leaked.
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        self.events.append(event)
        print(f"[{event.at_s:7.1f} s] SIGKILL {name} (pid {proc.pid})", flush=True)
        return event

    def _replace(self, event: KillEvent, name: str, role: str, args: list[str]) -> None:
        event.started_s = self.sampler.now_s()
        proc = self.stack.servers.start(name, args)
        self.stack.servers.wait_ready(self.stack.start_timeout_s)
        event.ready_s = self.sampler.now_s()
        event.replacement, event.replacement_pid = name, proc.pid
        self.watch(name, role, proc.pid)
        print(f"[{event.ready_s:7.1f} s] {name} (pid {proc.pid}) READY", flush=True)

    def kill_decoder(self, index: int, new_index: int) -> None:
        """SIGKILL ``decoder-INDEX`` and start ``decoder-NEW_INDEX`` in its place."""
        s = self.stack.spec
        event = self._kill("decoder", f"decoder-{index}")
        args = [
            "-m",
            "decoders",
            "--connect",
            self.stack.endpoint,
            "--service",
            s.decoder_service,
            "--decoder",
            s.decoder,
            *s.decoder_args,
        ]
        self._replace(event, f"decoder-{new_index}", "decoder", args)

    def kill_broker(self, incarnation: int) -> None:
        """SIGKILL the live broker and start ``broker-INCARNATION`` on the same endpoint."""
        live = "broker" if incarnation == 2 else f"broker-{incarnation - 1}"
        event = self._kill("broker", live)
        args = ["-m", "broker", "--bind", self.stack.endpoint, *self.stack.spec.broker_args]
        self._replace(event, f"broker-{incarnation}", "broker", args)


def _wait_until(stop: threading.Event, t0_ns: int, at_s: float) -> None:
    stop.wait(max(at_s - (time.perf_counter_ns() - t0_ns) / 1e9, 0.0))


def run(config: SoakConfig) -> dict[str, Any]:
    """Run the soak; returns the JSON document (:func:`bench.soak_report.build_report`)."""
    spec = StackSpec(decoder_workers=config.decoder_workers, decoder="pymatching", qpu_workers=1)
    machine = describe_machine()
    print(banner("soak", machine), flush=True)
    with interrupts_raise(), LocalStack(spec) as stack:
        stop = threading.Event()
        loops: list[ParamLoop | StreamLoop] = []
        try:
            param = ParamLoop(stack.endpoint, config, stop)
            loops.append(param)
            stream = StreamLoop(stack.endpoint, config, stop)
            loops.append(stream)
            param.prepare()
            stream.prepare()
            t0_ns = time.perf_counter_ns()
            sampler = ProcSampler(config.sample_s, t0_ns)
            chaos = Chaos(stack, sampler)
            chaos.watch("bench", "bench", os.getpid())
            chaos.watch("broker", "broker", stack.servers.process("broker").pid)
            for i in range(config.decoder_workers):
                chaos.watch(f"decoder-{i}", "decoder", stack.servers.process(f"decoder-{i}").pid)
            chaos.watch("qpu-0", "qpu", stack.servers.process("qpu-0").pid)
            sampler.start()
            param.start(t0_ns)
            stream.start(t0_ns)
            print(
                f"running {config.minutes:g} min: a qpu estimate every "
                f"{config.request_period_ms:g} ms, a d={config.distance} block of "
                f"{config.block_shots} shots every {config.block_period_us} us to "
                f"{config.decoder_workers} pymatching workers",
                flush=True,
            )
            kills = sorted([(config.decoder_kill_at, "decoder"), (config.broker_kill_at, "broker")])
            for at, what in kills:
                _wait_until(stop, t0_ns, at * config.duration_s)
                if what == "decoder":
                    chaos.kill_decoder(0, config.decoder_workers)
                else:
                    chaos.kill_broker(2)
            _wait_until(stop, t0_ns, config.duration_s)
        finally:
            stop.set()
            ended = [loop.join(JOIN_TIMEOUT_S) for loop in loops]
            if all(ended):  # a client is not thread-safe: close it only once its loop ended
                for loop in loops:
                    loop.close()
        end_s = (time.perf_counter_ns() - t0_ns) / 1e9
        sampler.stop()
        if not all(ended):
            raise BenchError(f"a loop did not end within {JOIN_TIMEOUT_S:g} s of the stop")
    cfg = asdict(config)
    cfg["json_path"] = cfg["plot_path"] = None
    return build_report(
        config=cfg,
        duration_s=config.duration_s,
        end_s=end_s,
        param=param,
        stream=stream,
        events=[asdict(e) for e in chaos.events],
        series=[s.to_dict() for s in sampler.series],
        machine=machine,
        versions=library_versions(("pymatching", "stim", "qiskit-aer")),
    )


def main(config: SoakConfig) -> int:
    """Run, print the report, write the JSON and the plot; 1 if anything went unanswered."""
    doc = run(config)
    print(format_report(doc))
    if config.json_path is not None:
        write_json(config.json_path, doc)
    plot_path = config.plot_path
    if plot_path is None and config.json_path is not None:
        plot_path = config.json_path.with_suffix(".png")
    if plot_path is not None:
        plot(doc, plot_path)
        doc["plot"] = str(plot_path)
        print(f"plot: {plot_path}")
    return 1 if unanswered(doc) else 0
