"""Escalation notes in the roll-up (docs/protocol.md §C10): who counts, latest wins, any order."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from cellrelay.protocol.cell._content import (
    Alert,
    EscalationNote,
    MemberId,
    MessageId,
    Priority,
    Status,
    escalation_ref,
)
from cellrelay.protocol.cell._rollup import (
    MAX_NOTES_PER_MEMBER,
    AlertRollup,
    RollupBook,
)

T0 = 1_767_225_600
MS = T0 * 1000
A1, A2 = MessageId(b"\x01" * 16), MessageId(b"\x02" * 16)
GHOST = MessageId(b"\x09" * 16)
ADA, LEE, MO = (MemberId(bytes([n]) * 16) for n in (0xA, 0xB, 0xC))  # admin, liaison, member


def alert(alert_id: MessageId = A1, **more: object) -> Alert:
    return Alert(message_id=alert_id, sent_at_ms=MS, text="vans", priority=Priority.URGENT,
                 expires_at=T0 + 3600, **more)  # type: ignore[arg-type]  # fmt: skip


def note(at: int = 0, *, label: str = "Westside", responding: int = 0, on_scene: int = 0,
         outcome: Status | None = None, alert_id: MessageId = A1) -> EscalationNote:  # fmt: skip
    return EscalationNote(sent_at_ms=MS + at, alert_id=alert_id, label=label,
                          responding=responding, on_scene=on_scene, outcome=outcome)  # fmt: skip


def book() -> RollupBook:
    b = RollupBook()
    b.set_admins(frozenset({ADA}))
    b.set_liaisons(frozenset({LEE}))
    return b


def rollup_of(b: RollupBook, alert_id: MessageId = A1) -> AlertRollup:
    r = b.rollup(alert_id)
    assert r is not None
    return r


def test_a_liaisons_latest_note_is_listed() -> None:
    b = book()
    b.add(ADA, "ada", alert(), T0 + 1)
    b.add(LEE, "lee", note(1000), T0 + 2)
    b.add(LEE, "lee", note(3000, responding=2, on_scene=1), T0 + 4)
    b.add(LEE, "lee", note(2000, responding=1), T0 + 5)  # older, arriving late: ignored
    (summary,) = rollup_of(b).escalations
    assert (summary.label, summary.responding, summary.on_scene) == ("Westside", 2, 1)
    assert summary.member_id == LEE
    assert summary.outcome is None


def test_notes_from_anyone_but_an_escalator_are_refused_and_counted() -> None:
    b = book()
    b.add(ADA, "ada", alert(), T0 + 1)
    b.add(MO, "mo", note(1000, responding=50), T0 + 2)
    r = rollup_of(b)
    assert r.escalations == ()
    assert r.refused_notes == 1
    # Made a liaison, mo's note counts (the reader's current roles decide, like steps).
    b.set_liaisons(frozenset({LEE, MO}))
    assert [s.responding for s in rollup_of(b).escalations] == [50]


def test_one_note_per_liaison_and_neighbour() -> None:
    b = book()
    b.add(ADA, "ada", alert(), T0 + 1)
    b.add(LEE, "lee", note(1000, label="Westside", responding=1), T0 + 2)
    b.add(LEE, "lee", note(1000, label="Northside", responding=3), T0 + 2)
    b.add(ADA, "ada", note(1000, label="Westside", outcome=Status.RESOLVED), T0 + 2)
    listed = [(s.label, s.member_id, s.responding, s.outcome) for s in rollup_of(b).escalations]
    assert listed == [
        ("Northside", LEE, 3, None),
        ("Westside", ADA, 0, Status.RESOLVED),
        ("Westside", LEE, 1, None),
    ]


def test_a_note_before_its_alert_counts_when_it_arrives() -> None:
    b = book()
    b.add(LEE, "lee", note(1000, responding=4), T0 + 1)
    assert b.pending == 1
    b.add(ADA, "ada", alert(), T0 + 2)
    assert b.pending == 0
    assert [s.responding for s in rollup_of(b).escalations] == [4]


def test_notes_per_liaison_are_bounded() -> None:
    b = book()
    b.add(ADA, "ada", alert(), T0 + 1)
    for n in range(MAX_NOTES_PER_MEMBER + 3):
        b.add(LEE, "lee", note(1000, label=f"cell {n}"), T0 + 2)
    assert len(rollup_of(b).escalations) == MAX_NOTES_PER_MEMBER
    assert b.dropped == 3


def test_escalated_from_is_shown_only_for_an_escalators_alert() -> None:
    b = book()
    ref = escalation_ref(GHOST)
    b.add(LEE, "lee", alert(A1, from_label="Eastside", from_ref=ref), T0 + 1)
    b.add(MO, "mo", alert(A2, from_label="Eastside", from_ref=ref), T0 + 1)
    assert rollup_of(b, A1).escalated_from == "Eastside"
    assert rollup_of(b, A2).escalated_from is None  # a forged claim: not shown
    assert rollup_of(b, A2).alert.from_label == "Eastside"  # (still the alert it sent)


# -- order independence -----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    sender: MemberId
    content: Alert | EscalationNote
    received_at: float


notes = st.builds(
    EscalationNote,
    message_id=st.sampled_from([MessageId(bytes([n]) * 16) for n in range(16, 19)]),
    sent_at_ms=st.integers(MS, MS + 2),
    alert_id=st.sampled_from([A1, A2, GHOST]),
    label=st.sampled_from(["W", "N"]),
    responding=st.integers(0, 3),
    on_scene=st.integers(0, 2),
    outcome=st.sampled_from([None, Status.RESOLVED, Status.FALSE_ALARM]),
)
events = st.builds(
    Event,
    sender=st.sampled_from([ADA, LEE, MO]),
    content=st.one_of(st.builds(alert, st.sampled_from([A1, A2])), notes, notes),
    received_at=st.sampled_from([T0 + 1.0, T0 + 2.0]),
)


def replay(order: list[Event]) -> RollupBook:
    b = book()
    for e in order:
        b.add(e.sender, "x", e.content, e.received_at)
    return b


@settings(max_examples=200)
@given(st.lists(events, max_size=12), st.data())
def test_notes_are_independent_of_arrival_order(evs: list[Event], data: st.DataObject) -> None:
    shuffled = list(data.draw(st.permutations(evs)))
    one, two = replay(evs), replay(shuffled)
    assert [one.rollup(a) for a in (A1, A2)] == [two.rollup(a) for a in (A1, A2)]
    assert one.pending == two.pending
