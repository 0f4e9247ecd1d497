"""Post-compromise security through a real relay (issue 12, docs/protocol.md §G6.5).

A cell of three protocol-level members (admin, alice, bob) on an in-process relay with
SQLite on disk. An attacker copies alice's saved state and identity key. Alice makes a key
update, the admin commits it in a rotation published to the control mailbox, and then
seals an alert in the new epoch. Alice and bob read both from the relay and open them; the
copy, given everything the relay holds (control and group mailbox), opens neither the
change nor the alert. The update reaches the admin directly: the client's transport for
updates is not built yet (docs/design.md).
"""

from __future__ import annotations

import time

import pytest
import trio

from cellrelay.protocol.cell import CellCrypto, Identity, Kind
from cellrelay.protocol.cell._control import COMMITTING_VERSION
from cellrelay.protocol.cell._errors import GroupError, TamperedError
from cellrelay.protocol.wire._messages import Ok, Published

from ..protocol.group_harness import invite_of
from .conftest import RelayFactory
from .test_large_cell import _mailbox_keys, _opens, _read_all

LIMIT = 60.0


async def test_a_copy_from_before_a_key_update_opens_nothing_after_its_commit(
    relays: RelayFactory,
) -> None:
    running = await relays.start(store=await relays.open_sqlite())
    with trio.fail_after(LIMIT):
        now = time.time()
        group_seeds = (b"r" * 32, b"w" * 32)
        admin_identity = Identity.generate("admin")
        admin = CellCrypto.create(
            admin_identity, now=now, group_keys=group_seeds, control_read_key=b"c" * 32, name="c"
        )
        people = {name: Identity.generate(name) for name in ("alice", "bob")}
        members: dict[str, CellCrypto] = {}
        for person in people.values():
            admin.open_control(admin.add_member(person.info, now=now), now=now, announce=False)
        invite = invite_of(admin, now=now, secret=bytes(32))
        for name, person in people.items():  # both welcomed into the epoch after both adds
            welcome = admin.welcome_for(person.member_id, now=now, invite=invite)
            members[name], _ = CellCrypto.from_welcome(person, welcome, now=now, invite=invite)

        writer = await running.connect()
        control_keys = _mailbox_keys(b"c" * 32, b"C" * 32)
        control = await writer.create(control_keys)
        group_keys = _mailbox_keys(*group_seeds)
        group = await writer.create(group_keys)
        for keys, mailbox in ((control_keys, control), (group_keys, group)):
            assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)

        # The attacker copies alice's state and identity key; then alice updates.
        copy = CellCrypto.from_bytes(members["alice"].to_bytes(), people["alice"])
        update = members["alice"].key_update(now=now)
        assert admin.accept_key_update(update)
        change = admin.rotate(now=now)
        assert change[0] == COMMITTING_VERSION
        assert isinstance(await writer.publish(control, change), Published)
        admin.open_control(change, now=now, announce=False)
        expires = int(now) + 3600
        sealed = [
            admin.announcement(now=now),
            admin.seal(Kind.ALERT, b"after the update", expires_at=expires, now=now),
        ]
        for envelope in sealed:
            assert isinstance(await writer.publish(group, envelope), Published)

        for name, cell in members.items():
            (seen,) = await _read_all(running, control_keys.read, control, 1)
            cell.open_control(seen, now=now, announce=False)
            announcement, alert = await _read_all(running, group_keys.read, group, 2)
            cell.open(announcement, now=now)
            assert _opens(cell, alert, now) == b"after the update", name
        assert members["alice"].receive_generation == 1

        # The copy reads the same mailboxes: the change does not open, nor anything after.
        (seen,) = await _read_all(running, control_keys.read, control, 1)
        with pytest.raises(TamperedError):
            copy.open_control(seen, now=now)
        for envelope in await _read_all(running, group_keys.read, group, 2):
            assert _opens(copy, envelope, now) is None
        with pytest.raises(GroupError):  # nor at a second try
            copy.open_control(seen, now=now)
