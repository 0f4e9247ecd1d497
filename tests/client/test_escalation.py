"""Escalation to a neighbouring cell through a real relay (issue 14 item 3, docs/protocol.md §C10).

Two cells on one real relay: Eastside (Ada admin, Rory responder) and Westside (Wes admin,
Wren responder); Lee is in both, a liaison in both, and runs with automatic escalation on
(what the daemon does); Mo is an ordinary member of both. Eastside's setting is N = 2,
T = 2 seconds. An alert that two members answer is never forwarded; one that nobody
answers is forwarded T after its confirmation, the neighbour's answers flow back as notes,
and a second liaison follows the first one's copy instead of forwarding again. Mo, who
is no liaison, cannot escalate, and what a hostile client of Mo's sends anyway (an alert
claiming to be escalated, a note) is refused by every client and reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._cell_member import CellError
from cellrelay.client._cli_output import Style, event_json, event_lines, rollup_json
from cellrelay.client._client import Client
from cellrelay.client._events import CellRole, EscalationReceived, SecurityWarning
from cellrelay.protocol.cell._content import (
    Alert,
    EscalationNote,
    MessageId,
    Priority,
    Status,
    Step,
    escalation_ref,
)
from cellrelay.protocol.cell._rollup import AlertRollup

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .hostile import until
from .test_cells import address_of

TEST_TIMEOUT = 180
T = 2  # seconds: Eastside's escalation delay in this test
N = 2


def copies_in(cell: Cell, alert_id: bytes) -> list[AlertRollup]:
    return cell.escalated_copies(escalation_ref(alert_id))


def roles_seen(cells: list[Cell], member: Cell, role: CellRole) -> bool:
    return all(c.role_of(c.find_member(member.me.member_id.hex())) is role for c in cells)


async def test_escalation_between_two_cells_through_a_real_relay(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    relay = address_of(running_relay)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "ada", "rory", "lee", "mo", "wes", "wren") as clients:
            east = {"ada": await clients["ada"].create_cell("Eastside", relay)}
            for name in ("rory", "lee", "mo"):
                east[name] = await admit(east["ada"], clients[name])
            west = {"wes": await clients["wes"].create_cell("Westside", relay)}
            for name in ("wren", "lee", "mo"):
                west[name] = await admit(west["wes"], clients[name])
            await east["ada"].set_role(east["lee"].me, CellRole.LIAISON)
            await west["wes"].set_role(west["lee"].me, CellRole.LIAISON)
            await east["ada"].set_escalation(N, T)
            await until(lambda: roles_seen(list(east.values()), east["lee"], CellRole.LIAISON))
            await until(lambda: roles_seen(list(west.values()), west["lee"], CellRole.LIAISON))
            await until(lambda: all(c.record.escalate_below == N for c in east.values()))
            assert east["lee"].record.escalate_after == T
            assert west["wren"].record.escalate_below == 0  # a setting of Eastside only

            lee: Client = clients["lee"]
            assert lee.set_neighbour(east["lee"], west["lee"])
            assert lee.neighbours(west["lee"]) == [east["lee"]]
            lee.escalation_interval = 0.2
            lee.escalate_automatically = True

            async with trio.open_nursery() as nursery:
                recorders = {f"east.{n}": Recorder(c) for n, c in east.items()}
                recorders |= {f"west.{n}": Recorder(c) for n, c in west.items()}
                for recorder in recorders.values():
                    await nursery.start(recorder.run)

                # -- enough members answer: never forwarded ---------------------------------
                answered = await east["rory"].send_alert("vans on 3rd", priority=Priority.URGENT)
                await until(lambda: east["ada"].rollup(answered.alert_id) is not None)
                await east["rory"].reply(answered.alert_id, Status.RESPONDING)
                await east["ada"].reply(answered.alert_id, Status.ON_SCENE)
                await until(lambda: _answering(east["lee"], answered) == N)
                await east["ada"].verify(answered.alert_id, Step.CONFIRMED)

                # -- nobody answers, but the alert says never (its own N = 0) --------------
                kept_home = await east["ada"].send_alert("stays here", escalate_below=0)
                await until(lambda: east["lee"].rollup(kept_home.alert_id) is not None)
                await east["ada"].verify(kept_home.alert_id, Step.CONFIRMED)
                assert east["lee"].escalation_policy(kept_home) == (0, T)

                # -- nobody answers: forwarded T after its confirmation --------------------
                lonely = await east["rory"].send_alert(
                    "ICE at the school", priority=Priority.EMERGENCY, place="5th & Oak"
                )
                await until(lambda: east["ada"].rollup(lonely.alert_id) is not None)
                step = await east["ada"].verify(lonely.alert_id, Step.CONFIRMED)
                await until(lambda: len(copies_in(west["wren"], lonely.alert_id)) == 1, timeout=60)
                (copy,) = copies_in(west["wren"], lonely.alert_id)
                # Not before T had passed since the confirmation (both by the relay's clock).
                assert copy.alert.sent_at_ms >= step.sent_at_ms + T * 1000
                assert (copy.alert.text, copy.alert.priority, copy.alert.place) == (
                    "ICE at the school", Priority.EMERGENCY, "5th & Oak"
                )  # fmt: skip
                assert copy.alert.expires_at == lonely.expires_at
                assert copy.alert.alert_id != lonely.alert_id  # a new alert of Westside
                assert copy.escalated_from == "Eastside"
                assert copy.author_id == west["lee"].me.member_id
                # The alert answered by N members, and the one that says never, were due
                # first and never went.
                assert copies_in(west["wren"], answered.alert_id) == []
                assert copies_in(west["wren"], kept_home.alert_id) == []
                assert [e.alert_id for e in east["lee"].record.escalations] == [lonely.alert_id]

                # Eastside learns it went: a note from its liaison, with no answers yet.
                await until(lambda: _escalations(east["ada"], lonely) == [("Westside", 0, 0, None)])

                # -- the neighbour's answers flow back ------------------------------------
                forwarded = copy.alert_id
                await west["wren"].reply(forwarded, Status.RESPONDING)
                await west["wes"].reply(forwarded, Status.ON_SCENE)
                await until(lambda: _escalations(east["ada"], lonely) == [("Westside", 1, 1, None)])
                shown = await recorders["east.rory"].wait_for(
                    lambda e: isinstance(e, EscalationReceived) and e.note.on_scene == 1
                )
                assert isinstance(shown, EscalationReceived)
                assert shown.sender.name == "lee"
                assert shown.rollup is not None
                text = "\n".join(event_lines(shown, Style(colour=False)))
                assert "escalated to Westside (via lee): 1 on scene, 1 responding" in text
                assert event_json(shown)["type"] == "escalation"
                assert rollup_json(shown.rollup)["escalations"][0]["on_scene"] == 1  # type: ignore[index]
                await west["wes"].reply(forwarded, Status.RESOLVED)  # an admin closes it there
                await until(
                    lambda: (
                        _escalations(east["ada"], lonely) == [("Westside", 1, 0, Status.RESOLVED)]
                    )
                )
                # Every member of Eastside holds the same summary.
                await until(
                    lambda: all(
                        _escalations(c, lonely) == [("Westside", 1, 0, Status.RESOLVED)]
                        for c in east.values()
                    )
                )
                # The one-off command again: nothing new to forward or to say.
                again = await lee.escalate(east["lee"], lonely.alert_id, west["lee"])
                assert (again.forwarded, again.note) == (None, None)
                assert again.forwarded_id == forwarded

                # -- a member who is no liaison cannot forward ------------------------------
                with pytest.raises(CellError, match="only a liaison, a dispatcher or an admin"):
                    await clients["mo"].escalate(east["mo"], answered.alert_id, west["mo"])
                # A hostile client sends anyway: an alert posing as escalated from Eastside...
                forged = Alert(sent_at_ms=west["mo"]._now_ms(), text="fake call for help",
                               priority=Priority.EMERGENCY, expires_at=lonely.expires_at,
                               from_label="Eastside", from_ref=escalation_ref(answered.alert_id))  # fmt: skip
                await west["mo"]._send(forged, forged.expires_at)
                for name in ("wes", "wren", "lee"):
                    await recorders[f"west.{name}"].wait_for(
                        lambda e: isinstance(e, SecurityWarning) and e.reason == "EscalationRefused"
                    )
                    rollup = west[name].rollup(forged.alert_id)
                    assert rollup is not None
                    assert rollup.escalated_from is None  # shown as an ordinary alert
                # ...and a note posing as a liaison's, in Eastside.
                fake_note = EscalationNote(sent_at_ms=east["mo"]._now_ms(),
                                           alert_id=MessageId(lonely.alert_id), label="Westside",
                                           responding=40, on_scene=40)  # fmt: skip
                await east["mo"]._send(fake_note, lonely.expires_at)
                for name in ("ada", "rory", "lee"):
                    await recorders[f"east.{name}"].wait_for(
                        lambda e: isinstance(e, SecurityWarning) and e.reason == "EscalationRefused"
                    )
                    rollup = east[name].rollup(lonely.alert_id)
                    assert rollup is not None
                    assert rollup.refused_notes == 1
                    assert [s.member_id for s in rollup.escalations] == [east["lee"].me.member_id]

                # -- a second liaison follows the first one's copy ------------------------
                await east["ada"].set_role(east["mo"].me, CellRole.LIAISON)
                await west["wes"].set_role(west["mo"].me, CellRole.LIAISON)
                await until(lambda: east["mo"].may_escalate and west["mo"].may_escalate)
                followed = await clients["mo"].escalate(east["mo"], lonely.alert_id, west["mo"])
                assert followed.forwarded is None
                assert followed.forwarded_id == forwarded
                assert len(copies_in(west["wes"], lonely.alert_id)) == 1
                nursery.cancel_scope.cancel()


def _answering(cell: Cell, alert: Alert) -> int:
    rollup = cell.rollup(alert.alert_id)
    return 0 if rollup is None else len(rollup.responding) + len(rollup.on_scene)


def _escalations(cell: Cell, alert: Alert) -> list[tuple[str, int, int, Status | None]]:
    rollup = cell.rollup(alert.alert_id)
    if rollup is None:
        return []
    return [(s.label, s.responding, s.on_scene, s.outcome) for s in rollup.escalations]
