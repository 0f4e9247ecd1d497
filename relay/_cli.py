"""The relay's command line: `cellrelay relay init|serve|address|backup` (`python -m cellrelay.relay`).

Errors an operator can fix (bad settings, a missing key, an unusable database) are one
clear line on standard error and exit status 2, never a traceback.

`backup` copies the SQLite database while the relay runs, with SQLite's online backup API
(docs/operator-guide.md, "Backups"); it lives here rather than in the store because it is
an operator's one-off command that opens the file read-only from another process, not
something the running relay does.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
import signal
import sqlite3
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog
import trio

from cellrelay import __version__
from cellrelay._undumpable import make_undumpable
from cellrelay.protocol._errors import CellrelayError
from cellrelay.protocol.wire._address import RelayAddress

from ._config import FIELD_KINDS, ConfigError, RelayConfig, load_config, split_host_port
from ._keys import create_key_file, load_key_file
from ._logging import configure_logging
from ._memory_store import MemoryStore
from ._server import Relay
from ._sqlite_store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SQLiteStore,
    _delete_expired_chunk_sync,
)
from ._store import StorageError, StorageFullError, Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

__all__ = ["BackupSummary", "backup_database", "main"]

log = structlog.get_logger("cellrelay.relay")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML file with settings (keys as below, optionally under [relay]).",
    )
    for f in dataclasses.fields(RelayConfig):
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        kind = FIELD_KINDS[f.name]
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=kind.upper() if kind != "list" else "A,B",
            help=f"{f.metadata['help']} [env CELLRELAY_{f.name.upper()}; default: {shown!s}]".replace(
                "%", "%%"
            ),
        )


def _config_from(args: argparse.Namespace) -> RelayConfig:
    overrides = {name: getattr(args, name) for name in FIELD_KINDS}
    return load_config(file=args.config, overrides=overrides)


def relay_address(config: RelayConfig, public_key: bytes, port: int | None = None) -> RelayAddress:
    """Return the address clients use: the public host (or first listen host) and port."""
    host, listen_port = split_host_port(config.listen[0], "listen")
    port = listen_port if port is None else port
    if config.public_host:
        host = config.public_host
    elif host in ("0.0.0.0", "::", ""):  # noqa: S104 - we are naming, not binding
        host = "127.0.0.1"
    return RelayAddress(host, port, public_key)


def _init(args: argparse.Namespace) -> int:
    config = _config_from(args)
    key = create_key_file(config.key_path)
    print(f"created {config.key_path} (mode 0600); keep it safe and back it up", file=sys.stderr)
    if split_host_port(config.listen[0], "listen")[1] == 0:
        print("the address is printed by `serve` once the port is chosen", file=sys.stderr)
    else:
        print(relay_address(config, key.public))
    return 0


def _address(args: argparse.Namespace) -> int:
    config = _config_from(args)
    print(relay_address(config, load_key_file(config.key_path).public))
    return 0


@asynccontextmanager
async def open_store(config: RelayConfig) -> AsyncIterator[Store]:
    """Open the configured store and close it at the end."""
    if config.store == "memory":
        yield MemoryStore()
        return
    store = await SQLiteStore.open(
        config.database_path,
        durability=config.durability,  # type: ignore[arg-type]
        reserve_bytes=config.storage_reserve,
    )
    try:
        yield store
    finally:
        await store.aclose()


async def serve(
    config: RelayConfig, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a relay from `config` until SIGTERM or SIGINT, then drain and stop."""
    key = load_key_file(config.key_path)
    async with open_store(config) as store:
        relay = Relay(config, key=key, store=store, mailbox_count=await store.count_mailboxes())
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(relay.serve)
                print(relay_address(config, key.public, relay.ports[0][1]), flush=True)
                task_status.started(relay)
                async for signum in signals:
                    log.info("signal_received", signal=signal.Signals(signum).name)
                    await relay.shutdown()
                    nursery.cancel_scope.cancel()
                    break


BACKUP_FILE_MODE: Final = 0o600  # a backup holds the same ciphertext as the database


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupSummary:
    """What `backup_database` copied: counts only, safe to print."""

    mailboxes: int
    envelopes: int
    expired_left_out: int


def backup_database(
    source: Path, dest: Path, *, now: float, replace: bool = False
) -> BackupSummary:
    """Copy the relay database `source` into the new file `dest` (mode 0600) while it is in use.

    The source is opened read-only and copied with SQLite's online backup API in one step,
    so the copy is one consistent snapshot that includes what is still in the WAL, even
    while the relay writes. Envelopes already expired at `now` (the sweeper may not have
    reached them) are then deleted from the copy with `secure_delete` on and the journal
    kept in memory, so the backup holds only what the relay would still deliver. The copy
    is made under a temporary name next to `dest`, checked, fsynced and renamed into place,
    so `dest` never names a half-written file, and it is left in rollback-journal mode: one
    self-contained file.

    Run it as the relay's user: a read-only reader of a WAL database still writes to the
    `-shm` file, and may create `-wal` and `-shm` files when the relay is stopped.

    Raises:
        StorageError: `source` is missing or not a cellrelay database, `dest` exists and
            `replace` is false, or SQLite or the filesystem failed; the message says what to do.
    """
    if not source.is_file():
        raise StorageError(
            f"{source} does not exist; check data_dir or database (the relay creates it on first start)"
        )
    if dest.is_dir():
        raise StorageError(f"{dest} is a directory; give the backup a file name")
    if dest.exists() and not replace:
        raise StorageError(f"{dest} already exists; choose another name or pass --force")
    temporary = dest.with_name(f".{dest.name}.partial-{secrets.token_hex(4)}")
    try:
        os.close(
            os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BACKUP_FILE_MODE
            )
        )
    except OSError as exc:
        raise StorageError(f"cannot create a file next to {dest}: {exc.strerror}") from None
    try:
        summary = _copy_database(source, temporary, now)
        fd = os.open(temporary, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, dest)
        _fsync_directory(dest.parent)
    except BaseException:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{temporary}{suffix}")
        raise
    return summary


def _copy_database(source: Path, target: Path, now: float) -> BackupSummary:
    try:
        # mode=ro: the backup can never change the relay's database, whatever goes wrong.
        src = sqlite3.connect(
            f"{source.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {source}: {exc}") from exc
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            _check_backup_source(src, source)
            # pages=-1 (the default): one step, one read transaction, one snapshot. In
            # steps, each step would see the relay's newer commits and start over.
            src.backup(dst)
            return _purge_expired(dst, now)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise StorageError(
            f"backup of {source} failed ({exc}); run it as the relay's user, with room on the "
            "destination's filesystem"
        ) from exc
    finally:
        src.close()


def _check_backup_source(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
    version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    if app_id != APPLICATION_ID or version < 1:
        raise StorageError(f"{path} is not a cellrelay database; check data_dir or database")
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path} has schema version {version}, newer than this cellrelay knows "
            f"({SCHEMA_VERSION}); back it up with the cellrelay that runs the relay"
        )


def _purge_expired(conn: sqlite3.Connection, now: float) -> BackupSummary:
    """Delete expired envelopes from a fresh copy and leave it in rollback-journal mode."""
    # The copy's header says WAL, as the source's does. MEMORY: no on-disk journal, so
    # the expired pages are overwritten in the file and never copied anywhere else; a
    # crash now leaves only the temporary file, which is not the backup.
    conn.execute("PRAGMA journal_mode = MEMORY").fetchall()
    conn.execute("PRAGMA secure_delete = ON").fetchall()
    conn.execute("PRAGMA foreign_keys = ON").fetchall()
    expired = 0
    more = True
    while more:
        count, more = _delete_expired_chunk_sync(conn, now)
        expired += count
    conn.execute("PRAGMA journal_mode = DELETE").fetchall()
    problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise StorageError(f"the copy failed SQLite's integrity check ({problems[0]})")
    mailboxes = conn.execute("SELECT count(*) FROM mailboxes").fetchall()[0][0]
    envelopes = conn.execute("SELECT count(*) FROM envelopes").fetchall()[0][0]
    return BackupSummary(mailboxes=mailboxes, envelopes=envelopes, expired_left_out=expired)


def _fsync_directory(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if config.store != "sqlite":
        raise ConfigError("store: the memory store keeps nothing on disk to back up")
    summary = backup_database(config.database_path, args.dest, now=time.time(), replace=args.force)
    print(
        f"backed up {config.database_path} to {args.dest}: {summary.mailboxes} mailboxes, "
        f"{summary.envelopes} envelopes ({summary.expired_left_out} expired ones left out)"
    )
    print("the relay key is not in the backup: keep its own copy safe", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _config_from(args)
    json_logs = config.log_format == "json" or (
        config.log_format == "auto" and not sys.stderr.isatty()
    )
    configure_logging(json=json_logs, level=config.log_level)
    try:
        trio.run(serve, config)
    except BaseExceptionGroup as group:
        # What fails while the relay starts (a port in use, the database locked by another
        # relay, a full disk) fails inside its nurseries, wrapped in exception groups: find
        # the error meant for the operator and raise it alone, so it is one line.
        found = _operator_error(group)
        if found is None:
            raise
        raise found from None
    return 0


_OPERATOR_ERRORS: Final = (ConfigError, StorageError, CellrelayError)


def _operator_error(exc: BaseException) -> BaseException | None:
    if isinstance(exc, _OPERATOR_ERRORS):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _operator_error(inner)
            if found is not None:
                return found
    return None


def build_parser() -> argparse.ArgumentParser:
    """Return the `cellrelay relay` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cellrelay relay",
        description="Run a cellrelay relay. Every option can also come from the TOML file given with "
        "--config or from an environment variable; flags win over the environment, which wins over the file.",
    )
    parser.add_argument("--version", action="version", version=f"cellrelay relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = commands.add_parser("init", help="create the relay's static key and print its address")
    _add_config_options(init)
    init.set_defaults(run=_init)
    serve_parser = commands.add_parser("serve", help="run the relay until SIGTERM")
    _add_config_options(serve_parser)
    serve_parser.set_defaults(run=_serve)
    address = commands.add_parser("address", help="print the address of an existing relay key")
    _add_config_options(address)
    address.set_defaults(run=_address)
    backup = commands.add_parser(
        "backup", help="copy the database to DEST (mode 0600), also while the relay runs"
    )
    _add_config_options(backup)
    backup.add_argument(
        "dest", type=Path, metavar="DEST", help="the backup file to create (not the key)"
    )
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    backup.set_defaults(run=_backup)
    return parser


# Exit statuses besides 0 (docs/operator-guide.md, section 4): a setting or the database
# needs the operator (systemd must not restart in a loop: RestartPreventExitStatus=2), or the
# disk is too full to open the database (sysexits' EX_TEMPFAIL: systemd restarts it, and
# it starts once there is room).
EXIT_FIX: Final = 2
EXIT_DISK_FULL: Final = 75


def main(argv: Sequence[str] | None = None) -> int:
    """Run the relay command line; return the exit status.

    First of all the process stops making core dumps (`cellrelay._undumpable`): the relay
    key is read by every command but `backup`, and `serve` holds it and the envelopes.
    """
    make_undumpable(lock_limit=True)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except StorageFullError as exc:
        print(f"cellrelay relay: {exc}", file=sys.stderr)
        return EXIT_DISK_FULL
    except _OPERATOR_ERRORS as exc:
        print(f"cellrelay relay: {exc}", file=sys.stderr)
        return EXIT_FIX
    except KeyboardInterrupt:
        return 130
