"""Every transition of the verification state machine, and every role's every step, through a
real relay (issue 14: "every transition and every permission, allowed and refused").

One cell of real clients: Ada (admin), Dana (dispatcher), Rory (responder), Lou (legal
observer), Mo (member). For each pair (state reached, step taken) one report is brought to
the state by Dana and then given the step; every member must agree on the state the table
says (`TRANSITIONS`), a step the table refuses included. Then each role without the right
sends each step the way a hostile client would (`_send`), and every other member refuses
it and says so.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import CellRole, SecurityWarning
from cellrelay.protocol.cell._content import MessageId, Step, VerificationStep
from cellrelay.protocol.cell._rollup import TRANSITIONS, ReportState

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .hostile import until
from .test_cells import address_of

TEST_TIMEOUT = 240
# How to reach each state from a fresh report, by the dispatcher's steps.
PATHS = {
    ReportState.REPORTED: (),
    ReportState.VERIFYING: (Step.VERIFYING,),
    ReportState.CONFIRMED: (Step.VERIFYING, Step.CONFIRMED),
    ReportState.FALSE_ALARM: (Step.VERIFYING, Step.FALSE_ALARM),
    ReportState.RESOLVED: (Step.CONFIRMED, Step.RESOLVED),
}
ROLES = {"rory": CellRole.RESPONDER, "lou": CellRole.OBSERVER, "mo": CellRole.MEMBER}


def state(cell: Cell, alert_id: bytes) -> ReportState | None:
    rollup = cell.rollup(alert_id)
    return None if rollup is None else rollup.verification


async def test_every_transition_and_every_refused_role_through_a_real_relay(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "ada", "dana", "rory", "lou", "mo") as clients:
            ada = await clients["ada"].create_cell("Eastside", address_of(running_relay))
            cells = {"ada": ada}
            for name in ("dana", "rory", "lou", "mo"):
                cells[name] = await admit(ada, clients[name])
            await ada.set_alert_limit(100)  # Mo sends 21 reports in a few seconds: no flood
            await ada.set_role(cells["dana"].me, CellRole.DISPATCHER)
            for name, role in ROLES.items():
                if role is not CellRole.MEMBER:
                    await ada.set_role(cells[name].me, role)
            everyone = list(cells.values())
            dana = cells["dana"]
            await until(lambda: all(c.is_verifier == (c in (ada, dana)) for c in everyone))
            await until(lambda: all(c.role_of(dana.me) is CellRole.DISPATCHER for c in everyone))

            # -- every (state, step) pair ----------------------------------------------------
            cases: list[tuple[ReportState, Step, bytes]] = []
            for start, step in itertools.product(list(ReportState), list(Step)):
                alert = await cells["mo"].send_alert(f"report {start} then {step}")
                cases.append((start, step, alert.alert_id))
            await until(lambda: all(c.rollup(a) is not None for c in everyone for *_, a in cases))
            for start, _, alert_id in cases:
                for taken in PATHS[start]:
                    await dana.verify(alert_id, taken)
            await until(lambda: all(state(c, a) is s for c in everyone for s, _, a in cases))
            for _, step, alert_id in cases:
                await dana.verify(alert_id, step)

            def expected(start: ReportState, step: Step) -> ReportState:
                target = ReportState(step.value)
                return target if target in TRANSITIONS[start] else start

            def settled(cell: Cell, start: ReportState, step: Step, alert_id: bytes) -> bool:
                # A refused step changes no state: wait until it has arrived and was counted.
                rollup = cell.rollup(alert_id)
                return (
                    rollup is not None
                    and rollup.verification is expected(start, step)
                    and len(rollup.steps) + rollup.refused_steps == len(PATHS[start]) + 1
                )

            await until(
                lambda: all(settled(c, s, t, a) for c in everyone for s, t, a in cases),
                timeout=60,
            )
            refused = [(s, t) for s, t, _ in cases if expected(s, t) is s]
            assert len(refused) == 20 - sum(len(v) for v in TRANSITIONS.values())
            for cell in everyone:
                for start, step, alert_id in cases:
                    rollup = cell.rollup(alert_id)
                    assert rollup is not None
                    assert rollup.refused_steps == (expected(start, step) is start)
                    assert rollup.closed == (
                        rollup.verification in (ReportState.FALSE_ALARM, ReportState.RESOLVED)
                    )

            # -- every step from every role that may not take it -----------------------------
            report = await cells["mo"].send_alert("a report nobody but a dispatcher verifies")
            await until(lambda: all(c.rollup(report.alert_id) is not None for c in everyone))
            async with trio.open_nursery() as nursery:
                recorders = {n: Recorder(c) for n, c in cells.items()}
                for recorder in recorders.values():
                    await nursery.start(recorder.run)
                for name in ROLES:
                    for step in Step:
                        forged = VerificationStep(sent_at_ms=cells[name]._now_ms(),
                                                  alert_id=MessageId(report.alert_id), step=step)  # fmt: skip
                        await cells[name]._send(forged, report.expires_at)

                def warned(name: str) -> int:
                    return sum(
                        isinstance(e, SecurityWarning) and e.reason == "RoleRefused"
                        for e in recorders[name].events
                    )

                # Each member hears every forged step but its own: 4 steps from each of 3 roles.
                await until(
                    lambda: all(warned(n) == 4 * (3 - (n in ROLES)) for n in cells),
                    timeout=60,
                )
                for name, role in ROLES.items():
                    details = [
                        e.detail
                        for e in recorders["ada"].events
                        if isinstance(e, SecurityWarning) and name in e.detail
                    ]
                    assert len(details) == 4
                    assert all(f"({role.value})" in d for d in details)
                nursery.cancel_scope.cancel()
            for cell in everyone:
                rollup = cell.rollup(report.alert_id)
                assert rollup is not None
                assert rollup.verification is ReportState.REPORTED
                assert rollup.refused_steps == 12
