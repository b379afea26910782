"""nearloop's Slurm job scripts, submitted as they are to a real one-node Slurm cluster.

``docs/slurm/local-cluster.sh`` brings the cluster up from Debian's ``slurm-wlm`` and
``munge`` (munged, slurmctld and slurmd on this machine, everything in a temporary
folder with its own munge key, ports and state) and takes it down at the end. The job
scripts run from the docs unchanged; the one-node run of the hetjob script only drops its
``#SBATCH hetjob`` separator, since Slurm keeps a hetjob pending on one node. Needs root
and the packages (``.ci/run`` installs them where it can); skips with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until

SLURM_DOCS = ROOT / "docs" / "slurm"
LOCAL_CLUSTER = SLURM_DOCS / "local-cluster.sh"
JOB_TIMEOUT_S = 240.0
"""Bound on one job from submission to its end (about 40 s on an idle 2-core VM)."""
STEPS_READY_TIMEOUT_S = 180.0
"""Bound on a job's steps all printing READY (the driver starts after)."""
GONE_TIMEOUT_S = 60.0
"""Bound on a cancelled job's processes exiting (Slurm's KillWait is 5 s here)."""


def _why_no_slurm() -> str | None:
    if os.geteuid() != 0:
        return "needs root: slurmd runs jobs as their users"
    for daemon in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(daemon, path=f"{os.environ.get('PATH', '')}:/usr/sbin") is None:
            return f"{daemon} not installed (apt-get install slurm-wlm munge, as .ci/run does)"
    return None


NO_SLURM = _why_no_slurm()
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(NO_SLURM is not None, reason=f"no Slurm here: {NO_SLURM}"),
]


@dataclass(frozen=True)
class Cluster:
    """A running local cluster and where its jobs are submitted from."""

    env: dict[str, str]
    """The environment sbatch gets: SLURM_CONF, and this venv's bin/ first on PATH, as
    with the venv active (the job finds ``nearloop`` there)."""
    submit_dir: Path

    def slurm(self, *args: str, timeout: float = 30.0) -> str:
        """Run a Slurm command; its stdout. Fails the test if it fails."""
        done = subprocess.run(
            args, env=self.env, cwd=self.submit_dir, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def submit(self, *args: str, script: str | None = None) -> str:
        """``sbatch --parsable ARGS`` (the script on stdin if given); the job id."""
        done = subprocess.run(
            ["sbatch", "--parsable", *args], env=self.env, cwd=self.submit_dir, input=script,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def state(self, job: str) -> tuple[str, str]:
        """A job's state and reason from squeue (``("", "")`` once it has left the queue)."""
        out = self.slurm("squeue", "-h", "-j", job, "-o", "%T %r").split()
        return (out[0], out[1]) if len(out) == 2 else ("", "")

    def output(self, job: str, name: str = "nearloop") -> str:
        return (self.submit_dir / f"{name}-{job}.out").read_text()

    def job_dir(self, job: str) -> Path:
        return self.submit_dir / f"nearloop-{job}"


@contextlib.contextmanager
def local_cluster(tmp: Path, **settings: str) -> Iterator[Cluster]:
    """A cluster from local-cluster.sh in ``tmp`` (its ``settings`` in the environment of
    ``up``), taken down and removed at the end."""
    state = tmp / "cluster"
    submit_dir = tmp / "jobs"
    submit_dir.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}:/usr/sbin",
    }
    env.pop("SLURM_CONF", None)
    try:
        up = subprocess.run(
            [str(LOCAL_CLUSTER), "up", str(state)], env={**env, **settings},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        env["SLURM_CONF"] = str(state / "slurm.conf")
        yield Cluster(env=env, submit_dir=submit_dir)
    finally:
        down = subprocess.run(
            [str(LOCAL_CLUSTER), "down", str(state)], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert down.returncode == 0, down.stdout + down.stderr
        assert not state.exists()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def processes_naming(text: str) -> list[str]:
    """The command lines of live processes that contain ``text`` (a job's folder, which
    every step's command names through its key files)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        line = " ".join(w.decode(errors="replace") for w in words if w)
        if text in line:
            found.append(f"{cmdline.parent.name}: {line}")
    return found


def test_the_job_script_runs_vqe_and_the_stream_to_their_targets(cluster: Cluster) -> None:
    done = subprocess.run(
        ["sbatch", "--parsable", "--wait", str(SLURM_DOCS / "nearloop.sbatch")],
        env=cluster.env, cwd=cluster.submit_dir, capture_output=True, text=True,
        timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    job = done.stdout.strip().split(";")[0]
    out = cluster.output(job)
    assert done.returncode == 0, out + done.stderr
    # What the job prints: each step's READY awaited, then the driver's summary.
    assert re.search(rf"broker at tcp://{re.escape(os.uname().nodename)}:\d+", out), out
    for step in ("broker", "qpu", "decoder"):
        assert f"step {step} ready" in out, out
    error_mha = float(re.findall(r"error\s+([0-9.]+) mHa", out)[0])
    assert error_mha < 1.6, out
    assert re.search(r"blocks\s+sent (\d+)\s+decoded \1\s+failed 0\s+lost 0\b", out), out
    assert "demo OK" in out and "driver exited 0" in out, out
    summary = json.loads((cluster.job_dir(job) / "summary.json").read_text())
    assert summary["vqe"]["error_mha"] < 1.6
    qec = summary["qec"]
    assert qec["lost"] == 0 and qec["blocks_decoded"] == qec["blocks_sent"] > 0
    # The steps were stopped when the driver ended: nothing of the job is left running.
    wait_until(
        lambda: not processes_naming(str(cluster.job_dir(job))), GONE_TIMEOUT_S,
        "the job's processes to exit", every=0.2,
    )  # fmt: skip


def test_a_hetjob_is_accepted_and_its_steps_run_on_one_node(cluster: Cluster) -> None:
    """The hetjob as it is: Slurm accepts it, with two components (on one node it then
    stays pending). Its steps, with the separator dropped, run on one allocation; a second
    job asking for the qpu GRES waits while this one holds it, and one that asks for no
    QPU does not; scancel mid-run leaves no process behind."""
    het = SLURM_DOCS / "nearloop-het.sbatch"
    assert subprocess.run(["bash", "-n", str(het)], timeout=10).returncode == 0
    assert "to start at" in subprocess.run(
        ["sbatch", "--test-only", str(het)], env=cluster.env, cwd=cluster.submit_dir,
        capture_output=True, text=True, timeout=30,
    ).stderr  # fmt: skip
    pending = cluster.submit(str(het))
    components = cluster.slurm("squeue", "-h", "-j", pending, "-o", "%i").split()
    assert sorted(components) == [f"{pending}+0", f"{pending}+1"]
    cluster.slurm("scancel", pending)

    one_node = re.sub(r"(?m)^#SBATCH hetjob\n", "", het.read_text())
    # A long VQE keeps the driver running (every step up) until the scancel.
    cluster.env["NL_SLURM_LIB"] = str(SLURM_DOCS / "nearloop-job.sh")
    cluster.env["NL_DRIVER_ARGS"] = "--maxiter 1000000"
    try:
        job = cluster.submit(script=one_node)
    finally:
        del cluster.env["NL_SLURM_LIB"], cluster.env["NL_DRIVER_ARGS"]
    out_file = cluster.submit_dir / f"nearloop-het-{job}.out"
    wait_until(
        lambda: out_file.exists() and "step decoder ready" in out_file.read_text(),
        STEPS_READY_TIMEOUT_S, "the hetjob's steps to be ready", every=0.2,
    )  # fmt: skip
    text = out_file.read_text()
    assert "not a hetjob" in text and "step broker ready" in text and "step qpu ready" in text

    # The QPU is serialised: the job holds qpu:1, so another asking for it waits, while
    # one asking for no QPU runs beside it (submitted first: a pending job with no time
    # limit would hold back the jobs behind it).
    free = cluster.submit("--ntasks=1", "--wrap=true")
    wait_until(lambda: cluster.state(free)[0] == "", 60, "a job without the QPU to end")
    second = cluster.submit("--gres=qpu:1", "--ntasks=1", "--wrap=true")
    wait_until(
        lambda: cluster.state(second) == ("PENDING", "Resources"), 30,
        "the job asking for the QPU to wait for it",
    )  # fmt: skip
    assert cluster.state(job)[0] == "RUNNING"

    job_dir = str(cluster.job_dir(job))
    assert processes_naming(job_dir)  # the broker, the workers and the driver
    cluster.slurm("scancel", job)
    wait_until(lambda: cluster.state(job)[0] == "", GONE_TIMEOUT_S, "the job to leave")
    wait_until(
        lambda: not processes_naming(job_dir), GONE_TIMEOUT_S, "its processes to exit",
        every=0.2,
    )  # fmt: skip
    wait_until(lambda: cluster.state(second)[0] == "", 60, "the QPU's next job to run")


def test_a_job_that_cannot_find_nearloop_fails_with_one_line(cluster: Cluster) -> None:
    cluster.env["NEARLOOP"] = str(cluster.submit_dir / "no-such-nearloop")
    try:
        done = subprocess.run(
            ["sbatch", "--parsable", "--wait", str(SLURM_DOCS / "nearloop.sbatch")],
            env=cluster.env, cwd=cluster.submit_dir, capture_output=True, text=True,
            timeout=JOB_TIMEOUT_S,
        )  # fmt: skip
    finally:
        del cluster.env["NEARLOOP"]
    assert done.returncode == 1
    out = cluster.output(done.stdout.strip().split(";")[0])
    assert out.startswith("error: nearloop not found: ") and out.count("\n") == 1, out


def test_local_cluster_usage_errors_are_one_line() -> None:
    for args in ([], ["up"], ["start", "/tmp/x"]):
        done = subprocess.run(
            [str(LOCAL_CLUSTER), *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 2 and done.stderr.startswith("error: usage: "), done.stderr
        assert done.stderr.count("\n") == 1


def test_a_job_given_a_gpu_runs_bp_gpu_decoders_on_it(tmp_path: Path) -> None:
    """The decoders follow the allocation: a job given a GPU (here a stand-in, on which
    nothing can run) starts bp-gpu with --gres=gpu:1, on CUDA only, so it fails loudly
    rather than decoding on the CPU; without CuPy and a device it says which."""
    with local_cluster(tmp_path, NL_FAKE_GPU="1") as gpu_cluster:
        done = subprocess.run(
            ["sbatch", "--parsable", "--wait", "--gpus-per-node=1",
             str(SLURM_DOCS / "nearloop.sbatch")],
            env=gpu_cluster.env, cwd=gpu_cluster.submit_dir, capture_output=True, text=True,
            timeout=JOB_TIMEOUT_S,
        )  # fmt: skip
        job = done.stdout.strip().split(";")[0]
        out = gpu_cluster.output(job)
        assert "decoders: 2 x bp-gpu --gres=gpu:1" in out, out
        if done.returncode != 0:  # no CUDA device behind the stand-in: one clear error
            assert "error: bp-gpu: device 'cuda' is unavailable" in out, out
            assert "error: step decoder ended before task 0 printed READY" in out, out
        wait_until(
            lambda: not processes_naming(str(gpu_cluster.job_dir(job))), GONE_TIMEOUT_S,
            "the job's processes to exit", every=0.2,
        )  # fmt: skip
