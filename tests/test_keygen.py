"""``nearloop keygen DIR NAME`` / ``python -m client keygen``: CURVE key pairs on disk."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from client.keygen import KeygenError, keygen
from client.wire.curve import load_curve
from tests.conftest import ROOT, one_line_error, run_module

NEARLOOP = Path(sys.executable).parent / "nearloop"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_a_pair_that_zmq_auth_reads(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "keys"
    public, secret = keygen(folder, "alice")
    assert (public, secret) == (folder / "alice.key", folder / "alice.key_secret")
    assert mode(folder) == 0o700 and mode(secret) == 0o600
    pub, sec = zmq.auth.load_certificate(secret)
    assert sec is not None and zmq.auth.load_certificate(public) == (pub, None)
    assert load_curve((str(secret), str(public))).public == pub
    assert sorted(p.name for p in folder.iterdir()) == ["alice.key", "alice.key_secret"]


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path, "bob")
    before = secret.read_bytes()
    with pytest.raises(KeygenError, match="exists already"):
        keygen(tmp_path, "bob")
    public.unlink()  # half a pair left: still refused, and the secret stays as it was
    with pytest.raises(KeygenError, match="exists already"):
        keygen(tmp_path, "bob")
    assert secret.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bob.key_secret"]


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_keygen_refuses_names_that_are_not_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeygenError, match="not a key name"):
        keygen(tmp_path, name)


def test_the_command_prints_the_two_paths_and_refuses_a_second_run(tmp_path: Path) -> None:
    done = run_module("client", "keygen", str(tmp_path / "k"), "broker", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(tmp_path / "k" / "broker.key"),
        str(tmp_path / "k" / "broker.key_secret"),
    ]
    again = subprocess.run(
        [NEARLOOP, "keygen", str(tmp_path / "k"), "broker"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "exists already" in one_line_error(again)


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = one_line_error(run_module("client", "keygen", str(blocker / "keys"), "x", timeout=60))
    assert "cannot create" in line
