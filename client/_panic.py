"""Panic and duress: destroy an identity's local state at once, or behind a duress passphrase.

Theory of operation
-------------------

Everything a member keeps about their cells is in the keystore (client/_keystore.py): the
identity, every cell's keys, mailboxes, history and invites, sealed under a data key that
only the key file holds. Besides it, the identity's data directory holds the daemon's
token, socket and lock. Nothing else is written there (tests/client/test_panic.py checks
it against every file a real session leaves).

`destroy_local_state` (`cellrelay panic`) needs no passphrase, since the person may be
under pressure and the passphrase may be the thing they must not type:

1. It finds every process of this user that has the identity's lock files open (a
   daemon, a `cellrelay listen`, an app on the library: each keeps `keystore.lock` open
   while it runs) and kills it with SIGKILL. Not SIGTERM: a stopping client saves its
   state, which would write what is being destroyed, and a killed process's memory (the
   unlocked keys) is gone with it.
2. It destroys the keystore, the key file first (`destroy_keystore`), then the daemon's
   files, and removes the data directory if nothing else is in it.
3. It waits (briefly) for the killed processes to be gone, and destroys again whatever a
   write that was already in the kernel when the signal came may have put back.

Finding the processes reads `/proc` (Linux; the daemon's peer checks are Linux-only too).
Elsewhere step 1 finds nothing, and a process that still runs may write its state again.

A duress passphrase (`set_duress_passphrase`) is stored in the keystore's duress slot with
a replacement made in advance: a fresh identity with no cells, by default with the same
name. Unlocking with it anywhere (`open_client`, the CLI, the daemon) destroys the real
keystore and the daemon's token (`duress_companions`) and opens the replacement, and
nothing the caller sees differs from an ordinary unlock of a new identity.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cellrelay.protocol.cell._identity import Identity

from ._keystore import (
    Keystore,
    default_data_dir,
    destroy_keystore,
    keystore_files,
    wipe_file,
)
from ._state import ClientState

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "LocalStateDestroyed",
    "clear_duress_passphrase",
    "destroy_local_state",
    "duress_companions",
    "set_duress_passphrase",
]

# The names client/_client.py, client/_daemon.py and client/_auth.py use; repeated here so
# that this module imports none of them (the daemon imports the client).
# tests/client/test_panic.py checks that they agree.
KEYSTORE_NAME: Final = "keystore"
DAEMON_SOCKET: Final = "daemon.sock"
DAEMON_LOCK: Final = "daemon.lock"
DAEMON_TOKEN: Final = "daemon.token"  # noqa: S105 - a file name
# How long to wait for killed processes to be gone before the second sweep: a SIGKILLed
# process is gone in milliseconds unless the machine is swapping.
KILL_WAIT: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalStateDestroyed:
    """What `destroy_local_state` did."""

    found: bool  # there was a keystore or other local state to destroy
    stopped: int  # cellrelay processes using the identity that were killed


def _home(home: str | os.PathLike[str] | None) -> Path:
    return default_data_dir() if home is None else Path(home)


def _daemon_files(home: Path) -> list[Path]:
    token = home / DAEMON_TOKEN
    return [
        token,
        token.with_name(token.name + ".tmp"),
        home / DAEMON_SOCKET,
        home / DAEMON_LOCK,
    ]


def destroy_local_state(home: str | os.PathLike[str] | None = None) -> LocalStateDestroyed:
    """Destroy the identity in `home` (default: the data directory) now, without its passphrase.

    Kills every process of this user that has the identity open (a daemon, a listening
    command line, an app), then overwrites and deletes the keystore (the key file first:
    once it is gone no copy of the state can be decrypted, even with the passphrase), the
    daemon's token, socket and lock, and the directory itself if nothing else is in it.
    Files it does not know are left alone. Blocking (it fsyncs): from trio, run it in a
    thread.
    """
    directory = _home(home)
    keystore = directory / KEYSTORE_NAME
    watched = [keystore, *keystore_files(keystore)[1:], *_daemon_files(directory)]
    pids = _holders(watched)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    found = _sweep(directory, keystore)
    if pids:
        _wait_gone(pids, KILL_WAIT)
        found = _sweep(directory, keystore) or found
    with contextlib.suppress(OSError):
        directory.rmdir()  # only if empty: never anything of the user's
    return LocalStateDestroyed(found=found, stopped=len(pids))


def _sweep(directory: Path, keystore: Path) -> bool:
    found = destroy_keystore(keystore)
    for file in _daemon_files(directory):
        found = wipe_file(file) or found
    return found


def _holders(paths: Iterable[Path]) -> list[int]:
    """The processes of this user, other than this one, that have any of `paths` open."""
    wanted: set[tuple[int, int]] = set()
    for path in paths:
        with contextlib.suppress(OSError):
            info = os.stat(path, follow_symlinks=False)
            wanted.add((info.st_dev, info.st_ino))
    if not wanted:
        return []
    me, uid = os.getpid(), os.getuid()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []  # not Linux: see the module docstring
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        fds = f"/proc/{entry}/fd"
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            names = os.listdir(fds)
        except OSError:
            continue  # gone, or not ours to look at
        for name in names:
            try:
                info = os.stat(f"{fds}/{name}")
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in wanted:
                found.append(int(entry))
                break
    return found


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Wait until each process has exited (a zombie counts), or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.poll(max(0, int((deadline - time.monotonic()) * 1000)))
        finally:
            os.close(fd)


def duress_companions(home: Path) -> list[Path]:
    """The identity's files besides the keystore that a duress unlock destroys with it.

    The daemon's token (a new identity has none), and its lock file unless a daemon holds
    it: the daemon that is unlocking under duress keeps running, with the replacement.
    """
    files = _daemon_files(home)[:2]
    lock = home / DAEMON_LOCK
    try:
        f = open(lock, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return files
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return files
        return [*files, lock]


def set_duress_passphrase(
    passphrase: str,
    duress_passphrase: str,
    *,
    home: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> None:
    """Set a duress passphrase for the identity in `home` (replacing any earlier one).

    Unlocking with `duress_passphrase` from then on destroys this identity and its cells
    and opens a new identity with no cells, named `name` (default: this identity's name),
    exactly as an unlock of a new install would look. Blocking (two Argon2id derivations).

    Raises:
        KeystoreError: the duress passphrase is this one, or too short (see `open_client`
            for the others).
    """
    path = _home(home) / KEYSTORE_NAME
    keystore, payload = Keystore.open(path, passphrase)
    try:
        current = Identity.from_bytes(ClientState.decode(payload).identity)
        try:
            decoy = Identity.generate(current.info.name if name is None else name)
        finally:
            current.clear()
        try:
            keystore.set_duress(duress_passphrase, ClientState(identity=decoy.to_bytes()).encode())
        finally:
            decoy.clear()
    finally:
        keystore.close()


def clear_duress_passphrase(passphrase: str, *, home: str | os.PathLike[str] | None = None) -> None:
    """Forget the duress passphrase of the identity in `home`, if it has one."""
    keystore, _ = Keystore.open(_home(home) / KEYSTORE_NAME, passphrase)
    try:
        keystore.clear_duress()
    finally:
        keystore.close()
