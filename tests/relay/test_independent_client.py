"""The independent client (written from docs/protocol.md with noiseprotocol) against a real relay process.

tests/independent_client.py shares no code with the relay: Noise from the `noiseprotocol`
package, msgpack by hand-built dicts, Ed25519 from `cryptography`. If the document and
the relay disagree anywhere on this path (handshake, framing, encoding, capability proofs,
admin signatures, rekeying), these tests fail.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgpack
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cellrelay.protocol._errors import ErrorCode

from ..independent_client import REKEY_EVERY, IndependentClient
from .conftest import PATIENCE, IndependentWire
from .process import open_relay_process

# Pings sent per write, and unanswered at most: 2,048 pongs are ~55 KB queued at the relay.
BURST = 256
WINDOW = 2048


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


async def _create(*, client: IndependentWire, keys: Keys, request_id: int) -> dict[str, Any]:
    """Send a `create` for these keys, built from §4.2's table; return the answer."""
    return await client.request(
        {"t": "create", "id": request_id, "write_key": _public(keys.write),
         "read_key": _public(keys.read), "admin_key": _public(keys.admin),
         "max_ttl": 0, "secret": b""}
    )  # fmt: skip


class Keys:
    """A mailbox's three capability keys, as the `cryptography` package makes them."""

    def __init__(self) -> None:
        self.write = Ed25519PrivateKey.generate()
        self.read = Ed25519PrivateKey.generate()
        self.admin = Ed25519PrivateKey.generate()


async def test_independent_client_full_session(tmp_path: Path) -> None:
    """Handshake, create, auth, publish, subscribe, deliver, fetch, ping, admin and goodbye.

    Every message is built as a plain msgpack map from the document's tables; every
    answer is checked field by field as the document describes it.
    """
    with trio.fail_after(2 * PATIENCE):
        async with open_relay_process(tmp_path / "relay") as relay:
            writer = await IndependentWire.connect(relay.port, relay.public_key)
            welcome = writer.welcome
            assert welcome["t"] == "welcome"
            assert welcome["v"] == 1
            assert (welcome["max_envelope"], welcome["max_ttl"], welcome["ping_interval"]) == (
                16_384, 7 * 86_400, 30,
            )  # fmt: skip
            assert abs(welcome["time_ms"] / 1000 - time.time()) < 60

            keys = Keys()
            created = await _create(client=writer, keys=keys, request_id=1)
            assert created["t"] == "created"
            assert created["id"] == 1
            mailbox = created["mailbox"]
            assert isinstance(mailbox, bytes)
            assert len(mailbox) == 16

            proof = writer.client.auth_proof(keys.write, "write", mailbox)
            ok = await writer.request(
                {"t": "auth", "id": 2, "mailbox": mailbox, "role": "write", "proof": proof}
            )
            assert ok == {"t": "ok", "id": 2}

            reader = await IndependentWire.connect(relay.port, relay.public_key)
            proof = reader.client.auth_proof(keys.read, "read", mailbox)
            ok = await reader.request(
                {"t": "auth", "id": 7, "mailbox": mailbox, "role": "read", "proof": proof}
            )
            assert ok == {"t": "ok", "id": 7}
            subscribed = await reader.request(
                {"t": "subscribe", "id": 8, "mailbox": mailbox, "after": 0}
            )
            assert subscribed == {"t": "subscribed", "id": 8, "mailbox": mailbox, "head": 0}

            expires_at = int(time.time()) + 600
            envelope = b"sealed group message"
            published = await writer.request(
                {"t": "publish", "id": 3, "mailbox": mailbox, "expires_at": expires_at,
                 "envelope": envelope}
            )  # fmt: skip
            assert published == {"t": "published", "id": 3, "seq": 1}
            deliver = await reader.receive()
            assert deliver == {
                "t": "deliver", "mailbox": mailbox, "seq": 1, "expires_at": expires_at,
                "envelope": envelope,
            }  # fmt: skip

            page = await reader.request(
                {"t": "fetch", "id": 9, "mailbox": mailbox, "after": 0, "limit": 10}
            )
            assert page == {
                "t": "page", "id": 9, "mailbox": mailbox, "items": [[1, expires_at, envelope]],
                "more": False,
            }  # fmt: skip
            assert await reader.request({"t": "ping", "id": 10}) == {"t": "pong", "id": 10}

            # Admin operations, signed as §6.2 says.
            counter = int(time.time() * 1000)
            fields = (3600).to_bytes(4, "big") + (1 << 20).to_bytes(8, "big")
            sig = writer.client.admin_sig(keys.admin, "set_limits", mailbox, counter, fields)
            ok = await writer.request(
                {"t": "set_limits", "id": 4, "mailbox": mailbox, "max_ttl": 3600,
                 "max_bytes": 1 << 20, "counter": counter, "sig": sig}
            )  # fmt: skip
            assert ok == {"t": "ok", "id": 4}
            replay = await writer.request(
                {"t": "set_limits", "id": 5, "mailbox": mailbox, "max_ttl": 3600,
                 "max_bytes": 1 << 20, "counter": counter, "sig": sig}
            )  # fmt: skip
            assert replay == {"t": "error", "id": 5, "code": ErrorCode.STALE_COUNTER}

            new = Keys()
            fields = _public(new.write) + _public(new.read) + _public(new.admin)
            sig = writer.client.admin_sig(keys.admin, "rotate", mailbox, counter + 1, fields)
            ok = await writer.request(
                {"t": "rotate", "id": 6, "mailbox": mailbox, "write_key": _public(new.write),
                 "read_key": _public(new.read), "admin_key": _public(new.admin),
                 "counter": counter + 1, "sig": sig}
            )  # fmt: skip
            assert ok == {"t": "ok", "id": 6}
            revoked = {"t": "revoked", "mailbox": mailbox, "code": ErrorCode.REVOKED}
            assert writer.inbox == [revoked]
            assert await reader.receive() == revoked

            await reader.send({"t": "goodbye", "code": 0})
            assert await reader.read_until_closed() == [{"t": "goodbye", "code": 0}]
            await reader.aclose()
            await writer.aclose()


async def test_independent_client_rekeys_in_step_with_the_relay(tmp_path: Path) -> None:
    """Past 65,536 transport frames in each direction both sides still decrypt (§3.1 rekeying).

    The client sends every ping in its own frame; the relay answers each ping with a
    pong, each in its own frame while its writer is idle, so the relay's sending
    direction crosses the rekey point too (checked by counting the frames the client
    decrypted). Catches a rekey at a different frame than the document says, or none.
    """
    total = REKEY_EVERY + 50
    with trio.fail_after(6 * PATIENCE):
        async with open_relay_process(
            tmp_path / "relay", publish_rate=1e6, publish_burst=10**6
        ) as relay:
            wire = await IndependentWire.connect(relay.port, relay.public_key)
            sent = pongs = 0
            progress = trio.Event()

            async def send_pings() -> None:
                nonlocal sent, progress
                while sent < total:
                    # Pace by answers: a client that sends pings faster than it reads the
                    # pongs is, rightly, cut off as a slow consumer.
                    while sent - pongs >= WINDOW:
                        progress = trio.Event()
                        await progress.wait()
                    count = min(BURST, total - sent)
                    frames = b"".join(
                        wire.client.send({"t": "ping", "id": sent + i}) for i in range(count)
                    )
                    await wire.stream.send_all(frames)
                    sent += count

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_pings)
                while pongs < total:
                    message = await wire.receive()
                    assert message == {"t": "pong", "id": pongs}
                    pongs += 1
                    progress.set()
            assert wire.client.sent == total
            # The relay answered each ping in a frame of its own unless its writer was busy;
            # either way it must have crossed the rekey point for this check to mean much.
            assert wire.client.received > REKEY_EVERY, wire.client.received
            # One more request after everything: the relay still reads us and we it.
            assert await wire.request({"t": "ping", "id": 1}) == {"t": "pong", "id": 1}
            await wire.aclose()


async def _refusal(port: int, client: IndependentClient, hello: bytes) -> list[dict[str, Any]]:
    """Send handshake message 1 and read what the relay answers until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(hello)
        answers: list[dict[str, Any]] = []
        while data := await stream.receive_some(65_536):
            answers.extend(client.receive(data))
    return answers


async def _goodbye_for(port: int, relay_key: bytes, plaintext: bytes) -> list[dict[str, Any]]:
    """Open a connection, send one transport frame carrying `plaintext`, read to the close."""
    wire = await IndependentWire.connect(port, relay_key)
    try:
        await wire.send_plaintext(plaintext)
        return await wire.read_until_closed()
    finally:
        await wire.aclose()


async def test_independent_client_checks_what_issue_10_made_agree(tmp_path: Path) -> None:
    """The points where docs/protocol.md and the relay used to disagree (issue 10, item 8).

    (a) expires_at may be up to now + max TTL + 60 s (§7); (b) a key that is not a string is
    WRONG_TYPE (§4.1); (c) a frame too short for any plaintext is BAD_FRAME (§3.1); (d) the
    first fault by §8.1's order decides the code, a frame is handled whole and those before
    it are handled, and a bad handshake message 1 gets a refusal with its code (§3.2).
    """
    with trio.fail_after(3 * PATIENCE):
        async with open_relay_process(tmp_path / "relay") as relay:
            port, key = relay.port, relay.public_key
            wire = await IndependentWire.connect(port, key)
            offset = wire.welcome["time_ms"] / 1000 - time.time()
            max_ttl = wire.welcome["max_ttl"]
            keys = Keys()
            created = await _create(client=wire, keys=keys, request_id=1)
            mailbox = created["mailbox"]
            proof = wire.client.auth_proof(keys.write, "write", mailbox)
            assert await wire.request(
                {"t": "auth", "id": 2, "mailbox": mailbox, "role": "write", "proof": proof}
            ) == {"t": "ok", "id": 2}
            now = int(time.time() + offset)

            async def publish(request_id: int, expires_at: int) -> dict[str, Any]:
                return await wire.request(
                    {"t": "publish", "id": request_id, "mailbox": mailbox,
                     "expires_at": expires_at, "envelope": b"x"}
                )  # fmt: skip

            # (a) within the tolerance, and past it.
            assert (await publish(3, now + max_ttl + 30))["t"] == "published"
            refused = await publish(4, now + max_ttl + 120)
            assert refused == {"t": "error", "id": 4, "code": ErrorCode.TTL_TOO_LONG}

            # (d) a frame whose first message is good and second broken: no pong, and the
            # frame before it (sent in the same write) is answered.
            good = wire.client.send({"t": "ping", "id": 5})
            spoiled = wire.client.noise.encrypt(
                msgpack.packb({"t": "ping", "id": 6}) + b"\xc1"
            )  # fmt: skip
            wire.client.sent += 1
            await wire.stream.send_all(good + wire.client.frame(spoiled))
            assert await wire.read_until_closed() == [
                {"t": "pong", "id": 5},
                {"t": "goodbye", "code": ErrorCode.MALFORMED},
            ]
            await wire.aclose()

            def pack(pairs: list[tuple[object, object]]) -> bytes:
                packer = msgpack.Packer()
                header: bytes = packer.pack_map_header(len(pairs))
                return header + b"".join(packer.pack(k) + packer.pack(v) for k, v in pairs)

            cases: list[tuple[bytes, ErrorCode]] = [
                # (b) an integer key is WRONG_TYPE, not MALFORMED.
                (pack([("t", "ping"), ("id", 1), (7, 1)]), ErrorCode.WRONG_TYPE),
                # §8.1: the keys come before the fields, the fields before the values.
                (pack([(7, 1), ("t", "nope")]), ErrorCode.WRONG_TYPE),
                (pack([("t", "ping"), ("id", "one"), ("x", 1)]), ErrorCode.EXTRA_FIELD),
                (pack([("t", "ping")]), ErrorCode.MISSING_FIELD),
                (pack([("t", "ping"), ("id", "one")]), ErrorCode.WRONG_TYPE),
                # Decoding comes before the state: a welcome, then a broken message.
                (pack([("t", "pong"), ("id", 1)]) + b"\x81\x01\x01", ErrorCode.WRONG_TYPE),
            ]
            for plaintext, code in cases:
                answers = await _goodbye_for(port, key, plaintext)
                assert answers == [{"t": "goodbye", "code": code}], plaintext

            # (c) 16 bytes: only a tag, no plaintext: BAD_FRAME, by the frame's length.
            stray = await IndependentWire.connect(port, key)
            await stray.stream.send_all(stray.client.frame(bytes(16)))
            assert await stray.read_until_closed() == [
                {"t": "goodbye", "code": ErrorCode.BAD_FRAME}
            ]
            await stray.aclose()

            # (d) handshake refusals: another key pinned, and a hello with v = 0.
            wrong = IndependentClient(os.urandom(32))
            assert await _refusal(port, wrong, wrong.hello()) == [
                {"t": "goodbye", "code": ErrorCode.HANDSHAKE_FAILED}
            ]
            assert wrong.refused
            bad = IndependentClient(key)
            assert await _refusal(port, bad, bad.hello({"t": "hello", "v": 0})) == [
                {"t": "goodbye", "code": ErrorCode.OUT_OF_RANGE}
            ]
            assert await relay.terminate() == 0
