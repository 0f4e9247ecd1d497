"""The join mailbox: a joiner's request, sealed to the inviting admin, and the admin's answer.

docs/protocol.md, Part 3. Each invite names a one-time *join mailbox* whose read and write
capability keys derive from the invite's secret (protocol/cell/_invite.py), so only holders of
the invite (the joiner, the admin) can read or write it; the relay only stores it. Two
envelope types travel there, told apart by their first byte:

* `0x01` **request**, joiner to admin:

      0x01 | eph_pub (32) | nonce (24) | XChaCha20-Poly1305(key, nonce, body, ad)

  with `key = KDF(X25519(eph, admin_box_key), "cellrelay/1 join-request", eph_pub ||
  admin_box_key)` (the group layer's KDF), `ad = 0x01 || eph_pub || admin_box_key`, and
  `body` a msgpack map: `member` (the joiner's MemberInfo bytes), `proof` (BLAKE2b-256
  keyed with the invite's join-proof key over `member || eph_pub`: the author held the
  invite, which the relay does not) and `sig` (the joiner's Ed25519 signature over
  `"cellrelay/1 join-request " || join_mailbox || member || eph_pub`: the author holds the
  identity it asks to join with). The ephemeral key hides who is asking from anyone but
  the admin, the relay included.
* `0x02` **welcome**, admin to joiner: `0x02 || welcome`, the group layer's welcome (sealed
  to the joiner's X25519 key and signed by the admin; `CellCrypto.from_welcome`), bound
  to the invite by `Invite.welcome_binding` and refused after the invite's lifetime.

A request is accepted once per invite: the admin's client marks the invite used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._crypto import (
    blake2b,
    ed25519_verify,
    random_bytes,
    x25519,
    x25519_generate,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
    zero,
)
from .._errors import CryptoError, RemoteProtocolError
from ..wire._codec import decode_map, encode_map
from ._errors import BadSignatureError, MalformedError, TamperedError
from ._identity import Identity, MemberInfo
from ._keys import kdf

__all__ = [
    "JOIN_REQUEST",
    "JOIN_TAKEN",
    "JOIN_WELCOME",
    "JOIN_WELCOME_PAGE",
    "JoinRequest",
    "open_join_request",
    "seal_join_request",
    "split_join_envelope",
]

JOIN_REQUEST: Final = 0x01
JOIN_WELCOME: Final = 0x02
JOIN_WELCOME_PAGE: Final = 0x03  # a page of a welcome's member list (§G7, §C4)
JOIN_TAKEN: Final = 0x04  # the joiner has its welcome: the admin may delete the mailbox (§C4)
REQUEST_PURPOSE: Final = b"cellrelay/1 join-request"
SIGNATURE_DOMAIN: Final = b"cellrelay/1 join-request "
_PUB: Final = 32
_NONCE: Final = 24


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A verified request to join: who asks (their public identity)."""

    member: MemberInfo


def seal_join_request(
    identity: Identity, *, admin_box_key: bytes, join_mailbox: bytes, proof_key: bytes
) -> bytes:
    """Return the request envelope asking the admin (by its X25519 key) to admit `identity`."""
    eph_pub, eph_private = x25519_generate()
    try:
        shared = x25519(eph_private, admin_box_key)
    finally:
        zero(eph_private)
    try:
        key = kdf(shared, REQUEST_PURPOSE, eph_pub + admin_box_key)
    finally:
        zero(shared)
    member = identity.info.to_bytes()
    body = encode_map(
        {
            "member": member,
            "proof": blake2b(member + eph_pub, key=proof_key),
            "sig": identity.sign(SIGNATURE_DOMAIN + join_mailbox + member + eph_pub),
        }
    )
    nonce = random_bytes(_NONCE)
    header = bytes([JOIN_REQUEST]) + eph_pub
    try:
        sealed = xchacha20poly1305_encrypt(key, nonce, header + admin_box_key, body)
    finally:
        zero(key)
    return header + nonce + sealed


def split_join_envelope(envelope: bytes) -> tuple[int, bytes]:
    """Return (type, rest) of a join-mailbox envelope.

    Raises:
        MalformedError: empty, or of an unknown type.
    """
    if not envelope or envelope[0] not in (
        JOIN_REQUEST,
        JOIN_WELCOME,
        JOIN_WELCOME_PAGE,
        JOIN_TAKEN,
    ):
        raise MalformedError("not a join-mailbox envelope")
    return envelope[0], envelope[1:]


def open_join_request(
    admin: Identity, envelope: bytes, *, join_mailbox: bytes, proof_key: bytes
) -> JoinRequest:
    """Open and verify a request sealed to `admin` for the invite behind `proof_key`.

    Raises:
        MalformedError: not a request, or its body is malformed.
        TamperedError: it does not open with this admin's key, or the invite proof is wrong.
        BadSignatureError: the joiner's signature does not verify.
    """
    if len(envelope) < 1 + _PUB + _NONCE + 16 or envelope[0] != JOIN_REQUEST:
        raise MalformedError("not a join request")
    eph_pub = envelope[1 : 1 + _PUB]
    nonce = envelope[1 + _PUB : 1 + _PUB + _NONCE]
    try:
        shared = admin.dh(eph_pub)
    except CryptoError:
        raise TamperedError("join request does not open") from None
    try:
        key = kdf(shared, REQUEST_PURPOSE, eph_pub + admin.dh_pub)
    finally:
        zero(shared)
    try:
        body = xchacha20poly1305_decrypt(
            key, nonce, envelope[: 1 + _PUB] + admin.dh_pub, envelope[1 + _PUB + _NONCE :]
        )
    except CryptoError:
        raise TamperedError("join request does not open") from None
    finally:
        zero(key)
    try:
        fields = decode_map(body)
    except RemoteProtocolError:
        raise MalformedError("join request body is malformed") from None
    member_bytes, proof, sig = fields.get("member"), fields.get("proof"), fields.get("sig")
    if (
        type(member_bytes) is not bytes
        or type(proof) is not bytes
        or type(sig) is not bytes
        or len(fields) != 3
    ):
        raise MalformedError("join request body has the wrong fields")
    member = MemberInfo.from_bytes(member_bytes)
    if not _equal(proof, blake2b(member_bytes + eph_pub, key=proof_key)):
        raise TamperedError("join request does not prove the invite")
    try:
        ed25519_verify(
            member.sign_pub, SIGNATURE_DOMAIN + join_mailbox + member_bytes + eph_pub, sig
        )
    except CryptoError:
        raise BadSignatureError("join request signature does not verify") from None
    return JoinRequest(member=member)


def _equal(a: bytes, b: bytes) -> bool:
    import hmac

    return hmac.compare_digest(a, b)
