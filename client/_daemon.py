"""`cellrelay daemon`: one process per identity, unlocked once, serving the local API and the board.

Theory of operation
-------------------

`run_daemon` takes the identity's daemon lock (`daemon.lock`, an exclusive `flock` beside
the keystore: a second daemon refuses at once, before asking for a passphrase), opens the
client (which unlocks the keystore and holds its own lock for as long as the daemon runs),
and serves one `App` (client/_app.py) on

* the Unix socket `daemon.sock` beside the keystore, mode 0600 in the 0700 data directory,
  the peer's uid checked as well (SO_PEERCRED); the command line finds the daemon there;
* loopback TCP, only when asked for (`listen=("127.0.0.1", PORT)`), with the token.

`_Follower` subscribes to every cell (and to new ones as they are created or joined) and to
every relay link, and publishes what they yield on the `EventHub` (client/_sse.py): each
library event as the API's JSON, and each change of a relay connection. Cancelling
`run_daemon` (SIGTERM, Ctrl-C) closes the listeners, saves the state (the client's own
close) and removes the socket.

The daemon never imports the relay (it is a client like any other), and nothing it serves
leaves the machine: it binds loopback addresses only.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

import structlog
import trio

from cellrelay.protocol import CellrelayError

from ._api import Api
from ._api_types import RelayStateChanged, StreamEvent
from ._app import App
from ._auth import TOKEN_NAME, Gatekeeper, load_or_create_token
from ._client import open_client
from ._http import MAX_CONNECTIONS, Transport, serve_connection
from ._keystore import default_data_dir
from ._link import LinkStatus
from ._openapi import api_registry
from ._sse import EventHub

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from ._cell_admin import Cell
    from ._client import Client
    from ._events import CellEvent
    from ._link import RelayLink
    from ._schema import Registry

__all__ = [
    "LOCK_NAME",
    "SOCKET_NAME",
    "DaemonAddress",
    "DaemonRunningError",
    "run_daemon",
    "socket_path",
    "unix_address",
]

log = structlog.get_logger("cellrelay.daemon")

SOCKET_NAME: Final = "daemon.sock"
LOCK_NAME: Final = "daemon.lock"
# AF_UNIX paths are at most 107 bytes on Linux (sun_path is 108 with the final NUL); a
# longer path is reached through the directory's /proc/self/fd entry (`unix_address`).
_SUN_PATH: Final = 107
_BACKLOG: Final = 128


class DaemonRunningError(CellrelayError):
    """A daemon already runs for this identity: use it (the command line does by itself)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonAddress:
    """Where a started daemon listens, as `run_daemon` reports it."""

    socket: Path
    url: str | None  # http://127.0.0.1:PORT, when listening on TCP
    board_url: str | None  # the board with a one-time code, when listening on TCP
    token_file: Path


def socket_path(home: Path | None = None) -> Path:
    """The daemon's socket for the identity in `home` (default: the data directory)."""
    return (home or default_data_dir()) / SOCKET_NAME


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for `path` that fits AF_UNIX: the path, or /proc/self/fd/N/NAME (Linux).

    Needed for long data directories (pytest's temporary ones, deep home directories).
    """
    text = os.fsencode(path)
    if len(text) <= _SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _lock(home: Path) -> IO[bytes]:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / LOCK_NAME
    f = open(path, "ab")  # noqa: SIM115 - kept open as the lock for the daemon's life
    os.chmod(path, 0o600)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise DaemonRunningError(
            f"a daemon is already running for this identity (socket {home / SOCKET_NAME})"
        ) from None
    return f


def check_not_running(home: Path) -> None:
    """Refuse at once if a daemon runs for `home` (before a passphrase is asked for).

    Raises:
        DaemonRunningError: one does.
    """
    _lock(home).close()


async def _bind_unix(path: Path) -> trio.SocketListener:
    # We hold the daemon lock, so a socket file left here is a dead daemon's: replace it.
    path.unlink(missing_ok=True)  # noqa: ASYNC240 - one local unlink, at start only
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(path) as address:
            await sock.bind(address)
        # Connecting needs write permission on the socket: 0600 is this user only. The
        # data directory is 0700 too, and the peer's uid is checked on every connection.
        os.chmod(path, 0o600)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _peer_uid(stream: trio.SocketStream) -> int | None:
    try:
        creds = stream.socket.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Server:
    """Accepts connections for the app: counts them, checks socket peers, logs crashes."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.active = 0

    async def serve(self, stream: trio.SocketStream, transport: Transport) -> None:
        if self.active >= MAX_CONNECTIONS:
            log.warning("connections_saturated", limit=MAX_CONNECTIONS)
            await trio.aclose_forcefully(stream)
            return
        if transport is Transport.UNIX:
            uid = _peer_uid(stream)
            if uid is not None and uid != os.getuid():
                log.warning("socket_peer_refused")
                await trio.aclose_forcefully(stream)
                return
        self.active += 1
        try:
            await serve_connection(stream, self.app, transport=transport)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass  # the client went away or stopped reading (a stream's write timed out)
        except* Exception:
            log.exception("connection_crashed")
        finally:
            self.active -= 1
            await trio.aclose_forcefully(stream)


class _Follower:
    """Publishes every cell's events and every link's state changes on the hub."""

    def __init__(self, client: Client, hub: EventHub, registry: Registry) -> None:
        self.client = client
        self.hub = hub
        self.registry = registry
        self._cells: set[Cell] = set()
        self._links: set[RelayLink] = set()
        self._pending: list[tuple[Cell, trio.MemoryReceiveChannel[CellEvent]]] = []

    def follow_new(self) -> None:
        """Subscribe to cells not yet followed (synchronously, so nothing slips by)."""
        for cell in self.client.cells:
            if cell not in self._cells:
                self._cells.add(cell)
                self._pending.append((cell, cell.subscribe()))

    async def run(self) -> None:
        """Follow cells and links until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                self.follow_new()
                pending, self._pending = self._pending, []
                for cell, channel in pending:
                    nursery.start_soon(self._pump, cell, channel)
                    for link in cell.links:  # every relay of the cell (issue 13)
                        if link not in self._links:
                            self._links.add(link)
                            nursery.start_soon(self._watch_link, link)
                await self.client.wait_cells_changed()

    async def _pump(self, cell: Cell, channel: trio.MemoryReceiveChannel[CellEvent]) -> None:
        encode = self.registry.converter(StreamEvent).encode
        async with channel:
            async for event in channel:
                self.hub.publish(encode(event), cell_id=cell.cell_id)
        self._cells.discard(cell)  # closed: left, forgotten or the client closing

    async def _watch_link(self, link: RelayLink) -> None:
        """Publish each change of the link's connection, as `cellrelay listen` shows it."""
        encode = self.registry.converter(StreamEvent).encode
        relay = f"{link.address.host}:{link.address.port}"

        def publish(status: LinkStatus) -> None:
            names = [c.name for c in self.client.cells if link in c.links]
            event = RelayStateChanged(relay, link.connected, names, status.state,
                                      status.reason or None, status.retry_in)  # fmt: skip
            self.hub.publish(encode(event))

        async def first_connection() -> None:
            # The link reports reconnections; the first one, at start, is said here.
            while link.connections == 0:
                await link.wait_state_change()
            publish(LinkStatus("connected"))

        statuses = link.statuses()
        async with trio.open_nursery() as nursery, statuses:
            if link.connections == 0:
                nursery.start_soon(first_connection)
            async for status in statuses:
                publish(status)
            nursery.cancel_scope.cancel()  # the link closed


def _url(host: str, port: int) -> str:
    address = ipaddress.ip_address(host)
    return f"http://[{host}]:{port}" if address.version == 6 else f"http://{host}:{port}"


async def run_daemon(
    passphrase: str,
    *,
    home: Path | None = None,
    listen: tuple[str, int] | None = None,
    hub: EventHub | None = None,
    task_status: trio.TaskStatus[DaemonAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until cancelled; report where it listens once it does.

    `listen` adds a loopback TCP listener (port 0 picks a free one). `hub` is the event
    hub to publish on (a new one by default; tests and benchmarks pass their own).

    Raises:
        DaemonRunningError: a daemon already runs for this identity.
        ValueError: `listen` is not a loopback address.
        KeystoreError, WrongPassphraseError, KeystoreBusyError: see client/_keystore.py.
    """
    home = home or default_data_dir()
    if listen is not None and not ipaddress.ip_address(listen[0]).is_loopback:
        raise ValueError(f"the daemon listens on loopback addresses only, not {listen[0]}")
    lock = _lock(home)
    sock = home / SOCKET_NAME
    try:
        async with open_client(passphrase, home=home) as client:
            client.report_receipts = True  # it runs: it reports on sampled alerts (§C1.7)
            client.escalate_automatically = True  # and escalates alerts when due (§C10)
            hub = hub or EventHub()
            token = load_or_create_token(home)
            async with contextlib.AsyncExitStack() as listeners:
                tcp: list[trio.SocketListener] = []
                url: str | None = None
                if listen is not None:
                    tcp = await trio.open_tcp_listeners(listen[1], host=listen[0])
                    for extra in tcp:
                        listeners.push_async_callback(extra.aclose)
                    del tcp[1:]  # port 0 on a name with several addresses: keep the first
                    url = _url(listen[0], tcp[0].socket.getsockname()[1])
                gatekeeper = Gatekeeper(token, tcp_port=int(url.rsplit(":", 1)[1]) if url else None)
                api = Api(client, hub=hub, gatekeeper=gatekeeper, socket_path=str(sock),
                          listen_url=url, registry=api_registry())  # fmt: skip
                app = App(api)
                follower = _Follower(client, hub, app.registry)
                follower.follow_new()
                server = _Server(app)
                unix = await _bind_unix(sock)
                listeners.push_async_callback(unix.aclose)
                listeners.callback(lambda: sock.unlink(missing_ok=True))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(follower.run)
                    nursery.start_soon(
                        trio.serve_listeners,
                        lambda stream: server.serve(stream, Transport.UNIX),
                        [unix],
                    )
                    if tcp:
                        nursery.start_soon(
                            trio.serve_listeners,
                            lambda stream: server.serve(stream, Transport.TCP),
                            tcp,
                        )
                    board = None
                    if url is not None:
                        code, _ = gatekeeper.new_code()
                        board = f"{url}/#code={code}"
                    log.info("daemon_listening", tcp=url is not None)
                    token_file = home / TOKEN_NAME
                    task_status.started(
                        DaemonAddress(socket=sock, url=url, board_url=board, token_file=token_file)
                    )
    finally:
        lock.close()
