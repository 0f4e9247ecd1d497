"""`cellrelay demo`: a relay on the embedded default store and a demonstration on loopback.

Until the group layer and client library land (issue 4), the demo shows the relay itself:
a relay process with the SQLite store in a temporary directory, a subscriber and a
publisher, each its own connection, exchanging sealed envelopes through a mailbox.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from protocol import (
    Auth,
    CapabilityKey,
    Connection,
    Create,
    Created,
    Deliver,
    Hello,
    MailboxId,
    Message,
    Publish,
    RelayAddress,
    Role,
    Subscribe,
)
from protocol._crypto import random_bytes, xchacha20poly1305_decrypt, xchacha20poly1305_encrypt

__all__ = ["run_demo"]


class _Link:
    """A bare connection for the demo; the client library will replace it."""

    def __init__(self, stream: trio.SocketStream, conn: Connection) -> None:
        self.stream, self.conn, self.inbox = stream, conn, list[Message]()

    @classmethod
    async def open(cls, address: RelayAddress) -> _Link:
        stream = await trio.open_tcp_stream(address.host, address.port)
        conn = Connection(Role.CLIENT, relay_public_key=address.public_key)
        await stream.send_all(conn.send(Hello()))
        link = cls(stream, conn)
        await link.next()  # the welcome
        return link

    async def next(self) -> Message:
        while not self.inbox:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the relay closed the connection")
            self.inbox.extend(self.conn.receive_data(data))
        return self.inbox.pop(0)

    async def ask(self, message: Message) -> Message:
        await self.stream.send_all(self.conn.send(message))
        return await self.next()


async def _demo(address: RelayAddress) -> None:
    write, read, admin = (
        CapabilityKey.generate(),
        CapabilityKey.generate(),
        CapabilityKey.generate(),
    )
    lead = await _Link.open(address)
    created = await lead.ask(
        Create(
            id=1, write_key=write.public, read_key=read.public, admin_key=admin.public, secret=b""
        )
    )
    if not isinstance(created, Created):
        raise TypeError(f"the relay refused to create a mailbox: {created}")
    mailbox = MailboxId(created.mailbox)
    print(f"lead: created a mailbox; the relay knows it only as {len(mailbox)} random bytes")
    member = await _Link.open(address)
    proof = read.prove("read", member.conn.handshake_hash, mailbox)
    await member.ask(Auth(id=1, mailbox=mailbox, role="read", proof=proof))
    await member.ask(Subscribe(id=2, mailbox=mailbox, after=0))
    print("member: proved the read key and subscribed")
    await lead.ask(
        Auth(
            id=2,
            mailbox=mailbox,
            role="write",
            proof=write.prove("write", lead.conn.handshake_hash, mailbox),
        )
    )
    shared = random_bytes(32)  # stands in for the cell's group key until issue 4 lands
    text = b"ALERT: agents at 14th & Main, responders needed (demo)"
    nonce = random_bytes(24)
    envelope = nonce + xchacha20poly1305_encrypt(shared, nonce, b"", text)
    sent = time.perf_counter()
    published = await lead.ask(
        Publish(id=3, mailbox=mailbox, expires_at=int(time.time()) + 600, envelope=envelope)
    )
    print(f"lead: published a {len(envelope)}-byte sealed envelope -> {type(published).__name__}")
    delivered = await member.next()
    if not isinstance(delivered, Deliver):
        raise TypeError(f"expected a delivery, got {type(delivered).__name__}")
    elapsed = (time.perf_counter() - sent) * 1000
    plain = xchacha20poly1305_decrypt(shared, delivered.envelope[:24], b"", delivered.envelope[24:])
    print(
        f"member: received seq {delivered.seq} in {elapsed:.1f} ms and opened it: {plain.decode()}"
    )
    for link in (lead, member):
        await trio.aclose_forcefully(link.stream)


def run_demo(argv: list[str]) -> int:
    """Start a relay in a temporary directory, run the demonstration, stop the relay."""
    with tempfile.TemporaryDirectory(prefix="cellrelay-demo-") as tmp:
        base = [sys.executable, "-P", "-m", "relay"]  # -P: see client/_cli.py
        common = ["--data-dir", tmp, "--listen", "127.0.0.1:0", "--ops-listen", ""]
        subprocess.run([*base, "init", *common], check=True, capture_output=True)  # noqa: S603
        relay = subprocess.Popen(  # noqa: S603
            [*base, "serve", *common, "--log-format", "console", "--log-level", "warning"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = relay.stdout.readline().strip() if relay.stdout is not None else ""
            if not line:
                print("cellrelay demo: the relay did not start", file=sys.stderr)
                return 1
            address = RelayAddress.parse(line)
            print(f"relay: listening at {address} (SQLite store in {Path(tmp)})")
            trio.run(_demo, address)
        finally:
            relay.terminate()
            relay.wait(timeout=10)
        print(
            "relay: stopped cleanly"
            if relay.returncode == 0
            else f"relay: exit status {relay.returncode}"
        )
    return 0
