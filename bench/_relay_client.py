"""A small load client for the relay: `protocol.Connection` over a plain socket.

The benchmarks run hundreds or thousands of connections per client process on a machine
whose two cores the relay also needs, so the client must cost as little as Python allows:
no Trio, no task per connection, just the sans-IO connection over a socket. Setup (the
handshake, `auth`, `subscribe`) is blocking with a timeout, one connection at a time;
afterwards the socket is non-blocking and a `selectors` loop in the caller calls `read`
when it is readable. Pings from the relay are answered with a pong inside `read`, so a
connection survives runs longer than the relay's ping interval.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import msgpack

from cellrelay.protocol.wire._capability import CapabilityKey
from cellrelay.protocol.wire._codec import encode_message
from cellrelay.protocol.wire._connection import Connection, EncodedMessage, Role
from cellrelay.protocol.wire._messages import (
    Auth,
    Create,
    Created,
    Hello,
    MailboxId,
    Message,
    Ok,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Subscribed,
    Welcome,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

RECEIVE_SIZE: Final = 1 << 18  # one read takes several coalesced 64 KiB frames at once
SETUP_TIMEOUT: Final = 30.0  # seconds for one setup step, generous for a loaded machine
TTL: Final = 3600  # seconds; nothing expires during a benchmark
_pack: Final = msgpack.Packer(use_bin_type=True).pack  # one per process: single-threaded


class RefusedError(Exception):
    """The relay answered a setup request with something other than success."""


M = TypeVar("M", bound=Message)


def expect(reply: Message, kind: type[M]) -> M:
    """Return `reply` if it is a `kind`; raise `RefusedError` naming what came instead."""
    if isinstance(reply, kind):
        return reply
    raise RefusedError(f"expected {kind.__name__}, got {reply!r}")


class MailboxKeys:
    """The three capability keys of a mailbox, made by the client that creates it."""

    def __init__(self) -> None:
        """Generate fresh keys."""
        self.write = CapabilityKey.generate()
        self.read = CapabilityKey.generate()
        self.admin = CapabilityKey.generate()


class RelayLoadClient:
    """One connection to a relay; see the module docstring."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        """Wrap a connected socket whose handshake `conn` has finished."""
        self.sock = sock
        self.conn = conn
        self.out = bytearray()  # encrypted bytes the socket has not taken yet
        self.inbox: list[Message] = []  # messages read during setup but not yet claimed
        self._next_id = 0
        self._publish_checked = False

    @classmethod
    def connect(cls, port: int, relay_key: bytes, host: str = "127.0.0.1") -> RelayLoadClient:
        """Connect and run the Noise handshake (blocking)."""
        sock = socket.create_connection((host, port), timeout=SETUP_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(Role.CLIENT, relay_public_key=relay_key)
        sock.sendall(conn.send(Hello()))
        client = cls(sock, conn)
        expect(client._receive_blocking(), Welcome)
        return client

    def next_id(self) -> int:
        """Return a fresh request id."""
        self._next_id = (self._next_id % 0xFFFFFFFF) + 1
        return self._next_id

    # -- blocking setup -------------------------------------------------------------------

    def _receive_blocking(self) -> Message:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while not self.inbox:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(RECEIVE_SIZE)
            if not data:
                raise EOFError("the relay closed the connection during setup")
            for message in self.conn.receive_data(data):
                if isinstance(message, Ping):
                    self.sock.sendall(self.conn.send(Pong(id=message.id)))
                else:
                    self.inbox.append(message)
        return self.inbox.pop(0)

    def request(self, *messages: Message) -> list[Message]:
        """Send requests in one frame and return their responses, in order (blocking)."""
        self.sock.settimeout(SETUP_TIMEOUT)
        self.sock.sendall(self.conn.send_many(messages))
        wanted = [getattr(m, "id") for m in messages]  # noqa: B009 - every request has one
        replies: list[Message] = []
        while len(replies) < len(wanted):
            reply = self._receive_blocking()
            if getattr(reply, "id", None) != wanted[len(replies)]:
                raise RuntimeError(f"unexpected {type(reply).__name__} during setup")
            replies.append(reply)
        return replies

    def create_mailbox(self, keys: MailboxKeys) -> MailboxId:
        """Create a mailbox guarded by `keys`; return its id."""
        (reply,) = self.request(
            Create(
                id=self.next_id(),
                write_key=keys.write.public,
                read_key=keys.read.public,
                admin_key=keys.admin.public,
                secret=b"",
            )
        )
        return expect(reply, Created).mailbox

    def auth_message(
        self, key: CapabilityKey, role: Literal["read", "write"], mailbox: MailboxId
    ) -> Auth:
        """Return the `Auth` that proves `key` on this connection."""
        proof = key.prove(role, self.conn.handshake_hash, mailbox)
        return Auth(id=self.next_id(), mailbox=mailbox, role=role, proof=proof)

    def authorise(
        self, key: CapabilityKey, role: Literal["read", "write"], mailbox: MailboxId
    ) -> None:
        """Prove the `role` capability of `mailbox` (blocking)."""
        (reply,) = self.request(self.auth_message(key, role, mailbox))
        expect(reply, Ok)

    def authorise_and_subscribe(self, read_key: CapabilityKey, mailbox: MailboxId) -> None:
        """Prove the read capability and subscribe, both requests in one frame (blocking)."""
        auth = self.auth_message(read_key, "read", mailbox)
        ok, subscribed = self.request(auth, Subscribe(id=self.next_id(), mailbox=mailbox))
        expect(ok, Ok)
        expect(subscribed, Subscribed)

    def go_non_blocking(self) -> None:
        """Switch the socket to non-blocking use by a selector loop."""
        self.sock.setblocking(False)

    # -- non-blocking use -----------------------------------------------------------------

    def publish_messages(self, mailbox: MailboxId, envelopes: Sequence[bytes]) -> list[int]:
        """Queue one `publish` per envelope, all in one frame; return their request ids.

        The messages are packed directly instead of built as `Publish` objects (which
        validate every field) and encoded field by field: the load generator shares the
        two cores with the relay, and that took about 7 µs of its CPU per publish. The
        Redis client sends pre-built commands for the same reason. The first message of
        each connection is checked against `encode_message`, so the bytes are the same.
        """
        expires_at = int(time.time()) + TTL
        ids: list[int] = []
        encoded: list[EncodedMessage] = []
        for envelope in envelopes:
            request_id = self.next_id()
            ids.append(request_id)
            data = _pack(
                {
                    "t": "publish",
                    "id": request_id,
                    "mailbox": mailbox,
                    "expires_at": expires_at,
                    "envelope": envelope,
                }
            )
            if not self._publish_checked:
                reference = Publish(
                    id=request_id, mailbox=mailbox, expires_at=expires_at, envelope=envelope
                )
                if data != encode_message(reference):
                    raise AssertionError("the packed publish differs from encode_message's")
                self._publish_checked = True
            encoded.append(EncodedMessage(Publish, data))
        self.out += self.conn.send_encoded(encoded)
        return ids

    def flush(self) -> bool:
        """Write what the socket takes now; return True when nothing is left."""
        if self.out:
            try:
                sent = os.write(self.sock.fileno(), self.out)
            except BlockingIOError:
                return False
            del self.out[:sent]
        return not self.out

    def read(self) -> list[Message]:
        """Read what is available now; answer pings; return the other messages.

        Raises:
            EOFError: the relay closed the connection.
        """
        messages = self.inbox
        self.inbox = []
        while True:
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                break
            if not data:
                raise EOFError("the relay closed the connection")
            messages.extend(self.feed(data))
            if len(data) < RECEIVE_SIZE:
                break
        return messages

    def feed(self, data: bytes) -> list[Message]:
        """Decrypt and decode bytes read from the socket; answer pings; return the rest."""
        messages = self.conn.receive_data(data)
        pings = [m for m in messages if isinstance(m, Ping)]
        if not pings:
            return messages
        self.out += self.conn.send_many([Pong(id=ping.id) for ping in pings])
        self.flush()
        return [m for m in messages if not isinstance(m, Ping)]

    def close(self) -> None:
        """Close the socket without a goodbye (the relay treats it as a lost connection)."""
        self.sock.close()
