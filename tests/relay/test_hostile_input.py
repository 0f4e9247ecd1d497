"""Malformed, oversized and stalled input ends that connection, never the relay or anyone else's.

After the handshake a bad frame or message gets `goodbye` with its error code, then the
stream ends (docs/protocol.md §7, "goodbye"); before it, the relay closes without a word.
In every case a bystander connection, subscribed before the attack, keeps being served.
Malformed messages are sent with the independent client (noiseprotocol + msgpack), which
will encrypt bytes our own encoder refuses to produce.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import msgpack
import pytest
import trio
from structlog.testing import capture_logs

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._connection import (
    EncodedMessage,
    HandshakeRefusedError,
    refusal_frame,
)
from cellrelay.protocol.wire._messages import Fetch, MailboxId, Ok, Ping, Published, Subscribed
from cellrelay.relay._hub import Hub

from ..wire_client import MailboxKeys, WireClient
from .conftest import (
    PATIENCE,
    IndependentWire,
    RelayFactory,
    RunningRelay,
    assert_quiet,
    connect_raw_socket,
    handshake,
    read_until_closed,
    receive_deliveries,
)

MAILBOX = b"\x01" * 16


def _pack(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\x00"  # fixarray of one element, `depth` times, around 0


# (name, plaintext of one transport frame, expected goodbye code)
BAD_MESSAGES: list[tuple[str, bytes, ErrorCode]] = [
    ("not msgpack", b"\xc1", ErrorCode.MALFORMED),
    ("cut off inside the frame", _pack({"t": "ping", "id": 7})[:-1], ErrorCode.MALFORMED),
    ("not a map", _pack([1, 2, 3]), ErrorCode.WRONG_TYPE),  # type: ignore[arg-type]
    ("unknown type", _pack({"t": "launch", "id": 1}), ErrorCode.UNKNOWN_TYPE),
    ("missing field", _pack({"t": "ping"}), ErrorCode.MISSING_FIELD),
    ("extra field", _pack({"t": "ping", "id": 1, "x": 0}), ErrorCode.EXTRA_FIELD),
    ("wrong type", _pack({"t": "ping", "id": "1"}), ErrorCode.WRONG_TYPE),
    ("bool for uint", _pack({"t": "ping", "id": True}), ErrorCode.WRONG_TYPE),
    ("out of range", _pack({"t": "ping", "id": 2**32}), ErrorCode.OUT_OF_RANGE),
    (
        "oversized envelope",
        _pack(
            {
                "t": "publish",
                "id": 1,
                "mailbox": MAILBOX,
                "expires_at": 2**40,
                "envelope": b"\x00" * 60_001,
            }
        ),
        ErrorCode.TOO_LARGE,
    ),
    (
        "short mailbox id",
        _pack({"t": "unsubscribe", "id": 1, "mailbox": b"\x01" * 15}),
        ErrorCode.OUT_OF_RANGE,
    ),
    ("extension type", b"\x82\xa1t\xa4ping\xa2id\xd4\x01\x00", ErrorCode.EXTENSION_TYPE),
    ("duplicate key", b"\x83\xa1t\xa4ping\xa2id\x01\xa2id\x02", ErrorCode.DUPLICATE_FIELD),
    ("too deep", b"\x82\xa1t\xa4ping\xa2id" + _nested(2000), ErrorCode.TOO_DEEP),
    (
        "relay-only message",
        _pack(
            {
                "t": "deliver",
                "mailbox": MAILBOX,
                "seq": 1,
                "expires_at": 2**40,
                "envelope": b"forged",
            }
        ),
        ErrorCode.UNEXPECTED_MESSAGE,
    ),
    ("hello again", _pack({"t": "hello", "v": 1}), ErrorCode.UNEXPECTED_MESSAGE),
    ("valid then garbage", _pack({"t": "ping", "id": 1}) + b"\xc1", ErrorCode.MALFORMED),
]


async def _bystander(running: RunningRelay) -> tuple[WireClient, WireClient, bytes]:
    """A writer and a subscribed reader on one mailbox: the clients that must keep working."""
    writer = await running.connect()
    keys = MailboxKeys()
    mailbox = await writer.create(keys)
    assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
    reader = await running.connect()
    assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
    assert isinstance(await reader.subscribe(mailbox), Subscribed)
    return writer, reader, mailbox


async def _still_served(running: RunningRelay, writer: WireClient, reader: WireClient,
                        mailbox: bytes) -> None:  # fmt: skip
    """The bystanders can publish and receive, and a new client can connect."""
    envelope = secrets.token_bytes(32)
    assert isinstance(await writer.publish(mailbox, envelope), Published)
    (delivered,) = await receive_deliveries(reader, 1)
    assert delivered.envelope == envelope
    await assert_quiet(await running.connect())


@pytest.mark.parametrize(
    ("plaintext", "code"), [(p, c) for _, p, c in BAD_MESSAGES], ids=[n for n, _, _ in BAD_MESSAGES]
)
async def test_malformed_message_ends_only_that_connection_with_its_code(
    relays: RelayFactory, plaintext: bytes, code: ErrorCode
) -> None:
    """A bad message after the handshake: `goodbye` with the code, then end of stream; others go on.

    Catches a relay that ignores bad input (stays open), closes without telling the
    client why, sends the wrong code, or lets the failure reach other connections.
    """
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        writer, reader, mailbox = await _bystander(running)
        attacker = await IndependentWire.connect(running.port, running.public_key)
        await attacker.send_plaintext(plaintext)
        messages = await attacker.read_until_closed()
        await attacker.aclose()
        goodbyes = [m for m in messages if m["t"] == "goodbye"]
        assert goodbyes == [{"t": "goodbye", "code": code}], messages
        assert messages[-1]["t"] == "goodbye"
        await _still_served(running, writer, reader, mailbox)
    assert running.rejections(code.name.lower()) == 1


# Frames that are wrong below the message layer: (name, raw bytes after the handshake, code).
def _bad_frames(wire: IndependentWire) -> dict[str, tuple[bytes, ErrorCode]]:
    good = wire.client.noise.encrypt(_pack({"t": "ping", "id": 1}))
    tampered = bytes([good[0] ^ 1]) + good[1:]
    return {
        "zero-length frame": (b"\x00\x00", ErrorCode.BAD_FRAME),
        "frame shorter than a tag": (b"\x00\x05" + b"\x00" * 5, ErrorCode.BAD_FRAME),
        "empty plaintext": (wire.client.frame(wire.client.noise.encrypt(b"")), ErrorCode.BAD_FRAME),
        "tampered ciphertext": (wire.client.frame(tampered), ErrorCode.DECRYPT_FAILED),
        "maximum-size garbage frame": (b"\xff\xff" + os.urandom(65_535), ErrorCode.DECRYPT_FAILED),
    }


@pytest.mark.parametrize(
    "case",
    ["zero-length frame", "frame shorter than a tag", "empty plaintext", "tampered ciphertext",
     "maximum-size garbage frame"],
)  # fmt: skip
async def test_bad_frame_ends_only_that_connection_with_its_code(
    relays: RelayFactory, case: str
) -> None:
    """A frame that cannot be a transport frame (or fails to authenticate) gets `goodbye` with its code."""
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        writer, reader, mailbox = await _bystander(running)
        attacker = await IndependentWire.connect(running.port, running.public_key)
        data, code = _bad_frames(attacker)[case]
        await attacker.stream.send_all(data)
        messages = await attacker.read_until_closed()
        await attacker.aclose()
        assert messages == [{"t": "goodbye", "code": code}]
        await _still_served(running, writer, reader, mailbox)
    assert running.rejections(code.name.lower()) == 1


async def _all_until_closed(stream: trio.SocketStream) -> bytes:
    """Every byte the relay sends until it closes the stream."""
    received = bytearray()
    try:
        while data := await stream.receive_some(65_536):
            received += data
    except trio.BrokenResourceError:
        pass
    await stream.aclose()
    return bytes(received)


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"\x00\x00", ErrorCode.BAD_FRAME),  # a zero-length frame
        (b"\x00\x40" + bytes(64), ErrorCode.HANDSHAKE_FAILED),  # zeros (a low-order key)
        (b"\x00\x30" + os.urandom(48), ErrorCode.BAD_FRAME),  # shorter than any message 1
        (b"\x00\x80" + os.urandom(128), ErrorCode.HANDSHAKE_FAILED),  # random bytes
    ],
    ids=["zero-length", "zeros", "too-short", "random"],
)
async def test_garbage_before_the_handshake_is_refused_and_closed(
    relays: RelayFactory, garbage: bytes, code: ErrorCode
) -> None:
    """Garbage instead of handshake message 1: a refusal with its code (§3.2), then the close."""
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        writer, reader, mailbox = await _bystander(running)
        stream = await connect_raw_socket(running.port)
        await stream.send_all(garbage)
        assert await _all_until_closed(stream) == refusal_frame(code)
        await _still_served(running, writer, reader, mailbox)
    assert running.relay.metrics.handshakes.labels(result="failed").value == 1


async def test_wrong_relay_key_fails_the_handshake_with_a_refusal(relays: RelayFactory) -> None:
    """A client pinning another key cannot complete the handshake, and is told HANDSHAKE_FAILED."""
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        stream = await connect_raw_socket(running.port)
        with pytest.raises(HandshakeRefusedError) as refused:
            await handshake(stream, secrets.token_bytes(32))
        assert refused.value.code is ErrorCode.HANDSHAKE_FAILED
        await stream.aclose()
        assert running.relay.metrics.handshakes.labels(result="failed").value == 1


async def test_handshake_timeout_closes_silent_and_slow_clients(relays: RelayFactory) -> None:
    """A client that sends nothing, or half a frame, is refused and closed after `handshake_timeout`.

    Meanwhile another client completes its handshake and is served. Catches a missing
    handshake deadline (slowloris: idle sockets pinning memory and handshake slots).
    """
    timeout = 0.5
    running = await relays.start(handshake_timeout=timeout)
    with trio.fail_after(PATIENCE):
        silent = await connect_raw_socket(running.port)
        slow = await connect_raw_socket(running.port)
        await slow.send_all(b"\x00\x3c" + bytes(20))  # the start of a 60-byte frame
        started = trio.current_time()
        writer, reader, mailbox = await _bystander(running)
        await _still_served(running, writer, reader, mailbox)
        timed_out = refusal_frame(ErrorCode.HANDSHAKE_TIMEOUT)
        assert await _all_until_closed(silent) == timed_out
        assert await _all_until_closed(slow) == timed_out
        assert trio.current_time() - started >= timeout * 0.9
    assert running.relay.metrics.handshakes.labels(result="timeout").value == 2
    assert running.relay.metrics.handshakes_in_progress.value == 0


async def test_flood_of_requests_without_reading_answers_is_cut_off(relays: RelayFactory) -> None:
    """A client that sends pings without reading the pongs is disconnected, not buffered for.

    Catches a relay whose memory grows with what a client refuses to read.
    """
    running = await relays.start(send_queue_bytes=2 * 65_537)
    with trio.fail_after(PATIENCE):
        writer, reader, mailbox = await _bystander(running)
        stream = await connect_raw_socket(running.port, receive_buffer=4096)
        flooder = await handshake(stream, running.public_key)
        pings = [EncodedMessage.of(Ping(id=i)) for i in range(4000)]
        try:
            for _ in range(1000):  # at most 4 million pings; the relay gives up long before
                await flooder.stream.send_all(flooder.conn.send_encoded(pings))
        except trio.BrokenResourceError:
            pass
        await read_until_closed(flooder)
        await flooder.aclose()
        await _still_served(running, writer, reader, mailbox)
    assert running.dropped("slow_consumer") == 1


@pytest.mark.parametrize("where", ["request handler", "catch-up task"])
async def test_exception_in_one_connection_closes_only_that_connection(
    relays: RelayFactory, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A bug raised while handling one connection's request closes that connection only.

    The hub is made to raise for one specific request (a fetch with limit 77, or a
    subscription from cursor 77). Catches the unhandled-error-in-a-listener-handler
    failure mode, where one bad request takes the whole relay down; and checks that the
    crash is logged as `connection_crashed` and the connection's state is released.
    """
    if where == "request handler":
        original_fetch = Hub._fetch

        async def fetch(self: Hub, session: Any, message: Fetch) -> None:  # noqa: ANN401
            if message.limit == 77:
                raise RuntimeError("injected bug")
            await original_fetch(self, session, message)

        monkeypatch.setattr(Hub, "_fetch", fetch)
    else:
        original_catch_up = Hub._catch_up

        async def catch_up(self: Hub, sub: Any) -> None:  # noqa: ANN401
            if sub.cursor == 77:
                raise RuntimeError("injected bug")
            await original_catch_up(self, sub)

        monkeypatch.setattr(Hub, "_catch_up", catch_up)

    running = await relays.start()
    with trio.fail_after(PATIENCE), capture_logs() as logs:
        writer, reader, mailbox = await _bystander(running)
        victim = await running.connect()
        keys_holder = await victim.create(keys := MailboxKeys())
        assert isinstance(await victim.auth(keys.read, "read", keys_holder), Ok)
        # Prove the patched path still works for everyone else's requests.
        fine = Fetch(id=victim.next_id(), mailbox=MailboxId(keys_holder), after=0, limit=5)
        assert (await victim.request(fine)).__class__.__name__ == "Page"
        subscriptions = running.relay.metrics.subscriptions.value
        if where == "request handler":
            await victim.send(
                Fetch(id=victim.next_id(), mailbox=MailboxId(keys_holder), after=0, limit=77)
            )
        else:
            assert isinstance(await victim.subscribe(keys_holder, after=77), Subscribed)
        await read_until_closed(victim)
        await _still_served(running, writer, reader, mailbox)
        assert running.relay.metrics.subscriptions.value == subscriptions
        assert keys_holder not in {bytes(m) for m in running.relay.hub._states}
    crashes = [entry for entry in logs if entry["event"] == "connection_crashed"]
    assert len(crashes) == 1
    assert crashes[0]["log_level"] == "error"
    assert len(running.relay.sessions) == 3  # the two bystanders and _still_served's client
