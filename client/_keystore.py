"""The client's local state, encrypted, in the platform's data directory: two files.

Layout (version 2), all integers big-endian. The *key file* (`keystore`) is written
rarely (create, a duress passphrase set or cleared, the upgrade from version 1):

    magic "CRKS2\\n" (6) | opslimit (4) | memlimit (8) | salt (16) | slot (552) | slot (552)
    slot = nonce (24) | SecretBox (XSalsa20-Poly1305) of 512 bytes

The *state file* (`keystore.state`) is written at every save:

    magic "CRST1\\n" (6) | nonce (24) | SecretBox of the payload under the data key

Unlocking derives one key from the passphrase with Argon2id (`opslimit`, `memlimit`,
`salt`) and tries it on both slots, always both. The slot it opens says what it holds:

* kind 1, the *real* slot: the data key, a random key the state file is sealed under;
* kind 2, the *duress* slot: a replacement keystore made in advance (a fresh salt, the key
  Argon2id derives from the duress passphrase with it, a fresh data key and a payload: an
  identity with no cells). Opening it destroys the real keystore and puts the replacement
  in its place, then returns the replacement as if it had been opened normally.

A slot that holds nothing is 552 random bytes, which no one can tell from a sealed slot,
and which slot is the real one is chosen at random when the keystore is created: the file
is the same size and shape whether a duress passphrase is set or not (docs/threat-model.md
§3.9, docs/design.md "Panic and duress").

Why two files: the state file is rewritten at every save, and each old copy may survive
in the disk's free blocks (a rename unlinks it; flash and journaling filesystems keep
blocks around). Every copy is sealed under the data key, and the data key exists on disk
only inside the key file, which is rewritten a handful of times in the keystore's life.
Destroying the key file (`Keystore.destroy`, `destroy_keystore`) is what makes every copy
of the state unreadable, even to someone who later learns the passphrase; overwriting the
files before unlinking them is a best effort on top (it is not guaranteed to reach the
blocks on flash). Version 1 kept the whole state in one file sealed under the passphrase
key itself; `open` upgrades such a keystore the first time it opens it.

Rules that keep keys safe:

* Files are written atomically (temporary file, fsync, rename, fsync of the directory)
  with mode 0600 in a 0700 directory, so a crash leaves the old or the new state, never a
  torn one.
* One process at a time: `Keystore` holds an exclusive `flock` on `<file>.lock` while open.
  Two writers could otherwise each advance a sender chain from the same saved state and
  reuse a message key, which would break the encryption of both messages.
* The derived key and the data key stay in `bytearray`s while the keystore is open and are
  zeroed on close.
* From the first `create` or `open` on, the process makes no core dumps
  (`cellrelay._undumpable`): a dump would hold the derived key and the decrypted state.
  It stays so after `close`, since Python cannot erase every copy it made.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import os
import secrets
import stat
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from cellrelay._undumpable import make_undumpable
from cellrelay.protocol import CellrelayError, CryptoError
from cellrelay.protocol._crypto import (
    ARGON2ID_SALT_SIZE,
    SECRETBOX_KEY_SIZE,
    SECRETBOX_NONCE_SIZE,
    argon2id_key,
    random_bytes,
    random_secret,
    secretbox_open,
    secretbox_seal,
    zero,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_COST",
    "MAX_DECOY_PAYLOAD",
    "TEST_COST",
    "Keystore",
    "KeystoreBusyError",
    "KeystoreError",
    "KeystoreExistsError",
    "WrongPassphraseError",
    "default_data_dir",
    "destroy_keystore",
    "keystore_files",
    "read_payload",
    "wipe_file",
]

MAGIC: Final = b"CRKS2\n"
MAGIC_V1: Final = b"CRKS1\n"
STATE_MAGIC: Final = b"CRST1\n"
STATE_SUFFIX: Final = ".state"
_MAC: Final = 16  # Poly1305
# 512 bytes of slot plaintext: a duress slot carries a whole replacement payload (an
# identity with no cells encodes to about 150 bytes; a name is at most 32).
SLOT_PLAIN: Final = 512
SLOT_SIZE: Final = SECRETBOX_NONCE_SIZE + SLOT_PLAIN + _MAC
_PREFIX: Final = len(MAGIC) + 4 + 8 + ARGON2ID_SALT_SIZE
KEY_FILE_SIZE: Final = _PREFIX + 2 * SLOT_SIZE
_REAL: Final = 1
_DURESS: Final = 2
# kind (1) | data key (32) | salt (16) | derived key (32) | payload length (2) | payload
_DURESS_FIXED: Final = 1 + SECRETBOX_KEY_SIZE + ARGON2ID_SALT_SIZE + SECRETBOX_KEY_SIZE + 2
MAX_DECOY_PAYLOAD: Final = SLOT_PLAIN - _DURESS_FIXED
# Version 1's single file: magic | opslimit (4) | memlimit (8) | salt (16) | nonce (24) | box
_HEADER_V1: Final = len(MAGIC_V1) + 4 + 8 + ARGON2ID_SALT_SIZE + SECRETBOX_NONCE_SIZE
# libsodium's MODERATE limits: about half a second and 256 MiB here, which makes guessing
# passphrases on a seized device expensive while unlocking stays tolerable.
DEFAULT_COST: Final = (3, 256 * 1024 * 1024)
# The smallest limits libsodium accepts, for tests only: a weak passphrase stays weak.
TEST_COST: Final = (1, 8192)
_WIPE_CHUNK: Final = 1 << 20
# Keystores open in this process, so that destroying one closes it here too (its owner's
# next save then fails instead of writing the state back).
# Keystores are opened in worker threads (trio.to_thread), so the set has a lock.
_OPEN: Final[weakref.WeakSet[Keystore]] = weakref.WeakSet()
_OPEN_LOCK: Final = threading.Lock()


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


def keystore_files(path: Path) -> list[Path]:
    """Every file the keystore at `path` may leave behind, the key file first."""
    state = _state_path(path)
    staged = _staged_path(path)
    return [
        path,
        state,
        _temporary(path),
        _temporary(state),
        staged,
        _temporary(staged),
        path.with_name(path.name + ".lock"),
    ]


@dataclass(slots=True)
class _Header:
    cost: tuple[int, int]
    salt: bytes
    slots: list[bytes]

    def encode(self) -> bytes:
        return (
            MAGIC
            + self.cost[0].to_bytes(4, "big")
            + self.cost[1].to_bytes(8, "big")
            + self.salt
            + b"".join(self.slots)
        )

    @classmethod
    def decode(cls, path: Path, data: bytes) -> _Header:
        if len(data) != KEY_FILE_SIZE:
            raise KeystoreError(f"{path} is not a cellrelay keystore (or is damaged)")
        pos = len(MAGIC)
        opslimit = int.from_bytes(data[pos : pos + 4], "big")
        memlimit = int.from_bytes(data[pos + 4 : pos + 12], "big")
        salt = data[pos + 12 : _PREFIX]
        slots = [data[_PREFIX + i * SLOT_SIZE : _PREFIX + (i + 1) * SLOT_SIZE] for i in (0, 1)]
        return cls((opslimit, memlimit), salt, slots)


def _seal_slot(key: bytes | bytearray, plain: bytes) -> bytes:
    assert len(plain) <= SLOT_PLAIN  # noqa: S101 - our own layout
    nonce = random_bytes(SECRETBOX_NONCE_SIZE)
    return nonce + secretbox_seal(key, nonce, plain.ljust(SLOT_PLAIN, b"\0"))


def _open_slot(key: bytes | bytearray, slot: bytes) -> bytes | None:
    try:
        return secretbox_open(key, slot[:SECRETBOX_NONCE_SIZE], slot[SECRETBOX_NONCE_SIZE:])
    except CryptoError:
        return None


def _empty_slot() -> bytes:
    # Indistinguishable from a sealed slot: a nonce and a SecretBox are both uniform bytes.
    return random_bytes(SLOT_SIZE)


def _derive(passphrase: str, salt: bytes, cost: tuple[int, int], path: Path) -> bytearray:
    try:
        return argon2id_key(passphrase.encode(), salt, opslimit=cost[0], memlimit=cost[1])
    except ValueError:
        raise KeystoreError(f"{path} has an unusable header (damaged?)") from None


class Keystore:
    """An open, locked, encrypted keystore. Use `create` or `open`, then `save` and `close`."""

    def __init__(
        self,
        path: Path,
        key: bytearray,
        header: _Header,
        real_slot: int,
        data_key: bytearray,
        lock: IO[bytes],
    ) -> None:
        """Wrap an unlocked keystore; use `create` or `open` instead."""
        self.path = path
        self._key = key
        self._header = header
        self._real_slot = real_slot
        self._data_key = data_key
        self._lock = lock
        with _OPEN_LOCK:
            _OPEN.add(self)

    def __repr__(self) -> str:
        return f"<Keystore {self.path}>"

    @property
    def state_path(self) -> Path:
        """The file the payload is saved in (sealed under a key only the key file holds)."""
        return _state_path(self.path)

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
            key = _derive(passphrase, salt, cost, path)
            data_key = random_secret(SECRETBOX_KEY_SIZE)
            # The state first: a crash before the key file is written leaves no keystore
            # (a stray state file that nothing opens), never a key file without its state.
            _write_atomic(_state_path(path), _seal_state(data_key, payload), durable=True)
            store = cls._install(path, key, salt, cost, data_key, lock)
        except BaseException:
            lock.close()
            raise
        return store

    @classmethod
    def _install(
        cls,
        path: Path,
        key: bytearray,
        salt: bytes,
        cost: tuple[int, int],
        data_key: bytearray,
        lock: IO[bytes],
        *,
        sync_directory: bool = True,
    ) -> Keystore:
        """Write a key file whose real slot holds `data_key` under `key` (the other: random)."""
        real_slot = secrets.randbelow(2)
        slots = [_empty_slot(), _empty_slot()]
        slots[real_slot] = _seal_slot(key, bytes([_REAL]) + bytes(data_key))
        header = _Header(cost, salt, slots)
        _write_atomic(path, header.encode(), durable=True, sync_directory=sync_directory)
        return cls(path, key, header, real_slot, data_key, lock)

    @classmethod
    def open(
        cls, path: Path, passphrase: str, *, companions: Iterable[Path] = ()
    ) -> tuple[Keystore, bytes]:
        """Unlock the keystore at `path`; return it and its payload.

        When `passphrase` is the duress passphrase (`set_duress`), the keystore is destroyed
        with the `companions` (other files of the identity, destroyed alongside), the
        replacement made by `set_duress` takes its place, and that is what is returned: to
        the caller it looks like any unlock.

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
            if data.startswith(MAGIC_V1):
                return cls._open_v1(path, passphrase, data, lock)
            if not data.startswith(MAGIC):
                raise KeystoreError(f"{path} is not a cellrelay keystore (or is damaged)")
            header = _Header.decode(path, data)
            key = _derive(passphrase, header.salt, header.cost, path)
            # Both slots, always, so that which one opens (or none) costs the same.
            opened = [_open_slot(key, slot) for slot in header.slots]
            real = [i for i, plain in enumerate(opened) if plain and plain[0] == _REAL]
            duress = [plain for plain in opened if plain and plain[0] == _DURESS]
            if real:
                plain = opened[real[0]]
                assert plain is not None  # noqa: S101 - for mypy
                data_key = bytearray(plain[1 : 1 + SECRETBOX_KEY_SIZE])
                store = cls(path, key, header, real[0], data_key, lock)
                return store, store._load()
            if duress:
                zero(key)
                return cls._replace(path, duress[0], header.cost, lock, companions)
            zero(key)
            raise WrongPassphraseError("wrong passphrase (or the keystore file was altered)")
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _replace(
        cls,
        path: Path,
        plain: bytes,
        cost: tuple[int, int],
        lock: IO[bytes],
        companions: Iterable[Path],
    ) -> tuple[Keystore, bytes]:
        """The duress passphrase opened `plain`: destroy the keystore, install the replacement."""
        pos = 1
        data_key = bytearray(plain[pos : pos + SECRETBOX_KEY_SIZE])
        pos += SECRETBOX_KEY_SIZE
        salt = plain[pos : pos + ARGON2ID_SALT_SIZE]
        pos += ARGON2ID_SALT_SIZE
        key = bytearray(plain[pos : pos + SECRETBOX_KEY_SIZE])
        pos += SECRETBOX_KEY_SIZE
        size = int.from_bytes(plain[pos : pos + 2], "big")
        payload = plain[pos + 2 : pos + 2 + size]
        # The key file first: it is what makes every copy of the state unreadable.
        for file in [*keystore_files(path)[:-1], *companions]:  # keep the lock we hold
            wipe_file(file)
        # Each file is flushed; one flush of the directory then makes the deletions and
        # the two renames durable together (fewer fsyncs: an unlock under duress should
        # not take visibly longer than another, bench/bench_duress.py).
        _write_atomic(_state_path(path), _seal_state(data_key, payload), durable=True,
                      sync_directory=False)  # fmt: skip
        store = cls._install(path, key, salt, cost, data_key, lock, sync_directory=False)
        _fsync_directory(path.parent)
        return store, payload

    @classmethod
    def _open_v1(
        cls, path: Path, passphrase: str, data: bytes, lock: IO[bytes]
    ) -> tuple[Keystore, bytes]:
        """Open a version 1 keystore and upgrade it to version 2 (same passphrase and salt)."""
        if len(data) < _HEADER_V1:
            raise KeystoreError(f"{path} is not a cellrelay keystore (or is damaged)")
        pos = len(MAGIC_V1)
        cost = (
            int.from_bytes(data[pos : pos + 4], "big"),
            int.from_bytes(data[pos + 4 : pos + 12], "big"),
        )
        salt = data[pos + 12 : pos + 12 + ARGON2ID_SALT_SIZE]
        nonce = data[pos + 12 + ARGON2ID_SALT_SIZE : _HEADER_V1]
        key = _derive(passphrase, salt, cost, path)
        try:
            payload = secretbox_open(key, nonce, data[_HEADER_V1:])
        except CryptoError:
            zero(key)
            raise WrongPassphraseError(
                "wrong passphrase (or the keystore file was altered)"
            ) from None
        # The state file first: until the key file is replaced, version 1 is what opens.
        data_key = random_secret(SECRETBOX_KEY_SIZE)
        _write_atomic(_state_path(path), _seal_state(data_key, payload), durable=True)
        store = cls._install(path, key, salt, cost, data_key, lock)
        return store, payload

    def _load(self) -> bytes:
        staged = _staged_path(self.path)
        if staged.exists():
            # A `rekey` stopped between its steps: the staged state opens with the key file's
            # data key once the key file was replaced (then finish the rekey), else never.
            try:
                payload = _load_state(staged, self._data_key)
            except KeystoreError:
                wipe_file(staged)
            else:
                _replace_wiping(self.state_path, staged)
                return payload
        return _load_state(self.state_path, self._data_key)

    def save(self, payload: bytes, *, durable: bool = True) -> None:
        """Replace the stored payload atomically; with `durable`, also survive a power cut.

        Atomic means a crash of the process leaves the old or the new payload. `durable`
        adds the two fsyncs (file, then directory) that make the new one survive a power
        cut too. The client asks for durability where losing the save could be unsafe
        (before publishing what was sealed from the new state: a lost save there would
        make the next run reuse a message key), and not after merely receiving, where a
        lost save means only receiving again.
        """
        self._check_open()
        _write_atomic(self.state_path, _seal_state(self._data_key, payload), durable=durable)

    def rekey(self, payload: bytes) -> None:
        """Save `payload` sealed under a fresh data key, so that no older copy opens again.

        Every save leaves the previous state file's blocks on the disk (a rename unlinks
        it), all sealed under the data key; after a burn those copies hold the burned cell.
        Changing the data key makes them unreadable even with the passphrase, as long as no
        older key file survives: the key file and the state file replaced here are
        overwritten with random bytes once the new ones are in place (a best effort on
        flash and journaling filesystems, see `wipe_file`).

        Crash-safe in three durable steps: the new state goes to a staged file, then the key
        file takes the new data key, then the staged file replaces the state. A crash after
        the second step leaves a staged file that `open` finds and finishes with; after the
        first, one that does not open with the key file's data key and is deleted.
        """
        self._check_open()
        data_key = random_secret(SECRETBOX_KEY_SIZE)
        staged = _staged_path(self.path)
        try:
            _write_atomic(staged, _seal_state(data_key, payload), durable=True)
            slots = list(self._header.slots)
            slots[self._real_slot] = _seal_slot(self._key, bytes([_REAL]) + bytes(data_key))
            header = _Header(self._header.cost, self._header.salt, slots)
            _replace_wiping(self.path, _write_temporary(self.path, header.encode()))
        except BaseException:
            zero(data_key)
            raise
        self._header = header
        old, self._data_key = self._data_key, data_key
        zero(old)
        _replace_wiping(self.state_path, staged)

    def set_duress(self, passphrase: str, payload: bytes) -> None:
        """Make `passphrase` a duress passphrase: unlocking with it gives `payload` instead.

        From then on, `open` with `passphrase` destroys this keystore and replaces it with
        a new one that holds `payload` and opens with `passphrase` (and no duress slot). It
        costs two Argon2id derivations now, so that the unlock under duress costs one, as
        every unlock does. Setting it again replaces the previous one.

        Raises:
            KeystoreError: the passphrase is the keystore's own, too short, or the payload
                too large (`MAX_DECOY_PAYLOAD`).
        """
        self._check_open()
        _check_passphrase(passphrase)
        if len(payload) > MAX_DECOY_PAYLOAD:
            raise KeystoreError(f"a duress payload is at most {MAX_DECOY_PAYLOAD} bytes")
        cost, salt = self._header.cost, self._header.salt
        key = _derive(passphrase, salt, cost, self.path)
        try:
            if hmac.compare_digest(bytes(key), bytes(self._key)):
                raise KeystoreError("the duress passphrase must differ from the passphrase")
            new_salt = random_bytes(ARGON2ID_SALT_SIZE)
            new_key = _derive(passphrase, new_salt, cost, self.path)
            plain = (
                bytes([_DURESS])
                + random_bytes(SECRETBOX_KEY_SIZE)
                + new_salt
                + bytes(new_key)
                + len(payload).to_bytes(2, "big")
                + payload
            )
            zero(new_key)
            self._write_other_slot(_seal_slot(key, plain))
        finally:
            zero(key)

    def clear_duress(self) -> None:
        """Forget the duress passphrase, if any: its slot becomes random bytes again."""
        self._check_open()
        self._write_other_slot(_empty_slot())

    def _write_other_slot(self, slot: bytes) -> None:
        slots = list(self._header.slots)
        slots[1 - self._real_slot] = slot
        header = _Header(self._header.cost, self._header.salt, slots)
        _write_atomic(self.path, header.encode(), durable=True)
        self._header = header

    def destroy(self) -> None:
        """Destroy this keystore: overwrite and delete its files, the key file first; close it.

        Once the key file is gone, no copy of the state (including old ones the disk may
        still hold) can be decrypted, even with the passphrase (see the module docstring).
        """
        self._check_open()
        try:
            destroy_keystore(self.path)
        finally:
            self.close()

    def close(self) -> None:
        """Zero the keys and release the lock."""
        with _OPEN_LOCK:
            _OPEN.discard(self)
        zero(self._key)
        zero(self._data_key)
        self._lock.close()

    def _check_open(self) -> None:
        if self._lock.closed:
            raise KeystoreError("the keystore is closed")

    def __enter__(self) -> Keystore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def destroy_keystore(path: Path) -> bool:
    """Overwrite and delete the keystore at `path`, without its passphrase or its lock.

    For when the person cannot or must not type the passphrase (`cellrelay panic`). It does
    not wait for the lock: a process that holds it must be stopped first, or it may write
    the state again (client/_panic.py stops them). A `Keystore` open on it in this process
    is closed (its keys zeroed): its next `save` raises `KeystoreError`. Returns whether
    there was anything.
    """
    with _OPEN_LOCK:
        stores = [s for s in _OPEN if s.path == path]
    for store in stores:
        store.close()
    found = False
    for file in keystore_files(path):
        found = wipe_file(file) or found
    with contextlib.suppress(OSError):
        _fsync_directory(path.parent)
    return found


def wipe_file(path: Path) -> bool:
    """Overwrite a regular file with random bytes, flush it to the disk, and delete it.

    Anything else at `path` (a socket, a symbolic link) is only deleted. The overwrite is a
    best effort: flash storage and journaling or copy-on-write filesystems may keep the old
    blocks. Returns whether there was anything at `path`.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:  # a symbolic link, a socket, a directory: nothing of ours to overwrite
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            return True
        return True
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            left = info.st_size
            while left > 0:
                chunk = min(left, _WIPE_CHUNK)
                os.write(fd, random_bytes(chunk))
                left -= chunk
            os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
    return True


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + STATE_SUFFIX)


def _staged_path(path: Path) -> Path:
    """The state sealed under the next data key, while `Keystore.rekey` is under way."""
    return path.with_name(path.name + STATE_SUFFIX + ".next")


def _write_temporary(path: Path, data: bytes) -> Path:
    """Write `data` durably to the temporary file beside `path` (mode 0600); return its path."""
    temporary = _temporary(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return temporary


def _replace_wiping(path: Path, source: Path) -> None:
    """Rename `source` over `path` durably, then overwrite what was at `path` with random bytes.

    The file replaced is held open across the rename, so its blocks are overwritten once
    the new file is durably in its place: a crash at any point leaves one or the other
    whole at `path`.
    """
    try:
        old = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        old = -1
    try:
        os.replace(source, path)
        _fsync_directory(path.parent)
        if old >= 0:
            info = os.fstat(old)
            if stat.S_ISREG(info.st_mode):
                left, offset = info.st_size, 0
                while left > 0:
                    chunk = min(left, _WIPE_CHUNK)
                    os.pwrite(old, random_bytes(chunk), offset)
                    left -= chunk
                    offset += chunk
                os.fsync(old)
    finally:
        if old >= 0:
            os.close(old)


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _seal_state(data_key: bytearray, payload: bytes) -> bytes:
    nonce = random_bytes(SECRETBOX_NONCE_SIZE)
    return STATE_MAGIC + nonce + secretbox_seal(data_key, nonce, payload)


def _write_atomic(path: Path, data: bytes, *, durable: bool, sync_directory: bool = True) -> None:
    temporary = _temporary(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if durable and sync_directory:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_payload(path: Path, passphrase: str) -> bytes:
    """Decrypt a keystore's payload without taking its lock (tests and benchmarks only).

    Never acts on a duress passphrase: it only reads.
    """
    data = path.read_bytes()
    header = _Header.decode(path, data)
    key = _derive(passphrase, header.salt, header.cost, path)
    for slot in header.slots:
        plain = _open_slot(key, slot)
        if plain is not None and plain[0] == _REAL:
            zero(key)
            data_key = plain[1 : 1 + SECRETBOX_KEY_SIZE]
            with contextlib.suppress(KeystoreError):  # a rekey under way (see `_load`)
                return _load_state(_staged_path(path), data_key)
            return _load_state(_state_path(path), data_key)
    zero(key)
    raise WrongPassphraseError("wrong passphrase (or the keystore file was altered)")


def _load_state(state_path: Path, data_key: bytes | bytearray) -> bytes:
    try:
        data = state_path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"{state_path} is missing: the keystore's state was deleted") from None
    head = len(STATE_MAGIC) + SECRETBOX_NONCE_SIZE
    if not data.startswith(STATE_MAGIC) or len(data) < head + _MAC:
        raise KeystoreError(f"{state_path} is damaged")
    try:
        return secretbox_open(data_key, data[len(STATE_MAGIC) : head], data[head:])
    except CryptoError:
        raise KeystoreError(
            f"{state_path} does not open with this keystore's key (altered?)"
        ) from None


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
