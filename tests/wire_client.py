"""A minimal async client over our sans-IO connection, for driving a relay in tests.

The real client library lives in client/; this one stays small and explicit so relay
tests can send exactly the bytes and messages they mean, including bad ones.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Literal, TypeVar

import trio

from cellrelay.protocol.wire._capability import CapabilityKey, sign_admin
from cellrelay.protocol.wire._connection import Connection, Role
from cellrelay.protocol.wire._messages import (
    Auth,
    Create,
    Created,
    Delete,
    Hello,
    MailboxId,
    Message,
    Publish,
    Rotate,
    SetLimits,
    Subscribe,
    Welcome,
)

M = TypeVar("M", bound=Message)


class WireClient:
    """One connection to a relay; messages that are not the awaited response queue up."""

    def __init__(self, stream: trio.SocketStream, conn: Connection, welcome: Welcome) -> None:
        self.stream = stream
        self.conn = conn
        self.welcome = welcome
        self.inbox: deque[Message] = deque()
        self._next_id = 0
        self.eof = False

    @classmethod
    async def connect(cls, port: int, relay_key: bytes, host: str = "127.0.0.1") -> WireClient:
        stream = await trio.open_tcp_stream(host, port)
        try:
            conn = Connection(Role.CLIENT, relay_public_key=relay_key)
            await stream.send_all(conn.send(Hello()))
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    raise EOFError("relay closed during the handshake")
                messages = conn.receive_data(data)
                if messages:
                    welcome = messages[0]
                    assert isinstance(welcome, Welcome)
                    client = cls(stream, conn, welcome)
                    client.inbox.extend(messages[1:])
                    return client
        except BaseException:
            # A refused or cancelled handshake must not leave the socket to the garbage
            # collector: its ResourceWarning fails whichever test happens to be running.
            await trio.aclose_forcefully(stream)
            raise

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, *messages: Message) -> None:
        await self.stream.send_all(self.conn.send_many(messages))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            self.conn.receive_eof()
            raise EOFError("relay closed the connection")
        self.inbox.extend(self.conn.receive_data(data))

    async def receive(self) -> Message:
        """Return the next message from the relay."""
        while not self.inbox:
            await self._fill()
        return self.inbox.popleft()

    async def receive_until_closed(self) -> list[Message]:
        """Return every message until the relay closes the connection."""
        out: list[Message] = []
        try:
            while True:
                out.append(await self.receive())
        except (EOFError, trio.BrokenResourceError):
            out.extend(self.inbox)
            self.inbox.clear()
        return out

    async def request(self, message: Message) -> Message:
        """Send a request; return the response with its id (other messages stay queued)."""
        request_id = getattr(message, "id")  # noqa: B009 - every request has one
        await self.send(message)
        skipped: list[Message] = []
        try:
            while True:
                reply = await self.receive()
                if getattr(reply, "id", None) == request_id and type(reply).__name__ not in (
                    "Ping",
                    "Pong",
                ):
                    return reply
                skipped.append(reply)
        finally:
            self.inbox.extendleft(reversed(skipped))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    # -- conveniences -------------------------------------------------------------------------

    async def create(
        self, keys: MailboxKeys, *, secret: bytes = b"", max_ttl: int = 0
    ) -> MailboxId:
        reply = await self.request(
            Create(id=self.next_id(), write_key=keys.write.public, read_key=keys.read.public,
                   admin_key=keys.admin.public, max_ttl=max_ttl, secret=secret)
        )  # fmt: skip
        assert isinstance(reply, Created), reply
        return reply.mailbox

    async def auth(
        self, key: CapabilityKey, role: Literal["read", "write"], mailbox: bytes
    ) -> Message:
        proof = key.prove(role, self.conn.handshake_hash, mailbox)
        return await self.request(
            Auth(id=self.next_id(), mailbox=MailboxId(mailbox), role=role, proof=proof)
        )

    async def publish(
        self, mailbox: bytes, envelope: bytes, *, ttl: int = 3600, expires_at: int | None = None
    ) -> Message:
        when = int(time.time()) + ttl if expires_at is None else expires_at
        return await self.request(
            Publish(
                id=self.next_id(), mailbox=MailboxId(mailbox), expires_at=when, envelope=envelope
            )
        )

    async def subscribe(self, mailbox: bytes, after: int = 0) -> Message:
        return await self.request(
            Subscribe(id=self.next_id(), mailbox=MailboxId(mailbox), after=after)
        )

    async def rotate(
        self, admin: CapabilityKey, mailbox: bytes, new: MailboxKeys, counter: int
    ) -> Message:
        message = Rotate(id=self.next_id(), mailbox=MailboxId(mailbox), write_key=new.write.public,
                         read_key=new.read.public, admin_key=new.admin.public, counter=counter, sig=bytes(64))  # fmt: skip
        return await self.request(sign_admin(admin, message, self.conn.handshake_hash))

    async def set_limits(
        self, admin: CapabilityKey, mailbox: bytes, *, max_ttl: int, max_bytes: int, counter: int
    ) -> Message:
        message = SetLimits(id=self.next_id(), mailbox=MailboxId(mailbox), max_ttl=max_ttl, max_bytes=max_bytes,
                            counter=counter, sig=bytes(64))  # fmt: skip
        return await self.request(sign_admin(admin, message, self.conn.handshake_hash))

    async def delete(self, admin: CapabilityKey, mailbox: bytes, counter: int) -> Message:
        message = Delete(
            id=self.next_id(), mailbox=MailboxId(mailbox), counter=counter, sig=bytes(64)
        )
        return await self.request(sign_admin(admin, message, self.conn.handshake_hash))


class MailboxKeys:
    """The three capability keys of a mailbox."""

    def __init__(self) -> None:
        self.write = CapabilityKey.generate()
        self.read = CapabilityKey.generate()
        self.admin = CapabilityKey.generate()
