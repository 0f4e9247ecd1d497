"""Our Noise against an independent implementation: the `noiseprotocol` package (noise.connection).

Each side of NK and XX is played once by us and once by `NoiseConnection`, with payloads in
every handshake message, transport messages both ways, matching handshake hashes, and a
rekey in step (the package implements REKEY as spec §4.2 says, so a mismatch would show).
"""

from __future__ import annotations

from typing import Final, Literal

import pytest
from noise.connection import Keypair, NoiseConnection

from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol._errors import CryptoError
from cellrelay.protocol.wire._noise import CipherState, HandshakeState, HashName, KeyPair

PROLOGUE: Final = b"cellrelay interop test"
TRANSPORT_ROUNDS: Final = 5

Pattern = Literal["NK", "XX"]
CASES: Final = [(p, h) for p in ("NK", "XX") for h in ("BLAKE2b", "SHA256")]


class TheirSide:
    """A `NoiseConnection` with typed methods (the package ships no type hints)."""

    def __init__(
        self,
        pattern: Pattern,
        hash_name: HashName,
        *,
        initiator: bool,
        static: KeyPair | None,
        remote_static: bytes | None,
    ) -> None:
        name = f"Noise_{pattern}_25519_ChaChaPoly_{hash_name}"
        self.conn = NoiseConnection.from_name(name.encode("ascii"))
        if initiator:
            self.conn.set_as_initiator()
        else:
            self.conn.set_as_responder()
        self.conn.set_prologue(PROLOGUE)
        if static is not None:
            self.conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes(static.private))
        if remote_static is not None:
            self.conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static)
        self.conn.start_handshake()

    def write_message(self, payload: bytes) -> bytes:
        return bytes(self.conn.write_message(payload))

    def read_message(self, message: bytes) -> bytes:
        return bytes(self.conn.read_message(message))

    @property
    def finished(self) -> bool:
        return bool(self.conn.handshake_finished)

    @property
    def handshake_hash(self) -> bytes:
        return bytes(self.conn.get_handshake_hash())

    def encrypt(self, plaintext: bytes) -> bytes:
        return bytes(self.conn.encrypt(plaintext))

    def decrypt(self, ciphertext: bytes) -> bytes:
        return bytes(self.conn.decrypt(ciphertext))

    def rekey(self) -> None:
        self.conn.rekey_inbound_cipher()
        self.conn.rekey_outbound_cipher()


def _transport(
    ours: tuple[CipherState, CipherState], theirs: TheirSide, *, rekey_after: int
) -> None:
    """Run messages both ways, rekeying both directions on both sides after `rekey_after`."""
    send, receive = ours
    for round_number in range(TRANSPORT_ROUNDS):
        if round_number == rekey_after:
            send.rekey()
            receive.rekey()
            theirs.rekey()
        outgoing = random_bytes(round_number * 97)
        assert theirs.decrypt(send.encrypt(outgoing)) == outgoing
        incoming = random_bytes(600 + round_number)
        assert receive.decrypt(theirs.encrypt(incoming)) == incoming
    assert send.n == receive.n == TRANSPORT_ROUNDS


def _run(ours: HandshakeState, theirs: TheirSide, *, we_start: bool) -> None:
    """Alternate handshake messages, each with a distinct payload, until both have finished."""
    our_turn = we_start
    index = 0
    while not ours.finished:
        payload = f"handshake payload {index}".encode() * (index + 1)
        if our_turn:
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(theirs.write_message(payload)) == payload
        our_turn = not our_turn
        index += 1
    assert theirs.finished
    assert ours.handshake_hash == theirs.handshake_hash


@pytest.mark.parametrize(("pattern", "hash_name"), CASES)
def test_our_initiator_their_responder(pattern: Pattern, hash_name: HashName) -> None:
    responder_static = KeyPair.generate()
    initiator_static = KeyPair.generate() if pattern == "XX" else None
    ours = HandshakeState(
        pattern,
        initiator=True,
        prologue=PROLOGUE,
        s=initiator_static,
        rs=responder_static.public if pattern == "NK" else None,
        hash_name=hash_name,
    )
    theirs = TheirSide(
        pattern, hash_name, initiator=False, static=responder_static, remote_static=None
    )
    _run(ours, theirs, we_start=True)
    assert ours.remote_static == responder_static.public
    _transport(ours.split(), theirs, rekey_after=2)


@pytest.mark.parametrize(("pattern", "hash_name"), CASES)
def test_our_responder_their_initiator(pattern: Pattern, hash_name: HashName) -> None:
    responder_static = KeyPair.generate()
    initiator_static = KeyPair.generate() if pattern == "XX" else None
    ours = HandshakeState(
        pattern, initiator=False, prologue=PROLOGUE, s=responder_static, hash_name=hash_name
    )
    theirs = TheirSide(
        pattern,
        hash_name,
        initiator=True,
        static=initiator_static,
        remote_static=responder_static.public if pattern == "NK" else None,
    )
    _run(ours, theirs, we_start=False)
    if initiator_static is not None:
        assert ours.remote_static == initiator_static.public
    _transport(ours.split(), theirs, rekey_after=3)


def test_a_different_prologue_fails_against_their_side() -> None:
    """The interop above is not vacuous: a prologue mismatch breaks the first message."""
    responder_static = KeyPair.generate()
    ours = HandshakeState("NK", initiator=False, prologue=b"other", s=responder_static)
    their_initiator = TheirSide(
        "NK", "BLAKE2b", initiator=True, static=None, remote_static=responder_static.public
    )
    with pytest.raises(CryptoError):
        ours.read_message(their_initiator.write_message(b"hello"))
