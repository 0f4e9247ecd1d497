"""Dispatch-sealed answers: what a responder says in a channel, readable by dispatchers only.

docs/protocol.md §C11. In a channel (a cell whose admins set it up as a broadcast channel at
creation) only admins and dispatchers post to everyone; what anyone else sends (status
replies, receipts, its leave) travels as content kind 19, whose plaintext is sealed to each
admin and dispatcher of the sender's view of the cell, so that the other responders, who
open the group envelope like every member, find only ciphertext inside:

```
offset  size      field
0       1         version (1)
1       32        e_pub: a fresh X25519 public key, one per message
33      24        nonce, random
57      2         count n (u16, 1..MAX_RECIPIENTS)
59      48 x n    boxes: AEAD(box key of recipient r, nonce, ad = "cellrelay/1 dispatch-box"
                  || 0x00 || cell id || sender id || r's member id, content key (32))
59+48n  rest      body: AEAD(content key, nonce, ad = "cellrelay/1 dispatch-body" || 0x00
                  || cell id || sender id, inner kind (u8) || inner content encoding)

box key of r = KDF(X25519(e, r.dh_pub), "cellrelay/1 dispatch box", e_pub || r.dh_pub || r id)
```

The content key is random per message; every key is used once, so the shared nonce never
repeats under one key. A recipient computes its box key once and tries it on every box (at
most `MAX_RECIPIENTS` Poly1305 checks), so it needs no agreement with the sender on who
the dispatchers are. The sender id in both associated data binds the seal to the group
envelope that carries it: another member cannot re-post it as its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .._crypto import (
    AEAD_TAG_SIZE,
    XCHACHA20POLY1305_NONCE_SIZE,
    random_bytes,
    random_secret,
    x25519,
    x25519_generate,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
    zero,
)
from .._errors import CryptoError
from ._binary import Reader, Writer
from ._errors import MalformedError, TamperedError
from ._keys import DISPATCH_BOX, kdf

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._identity import Identity, MemberInfo

__all__ = [
    "ANSWER_KINDS",
    "DISPATCH_KIND",
    "MAX_RECIPIENTS",
    "NotForMeError",
    "open_for_dispatch",
    "seal_for_dispatch",
]

DISPATCH_KIND: Final = 19
"""The content kind of a dispatch-sealed answer."""
ANSWER_KINDS: Final = frozenset({2, 3, 16})
"""What a dispatch seal may carry: a status reply, a receipt, a leave."""
MAX_RECIPIENTS: Final = 255
"""At most this many admins and dispatchers (a cell's channel readers)."""
VERSION: Final = 1
_BOX_DOMAIN: Final = b"cellrelay/1 dispatch-box\x00"
_BODY_DOMAIN: Final = b"cellrelay/1 dispatch-body\x00"
_HEAD: Final = 1 + 32 + XCHACHA20POLY1305_NONCE_SIZE + 2
_BOX_SIZE: Final = 32 + AEAD_TAG_SIZE


class NotForMeError(MalformedError):
    """The seal is well formed but holds no box for this member (it is not a reader)."""


def _box_key(shared: bytes | bytearray, e_pub: bytes, recipient: MemberInfo) -> bytearray:
    return kdf(shared, DISPATCH_BOX, e_pub + recipient.dh_pub + recipient.member_id)


def seal_for_dispatch(
    *,
    cell_id: bytes,
    sender_id: bytes,
    recipients: Sequence[MemberInfo],
    kind: int,
    plaintext: bytes,
) -> bytes:
    """Return `kind` and `plaintext` sealed to each of `recipients` (the layout above).

    Raises:
        ValueError: no recipient, more than `MAX_RECIPIENTS`, or `kind` is not an answer.
        CryptoError: a recipient's X25519 key is low-order.
    """
    if not 0 < len(recipients) <= MAX_RECIPIENTS:
        raise ValueError("a dispatch seal needs 1 to 255 recipients")
    if kind not in ANSWER_KINDS:
        raise ValueError(f"kind {kind} is not an answer")
    e_pub, e_private = x25519_generate()
    nonce = random_bytes(XCHACHA20POLY1305_NONCE_SIZE)
    content_key = random_secret(32)
    out = Writer().u8(VERSION).raw(e_pub).raw(nonce).u16(len(recipients))
    try:
        for recipient in recipients:
            shared = x25519(e_private, recipient.dh_pub)
            key = _box_key(shared, e_pub, recipient)
            zero(shared)
            ad = _BOX_DOMAIN + cell_id + sender_id + recipient.member_id
            out.raw(xchacha20poly1305_encrypt(key, nonce, ad, bytes(content_key)))
            zero(key)
        body = xchacha20poly1305_encrypt(
            content_key, nonce, _BODY_DOMAIN + cell_id + sender_id, bytes([kind]) + plaintext
        )
    finally:
        zero(e_private)
        zero(content_key)
    return out.raw(body).bytes()


def open_for_dispatch(
    data: bytes, *, cell_id: bytes, sender_id: bytes, me: Identity
) -> tuple[int, bytes]:
    """Return (inner kind, inner plaintext) of a dispatch seal that holds a box for `me`.

    Raises:
        MalformedError: it does not parse, or the inner kind is not an answer.
        NotForMeError: it parses but no box opens with `me`'s key (not a reader of it).
        TamperedError: a box opened but the body does not.
    """
    reader = Reader(data)
    if reader.u8() != VERSION:
        raise MalformedError("not a dispatch seal of version 1")
    e_pub = reader.take(32)
    nonce = reader.take(XCHACHA20POLY1305_NONCE_SIZE)
    count = reader.u16()
    if not 0 < count <= MAX_RECIPIENTS:
        raise MalformedError("a dispatch seal's recipient count is out of range")
    boxes = [reader.take(_BOX_SIZE) for _ in range(count)]
    body = reader.take(len(data) - _HEAD - count * _BOX_SIZE)
    reader.end()
    if len(body) < AEAD_TAG_SIZE + 1:
        raise MalformedError("a dispatch seal without a body")
    try:
        shared = me.dh(e_pub)
    except CryptoError:
        raise MalformedError("a dispatch seal with a low-order key") from None
    key = _box_key(shared, e_pub, me.info)
    zero(shared)
    ad = _BOX_DOMAIN + cell_id + sender_id + me.member_id
    content_key = None
    try:
        for box in boxes:
            try:
                content_key = xchacha20poly1305_decrypt(key, nonce, ad, box)
                break
            except CryptoError:
                continue
    finally:
        zero(key)
    if content_key is None:
        raise NotForMeError("a dispatch seal for other readers")
    try:
        inner = xchacha20poly1305_decrypt(
            content_key, nonce, _BODY_DOMAIN + cell_id + sender_id, body
        )
    except CryptoError:
        raise TamperedError("a dispatch seal's body does not open") from None
    if inner[0] not in ANSWER_KINDS:
        raise MalformedError("a dispatch seal that carries no answer")
    return inner[0], bytes(inner[1:])
