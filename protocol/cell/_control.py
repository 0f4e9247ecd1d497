"""Epoch changes (the control mailbox) and welcomes (for joiners): layouts, sealing, opening.

docs/protocol.md, Part 2, "Epoch changes" and "Welcome". Both are pure functions of their
inputs so the known-answer vectors can pin every byte; `_group.CellCrypto` decides policy.

An epoch change from epoch E to E+1 has a fixed size (`CONTROL_SIZE`, 7,330 bytes), so
neither the relay nor a removed member still reading the control mailbox learns how many
members remain:

```
offset  size   field
0       1      version (1)
1       4      new epoch E+1                  in clear: tells a member it is the next one
5       24     nonce                          random; every AEAD below uses it, each under
                                              its own key
29      117    sealed CH                      XChaCha20-Poly1305(control-header key of E,
                                              nonce, AD = version || epoch, CH || signature)
146     1040   body                           XChaCha20-Poly1305(control-body key of E+1,
                                              nonce, AD = CH, body padded to 1,024 bytes)
1186    6144   128 box slots of 48 bytes      a box per member of E+1, then random filler
```

CH (37) = cell id (16) || E+1 (4) || signer member id (16) || kind 6. The signature is
the signer's identity key over "cellrelay/1 epoch-change" || 0x00 || CH || body || slots.
A box is XChaCha20-Poly1305(pairwise epoch-box key(signer, recipient), nonce,
AD = "cellrelay/1 epoch-box" || 0x00 || CH || recipient id, epoch secret of E+1). A
recipient finds its box by trying each slot (at most 128 small AEADs).

Version 3 (issue 12, docs/protocol.md §G6.2) replaces the 128 slots with the bucket key
section of `_schedule` and pads the whole change to an envelope size class instead of the
largest cell, so one layout serves 1 to 5,000 members:

```
offset  size   field
0       1      version (3)
1       4      new epoch E+1
5       24     nonce
29      134    sealed header                  XChaCha20-Poly1305(control-header key of E,
                                              nonce, AD = version || epoch, CH || op (u8)
                                              || subject id (16) || signature)
163     1040   body                           as in version 1
1203    S      key section                    `_schedule.seal_keys`, box AD = CH
1203+S  2048   bucket public keys             64 x 32, zero for an empty bucket
...            random filler                  up to the size class (`_padding.bucket_for`)
```

The op and subject (0xFF and zeros for a rotation) are the log entry's, told ahead of the
body so a member knows its bucket's members after the change (its box's position) before
it can open the body, and a removed member knows it is removed. The signature is over
"cellrelay/3 epoch-change" || 0x00 || CH || op || subject || everything from offset 163.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._crypto import (
    AEAD_TAG_SIZE,
    ED25519_SIGNATURE_SIZE,
    X25519_KEY_SIZE,
    XCHACHA20POLY1305_NONCE_SIZE,
    blake2b,
    ed25519_verify,
    x25519,
    x25519_public_from_private,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
    zero,
)
from .._errors import CryptoError
from ._binary import Reader, Writer
from ._envelope import Kind
from ._errors import BadSignatureError, MalformedError, TamperedError
from ._identity import MAX_NAME_BYTES, MEMBER_ID_SIZE, MemberInfo, check_name
from ._keys import WELCOME, kdf
from ._membership import CELL_ID_SIZE, HASH_SIZE, MAX_MEMBERS, LogEntry, Role
from ._padding import BUCKETS, bucket_for, pad, unpad
from ._schedule import KEY_UPDATE_SIZE, KeyUpdate, parse_section

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._crypto import XChaChaKey
    from ._identity import Identity, Rng

__all__ = [
    "CONTROL_SIZE",
    "INVITE_BINDING_SIZE",
    "MAX_ADMIN_SECRETS",
    "MAX_CHANGE_EXTRA",
    "MAX_EXTRA",
    "SECRET_SIZE",
    "WELCOME_VERSION",
    "ChangeBody",
    "WelcomeContent",
    "bucketed_keys",
    "change_header",
    "committed_updates",
    "find_box",
    "open_admin_grant",
    "open_bucketed_header",
    "open_change_body",
    "open_change_header",
    "open_welcome",
    "seal_admin_grant",
    "seal_bucketed_change",
    "seal_epoch_change",
    "seal_welcome",
    "verify_bucketed_change",
]

# Version 2 (issue 12) has the layout of version 1; its boxes carry a *change secret*, and
# the new epoch's secret is derived from it and the previous epoch's init secret
# (docs/protocol.md §G6.2), so a box opened later with a seized identity key yields no
# epoch secret. Version 3 (issue 12) boxes the change secret to 64 buckets (see the module
# docstring). Members still read versions 1 and 2 (an admin not yet upgraded).
VERSION: Final = 3
SLOTTED_VERSION: Final = 2  # the last version with 128 box slots (tests of older admins)
READABLE_VERSIONS: Final = (1, 2, 3, 4)
BUCKETED_VERSION: Final = 3
# Version 4 (issue 12, post-compromise security) is version 3 with the key updates the change
# commits after the bucket table: an admin sends it only when it commits at least one.
COMMITTING_VERSION: Final = 4
BUCKETED_VERSIONS: Final = (BUCKETED_VERSION, COMMITTING_VERSION)
# The most key updates one change commits (each refreshes its member's bucket; the change
# must still fit the largest envelope, and an admin commits fewer when it would not).
MAX_COMMITTED: Final = 16
# Welcomes have their own version: 2 since a welcome answers one invite (WB ends with the
# invite binding, issue 9). A version 1 welcome is refused as malformed: it names no
# invite, so it could be any old welcome replayed. Version 3 (issue 12) adds the joiner's
# join box and, for an admin joiner, the bucket public keys; version 2 is still read (an
# admin not yet upgraded, in a cell whose changes are still of version 1 or 2).
WELCOME_VERSION: Final = 3
READABLE_WELCOMES: Final = (2, 3)
JOIN_BOX_SIZE: Final = 4 + MEMBER_ID_SIZE + XCHACHA20POLY1305_NONCE_SIZE + X25519_KEY_SIZE + 48
# A version 3 welcome lists as many members as fit the largest envelope; the rest follow in
# pages (§G7), each at most PAGE_MEMBERS members (98 bytes each at most) in one envelope.
PAGE_MEMBERS: Final = 160
PAGE_VERSION: Final = 1
LIST_DIGEST_SIZE: Final = 32
INVITE_BINDING_SIZE: Final = 32
SECRET_SIZE: Final = 32
CLEAR_SIZE: Final = 1 + 4 + XCHACHA20POLY1305_NONCE_SIZE
CH_SIZE: Final = CELL_ID_SIZE + 4 + MEMBER_ID_SIZE + 1
SEALED_CH_SIZE: Final = CH_SIZE + ED25519_SIGNATURE_SIZE + AEAD_TAG_SIZE
# The body holds at most one log entry (≤ 244 bytes), rotated group keys (64) and an admin
# grant (≤ 274): 585 bytes at most, padded to a fixed 1,024 so its size says nothing.
BODY_SIZE: Final = 1024
BODY_OFFSET: Final = CLEAR_SIZE + SEALED_CH_SIZE
SLOTS_OFFSET: Final = BODY_OFFSET + BODY_SIZE + AEAD_TAG_SIZE
BOX_SIZE: Final = SECRET_SIZE + AEAD_TAG_SIZE
CONTROL_SIZE: Final = SLOTS_OFFSET + MAX_MEMBERS * BOX_SIZE
# Opaque bytes this layer carries for the client: the admins' own secrets (mailbox admin
# and control-write key seeds: a few 32-byte seeds) and, in a welcome, anything else a
# joiner needs (mailbox ids, relay addresses, cursors). Sized so the largest welcome fits a
# default relay envelope.
MAX_ADMIN_SECRETS: Final = 256
MAX_EXTRA: Final = 1024
# Opaque client data an epoch change carries to the members of the new epoch (a new group
# mailbox id, cell settings). With every other field at its largest (585 bytes, above)
# the body still has 438 bytes free after the 0x80 of the padding; 384 leaves room.
MAX_CHANGE_EXTRA: Final = 384
GROUP_KEY_SIZE: Final = 32

_SIGN_DOMAIN: Final = b"cellrelay/1 epoch-change\x00"
_SIGN_DOMAIN_V3: Final = b"cellrelay/3 epoch-change\x00"
_SIGN_DOMAINS: Final = {3: _SIGN_DOMAIN_V3, 4: b"cellrelay/4 epoch-change\x00"}
# Version 3's sealed header adds the entry's op and subject; the body follows it.
NO_OP: Final = 0xFF
HINT_SIZE: Final = 1 + MEMBER_ID_SIZE
SEALED_HEADER_V3: Final = CH_SIZE + HINT_SIZE + ED25519_SIGNATURE_SIZE + AEAD_TAG_SIZE
BODY_OFFSET_V3: Final = CLEAR_SIZE + SEALED_HEADER_V3
KEYS_OFFSET_V3: Final = BODY_OFFSET_V3 + BODY_SIZE + AEAD_TAG_SIZE
TABLE_SIZE: Final = 64 * X25519_KEY_SIZE
# The smallest version 3 change: no refreshed bucket (33 + 64 x 48 bytes of key section).
MIN_CHANGE_V3: Final = KEYS_OFFSET_V3 + X25519_KEY_SIZE + 1 + 64 * BOX_SIZE + TABLE_SIZE
_BOX_DOMAIN: Final = b"cellrelay/1 epoch-box\x00"
_GRANT_DOMAIN: Final = b"cellrelay/1 admin-grant\x00"
_WELCOME_DOMAIN: Final = b"cellrelay/1 welcome\x00"
# The admin's signature over WB: its own label per welcome version, so no signature made
# for one layout ever verifies for another.
_WELCOME_SIGN_DOMAINS: Final = {
    2: b"cellrelay/1 welcome/2\x00",
    3: b"cellrelay/1 welcome/3\x00",
}
_WELCOME_HEAD: Final = 1 + X25519_KEY_SIZE + XCHACHA20POLY1305_NONCE_SIZE
_WELCOME_OVERHEAD: Final = _WELCOME_HEAD + AEAD_TAG_SIZE
# The most WB may hold: the largest envelope, less the join mailbox's kind byte in front
# (§C4), the welcome's overhead, the signer id and signature, and the padding's marker
# byte. (Without the kind byte, a welcome whose inline members filled WB to the last byte
# came to 16,385 bytes and could not be sealed: a 1,000-member test failed on some names.)
MAX_WB: Final = BUCKETS[-1] - 1 - _WELCOME_OVERHEAD - MEMBER_ID_SIZE - ED25519_SIGNATURE_SIZE - 1
_LIST_DOMAIN: Final = b"cellrelay/3 member-list\x00"
_PAGE_DOMAIN: Final = b"cellrelay/3 welcome-page\x00"
_PAGE_HEAD: Final = 1 + XCHACHA20POLY1305_NONCE_SIZE


def change_header(cell_id: bytes, epoch: int, signer: bytes) -> bytes:
    """Return CH for an epoch change to `epoch` signed by member `signer`."""
    return cell_id + epoch.to_bytes(4, "big") + signer + bytes([Kind.EPOCH_CHANGE])


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeBody:
    """What an epoch change tells the members of the new epoch.

    Layout (then padded to 1,024 bytes): entry flag (u8) [log entry] || group keys flag
    (u8) [read seed (32) || write seed (32)] || grant flag (u8) [u16 length || sealed grant]
    [|| 0x01 || u16 length || extra]. The last part is present only when there is client
    data (1..MAX_CHANGE_EXTRA bytes), so a change without it has exactly the bytes it had
    before the field existed, and every body has one encoding.
    """

    entry: LogEntry | None
    group_keys: tuple[bytes, bytes] | None = field(repr=False)
    admin_grant: bytes | None = field(repr=False)  # sealed for the promoted member
    extra: bytes | None = field(default=None, repr=False)  # opaque client data

    def __post_init__(self) -> None:
        if self.extra is not None and not 0 < len(self.extra) <= MAX_CHANGE_EXTRA:
            raise ValueError("extra must be 1..MAX_CHANGE_EXTRA bytes")

    def to_bytes(self) -> bytes:
        """Return the padded body plaintext."""
        writer = Writer()
        writer.u8(self.entry is not None)
        if self.entry is not None:
            writer.raw(self.entry.to_bytes())
        writer.u8(self.group_keys is not None)
        if self.group_keys is not None:
            writer.raw(self.group_keys[0]).raw(self.group_keys[1])
        writer.u8(self.admin_grant is not None)
        if self.admin_grant is not None:
            writer.long(self.admin_grant)
        if self.extra is not None:
            writer.u8(1).long(self.extra)
        return pad(writer.bytes(), BODY_SIZE)

    @classmethod
    def from_bytes(cls, padded: bytes) -> ChangeBody:
        """Parse a padded body plaintext (MalformedError if it is not one)."""
        reader = Reader(unpad(padded))
        entry = LogEntry.read(reader) if reader.flag() else None
        group_keys = None
        if reader.flag():
            group_keys = (reader.take(GROUP_KEY_SIZE), reader.take(GROUP_KEY_SIZE))
        grant = reader.long(MAX_ADMIN_SECRETS + AEAD_TAG_SIZE) if reader.flag() else None
        extra = None
        if reader.remaining():
            if not reader.flag():  # absent extra has one encoding: nothing at all
                raise MalformedError("an empty extra field")
            extra = reader.long(MAX_CHANGE_EXTRA)
            if not extra:
                raise MalformedError("an empty extra field")
        reader.end()
        return cls(entry=entry, group_keys=group_keys, admin_grant=grant, extra=extra)


def seal_admin_grant(
    key: bytes | bytearray, nonce: bytes, ch: bytes, subject: bytes, secrets: bytes
) -> bytes:
    """Seal the admins' opaque secrets for a promoted member (pairwise admin-grant key)."""
    return xchacha20poly1305_encrypt(key, nonce, _GRANT_DOMAIN + ch + subject, secrets)


def open_admin_grant(
    key: bytes | bytearray, nonce: bytes, ch: bytes, subject: bytes, sealed: bytes
) -> bytes:
    """Open an admin grant (TamperedError if it does not authenticate)."""
    try:
        return xchacha20poly1305_decrypt(key, nonce, _GRANT_DOMAIN + ch + subject, sealed)
    except CryptoError as exc:
        raise TamperedError("admin grant does not authenticate") from exc


def seal_epoch_change(
    *,
    signer: Identity,
    ch: bytes,
    nonce: bytes,
    header_key: XChaChaKey,
    body_key: XChaChaKey,
    body: ChangeBody,
    secret: bytes | bytearray,
    boxes: Sequence[tuple[bytes, bytes | bytearray]],
    filler: bytes,
    version: int = SLOTTED_VERSION,
) -> bytes:
    """Return an epoch change of version 1 or 2 (see the module docstring).

    `boxes` lists (recipient id, pairwise epoch-box key) for every member of the new epoch,
    in ascending id order; `filler` is the random content of the unused slots; `secret` is
    what each box carries: the change secret (version 2) or the epoch secret (version 1,
    for tests of what older admins send).
    """
    if len(boxes) > MAX_MEMBERS or len(filler) != (MAX_MEMBERS - len(boxes)) * BOX_SIZE:
        raise ValueError("box slots and filler do not add up")
    epoch = ch[CELL_ID_SIZE : CELL_ID_SIZE + 4]
    sealed_body = body_key.encrypt(nonce, ch, body.to_bytes())
    slots = b"".join(
        xchacha20poly1305_encrypt(key, nonce, _BOX_DOMAIN + ch + recipient, secret)
        for recipient, key in boxes
    )
    tail = sealed_body + slots + filler
    signature = signer.sign(_SIGN_DOMAIN + ch + tail)
    clear = bytes([version]) + epoch
    return clear + nonce + header_key.encrypt(nonce, clear, ch + signature) + tail


def split_change(envelope: bytes) -> tuple[int, bytes]:
    """Return (new epoch, nonce) from an epoch change's clear part (its version: `envelope[0]`).

    Raises:
        MalformedError: wrong size for its version, or an unknown version.
    """
    if not envelope or envelope[0] not in READABLE_VERSIONS:
        raise MalformedError("not an epoch change")
    if envelope[0] in BUCKETED_VERSIONS:
        if len(envelope) < MIN_CHANGE_V3 or len(envelope) not in BUCKETS:
            raise MalformedError("not an epoch change")
    elif len(envelope) != CONTROL_SIZE:
        raise MalformedError("not an epoch change")
    return int.from_bytes(envelope[1:5], "big"), envelope[5:CLEAR_SIZE]


def seal_bucketed_change(
    *,
    signer: Identity,
    ch: bytes,
    hint: tuple[int, bytes],
    nonce: bytes,
    header_key: XChaChaKey,
    body_key: XChaChaKey,
    body: ChangeBody,
    section: bytes,
    table: bytes,
    rng: Rng,
    updates: Sequence[bytes] = (),
) -> bytes:
    """Return an epoch change of version 3, or 4 if it commits `updates` (module docstring).

    `hint` is (op, subject id) of the body's log entry, or (NO_OP, 16 zero bytes); `section`
    is `_schedule.seal_keys`'s output made with AD = `ch`; `table` the 64 bucket public
    keys after the change (zeros for an empty bucket).

    Raises:
        ValueError: the change does not fit the largest envelope size class.
    """
    op, subject = hint
    if len(table) != TABLE_SIZE or len(subject) != MEMBER_ID_SIZE:
        raise ValueError("a table is 64 keys, a subject 16 bytes")
    if len(updates) > MAX_COMMITTED or any(len(u) != KEY_UPDATE_SIZE for u in updates):
        raise ValueError("at most 16 key updates of 133 bytes")
    version = COMMITTING_VERSION if updates else BUCKETED_VERSION
    committed = bytes([len(updates)]) + b"".join(updates) if updates else b""
    epoch = ch[CELL_ID_SIZE : CELL_ID_SIZE + 4]
    used = KEYS_OFFSET_V3 + len(section) + TABLE_SIZE + len(committed)
    size = bucket_for(used)
    tail = body_key.encrypt(nonce, ch, body.to_bytes()) + section + table + committed
    tail += rng(size - used)
    signature = signer.sign(_SIGN_DOMAINS[version] + ch + bytes([op]) + subject + tail)
    clear = bytes([version]) + epoch
    sealed = header_key.encrypt(nonce, clear, ch + bytes([op]) + subject + signature)
    return clear + nonce + sealed + tail


def open_bucketed_header(
    envelope: bytes, header_key: XChaChaKey, nonce: bytes
) -> tuple[bytes, int, bytes, bytes]:
    """Return (CH, op, subject, signature) of a version 3 change (TamperedError if forged)."""
    view = memoryview(envelope)
    try:
        inner = header_key.decrypt(nonce, view[:5], view[CLEAR_SIZE:BODY_OFFSET_V3])
    except CryptoError as exc:
        raise TamperedError("epoch change header does not authenticate") from exc
    hint_end = CH_SIZE + HINT_SIZE
    return inner[:CH_SIZE], inner[CH_SIZE], inner[CH_SIZE + 1 : hint_end], inner[hint_end:]


def verify_bucketed_change(
    signer: MemberInfo, ch: bytes, hint: tuple[int, bytes], signature: bytes, envelope: bytes
) -> None:
    """Check the admin's signature over a version 3 change (BadSignatureError if wrong)."""
    domain = _SIGN_DOMAINS[envelope[0]]
    signed = domain + ch + bytes([hint[0]]) + hint[1] + envelope[BODY_OFFSET_V3:]
    try:
        ed25519_verify(signer.sign_pub, signed, signature)
    except CryptoError as exc:
        raise BadSignatureError("bad epoch change signature") from exc


def bucketed_keys(envelope: bytes) -> tuple[bytes, tuple[bytes | None, ...]]:
    """Return (key section, the 64 bucket public keys, None for an empty bucket).

    Raises:
        MalformedError: the section does not parse, or the table does not fit.
    """
    rest = envelope[KEYS_OFFSET_V3:]
    end = parse_section(rest)[3]
    if end + TABLE_SIZE > len(rest):
        raise MalformedError("an epoch change too short for its bucket keys")
    table = rest[end : end + TABLE_SIZE]
    empty = bytes(X25519_KEY_SIZE)
    keys = tuple(
        None if (key := table[at : at + X25519_KEY_SIZE]) == empty else key
        for at in range(0, TABLE_SIZE, X25519_KEY_SIZE)
    )
    return rest[:end], keys


def committed_updates(envelope: bytes) -> list[KeyUpdate]:
    """Return the key updates a version 4 change commits (none for version 3); structure only.

    Raises:
        MalformedError: the count is 0 or above MAX_COMMITTED, an update does not parse, or
            the change is too short for them.
    """
    if envelope[0] != COMMITTING_VERSION:
        return []
    rest = envelope[KEYS_OFFSET_V3:]
    reader = Reader(rest[parse_section(rest)[3] + TABLE_SIZE :])
    count = reader.u8()
    if not 0 < count <= MAX_COMMITTED:
        raise MalformedError("a committed key update count out of range")
    return [KeyUpdate.from_bytes(reader.take(KEY_UPDATE_SIZE)) for _ in range(count)]


def open_change_header(
    envelope: bytes, header_key: XChaChaKey, nonce: bytes
) -> tuple[bytes, bytes]:
    """Return (CH, signature) of an epoch change (TamperedError if it does not authenticate)."""
    view = memoryview(envelope)
    try:
        inner = header_key.decrypt(nonce, view[:5], view[CLEAR_SIZE:BODY_OFFSET])
    except CryptoError as exc:
        raise TamperedError("epoch change header does not authenticate") from exc
    return inner[:CH_SIZE], inner[CH_SIZE:]


def verify_change(signer: MemberInfo, ch: bytes, signature: bytes, envelope: bytes) -> None:
    """Check the admin's signature over an epoch change (BadSignatureError if wrong)."""
    try:
        ed25519_verify(signer.sign_pub, _SIGN_DOMAIN + ch + envelope[BODY_OFFSET:], signature)
    except CryptoError as exc:
        raise BadSignatureError("bad epoch change signature") from exc


def find_box(
    envelope: bytes, key: bytes | bytearray, nonce: bytes, ch: bytes, recipient: bytes
) -> bytearray | None:
    """Return the epoch secret in the recipient's box, or None if no slot opens for it."""
    ad = _BOX_DOMAIN + ch + recipient
    view = memoryview(envelope)
    for start in range(SLOTS_OFFSET, CONTROL_SIZE, BOX_SIZE):
        try:
            secret = xchacha20poly1305_decrypt(key, nonce, ad, view[start : start + BOX_SIZE])
        except CryptoError:
            continue
        return bytearray(secret)
    return None


def open_change_body(envelope: bytes, body_key: XChaChaKey, nonce: bytes, ch: bytes) -> ChangeBody:
    """Return the parsed body of a change of any version (TamperedError / MalformedError)."""
    start = BODY_OFFSET_V3 if envelope[0] in BUCKETED_VERSIONS else BODY_OFFSET
    try:
        padded = body_key.decrypt(nonce, ch, memoryview(envelope)[start : start + BODY_SIZE + 16])
    except CryptoError as exc:
        raise TamperedError("epoch change body does not authenticate") from exc
    return ChangeBody.from_bytes(padded)


# -- welcomes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WelcomeContent:
    """Everything a joiner needs, as signed by the welcoming admin.

    Layout of the signed part WB: joiner id (16) || cell id (16) || cell name (u8 length,
    UTF-8) || epoch (u32) || epoch secret (32) || head index (u32) || head hash (32) ||
    head epoch (u32) || member count (u16) || members (MemberInfo || role u8, ascending id)
    || group read seed (32) || group write seed (32) || control read key (32) || admin
    secrets (u16 length) || extra (u16 length) || created at (u64, Unix milliseconds) ||
    invite binding (32); version 3 then adds: join box flag (u8) [join box (124)] || table
    flag (u8) [the 64 bucket public keys (2,048)] (docs/protocol.md §G7).
    """

    joiner: bytes
    cell_id: bytes
    cell_name: str
    epoch: int
    secret: bytes = field(repr=False)
    head_index: int
    head_hash: bytes
    head_epoch: int
    members: tuple[tuple[MemberInfo, Role], ...]
    group_keys: tuple[bytes, bytes] = field(repr=False)
    control_read_key: bytes = field(repr=False)
    admin_secrets: bytes = field(repr=False)
    extra: bytes = field(repr=False)
    created_ms: int
    invite_binding: bytes = field(repr=False)
    join_box: bytes | None = field(default=None, repr=False)
    bucket_table: bytes | None = field(default=None, repr=False)
    version: int = WELCOME_VERSION
    # Version 3: the whole membership's size, and when `members` holds only its first part
    # (ascending id), the digest of the whole list and the key of the pages with the rest.
    total_members: int | None = None
    list_digest: bytes | None = field(default=None, repr=False)
    page_key: bytes | None = field(default=None, repr=False)

    def to_bytes(self) -> bytes:
        """Return WB."""
        writer = Writer().raw(self.joiner).raw(self.cell_id).short(self.cell_name.encode())
        writer.u32(self.epoch).raw(self.secret).u32(self.head_index).raw(self.head_hash)
        writer.u32(self.head_epoch).u16(len(self.members))
        writer.raw(encode_members(self.members))
        writer.raw(self.group_keys[0]).raw(self.group_keys[1]).raw(self.control_read_key)
        writer.long(self.admin_secrets).long(self.extra)
        if len(self.invite_binding) != INVITE_BINDING_SIZE:
            raise ValueError("an invite binding is 32 bytes")
        writer.u64(self.created_ms).raw(self.invite_binding)
        if self.version == WELCOME_VERSION:
            total = len(self.members) if self.total_members is None else self.total_members
            writer.u16(total)
            if total > len(self.members):
                if self.list_digest is None or self.page_key is None:
                    raise ValueError("a paged member list needs its digest and page key")
                writer.raw(self.list_digest).raw(self.page_key)
            for part, size in ((self.join_box, JOIN_BOX_SIZE), (self.bucket_table, TABLE_SIZE)):
                writer.u8(part is not None)
                if part is not None:
                    if len(part) != size:
                        raise ValueError("a join box is 124 bytes, a table 2,048")
                    writer.raw(part)
        elif self.join_box is not None or self.bucket_table is not None:
            raise ValueError("a version 2 welcome has no bucket keys")
        return writer.bytes()

    @classmethod
    def from_bytes(cls, data: bytes, version: int = WELCOME_VERSION) -> WelcomeContent:
        """Parse WB of this welcome version (MalformedError if it is not one)."""
        reader = Reader(data)
        joiner, cell_id = reader.take(MEMBER_ID_SIZE), reader.take(CELL_ID_SIZE)
        try:
            cell_name = reader.short(MAX_NAME_BYTES).decode("utf-8", "strict")
            check_name(cell_name)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise MalformedError("bad cell name") from exc
        epoch, secret = reader.u32(), reader.take(SECRET_SIZE)
        head_index, head_hash, head_epoch = reader.u32(), reader.take(HASH_SIZE), reader.u32()
        count = reader.u16()
        if count > MAX_MEMBERS:
            raise MalformedError("too many members")
        members = [_read_member(reader) for _ in range(count)]
        group_keys = (reader.take(GROUP_KEY_SIZE), reader.take(GROUP_KEY_SIZE))
        control_read_key = reader.take(GROUP_KEY_SIZE)
        admin_secrets, extra = reader.long(MAX_ADMIN_SECRETS), reader.long(MAX_EXTRA)
        created_ms = reader.u64()
        invite_binding = reader.take(INVITE_BINDING_SIZE)
        join_box = table = digest = page_key = None
        total = None
        if version == WELCOME_VERSION:
            total = reader.u16()
            if not count <= total <= MAX_MEMBERS:
                raise MalformedError("a member count out of range")
            if total > count:
                digest, page_key = reader.take(LIST_DIGEST_SIZE), reader.take(GROUP_KEY_SIZE)
            join_box = reader.take(JOIN_BOX_SIZE) if reader.flag() else None
            table = reader.take(TABLE_SIZE) if reader.flag() else None
        reader.end()
        return cls(
            joiner=joiner,
            cell_id=cell_id,
            cell_name=cell_name,
            epoch=epoch,
            secret=secret,
            head_index=head_index,
            head_hash=head_hash,
            head_epoch=head_epoch,
            members=tuple(members),
            group_keys=group_keys,
            control_read_key=control_read_key,
            admin_secrets=admin_secrets,
            extra=extra,
            created_ms=created_ms,
            invite_binding=invite_binding,
            join_box=join_box,
            bucket_table=table,
            version=version,
            total_members=total if total is not None and total > count else None,
            list_digest=digest,
            page_key=page_key,
        )

    def pages_needed(self) -> int:
        """How many pages carry the members this welcome does not list (0 if none)."""
        rest = (self.total_members or len(self.members)) - len(self.members)
        return -(-rest // PAGE_MEMBERS)


def encode_members(members: Sequence[tuple[MemberInfo, Role]]) -> bytes:
    """Return members as WB lists them: MemberInfo || role (u8) each."""
    writer = Writer()
    for info, role in members:
        info.write(writer)
        writer.u8(role)
    return writer.bytes()


def list_digest(encoded: bytes) -> bytes:
    """The digest a paged welcome signs for its whole member list (`encode_members`)."""
    return blake2b(_LIST_DOMAIN + encoded)


def seal_welcome_pages(
    page_key: bytes, joiner: bytes, members: Sequence[tuple[MemberInfo, Role]], rng: Rng
) -> list[bytes]:
    """Return the pages with `members` (the welcome's rest, ascending id), in order.

    A page: version (1) || nonce (24) || AEAD(page key, nonce, ad = "cellrelay/3
    welcome-page" || 0x00 || joiner id || page index (u16), page index (u16) || count (u16)
    || members), padded so the whole page is one byte short of an envelope size class (the
    join mailbox's kind byte makes it one).
    """
    pages = []
    for index, start in enumerate(range(0, len(members), PAGE_MEMBERS)):
        chunk = members[start : start + PAGE_MEMBERS]
        plain = Writer().u16(index).u16(len(chunk)).raw(encode_members(chunk)).bytes()
        size = bucket_for(_PAGE_HEAD + len(plain) + 1 + AEAD_TAG_SIZE + 1) - 1  # + kind byte
        nonce = rng(XCHACHA20POLY1305_NONCE_SIZE)
        ad = _PAGE_DOMAIN + joiner + index.to_bytes(2, "big")
        sealed = xchacha20poly1305_encrypt(
            page_key, nonce, ad, pad(plain, size - _PAGE_HEAD - AEAD_TAG_SIZE)
        )
        pages.append(bytes([PAGE_VERSION]) + nonce + sealed)
    return pages


def open_welcome_page(
    page_key: bytes, joiner: bytes, index: int, page: bytes
) -> list[tuple[MemberInfo, Role]]:
    """Return the members of page `index` of a welcome for `joiner`.

    Raises:
        MalformedError: not a page, or not page `index`, or it does not parse.
        TamperedError: it does not open under the welcome's page key.
    """
    if len(page) <= _PAGE_HEAD + AEAD_TAG_SIZE or page[0] != PAGE_VERSION:
        raise MalformedError("not a welcome page")
    ad = _PAGE_DOMAIN + joiner + index.to_bytes(2, "big")
    try:
        padded = xchacha20poly1305_decrypt(page_key, page[1:_PAGE_HEAD], ad, page[_PAGE_HEAD:])
    except CryptoError as exc:
        raise TamperedError("a welcome page does not open") from exc
    reader = Reader(unpad(padded))
    if reader.u16() != index:
        raise MalformedError("a welcome page out of place")
    count = reader.u16()
    if not 0 < count <= PAGE_MEMBERS:
        raise MalformedError("a welcome page's size is out of range")
    members = [_read_member(reader) for _ in range(count)]
    reader.end()
    return members


def _read_member(reader: Reader) -> tuple[MemberInfo, Role]:
    info = MemberInfo.read(reader)
    role = reader.u8()
    if role > max(Role):
        raise MalformedError("bad role")
    return info, Role(role)


def _welcome_key(
    shared: bytes | bytearray, ephemeral_pub: bytes, joiner_dh_pub: bytes
) -> bytearray:
    return kdf(shared, WELCOME, ephemeral_pub + joiner_dh_pub)


def seal_welcome(
    *,
    signer: Identity,
    content: WelcomeContent,
    joiner_dh_pub: bytes,
    ephemeral_private: bytearray,
    nonce: bytes,
) -> bytes:
    """Return a welcome: version (content.version) || ephemeral public key || nonce || sealed (signer id ||
    signature || WB, padded so the whole welcome is one byte short of a size class: the join
    mailbox's kind byte makes it one)."""
    ephemeral_pub = x25519_public_from_private(ephemeral_private)
    shared = x25519(ephemeral_private, joiner_dh_pub)
    key = _welcome_key(shared, ephemeral_pub, joiner_dh_pub)
    zero(shared)
    wb = content.to_bytes()
    inner = signer.member_id + signer.sign(_WELCOME_SIGN_DOMAINS[content.version] + wb) + wb
    # One byte short of a size class: the join mailbox puts its kind byte in front (§C4).
    size = bucket_for(len(inner) + 1 + _WELCOME_OVERHEAD + 1) - 1
    padded = pad(inner, size - _WELCOME_OVERHEAD)
    head = bytes([content.version]) + ephemeral_pub + nonce
    try:
        return head + xchacha20poly1305_encrypt(
            key, nonce, _WELCOME_DOMAIN + head + joiner_dh_pub, padded
        )
    finally:
        zero(key)


def open_welcome(identity: Identity, welcome: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (signer id, signature, WB) from a welcome sealed for `identity`.

    The welcome's version is its first byte (2 or 3). The caller verifies the signature against the signer's key in the member list.

    Raises:
        MalformedError: not a welcome.
        TamperedError: it does not authenticate (not for this identity, or altered).
    """
    if len(welcome) <= _WELCOME_OVERHEAD or welcome[0] not in READABLE_WELCOMES:
        raise MalformedError("not a welcome (or one of another version)")
    ephemeral_pub = welcome[1 : 1 + X25519_KEY_SIZE]
    nonce = welcome[1 + X25519_KEY_SIZE : _WELCOME_HEAD]
    try:
        shared = identity.dh(ephemeral_pub)
    except CryptoError as exc:
        raise TamperedError("welcome does not authenticate") from exc
    key = _welcome_key(shared, ephemeral_pub, identity.dh_pub)
    zero(shared)
    ad = _WELCOME_DOMAIN + welcome[:_WELCOME_HEAD] + identity.dh_pub
    try:
        padded = xchacha20poly1305_decrypt(key, nonce, ad, welcome[_WELCOME_HEAD:])
    except CryptoError as exc:
        raise TamperedError("welcome does not authenticate") from exc
    finally:
        zero(key)
    inner = unpad(padded)
    if len(inner) < MEMBER_ID_SIZE + ED25519_SIGNATURE_SIZE:
        raise MalformedError("welcome too short")
    signer, rest = inner[:MEMBER_ID_SIZE], inner[MEMBER_ID_SIZE:]
    return signer, rest[:ED25519_SIGNATURE_SIZE], rest[ED25519_SIGNATURE_SIZE:]


def verify_welcome(
    signer: MemberInfo, signature: bytes, wb: bytes, version: int = WELCOME_VERSION
) -> None:
    """Check the welcoming admin's signature over WB (BadSignatureError if wrong)."""
    try:
        ed25519_verify(signer.sign_pub, _WELCOME_SIGN_DOMAINS[version] + wb, signature)
    except CryptoError as exc:
        raise BadSignatureError("bad welcome signature") from exc
