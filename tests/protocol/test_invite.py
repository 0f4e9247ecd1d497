"""Invite links: round trips, the byte layout, derived keys, and a clear error for every fault."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable

import nacl.encoding
import nacl.hash
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol.cell._invite import (
    INVITE_JOIN_PROOF,
    INVITE_JOIN_READ,
    INVITE_JOIN_WRITE,
    INVITE_PREFIX,
    MAX_INVITE_LINK,
    Invite,
    InviteError,
)
from cellrelay.protocol.wire._address import RelayAddress
from cellrelay.protocol.wire._messages import MailboxId

from .content_strategies import LINE_CHARS

RELAY_KEY = bytes(range(32))
EXPIRES = 1_767_830_400  # 2026-01-08T00:00:00Z


def example(**changes: object) -> Invite:
    """The invite of docs/protocol.md §C3.4."""
    fields: dict[str, object] = {
        "relay": RelayAddress("relay.example.org", 7446, RELAY_KEY),
        "cell_id": bytes(range(0x10, 0x20)),
        "cell_name": "Eastside Rapid Response",
        "join_mailbox": MailboxId(bytes(range(0x20, 0x30))),
        "admin_sign_key": bytes(range(0x40, 0x60)),
        "admin_box_key": bytes(range(0x60, 0x80)),
        "expires_at": EXPIRES,
        "secret": bytes(range(0x80, 0xA0)),
    }
    fields.update(changes)
    return Invite(**fields)  # type: ignore[arg-type]


def error_of(text: str) -> str:
    with pytest.raises(InviteError) as info:
        Invite.parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def link_of(data: bytes) -> str:
    """The text form of any bytes, with their CRC-32 after them, as §C3.2 says."""
    checked = data + zlib.crc32(data).to_bytes(4, "big")
    return INVITE_PREFIX + base64.urlsafe_b64encode(checked).rstrip(b"=").decode()


# -- round trips and size -------------------------------------------------------------------

hosts = st.one_of(
    st.sampled_from(["relay.example.org", "localhost", "a", "x" * 63 + "." + "y" * 63]),
    st.ip_addresses().map(str),
)
invites = st.builds(
    Invite,
    relay=st.builds(
        RelayAddress, hosts, st.integers(1, 65535), st.binary(min_size=32, max_size=32)
    ),
    cell_id=st.binary(min_size=16, max_size=16),
    cell_name=st.text(LINE_CHARS, min_size=1, max_size=64),
    join_mailbox=st.binary(min_size=16, max_size=16).map(MailboxId),
    admin_sign_key=st.binary(min_size=32, max_size=32),
    admin_box_key=st.binary(min_size=32, max_size=32),
    expires_at=st.integers(1, 2**32 - 1),
    secret=st.binary(min_size=32, max_size=32),
)


@given(invites)
def test_any_invite_round_trips(invite: Invite) -> None:
    link = invite.to_link()
    assert link.startswith(INVITE_PREFIX)
    assert len(link) <= MAX_INVITE_LINK
    assert Invite.parse(link) == invite
    assert Invite.from_bytes(invite.to_bytes()) == invite
    host, name = invite.relay.host.encode(), invite.cell_name.encode()
    assert len(invite.to_bytes()) == 170 + len(host) + len(name)


def test_the_example_link() -> None:
    """docs/protocol.md §C3.4, byte for byte: the 210 bytes, their CRC-32, 303 characters."""
    link = example().to_link()
    assert len(link) == 303
    assert link == (
        "cellrelay://join/AWle84AAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHx0WEBESExQVFhcYGRo"
        "bHB0eHyAhIiMkJSYnKCkqKywtLi-AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en0BBQkNERUZHSEl"
        "KS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8RABdyZWxheS5"
        "leGFtcGxlLm9yZ0Vhc3RzaWRlIFJhcGlkIFJlc3BvbnNlPNnboQ"
    )
    assert zlib.crc32(example().to_bytes()) == 0x3CD9DBA1
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 of §C3.2, by its check value


def test_every_typo_of_one_character_is_caught_before_connecting() -> None:
    """Issue 10: one wrong character in the relay key read as "could not reach the relay".

    Every character of the example's body, changed to every other base64url character, is
    refused: by the checksum, or (in the header's lengths, or the last character's unused
    bits) by the length or canonical checks. None decodes to an invite.
    """
    link = example().to_link()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    messages: set[str] = set()
    for position in range(len(INVITE_PREFIX), len(link)):
        for char in alphabet:
            if char != link[position]:
                messages.add(error_of(link[:position] + char + link[position + 1 :]))
    typo = "the invite has a typo (its checksum does not match); check it was copied exactly, or ask for a new one"
    assert typo in messages
    assert messages <= {
        typo,
        "the invite is cut short; check it was copied whole",
        "the invite has extra characters at the end; check it was copied alone",
        "the invite is damaged; check it was copied whole, or ask for a new one",
        "this invite has format 2, which this cellrelay does not know; upgrade cellrelay, or check the invite was copied whole",
    } | {m for m in messages if m.startswith("this invite has format ")}


def test_two_neighbours_swapped_are_caught() -> None:
    link = example().to_link()
    for position in range(len(INVITE_PREFIX) + 10, len(link) - 1):
        a, b = link[position], link[position + 1]
        if a != b:
            with pytest.raises(InviteError):
                Invite.parse(link[:position] + b + a + link[position + 2 :])


def test_the_byte_layout() -> None:
    """Offsets as docs/protocol.md §C3.1 gives them."""
    data = example().to_bytes()
    assert data[0] == 1
    assert int.from_bytes(data[1:5], "big") == EXPIRES
    assert data[5:37] == RELAY_KEY
    assert int.from_bytes(data[37:39], "big") == 7446
    assert data[39:55] == bytes(range(0x10, 0x20))
    assert data[55:71] == bytes(range(0x20, 0x30))
    assert data[71:103] == bytes(range(0x80, 0xA0))
    assert data[103:135] == bytes(range(0x40, 0x60))
    assert data[135:167] == bytes(range(0x60, 0x80))
    assert data[167] == len("relay.example.org")
    assert int.from_bytes(data[168:170], "big") == len("Eastside Rapid Response")
    assert data[170:187] == b"relay.example.org"
    assert data[187:] == b"Eastside Rapid Response"


def test_whitespace_in_a_link_is_ignored() -> None:
    link = example().to_link()
    wrapped = "  " + link[:60] + "\n" + link[60:140] + "\r\n\t" + link[140:] + "\n"
    assert Invite.parse(wrapped) == example()


def test_ipv6_relay() -> None:
    invite = example(relay=RelayAddress("2001:db8::1", 443, RELAY_KEY))
    assert Invite.parse(invite.to_link()).relay.host == "2001:db8::1"


# -- derived keys ---------------------------------------------------------------------------


def test_derived_keys_known_answers() -> None:
    invite = example()
    assert invite.join_read_seed.hex() == (
        "edf203dce4e7e768126d79ab589a5d0f89865bdee9439904361674c1c4c2feb3"
    )
    assert invite.join_write_seed.hex() == (
        "dafe3eade70a151ba2a555e19edf44fe2fd405663bd1f24042f4685a0b8e17fc"
    )
    assert invite.join_secret.hex() == (
        "1791adf84cc26fcf2c6ec06c15abbce27122ebc7a868dbbdd30569fe678bafbf"
    )


def test_derived_keys_follow_the_documented_formula() -> None:
    """Checked with libsodium's BLAKE2b (the code uses hashlib's): two implementations agree."""
    invite = example()
    for purpose, key in (
        (INVITE_JOIN_READ, invite.join_read_seed),
        (INVITE_JOIN_WRITE, invite.join_write_seed),
        (INVITE_JOIN_PROOF, invite.join_secret),
    ):
        expected = nacl.hash.blake2b(
            purpose + b"\x00", digest_size=32, key=invite.secret, encoder=nacl.encoding.RawEncoder
        )
        assert key == expected
    assert len({invite.join_read_seed, invite.join_write_seed, invite.join_secret}) == 3


def test_fresh_secrets_by_default() -> None:
    fields = {
        "relay": RelayAddress("relay.example.org", 7446, RELAY_KEY),
        "cell_id": bytes(16),
        "cell_name": "c",
        "join_mailbox": MailboxId(bytes(16)),
        "admin_sign_key": bytes(32),
        "admin_box_key": bytes(32),
        "expires_at": EXPIRES,
    }
    one, two = Invite(**fields), Invite(**fields)  # type: ignore[arg-type]
    assert one.secret != two.secret
    assert len(one.secret) == 32


# -- expiry ---------------------------------------------------------------------------------


def test_check_fresh() -> None:
    invite = example()
    invite.check_fresh(EXPIRES - 1)
    with pytest.raises(InviteError, match=r"expired on 2026-01-08 00:00 UTC; ask .* for a new one"):
        invite.check_fresh(EXPIRES)


# -- rejections, each with a message a person can act on ------------------------------------


def test_not_an_invite() -> None:
    assert "not an invite link" in error_of("")
    assert "not an invite link" in error_of("https://example.org/join/abc")
    assert "not an invite link" in error_of("CELLRELAY://JOIN/" + example().to_link()[17:])
    assert "relay address, not an invite" in error_of(str(example().relay))


def test_too_long() -> None:
    assert "too long" in error_of(INVITE_PREFIX + "A" * MAX_INVITE_LINK)
    assert "too long" in error_of(" " * (4 * MAX_INVITE_LINK + 1))


@pytest.mark.parametrize("bad", ["=", "+", "/", "*", ".", "\u00e9", "\x00"])
def test_characters_outside_base64url(bad: str) -> None:
    link = example().to_link()
    assert "character no invite has" in error_of(link[:40] + bad + link[41:])
    assert "character no invite has" in error_of(link + bad)


def test_every_truncation_is_cut_short() -> None:
    link = example().to_link()
    for end in range(len(INVITE_PREFIX), len(link)):
        assert "cut short" in error_of(link[:end]), end


@pytest.mark.parametrize("extra", ["A", "AA", "AAA", "AAAA", "hello"])
def test_extra_characters(extra: str) -> None:
    assert "extra characters" in error_of(example().to_link() + extra)


@pytest.mark.parametrize("name", ["Eastside Rapid Response", "Eastside Rapid Respon"])
def test_non_canonical_base64_is_damaged(name: str) -> None:
    link = example(cell_name=name).to_link()
    # 214 or 212 bytes with the checksum: the last character carries 4 or 2 unused low
    # bits, which must be 0.
    unused = {1: 4, 2: 2}[(len(example(cell_name=name).to_bytes()) + 4) % 3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(link[-1])
    assert index % (1 << unused) == 0
    assert Invite.parse(link[:-1] + alphabet[index]) == example(cell_name=name)
    assert "damaged" in error_of(link[:-1] + alphabet[index + 1])


def test_unknown_format() -> None:
    data = bytearray(example().to_bytes())
    data[0] = 2
    assert "format 2" in error_of(link_of(bytes(data)))
    assert "upgrade" in error_of(link_of(bytes(data)))
    data[0] = 0
    assert "damaged" in error_of(link_of(bytes(data)))
    assert "format 2" in error_of(link_of(b"\x02\x00\x00"))  # a short newer invite
    with pytest.raises(InviteError, match="empty"):
        Invite.from_bytes(b"")


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (1, b"\x00\x00\x00\x00"),  # expires_at 0
        (37, b"\x00\x00"),  # port 0
        (167, b"\x00\x00\x28"),  # an empty host (the name takes all 40 bytes)
        (170, b"-"),  # a host may not start with a hyphen
        (170, b"\xff"),  # not UTF-8
        (187, b"\x1b"),  # a control character in the name
        (187, b"\xc3"),  # a name cut inside a UTF-8 sequence
    ],
)
def test_bad_fields_are_damaged(offset: int, value: bytes) -> None:
    data = bytearray(example().to_bytes())
    data[offset : offset + len(value)] = value
    assert "damaged" in error_of(link_of(bytes(data)))


def test_lengths_that_disagree_with_the_payload() -> None:
    data = bytearray(example().to_bytes())
    data[168:170] = (24).to_bytes(2, "big")  # one more name byte than there is
    assert "cut short" in error_of(link_of(bytes(data)))
    with pytest.raises(InviteError, match="cut short"):
        Invite.from_bytes(bytes(data))
    data[168:170] = (22).to_bytes(2, "big")
    assert "extra characters" in error_of(link_of(bytes(data)))
    with pytest.raises(InviteError, match="extra characters"):
        Invite.from_bytes(bytes(data))
    with pytest.raises(InviteError, match="cut short"):
        Invite.from_bytes(example().to_bytes()[:100])
    data[168:170] = (0).to_bytes(2, "big")
    with pytest.raises(InviteError, match="extra characters"):
        Invite.from_bytes(bytes(data))
    assert "damaged" in error_of(link_of(bytes(data[: 170 + 17])))  # an empty name


@given(st.text(max_size=400))
def test_arbitrary_text_gives_an_invite_or_invite_error(text: str) -> None:
    try:
        Invite.parse(text)
    except InviteError as exc:
        message = str(exc)
    else:
        message = ""
    assert "\n" not in message


@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_an_invite_or_invite_error(data: bytes) -> None:
    attempts: list[Callable[[], Invite]] = [
        lambda: Invite.from_bytes(data),
        lambda: Invite.parse(link_of(data)),
    ]
    for attempt in attempts:
        try:
            invite = attempt()
        except InviteError:
            continue
        assert invite.to_bytes() == data  # what is accepted is canonical


@given(invites, st.data())
def test_mutated_links_give_an_invite_or_invite_error(invite: Invite, data: st.DataObject) -> None:
    link = list(invite.to_link())
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(link) - 1))
        link[position] = data.draw(st.characters(max_codepoint=0x7F))
    text = "".join(link)
    try:
        parsed = Invite.parse(text)
    except InviteError:
        return
    assert Invite.parse(parsed.to_link()) == parsed


# -- construction and secrecy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cell_id", bytes(15)),
        ("join_mailbox", bytes(17)),
        ("admin_sign_key", bytes(31)),
        ("admin_box_key", "x" * 32),
        ("secret", bytearray(32)),
        ("cell_name", ""),
        ("cell_name", "x" * 65),
        ("cell_name", "two\nlines"),
        ("expires_at", 0),
        ("expires_at", 2**32),
        ("expires_at", 1.5),
    ],
)
def test_construction_is_validated(name: str, value: object) -> None:
    with pytest.raises(InviteError):
        example(**{name: value})


def test_a_host_too_long_for_one_length_byte() -> None:
    # DNS names stop at 253 characters (RelayAddress checks), but an IPv6 scope id does not.
    host = "fe80::1%" + "x" * 247
    assert len(host) == 255
    assert (
        Invite.parse(example(relay=RelayAddress(host, 1, RELAY_KEY)).to_link()).relay.host == host
    )
    with pytest.raises(InviteError, match="255 bytes"):
        example(relay=RelayAddress(host + "x", 1, RELAY_KEY))


def test_invite_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an invite"):
        Invite.parse("nope")


def test_secrets_are_not_in_repr() -> None:
    invite = example(cell_name="CANARY-8d2e")
    text = repr(invite)
    assert "CANARY" not in text
    for secret in (invite.secret, invite.join_read_seed, invite.join_secret, invite.cell_id):
        assert repr(secret) not in text
        assert secret.hex() not in text
    assert invite.to_link()[len(INVITE_PREFIX) :] not in text
    assert str(EXPIRES) in text


def test_the_welcome_binding_of_the_example() -> None:
    """docs/protocol.md §C3.3: a welcome's commitment to its invite (issue 9, finding 8)."""
    binding = example().welcome_binding
    assert binding.hex() == "ac1bad59bcb449f214e0686330a21f7e5195d211e1f8fa4d1eea776973563ee8"
    assert example(secret=bytes(32)).welcome_binding != binding
    assert example(cell_id=bytes(16)).welcome_binding != binding
