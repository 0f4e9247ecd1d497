"""The escalation setting's encodings (docs/protocol.md §C5, §C5.1, §C10) and saved state."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.client._cell_member import CellError, CellInfo
from cellrelay.client._cell_moves import ChangeExtra, ChangeExtraError
from cellrelay.client._state import DEFAULT_ESCALATE_AFTER, CellRecord, EscalationRecord
from cellrelay.protocol.cell._content import MAX_ESCALATE_AFTER, MAX_ESCALATE_BELOW
from cellrelay.protocol.wire import MailboxId

MAILBOX = MailboxId(bytes(range(16)))


@given(st.integers(0, MAX_ESCALATE_BELOW), st.integers(1, MAX_ESCALATE_AFTER))
def test_the_setting_round_trips_in_an_epoch_change(below: int, after: int) -> None:
    extra = ChangeExtra(escalate=(below, after))
    assert msgpack.unpackb(extra.encode()) == {"escalate": [below, after]}
    assert ChangeExtra.decode(extra.encode()) == extra


@pytest.mark.parametrize(
    "value",
    [[-1, 60], [MAX_ESCALATE_BELOW + 1, 60], [2, 0], [2, MAX_ESCALATE_AFTER + 1], [2], [2, 60, 1],
     [2, "60"], [True, 60], 5, None],
)  # fmt: skip
def test_a_bad_setting_is_refused(value: object) -> None:
    data = msgpack.packb({"escalate": value})
    if value is None:  # nil: not set
        assert ChangeExtra.decode(data).escalate is None
        return
    with pytest.raises(ChangeExtraError):
        ChangeExtra.decode(data)


def info(**more: object) -> CellInfo:
    return CellInfo(relay="cellrelay://k@relay.example:7446", group=MAILBOX, control=MAILBOX,
                    **more)  # type: ignore[arg-type]  # fmt: skip


def test_a_joiner_learns_the_setting_and_without_it_extra_is_as_before() -> None:
    assert "escalate" not in msgpack.unpackb(info().encode())
    assert CellInfo.decode(info().encode()).escalate == (0, DEFAULT_ESCALATE_AFTER)
    on = info(escalate=(3, 120))
    assert CellInfo.decode(on.encode()).escalate == (3, 120)


def test_a_damaged_setting_in_a_welcome_is_refused() -> None:
    fields = msgpack.unpackb(info().encode())
    fields["escalate"] = [3, 0]
    with pytest.raises(CellError):
        CellInfo.decode(msgpack.packb(fields))


def record(**more: object) -> CellRecord:
    return CellRecord(crypto=b"c", relay="r", group_mailbox=MAILBOX, control_mailbox=MAILBOX,
                      **more)  # type: ignore[arg-type]  # fmt: skip


def test_saved_state_without_escalation_is_as_before_and_with_it_round_trips() -> None:
    assert not {"escalate", "neighbours", "escalations"} & set(msgpack.unpackb(record().encode()))
    kept = EscalationRecord(alert_id=b"a" * 16, neighbour=b"n" * 16, forwarded_id=b"f" * 16,
                            expires_at=100, reported=(2, 1, "resolved"))  # fmt: skip
    full = record(escalate_below=2, escalate_after=30, neighbours=[b"n" * 16], escalations=[kept])
    again = CellRecord.decode(full.encode())
    assert (again.escalate_below, again.escalate_after) == (2, 30)
    assert again.neighbours == [b"n" * 16]
    assert again.escalations == [kept]
    again.prune(100.0)  # expired with its alert
    assert again.escalations == []
