"""The README's Python examples run, against a real broker, as a new user would run them."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, START_TIMEOUT_S, Stack, wait_for_line

pytestmark = pytest.mark.timeout(60)

README_ENDPOINT = "ipc:///tmp/nearloop.sock"


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_worker_and_client_examples_run(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    worker_code, client_code, async_code, _ = python_blocks()
    broker = stack.broker("ipc")
    ep = broker.endpoint
    worker = subprocess.Popen(
        [sys.executable, "-c", worker_code.replace(README_ENDPOINT, ep)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    stack.procs.append(worker)
    wait_for_line(worker, "READY", START_TIMEOUT_S)
    namespace: dict[str, object] = {}
    exec(client_code.replace(README_ENDPOINT, ep), namespace)
    exec(async_code.replace(README_ENDPOINT, ep), namespace)
    out = capfd.readouterr().out.split()
    assert out[:4] == ["8.0", "(8,)", "True", "8.0"]
    energies = namespace["energies"]
    assert isinstance(energies, list) and len(energies) == 100


def test_readme_parameter_loop_example_runs(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    qpu_code = python_blocks()[3]
    broker = stack.broker("ipc")
    ep = broker.endpoint
    worker = subprocess.Popen(
        [sys.executable, "-m", "control_sim", "qpu", "--connect", ep],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    stack.procs.append(worker)
    wait_for_line(worker, "READY", START_TIMEOUT_S)
    namespace: dict[str, object] = {}
    exec(qpu_code.replace(README_ENDPOINT, ep), namespace)
    assert capfd.readouterr().out.split() == ["0", "1", "stopped"]
    values = namespace["values"]
    assert isinstance(values, np.ndarray) and values.shape == (1, 1)
