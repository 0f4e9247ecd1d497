"""The relay's command line: `cellrelay relay init`, `serve` and `address` (`python -m relay`).

Errors an operator can fix (bad settings, a missing key, an unusable database) are one
clear line on standard error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from protocol._address import RelayAddress
from protocol._errors import CellrelayError

from ._config import FIELD_KINDS, ConfigError, RelayConfig, load_config, split_host_port
from ._keys import create_key_file, load_key_file
from ._logging import configure_logging
from ._memory_store import MemoryStore
from ._server import Relay
from ._sqlite_store import SQLiteStore
from ._store import StorageError, Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

__all__ = ["main"]

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
    store = await SQLiteStore.open(config.database_path, durability=config.durability)  # type: ignore[arg-type]
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


def _serve(args: argparse.Namespace) -> int:
    config = _config_from(args)
    json_logs = config.log_format == "json" or (
        config.log_format == "auto" and not sys.stderr.isatty()
    )
    configure_logging(json=json_logs, level=config.log_level)
    trio.run(serve, config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the `cellrelay relay` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cellrelay relay",
        description="Run a cellrelay relay. Every option can also come from the TOML file given with "
        "--config or from an environment variable; flags win over the environment, which wins over the file.",
    )
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the relay command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigError, StorageError, CellrelayError) as exc:
        print(f"cellrelay relay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
