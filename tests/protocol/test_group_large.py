"""Cells above one envelope's worth of members: paged welcomes, version 3 changes (issue 12).

docs/protocol.md §G7 (pages), §G6.2 (buckets). The real-relay test of a 1,000-member cell is
tests/relay/test_large_cell.py; here, the rules a joiner applies to pages, and what an admin's
changes cost in bytes as the cell grows.
"""

from __future__ import annotations

import dataclasses

import pytest

from cellrelay.protocol.cell import CellCrypto, Identity, Opened
from cellrelay.protocol.cell._control import MAX_WB, PAGE_MEMBERS, seal_welcome
from cellrelay.protocol.cell._epochs import welcome_content
from cellrelay.protocol.cell._errors import TamperedError, WelcomeIncompleteError
from cellrelay.protocol.cell._padding import BUCKETS

from .group_harness import invite_of

NOW = 1_767_225_600.0
SIZE = 400  # past one welcome (about 160 members with these names), two pages


@pytest.fixture(scope="module")
def big() -> tuple[CellCrypto, list[Identity]]:
    admin = CellCrypto.create(
        Identity.generate("admin"),
        now=NOW,
        group_keys=(b"r" * 32, b"w" * 32),
        control_read_key=b"c" * 32,
        name="big",
    )
    people = [Identity.generate(f"member number {i:04d}") for i in range(SIZE - 1)]
    for person in people:
        change = admin.add_member(person.info, now=NOW)
        assert len(change) in BUCKETS
        admin.open_control(change, now=NOW, announce=False)
    return admin, people


def _welcome(big: tuple[CellCrypto, list[Identity]], n: int) -> tuple[Identity, bytes, list[bytes]]:
    admin, people = big
    welcome, pages = admin.welcome_with_pages(
        people[n].member_id, now=NOW, invite=invite_of(admin, now=NOW, secret=bytes(32))
    )
    return people[n], welcome, pages


def _join(
    big: tuple[CellCrypto, list[Identity]], person: Identity, welcome: bytes, pages: list[bytes]
) -> CellCrypto:
    invite = invite_of(big[0], now=NOW, secret=bytes(32))
    cell, _ = CellCrypto.from_welcome(person, welcome, now=NOW, invite=invite, pages=pages)
    return cell


def test_a_paged_welcome_gives_the_whole_membership(
    big: tuple[CellCrypto, list[Identity]],
) -> None:
    person, welcome, pages = _welcome(big, 7)
    assert len(welcome) + 1 in BUCKETS  # with the join mailbox's kind byte (§C4)
    assert all(len(page) + 1 in BUCKETS for page in pages)
    assert 1 <= len(pages) <= -(-SIZE // PAGE_MEMBERS)
    joined = _join(big, person, welcome, pages)
    assert joined.members == big[0].members
    assert joined.membership.head_hash == big[0].membership.head_hash
    # It reads what the admin sends in the epoch.
    admin = big[0]  # the only test of the module that seals
    announcement = admin.announcement(now=NOW)
    alert = admin.seal(1, b"to all 400", expires_at=int(NOW) + 60, now=NOW)
    joined.open(announcement, now=NOW)
    opened = joined.open(alert, now=NOW)
    assert isinstance(opened, Opened)
    assert opened.plaintext == b"to all 400"


def test_a_welcome_without_all_its_pages_says_how_many_it_needs(
    big: tuple[CellCrypto, list[Identity]],
) -> None:
    person, welcome, pages = _welcome(big, 8)
    for given in range(len(pages)):
        with pytest.raises(WelcomeIncompleteError) as caught:
            _join(big, person, welcome, pages[:given])
        assert caught.value.pages == len(pages)


def test_pages_out_of_order_from_another_welcome_or_altered_are_refused(
    big: tuple[CellCrypto, list[Identity]],
) -> None:
    person, welcome, pages = _welcome(big, 9)
    _, _, other_pages = _welcome(big, 10)
    assert len(pages) > 1
    with pytest.raises(TamperedError):  # a page's index is in its AD
        _join(big, person, welcome, pages[::-1])
    with pytest.raises(TamperedError):
        _join(big, person, welcome, other_pages)  # another joiner's page key and AD
    flipped = bytearray(pages[0])
    flipped[40] ^= 1
    with pytest.raises(TamperedError):
        _join(big, person, welcome, [bytes(flipped), *pages[1:]])
    # The same welcome again: its own pages still open.
    assert len(_join(big, person, welcome, pages).members) == SIZE


def test_a_small_cell_needs_no_pages(big: tuple[CellCrypto, list[Identity]]) -> None:
    admin = CellCrypto.create(
        Identity.generate("admin"), now=NOW, group_keys=(b"r" * 32, b"w" * 32),
        control_read_key=b"c" * 32, name="small",
    )  # fmt: skip
    person = Identity.generate("ana")
    admin.open_control(admin.add_member(person.info, now=NOW), now=NOW)
    invite = invite_of(admin, now=NOW, secret=bytes(32))
    _, pages = admin.welcome_with_pages(person.member_id, now=NOW, invite=invite)
    assert pages == []
    assert admin.welcome_for(person.member_id, now=NOW, invite=invite)[0] == 3
    # welcome_for refuses a member list that needs pages rather than cut it.
    with pytest.raises(ValueError, match="pages"):
        big[0].welcome_for(
            big[1][0].member_id, now=NOW, invite=invite_of(big[0], now=NOW, secret=bytes(32))
        )


def test_a_welcome_filled_to_the_last_byte_fits_the_join_mailbox(
    big: tuple[CellCrypto, list[Identity]],
) -> None:
    """A welcome whose WB is exactly MAX_WB seals, and with the kind byte fills one envelope.

    The inline members fill WB greedily, so whether it ends exactly at the limit depends on
    the members' names: with a bound one byte too large, some 1,000-member cells could not
    welcome anyone (`16385 bytes exceed the largest bucket`). Here the cell's `extra` takes
    up what the inline members left, to the byte.
    """
    admin, people = big
    content = welcome_content(
        admin._s, people[9].member_id, now=NOW, extra=b"", invite_binding=bytes(32),
        page_key=bytes(32),
    )  # fmt: skip
    assert content.total_members == SIZE  # paged: the inline members leave < one member
    left = MAX_WB - len(content.to_bytes())
    assert 0 <= left < 100
    full = dataclasses.replace(content, extra=bytes(left))
    assert len(full.to_bytes()) == MAX_WB
    ephemeral = bytearray(32)
    ephemeral[0] = 1
    welcome = seal_welcome(
        signer=admin._identity, content=full, joiner_dh_pub=people[9].info.dh_pub,
        ephemeral_private=ephemeral, nonce=bytes(24),
    )  # fmt: skip
    assert len(welcome) + 1 == BUCKETS[-1]  # the join mailbox's kind byte in front (§C4)


def test_a_joiner_may_announce_later_and_is_read_once_it_does(
    big: tuple[CellCrypto, list[Identity]],
) -> None:
    """`from_welcome(announce=False)`, then `announcement()` before the first message (§C6 item 2)."""
    admin = CellCrypto.from_bytes(
        big[0].to_bytes(), big[0]._identity
    )  # a copy: the fixture is shared
    person, welcome, pages = _welcome(big, 11)
    invite = invite_of(admin, now=NOW, secret=bytes(32))
    cell, none = CellCrypto.from_welcome(
        person, welcome, now=NOW, invite=invite, pages=pages, announce=False
    )
    assert none == b""
    announcement = cell.announcement(now=NOW)  # made only when there is something to send
    message = cell.seal(16, b"the first in the epoch", expires_at=int(NOW) + 600, now=NOW)
    assert not isinstance(admin.open(message, now=NOW), Opened)  # parked: no signing key yet
    opened = admin.open(announcement, now=NOW)
    assert isinstance(opened, Opened)
    (released,) = opened.released
    assert isinstance(released, Opened)
    assert released.plaintext == b"the first in the epoch"
