"""A cell saved before issue 12 migrates on its next epoch change (docs/protocol.md §G6.2, §G8).

tests/vectors/cell-state-v2.json holds three members' states of format version 2, made by
the code before the sender tree: their epoch has random chains that came in distributions,
and every member kept its epoch secret. Loaded by today's code, the epoch goes on as it was
(distributions, no tree); the admin's next change is version 2, every member applies it (the
init secret derived from the epoch secret the old state kept), the new epoch has a sender
tree and announcements, and a message sealed before the upgrade still opens in the grace
window.
"""

from __future__ import annotations

import json
from pathlib import Path

from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._outcomes import Opened
from cellrelay.protocol.cell._state import STATE_VERSION

VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "cell-state-v2.json"


def test_a_cell_saved_before_the_sender_tree_moves_to_it_at_its_next_change() -> None:
    vector = json.loads(VECTOR.read_text())
    now = vector["now"]
    names = ("admin", "alice", "bob")
    identities = {n: Identity.from_bytes(bytes.fromhex(vector[n]["identity"])) for n in names}
    cells = {
        n: CellCrypto.from_bytes(bytes.fromhex(vector[n]["state"]), identities[n]) for n in names
    }
    old = vector["epoch"]
    for cell in cells.values():
        assert cell.epoch == old
        assert cell._s.epochs[old].tree is None  # an epoch of distributions
        assert cell._s.epochs[old].init is not None  # derived from the kept epoch secret
        assert cell.to_bytes()[0] == STATE_VERSION
    # Older states kept the epoch secret for every member: a member's is deleted on loading.
    assert cells["bob"]._s.epochs[old].secret is None
    assert cells["admin"]._s.epochs[old].secret is not None
    # The old epoch goes on as it was: alice seals, bob opens, with the old chains.
    before = cells["alice"].seal(
        4, b"after the upgrade, old epoch", expires_at=int(now) + 60, now=now
    )
    assert cells["bob"].open(before, now=now).plaintext == b"after the upgrade, old epoch"  # type: ignore[union-attr]

    change = cells["admin"].rotate(now=now)
    assert change[0] == 3  # a version 3 change: the cell migrates to buckets
    announcements = []
    for cell in cells.values():
        update = cell.open_control(change, now=now)
        assert update.distribution is not None
        announcements.append((cell.me.member_id, update.distribution))
    for cell in cells.values():
        epoch = cell._s.epochs[cell.epoch]
        assert epoch.tree is not None
        assert epoch.init is not None
        for sender, announcement in announcements:
            outcome = cell.open(announcement, now=now)
            assert isinstance(outcome, Opened) or sender == cell.me.member_id
    sealed = cells["alice"].seal(
        1, b"first alert of the new epoch", expires_at=int(now) + 60, now=now
    )
    assert cells["bob"].open(sealed, now=now).plaintext == b"first alert of the new epoch"  # type: ignore[union-attr]
    assert cells["admin"].open(sealed, now=now).plaintext == b"first alert of the new epoch"  # type: ignore[union-attr]
    # Sealed before the upgrade, read after the change: the old epoch's grace window.
    late = cells["bob"].open(bytes.fromhex(vector["unread"]), now=now + 60)
    assert isinstance(late, Opened)
    assert late.plaintext == b"sealed before the upgrade, read after"
    # The member's state after the change keeps no epoch secret; the admin's does.
    assert cells["bob"]._s.epochs[cells["bob"].epoch].secret is None
    assert cells["admin"]._s.epochs[cells["admin"].epoch].secret is not None
