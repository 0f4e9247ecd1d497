"""Capability keys and the signatures that prove them (docs/protocol.md §6).

A mailbox is guarded by three Ed25519 key pairs created by the client: write, read and
admin. The relay stores only their public keys. A connection proves it holds the read or
write key once, with an `Auth` whose proof signs the connection's final Noise handshake
hash (a channel binding: the proof is useless on any other connection) and the mailbox id.
Admin operations are signed the same way and also carry a counter that must exceed the
last one the relay accepted for that mailbox, so neither a replay on this connection nor a
stale operation is accepted. Clients should use the current time in milliseconds as the
counter, which lets several admin devices share one key without coordinating.

Every signed string starts with its own domain label, so no signature made for one purpose
can be presented for another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from .._crypto import ed25519_from_seed, ed25519_generate, ed25519_sign, ed25519_verify, zero
from .._errors import CryptoError, LocalProtocolError
from ._messages import Delete, Rotate, SetLimits

__all__ = [
    "AdminMessage",
    "CapabilityKey",
    "admin_signing_input",
    "auth_signing_input",
    "sign_admin",
    "verify_admin",
    "verify_auth",
]

AUTH_DOMAIN: Final = b"cellrelay/1 auth "
ADMIN_DOMAIN: Final = b"cellrelay/1 admin "
HANDSHAKE_HASH_SIZE: Final = 64  # BLAKE2b
MAILBOX_ID_SIZE: Final = 16

AdminMessage = Rotate | SetLimits | Delete
A = TypeVar("A", Rotate, SetLimits, Delete)


@dataclass(slots=True)
class CapabilityKey:
    """An Ed25519 key pair held by a client: a mailbox's read, write or admin key."""

    public: bytes
    secret: bytearray = field(repr=False)  # libsodium's 64-byte form: seed || public

    @classmethod
    def generate(cls) -> CapabilityKey:
        """Return a fresh key pair from libsodium's CSPRNG."""
        public, secret = ed25519_generate()
        return cls(public, secret)

    @classmethod
    def from_seed(cls, seed: bytes | bytearray) -> CapabilityKey:
        """Return the key pair derived from a 32-byte seed (for stored keys and tests)."""
        public, secret = ed25519_from_seed(seed)
        return cls(public, secret)

    @property
    def seed(self) -> bytes:
        """The 32-byte seed, for saving the key (handle with care)."""
        return bytes(self.secret[:32])

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte signature of `message`."""
        return ed25519_sign(self.secret, message)

    def prove(self, role: Literal["read", "write"], handshake_hash: bytes, mailbox: bytes) -> bytes:
        """Return the `Auth.proof` for `role` on `mailbox` over this connection."""
        return self.sign(auth_signing_input(role, handshake_hash, mailbox))

    def clear(self) -> None:
        """Zero the secret key."""
        zero(self.secret)


def _check_binding(handshake_hash: bytes, mailbox: bytes) -> None:
    if len(handshake_hash) != HANDSHAKE_HASH_SIZE or len(mailbox) != MAILBOX_ID_SIZE:
        raise LocalProtocolError("handshake hash must be 64 bytes and mailbox id 16")


def auth_signing_input(role: str, handshake_hash: bytes, mailbox: bytes) -> bytes:
    """Return the bytes an `Auth` proof signs.

    `"cellrelay/1 auth " || role || 0x00 || handshake_hash (64) || mailbox (16)`.
    """
    if role not in ("read", "write"):
        raise LocalProtocolError("role must be read or write")
    _check_binding(handshake_hash, mailbox)
    return AUTH_DOMAIN + role.encode() + b"\x00" + handshake_hash + mailbox


def verify_auth(
    public_key: bytes, proof: bytes, role: str, handshake_hash: bytes, mailbox: bytes
) -> bool:
    """Return True if `proof` proves `role` on `mailbox` for this connection."""
    try:
        ed25519_verify(public_key, auth_signing_input(role, handshake_hash, mailbox), proof)
    except CryptoError:
        return False
    return True


def admin_signing_input(message: AdminMessage, handshake_hash: bytes) -> bytes:
    """Return the bytes an admin message's `sig` signs (its own `sig` field excluded).

    `"cellrelay/1 admin " || type || 0x00 || handshake_hash (64) || mailbox (16) ||
    counter (u64 BE) || fields`, where fields are, for rotate: write_key || read_key ||
    admin_key (32 each); for set_limits: max_ttl (u32 BE) || max_bytes (u64 BE); for delete:
    nothing.
    """
    _check_binding(handshake_hash, message.mailbox)
    head = ADMIN_DOMAIN + message.TYPE.encode() + b"\x00" + handshake_hash + message.mailbox
    head += message.counter.to_bytes(8, "big")
    if isinstance(message, Rotate):
        return head + message.write_key + message.read_key + message.admin_key
    if isinstance(message, SetLimits):
        return head + message.max_ttl.to_bytes(4, "big") + message.max_bytes.to_bytes(8, "big")
    return head


def sign_admin(key: CapabilityKey, message: A, handshake_hash: bytes) -> A:
    """Return `message` with its `sig` set by the admin `key` for this connection."""
    signature = key.sign(admin_signing_input(message, handshake_hash))
    return dataclasses.replace(message, sig=signature)


def verify_admin(public_key: bytes, message: AdminMessage, handshake_hash: bytes) -> bool:
    """Return True if `message.sig` is the admin key's signature for this connection."""
    try:
        ed25519_verify(public_key, admin_signing_input(message, handshake_hash), message.sig)
    except CryptoError:
        return False
    return True
