"""One member cannot close every alert for good (issue 9, finding 2).

Mallory, a planted member, answers the lead's alert with a false alarm claiming the last
representable millisecond. Before, that closed the alert for every member (any one
member's FALSE_ALARM closed it) and nobody could reopen it (no later time exists). Now
claimed times are clamped to receipt plus CLAIM_TOLERANCE, and only the alert's author or
an admin closes or reopens an alert; another member's word is a vote (docs/protocol.md
§C2, "Closing").
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._cli_output import Style, rollup_json, rollup_lines
from cellrelay.protocol.cell._content import (
    Alert,
    MemberId,
    MessageId,
    Priority,
    Status,
    StatusReply,
)
from cellrelay.protocol.cell._rollup import CLAIM_TOLERANCE, RollupBook

from .cells import admit, members
from .conftest import RunningRelay
from .hostile import until
from .test_cells import address_of

TEST_TIMEOUT = 60
END_OF_TIME_MS = 2**63 - 1


def active_ids(cell: Cell) -> list[bytes]:
    return [r.alert_id for r in cell.active_alerts()]


async def test_a_far_future_false_alarm_from_one_member_closes_nothing(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "mallory") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            mallory = await admit(lead, clients["mallory"])
            alert = await lead.send_alert("raid on 9th street", ttl=3600)
            cells = (lead, ana, mallory)
            await until(lambda: all(c.rollup(alert.alert_id) is not None for c in cells))
            forged = StatusReply(
                sent_at_ms=END_OF_TIME_MS,
                alert_id=MessageId(alert.alert_id),
                status=Status.FALSE_ALARM,
            )
            await mallory._send(forged, alert.expires_at)  # a hostile client sends anything
            me = MemberId(mallory.crypto.me.member_id)

            def heard(cell: Cell) -> bool:
                rollup = cell.rollup(alert.alert_id)
                return rollup is not None and me in rollup.false_alarm_by

            await until(lambda: heard(lead) and heard(ana))
            for cell in (lead, ana):
                assert active_ids(cell) == [alert.alert_id]
                rollup = cell.rollup(alert.alert_id)
                assert rollup is not None
                assert not rollup.closed
                assert rollup.responders[me].sent_at_ms <= (time.time() + CLAIM_TOLERANCE) * 1000

            # The author closes it, and reopens it: everyone follows.
            await lead.reply(alert.alert_id, Status.RESOLVED)
            await until(lambda: all(active_ids(c) == [] for c in cells))
            await lead.reply(alert.alert_id, Status.RESPONDING, note="they came back")
            await until(lambda: all(active_ids(c) == [alert.alert_id] for c in cells))


def test_the_command_line_shows_the_votes_to_close() -> None:
    book = RollupBook()
    author, voter = MemberId(b"\x0a" * 16), MemberId(b"\x0b" * 16)
    now = time.time()
    alert = Alert(sent_at_ms=int(now * 1000), text="raid", priority=Priority.URGENT,
                  expires_at=int(now) + 600)  # fmt: skip
    book.add(author, "lead", alert, now)
    vote = StatusReply(
        sent_at_ms=int(now * 1000) + 1, alert_id=alert.alert_id, status=Status.RESOLVED
    )
    rollup = book.add(voter, "ana", vote, now)
    assert rollup is not None
    (line,) = rollup_lines(rollup, Style(colour=False))
    assert "open (1 of 2 votes to close)" in line
    assert rollup_json(rollup)["votes"] == 1
