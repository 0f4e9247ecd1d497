"""A cell of 1,000 members through a real relay: a removed member reads nothing new (issue 12).

The 1,000 members are protocol-level participants: the admin adds all 999 others through real
epoch changes of version 3 (docs/protocol.md §G6.2), applying each as it would read it back,
and welcomes three of them (welcomes with pages, §G7): the member it then removes, a member of
the same bucket (whose bucket key the removal replaces) and a member of another bucket. Those
four talk through an in-process relay on real sockets with SQLite on disk: the control mailbox,
the group mailbox and, after the removal, the new group mailbox. The other 996 never connect
(one process cannot be 1,000 phones); the epoch change is the same bytes for them.

The removed member is handed everything the relay holds, new mailbox included (as a relay that
colludes with it would), and opens none of it; the two others open the new epoch's alert.
"""

from __future__ import annotations

import time

import trio

from cellrelay.protocol.cell import CellCrypto, Identity, Kind, Opened
from cellrelay.protocol.cell._errors import GroupError
from cellrelay.protocol.cell._membership import MAX_MEMBERS
from cellrelay.protocol.cell._schedule import bucket_of
from cellrelay.protocol.wire._capability import CapabilityKey
from cellrelay.protocol.wire._messages import Ok, Published, Subscribed

from ..protocol.group_harness import invite_of
from ..wire_client import MailboxKeys
from .conftest import RelayFactory, RunningRelay, receive_deliveries

MEMBERS = 1000
# Building the cell is about 1,000 epoch changes of CPU (6 s on an idle core); the relay part
# is a few dozen requests. Generous for a busy machine.
LIMIT = 150.0


def _mailbox_keys(read_seed: bytes, write_seed: bytes) -> MailboxKeys:
    keys = MailboxKeys()
    keys.read, keys.write = CapabilityKey.from_seed(read_seed), CapabilityKey.from_seed(write_seed)
    return keys


async def _read_all(
    running: RunningRelay, key: CapabilityKey, mailbox: bytes, count: int
) -> list[bytes]:
    """Everything in `mailbox` (`count` envelopes), read over a connection of its own."""
    client = await running.connect()  # closed by the fixture at the end
    assert isinstance(await client.auth(key, "read", mailbox), Ok)
    assert isinstance(await client.subscribe(mailbox), Subscribed)
    got = await receive_deliveries(client, count)
    assert all(d.mailbox == mailbox for d in got)
    return [d.envelope for d in got]


def _opens(cell: CellCrypto, envelope: bytes, now: float) -> bytes | None:
    """The plaintext if `cell` opens `envelope` as a message, else None."""
    try:
        outcome = cell.open(envelope, now=now)
    except GroupError:
        return None
    return outcome.plaintext if isinstance(outcome, Opened) else None


async def test_a_removed_member_of_a_thousand_member_cell_reads_nothing_new(
    relays: RelayFactory,
) -> None:
    assert MAX_MEMBERS >= MEMBERS
    running = await relays.start(store=await relays.open_sqlite())
    with trio.fail_after(LIMIT):
        now = time.time()
        old_keys = (b"r" * 32, b"w" * 32)
        admin_identity = Identity.generate("admin")
        admin = CellCrypto.create(
            admin_identity, now=now, group_keys=old_keys, control_read_key=b"c" * 32, name="big"
        )
        people = [Identity.generate(f"m{i}") for i in range(MEMBERS - 1)]
        for person in people:
            admin.open_control(admin.add_member(person.info, now=now), now=now, announce=False)
        assert len(admin.members) == MEMBERS
        cell_id = admin.cell_id

        gone = people[500]
        mates = [p for p in people if p is not gone and bucket_of(cell_id, p.member_id)
                 == bucket_of(cell_id, gone.member_id)]  # fmt: skip
        others = [p for p in people if bucket_of(cell_id, p.member_id)
                  != bucket_of(cell_id, gone.member_id)]  # fmt: skip
        chosen = {"gone": gone, "mate": mates[0], "other": others[0]}
        invite = invite_of(admin, now=now, secret=bytes(32))
        members: dict[str, CellCrypto] = {}
        for name, person in chosen.items():
            welcome, pages = admin.welcome_with_pages(person.member_id, now=now, invite=invite)
            assert len(pages) == 5  # 1,000 members: the welcome lists the first, pages the rest
            members[name], _ = CellCrypto.from_welcome(
                person, welcome, now=now, invite=invite, pages=pages
            )
            assert len(members[name].members) == MEMBERS

        # The mailboxes on the relay, as the admin's client creates them.
        writer = await running.connect()
        control_keys = _mailbox_keys(b"c" * 32, b"C" * 32)
        control = await writer.create(control_keys)
        old_group_keys = _mailbox_keys(*old_keys)
        old_group = await writer.create(old_group_keys)
        for keys, mailbox in ((control_keys, control), (old_group_keys, old_group)):
            assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)

        # Before the removal every one of the three reads the admin's alert.
        expires = int(now) + 3600
        announced = admin.announcement(now=now)  # before its first envelope of the epoch
        before = admin.seal(Kind.ALERT, b"before the removal", expires_at=expires, now=now)
        for envelope in (announced, before):
            assert isinstance(await writer.publish(old_group, envelope), Published)
        for cell in members.values():
            announcement, alert = await _read_all(running, old_group_keys.read, old_group, 2)
            cell.open(announcement, now=now)
            assert _opens(cell, alert, now) == b"before the removal"

        # The removal: a change of version 3 that refreshes the removed member's bucket.
        new_keys = (b"R" * 32, b"W" * 32)
        change = admin.remove_member(gone.member_id, now=now, new_group_keys=new_keys)
        assert change[0] == 3
        assert len(change) <= 16384  # one default relay envelope
        assert isinstance(await writer.publish(control, change), Published)
        assert admin.open_control(change, now=now, announce=False).entry is not None
        new_group_keys = _mailbox_keys(*new_keys)
        new_group = await writer.create(new_group_keys)
        assert isinstance(await writer.auth(new_group_keys.write, "write", new_group), Ok)
        after = [
            admin.announcement(now=now),
            admin.seal(Kind.ALERT, b"after the removal", expires_at=expires, now=now),
        ]
        for envelope in after:
            assert isinstance(await writer.publish(new_group, envelope), Published)
            # The worst case: the new epoch's envelopes in the mailbox it can still read.
            assert isinstance(await writer.publish(old_group, envelope), Published)

        # The removed member reads the change from the relay: it learns it is removed.
        removed = members["gone"]
        (seen_change,) = await _read_all(running, control_keys.read, control, 1)
        assert removed.open_control(seen_change, now=now).removed_self
        # Everything the relay holds opens nothing for it, however it gets it.
        held = await _read_all(running, old_group_keys.read, old_group, 4)
        for envelope in [*held, *after]:
            assert _opens(removed, envelope, now) is None
        assert removed.removed

        # The two who stay read the change and the new mailbox and open the new alert.
        for name in ("mate", "other"):
            cell = members[name]
            (seen,) = await _read_all(running, control_keys.read, control, 1)
            update = cell.open_control(seen, now=now, announce=False)
            assert update.group_keys == new_keys
            assert len(cell.members) == MEMBERS - 1
            announcement, alert = await _read_all(running, new_group_keys.read, new_group, 2)
            cell.open(announcement, now=now)
            assert _opens(cell, alert, now) == b"after the removal"
        # The removed member's bucket got a new key, which its mate holds and it does not.
        assert members["mate"]._s.bucket_private != removed._s.bucket_private
