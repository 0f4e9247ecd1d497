"""The relay's configuration: every limit and setting, with defaults, from TOML, environment and flags.

One frozen dataclass, `RelayConfig`, holds everything. Each field's metadata carries its
help text, which `cellrelay relay serve --help` and docs/operator-guide.md show. A value
is taken from, in rising priority: the default, the TOML file (`--config`), the
environment (`CELLRELAY_<NAME>` in upper case) and the command line (`--<name-with-dashes>`).

Defaults are chosen for a relay serving a few hundred cells on a small machine; each says
where its number came from.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cellrelay.protocol._errors import CellrelayError
from cellrelay.protocol.wire._messages import MAX_ENVELOPE

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ConfigError", "RelayConfig", "default_data_dir", "load_config"]

ENV_PREFIX: Final = "CELLRELAY_"


class ConfigError(CellrelayError):
    """A bad operator setting; the message names the setting and what is allowed."""


def default_data_dir() -> Path:
    """Return where the relay keeps its key and database unless told otherwise.

    `$XDG_DATA_HOME/cellrelay-relay`, else `~/.local/share/cellrelay-relay`.
    """
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cellrelay-relay"


def _opt(default: Any, help: str) -> Any:  # noqa: ANN401 - dataclasses.field's own type
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """Every setting of a relay. See the module docstring for where values come from."""

    listen: tuple[str, ...] = _opt(
        ("127.0.0.1:7446",),
        "Addresses to accept clients on, HOST:PORT, IPv6 as [ADDR]:PORT. Loopback by default, so "
        "nothing is exposed by accident; use 0.0.0.0:7446 and [::]:7446 to serve the internet.",
    )
    public_host: str = _opt(
        "",
        "Host name clients use to reach this relay, for the printed address (default: the first listen host).",
    )
    data_dir: str = _opt(
        "", "Directory for the key and database (default: $XDG_DATA_HOME/cellrelay-relay)."
    )
    key_file: str = _opt("", "The relay's static key file (default: DATA_DIR/relay.key).")
    store: str = _opt(
        "sqlite",
        "Storage: sqlite (durable, the default) or memory (tests; loses everything on exit).",
    )
    database: str = _opt("", "SQLite database file (default: DATA_DIR/relay.sqlite3).")
    storage_reserve: int = _opt(
        32 * 1024 * 1024,
        "Bytes of disk the relay keeps in a file beside the database and gives back when the disk"
        " fills, so deleting and expiring envelopes still work (0: none).",
    )
    durability: str = _opt(
        "full",
        "full: fsync each group commit, nothing acknowledged is lost even on power failure; "
        "normal: survives a crash of the relay but not of the machine, faster on slow disks.",
    )
    ops_listen: str = _opt(
        "127.0.0.1:9746",
        "Ops HTTP listener (/healthz, /readyz, /metrics), HOST:PORT; empty disables it.",
    )
    log_format: str = _opt(
        "auto", "Log format: json, console, or auto (console on a terminal, else json)."
    )
    log_level: str = _opt("info", "Log level: debug, info, warning, error.")
    creation_secret: str = _opt(
        "",
        "If set, creating a mailbox requires this secret (give it to cell leads with the address).",
    )
    max_envelope: int = _opt(
        16_384,
        f"Largest envelope accepted, bytes (at most {MAX_ENVELOPE}). Alerts are well under 2 KiB.",
    )
    max_ttl: int = _opt(7 * 86_400, "Longest time an envelope may live, seconds (default 7 days).")
    mailbox_max_bytes: int = _opt(
        16 * 1024 * 1024,
        "Default quota of stored envelope bytes per mailbox (admins may lower it).",
    )
    max_mailboxes_per_connection: int = _opt(
        64, "Mailboxes one connection may authenticate to or subscribe."
    )
    max_mailboxes: int = _opt(
        1_000_000,
        "Mailboxes the relay holds at most; beyond it creation is refused (BUSY).",
    )
    max_stored_bytes: int = _opt(
        4 * 1024**3,
        "Envelope bytes stored over all mailboxes at most; beyond it publishes are refused"
        " (MAILBOX_FULL) until envelopes expire.",
    )
    publish_rate: float = _opt(50.0, "Publishes per second per connection (token bucket refill).")
    publish_burst: int = _opt(500, "Publishes per connection in a burst (token bucket size).")
    mailbox_publish_rate: float = _opt(
        100.0, "Publishes per second per mailbox, all writers together."
    )
    mailbox_publish_burst: int = _opt(1000, "Publishes per mailbox in a burst.")
    create_rate: float = _opt(0.2, "Mailbox creations per second per source address (one per 5 s).")
    create_burst: int = _opt(20, "Mailbox creations per source address in a burst.")
    max_connections: int = _opt(20_000, "Connections held at once, all clients together.")
    max_connections_per_address: int = _opt(
        256, "Connections from one source address (cells behind one NAT share an address)."
    )
    max_handshakes: int = _opt(
        512,
        "Handshakes in progress at once; beyond it new connections are closed (BUSY) until some finish.",
    )
    handshake_timeout: float = _opt(10.0, "Seconds a client has to complete the handshake.")
    ping_interval: int = _opt(
        30,
        "Seconds of silence from a client before the relay pings it; three intervals close the connection.",
    )
    send_queue_bytes: int = _opt(
        1024 * 1024,
        "Bytes queued for one connection before it counts as a slow consumer and is cut off (it resumes from its cursor).",
    )
    max_inflight_publishes: int = _opt(
        1024,
        "Publishes from one connection awaiting their durable commit before the relay stops reading from it.",
    )
    commit_batch: int = _opt(1024, "Most publishes in one group commit.")
    sweep_interval: float = _opt(60.0, "Seconds between deletions of expired envelopes.")
    shutdown_grace: float = _opt(
        5.0, "Seconds to finish in-flight work after SIGTERM before closing."
    )

    def __post_init__(self) -> None:
        _check(self)

    @property
    def data_path(self) -> Path:
        """The data directory as a path."""
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    @property
    def key_path(self) -> Path:
        """Where the static key lives."""
        return Path(self.key_file).expanduser() if self.key_file else self.data_path / "relay.key"

    @property
    def database_path(self) -> Path:
        """Where the SQLite database lives."""
        return (
            Path(self.database).expanduser() if self.database else self.data_path / "relay.sqlite3"
        )


def _check(config: RelayConfig) -> None:
    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{name}: {what}")

    need(len(config.listen) > 0, "listen", "at least one address")
    for address in config.listen:
        split_host_port(address, "listen")
    if config.ops_listen:
        split_host_port(config.ops_listen, "ops_listen")
    need(config.store in ("sqlite", "memory"), "store", "must be sqlite or memory")
    need(config.durability in ("full", "normal"), "durability", "must be full or normal")
    need(
        config.log_format in ("auto", "json", "console"),
        "log_format",
        "must be auto, json or console",
    )
    need(
        config.log_level in ("debug", "info", "warning", "error"),
        "log_level",
        "must be debug, info, warning or error",
    )
    need(0 < config.max_envelope <= MAX_ENVELOPE, "max_envelope", f"must be 1..{MAX_ENVELOPE}")
    need(0 < config.max_ttl < 2**32, "max_ttl", "must be 1..4294967295 seconds")
    need(len(config.creation_secret.encode()) <= 64, "creation_secret", "at most 64 bytes")
    for name in (
        "mailbox_max_bytes", "max_mailboxes_per_connection", "max_mailboxes", "max_stored_bytes",
        "publish_burst",
        "mailbox_publish_burst",
        "create_burst", "max_connections", "max_connections_per_address", "max_handshakes",
        "ping_interval", "send_queue_bytes", "max_inflight_publishes", "commit_batch",
    ):  # fmt: skip
        need(getattr(config, name) > 0, name, "must be positive")
    need(config.storage_reserve >= 0, "storage_reserve", "must not be negative")
    for name in ("publish_rate", "mailbox_publish_rate", "create_rate", "handshake_timeout",
                 "sweep_interval", "shutdown_grace"):  # fmt: skip
        need(getattr(config, name) > 0, name, "must be positive")
    need(
        config.send_queue_bytes >= 2 * 65_537,
        "send_queue_bytes",
        "must hold at least two full frames (131074)",
    )


def split_host_port(text: str, name: str = "address") -> tuple[str, int]:
    """Split `HOST:PORT` or `[V6]:PORT` into its parts.

    Raises:
        ConfigError: naming `name`, if the text is not of that form.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise ConfigError(f"{name}: {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _coerce(name: str, kind: str, value: object) -> object:
    converted = _convert(kind, value)
    if converted is None:
        raise ConfigError(f"{name}: {value!r} is not a valid {kind}")
    return converted


def _convert(kind: str, value: object) -> object | None:
    """Return `value` as `kind`, or None if it is not one."""
    if isinstance(value, bool):  # TOML booleans are never numbers or strings here
        return None
    if kind in ("int", "float"):
        if not isinstance(value, int | float | str):
            return None
        try:
            return int(value) if kind == "int" else float(value)
        except ValueError:
            return None
    if kind == "str":
        return value if isinstance(value, str) else None
    # tuple[str, ...]: a TOML array, or a comma-separated string from env/flags
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


FIELD_KINDS: Final[dict[str, str]] = {
    f.name: {"int": "int", "float": "float", "str": "str"}.get(str(f.type), "list")
    for f in dataclasses.fields(RelayConfig)
}


def load_config(
    *,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> RelayConfig:
    """Build the configuration from a TOML file, the environment and explicit overrides.

    Raises:
        ConfigError: an unknown setting, a value of the wrong type, or a value out of range.
    """
    values: dict[str, object] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
        section = data.get("relay", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {file}: [relay] must be a table")
        if section is not data and len(data) > 1:
            stray = sorted(k for k in data if k != "relay")
            raise ConfigError(
                f"config file {file}: settings outside [relay] are not read: {', '.join(stray)}"
            )
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in FIELD_KINDS:
                raise ConfigError(f"config file {file}: unknown setting {key!r}")
            values[name] = _coerce(name, FIELD_KINDS[name], value)
    env = os.environ if environ is None else environ
    for name, kind in FIELD_KINDS.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(name, kind, raw)
    for name, value in (overrides or {}).items():
        if name not in FIELD_KINDS:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = _coerce(name, FIELD_KINDS[name], value)
    return RelayConfig(**values)  # type: ignore[arg-type]
