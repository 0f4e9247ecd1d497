"""Clock skew never loses a live alert silently (issue 9, finding 1).

Before, a member decided what had expired by max(relay time, device time - 5 min), and
trusted the relay's clock from its welcome without bound: a phone two hours fast dropped
every one-hour alert, and a relay two hours slow made every sender stamp expiries that
all the others dropped, while the sender saw "sent".

Here one real relay on loopback runs with its clock two hours slow, right, or two hours
fast (the relay's `now`), and one cell holds three members whose device clocks are two
hours slow, right and two hours fast (`open_client(clock=...)`). Each member sends a
one-hour alert; every member must show every alert, in `active_alerts()` and as an
`AlertReceived`, marked late exactly when one of its own clocks already says it expired
(docs/protocol.md §C7), and be warned (`ClockWarning`) exactly when its device's clock and
the relay's disagree beyond the tolerance. That is every combination of sender device,
receiver device and relay clock, each -2 h, 0 or +2 h.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from cellrelay.client import _cell_member as cell_module
from cellrelay.client._cell_admin import Cell
from cellrelay.client._cli_output import Style, event_json, event_lines
from cellrelay.client._client import Client, create_identity, open_client
from cellrelay.client._events import AlertReceived, ClockWarning, Member
from cellrelay.client._keystore import TEST_COST
from cellrelay.protocol.cell._content import Alert, Priority

from ..relay.conftest import RelayFactory, relays
from .cells import admit, passphrase_of
from .hostile import Emitted, until
from .test_cells import address_of
from .test_cli import cli, identity
from .test_expiry import KeepsExpired, sleep_past, texts_of

__all__ = ["relays"]

HOUR = 3600.0
SKEWS = {"slow": -2 * HOUR, "right": 0.0, "fast": 2 * HOUR, "ana": 0.0}
TEST_TIMEOUT = 90


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> Emitted:
    return Emitted(monkeypatch)


def skewed(offset: float) -> Callable[[], float]:
    return lambda: time.time() + offset


@asynccontextmanager
async def skewed_members(tmp_path: Path, *names: str) -> AsyncIterator[dict[str, Client]]:
    """One client per name, whose device clock is off by SKEWS[name]."""
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        for name in names:
            home = tmp_path / name
            if not (home / "keystore").exists():
                create_identity(passphrase_of(name), name, home=home, cost=TEST_COST)
            clients[name] = await stack.enter_async_context(
                open_client(passphrase_of(name), home=home, clock=skewed(SKEWS[name]))
            )
        yield clients


@pytest.mark.parametrize(
    "relay_skew", [-2 * HOUR, 0.0, 2 * HOUR], ids=["relay-slow", "relay-right", "relay-fast"]
)
async def test_every_alert_reaches_every_member_whatever_the_clocks(
    relays: RelayFactory, tmp_path: Path, emitted: Emitted, relay_skew: float
) -> None:
    relay = await relays.start(now=skewed(relay_skew))
    with trio.fail_after(TEST_TIMEOUT):
        async with skewed_members(tmp_path, "right", "slow", "fast") as clients:
            lead = await clients["right"].create_cell("Eastside", address_of(relay))
            cells: dict[str, Cell] = {"right": lead}
            for name in ("slow", "fast"):
                cells[name] = await admit(lead, clients[name])
            sent: dict[str, Alert] = {}
            for name, cell in cells.items():
                sent[name] = await cell.send_alert(f"alert from the {name} phone", ttl=3600)
            texts = {a.text for a in sent.values()}

            def everyone_has_everything() -> bool:
                return all(
                    {r.alert.text for r in c.active_alerts()} == texts
                    and len(set(emitted.alerts(name))) == len(texts) - 1
                    for name, c in cells.items()
                )

            await until(everyone_has_everything)
            for name in cells:
                received = {
                    e.alert.text: e for e in emitted.of(name) if isinstance(e, AlertReceived)
                }
                # Every alert of the others came as an event (our own are not echoed).
                assert set(received) == texts - {sent[name].text}, name
                for event in received.values():
                    # Late exactly when this member's later clock was past the expiry.
                    late = event.alert.expires_at <= max(SKEWS[name], relay_skew) + time.time()
                    assert event.late == late, (name, event.alert.text)
                warnings = [e for e in emitted.of(name) if isinstance(e, ClockWarning)]
                disagree = abs(relay_skew - SKEWS[name]) > cell_module.CLOCK_TOLERANCE
                assert len(warnings) == (1 if disagree else 0), name
                if disagree:
                    assert abs(warnings[0].offset - (relay_skew - SKEWS[name])) < 60


async def test_a_relay_slow_by_hours_cannot_make_members_drop_alerts(
    relays: RelayFactory, tmp_path: Path, emitted: Emitted
) -> None:
    """The finding's second case, the worst: relay and sender's phone both two hours slow
    stamp an expiry an hour in the past; a member with the right time still shows it."""
    relay = await relays.start(now=skewed(-2 * HOUR))
    with trio.fail_after(TEST_TIMEOUT):
        async with skewed_members(tmp_path, "slow", "right") as clients:
            lead = await clients["slow"].create_cell("Eastside", address_of(relay))
            right = await admit(lead, clients["right"])
            alert = await lead.send_alert("raid on 9th street", ttl=3600)
            assert alert.expires_at < time.time()  # already past by the true time
            await until(lambda: emitted.alerts("right") == ["raid on 9th street"])
            assert [r.alert_id for r in right.active_alerts()] == [alert.alert_id]


async def test_an_alert_expired_beyond_the_late_window_is_dropped_within_it_shown_late(
    relays: RelayFactory, tmp_path: Path, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded lateness, with every clock right: of two alerts that expired before Ana got
    them, the one that expired within LATE_WINDOW (here 20 s instead of 15 minutes) is
    shown marked late, and the one that expired longer ago is dropped. (An honest relay
    delivers nothing expired by its clock; this one keeps everything, so both come.)"""
    monkeypatch.setattr(cell_module, "LATE_WINDOW", 20.0)
    relay = await relays.start(store=KeepsExpired())
    with trio.fail_after(TEST_TIMEOUT):
        async with skewed_members(tmp_path, "right", "ana") as clients:
            lead = await clients["right"].create_cell("Eastside", address_of(relay))
            await admit(lead, clients["ana"])
        async with skewed_members(tmp_path, "right") as clients:
            lead = clients["right"].cell("Eastside")
            too_late = await lead.send_alert("expired long ago", ttl=2)
            await sleep_past(too_late.expires_at + 21)
            late = await lead.send_alert("expired a moment ago", ttl=2)
            await sleep_past(late.expires_at)
        async with skewed_members(tmp_path, "ana") as clients:
            ana = clients["ana"].cell("Eastside")
            await ana.wait_synced()
            await until(lambda: emitted.alerts("ana") == ["expired a moment ago"])
            (event,) = [e for e in emitted.of("ana") if isinstance(e, AlertReceived)]
            assert event.late
            assert ana.active_alerts() == []  # expired: not active
            assert texts_of(ana) == []  # nor kept


def test_the_command_line_shows_the_clock_warning_and_late_alerts() -> None:
    style = Style(colour=False)
    warning = ClockWarning(cell="Eastside", offset=-7200.0, tolerance=300.0)
    (line,) = event_lines(warning, style)
    assert "2 h 00 min behind this device's" in line
    assert event_json(warning) == {
        "type": "clock_warning", "cell": "Eastside", "offset": -7200.0, "tolerance": 300.0
    }  # fmt: skip
    now = time.time()
    alert = Alert(
        sent_at_ms=int(now * 1000), text="raid", priority=Priority.URGENT, expires_at=int(now) + 60
    )
    late = AlertReceived(
        cell="Eastside", sender=Member(bytes(16), "lead"), alert=alert, rollup=None, late=True
    )
    assert event_lines(late, style)[0].startswith("(late) ")
    assert event_json(late)["late"] is True


async def test_a_fast_phone_keeps_a_live_alert_across_a_restart(
    relays: RelayFactory, tmp_path: Path
) -> None:
    """Before the relay's clock is known (at start), a phone two hours fast must not prune
    what its own clock alone says has expired: the earlier clock decides (§C7)."""
    relay = await relays.start()
    with trio.fail_after(TEST_TIMEOUT):
        async with skewed_members(tmp_path, "right", "fast") as clients:
            lead = await clients["right"].create_cell("Eastside", address_of(relay))
            fast = await admit(lead, clients["fast"])
            alert = await lead.send_alert("raid on 9th street", ttl=3600)
            await until(lambda: [r.alert_id for r in fast.active_alerts()] == [alert.alert_id])
        async with skewed_members(tmp_path, "fast") as clients:
            fast = clients["fast"].cell("Eastside")
            await fast.wait_synced()
            assert texts_of(fast) == ["raid on 9th street"]
            assert [r.alert_id for r in fast.active_alerts()] == [alert.alert_id]


async def test_send_on_the_command_line_warns_when_the_relays_clock_is_off(
    relays: RelayFactory, tmp_path: Path
) -> None:
    """The sender of the finding saw "sent" and nothing else; now `send` says the clocks
    disagree (on standard error, in every mode)."""
    relay = await relays.start(now=skewed(-2 * HOUR))
    lead = identity(tmp_path, "lead")
    await cli("cell", "create", "Eastside", "--relay", address_of(relay), home=lead)
    sent = await cli("send", "Eastside", "raid on 9th street", "--json", home=lead)
    assert sent.json()["text"] == "raid on 9th street"
    assert "warning: the relay's clock is 2 h 00 min behind this device's" in sent.stderr


async def test_an_app_that_listens_after_the_warning_still_gets_it(
    relays: RelayFactory, tmp_path: Path
) -> None:
    relay = await relays.start(now=skewed(2 * HOUR))
    with trio.fail_after(TEST_TIMEOUT):
        async with skewed_members(tmp_path, "right") as clients:
            lead = await clients["right"].create_cell("Eastside", address_of(relay))
            await lead.send_alert("raid on 9th street", ttl=3600)  # checked: warned by now
            with lead.subscribe() as receive:
                first = receive.receive_nowait()
            assert isinstance(first, ClockWarning)
            assert first.offset > 2 * HOUR - 60
