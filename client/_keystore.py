"""The client's local state, encrypted with a passphrase, in the platform's data directory.

File layout (version 1), all integers big-endian:

    magic "CRKS1\\n" (6) | opslimit (4) | memlimit (8) | salt (16) | nonce (24) | box

`box` is libsodium's SecretBox (XSalsa20-Poly1305) of the payload under a key derived from
the passphrase with Argon2id (`opslimit`, `memlimit`, `salt`). The header is not secret
but is authenticated indirectly: change it and the derived key changes, so the box does
not open.

Rules that keep keys safe:

* The file is written atomically (temporary file, fsync, rename, fsync of the directory)
  with mode 0600 in a 0700 directory, so a crash leaves the old or the new state, never a
  torn one.
* One process at a time: `Keystore` holds an exclusive `flock` on `<file>.lock` while open.
  Two writers could otherwise each advance a sender chain from the same saved state and
  reuse a message key, which would break the encryption of both messages.
* The derived key stays in a `bytearray` while the keystore is open and is zeroed on close.
* From the first `create` or `open` on, the process makes no core dumps
  (`cellrelay._undumpable`): a dump would hold the derived key and the decrypted state.
  It stays so after `close`, since Python cannot erase every copy it made.
* Old versions of the file are unlinked by the rename but may survive on the disk's blocks;
  docs/threat-model.md discusses what that means for forward secrecy.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import IO, Final

from cellrelay._undumpable import make_undumpable
from cellrelay.protocol import CellrelayError, CryptoError
from cellrelay.protocol._crypto import (
    ARGON2ID_SALT_SIZE,
    SECRETBOX_NONCE_SIZE,
    argon2id_key,
    random_bytes,
    secretbox_open,
    secretbox_seal,
    zero,
)

__all__ = [
    "DEFAULT_COST",
    "TEST_COST",
    "Keystore",
    "KeystoreBusyError",
    "KeystoreError",
    "KeystoreExistsError",
    "WrongPassphraseError",
    "default_data_dir",
]

MAGIC: Final = b"CRKS1\n"
HEADER: Final = len(MAGIC) + 4 + 8 + ARGON2ID_SALT_SIZE + SECRETBOX_NONCE_SIZE
# libsodium's MODERATE limits: about half a second and 256 MiB here, which makes guessing
# passphrases on a seized device expensive while unlocking stays tolerable.
DEFAULT_COST: Final = (3, 256 * 1024 * 1024)
# The smallest limits libsodium accepts, for tests only: a weak passphrase stays weak.
TEST_COST: Final = (1, 8192)


class KeystoreError(CellrelayError):
    """The keystore cannot be used; the message says why and what to do."""


class WrongPassphraseError(KeystoreError):
    """The passphrase does not open this keystore (or the file was altered)."""


class KeystoreExistsError(KeystoreError):
    """A keystore already exists there; refusing to overwrite it."""


class KeystoreBusyError(KeystoreError):
    """Another cellrelay process has this keystore open; stop it or use that one."""


def default_data_dir() -> Path:
    """Return the platform's per-user data directory for cellrelay.

    Linux and BSD: `$XDG_DATA_HOME/cellrelay` or `~/.local/share/cellrelay`; macOS:
    `~/Library/Application Support/cellrelay`; Windows: `%APPDATA%\\cellrelay`.
    `$CELLRELAY_HOME` overrides all of them.
    """
    override = os.environ.get("CELLRELAY_HOME")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "cellrelay"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", str(Path.home()))) / "cellrelay"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "cellrelay"


class Keystore:
    """An open, locked, encrypted state file. Use `create` or `open`, then `save` and `close`."""

    def __init__(
        self, path: Path, key: bytearray, salt: bytes, cost: tuple[int, int], lock: IO[bytes]
    ) -> None:
        """Wrap an unlocked keystore; use `create` or `open` instead."""
        self.path = path
        self._key = key
        self._salt = salt
        self._cost = cost
        self._lock = lock

    def __repr__(self) -> str:
        return f"<Keystore {self.path}>"

    @classmethod
    def create(
        cls, path: Path, passphrase: str, payload: bytes, *, cost: tuple[int, int] = DEFAULT_COST
    ) -> Keystore:
        """Create a new keystore holding `payload`.

        Raises:
            KeystoreExistsError: there is one already.
            KeystoreBusyError: another process holds the lock.
        """
        _check_passphrase(passphrase)
        make_undumpable(lock_limit=False)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = _lock(path)
        try:
            if path.exists():
                raise KeystoreExistsError(
                    f"{path} already exists; open it, or choose another location"
                )
            salt = random_bytes(ARGON2ID_SALT_SIZE)
            key = argon2id_key(passphrase.encode(), salt, opslimit=cost[0], memlimit=cost[1])
            store = cls(path, key, salt, cost, lock)
            store.save(payload)
        except BaseException:
            lock.close()
            raise
        return store

    @classmethod
    def open(cls, path: Path, passphrase: str) -> tuple[Keystore, bytes]:
        """Unlock the keystore at `path`; return it and its payload.

        Raises:
            KeystoreError: missing or damaged file.
            WrongPassphraseError: the passphrase does not open it.
            KeystoreBusyError: another process holds the lock.
        """
        make_undumpable(lock_limit=False)
        lock = _lock(path)
        try:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise KeystoreError(
                    f"no keystore at {path}; create an identity first (cellrelay id new)"
                ) from None
            if len(data) < HEADER or not data.startswith(MAGIC):
                raise KeystoreError(f"{path} is not a cellrelay keystore (or is damaged)")
            pos = len(MAGIC)
            opslimit = int.from_bytes(data[pos : pos + 4], "big")
            memlimit = int.from_bytes(data[pos + 4 : pos + 12], "big")
            salt = data[pos + 12 : pos + 12 + ARGON2ID_SALT_SIZE]
            nonce = data[pos + 12 + ARGON2ID_SALT_SIZE : HEADER]
            try:
                key = argon2id_key(passphrase.encode(), salt, opslimit=opslimit, memlimit=memlimit)
            except ValueError:
                raise KeystoreError(f"{path} has an unusable header (damaged?)") from None
            try:
                payload = secretbox_open(key, nonce, data[HEADER:])
            except CryptoError:
                zero(key)
                raise WrongPassphraseError(
                    "wrong passphrase (or the keystore file was altered)"
                ) from None
        except BaseException:
            lock.close()
            raise
        return cls(path, key, salt, (opslimit, memlimit), lock), payload

    def save(self, payload: bytes, *, durable: bool = True) -> None:
        """Replace the stored payload atomically; with `durable`, also survive a power cut.

        Atomic means a crash of the process leaves the old or the new payload. `durable`
        adds the two fsyncs (file, then directory) that make the new one survive a power
        cut too. The client asks for durability where losing the save could be unsafe
        (before publishing what was sealed from the new state: a lost save there would
        make the next run reuse a message key), and not after merely receiving, where a
        lost save means only receiving again.
        """
        if self._lock.closed:
            raise KeystoreError("the keystore is closed")
        nonce = random_bytes(SECRETBOX_NONCE_SIZE)
        header = (
            MAGIC
            + self._cost[0].to_bytes(4, "big")
            + self._cost[1].to_bytes(8, "big")
            + self._salt
            + nonce
        )
        data = header + secretbox_seal(self._key, nonce, payload)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        if not durable:
            return
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self) -> None:
        """Zero the key and release the lock."""
        zero(self._key)
        self._lock.close()

    def __enter__(self) -> Keystore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_passphrase(passphrase: str) -> None:
    # A floor, not a policy: the CLI asks for confirmation and says how long is wise.
    if len(passphrase) < 8:
        raise KeystoreError(
            "use a passphrase of at least 8 characters (a few random words is best)"
        )


def _lock(path: Path) -> IO[bytes]:
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    f = open(lock_path, "ab")  # noqa: SIM115 - kept open as the lock for the keystore's life
    os.chmod(lock_path, 0o600)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise KeystoreBusyError(
            f"another cellrelay process is using {path}; stop it (or send through it) and try again"
        ) from None
    return f
