"""Noise known-answer vectors (cacophony): every basic pattern, BLAKE2b and SHA256, byte for byte.

Both sides run with pinned keys: each handshake message written must equal the vector's
ciphertext and read back to its payload, both sides must end with the vector's handshake hash,
and the transport messages after it must match in both directions. The direction convention
is in tests/vectors/README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from cellrelay.protocol._errors import LocalProtocolError
from cellrelay.protocol.wire._noise import PATTERNS, CipherState, HandshakeState, HashName, KeyPair

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "noise-25519-chachapoly.json"
HASHES: tuple[HashName, ...] = ("BLAKE2b", "SHA256")
# The file's contents (tests/vectors/README.md): 76 vectors, 30 of them the 15 basic patterns
# with both hashes; the rest use deferred patterns, which we do not implement.
EXPECTED_VECTORS = 76
EXPECTED_BASIC = 30


@dataclass(frozen=True, slots=True)
class NoiseVector:
    """One vector, decoded from hex; keys absent from the file are None."""

    protocol_name: str
    pattern: str
    hash_name: HashName
    init_prologue: bytes
    resp_prologue: bytes
    init_static: bytes | None
    resp_static: bytes | None
    init_ephemeral: bytes
    resp_ephemeral: bytes | None
    init_remote_static: bytes | None
    resp_remote_static: bytes | None
    messages: tuple[tuple[bytes, bytes], ...]  # (payload, ciphertext)
    handshake_hash: bytes


def _decode(raw: dict[str, object]) -> NoiseVector:
    def hex_field(name: str) -> bytes | None:
        value = raw.get(name)
        return None if value is None else bytes.fromhex(str(value))

    def required(name: str) -> bytes:
        value = hex_field(name)
        assert value is not None, name
        return value

    name = str(raw["protocol_name"])
    noise, pattern, dh, cipher, hash_name = name.split("_")
    assert (noise, dh, cipher) == ("Noise", "25519", "ChaChaPoly")
    assert hash_name in HASHES
    messages = cast("list[dict[str, str]]", raw["messages"])
    return NoiseVector(
        protocol_name=name,
        pattern=pattern,
        hash_name=hash_name,
        init_prologue=required("init_prologue"),
        resp_prologue=required("resp_prologue"),
        init_static=hex_field("init_static"),
        resp_static=hex_field("resp_static"),
        init_ephemeral=required("init_ephemeral"),
        resp_ephemeral=hex_field("resp_ephemeral"),
        init_remote_static=hex_field("init_remote_static"),
        resp_remote_static=hex_field("resp_remote_static"),
        messages=tuple(
            (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in messages
        ),
        handshake_hash=required("handshake_hash"),
    )


ALL_VECTORS = [_decode(v) for v in json.loads(VECTORS.read_text())["vectors"]]
BASIC_VECTORS = [v for v in ALL_VECTORS if v.pattern in PATTERNS]
DEFERRED_VECTORS = [v for v in ALL_VECTORS if v.pattern not in PATTERNS]


def test_every_expected_vector_is_present() -> None:
    """The parametrised tests below cannot pass on an empty or partial file."""
    assert len(ALL_VECTORS) == EXPECTED_VECTORS
    assert len(BASIC_VECTORS) == EXPECTED_BASIC
    covered = {(v.pattern, v.hash_name) for v in BASIC_VECTORS}
    assert covered == {(p, h) for p in PATTERNS for h in HASHES}
    assert {"NK", "XX", "XK"} <= {p for p, _ in covered}


def _key(private: bytes | None) -> KeyPair | None:
    return None if private is None else KeyPair.from_private(private)


def _sides(v: NoiseVector) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState(
        v.pattern,
        initiator=True,
        prologue=v.init_prologue,
        s=_key(v.init_static),
        e=_key(v.init_ephemeral),
        rs=v.init_remote_static,
        hash_name=v.hash_name,
    )
    responder = HandshakeState(
        v.pattern,
        initiator=False,
        prologue=v.resp_prologue,
        s=_key(v.resp_static),
        e=_key(v.resp_ephemeral),
        rs=v.resp_remote_static,
        hash_name=v.hash_name,
    )
    return initiator, responder


@pytest.mark.parametrize("vector", BASIC_VECTORS, ids=lambda v: v.protocol_name)
def test_vector(vector: NoiseVector) -> None:
    initiator, responder = _sides(vector)
    assert initiator.protocol_name == responder.protocol_name == vector.protocol_name
    pattern = PATTERNS[vector.pattern]
    handshake_length = len(pattern.messages)

    for index, (payload, ciphertext) in enumerate(vector.messages[:handshake_length]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        assert writer.write_message(payload) == ciphertext, f"handshake message {index}"
        assert reader.read_message(ciphertext) == payload
        assert writer.handshake_hash == reader.handshake_hash
    assert initiator.finished
    assert responder.finished
    assert initiator.handshake_hash == vector.handshake_hash
    assert responder.handshake_hash == vector.handshake_hash

    # Each side learned (or was given) the other's static key, if the pattern has one.
    if vector.resp_static is not None:
        assert initiator.remote_static == KeyPair.from_private(vector.resp_static).public
    if vector.init_static is not None:
        assert responder.remote_static == KeyPair.from_private(vector.init_static).public

    initiator_send, initiator_receive = initiator.split()
    responder_send, responder_receive = responder.split()
    directions: dict[bool, tuple[CipherState, CipherState]] = {
        True: (initiator_send, responder_receive),
        False: (responder_send, initiator_receive),
    }
    transport = vector.messages[handshake_length:]
    assert transport, "every vector has transport messages"
    for index, (payload, ciphertext) in enumerate(transport, start=handshake_length):
        from_initiator = pattern.one_way or index % 2 == 0
        sender, receiver = directions[from_initiator]
        assert sender.encrypt(payload) == ciphertext, f"transport message {index}"
        assert receiver.decrypt(ciphertext) == payload


@pytest.mark.parametrize("vector", BASIC_VECTORS, ids=lambda v: v.protocol_name)
def test_vector_read_from_non_bytes_buffers(vector: NoiseVector) -> None:
    """The same handshake, with every message handed over as a bytearray or memoryview."""
    initiator, responder = _sides(vector)
    handshake_length = len(PATTERNS[vector.pattern].messages)
    for index, (payload, ciphertext) in enumerate(vector.messages[:handshake_length]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        buffer = bytearray if index % 2 == 0 else memoryview
        assert writer.write_message(bytearray(payload)) == ciphertext
        assert reader.read_message(buffer(ciphertext)) == payload
    assert responder.handshake_hash == vector.handshake_hash


@pytest.mark.parametrize("vector", DEFERRED_VECTORS[:2], ids=lambda v: v.protocol_name)
def test_deferred_patterns_are_refused_not_misread(vector: NoiseVector) -> None:
    with pytest.raises(LocalProtocolError, match="unsupported handshake pattern"):
        _sides(vector)
