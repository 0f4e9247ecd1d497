"""The group envelope: what members post in the group mailbox (docs/protocol.md, Part 2).

Byte layout (all integers big-endian):

```
offset  size  field
0       1     version (1)
1       4     epoch                        in clear: it picks the header key
5       24    header nonce                 random
29      129   sealed header                XChaCha20-Poly1305(header key, header nonce,
                                             AD = version || epoch, H || signature)
158     n+16  body                         XChaCha20-Poly1305(body key, body nonce, AD = H,
                                             padded plaintext)
```

H (49 bytes) = cell id (16) || epoch (4) || sender member id (16) || counter (4) || kind (1)
|| expires_at (8, Unix seconds). The signature (64) is Ed25519 over
"cellrelay/1 group-envelope" || 0x00 || H || body, by the sender's signing key for the epoch.
The whole envelope is one of the padding buckets (256 .. 16,384 bytes), so the relay sees
an epoch number, a random nonce and a size class: no sender, counter, kind or length.

A message's body key and nonce come from the sender's chain (`_group_keys`). A sender key
distribution uses the same layout with kind `SENDER_KEY`, counter 0, the epoch's
distribution key and the header nonce as body nonce (a different key from the header's, so
the pair is never reused), and carries the sender's new chain key and signing key,
authenticated to each recipient by a pairwise MAC (see `distribution_payload`).

These are pure functions of their inputs, so the known-answer vectors in
tests/vectors/group-v1.json can pin every byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from .._crypto import (
    AEAD_TAG_SIZE,
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    XCHACHA20POLY1305_NONCE_SIZE,
    blake2b,
    ed25519_verify,
    xchacha20poly1305_encrypt,
)
from .._errors import CryptoError
from ._binary import Reader, Writer
from ._errors import BadSignatureError, MalformedError, TamperedError
from ._keys import aead_decrypt, aead_encrypt
from ._padding import BUCKETS, bucket_for, pad, unpad

if TYPE_CHECKING:
    from .._crypto import SigningKey, XChaChaKey

__all__ = [
    "CONTENT_KINDS",
    "ENVELOPE_OVERHEAD",
    "GROUP_KINDS",
    "HEADER",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAX_GROUP_PLAINTEXT",
    "VERSION",
    "AnnouncementPayload",
    "DistributionPayload",
    "Kind",
    "announcement_mac",
    "distribution_mac",
    "open_body",
    "open_header",
    "seal_envelope",
    "split_envelope",
    "verify_envelope",
]

VERSION: Final = 1
CLEAR_SIZE: Final = 1 + 4 + XCHACHA20POLY1305_NONCE_SIZE
HEADER_SIZE: Final = 49
SEALED_HEADER_SIZE: Final = HEADER_SIZE + ED25519_SIGNATURE_SIZE + AEAD_TAG_SIZE
BODY_OFFSET: Final = CLEAR_SIZE + SEALED_HEADER_SIZE
ENVELOPE_OVERHEAD: Final = BODY_OFFSET + AEAD_TAG_SIZE
# The largest plaintext: the largest bucket less the overhead and the padding marker.
MAX_GROUP_PLAINTEXT: Final = BUCKETS[-1] - ENVELOPE_OVERHEAD - 1
MAC_SIZE: Final = 16
CHAIN_KEY_SIZE: Final = 32

_SIGN_DOMAIN: Final = b"cellrelay/1 group-envelope\x00"
_MAC_DOMAIN: Final = b"cellrelay/1 distribution-mac\x00"
_ANNOUNCEMENT_MAC_DOMAIN: Final = b"cellrelay/1 announcement-mac\x00"
HEADER: Final = struct.Struct(">16sI16sIBQ")
"""H: cell id, epoch, sender, counter, kind, expires_at (see the module docstring)."""
_CLEAR: Final = struct.Struct(">BI")
_SIZES: Final = frozenset(BUCKETS)


class Kind(IntEnum):
    """What an envelope's plaintext is (the same numbers as protocol/cell/_content.py's ContentKind).

    5..15 belong to this layer; every other kind from 1 to 255 is the content layer's.
    """

    ALERT = 1
    REPLY = 2  # a status reply to an alert: responding, on scene, resolved, false alarm
    RECEIPT = 3
    MESSAGE = 4
    SENDER_KEY = 5  # a sender key distribution (group mailbox; epochs without a sender tree)
    EPOCH_CHANGE = 6  # an epoch change (control mailbox); never inside a group envelope
    ANNOUNCEMENT = 7  # a signing key announcement (group mailbox; epochs with a sender tree)
    KEY_UPDATE = 8  # a member's key update (group mailbox, sealed on its chain; §G6.5)


GROUP_KINDS: Final = range(5, 16)
"""Kinds reserved for this layer."""
CONTENT_KINDS: Final = frozenset(k for k in range(1, 256) if k not in GROUP_KINDS)
"""The kinds `CellCrypto.seal` accepts: the content layer owns their meaning."""


def seal_envelope(
    *,
    header: bytes,
    epoch: int,
    header_key: XChaChaKey,
    header_nonce: bytes,
    signing_key: SigningKey,
    body_key: XChaChaKey | bytes,
    body_nonce: bytes,
    plaintext: bytes,
) -> bytes:
    """Return the envelope carrying `plaintext` under packed header `header` (see module doc).

    Raises:
        ValueError: `plaintext` is longer than `MAX_GROUP_PLAINTEXT`.
    """
    if len(plaintext) > MAX_GROUP_PLAINTEXT:
        raise ValueError(f"a plaintext is at most {MAX_GROUP_PLAINTEXT} bytes")
    padded = pad(plaintext, bucket_for(len(plaintext) + 1 + ENVELOPE_OVERHEAD) - ENVELOPE_OVERHEAD)
    if type(body_key) is bytes:  # a message key: used once, no key object worth making
        body = xchacha20poly1305_encrypt(body_key, body_nonce, header, padded)
    else:
        body = aead_encrypt(body_key, body_nonce, header, padded)
    signature = signing_key.sign(_SIGN_DOMAIN + header + body)
    clear = _CLEAR.pack(VERSION, epoch)
    sealed = header_key.encrypt(header_nonce, clear, header + signature)
    return clear + header_nonce + sealed + body


def split_envelope(envelope: bytes) -> tuple[int, bytes]:
    """Return (epoch, header nonce) from the clear part of an envelope of a valid size.

    Raises:
        MalformedError: not a bucket size, or not version 1.
    """
    if len(envelope) not in _SIZES or envelope[0] != VERSION:
        raise MalformedError("not a group envelope")
    return int.from_bytes(envelope[1:5], "big"), envelope[5:CLEAR_SIZE]


def open_header(
    envelope: bytes, header_key: XChaChaKey, header_nonce: bytes
) -> tuple[bytes, bytes]:
    """Return (H, signature) from the sealed header.

    Raises:
        TamperedError: the sealed header does not authenticate under `header_key`.
    """
    try:
        # Slices of 5 and 129 bytes: cheaper to copy than to wrap in cffi buffers.
        inner = header_key.decrypt(header_nonce, envelope[:5], envelope[CLEAR_SIZE:BODY_OFFSET])
    except CryptoError as exc:
        raise TamperedError("header does not authenticate") from exc
    return inner[:HEADER_SIZE], inner[HEADER_SIZE:]


def verify_envelope(
    signing_public: bytes, header: bytes, signature: bytes, envelope: bytes
) -> None:
    """Check the sender's signature over H and the body.

    Raises:
        BadSignatureError: it does not verify.
    """
    try:
        signed = b"".join((_SIGN_DOMAIN, header, memoryview(envelope)[BODY_OFFSET:]))
        ed25519_verify(signing_public, signed, signature)
    except CryptoError as exc:
        raise BadSignatureError("bad signature") from exc


def open_body(
    envelope: bytes, header: bytes, body_key: XChaChaKey | bytes, body_nonce: bytes
) -> bytes:
    """Return the unpadded plaintext of the body.

    Raises:
        TamperedError: the body does not authenticate.
        MalformedError: the padding is wrong (only a buggy or hostile sender does that).
    """
    try:
        padded = aead_decrypt(body_key, body_nonce, header, envelope[BODY_OFFSET:])
    except CryptoError as exc:
        raise TamperedError("body does not authenticate") from exc
    return unpad(padded)


# -- sender key distributions -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributionPayload:
    """The plaintext of a sender key distribution.

    Layout: chain key (32) || start counter (u32) || signing public key (32) || MAC count
    (u16) || MACs (16 each), one per other member of the epoch in ascending member id order.
    """

    chain_key: bytes
    start: int
    signing_public: bytes
    macs: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """Return the payload's bytes."""
        writer = Writer().raw(self.chain_key).u32(self.start).raw(self.signing_public)
        writer.u16(len(self.macs))
        for mac in self.macs:
            writer.raw(mac)
        return writer.bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DistributionPayload:
        """Parse a payload.

        Raises:
            MalformedError: it does not have the layout above.
        """
        reader = Reader(data)
        chain_key, start = reader.take(CHAIN_KEY_SIZE), reader.u32()
        signing_public = reader.take(ED25519_PUBLIC_KEY_SIZE)
        macs = tuple(reader.take(MAC_SIZE) for _ in range(reader.u16()))
        reader.end()
        return cls(chain_key=chain_key, start=start, signing_public=signing_public, macs=macs)


def distribution_mac(
    mac_key: bytes | bytearray,
    *,
    cell_id: bytes,
    epoch: int,
    sender: bytes,
    recipient: bytes,
    chain_key: bytes,
    start: int,
    signing_public: bytes,
) -> bytes:
    """Return the 16-byte MAC that authenticates a distribution's keys to one recipient.

    BLAKE2b-128 keyed with the sender and recipient's pairwise distribution-MAC key, over
    "cellrelay/1 distribution-mac" || 0x00 || cell id || epoch || sender || recipient ||
    chain key || start || signing public key. Only those two members can compute it, so
    it convinces the recipient without proving anything to a third party (deniability).
    """
    data = (
        _MAC_DOMAIN
        + cell_id
        + epoch.to_bytes(4, "big")
        + sender
        + recipient
        + chain_key
        + start.to_bytes(4, "big")
        + signing_public
    )
    return blake2b(data, size=MAC_SIZE, key=mac_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnouncementPayload:
    """The plaintext of a signing key announcement (kind 7, docs/protocol.md §G8.2).

    A distribution without the chain key: in an epoch with a sender tree every member
    derives every chain from the epoch secret, so only the sender's signing key travels.
    Layout: start counter (u32) || signing public key (32) || MAC count (u16) || MACs (16
    each), one per other member of the epoch in ascending member id order.
    """

    start: int
    signing_public: bytes
    macs: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """Return the payload's bytes."""
        writer = Writer().u32(self.start).raw(self.signing_public).u16(len(self.macs))
        for mac in self.macs:
            writer.raw(mac)
        return writer.bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> AnnouncementPayload:
        """Parse a payload.

        Raises:
            MalformedError: it does not have the layout above.
        """
        reader = Reader(data)
        start, signing_public = reader.u32(), reader.take(ED25519_PUBLIC_KEY_SIZE)
        macs = tuple(reader.take(MAC_SIZE) for _ in range(reader.u16()))
        reader.end()
        return cls(start=start, signing_public=signing_public, macs=macs)

    @classmethod
    def for_recipient(cls, data: bytes, index: int) -> tuple[AnnouncementPayload, int]:
        """Parse a payload for the recipient at `index`: its MAC only, and the MAC count.

        The returned payload's `macs` holds that one MAC (none when `index` is not below
        the count). What a receiver needs, without splitting the other MACs: a receiver in
        a 1,000-member cell read 999 of them for every announcement (bench_cells.py
        --profile). The same bytes are refused as by `from_bytes`.

        Raises:
            MalformedError: it does not have the layout above.
        """
        reader = Reader(data)
        start, signing_public = reader.u32(), reader.take(ED25519_PUBLIC_KEY_SIZE)
        count = reader.u16()
        head = 4 + ED25519_PUBLIC_KEY_SIZE + 2
        if len(data) < head + MAC_SIZE * count:
            raise MalformedError("truncated")
        if len(data) > head + MAC_SIZE * count:
            raise MalformedError("trailing bytes")
        at = head + MAC_SIZE * index
        macs = (data[at : at + MAC_SIZE],) if 0 <= index < count else ()
        return cls(start=start, signing_public=signing_public, macs=macs), count


def announcement_mac(
    mac_key: bytes | bytearray,
    *,
    cell_id: bytes,
    epoch: int,
    sender: bytes,
    recipient: bytes,
    start: int,
    signing_public: bytes,
) -> bytes:
    """Return the 16-byte MAC that authenticates an announcement to one recipient.

    BLAKE2b-128 keyed with the pairwise distribution-MAC key, over "cellrelay/1
    announcement-mac" || 0x00 || cell id || epoch || sender || recipient || start ||
    signing public key: deniable, as a distribution's MAC is.
    """
    data = (
        _ANNOUNCEMENT_MAC_DOMAIN
        + cell_id
        + epoch.to_bytes(4, "big")
        + sender
        + recipient
        + start.to_bytes(4, "big")
        + signing_public
    )
    return blake2b(data, size=MAC_SIZE, key=mac_key)
