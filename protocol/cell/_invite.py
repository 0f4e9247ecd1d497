"""Invite links: everything a new member needs to ask a cell's admin to let them in.

An invite names the relay (address and pinned static key), the cell (id and name), a
*join mailbox* on that relay where the joiner posts a request and reads the admin's
answer, the admin's identity public keys (X25519 to seal the request to the admin, Ed25519
to verify the answer), an expiry, and one 32-byte *invite secret*. Three keys are derived
from the secret (docs/protocol.md Part 3 §3.3): the Ed25519 seeds of the join mailbox's
read and write capabilities, and the join secret that proves, inside the sealed request,
that the joiner holds this invite (the relay could otherwise inject requests: it does not
check capabilities against itself). Carrying one secret rather than three keeps the link
near 300 characters, small enough for a QR code a phone reads off a terminal.

The admin makes one join mailbox per invite, so an invite is single-use (it admits one
request; the admin's client deletes the mailbox once the invite has expired) and the relay
cannot link joiners across invites.

**An invite is as sensitive as a password until it expires or is used**: whoever holds it
can ask to join, read the admin's answer to that request and fill the join mailbox.
Send it over a channel you trust, never post it publicly, and keep expiries short.

The text form is `cellrelay://join/` followed by, in unpadded base64url, the binary form
and its CRC-32 (4 bytes, big-endian). The binary form is versioned (first byte) and
fixed-layout (docs/protocol.md Part 3 §C3.1); decoding is strict (canonical base64, exact
lengths, every field checked). The checksum is for people, not attackers: a link typed or
read out by hand with one wrong character used to pass every check but the handshake, and
read, after 21 s of retries, as "could not reach the relay" (issue 10). CRC-32 catches every
change of one character (at most 12 changed bits, always within 32) and every swap of two
neighbours, before anything is sent; an altered invite still fails the handshake, the
join secret check or the admin's signature, and never silently reaches another cell.
Errors are `InviteError`s whose one-line message tells a person what to do.

A cell may live on up to three relays (issue 13, docs/design.md "A cell on several
relays"). Its invite then names every relay, each with its own join mailbox, so a joiner
gets in while one relay is down: format 2 (§C3.1a). A one-relay invite is always format 1,
byte for byte what earlier versions wrote and read, so one invite still has one text and
an older joiner reads every invite to a one-relay cell.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

from .._crypto import random_bytes
from .._errors import CellrelayError
from ..wire._address import AddressError, RelayAddress
from ..wire._messages import MailboxId
from ._content import MAX_NAME, ContentFieldSpec

__all__ = [
    "INVITE_CHECKSUM_SIZE",
    "INVITE_FORMAT",
    "INVITE_JOIN_PROOF",
    "INVITE_JOIN_READ",
    "INVITE_JOIN_WRITE",
    "INVITE_PREFIX",
    "INVITE_SECRET_SIZE",
    "INVITE_WELCOME",
    "MAX_INVITE_LINK",
    "MAX_INVITE_RELAYS",
    "WELCOME_LINGER",
    "Invite",
    "InviteChecksumError",
    "InviteError",
    "InviteExpiredError",
    "InviteRelay",
]

INVITE_PREFIX: Final = "cellrelay://join/"
INVITE_FORMAT: Final = 1  # the first byte of the binary form: one relay
INVITE_FORMAT_RELAYS: Final = 2  # the first byte of the binary form: two or three relays
MAX_INVITE_RELAYS: Final = 3
INVITE_SECRET_SIZE: Final = 32  # 256 bits: the invite secret, and each key derived from it
_ID_SIZE: Final = 16  # cell ids and mailbox ids (docs/protocol.md §1)
_KEY_SIZE: Final = 32  # X25519 and Ed25519 public keys
INVITE_CHECKSUM_SIZE: Final = 4  # the CRC-32 after the binary form, in the text form only
# The largest valid link: 170 fixed bytes, a 255-byte host, a 64-character name of 4-byte
# characters and the checksum make 685 bytes, 914 base64 characters and the prefix.
# Anything longer is refused before decoding, and no invite is made that is longer
# (format 2 could otherwise reach 1,731: three 255-byte hosts).
MAX_INVITE_LINK: Final = 1_000
# The largest binary form whose link fits: 17 + ceil(4 (n + 4) / 3) <= 1,000.
_MAX_BINARY: Final = 733
_MAX_HOST_BYTES: Final = 255  # the host's length is one byte
_MAX_EXPIRY: Final = 2**32 - 1  # four bytes of unix seconds: early 2106

# format, expires_at, relay key, port, cell id, join mailbox, secret, admin Ed25519 key,
# admin X25519 key, host length, name length; then the host and the cell name. Both
# lengths are explicit, so a link cut short or run on never decodes (a name taking "the
# rest" would decode a truncated link as a shorter name). 170 bytes; docs/protocol.md Part 3
# §3.1 gives the offsets (a test checks them).
_FIXED: Final = struct.Struct(">BI32sH16s16s32s32s32sBH")
# Format 2 (§C3.1a): format, expires_at, cell id, secret, admin Ed25519 key, admin X25519
# key, relay count R, name length; then R host lengths, R x (relay key, port, join
# mailbox), the R hosts and the name. Every length comes before any variable part, so the
# first 120 + R bytes give the whole size (a link cut short or run on never decodes).
_FIXED2: Final = struct.Struct(">BI16s32s32s32sBH")
_RELAY2: Final = struct.Struct(">32sH16s")

# Purposes of the keys derived from the invite secret, in the group layer's KDF convention
# (docs/protocol.md Part 2, "Key derivation"): BLAKE2b(digest_size=32, key=secret,
# data=purpose || 0x00 || context), here with an empty context.
INVITE_JOIN_READ: Final = b"cellrelay/1 invite join-read"
INVITE_JOIN_WRITE: Final = b"cellrelay/1 invite join-write"
INVITE_JOIN_PROOF: Final = b"cellrelay/1 invite join-proof"
# The welcome's commitment to its invite (docs/protocol.md §G7, §C3.3): the same KDF, with
# the cell id as context, so a welcome names one invite of one cell and reveals nothing of
# the secret (a keyed BLAKE2b is a PRF of its key).
INVITE_WELCOME: Final = b"cellrelay/1 invite welcome"
# A welcome is published with at least an hour to live (an admin may approve just before
# the invite expires); past the invite's expiry plus this, a joiner refuses any welcome.
WELCOME_LINGER: Final = 3600

_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_WHITESPACE: Final = re.compile(r"[ \t\r\n]+")
_NAME_SPEC: Final = ContentFieldSpec("line", 1, MAX_NAME)

_DAMAGED: Final = "the invite is damaged; check it was copied whole, or ask for a new one"
_TYPO: Final = (
    "the invite has a typo (its checksum does not match); check it was copied exactly,"
    " or ask for a new one"
)


class InviteError(CellrelayError, ValueError):
    """An invite link is malformed, expired or unusable; the message says what to do."""


class InviteChecksumError(InviteError):
    """The invite's CRC-32 does not match (§C3.2): a typo, caught before connecting."""


class InviteExpiredError(InviteError):
    """The invite has expired: ask the cell's admin for a new one."""


def _check_format(first: int) -> None:
    if first in (INVITE_FORMAT, INVITE_FORMAT_RELAYS):
        return
    if first > INVITE_FORMAT_RELAYS:
        raise InviteError(
            f"this invite has format {first}, which this cellrelay does not know;"
            " upgrade cellrelay, or check the invite was copied whole"
        )
    raise InviteError(_DAMAGED)


def _checksum(data: bytes) -> bytes:
    """CRC-32 of `data` (ISO-HDLC, as zlib and PNG compute it), 4 bytes big-endian (§C3.2)."""
    return zlib.crc32(data).to_bytes(INVITE_CHECKSUM_SIZE, "big")


def _derive(secret: bytes, purpose: bytes, context: bytes = b"") -> bytes:
    data = purpose + b"\x00" + context
    return hashlib.blake2b(data, key=secret, digest_size=INVITE_SECRET_SIZE).digest()


def _new_secret() -> bytes:
    return random_bytes(INVITE_SECRET_SIZE)


def _size(head: bytes) -> int:
    """The binary form's whole size, from its header; `head` is at least its first byte.

    Raises:
        InviteError: the header is cut short, or names a relay count other than 2..3.
    """
    _check_format(head[0])
    if head[0] == INVITE_FORMAT:
        if len(head) < _FIXED.size:
            raise InviteError("the invite is cut short; check it was copied whole")
        host_length, name_length = _FIXED.unpack_from(head)[-2:]
        return _FIXED.size + int(host_length) + int(name_length)
    if len(head) < _FIXED2.size:
        raise InviteError("the invite is cut short; check it was copied whole")
    count, name_length = (int(value) for value in _FIXED2.unpack_from(head)[-2:])
    if not 2 <= count <= MAX_INVITE_RELAYS:
        raise InviteError(_DAMAGED)
    lengths_end = _FIXED2.size + count
    if len(head) < lengths_end:
        raise InviteError("the invite is cut short; check it was copied whole")
    hosts = sum(head[_FIXED2.size : lengths_end])
    return lengths_end + count * _RELAY2.size + hosts + name_length


@dataclass(frozen=True, slots=True)
class InviteRelay:
    """One relay of an invite, with the join mailbox the admin made on it."""

    relay: RelayAddress
    join_mailbox: MailboxId = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite:
    """An invitation to one cell, to be passed as a link or a QR code.

    Build one with the admin's keys and the join mailbox (`secret` defaults to 32 fresh
    random bytes); `to_link()` gives the text, `Invite.parse(text)` reads it back.
    Everything but the expiry is hidden from `repr`, because the invite is a secret.

    `relay` and `join_mailbox` are the first relay's; a cell on several relays lists the
    others, with their own join mailboxes, in `more_relays` (at most two), and `relays`
    gives them all in order.
    """

    relay: RelayAddress
    cell_id: bytes = field(repr=False)
    cell_name: str = field(repr=False)
    join_mailbox: MailboxId = field(repr=False)
    admin_sign_key: bytes = field(repr=False)  # Ed25519: verifies the admin's answer
    admin_box_key: bytes = field(repr=False)  # X25519: the join request is sealed to it
    expires_at: int  # unix seconds
    secret: bytes = field(default_factory=_new_secret, repr=False)
    more_relays: tuple[InviteRelay, ...] = ()

    def __post_init__(self) -> None:
        for name, size in (
            ("cell_id", _ID_SIZE),
            ("join_mailbox", _ID_SIZE),
            ("admin_sign_key", _KEY_SIZE),
            ("admin_box_key", _KEY_SIZE),
            ("secret", INVITE_SECRET_SIZE),
        ):
            value = getattr(self, name)
            if type(value) is not bytes or len(value) != size:
                raise InviteError(f"an invite's {name} is {size} bytes")
        if _NAME_SPEC.check(self.cell_name) is not None:
            raise InviteError(
                f"a cell name is 1 to {MAX_NAME} characters on one line, without control characters"
            )
        if type(self.expires_at) is not int or not 0 < self.expires_at <= _MAX_EXPIRY:
            raise InviteError("an invite's expiry is a unix time in 1..4294967295")
        if type(self.more_relays) is not tuple or len(self.more_relays) >= MAX_INVITE_RELAYS:
            raise InviteError(f"an invite names 1 to {MAX_INVITE_RELAYS} relays")
        for other in self.more_relays:
            if type(other) is not InviteRelay:
                raise InviteError("an invite's more_relays are InviteRelay records")
            mailbox = other.join_mailbox
            if type(mailbox) is not bytes or len(mailbox) != _ID_SIZE:
                raise InviteError(f"an invite's join_mailbox is {_ID_SIZE} bytes")
        relays = [entry.relay for entry in self.relays]
        for relay in relays:
            if type(relay) is not RelayAddress:
                raise InviteError("an invite's relay is a RelayAddress")
            if len(relay.host.encode()) > _MAX_HOST_BYTES:
                raise InviteError(f"the relay's host name is longer than {_MAX_HOST_BYTES} bytes")
        if len({relay.public_key for relay in relays}) < len(relays) or len(
            {(relay.host.lower(), relay.port) for relay in relays}
        ) < len(relays):
            raise InviteError("an invite names each relay once")
        if self._binary_size() > _MAX_BINARY:
            raise InviteError(
                f"the relays' host names and the cell name make a link longer than"
                f" {MAX_INVITE_LINK} characters; use shorter ones"
            )

    @property
    def relays(self) -> tuple[InviteRelay, ...]:
        """Every relay of the invite, the first (`relay`, `join_mailbox`) first."""
        return (InviteRelay(self.relay, self.join_mailbox), *self.more_relays)

    def _binary_size(self) -> int:
        hosts = sum(len(entry.relay.host.encode()) for entry in self.relays)
        name = len(self.cell_name.encode())
        if not self.more_relays:
            return _FIXED.size + hosts + name
        count = len(self.relays)
        return _FIXED2.size + count * (1 + _RELAY2.size) + hosts + name

    # -- derived keys -----------------------------------------------------------------

    @property
    def join_read_seed(self) -> bytes:
        """The Ed25519 seed of the join mailbox's read capability."""
        return _derive(self.secret, INVITE_JOIN_READ)

    @property
    def join_write_seed(self) -> bytes:
        """The Ed25519 seed of the join mailbox's write capability."""
        return _derive(self.secret, INVITE_JOIN_WRITE)

    @property
    def join_secret(self) -> bytes:
        """The 32 bytes a join request carries (sealed to the admin) to prove it holds the invite."""
        return _derive(self.secret, INVITE_JOIN_PROOF)

    @property
    def welcome_binding(self) -> bytes:
        """The 32 bytes a welcome answering this invite carries (signed, §G7): its commitment."""
        return _derive(self.secret, INVITE_WELCOME, self.cell_id)

    # -- expiry -----------------------------------------------------------------------

    def check_fresh(self, now: float) -> None:
        """Raise `InviteError` if the invite has expired at `now` (unix seconds)."""
        if now >= self.expires_at:
            when = datetime.datetime.fromtimestamp(self.expires_at, tz=datetime.UTC)
            raise InviteExpiredError(
                f"this invite expired on {when:%Y-%m-%d %H:%M} UTC; ask the cell's admin for a new one"
            )

    # -- encodings --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Return the binary form: format 1 for one relay (docs/protocol.md §C3.1), else 2 (§C3.1a)."""
        name = self.cell_name.encode()
        if self.more_relays:
            relays = self.relays
            hosts = [entry.relay.host.encode() for entry in relays]
            return b"".join(
                [
                    _FIXED2.pack(
                        INVITE_FORMAT_RELAYS,
                        self.expires_at,
                        self.cell_id,
                        self.secret,
                        self.admin_sign_key,
                        self.admin_box_key,
                        len(relays),
                        len(name),
                    ),
                    bytes(len(host) for host in hosts),
                    *(
                        _RELAY2.pack(entry.relay.public_key, entry.relay.port, entry.join_mailbox)
                        for entry in relays
                    ),
                    *hosts,
                    name,
                ]
            )
        host = self.relay.host.encode()
        return (
            _FIXED.pack(
                INVITE_FORMAT,
                self.expires_at,
                self.relay.public_key,
                self.relay.port,
                self.cell_id,
                self.join_mailbox,
                self.secret,
                self.admin_sign_key,
                self.admin_box_key,
                len(host),
                len(name),
            )
            + host
            + name
        )

    def to_link(self) -> str:
        """Return the text form: `cellrelay://join/`, then the binary form and its CRC-32 in base64url."""
        data = self.to_bytes()
        body = base64.urlsafe_b64encode(data + _checksum(data)).rstrip(b"=").decode()
        return INVITE_PREFIX + body

    @classmethod
    def from_bytes(cls, data: bytes) -> Invite:
        """Decode the binary form, strictly.

        Raises:
            InviteError: a newer format, a wrong length, or a field that fails its check.
        """
        if not data:
            raise InviteError("the invite is empty")
        end = _size(data)
        if len(data) < end:
            raise InviteError("the invite is cut short; check it was copied whole")
        if len(data) > end:
            raise InviteError(
                "the invite has extra characters at the end; check it was copied alone"
            )
        if data[0] == INVITE_FORMAT_RELAYS:
            return cls._from_format_2(data)
        (_, expires_at, relay_key, port, cell_id, mailbox, secret, sign_key, box_key, *lengths) = (
            _FIXED.unpack_from(data)
        )
        host_end = _FIXED.size + lengths[0]
        try:
            host = data[_FIXED.size : host_end].decode()
            name = data[host_end:end].decode()
            relay = RelayAddress(host, port, relay_key)
            return cls(
                relay=relay,
                cell_id=cell_id,
                cell_name=name,
                join_mailbox=MailboxId(mailbox),
                admin_sign_key=sign_key,
                admin_box_key=box_key,
                expires_at=expires_at,
                secret=secret,
            )
        except (UnicodeDecodeError, AddressError, InviteError):
            raise InviteError(_DAMAGED) from None

    @classmethod
    def _from_format_2(cls, data: bytes) -> Invite:
        # `data` has exactly the size its header gives (`_size`), and a count of 2..3.
        (_, expires_at, cell_id, secret, sign_key, box_key, count, _) = _FIXED2.unpack_from(data)
        host_lengths = data[_FIXED2.size : _FIXED2.size + count]
        offset = _FIXED2.size + count
        fixed = []
        for _index in range(count):
            fixed.append(_RELAY2.unpack_from(data, offset))
            offset += _RELAY2.size
        try:
            relays = []
            for (key, port, mailbox), length in zip(fixed, host_lengths, strict=True):
                host = data[offset : offset + length].decode()
                offset += length
                relays.append(InviteRelay(RelayAddress(host, port, key), MailboxId(mailbox)))
            name = data[offset:].decode()
            return cls(
                relay=relays[0].relay,
                cell_id=cell_id,
                cell_name=name,
                join_mailbox=relays[0].join_mailbox,
                admin_sign_key=sign_key,
                admin_box_key=box_key,
                expires_at=expires_at,
                secret=secret,
                more_relays=tuple(relays[1:]),
            )
        except (UnicodeDecodeError, AddressError, InviteError):
            raise InviteError(_DAMAGED) from None

    @classmethod
    def parse(cls, text: str) -> Invite:
        """Read an invite link. Spaces and line breaks anywhere in it are ignored.

        This does not check the expiry: call `check_fresh(now)` as well.

        Raises:
            InviteError: with a one-line message a person can act on.
        """
        # Bounded before any work; whitespace (a link wrapped in an email) may pad it out.
        if len(text) > 4 * MAX_INVITE_LINK:
            raise InviteError("this is too long to be an invite link")
        text = _WHITESPACE.sub("", text)
        if not text.startswith(INVITE_PREFIX):
            if re.match(r"cellrelay://[^/]*@", text):
                raise InviteError(
                    "this is a relay address, not an invite; ask the cell's admin for an invite"
                )
            raise InviteError(f"this is not an invite link (an invite starts with {INVITE_PREFIX})")
        if len(text) > MAX_INVITE_LINK:
            raise InviteError("this is too long to be an invite link")
        body = text[len(INVITE_PREFIX) :]
        if not _BASE64URL.fullmatch(body):
            raise InviteError(
                "the invite contains a character no invite has; check it was copied whole"
            )
        # Say "cut short" or "extra characters" when the header's lengths show it: those are
        # what a person can fix. The complete 4-character groups always decode.
        head = base64.urlsafe_b64decode(body[: len(body) - len(body) % 4])
        if not head:
            raise InviteError("the invite is cut short; check it was copied whole")
        total = _size(head) + INVITE_CHECKSUM_SIZE
        expected = (4 * total + 2) // 3  # unpadded base64 of `total` bytes
        if len(body) < expected:
            raise InviteError("the invite is cut short; check it was copied whole")
        if len(body) > expected:
            raise InviteError(
                "the invite has extra characters at the end; check it was copied alone"
            )
        # The length is now that of some base64 text (never 4n + 1), so this decodes.
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        # Canonical only: the unused low bits of the last character must be zero, so one
        # invite has one text (and a changed character cannot decode to the same invite).
        if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != body:
            raise InviteError(_DAMAGED)
        binary, check = data[:-INVITE_CHECKSUM_SIZE], data[-INVITE_CHECKSUM_SIZE:]
        if _checksum(binary) != check:
            raise InviteChecksumError(_TYPO)
        return cls.from_bytes(binary)
