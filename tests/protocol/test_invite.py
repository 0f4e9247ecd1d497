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
    MAX_INVITE_RELAYS,
    Invite,
    InviteError,
    InviteRelay,
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
    data[0] = 3
    assert "format 3" in error_of(link_of(bytes(data)))
    assert "upgrade" in error_of(link_of(bytes(data)))
    data[0] = 0
    assert "damaged" in error_of(link_of(bytes(data)))
    assert "format 3" in error_of(link_of(b"\x03\x00\x00"))  # a short newer invite
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


# -- format 2: a cell on two or three relays (issue 13, §C3.1a) ------------------------------

SECOND = InviteRelay(
    RelayAddress("relay.example.net", 7446, bytes(range(0xA0, 0xC0))),
    MailboxId(bytes(range(0x30, 0x40))),
)
THIRD = InviteRelay(
    RelayAddress("relay.example.com", 7446, bytes(range(0xC0, 0xE0))),
    MailboxId(bytes(range(0xE0, 0xF0))),
)

relay_entries = st.builds(
    InviteRelay,
    st.builds(RelayAddress, hosts, st.integers(1, 65535), st.binary(min_size=32, max_size=32)),
    st.binary(min_size=16, max_size=16).map(MailboxId),
)


@st.composite
def several_relay_invites(draw: st.DrawFn) -> Invite:
    """Invites to cells on one to three relays, skipping the rare draw that is too long."""
    invite = draw(invites)
    more = draw(st.lists(relay_entries, max_size=MAX_INVITE_RELAYS - 1))
    try:
        return Invite(**{**_fields(invite), "more_relays": tuple(more)})  # type: ignore[arg-type]
    except InviteError:
        # Two relays drawn with one key or one address, or hosts that make the link too long.
        return invite


def _fields(invite: Invite) -> dict[str, object]:
    return {name: getattr(invite, name) for name in Invite.__dataclass_fields__}


@given(several_relay_invites())
def test_any_invite_on_several_relays_round_trips(invite: Invite) -> None:
    link = invite.to_link()
    assert len(link) <= MAX_INVITE_LINK
    assert Invite.parse(link) == invite
    assert Invite.from_bytes(invite.to_bytes()) == invite
    hosts_size = sum(len(entry.relay.host.encode()) for entry in invite.relays)
    name_size = len(invite.cell_name.encode())
    if len(invite.relays) == 1:
        assert invite.to_bytes()[0] == 1  # one relay: format 1, as every earlier version wrote
    else:
        assert invite.to_bytes()[0] == 2
        assert len(invite.to_bytes()) == 120 + 51 * len(invite.relays) + hosts_size + name_size
    assert invite.relays[0] == InviteRelay(invite.relay, invite.join_mailbox)


def test_one_relay_is_still_format_1_byte_for_byte() -> None:
    """An invite to a one-relay cell is the §C3.4 link, unchanged: old joiners read it."""
    assert example(more_relays=()).to_link() == example().to_link()
    assert example().to_bytes()[0] == 1
    assert example().relays == (InviteRelay(example().relay, example().join_mailbox),)


def test_the_two_relay_example_link() -> None:
    """docs/protocol.md §C3.4, the second example, byte for byte: 279 bytes, 395 characters."""
    invite = example(more_relays=(SECOND,))
    data = invite.to_bytes()
    assert data.hex() == (
        "02695ef380"
        "101112131415161718191a1b1c1d1e1f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "02"
        "0017"
        "1111"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "1d16"
        "202122232425262728292a2b2c2d2e2f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "1d16"
        "303132333435363738393a3b3c3d3e3f"
        "72656c61792e6578616d706c652e6f7267"
        "72656c61792e6578616d706c652e6e6574"
        "456173747369646520526170696420526573706f6e7365"
    )
    assert zlib.crc32(data) == 0x145D3629
    link = invite.to_link()
    assert len(link) == 395
    assert link == (
        "cellrelay://join/Amle84AQERITFBUWFxgZGhscHR4fgIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5y"
        "dnp9AQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eX2BhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent"
        "8fX5_AgAXEREAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHx0WICEiIyQlJicoKSorLC0uL6Choq"
        "OkpaanqKmqq6ytrq-wsbKztLW2t7i5uru8vb6_HRYwMTIzNDU2Nzg5Ojs8PT4_cmVsYXkuZXhhbXBsZS5vc"
        "mdyZWxheS5leGFtcGxlLm5ldEVhc3RzaWRlIFJhcGlkIFJlc3BvbnNlFF02KQ"
    )
    assert Invite.parse(link) == invite
    assert len(example(more_relays=(SECOND, THIRD)).to_link()) == 485


def test_every_truncation_of_a_three_relay_link_is_cut_short() -> None:
    link = example(more_relays=(SECOND, THIRD)).to_link()
    for end in range(len(INVITE_PREFIX) + 1, len(link)):
        assert "cut short" in error_of(link[:end])
    assert "extra characters" in error_of(link + "A")
    assert "extra characters" in error_of(link + "AAAA")


def test_every_typo_in_a_two_relay_link_is_caught() -> None:
    link = example(more_relays=(SECOND,)).to_link()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for position in range(len(INVITE_PREFIX), len(link), 3):
        for char in alphabet[::5]:
            if char != link[position]:
                with pytest.raises(InviteError):
                    Invite.parse(link[:position] + char + link[position + 1 :])


@pytest.mark.parametrize("count", [0, 1, 4, 255])
def test_a_relay_count_outside_2_to_3_is_damaged(count: int) -> None:
    """One relay is format 1 only (one invite, one text); more than three is refused."""
    data = bytearray(example(more_relays=(SECOND,)).to_bytes())
    data[117] = count
    assert "damaged" in error_of(link_of(bytes(data)))
    with pytest.raises(InviteError):
        Invite.from_bytes(bytes(data))


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (1, b"\x00\x00\x00\x00"),  # expires_at 0
        (120, b"\x00\x22"),  # an empty first host (the second takes both)
        (154, b"\x00\x00"),  # the first relay's port 0
        (204, b"\x00\x00"),  # the second relay's port 0
        (222, b"-"),  # a host may not start with a hyphen
        (239, b"\xff"),  # the second host not UTF-8
        (256, b"\x1b"),  # a control character in the name
    ],
)
def test_bad_fields_of_format_2_are_damaged(offset: int, value: bytes) -> None:
    data = bytearray(example(more_relays=(SECOND,)).to_bytes())
    data[offset : offset + len(value)] = value
    assert "damaged" in error_of(link_of(bytes(data)))


def test_a_relay_named_twice_is_refused() -> None:
    same_key = InviteRelay(RelayAddress("other.example.net", 1, RELAY_KEY), SECOND.join_mailbox)
    same_place = InviteRelay(
        RelayAddress("RELAY.example.org", 7446, bytes(32)), SECOND.join_mailbox
    )
    for twice in (same_key, same_place):
        with pytest.raises(InviteError, match="each relay once"):
            example(more_relays=(twice,))
    # Made by hand, the bytes are damaged.
    data = bytearray(example(more_relays=(SECOND,)).to_bytes())
    data[172:204] = RELAY_KEY
    assert "damaged" in error_of(link_of(bytes(data)))


def test_at_most_three_relays_and_a_link_that_fits() -> None:
    fourth = InviteRelay(RelayAddress("relay4.example", 1, bytes([9]) * 32), THIRD.join_mailbox)
    with pytest.raises(InviteError, match="1 to 3 relays"):
        example(more_relays=(SECOND, THIRD, fourth))
    with pytest.raises(InviteError):
        example(more_relays=[SECOND])  # a list is not a tuple: the invite is hashable
    long_host = "a" * 62 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61  # 253 with n
    big = [
        InviteRelay(RelayAddress(f"{n}{long_host}", 7446, bytes([n]) * 32), SECOND.join_mailbox)
        for n in (1, 2)
    ]
    with pytest.raises(InviteError, match="longer than 1000 characters"):
        example(more_relays=tuple(big))


@given(several_relay_invites(), st.data())
def test_mutated_several_relay_links_give_an_invite_or_invite_error(
    invite: Invite, data: st.DataObject
) -> None:
    raw = bytearray(invite.to_bytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    try:
        decoded = Invite.parse(link_of(bytes(raw)))
    except InviteError as exc:
        message = str(exc)
    else:
        assert decoded.to_bytes() == bytes(raw)
        assert Invite.parse(decoded.to_link()) == decoded
        return
    assert "\n" not in message
