"""Hypothesis: a cell's whole life against a relay that drops, duplicates and reorders (issue 9).

A `RuleBasedStateMachine` over the sans-IO group layer (`CellCrypto`), with the client's
duties done the way docs/protocol.md §C6 says: every member reads the control mailbox
first and publishes its sender key distribution on each epoch change. The relay keeps,
per member, the envelopes it still owes, and may deliver the next one, drop it (for that
member only), deliver an earlier one again, or swap the next two messages. Admins add,
remove and rotate; members restart from their saved state; the clock jumps (see below).
Contents are real alerts and status replies, folded into
each member's roll-ups as the client does.

Invariants (issue 9's, in full):

1. every current member shows every message exactly once that was sealed in an epoch it
   belonged to, by a member of that epoch, removed since or not (docs/protocol.md §G11:
   what a member sealed while it was one stays part of that epoch's history): at most
   once at every step, and at the end, once the relay has delivered what it dropped
   (an honest relay again), every message it owes that had not expired beyond the
   lateness when it came;
2. nothing a removed member seals after its removal is accepted by anyone (it keeps a
   copy of its state from before the removal and goes on sealing with it): it can seal
   only in an epoch before its removal, whose mailbox the removal closed on the relay;
   members who joined since refuse it (a colluding relay could still deliver it to those
   within their grace window: §G11, threat model §3.5, not checked here);
3. after quiescence every member holds the same roll-up for every alert it holds, under
   the close rule (§C2 rule 4: the author or the admin closes alone, two other members'
   votes close) and with claimed times clamped to the receipt time (§C2 rule 0), removed
   members' answers included;
4. no message is lost without an event saying so: when every sender has sent once more
   and the gap grace has passed, every dropped message that a later message of the same
   sender revealed is reported `Missing` (unless the member restarted in between, which
   by design excuses the gap: docs/protocol.md §G10.2), a removed sender's included,
   nothing is reported that was not dropped or late, and every reported message that
   came after all is `recovered`;
5. (issue 12, post-compromise security) a copy of a member's state taken just before a
   key update, following every change after it, opens none from the change that commits
   the update on (docs/protocol.md §G6.5); until then it follows (it is a faithful copy).
   Updates reach the admin two ways: handed over directly, or posted by a member who is
   not an admin in the group mailbox as a kind 8 envelope, as the client does, delivered
   like any envelope (late, reordered with a restart between): only the admin takes one,
   and none is ever shown.

Members open with the client's lateness (§C7: 900 s). The clock jumps forward up to 15
minutes and back up to 4, but never more than 4 minutes behind the latest time it showed:
it is the relay's clock, which senders stamp and receivers see, and a clock that goes back
further than the claim tolerance (§C2 rule 0, 300 s) makes receivers clamp honest claims
differently by design (a relay clock set back is threat model §3.3's business, not this
test's). Some alerts live 10 or 30 minutes, so clock jumps expire them on the way: one
delivered within the lateness opens; one refused as expired must have expired beyond it,
and a message not shown at the end must be such a one (no unexpired message is lost).

Run at CI size by default (20 examples of up to 40 steps, about 3 s here); a long run:
`HYPOTHESIS_PROFILE=deep .venv/bin/python -m pytest tests/protocol/test_group_interaction.py`
(1,000 examples of up to 60 steps, about 3 minutes on a busy 2-core machine: 1,226 took
184 s); `CELL_LIFE_EXAMPLES=N` sets the number (deep with 2,500: 387 s, all passing).

`ChannelLife` (issue 12) runs the same life as a broadcast channel (docs/protocol.md
§C11): members' answers sealed to the admin, which every other member is handed and must
fail to open (`CELL_LIFE_EXAMPLES=200`, channel only: 200 examples in 75 s, all passing).

Adds that race a removal, withheld epoch changes and a relay that forks the control
mailbox are issue 9's findings 5 and 8 to 10, tested on their own (tests/client).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cellrelay.protocol.cell._content import (
    Alert,
    MemberId,
    MessageId,
    Priority,
    Status,
    StatusReply,
    decode_content,
)
from cellrelay.protocol.cell._control import committed_updates
from cellrelay.protocol.cell._dispatch import (
    DISPATCH_KIND,
    NotForMeError,
    open_for_dispatch,
    seal_for_dispatch,
)
from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._errors import (
    ExpiredError,
    GroupError,
    NotAMemberError,
    ReplayError,
    TamperedError,
)
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._outcomes import Missing, Opened, Own, Pending
from cellrelay.protocol.cell._receiver import GAP_GRACE, MAX_OLD_EPOCHS
from cellrelay.protocol.cell._rollup import AlertRollup, RollupBook
from cellrelay.protocol.cell._state import write_state

from .group_harness import CONTROL_READ_KEY, GROUP_KEYS, NOW, invite_of, new_keys

TTL = 30 * 24 * 3600  # replies and most alerts do not expire within a run
GRACE = 30 * 24 * 3600.0  # old epochs stay readable within a run: late deliveries open
LATENESS = 900.0  # the client's (client/_cell_member.py LATE_WINDOW, §C7)
BACK = 240  # how far the clock may go back behind the latest time it showed (docstring)
POOL = ("alice", "bob", "carol", "dave", "erin", "frank")


@dataclass
class Sent:
    """A message as sealed: who, where in the sender's chain, what."""

    sender: str
    epoch: int
    counter: int
    envelope: bytes = field(repr=False)
    content: Alert | StatusReply
    expires_at: int = 0


@dataclass
class Dist:
    """A sender key distribution, as published."""

    sender: str
    envelope: bytes = field(repr=False)


@dataclass
class Posted:
    """A member's key update, posted in the group mailbox (kind 8, §G6.5): never dropped."""

    sender: str
    generation: int
    envelope: bytes = field(repr=False)


@dataclass
class Person:
    """A member's device: its state, the envelopes the relay owes it, and what it showed."""

    identity: Identity
    cell: CellCrypto
    owed: list[Sent | Dist | Posted] = field(default_factory=list)
    delivered: list[Sent] = field(default_factory=list)
    dropped: list[Sent] = field(default_factory=list)
    shown: list[Sent] = field(default_factory=list)
    expired: list[Sent] = field(default_factory=list)  # refused: expired beyond the lateness
    expired_released: int = 0  # the same, of envelopes the layer had parked
    book: RollupBook = field(default_factory=RollupBook)
    missing: dict[tuple[bytes, int], int] = field(default_factory=dict)  # (sender, epoch)
    recovered: dict[tuple[bytes, int], int] = field(default_factory=dict)
    must_report: set[tuple[str, int, int]] = field(default_factory=set)
    revealed: set[tuple[str, int, int]] = field(default_factory=set)  # a later one came
    # Senders whose gap the next message will not be owed: restarted since their last.
    excused: set[tuple[str, int]] = field(default_factory=set)


class CellLife(RuleBasedStateMachine):
    """One cell, its admin and up to five members (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.latest = NOW  # the latest time the clock showed
        self.people: dict[str, Person] = {}
        self.removed: dict[str, Person] = {}  # removed members, with a stale copy of the state
        self.sent: dict[tuple[str, int, int], Sent] = {}
        self.ids: dict[bytes, str] = {}
        self.alerts: list[bytes] = []
        self.keys = 10
        self.times: set[int] = set()  # sent_at_ms used: replies never tie (a tie is ordered
        # by arrival, which differs between members)
        self.silent: list[bytes] = []  # members added by add_many, who never connect
        # Copies of members' states taken before a key update (an attacker absent for it),
        # each following the cell until a change commits an update at least that new.
        self.seized: list[tuple[str, CellCrypto, int]] = []

    # -- the cell ---------------------------------------------------------------------------

    @initialize(others=st.integers(1, 3))
    def create(self, others: int) -> None:
        admin = Identity.generate("admin")
        cell = CellCrypto.create(
            admin,
            now=self.now,
            group_keys=GROUP_KEYS,
            control_read_key=CONTROL_READ_KEY,
            name="life",
            grace_period=GRACE,
        )
        cell.lateness = LATENESS
        self.admin_id = admin.member_id
        self.people["admin"] = Person(admin, cell, book=self._book())
        self.ids[admin.member_id] = "admin"
        for name in POOL[:others]:
            self._add(name)

    def _apply(self, change: bytes) -> list[Dist]:
        """Every member reads the change (control mailbox first) and publishes its key."""
        published = []
        for name, person in list(self.people.items()):
            update = person.cell.open_control(change, now=self.now)
            for released in update.released:
                self._record(name, released)
            if update.distribution is not None:
                published.append(Dist(name, update.distribution))
                self._broadcast(name, published[-1])
        self._follow(change)
        return published

    def _follow(self, change: bytes) -> None:
        """5: a seized copy follows every change until one commits its member's update
        (§G6.5), which it must not open; a removed member's copy stops with it."""
        committed = {u.member_id: u.generation for u in committed_updates(change)}
        following = []
        for name, copy, generation in self.seized:
            member_id = self._person(name).identity.member_id
            if committed.get(member_id, 0) >= generation:
                with pytest.raises(TamperedError):
                    copy.open_control(change, now=self.now)
                event("a seized copy was cut off by a key update")
                continue
            copy.open_control(change, now=self.now, announce=False)
            if not copy.removed:
                following.append((name, copy, generation))
        self.seized = following

    def _book(self) -> RollupBook:
        book = RollupBook()
        book.set_admins(frozenset({self.admin_id}))  # the cell's only admin, in every epoch
        return book

    def _person(self, name: str) -> Person:
        """A member, current or removed."""
        return self.people.get(name) or self.removed[name]

    def _broadcast(self, sender: str, item: Sent | Dist | Posted) -> None:
        for name, person in self.people.items():
            if name != sender:
                person.owed.append(item)

    def _add(self, name: str) -> None:
        identity = Identity.generate(name)
        admin = self.people["admin"].cell
        published = self._apply(admin.add_member(identity.info, now=self.now))
        invite = invite_of(admin, now=self.now)
        welcome = admin.welcome_for(identity.member_id, now=self.now, invite=invite)
        cell, distribution = CellCrypto.from_welcome(
            identity, welcome, now=self.now, invite=invite, grace_period=GRACE
        )
        cell.lateness = LATENESS
        # The joiner reads the group mailbox from the distributions of the new epoch on.
        person = Person(identity, cell, owed=list(published), book=self._book())
        self.people[name] = person
        self.ids[identity.member_id] = name
        self._broadcast(name, Dist(name, distribution))

    @precondition(
        lambda self: len(self.people) < 6 and self.people["admin"].cell.epoch < MAX_OLD_EPOCHS - 12
    )
    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        free = [n for n in POOL if n not in self.people and n not in self.removed]
        if free:
            self._add(data.draw(st.sampled_from(free)))

    @precondition(
        lambda self: len(self.people) > 2 and self.people["admin"].cell.epoch < MAX_OLD_EPOCHS - 12
    )
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in self.people if n != "admin"]))
        person = self.people[name]
        stale = CellCrypto.from_bytes(person.cell.to_bytes(), person.identity)
        self.keys += 2
        change = self.people["admin"].cell.remove_member(
            person.identity.member_id, now=self.now, new_group_keys=new_keys(self.keys)
        )
        self._apply(change)
        assert person.cell.removed
        del self.people[name]
        self.removed[name] = Person(person.identity, stale)

    @precondition(lambda self: self.people["admin"].cell.epoch < MAX_OLD_EPOCHS - 12)
    @rule()
    def rotate(self) -> None:
        self._apply(self.people["admin"].cell.rotate(now=self.now))

    # -- large membership changes (issue 12): members who never connect ----------------------
    # Each is a real add or remove, applied by everyone; the silent members share buckets
    # with the real ones, so changes refresh buckets that real members must open, and
    # welcomes after them must carry the right bucket key. Bounded so that no change pushes
    # an epoch with owed messages out of the kept old epochs (§G11: MAX_OLD_EPOCHS).

    @precondition(lambda self: self.people["admin"].cell.epoch < MAX_OLD_EPOCHS - 12)
    @rule(count=st.integers(3, 10))
    def add_many(self, count: int) -> None:
        self._add_many(count)

    @precondition(
        lambda self: len(self.seized) < 3 and self.people["admin"].cell.epoch < MAX_OLD_EPOCHS - 12
    )
    @rule(data=st.data())
    def key_update(self, data: st.DataObject) -> None:
        """A member (the admin too) replaces its receive key; the admin takes the update,
        and its next change commits it. A copy of the state from just before follows."""
        name = data.draw(st.sampled_from(sorted(self.people)))
        person = self.people[name]
        copy = CellCrypto.from_bytes(person.cell.to_bytes(), person.identity)
        update = person.cell.key_update(now=self.now)
        self.people["admin"].cell.accept_key_update(update)
        generation = int.from_bytes(update[33:37], "big")
        self.seized.append((name, copy, generation))

    @precondition(
        lambda self: (
            len(self.seized) < 3
            and len(self.people) > 1
            and self.people["admin"].cell.epoch < MAX_OLD_EPOCHS - 12
        )
    )
    @rule(data=st.data())
    def post_key_update(self, data: st.DataObject) -> None:
        """A member who is not an admin posts its key update in the group mailbox, as the
        client does: the admin takes it when the envelope is delivered (`_record`), the
        other members ignore it, and a copy from just before follows until it is committed."""
        name = data.draw(st.sampled_from(sorted(n for n in self.people if n != "admin")))
        person = self.people[name]
        copy = CellCrypto.from_bytes(person.cell.to_bytes(), person.identity)
        update = person.cell.key_update(now=self.now)
        envelope = person.cell.seal_key_update(
            update, expires_at=int(self.now) + int(GRACE), now=self.now
        )
        generation = int.from_bytes(update[33:37], "big")
        self._broadcast(name, Posted(name, generation, envelope))
        self.seized.append((name, copy, generation))
        event("a key update posted")

    def _add_many(self, count: int) -> None:
        admin = self.people["admin"].cell
        for _ in range(count):
            silent = Identity.generate("silent")
            self._apply(admin.add_member(silent.info, now=self.now))
            self.silent.append(silent.member_id)
        event("added several silent members")

    @precondition(
        lambda self: self.silent and self.people["admin"].cell.epoch < MAX_OLD_EPOCHS - 12
    )
    @rule(data=st.data())
    def remove_many(self, data: st.DataObject) -> None:
        gone = data.draw(
            st.lists(st.sampled_from(self.silent), min_size=1, max_size=5, unique=True)
        )
        admin = self.people["admin"].cell
        for member_id in gone:
            self.keys += 2
            self._apply(
                admin.remove_member(member_id, now=self.now, new_group_keys=new_keys(self.keys))
            )
            self.silent.remove(member_id)
        for person in self.people.values():
            assert set(self.silent) <= {m.member_id for m in person.cell.members}
            assert not set(gone) & {m.member_id for m in person.cell.members}

    # -- messages ---------------------------------------------------------------------------

    def _seal(self, name: str, cell: CellCrypto, content: Alert | StatusReply) -> Sent:
        epoch, counter = cell.send_position()
        expires_at = content.expires_at if isinstance(content, Alert) else int(self.now) + TTL
        kind, plaintext = self._wire(name, cell, content)
        envelope = cell.seal(kind, plaintext, expires_at=expires_at, now=self.now)
        return Sent(name, epoch, counter, envelope, content, expires_at)

    def _wire(self, name: str, cell: CellCrypto, content: Alert | StatusReply) -> tuple[int, bytes]:
        """The kind and plaintext `name` seals `content` as (`ChannelLife` seals answers)."""
        del name, cell
        return content.KIND, content.encode()

    def _content_of(self, name: str, data: st.DataObject) -> Alert | StatusReply:
        """What `name` sends now (`ChannelLife`: only the admin posts alerts)."""
        del name
        return self._content(data)

    def _last(self, name: str) -> Alert | StatusReply:
        """What `name` sends at quiescence, to reveal the gaps before it."""
        del name
        return Alert(sent_at_ms=self._sent_at_ms(), text="last", priority=Priority.INFO,
                     expires_at=int(self.now) + TTL)  # fmt: skip

    def _take(self, name: str, opened: Opened, sent: Sent) -> None:
        """`name` opened `sent`: check what it says and fold it into the roll-ups."""
        content = decode_content(opened.kind, opened.plaintext)
        assert content == sent.content
        self.people[name].shown.append(sent)
        self._fold(name, sent)

    def _sent_at_ms(self) -> int:
        sent_at_ms = int(self.now * 1000)
        while sent_at_ms in self.times:
            sent_at_ms += 1
        self.times.add(sent_at_ms)
        return sent_at_ms

    def _content(self, data: st.DataObject) -> Alert | StatusReply:
        sent_at_ms = self._sent_at_ms()
        reply = bool(self.alerts) and data.draw(st.booleans(), label="reply")
        if reply:
            return StatusReply(
                sent_at_ms=sent_at_ms,
                alert_id=MessageId(data.draw(st.sampled_from(self.alerts))),
                status=data.draw(st.sampled_from(list(Status))),
            )
        # Some alerts live minutes, so that clock jumps expire them on the way.
        ttl = data.draw(st.sampled_from([TTL, 600, 1800]), label="ttl")
        alert = Alert(
            sent_at_ms=sent_at_ms,
            text="alert",
            priority=Priority.URGENT,
            expires_at=int(self.now) + ttl,
        )
        self.alerts.append(alert.alert_id)
        return alert

    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.people)))
        sent = self._seal(name, self.people[name].cell, self._content_of(name, data))
        self.sent[name, sent.epoch, sent.counter] = sent
        self._fold(name, sent)  # a sender's own messages are in its roll-ups
        self._broadcast(name, sent)

    @rule(data=st.data(), count=st.integers(2, 4))
    def send_several(self, data: st.DataObject, count: int) -> None:
        """A busy member: several messages in a row (gaps inside an epoch are what is reported)."""
        for _ in range(count):
            self.send(data)

    @precondition(lambda self: self.removed)
    @rule(data=st.data())
    def removed_member_sends(self, data: st.DataObject) -> None:
        """A removed member seals with its copy from before the removal: nobody accepts it.

        It can seal only in an epoch before its removal (it has no key to a later one),
        and the honest relay refuses the publish: the removal closed that epoch's mailbox
        (§C6 item 4), so it is never delivered. A relay colluding with it could deliver it,
        and members still holding that epoch within their grace window would open it
        (§G11; threat model §3.5, "What remains"); members who joined later refuse it.
        """
        name = data.draw(st.sampled_from(sorted(self.removed)))
        stale = self.removed[name].cell
        epoch, _ = stale.send_position()
        assert all(epoch < p.cell._s.current for p in self.people.values())
        content = self._content(data)
        envelope = stale.seal(
            content.KIND, content.encode(), expires_at=int(self.now) + TTL, now=self.now
        )
        for person in self.people.values():
            if person.cell._s.joined_epoch <= epoch:
                continue  # the relay never delivers it (see above)
            try:
                result = person.cell.open(envelope, now=self.now)
            except (NotAMemberError, ReplayError, GroupError):
                continue
            assert isinstance(result, Pending), result  # never opened

    # -- the relay --------------------------------------------------------------------------

    def _owing(self) -> list[str]:
        return sorted(n for n, p in self.people.items() if p.owed)

    @precondition(lambda self: self._owing())
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self._owing()))
        self._deliver(name, self.people[name].owed.pop(0))

    def _holding_messages(self) -> list[str]:
        return sorted(n for n, p in self.people.items() if any(isinstance(i, Sent) for i in p.owed))

    @precondition(lambda self: self._holding_messages())
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        """The relay withholds the next message it owes one member (never a distribution)."""
        person = self.people[data.draw(st.sampled_from(self._holding_messages()))]
        index = next(i for i, item in enumerate(person.owed) if isinstance(item, Sent))
        item = person.owed.pop(index)
        assert isinstance(item, Sent)
        person.dropped.append(item)

    @precondition(lambda self: any(p.delivered for p in self.people.values()))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(n for n, p in self.people.items() if p.delivered)))
        again = data.draw(st.sampled_from(self.people[name].delivered))
        before = len(self.people[name].shown)
        try:
            result = self.people[name].cell.open(again.envelope, now=self.now)
        except ReplayError:
            return
        assert not isinstance(result, Opened), result
        assert len(self.people[name].shown) == before

    @precondition(
        lambda self: any(
            len(p.owed) > 1 and isinstance(p.owed[0], Sent) and isinstance(p.owed[1], Sent)
            for p in self.people.values()
        )
    )
    @rule(data=st.data())
    def reorder(self, data: st.DataObject) -> None:
        names = sorted(
            n
            for n, p in self.people.items()
            if len(p.owed) > 1 and isinstance(p.owed[0], Sent) and isinstance(p.owed[1], Sent)
        )
        owed = self.people[data.draw(st.sampled_from(names))].owed
        owed[0], owed[1] = owed[1], owed[0]

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.people)))
        person = self.people[name]
        saved = person.cell.to_bytes()
        if data.draw(st.booleans(), label="from a version 5 save"):
            # Saved before epochs' member lists were differences (issue 12): every old
            # epoch's list in full. It reads back to the same state, saved as version 6.
            older = write_state(person.cell._s, version=5)
            assert older[0] == 5
            assert CellCrypto.from_bytes(older, person.identity).to_bytes() == saved
            saved = older
        person.cell = CellCrypto.from_bytes(saved, person.identity)
        person.cell.lateness = LATENESS  # not saved: the client sets it on every load
        person.excused = {(s.sender, s.epoch) for s in self.sent.values()}

    @rule(seconds=st.integers(-BACK, 900))
    def clock_jump(self, seconds: int) -> None:
        self.now = max(self.now + seconds, self.latest - BACK)
        self.latest = max(self.latest, self.now)

    @rule()
    def check(self) -> None:
        for name in self.people:
            self._check(name)

    # -- bookkeeping ------------------------------------------------------------------------

    def _deliver(self, name: str, item: Sent | Dist | Posted) -> None:
        person = self.people[name]
        try:
            result = person.cell.open(item.envelope, now=self.now)
        except ExpiredError:
            # Only what expired beyond the lateness by the receiver's clock (§C7) is refused.
            assert isinstance(item, Sent)
            assert item.expires_at + LATENESS <= self.now, (item, self.now)
            person.expired.append(item)
            event("refused: expired beyond the lateness")
            return
        if isinstance(item, Sent):
            person.delivered.append(item)
        self._record(name, result)

    def _record(self, name: str, result: object) -> None:
        person = self.people[name]
        if isinstance(result, Opened) and result.kind == Kind.KEY_UPDATE:
            # For admins only; never shown. The admin takes every update it reads, unless its
            # sender was removed since or a change already committed a newer one.
            taken = person.cell.take_key_update(result)
            assert name == "admin" or not taken, name
            if taken:
                event("a posted key update taken by the admin")
            for released in result.released:
                self._record(name, released)
        elif isinstance(result, Opened):
            if result.kind != Kind.SENDER_KEY:
                sender = self.ids[result.sender.member_id]
                sent = self.sent[sender, result.epoch, result.counter]
                assert sent not in person.shown, "shown twice"
                self._take(name, result, sent)
                if sent.expires_at <= self.now:
                    event("opened late, within the lateness")
                if sent.sender in self.removed:
                    event("opened from a member removed since")
                if result.recovered:
                    event("recovered after a Missing report")
                key = (sender, result.epoch)
                if result.recovered:
                    mid = result.sender.member_id
                    person.recovered[mid, result.epoch] = (
                        person.recovered.get((mid, result.epoch), 0) + 1
                    )
                for lost in person.dropped:
                    where = (lost.sender, lost.epoch, lost.counter)
                    if (
                        key != where[:2]
                        or lost.counter > result.counter
                        or where in person.revealed
                    ):
                        continue
                    # The first later message of its sender reveals the gap, owed or not.
                    person.revealed.add(where)
                    if key not in person.excused and lost not in person.shown:
                        person.must_report.add(where)
                person.excused.discard(key)
            for released in result.released:
                self._record(name, released)
        elif isinstance(result, ExpiredError):  # a parked envelope that expired meanwhile
            person.expired_released += 1
        elif isinstance(result, GroupError):
            raise result
        else:
            assert isinstance(result, Pending | Own), result

    def _fold(self, name: str, sent: Sent) -> None:
        person = self.people[name]
        member = MemberId(self._person(sent.sender).identity.member_id)
        person.book.add(member, sent.sender, sent.content, self.now)

    def _check(self, name: str) -> None:
        person = self.people[name]
        for notice in person.cell.check(self.now):
            if isinstance(notice, Missing):
                key = (notice.sender.member_id, notice.epoch)
                person.missing[key] = person.missing.get(key, 0) + notice.count
                dropped = sum(
                    1
                    for s in person.dropped
                    if self._person(s.sender).identity.member_id == notice.sender.member_id
                    and s.epoch == notice.epoch
                )
                late = sum(
                    1
                    for s in person.owed
                    if isinstance(s, Sent) and s.sender == self.ids[notice.sender.member_id]
                )
                assert person.missing[key] <= dropped + late, (name, notice)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def shown_at_most_once(self) -> None:
        for person in self.people.values():
            assert len(person.shown) == len({id(s) for s in person.shown})

    def teardown(self) -> None:
        """Quiescence: everyone sends once more, all is delivered, grace passes, drops come back."""
        if not self.people:
            return
        for name in sorted(self.people):  # "admin" first
            sent = self._seal(name, self.people[name].cell, self._last(name))
            self.sent[name, sent.epoch, sent.counter] = sent
            self._fold(name, sent)
            self._broadcast(name, sent)
        for name, person in self.people.items():
            while person.owed:
                self._deliver(name, person.owed.pop(0))
        # The grace passes on the members' clock, which may stand a little behind the latest
        # time it showed (a jump back), when some gaps were noticed.
        self.now = self.latest = self.latest + GAP_GRACE
        for name in self.people:
            self._check(name)
        # 4: every revealed drop (not excused by a restart) was reported.
        for name, person in self.people.items():
            for sender, epoch, _counter in person.must_report:
                mid = self._person(sender).identity.member_id
                reported = person.missing.get((mid, epoch), 0)
                need = sum(1 for s, e, _ in person.must_report if (s, e) == (sender, epoch))
                assert reported >= need, (name, sender, epoch, reported, need)
        # The relay delivers what it dropped: each opens once, and what was reported is recovered.
        for name, person in self.people.items():
            for lost in list(person.dropped):
                self._deliver(name, lost)
            for (sender_id, epoch), count in person.missing.items():
                recovered = person.recovered.get((sender_id, epoch), 0)
                expired = sum(
                    1
                    for s in person.expired
                    if s.epoch == epoch and self._person(s.sender).identity.member_id == sender_id
                )
                assert recovered <= count <= recovered + expired, (name, epoch)
        # 1: every current member shows every message of its epochs exactly once, removed
        # senders' included (`shown` holds no message twice: `_record` checks each).
        for name, person in self.people.items():
            me = person.identity.member_id
            joined = person.cell._s.joined_epoch
            expected = {id(s) for s in self.sent.values() if s.sender != name and s.epoch >= joined}
            shown = {id(s) for s in person.shown}
            assert shown <= expected, (name, me.hex()[:8])
            # Nothing unexpired is lost: what was not shown had expired beyond the lateness.
            unshown = [s for s in self.sent.values() if id(s) in expected - shown]
            assert all(s.expires_at + LATENESS <= self.now for s in unshown), (name, unshown)
            assert len(unshown) == len(person.expired) + person.expired_released, (name, unshown)
        self._same_rollups()

    def _same_rollups(self) -> None:
        """3: the same roll-up for every alert, at every member that holds it."""
        for alert_id in self.alerts:
            rollups: list[AlertRollup] = [
                r for p in self.people.values() if (r := p.book.rollup(alert_id)) is not None
            ]
            views = {_view(r) for r in rollups}
            assert len(views) <= 1, (alert_id.hex()[:8], views)


def _view(rollup: AlertRollup) -> tuple[object, ...]:
    """What members must agree on: the alert and who answered what (not when it arrived)."""
    return (
        rollup.alert.alert_id,
        rollup.resolved,
        rollup.false_alarm,
        rollup.votes,
        tuple(sorted((m, s.status) for m, s in rollup.responders.items())),
    )


TestCellLife = CellLife.TestCase
# An example builds a cell and runs up to 40 steps of real cryptography (about 0.3 s), so
# CI runs a fifth of the profile's examples; `deep` runs 1,000 of up to 60 steps.
# CELL_LIFE_EXAMPLES sets the number of examples of a long run (module docstring).
_PROFILE = settings()
TestCellLife.settings = settings(
    max_examples=int(os.environ.get("CELL_LIFE_EXAMPLES", max(20, _PROFILE.max_examples // 5))),
    stateful_step_count=60 if _PROFILE.max_examples > 1000 else 40,
)


class ChannelLife(CellLife):
    """The same life in a broadcast channel (issue 12; docs/protocol.md §C11).

    The admin is the channel's only poster (the machine has no dispatchers): it alone sends
    alerts, and every other member sends only status replies, sealed to the admin (content
    kind 19) inside the group envelope. Every invariant of `CellLife` holds, with two
    changes: a member other than the admin is handed another member's answer (and counts
    it as delivered: the gap and recovery bookkeeping is the group layer's, the same) but
    cannot open it, which is checked on every such envelope; and roll-ups agree only on the
    admin's answers, while each member's roll-up holds no other member's answer than its
    own and the admin's.
    """

    def _wire(self, name: str, cell: CellCrypto, content: Alert | StatusReply) -> tuple[int, bytes]:
        if name == "admin":
            return content.KIND, content.encode()
        admin = self.people["admin"].identity.info
        sealed = seal_for_dispatch(cell_id=cell.cell_id, sender_id=cell.me.member_id,
                                   recipients=[admin], kind=content.KIND,
                                   plaintext=content.encode())  # fmt: skip
        return DISPATCH_KIND, sealed

    def _content_of(self, name: str, data: st.DataObject) -> Alert | StatusReply:
        if name == "admin" or not self.alerts:
            if name != "admin":
                event("a responder had nothing to answer: the admin posted instead")
            return self._content(data)
        return StatusReply(
            sent_at_ms=self._sent_at_ms(),
            alert_id=MessageId(data.draw(st.sampled_from(self.alerts))),
            status=data.draw(st.sampled_from(list(Status))),
        )

    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        """As `CellLife.send`, but a responder with nothing to answer lets the admin post."""
        name = data.draw(st.sampled_from(sorted(self.people)))
        if name != "admin" and not self.alerts:
            name = "admin"
        sent = self._seal(name, self.people[name].cell, self._content_of(name, data))
        self.sent[name, sent.epoch, sent.counter] = sent
        self._fold(name, sent)
        self._broadcast(name, sent)

    def _last(self, name: str) -> Alert | StatusReply:
        if name == "admin":
            last = super()._last(name)
            self.alerts.append(last.alert_id)
            return last
        return StatusReply(sent_at_ms=self._sent_at_ms(), alert_id=MessageId(self.alerts[-1]),
                           status=Status.RESPONDING)  # fmt: skip

    def _take(self, name: str, opened: Opened, sent: Sent) -> None:
        person = self.people[name]
        if sent.sender == "admin":
            assert opened.kind != DISPATCH_KIND
            super()._take(name, opened, sent)
            return
        assert opened.kind == DISPATCH_KIND, "a responder's answer travelled unsealed"
        sender = opened.sender.member_id
        if name != "admin":
            with pytest.raises(NotForMeError):
                open_for_dispatch(opened.plaintext, cell_id=person.cell.cell_id,
                                  sender_id=sender, me=person.identity)  # fmt: skip
            person.shown.append(sent)  # handed over, as ciphertext: not folded
            event("a responder was handed another's sealed answer")
            return
        kind, plaintext = open_for_dispatch(opened.plaintext, cell_id=person.cell.cell_id,
                                            sender_id=sender, me=person.identity)  # fmt: skip
        assert decode_content(kind, plaintext) == sent.content
        person.shown.append(sent)
        self._fold(name, sent)

    def _same_rollups(self) -> None:
        admin_id = self.admin_id
        for alert_id in self.alerts:
            views = set()
            for person in self.people.values():
                rollup = person.book.rollup(alert_id)
                if rollup is None:
                    continue
                me = person.identity.member_id
                assert set(rollup.responders) <= {admin_id, me} or me == admin_id
                views.add(tuple(sorted(
                    (m, s.status) for m, s in rollup.responders.items() if m == admin_id
                )))  # fmt: skip
            assert len(views) <= 1, (alert_id.hex()[:8], views)


TestChannelLife = ChannelLife.TestCase
TestChannelLife.settings = TestCellLife.settings
