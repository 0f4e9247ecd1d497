"""Fuzz the verification state machine (docs/protocol.md §C2 rule 7) with member-sent steps.

Every step comes from some member inside an authenticated group message, and a member can
be hostile: whatever the steps, who sends them and what times they claim, the roll-up
must not raise, must apply only verifiers' steps along `TRANSITIONS`, and must reach the
same state whatever order the steps arrive in.

Input layout: byte 0 says who the verifiers are (bit n: member n, of four); then each
step is 4 bytes: the member (low 2 bits), the step (byte % 4), and a signed 16-bit
offset in milliseconds of its claimed send time; a chunk starting 0xFF, anywhere, marks
where the alert arrives instead (before it, steps wait in the pending pool). At most 16
chunks are read: past a member's 16 steps, what is kept may depend on order (§C2).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol.cell._content import (
        Alert,
        MemberId,
        MessageId,
        Priority,
        Step,
        VerificationStep,
    )
    from cellrelay.protocol.cell._rollup import (
        MAX_STEPS_PER_MEMBER,
        TRANSITIONS,
        ReportState,
        RollupBook,
    )

T0 = 1_767_225_600
ALERT_ID = MessageId(b"\x01" * 16)
MEMBERS = [MemberId(bytes([n + 1]) * 16) for n in range(4)]
STEPS = list(Step)


def _book(verifiers: frozenset[bytes], events: list[tuple[MemberId, object]]) -> RollupBook:
    book = RollupBook()
    book.set_verifiers(verifiers)
    for member, content in events:
        book.add(member, "m", content, T0 + 5.0)  # type: ignore[arg-type]
    return book


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    verifiers = frozenset(m for n, m in enumerate(MEMBERS) if data[0] >> n & 1)
    alert = Alert(message_id=ALERT_ID, sent_at_ms=T0 * 1000, text="report",
                  priority=Priority.URGENT, expires_at=T0 + 3600)  # fmt: skip
    events: list[tuple[MemberId, object]] = []
    # Within the bounds (16 steps per member): past them what is kept may depend on order,
    # as docs/protocol.md §C2 says.
    body, placed = data[1 : 1 + 4 * MAX_STEPS_PER_MEMBER], False
    for n in range(0, len(body) - 3, 4):
        chunk = body[n : n + 4]
        if chunk[0] == 0xFF and not placed:
            events.append((MEMBERS[0], alert))
            placed = True
            continue
        offset = int.from_bytes(chunk[2:4], "big", signed=True)
        step = VerificationStep(
            message_id=MessageId(n.to_bytes(16, "big")),
            sent_at_ms=max(0, T0 * 1000 + offset),
            alert_id=ALERT_ID,
            step=STEPS[chunk[1] % 4],
        )
        events.append((MEMBERS[chunk[0] & 3], step))
    if not placed:
        events.append((MEMBERS[0], alert))
    forward = _book(verifiers, events).rollup(ALERT_ID)
    backward = _book(verifiers, events[::-1]).rollup(ALERT_ID)
    if forward is None or backward is None:
        raise AssertionError("the alert is gone")
    if (forward.verification, forward.steps) != (backward.verification, backward.steps):
        raise AssertionError("the state depends on arrival order")
    state = ReportState.REPORTED
    for record in forward.steps:
        if record.member_id not in verifiers or record.state not in TRANSITIONS[state]:
            raise AssertionError("a step was applied that the rules refuse")
        state = record.state
    if state is not forward.verification:
        raise AssertionError("the state is not the last applied step's")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
