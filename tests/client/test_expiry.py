"""Expired messages are not shown, and are gone from the member's device.

"Shown" means handed to the app (`events()`, watched here by wrapping `Cell._emit`, which
every event goes through, so events emitted while a client starts are seen too) or
listed by `recent()`. "Gone" means the alert's text is nowhere in the decrypted payload
of the keystore file. TTLs are a couple of seconds, so these tests wait on the real clock.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from cellrelay.client import _cell_member as cell_module
from cellrelay.client import _link as link_module
from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import AlertReceived, ClockWarning
from cellrelay.protocol.cell._content import Alert
from cellrelay.relay._memory_store import MemoryStore
from cellrelay.relay._store import MailboxId, StoredEnvelope

from ..relay.conftest import RelayFactory, relays
from .cells import admit, members, passphrase_of
from .conftest import RunningRelay
from .hostile import Emitted, keystore_payload, until
from .test_cells import address_of

__all__ = ["relays"]

TTL = 2
TEST_TIMEOUT = 40


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> Emitted:
    return Emitted(monkeypatch)


def stored(tmp_path: Path, name: str) -> bytes:
    """The decrypted keystore payload of member `name`, as it is on disk now."""
    return keystore_payload(tmp_path / name / "keystore", passphrase_of(name))


async def sleep_past(expires_at: int) -> None:
    """Sleep until the wall clock is past `expires_at` (Unix seconds)."""
    await trio.sleep(max(0.0, expires_at - time.time()) + 0.2)


def texts_of(cell: Cell) -> list[str]:
    return [c.text for _, c in cell.recent() if isinstance(c, Alert)]


async def test_expired_alert_leaves_recent_and_the_keystore(
    running_relay: RunningRelay, tmp_path: Path, emitted: Emitted
) -> None:
    """Sender and receiver both forget the alert when it expires, without any further traffic."""
    marker = f"expiring alert {time.time_ns()}"
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana_cell = await admit(lead, clients["ana"])
            alert = await lead.send_alert(marker, priority="emergency", ttl=TTL)
            await until(lambda: emitted.alerts("ana") == [marker])
            # Shown and kept while it lives: the search below can find it.
            for name, cell in (("lead", lead), ("ana", ana_cell)):
                assert texts_of(cell) == [marker]
                assert marker.encode() in stored(tmp_path, name)
            await sleep_past(alert.expires_at)
            for name, cell in (("lead", lead), ("ana", ana_cell)):
                assert texts_of(cell) == []
                assert cell.active_alerts() == []
                await until(lambda: marker.encode() not in stored(tmp_path, name), timeout=5)  # noqa: B023 - awaited here
            assert len(emitted.alerts("ana")) == 1


async def test_member_offline_until_expiry_never_sees_it(
    running_relay: RunningRelay, tmp_path: Path, emitted: Emitted
) -> None:
    marker = f"missed alert {time.time_ns()}"
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            async with members(tmp_path, "ben") as late:
                await admit(lead, late["ben"])
            alert = await lead.send_alert(marker, priority="urgent", ttl=TTL)
            await sleep_past(alert.expires_at)
            async with members(tmp_path, "ben") as late:
                ben = late["ben"].cell("Eastside")
                with trio.fail_after(10):
                    await ben.wait_synced()
                await lead.send_message("after the expiry")  # something that does arrive
                await until(lambda: emitted.messages("ben") == ["after the expiry"])
                assert texts_of(ben) == []
            assert emitted.alerts("ben") == []
            assert marker.encode() not in stored(tmp_path, "ben")


class KeepsExpired(MemoryStore):
    """A store that ignores expiry when reading (a relay keeping envelopes past their time)."""

    async def read_after(
        self, mailbox: MailboxId, after: int, *, limit: int, now: float
    ) -> list[StoredEnvelope]:
        return await super().read_after(mailbox, after, limit=limit, now=0.0)

    async def delete_expired(self, now: float) -> int:
        return 0


@pytest.mark.parametrize(
    ("clock_lag", "max_skew", "shown"),
    [(0, None, False), (3600, None, True), (3600, 1.0, False)],
    ids=["honest-clock", "clock-set-back-an-hour", "set-back-beyond-the-bound"],
)
async def test_relay_that_keeps_expired_envelopes_cannot_show_them(
    relays: RelayFactory,
    tmp_path: Path,
    emitted: Emitted,
    monkeypatch: pytest.MonkeyPatch,
    clock_lag: int,
    max_skew: float | None,
    shown: bool,
) -> None:
    """A hostile relay keeps an expired alert and delivers it, even lying about its clock
    in its welcome. The expiry inside the authenticated envelope is the one that counts,
    against the earlier of the device's clock and the relay's, which the client believes
    only within MAX_RELAY_SKEW of the device's (docs/protocol.md §C7), plus LATE_WINDOW
    (one second here instead of fifteen minutes, to keep the test short).

    With an honest clock the alert is dropped. A relay claiming its clock is an hour
    behind is within the bound, which honest clocks need (a relay and a phone may each be
    two hours off): the alert is shown, but marked late, and the member is warned that the
    clocks disagree. Beyond the bound (made one second here) it is dropped again."""
    monkeypatch.setattr(cell_module, "LATE_WINDOW", 1.0)
    if max_skew is not None:
        monkeypatch.setattr(link_module, "MAX_RELAY_SKEW", max_skew)
    marker = f"resurrected alert {time.time_ns()}"
    lag = [0.0]
    relay = await relays.start(store=KeepsExpired(), now=lambda: time.time() - lag[0])
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(relay))
            async with members(tmp_path, "ben") as late:
                await admit(lead, late["ben"])
            alert = await lead.send_alert(marker, priority="urgent", ttl=TTL)
            assert isinstance(relay.store, KeepsExpired)
            alert_seq = (
                await relay.store.read_after(lead.record.group_mailbox, 0, limit=1000, now=0)
            )[-1].seq
            await sleep_past(alert.expires_at + 2)  # + LATE_WINDOW, + MAX_RELAY_SKEW when small
            lag[0] = clock_lag
            async with members(tmp_path, "ben") as late:
                ben = late["ben"].cell("Eastside")
                with trio.fail_after(10):
                    await ben.wait_synced()
                assert ben.record.group_cursor >= alert_seq  # the relay did deliver it
                assert ben.link.clock_offset < -clock_lag + 5  # and ben measured its clock
                if shown:
                    await until(lambda: emitted.alerts("ben") == [marker])
                    (event,) = [e for e in emitted.of("ben") if isinstance(e, AlertReceived)]
                    assert event.late
                    assert [type(e) for e in emitted.of("ben") if isinstance(e, ClockWarning)] == [
                        ClockWarning
                    ]
            if not shown:
                assert emitted.alerts("ben") == []
                assert texts_of(ben) == []
                assert marker.encode() not in stored(tmp_path, "ben")
