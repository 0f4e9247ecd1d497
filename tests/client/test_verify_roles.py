"""Verification of reports and roles, through a real relay (issue 14 items 1 and 2).

A cell of five real clients with their own keystores: Ada (admin), Dana (dispatcher), Rory
(responder), Lou (legal observer) and Mo (member). Every step of a report, from reported
to resolved, is taken through the relay and seen by every member; every permission is
tried by every role, allowed and refused. A refused step is sent the way a hostile client
would (`_send`, past the library's own check) and every member's client must refuse it
and say so (`SecurityWarning`, reason "RoleRefused").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._cell_member import CellError
from cellrelay.client._cli_output import Style, event_json, event_lines, rollup_json
from cellrelay.client._events import (
    AlertReceived,
    CellEvent,
    CellRole,
    RoleChanged,
    SecurityWarning,
    VerificationReceived,
)
from cellrelay.protocol.cell._content import MessageId, Priority, Step, VerificationStep
from cellrelay.protocol.cell._rollup import ReportState

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .hostile import until
from .test_cells import address_of

TEST_TIMEOUT = 120
NAMES = ("ada", "dana", "rory", "lou", "mo")
ROLES = {
    "dana": CellRole.DISPATCHER,
    "rory": CellRole.RESPONDER,
    "lou": CellRole.OBSERVER,
    "mo": CellRole.MEMBER,
}


def state(cell: Cell, alert_id: bytes) -> ReportState | None:
    rollup = cell.rollup(alert_id)
    return None if rollup is None else rollup.verification


async def test_every_role_and_every_step_through_a_real_relay(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, *NAMES) as clients:
            ada = await clients["ada"].create_cell("Eastside", address_of(running_relay))
            cells = {"ada": ada}
            for name in NAMES[1:]:
                cells[name] = await admit(ada, clients[name])
            everyone = list(cells.values())
            async with trio.open_nursery() as nursery:
                recorders = {n: Recorder(c) for n, c in cells.items()}
                for recorder in recorders.values():
                    await nursery.start(recorder.run)

                # -- roles: set by the admin, seen by every member --------------------------
                for name, role in ROLES.items():
                    if role is not CellRole.MEMBER:
                        await ada.set_role(cells[name].me, role)

                def roles_seen() -> bool:
                    return all(
                        c.role_of(c.find_member(cells[n].me.member_id.hex())) is r
                        for c in everyone
                        for n, r in ROLES.items()
                    )

                await until(roles_seen)
                changed = await recorders["mo"].wait_for(
                    lambda e: isinstance(e, RoleChanged) and e.role is CellRole.DISPATCHER
                )
                assert isinstance(changed, RoleChanged)
                assert changed.member.name == "dana"
                assert changed.by.name == "ada"
                assert [cells[n].role for n in NAMES] == [
                    CellRole.ADMIN, *ROLES.values()
                ]  # fmt: skip
                assert [cells[n].is_verifier for n in NAMES] == [True, True, False, False, False]

                # Only an admin sets roles.
                for name in ("dana", "rory", "lou", "mo"):
                    with pytest.raises(CellError, match="only an admin"):
                        await cells[name].set_role(cells["mo"].me, CellRole.DISPATCHER)

                # -- a report by a member, through every step ------------------------------
                alert = await cells["mo"].send_alert(
                    "ICE van outside the school", priority=Priority.EMERGENCY, place="5th & Oak"
                )
                aid = alert.alert_id
                await until(lambda: all(state(c, aid) is ReportState.REPORTED for c in everyone))

                # Every role without the right is refused by the library before sending...
                for name in ("rory", "lou", "mo"):
                    with pytest.raises(CellError, match="only a dispatcher or an admin"):
                        await cells[name].verify(aid, Step.CONFIRMED)
                # ...and a hostile client that sends anyway is refused by every member.
                forged = VerificationStep(
                    sent_at_ms=cells["rory"]._now_ms(),
                    alert_id=MessageId(aid),
                    step=Step.CONFIRMED,
                )
                await cells["rory"]._send(forged, alert.expires_at)
                for name in NAMES:
                    if name == "rory":
                        continue
                    warning = await recorders[name].wait_for(
                        lambda e: isinstance(e, SecurityWarning) and e.reason == "RoleRefused"
                    )
                    assert isinstance(warning, SecurityWarning)
                    assert "rory" in warning.detail
                    assert "responder" in warning.detail
                await until(
                    lambda: all(
                        (r := c.rollup(aid)) is not None and r.refused_steps == 1 for c in everyone
                    )
                )
                assert all(state(c, aid) is ReportState.REPORTED for c in everyone)
                assert not any(
                    isinstance(e, VerificationReceived)
                    for r in recorders.values()
                    for e in r.events
                )

                # The dispatcher takes it, confirms it, and the admin resolves it.
                for who, step, expected in (
                    ("dana", Step.VERIFYING, ReportState.VERIFYING),
                    ("dana", Step.CONFIRMED, ReportState.CONFIRMED),
                    ("ada", Step.RESOLVED, ReportState.RESOLVED),
                ):
                    await cells[who].verify(aid, step, note=f"{who} says {step}")
                    await until(lambda x=expected: all(state(c, aid) is x for c in everyone))  # type: ignore[misc]
                    for cell in everyone:
                        rollup = cell.rollup(aid)
                        assert rollup is not None
                        assert rollup.verified_by is not None
                        assert rollup.verified_by.name == who
                        assert rollup.verified_by.note == f"{who} says {step}"
                assert all(c.active_alerts() == [] for c in everyone)
                event = await recorders["lou"].wait_for(
                    lambda e: isinstance(e, VerificationReceived) and e.step.step is Step.RESOLVED
                )
                assert isinstance(event, VerificationReceived)
                assert event.sender.role is CellRole.ADMIN
                # The CLI's views say it too: text and JSON.
                line = "\n".join(event_lines(event, Style(colour=False)))
                assert "RESOLVED" in line
                assert "by ada" in line
                as_json = event_json(event)
                assert as_json["type"] == "verification"
                assert as_json["step"] == "resolved"
                assert event.rollup is not None
                rolled = rollup_json(event.rollup)
                assert rolled["verification"] == "resolved"
                steps = rolled["steps"]
                assert isinstance(steps, list)
                assert [s["state"] for s in steps] == ["verifying", "confirmed", "resolved"]

                # A step the state does not accept (resolved is final) counts nowhere.
                await cells["dana"].verify(aid, Step.CONFIRMED)
                await until(
                    lambda: all(
                        (r := c.rollup(aid)) is not None and r.refused_steps == 2 for c in everyone
                    )
                )
                assert all(state(c, aid) is ReportState.RESOLVED for c in everyone)

                # A dispatcher may report a false alarm straight away; a member may not.
                second = await cells["lou"].send_alert("agents at the courthouse?")
                await until(lambda: all(c.rollup(second.alert_id) is not None for c in everyone))
                await cells["dana"].verify(second.alert_id, Step.FALSE_ALARM, note="a film crew")
                await until(
                    lambda: all(
                        (r := c.rollup(second.alert_id)) is not None and r.false_alarm
                        for c in everyone
                    )
                )

                # Demoting the dispatcher withdraws its steps, on every member.
                await ada.set_role(cells["dana"].me, CellRole.MEMBER)
                await until(
                    lambda: all(state(c, second.alert_id) is ReportState.REPORTED for c in everyone)
                )
                assert not cells["dana"].is_verifier
                nursery.cancel_scope.cancel()


async def test_verify_first_holds_reports_from_members_until_a_dispatcher_confirms(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "ada", "dana", "rory", "mo") as clients:
            ada = await clients["ada"].create_cell("Eastside", address_of(running_relay))
            dana = await admit(ada, clients["dana"])
            rory = await admit(ada, clients["rory"])
            await ada.set_role(dana.me, CellRole.DISPATCHER)
            await ada.set_role(rory.me, CellRole.RESPONDER)
            await ada.set_verify_first(True)
            # A member who joins later learns the setting from the welcome.
            mo = await admit(ada, clients["mo"])
            cells = (ada, dana, rory, mo)
            await until(lambda: all(c.verify_first for c in cells))
            await until(lambda: all(c.role_of(dana.me) is CellRole.DISPATCHER for c in cells))
            async with trio.open_nursery() as nursery:
                recorders = {c.me.name: Recorder(c) for c in cells}
                for recorder in recorders.values():
                    await nursery.start(recorder.run)

                alert = await mo.send_alert("raid on 9th street", priority=Priority.URGENT)
                aid = alert.alert_id
                await until(lambda: all(c.rollup(aid) is not None for c in cells))

                def rang(name: str) -> bool:
                    return any(
                        isinstance(e, AlertReceived) and e.alert.alert_id == aid
                        for e in recorders[name].events
                    )

                # The verifiers see and ring for the report; the others hold it back.
                await until(lambda: rang("ada") and rang("dana"))
                await dana.wait_synced()
                await rory.wait_synced()
                assert not rang("rory")
                assert [r.alert_id for r in dana.active_alerts()] == [aid]
                assert rory.active_alerts() == []
                rollup = rory.rollup(aid)
                assert rollup is not None
                assert rollup.unverified  # held, not lost

                await dana.verify(aid, Step.VERIFYING)
                await until(lambda: rory.rollup(aid).verification is ReportState.VERIFYING)  # type: ignore[union-attr]
                assert not rang("rory")

                # Confirmed: it goes to everyone, with its priority.
                await dana.verify(aid, Step.CONFIRMED, note="two vans, confirmed by phone")
                await until(lambda: rang("rory"))
                rung: CellEvent = next(
                    e
                    for e in recorders["rory"].events
                    if isinstance(e, AlertReceived) and e.alert.alert_id == aid
                )
                assert isinstance(rung, AlertReceived)
                assert rung.alert.priority is Priority.URGENT
                assert rung.sender.name == "mo"
                assert rung.rollup is not None
                assert rung.rollup.confirmed
                assert [r.alert_id for r in rory.active_alerts()] == [aid]
                # The author's own device shows its report even while held elsewhere.
                assert [r.alert_id for r in mo.active_alerts()] == [aid]

                # A report called a false alarm without being confirmed never shows here.
                hoax = await mo.send_alert("a hoax", priority=Priority.EMERGENCY)
                await until(lambda: dana.rollup(hoax.alert_id) is not None)
                await dana.verify(hoax.alert_id, Step.FALSE_ALARM, note="nobody there")
                await until(lambda: state(rory, hoax.alert_id) is ReportState.FALSE_ALARM)
                await dana.verify(hoax.alert_id, Step.RESOLVED)
                await until(lambda: state(rory, hoax.alert_id) is ReportState.RESOLVED)
                about_hoax = [
                    e
                    for e in recorders["rory"].events
                    if getattr(getattr(e, "alert", None), "alert_id", None) == hoax.alert_id
                    or getattr(getattr(e, "step", None), "alert_id", None) == hoax.alert_id
                ]
                assert about_hoax == []
                assert any(
                    isinstance(e, VerificationReceived) and e.step.alert_id == hoax.alert_id
                    for e in recorders["ada"].events
                )

                # Turning the setting off shows unverified reports to everyone again.
                await ada.set_verify_first(False)
                await until(lambda: not any(c.verify_first for c in cells))
                other = await mo.send_alert("a second sighting")
                await until(
                    lambda: any(
                        isinstance(e, AlertReceived) and e.alert.alert_id == other.alert_id
                        for e in recorders["rory"].events
                    )
                )
                nursery.cancel_scope.cancel()


async def test_an_admin_made_a_dispatcher_is_demoted_first_and_the_last_admin_stays(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "ada", "dana") as clients:
            ada = await clients["ada"].create_cell("Eastside", address_of(running_relay))
            dana = await admit(ada, clients["dana"])
            await ada.set_role(dana.me, CellRole.ADMIN)
            await until(lambda: dana.is_admin and dana.role is CellRole.ADMIN)
            with pytest.raises(CellError, match="admin already"):
                await ada.set_role(dana.me, "admin")
            with pytest.raises(CellError, match="is not a role"):
                await ada.set_role(dana.me, "sheriff")
            # An admin becomes a dispatcher: demoted, then given the role (two epochs).
            epoch = ada.crypto.epoch
            await ada.set_role(dana.me, CellRole.DISPATCHER)
            assert ada.crypto.epoch == epoch + 2
            await until(lambda: dana.role is CellRole.DISPATCHER and not dana.is_admin)
            assert dana.is_verifier
            # The last admin cannot make itself anything else: the cell keeps an admin.
            with pytest.raises(CellError, match="cannot make 'ada' a member"):
                await ada.set_role(ada.me, CellRole.MEMBER)
            assert ada.role is CellRole.ADMIN
            # The roles and the steps survive a restart: saved with the cell.
            alert = await ada.send_alert("a sighting at the depot")
            await dana.verify(alert.alert_id, Step.CONFIRMED)
            await until(lambda: state(ada, alert.alert_id) is ReportState.CONFIRMED)
        async with members(tmp_path, "ada") as again:
            reopened = again["ada"].cell("Eastside")
            assert reopened.role_of(reopened.find_member("dana")) is CellRole.DISPATCHER
            rollup = reopened.rollup(alert.alert_id)
            assert rollup is not None
            assert rollup.confirmed
            assert rollup.verified_by is not None
            assert rollup.verified_by.name == "dana"
