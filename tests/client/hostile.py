"""Adversaries for cell tests: a relay that tampers with deliveries, a recording proxy, a
keystore reader that needs only the passphrase.

* `HostileRelay` turns an in-process relay hostile. It wraps `Session.send`, the one
  place every delivery leaves the relay (live fan-out and backlog alike), and rewrites
  the deliveries of chosen mailboxes: flip bytes, cut them short, withhold them, swap
  two of them, or drop a publish's acknowledgement and cut the publisher's connection.
  Each tampering is armed for "the next envelope of this mailbox" and then applies by
  seq, so every connection sees the same tampered stream (or only the connections of
  the clients named by `only`). It also keeps every genuine envelope it saw, by seq.
  `insert` puts arbitrary bytes under a new seq: a relay is its own store and can do
  that at will; here it goes through the hub's ordinary publish path with the mailbox's
  write key (taken from a member's state), because then the hub fans it out to live
  subscribers exactly as it would a stored envelope.
* `RecordingProxy` forwards TCP between clients and a relay on loopback and keeps every
  byte in both directions.
* `read_keystore` decrypts a keystore file with its passphrase without taking its lock,
  so a test can look at what a running client has on disk.
* `Emitted` (fixture `emitted` in the test modules) records every event any cell hands
  its app, by wrapping `Cell._emit`, the one door all events go through; unlike an
  `events()` iterator it also sees what a client emits while it starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import AlertReceived, CellEvent, MessageReceived
from cellrelay.client._keystore import read_payload
from cellrelay.client._state import ClientState
from cellrelay.protocol.wire._capability import CapabilityKey
from cellrelay.protocol.wire._codec import decode_single
from cellrelay.protocol.wire._connection import EncodedMessage
from cellrelay.protocol.wire._messages import Deliver, Published
from cellrelay.relay._session import Session

from ..wire_client import WireClient

if TYPE_CHECKING:
    from cellrelay.client._link import RelayLink

    from ..relay.conftest import RunningRelay

__all__ = [
    "Emitted",
    "HostileRelay",
    "RecordingProxy",
    "client_port",
    "flip",
    "keystore_payload",
    "read_keystore",
    "until",
]

Transform = Callable[[bytes], bytes]


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait, polling, until `condition()` is true (TooSlowError after `timeout` seconds)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def flip(offset: int) -> Transform:
    """Return a transform that flips the lowest bit of the byte at `offset`."""

    def transform(envelope: bytes) -> bytes:
        data = bytearray(envelope)
        data[offset] ^= 0x01
        return bytes(data)

    return transform


def client_port(link: RelayLink) -> int:
    """The local TCP port of a link's current connection (how the relay tells clients apart)."""
    stream = link._stream
    assert stream is not None, "the link is not connected"
    port = stream.socket.getsockname()[1]
    assert isinstance(port, int)
    return port


def _peer_port(session: Session) -> int:
    """The client's port as the relay sees it (-1 once the socket is gone)."""
    try:
        port = session._socket.getpeername()[1]
    except OSError:
        return -1
    assert isinstance(port, int)
    return port


@dataclass
class _Plan:
    """What the relay does to one mailbox's deliveries."""

    armed: list[tuple[str, Transform | None]] = field(default_factory=list)
    by_seq: dict[int, tuple[str, Transform | None]] = field(default_factory=dict)
    only: set[int] | None = None  # client ports the tampering applies to; None: everyone
    genuine: dict[int, bytes] = field(default_factory=dict)
    held: dict[Session, Deliver] = field(default_factory=dict)


class HostileRelay:
    """An in-process relay that tampers with what it delivers (see the module docstring)."""

    def __init__(self, relay: RunningRelay, monkeypatch: pytest.MonkeyPatch) -> None:
        """Take over `relay`'s delivery path for the rest of the test."""
        self.relay = relay
        self._plans: dict[bytes, _Plan] = {}
        self._lose_ack_of: int | None = None  # client port whose next Published is lost
        self.acks_lost = 0
        original = Session.send

        def send(session: Session, messages: list[EncodedMessage]) -> None:
            original(session, list(self._rewrite(session, messages)))

        monkeypatch.setattr(Session, "send", send)

    # -- arming ---------------------------------------------------------------------------

    def watch(self, mailbox: bytes) -> None:
        """Keep the genuine envelopes of `mailbox` from now on (arming does it too)."""
        self.plan(mailbox)

    def plan(self, mailbox: bytes) -> _Plan:
        """The plan of one mailbox (created on first use)."""
        return self._plans.setdefault(bytes(mailbox), _Plan())

    def tamper_next(self, mailbox: bytes, name: str, transform: Transform | None) -> None:
        """Apply `transform` to the next new envelope of `mailbox` (None: withhold it)."""
        self.plan(mailbox).armed.append((name, transform))

    def mark_next(self, mailbox: bytes, name: str) -> None:
        """Deliver the next new envelope of `mailbox` unchanged, but note its seq as `name`."""
        self.plan(mailbox).armed.append((name, bytes))

    def swap_next_two(self, mailbox: bytes) -> None:
        """Deliver the next two new envelopes of `mailbox` under each other's seq."""
        self.plan(mailbox).armed.append(("swap", None))
        self.plan(mailbox).armed.append(("swap-second", None))

    def only(self, mailbox: bytes, ports: set[int] | None) -> None:
        """Tamper only on the connections of these client ports (None: on all)."""
        self.plan(mailbox).only = ports

    def lose_next_ack(self, port: int) -> None:
        """Drop the next `published` for this client port and cut its connection."""
        self._lose_ack_of = port

    def tampered(self, mailbox: bytes) -> list[tuple[int, str]]:
        """(seq, name) of every tampering applied so far to `mailbox`, by seq."""
        return [(seq, name) for seq, (name, _) in sorted(self.plan(mailbox).by_seq.items())]

    def genuine(self, mailbox: bytes) -> dict[int, bytes]:
        """Every envelope of `mailbox` the relay delivered, as stored (before any tampering), by seq."""
        return dict(self.plan(mailbox).genuine)

    # -- the relay's own insertions --------------------------------------------------------

    async def insert(self, cell: Cell, envelope: bytes, *, ttl: int = 3600) -> int:
        """Store `envelope` under a new seq of the cell's group mailbox; return the seq."""
        return await self.insert_into(
            cell.record.group_mailbox, cell.crypto.group_keys[1], envelope, ttl=ttl
        )

    async def insert_into(
        self, mailbox: bytes, write_seed: bytes, envelope: bytes, *, ttl: int = 3600
    ) -> int:
        """Store `envelope` under a new seq of `mailbox` (whose write key seed is given)."""
        client = await WireClient.connect(self.relay.port, self.relay.public_key)
        try:
            await client.auth(CapabilityKey.from_seed(write_seed), "write", mailbox)
            reply = await client.publish(mailbox, envelope, ttl=ttl)
        finally:
            await client.aclose()
        assert isinstance(reply, Published), reply
        return reply.seq

    # -- the delivery path -----------------------------------------------------------------

    def _rewrite(
        self, session: Session, messages: list[EncodedMessage]
    ) -> Iterator[EncodedMessage]:
        for message in messages:
            if message.message_type is Published and self._loses_ack(session):
                # The publish is committed; its acknowledgement never arrives, and the
                # connection dies: the client must publish again on a new connection.
                self._lose_ack_of = None
                self.acks_lost += 1
                session.abort()
                return
            if message.message_type is not Deliver:
                yield message
                continue
            deliver = decode_single(message.data)
            assert isinstance(deliver, Deliver)
            plan = self._plans.get(bytes(deliver.mailbox))
            if plan is None:
                yield message
                continue
            yield from self._tamper(plan, session, deliver)

    def _loses_ack(self, session: Session) -> bool:
        return self._lose_ack_of is not None and _peer_port(session) == self._lose_ack_of

    def _tamper(self, plan: _Plan, session: Session, deliver: Deliver) -> Iterator[EncodedMessage]:
        seq = deliver.seq
        if seq not in plan.genuine:  # first sight of this seq: it gets the next armed action
            plan.genuine[seq] = deliver.envelope
            if plan.armed:
                plan.by_seq[seq] = plan.armed.pop(0)
        action = plan.by_seq.get(seq)
        if action is None or (plan.only is not None and _peer_port(session) not in plan.only):
            yield EncodedMessage.of(deliver)
            return
        name, transform = action
        if name == "swap":
            plan.held[session] = deliver  # until the next one comes
            return
        if name == "swap-second":
            first = plan.held.pop(session, None)
            if first is None:
                yield EncodedMessage.of(deliver)
                return
            yield EncodedMessage.of(dataclasses.replace(first, envelope=deliver.envelope))
            yield EncodedMessage.of(dataclasses.replace(deliver, envelope=first.envelope))
            return
        if transform is None:
            return  # withheld: this connection never gets it
        yield EncodedMessage.of(dataclasses.replace(deliver, envelope=transform(deliver.envelope)))


class RecordingProxy:
    """A TCP proxy on 127.0.0.1 that keeps every byte it forwards, in both directions."""

    def __init__(self, target_port: int) -> None:
        """Forward to 127.0.0.1:`target_port`; `serve` listens."""
        self.target_port = target_port
        self.upstream = bytearray()  # client -> relay
        self.downstream = bytearray()  # relay -> client
        self.connections = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port (reported to `task_status`) and forward until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            task_status.started(port)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        try:
            relay = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        async with client, relay, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, relay, self.upstream, nursery.cancel_scope)
            nursery.start_soon(self._pump, relay, client, self.downstream, nursery.cancel_scope)

    @staticmethod
    async def _pump(
        source: trio.SocketStream,
        sink: trio.SocketStream,
        record: bytearray,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while data := await source.receive_some(65_536):
                record += data
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side ended: end the other


def keystore_payload(path: Path, passphrase: str) -> bytes:
    """Decrypt a keystore's payload (client/_keystore.py's layout) without taking its lock."""
    return read_payload(path, passphrase)


def read_keystore(path: Path, passphrase: str) -> ClientState:
    """The client state in a keystore file, decrypted with its passphrase (no lock taken)."""
    return ClientState.decode(keystore_payload(path, passphrase))


class Emitted:
    """Every event any cell in this process hands its app, with the receiving member's name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap `Cell._emit` for the rest of the test."""
        self.events: list[tuple[str, CellEvent]] = []
        original = Cell._emit

        def emit(cell: Cell, event: CellEvent) -> None:
            self.events.append((cell.me.name, event))
            original(cell, event)

        monkeypatch.setattr(Cell, "_emit", emit)

    def of(self, member: str) -> list[CellEvent]:
        """The events `member`'s app was handed, in order."""
        return [event for name, event in self.events if name == member]

    def alerts(self, member: str) -> list[str]:
        """The texts of the alerts `member`'s app was handed, in order."""
        return [e.alert.text for e in self.of(member) if isinstance(e, AlertReceived)]

    def messages(self, member: str) -> list[str]:
        """The texts of the plain messages `member`'s app was handed, in order."""
        return [e.message.text for e in self.of(member) if isinstance(e, MessageReceived)]
