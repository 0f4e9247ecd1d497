"""ReportState of reports in the roll-up (issue 14 item 1): the state machine and who may step.

docs/protocol.md §C2 "ReportState". A report starts *reported*; only a verifier (a
dispatcher or an admin, at the reader's current roles) moves it, along `TRANSITIONS`.
The book depends on the set of steps it holds, never on their arrival order.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellrelay.protocol.cell._content import (
    Alert,
    ContentError,
    ContentKind,
    MemberId,
    MessageId,
    Priority,
    Status,
    StatusReply,
    Step,
    VerificationStep,
    decode_content,
    new_message_id,
)
from cellrelay.protocol.cell._rollup import (
    MAX_STEPS_PER_MEMBER,
    TRANSITIONS,
    AlertRollup,
    ReportState,
    RollupBook,
)

T0 = 1_767_225_600
MS = T0 * 1000
A1 = MessageId(b"\x01" * 16)
REPORTER, DISPATCH, ADMIN, RESPONDER, OTHER = (
    MemberId(bytes([n]) * 16) for n in (0xA, 0xD, 0xE, 0xF, 0xB)
)
NAMES = {REPORTER: "rita", DISPATCH: "dana", ADMIN: "ada", RESPONDER: "rory", OTHER: "ola"}


def alert(alert_id: MessageId = A1) -> Alert:
    return Alert(
        message_id=alert_id,
        sent_at_ms=MS,
        text="ICE van at the school",
        priority=Priority.EMERGENCY,
        expires_at=T0 + 3600,
    )


def step(state: Step | str, at: int, *, alert_id: MessageId = A1) -> VerificationStep:
    return VerificationStep(sent_at_ms=MS + at, alert_id=alert_id, step=Step(state), note=None)


def book() -> RollupBook:
    b = RollupBook()
    b.set_admins(frozenset({ADMIN}))
    b.set_verifiers(frozenset({DISPATCH}))
    return b


def get(b: RollupBook) -> AlertRollup:
    r = b.rollup(A1)
    assert r is not None
    return r


def add(b: RollupBook, member: MemberId, content: Alert | VerificationStep | StatusReply) -> None:
    b.add(member, NAMES[member], content, T0 + 10.0)


def test_a_report_goes_from_reported_to_resolved_and_says_who_set_each_step() -> None:
    b = book()
    add(b, REPORTER, alert())
    r = get(b)
    assert r.verification is ReportState.REPORTED
    assert r.unverified
    assert r.verified_by is None
    for at, (who, s) in enumerate(
        [(DISPATCH, Step.VERIFYING), (DISPATCH, Step.CONFIRMED), (ADMIN, Step.RESOLVED)], 1
    ):
        add(b, who, step(s, at))
        r = get(b)
        assert r.verification.value == s.value
        assert r.verified_by is not None
        assert (r.verified_by.member_id, r.verified_by.name) == (who, NAMES[who])
    assert [x.state for x in r.steps] == ["verifying", "confirmed", "resolved"]
    assert r.resolved
    assert not b.active(T0 + 20)


# Every pair (state reached, step taken): the state moves exactly when TRANSITIONS says.
_PATHS = {
    ReportState.REPORTED: [],
    ReportState.VERIFYING: [Step.VERIFYING],
    ReportState.CONFIRMED: [Step.CONFIRMED],
    ReportState.FALSE_ALARM: [Step.FALSE_ALARM],
    ReportState.RESOLVED: [Step.CONFIRMED, Step.RESOLVED],
}


@pytest.mark.parametrize(("start", "taken"), list(itertools.product(list(ReportState), list(Step))))
def test_every_transition_is_taken_or_refused_as_the_table_says(
    start: ReportState, taken: Step
) -> None:
    b = book()
    add(b, REPORTER, alert())
    for at, s in enumerate(_PATHS[start], 1):
        add(b, DISPATCH, step(s, at))
    assert get(b).verification is start
    add(b, DISPATCH, step(taken, 100))
    after = get(b)
    target = ReportState(taken.value)
    if target in TRANSITIONS[start]:
        assert after.verification is target
        assert after.refused_steps == 0
    else:
        assert after.verification is start
        assert after.refused_steps == 1
    # Closed exactly in the two closing states.
    assert after.closed == (after.verification in (ReportState.FALSE_ALARM, ReportState.RESOLVED))


@pytest.mark.parametrize("who", [REPORTER, RESPONDER, OTHER])
@pytest.mark.parametrize("taken", list(Step))
def test_a_step_by_anyone_but_a_verifier_is_refused(who: MemberId, taken: Step) -> None:
    b = book()
    add(b, REPORTER, alert())
    add(b, who, step(taken, 1))
    r = get(b)
    assert r.verification is ReportState.REPORTED
    assert r.refused_steps == 1
    assert not r.closed


@pytest.mark.parametrize("who", [DISPATCH, ADMIN])
@pytest.mark.parametrize("taken", [Step.VERIFYING, Step.CONFIRMED, Step.FALSE_ALARM])
def test_a_dispatcher_or_an_admin_may_take_each_first_step(who: MemberId, taken: Step) -> None:
    b = book()
    add(b, REPORTER, alert())
    add(b, who, step(taken, 1))
    r = get(b)
    assert r.verification.value == taken.value


def test_demoting_a_dispatcher_withdraws_its_steps_and_promoting_applies_them() -> None:
    b = book()
    add(b, REPORTER, alert())
    add(b, RESPONDER, step(Step.CONFIRMED, 1))
    r = get(b)
    assert r.verification is ReportState.REPORTED
    b.set_verifiers(frozenset({DISPATCH, RESPONDER}))
    r = get(b)
    assert r.confirmed
    b.set_verifiers(frozenset({DISPATCH}))
    r = get(b)
    assert r.verification is ReportState.REPORTED


def test_a_step_before_its_alert_waits_and_counts_when_it_comes() -> None:
    b = book()
    add(b, DISPATCH, step(Step.CONFIRMED, 1))
    assert b.pending == 1
    add(b, REPORTER, alert())
    assert b.pending == 0
    r = get(b)
    assert r.confirmed


def test_a_waiting_step_is_dropped_after_the_horizon() -> None:
    b = book()
    add(b, DISPATCH, step(Step.CONFIRMED, 1))
    b.prune(T0 + 10.0 + 8 * 86_400)
    assert b.pending == 0


def test_a_dispatchers_false_alarm_closes_whatever_the_votes_say() -> None:
    b = book()
    add(b, REPORTER, alert())
    add(b, DISPATCH, step(Step.FALSE_ALARM, 1))
    reply = StatusReply(sent_at_ms=MS + 5, alert_id=A1, status=Status.RESPONDING, note=None)
    add(b, REPORTER, reply)  # the author's later "responding" does not reopen it
    r = get(b)
    assert r.false_alarm


def test_a_dispatcher_decides_under_the_close_rule_too() -> None:
    b = book()
    add(b, REPORTER, alert())
    add(b, DISPATCH, StatusReply(sent_at_ms=MS + 1, alert_id=A1, status=Status.RESOLVED, note=None))
    r = get(b)
    assert r.resolved
    assert r.votes == 0


def test_a_copy_of_a_step_is_held_once_and_one_member_holds_a_bounded_share() -> None:
    b = book()
    add(b, REPORTER, alert())
    s = step(Step.VERIFYING, 1)
    add(b, DISPATCH, s)
    add(b, DISPATCH, s)
    r = get(b)
    assert len(r.steps) == 1
    for at in range(MAX_STEPS_PER_MEMBER + 5):
        add(b, RESPONDER, step(Step.CONFIRMED, 10 + at))
    r = get(b)
    assert r.refused_steps == MAX_STEPS_PER_MEMBER - 0  # its share, all refused
    assert b.dropped == 5
    add(b, DISPATCH, step(Step.CONFIRMED, 500))  # the genuine verifier is not crowded out
    r = get(b)
    assert r.confirmed


def test_the_step_content_round_trips_and_refuses_reported() -> None:
    s = step(Step.CONFIRMED, 3)
    assert decode_content(ContentKind.VERIFICATION, s.encode()) == s
    wire = s.encode().replace(b"confirmed", b"reported\x00")  # same length, a state not a step
    with pytest.raises(ContentError, match="step"):
        decode_content(ContentKind.VERIFICATION, wire)


# -- properties ---------------------------------------------------------------------------

_members = st.sampled_from([REPORTER, DISPATCH, ADMIN, RESPONDER])
_steps = st.lists(
    st.tuples(_members, st.sampled_from(list(Step)), st.integers(-5, 60)),
    max_size=12,
)


def _events(
    steps: list[tuple[MemberId, Step, int]],
) -> list[tuple[MemberId, Alert | VerificationStep]]:
    events: list[tuple[MemberId, Alert | VerificationStep]] = [(REPORTER, alert())]
    for member, s, at in steps:
        events.append((member, VerificationStep(
            message_id=new_message_id(), sent_at_ms=MS + at, alert_id=A1, step=s, note=None)))  # fmt: skip
    return events


@settings(max_examples=150, deadline=None)
@given(_steps, st.data())
def test_verification_is_independent_of_arrival_order(
    steps: list[tuple[MemberId, Step, int]], data: st.DataObject
) -> None:
    events = _events(steps)
    shuffled = data.draw(st.permutations(events))
    results = []
    for order in (events, shuffled):
        b = book()
        for member, content in order:
            add(b, member, content)
        r = get(b)
        results.append((r.verification, r.steps, r.refused_steps, r.outcome))
    assert results[0] == results[1]


@settings(max_examples=150, deadline=None)
@given(_steps)
def test_the_state_is_reached_by_legal_steps_of_verifiers_only(
    steps: list[tuple[MemberId, Step, int]],
) -> None:
    b = book()
    for member, content in _events(steps):
        add(b, member, content)
    r = get(b)
    state = ReportState.REPORTED
    for record in r.steps:  # the applied steps replay the table, each by a verifier
        assert record.member_id in (DISPATCH, ADMIN)
        assert record.state in TRANSITIONS[state]
        state = record.state
    assert state is r.verification
    assert len(r.steps) + r.refused_steps == len(steps)
    if r.verification in (ReportState.FALSE_ALARM, ReportState.RESOLVED):
        assert r.closed
        assert not b.active(T0 + 20)


_verifier_sets = st.frozensets(st.sampled_from([DISPATCH, RESPONDER, OTHER]))


@settings(max_examples=100, deadline=None)
@given(_steps, _verifier_sets, _verifier_sets)
def test_changing_the_verifiers_is_the_same_as_having_had_them_all_along(
    steps: list[tuple[MemberId, Step, int]],
    before: frozenset[MemberId],
    after: frozenset[MemberId],
) -> None:
    changed, fresh = RollupBook(), RollupBook()
    for b in (changed, fresh):
        b.set_admins(frozenset({ADMIN}))
    changed.set_verifiers(before)
    fresh.set_verifiers(after)
    for member, content in _events(steps):
        add(changed, member, content)
        add(fresh, member, content)
    get(changed)  # a snapshot under the old verifiers, which the change must not keep
    changed.set_verifiers(after)
    one, two = get(changed), get(fresh)
    assert (one.verification, one.steps, one.refused_steps, one.outcome) == (
        two.verification, two.steps, two.refused_steps, two.outcome
    )  # fmt: skip
