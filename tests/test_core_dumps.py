"""No core dump holds a key: not the relay's, not a client's once its keystore is unlocked.

Issue 10, item 1: a relay started under `prlimit --core=unlimited` kept that limit, and
SIGABRT wrote a 47 MB core holding its static private key and the envelopes it stored.

What is checked, and how far it reaches. Each test starts its process under an unlimited
core limit (RLIMIT_CORE raised in the child before it execs, as `prlimit` would) with its
working directory in tmp_path, and aborts it with SIGABRT. Where a dump goes is the
kernel's `core_pattern` (/proc/sys/kernel/core_pattern): the tests leave it alone, since it
is the whole machine's setting. They first run a *control*, a bare Python process under
the same limit that aborts itself: if the pattern writes core files into the working
directory (a plain pattern such as `core`, as on this project's CI), the control leaves
one, which shows a dump would land where the tests look, and then the relay and the
client must leave none. Where the pattern pipes to a program (systemd-coredump, apport),
no file appears for the control either; then the tests check what the process itself
reports instead: the relay's /proc/PID/limits shows a core limit of 0 (the dumpable flag
has no /proc field that another root process could read), and the client prints its own
dumpable flag (prctl PR_GET_DUMPABLE) before it aborts. The relay's key file is read back
and searched for in any core that does appear, so a regression reports what leaked.
"""

from __future__ import annotations

import base64
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from cellrelay.client import create_identity
from cellrelay.client._keystore import TEST_COST

from .relay.conftest import PATIENCE
from .relay.process import Launch, open_relay_process

PASSPHRASE = "correct horse battery staple"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="core dump controls are Linux's"
)


def _unlimited_core() -> None:
    """Run in the child before exec: allow core files of any size (`prlimit --core=unlimited`).

    Raising the hard limit needs root; without it, as high as the hard limit allows (the
    control then shows whether that still makes dumps).
    """
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _cores(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name == "core" or p.name.startswith("core.")]


def _control_dumps(directory: Path) -> bool:
    """Whether a plain Python process that aborts here leaves a core file here."""
    directory.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "import os; os.abort()"],
        cwd=directory, preexec_fn=_unlimited_core, capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == -signal.SIGABRT
    found = _cores(directory)
    for core in found:
        core.unlink()
    return bool(found)


def _relay_private_key(data_dir: Path) -> bytes:
    text = (data_dir / "relay.key").read_text().split()[1]
    return base64.urlsafe_b64decode(text + "=")


async def test_an_aborted_relay_leaves_no_core(tmp_path: Path) -> None:
    dumps_here = await trio.to_thread.run_sync(_control_dumps, tmp_path / "control")
    workdir = tmp_path / "relay-cwd"
    workdir.mkdir()
    data_dir = tmp_path / "relay"
    with trio.fail_after(2 * PATIENCE):
        async with open_relay_process(data_dir, Launch(workdir, _unlimited_core)) as relay:
            limits = await trio.Path(f"/proc/{relay.process.pid}/limits").read_text()
            (line,) = [
                text for text in limits.splitlines() if text.startswith("Max core file size")
            ]
            assert line.split()[4:6] == ["0", "0"], line  # soft and hard
            relay.process.send_signal(signal.SIGABRT)
            assert await relay.process.wait() == -signal.SIGABRT
    cores = _cores(workdir)
    key = _relay_private_key(data_dir)
    assert [core.name for core in cores if key in core.read_bytes()] == []
    assert cores == [], "the relay left a core (without its key, but still)"
    # Where the pattern pipes dumps elsewhere, the limit above is what was checked.
    assert dumps_here or not cores


CLIENT = """
import os, sys
from pathlib import Path
from cellrelay._undumpable import is_dumpable
from cellrelay.client import BlockingClient
print("before", is_dumpable(), flush=True)
with BlockingClient.open(os.environ["PASSPHRASE"], home=Path(sys.argv[1])):
    print("unlocked", is_dumpable(), flush=True)
    os.abort()
"""


def test_a_client_with_an_unlocked_keystore_leaves_no_core(tmp_path: Path) -> None:
    dumps_here = _control_dumps(tmp_path / "control")
    home = tmp_path / "home"
    create_identity(PASSPHRASE, "Ana", home=home, cost=TEST_COST)
    workdir = tmp_path / "client-cwd"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, str(home)],
        cwd=workdir, preexec_fn=_unlimited_core, capture_output=True, text=True,
        env={**os.environ, "PASSPHRASE": PASSPHRASE}, timeout=PATIENCE, check=False,
    )  # fmt: skip
    assert result.returncode == -signal.SIGABRT, result.stderr
    # Dumpable until the keystore is unlocked; not from then on.
    assert result.stdout.splitlines() == ["before True", "unlocked False"], result.stderr
    assert _cores(workdir) == []
    # Where the pattern pipes dumps elsewhere, the dumpable flag above is what was checked.
    assert dumps_here or not _cores(workdir)
