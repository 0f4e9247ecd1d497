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
    "WELCOME_LINGER",
    "Invite",
    "InviteChecksumError",
    "InviteError",
    "InviteExpiredError",
]

INVITE_PREFIX: Final = "cellrelay://join/"
INVITE_FORMAT: Final = 1  # the first byte of the binary form
INVITE_SECRET_SIZE: Final = 32  # 256 bits: the invite secret, and each key derived from it
_ID_SIZE: Final = 16  # cell ids and mailbox ids (docs/protocol.md §1)
_KEY_SIZE: Final = 32  # X25519 and Ed25519 public keys
INVITE_CHECKSUM_SIZE: Final = 4  # the CRC-32 after the binary form, in the text form only
# The largest valid link: 170 fixed bytes, a 255-byte host, a 64-character name of 4-byte
# characters and the checksum make 685 bytes, 914 base64 characters and the prefix.
# Anything longer is refused before decoding.
MAX_INVITE_LINK: Final = 1_000
_MAX_HOST_BYTES: Final = 255  # the host's length is one byte
_MAX_EXPIRY: Final = 2**32 - 1  # four bytes of unix seconds: early 2106

# format, expires_at, relay key, port, cell id, join mailbox, secret, admin Ed25519 key,
# admin X25519 key, host length, name length; then the host and the cell name. Both
# lengths are explicit, so a link cut short or run on never decodes (a name taking "the
# rest" would decode a truncated link as a shorter name). 170 bytes; docs/protocol.md Part 3
# §3.1 gives the offsets (a test checks them).
_FIXED: Final = struct.Struct(">BI32sH16s16s32s32s32sBH")

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
    if first == INVITE_FORMAT:
        return
    if first > INVITE_FORMAT:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite:
    """An invitation to one cell, to be passed as a link or a QR code.

    Build one with the admin's keys and the join mailbox (`secret` defaults to 32 fresh
    random bytes); `to_link()` gives the text, `Invite.parse(text)` reads it back.
    Everything but the expiry is hidden from `repr`, because the invite is a secret.
    """

    relay: RelayAddress
    cell_id: bytes = field(repr=False)
    cell_name: str = field(repr=False)
    join_mailbox: MailboxId = field(repr=False)
    admin_sign_key: bytes = field(repr=False)  # Ed25519: verifies the admin's answer
    admin_box_key: bytes = field(repr=False)  # X25519: the join request is sealed to it
    expires_at: int  # unix seconds
    secret: bytes = field(default_factory=_new_secret, repr=False)

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
        if len(self.relay.host.encode()) > _MAX_HOST_BYTES:
            raise InviteError(f"the relay's host name is longer than {_MAX_HOST_BYTES} bytes")

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
        """Return the binary form (docs/protocol.md §C3.1)."""
        host = self.relay.host.encode()
        name = self.cell_name.encode()
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
        _check_format(data[0])
        if len(data) < _FIXED.size:
            raise InviteError("the invite is cut short; check it was copied whole")
        (_, expires_at, relay_key, port, cell_id, mailbox, secret, sign_key, box_key, *lengths) = (
            _FIXED.unpack_from(data)
        )
        host_end = _FIXED.size + lengths[0]
        end = host_end + lengths[1]
        if len(data) < end:
            raise InviteError("the invite is cut short; check it was copied whole")
        if len(data) > end:
            raise InviteError(
                "the invite has extra characters at the end; check it was copied alone"
            )
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
        if head:
            _check_format(head[0])
        if len(head) < _FIXED.size:
            raise InviteError("the invite is cut short; check it was copied whole")
        total = _FIXED.size + sum(_FIXED.unpack_from(head)[-2:]) + INVITE_CHECKSUM_SIZE
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
