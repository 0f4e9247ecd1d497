"""A cellrelay client written from docs/protocol.md alone, with independent libraries.

It uses the `noiseprotocol` package for Noise, `msgpack` for encoding and the
`cryptography` package for Ed25519, and nothing from this repository, so the tests that
drive it against our relay check the document and the implementation against each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack
from noise.connection import Keypair, NoiseConnection

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PROTOCOL_NAME = b"Noise_NK_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"cellrelay/1"
REKEY_EVERY = 65536
MIN_MESSAGE_2 = 49  # §2: an ephemeral key, a tag and at least one byte of payload


class IndependentClient:
    """The client side of the protocol as docs/protocol.md describes it (sans-IO)."""

    def __init__(self, relay_key: bytes, ephemeral_private: bytes | None = None) -> None:
        self.noise = NoiseConnection.from_name(PROTOCOL_NAME)
        self.noise.set_as_initiator()
        self.noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, relay_key)
        if ephemeral_private is not None:
            self.noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
        self.noise.set_prologue(PROLOGUE)
        self.noise.start_handshake()
        self.buffer = b""
        self.handshake_done = False
        self.refused = False
        self.sent = 0
        self.received = 0
        self.handshake_hash = b""

    @staticmethod
    def frame(body: bytes) -> bytes:
        return len(body).to_bytes(2, "big") + body

    def hello(self, payload: dict[Any, Any] | None = None) -> bytes:
        """Return frame 1: handshake message 1 carrying hello (or `payload`, to test refusals)."""
        body = msgpack.packb({"t": "hello", "v": 1} if payload is None else payload)
        return self.frame(self.noise.write_message(body))

    def receive(self, data: bytes) -> list[dict[str, Any]]:
        """Feed bytes; return decoded messages (the welcome first, once).

        A handshake refusal (§3.2: a frame shorter than 49 bytes where message 2 belongs)
        comes back as the plaintext goodbye it carries, with `refused` set.
        """
        self.buffer += data
        out: list[dict[str, Any]] = []
        while len(self.buffer) >= 2:
            n = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + n:
                break
            body, self.buffer = self.buffer[2 : 2 + n], self.buffer[2 + n :]
            if not self.handshake_done and n < MIN_MESSAGE_2:
                out.append(msgpack.unpackb(body))
                self.refused = True
                continue
            if not self.handshake_done:
                payload = self.noise.read_message(body)
                self.handshake_done = True
                self.handshake_hash = self.noise.get_handshake_hash()
            else:
                payload = self.noise.decrypt(body)
                self.received += 1
                if self.received % REKEY_EVERY == 0:
                    self.noise.rekey_inbound_cipher()
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(payload)
            out.extend(unpacker)
        return out

    def send(self, *messages: dict[str, Any]) -> bytes:
        """Return one transport frame carrying `messages`, concatenated."""
        plaintext = b"".join(msgpack.packb(m, use_bin_type=True) for m in messages)
        body = self.noise.encrypt(plaintext)
        self.sent += 1
        if self.sent % REKEY_EVERY == 0:
            self.noise.rekey_outbound_cipher()
        return self.frame(body)

    def auth_proof(self, key: Ed25519PrivateKey, role: str, mailbox: bytes) -> bytes:
        """Sign the §6.1 capability proof."""
        return key.sign(
            b"cellrelay/1 auth " + role.encode() + b"\x00" + self.handshake_hash + mailbox
        )

    def admin_sig(
        self, key: Ed25519PrivateKey, t: str, mailbox: bytes, counter: int, fields: bytes
    ) -> bytes:
        """Sign a §6.2 admin operation."""
        return key.sign(
            b"cellrelay/1 admin " + t.encode() + b"\x00" + self.handshake_hash + mailbox
            + counter.to_bytes(8, "big") + fields
        )  # fmt: skip
