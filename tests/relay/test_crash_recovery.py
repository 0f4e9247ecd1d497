"""A relay process killed (SIGKILL) or stopped (SIGTERM) mid-stream loses nothing it acknowledged.

The relay runs as a real subprocess (`python -m cellrelay.relay serve`) on a SQLite file with the
default durability. A publisher streams pipelined publishes; once a few hundred have
been acknowledged the test signals the relay while more are in flight, restarts it on the
same data directory and subscribes from cursor 0.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from cellrelay.protocol._errors import CellrelayError, ErrorCode
from cellrelay.protocol.wire._messages import (
    Deliver,
    Error,
    Goodbye,
    MailboxId,
    Ok,
    Publish,
    Published,
    Subscribed,
)

from ..wire_client import MailboxKeys, WireClient
from .conftest import PATIENCE
from .process import RelayProcess, open_relay_process

# Publishes acknowledged before the signal: enough for many group commits.
ACKED_BEFORE_SIGNAL = 300
BURST = 10
# Publishes sent but not yet answered, at most: keeps the stream "in flight" but bounded.
WINDOW = 400
# Lift the rate limits: this test is about durability, not about being throttled.
UNTHROTTLED = {
    "publish_rate": 1_000_000,
    "publish_burst": 1_000_000,
    "mailbox_publish_rate": 1_000_000,
    "mailbox_publish_burst": 1_000_000,
}


@dataclass
class PublishStream:
    """What one publisher sent and what the relay answered."""

    sent: dict[int, bytes] = field(default_factory=dict)  # request id -> envelope
    acked: dict[int, bytes] = field(default_factory=dict)  # seq -> envelope
    refused: list[int] = field(default_factory=list)  # error codes
    goodbye: Goodbye | None = None
    answered: int = 0
    enough: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)

    @property
    def in_flight(self) -> int:
        return len(self.sent) - self.answered


async def _receive_answers(client: WireClient, stream: PublishStream) -> None:
    try:
        while True:
            message = await client.receive()
            if isinstance(message, Published):
                stream.acked[message.seq] = stream.sent[message.id]
                stream.answered += 1
            elif isinstance(message, Error):
                stream.refused.append(message.code)
                stream.answered += 1
            elif isinstance(message, Goodbye):
                stream.goodbye = message
            if len(stream.acked) >= ACKED_BEFORE_SIGNAL:
                stream.enough.set()
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, CellrelayError):
        pass
    finally:
        stream.ended.set()


async def _send_publishes(client: WireClient, mailbox: bytes, stream: PublishStream) -> None:
    expires_at = int(time.time()) + 3600
    try:
        while not stream.ended.is_set():
            if stream.in_flight >= WINDOW:
                await trio.sleep(0.001)
                continue
            burst = []
            for _ in range(BURST):
                request_id = client.next_id()
                envelope = f"publish {request_id:06d} ".encode() + os.urandom(24)
                stream.sent[request_id] = envelope
                burst.append(
                    Publish(id=request_id, mailbox=MailboxId(mailbox),
                            expires_at=expires_at, envelope=envelope)
                )  # fmt: skip
            await client.send(*burst)
            await trio.sleep(0.001)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, CellrelayError):
        pass  # the relay is gone, or the receiver found the stream cut mid-frame


async def _start_stream(
    nursery: trio.Nursery, relay: RelayProcess
) -> tuple[MailboxKeys, bytes, PublishStream]:
    """Connect a publisher, create a mailbox and start streaming publishes into it."""
    publisher = await WireClient.connect(relay.port, relay.public_key)
    stream = PublishStream()
    nursery.start_soon(_close_when_done, publisher, stream)  # closed whatever happens
    keys = MailboxKeys()
    mailbox = await publisher.create(keys)
    assert isinstance(await publisher.auth(keys.write, "write", mailbox), Ok)
    nursery.start_soon(_receive_answers, publisher, stream)
    nursery.start_soon(_send_publishes, publisher, mailbox, stream)
    return keys, mailbox, stream


async def _close_when_done(client: WireClient, stream: PublishStream) -> None:
    try:
        await stream.ended.wait()
    finally:
        await client.aclose()


async def _read_everything(relay: RelayProcess, keys: MailboxKeys, mailbox: bytes) -> list[Deliver]:
    """Subscribe from cursor 0 to the restarted relay; return every delivery up to its head."""
    reader = await WireClient.connect(relay.port, relay.public_key)
    try:
        assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
        subscribed = await reader.subscribe(mailbox, after=0)
        assert isinstance(subscribed, Subscribed)
        got: list[Deliver] = []
        while len(got) < subscribed.head:
            message = await reader.receive()
            if isinstance(message, Deliver):
                got.append(message)
        return got
    finally:
        await reader.aclose()


def _check_nothing_acknowledged_was_lost(stream: PublishStream, got: list[Deliver]) -> None:
    delivered = {d.seq: d.envelope for d in got}
    assert [d.seq for d in got] == list(range(1, len(got) + 1)), "seqs have a gap or repeat"
    lost = [seq for seq in stream.acked if delivered.get(seq) != stream.acked[seq]]
    assert not lost, f"{len(lost)} acknowledged envelopes lost or changed, first seq {lost[0]}"
    # Whatever survived beyond the acknowledged ones was really sent (committed, not yet acked).
    assert set(delivered.values()) <= set(stream.sent.values())


async def test_sigkill_mid_stream_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    """SIGKILL while publishes stream in: every envelope acknowledged before is there after restart.

    Catches acknowledging before the commit is durable (an ack sent ahead of fsync, a batch
    acknowledged before its transaction ends) and a restart that loses or renumbers data.
    """
    data_dir = tmp_path / "relay"
    with trio.fail_after(3 * PATIENCE):
        async with (
            open_relay_process(data_dir, **UNTHROTTLED) as relay,
            trio.open_nursery() as nursery,
        ):
            keys, mailbox, stream = await _start_stream(nursery, relay)
            await stream.enough.wait()
            in_flight = stream.in_flight
            assert await relay.kill() == -9
            await stream.ended.wait()
        assert len(stream.acked) >= ACKED_BEFORE_SIGNAL
        async with open_relay_process(data_dir) as restarted:
            got = await _read_everything(restarted, keys, mailbox)
    _check_nothing_acknowledged_was_lost(stream, got)
    print(f"acked {len(stream.acked)}, in flight at the kill {in_flight}, stored {len(got)}")


async def test_sigterm_drains_in_flight_publishes_and_exits_zero(tmp_path: Path) -> None:
    """SIGTERM while publishes stream in: exit status 0, and every acknowledged publish survives.

    Catches a shutdown that drops queued publishes after acknowledging them, exits non-zero
    or hangs, or skips the goodbye; and publishes answered with anything but `published`
    or `SHUTTING_DOWN`.
    """
    data_dir = tmp_path / "relay"
    with trio.fail_after(3 * PATIENCE):
        async with (
            open_relay_process(data_dir, **UNTHROTTLED) as relay,
            trio.open_nursery() as nursery,
        ):
            keys, mailbox, stream = await _start_stream(nursery, relay)
            await stream.enough.wait()
            assert await relay.terminate() == 0
            await stream.ended.wait()
            events = [e["event"] for e in relay.log_events()]
        assert "relay_stopped" in events
        assert "store_closed" in events
        assert set(stream.refused) <= {ErrorCode.SHUTTING_DOWN}
        if stream.goodbye is not None:  # a reset may overtake it while we are still sending
            assert stream.goodbye.code == ErrorCode.SHUTTING_DOWN
        async with open_relay_process(data_dir) as restarted:
            got = await _read_everything(restarted, keys, mailbox)
    _check_nothing_acknowledged_was_lost(stream, got)
    print(
        f"acked {len(stream.acked)}, refused {len(stream.refused)}, stored {len(got)},"
        f" goodbye {stream.goodbye}"
    )
