"""A small cell with pinned keys, shared by fuzz_group_open.py and make_seeds.py.

Deterministic, so a crash input found once reproduces: the same members, the same epoch
keys and the same saved states every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._invite import Invite
from cellrelay.protocol.wire._address import RelayAddress
from cellrelay.protocol.wire._messages import MailboxId

NOW: Final = 1_767_225_600.0


class PinnedRng:
    """SHAKE-256 of a label and a counter: reproducible "randomness" for the fixture."""

    def __init__(self, label: bytes) -> None:
        """Start the stream `label`."""
        self._label = label
        self._draws = 0

    def __call__(self, size: int) -> bytes:
        """Return the next `size` bytes."""
        self._draws += 1
        return hashlib.shake_256(self._label + self._draws.to_bytes(4, "big")).digest(size)


@dataclass(frozen=True, slots=True)
class Fixture:
    """Saved states of a two-member cell, and envelopes that open in it."""

    admin: Identity
    alice: Identity
    admin_state: bytes
    alice_state: bytes
    envelopes: dict[str, bytes]
    invite: Invite  # the invite the fixture's welcome answers


def build() -> Fixture:
    """Return the fixture: admin and alice, sender keys exchanged, plus sample envelopes.

    `alice_state` is saved before alice opened any of the sample envelopes, so each of
    them opens in a state restored from it.
    """
    rng = PinnedRng(b"cellrelay fuzz group")
    admin = Identity.from_seeds(rng(32), rng(32), "admin")
    alice = Identity.from_seeds(rng(32), rng(32), "alice")
    admin_cell = CellCrypto.create(
        admin,
        now=NOW,
        group_keys=(rng(32), rng(32)),
        control_read_key=rng(32),
        name="fuzz",
        rng=rng,
    )
    update = admin_cell.open_control(admin_cell.add_member(alice.info, now=NOW), now=NOW)
    irng = PinnedRng(b"cellrelay fuzz invite")  # its own stream: the other seeds stay put
    invite = Invite(
        relay=RelayAddress("127.0.0.1", 7446, irng(32)),
        cell_id=admin_cell.cell_id,
        cell_name=admin_cell.name,
        join_mailbox=MailboxId(irng(16)),
        admin_sign_key=admin.info.sign_pub,
        admin_box_key=admin.info.dh_pub,
        expires_at=int(NOW) + 3600,
        secret=irng(32),
    )
    welcome = admin_cell.welcome_for(alice.member_id, now=NOW, invite=invite, extra=b"extra")
    alice_cell, alice_distribution = CellCrypto.from_welcome(
        alice, welcome, now=NOW, invite=invite, rng=rng
    )
    assert update.distribution is not None
    admin_cell.open(alice_distribution, now=NOW)
    alice_cell.open(update.distribution, now=NOW)
    envelopes = {
        "alert": admin_cell.seal(Kind.ALERT, b"agents at 14th & Main", expires_at=2**40, now=NOW),
        "reply": admin_cell.seal(Kind.REPLY, b"\x01" * 600, expires_at=2**40, now=NOW),
        "own": alice_cell.seal(Kind.MESSAGE, b"mine", expires_at=2**40, now=NOW),
        "welcome": welcome,
    }
    # The alert's H || signature in the clear, then its body: fuzz_group_open's mode 2.
    header_key = admin_cell._s.epochs[admin_cell.epoch].keys.header
    alert = envelopes["alert"]
    envelopes["alert-inner"] = (
        header_key.decrypt(alert[5:29], alert[:5], alert[29:158]) + alert[158:]
    )
    alice_state = alice_cell.to_bytes()
    envelopes["rotation"] = admin_cell.rotate(now=NOW)
    rotation = admin_cell.open_control(envelopes["rotation"], now=NOW)
    assert rotation.distribution is not None
    envelopes["next-distribution"] = rotation.distribution
    envelopes["next-alert"] = admin_cell.seal(Kind.ALERT, b"next", expires_at=2**40, now=NOW)
    # Alice's key update: the plaintext of a kind 8 envelope (fuzz_group_open's mode 5).
    envelopes["key-update"] = alice_cell.key_update(now=NOW)
    return Fixture(admin, alice, admin_cell.to_bytes(), alice_state, envelopes, invite)
