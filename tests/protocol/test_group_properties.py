"""Hypothesis: 3-5 members sending, a relay that reorders, duplicates and flips bytes.

The stateful test keeps, for every member, the envelopes the relay still owes it, and
delivers them in any order, again, or altered; epoch rotations happen in between. It
checks that every genuine envelope opens exactly once at every other member, with the
plaintext and sender that were sealed, that re-deliveries are refused as replays, and that
no altered envelope is ever returned as a message.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._errors import GroupError, ReplayError
from cellrelay.protocol.cell._outcomes import Opened, Pending
from cellrelay.protocol.cell._receiver import MAX_OLD_EPOCHS
from cellrelay.protocol.cell._state import write_state

from .group_harness import Cell

NAMES = ("admin", "alice", "bob", "carol", "dave")
KINDS = st.sampled_from([Kind.ALERT, Kind.REPLY, Kind.RECEIPT, Kind.MESSAGE])


class GroupOverHostileRelay(RuleBasedStateMachine):
    """Members of one cell, and a relay that delivers what it owes in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = Cell()
        self.names: list[str] = []
        self.owed: dict[str, list[bytes]] = {}  # envelopes not yet delivered, per member
        self.delivered: dict[str, list[bytes]] = {}
        self.sent: dict[tuple[str, int, int], bytes] = {}  # (sender, epoch, counter) -> text
        self.opened: dict[str, list[tuple[str, int, int]]] = {}

    @initialize(size=st.integers(3, 5))
    def make_cell(self, size: int) -> None:
        for name in NAMES[1:size]:
            self.cell.join(name)
        self.names = list(NAMES[:size])
        for name in self.names:
            self.owed[name] = []
            self.delivered[name] = []
            self.opened[name] = []

    def _post(self, sender: str, envelope: bytes) -> None:
        for name in self.names:
            if name != sender:
                self.owed[name].append(envelope)

    def _record(self, name: str, result: object, *, released: bool = False) -> None:
        """Check what opening a genuine envelope gave (or, if `released`, a parked one)."""
        if isinstance(result, Opened):
            if result.kind != Kind.SENDER_KEY:
                key = (result.sender.name, result.epoch, result.counter)
                assert self.sent[key] == result.plaintext
                self.opened[name].append(key)
            for item in result.released:
                self._record(name, item, released=True)
        elif isinstance(result, GroupError):
            # Parked envelopes may fail when released: a duplicate parked twice, or an
            # altered one parked under a future epoch. A genuine one that fails is caught
            # by the teardown (it never opens).
            assert released, result
        else:
            assert isinstance(result, Pending), result

    @rule(data=st.data(), kind=KINDS, text=st.binary(max_size=40))
    def send(self, data: st.DataObject, kind: int, text: bytes) -> None:
        sender = data.draw(st.sampled_from(self.names))
        cell = self.cell[sender]
        envelope = cell.seal(kind, text, expires_at=int(self.cell.now) + 3600, now=self.cell.now)
        state = cell._s
        own = state.epochs[state.current].own
        assert own is not None
        self.sent[(sender, cell.epoch, own.counter - 1)] = text
        self._post(sender, envelope)

    @precondition(lambda self: any(self.owed.values()))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in self.names if self.owed[n]]))
        index = data.draw(st.integers(0, len(self.owed[name]) - 1))
        envelope = self.owed[name].pop(index)
        self._record(name, self.cell[name].open(envelope, now=self.cell.now))
        self.delivered[name].append(envelope)

    @precondition(lambda self: any(self.delivered.values()))
    @rule(data=st.data())
    def deliver_again(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in self.names if self.delivered[n]]))
        envelope = data.draw(st.sampled_from(self.delivered[name]))
        before = len(self.opened[name])
        try:
            result = self.cell[name].open(envelope, now=self.cell.now)
        except ReplayError:
            return
        # A message still parked for its key: delivering it again leaves it parked, once.
        assert isinstance(result, Pending), result
        assert len(self.opened[name]) == before

    @precondition(lambda self: any(self.owed.values()))
    @rule(data=st.data())
    def deliver_altered(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in self.names if self.owed[n]]))
        envelope = data.draw(st.sampled_from(self.owed[name]))
        position = data.draw(st.integers(0, len(envelope) - 1))
        flip = data.draw(st.integers(1, 255))
        altered = bytearray(envelope)
        altered[position] ^= flip
        try:
            result = self.cell[name].open(bytes(altered), now=self.cell.now)
        except GroupError:
            return
        # Parked, unopened: under a future epoch (the clear epoch was changed), or because
        # its sender's key has not arrived, so its signature cannot be checked yet. It
        # fails when released (`_record`), and the genuine envelope still opens once.
        assert isinstance(result, Pending), result

    # A member keeps at most MAX_OLD_EPOCHS old epochs in their grace window (§G11): more
    # rotations with no time passing would delete epochs whose messages are still owed.
    @precondition(lambda self: self.names and self.cell["admin"].epoch <= MAX_OLD_EPOCHS)
    @rule()
    def rotate(self) -> None:
        envelope = self.cell["admin"].rotate(now=self.cell.now)
        for name in self.names:
            update = self.cell[name].open_control(envelope, now=self.cell.now)
            assert update.distribution is not None
            for released in update.released:
                self._record(name, released, released=True)
            self._post(name, update.distribution)

    @invariant()
    def every_message_opens_at_most_once(self) -> None:
        for name in self.names:
            assert len(self.opened[name]) == len(set(self.opened[name]))

    @invariant()
    def saved_state_reuses_only_what_is_still_true(self) -> None:
        """`to_bytes` with its reused encodings equals an encoding made afresh.

        Catches a cached chain or member list that outlived a change: a state saved with
        an old chain key would re-open (or fail to open) messages after a restart.
        """
        for name in self.names:
            state = self.cell[name]._s
            assert write_state(state) == write_state(state, cached=False), name

    def teardown(self) -> None:
        """Deliver everything still owed, in order: every message must have opened once."""
        for name in self.names:
            while self.owed[name]:
                envelope = self.owed[name].pop(0)
                self._record(name, self.cell[name].open(envelope, now=self.cell.now))
            expected = {key for key in self.sent if key[0] != name}
            assert set(self.opened[name]) == expected, name


TestGroupOverHostileRelay = GroupOverHostileRelay.TestCase
# Each example builds a cell of up to five members (about 60 ms), so a third of the
# profile's examples (33 under `ci`, 1,666 under `deep`) keeps this file near 5 seconds.
_PROFILE = settings()
TestGroupOverHostileRelay.settings = settings(
    max_examples=max(20, _PROFILE.max_examples // 3), stateful_step_count=40
)
