"""Resume at the cell level: every message reaches every app exactly once, in order per sender.

* The relay (a process on SQLite) is killed with SIGKILL in the middle of a conversation
  and started again on the same data directory and port; the members, who keep sending
  throughout, reconnect and resume from their cursors.
* A member's client is closed (its keystore unlocked no more) while the others send, and
  opened again: it resumes from the cursors it saved, with no duplicate and no gap.

Events are recorded with `Emitted` (tests/client/hostile.py), which also sees what a
client emits while it starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._events import SecurityWarning

from ..relay.process import open_relay_process
from .cells import admit, members
from .conftest import RunningRelay
from .hostile import Emitted, until
from .test_cells import address_of

TEST_TIMEOUT = 90
NAMES = ("lead", "ana", "ben")
PER_SENDER = 12
PAUSE = 0.05  # seconds between one member's messages


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> Emitted:
    return Emitted(monkeypatch)


def check_exactly_once_in_order(emitted: Emitted, member: str, sent: dict[str, int]) -> None:
    """Sender s's messages "s 0" .. "s n-1" reached `member`'s app once each, in order, and
    nothing else did (no security warning either)."""
    shown = emitted.messages(member)
    for sender, count in sent.items():
        mine = [text for text in shown if text.startswith(sender + " ")]
        assert mine == [f"{sender} {n}" for n in range(count)], (member, sender)
    assert len(shown) == sum(sent.values()), member
    assert not [e for e in emitted.of(member) if isinstance(e, SecurityWarning)], member


class RestartedRelay:
    """A relay process that is SIGKILLed on request and started again on the same data
    directory and port (same key, so the members' relay address stands)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kill_now = trio.Event()
        self.restarted = trio.Event()
        self.exit_status: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_relay_process(self.data_dir) as relay:
            port = relay.port
            task_status.started(str(relay.address))
            await self.kill_now.wait()
            self.exit_status = await relay.kill()
        async with open_relay_process(self.data_dir, listen=f"127.0.0.1:{port}"):
            self.restarted.set()
            await trio.sleep_forever()


async def test_relay_killed_and_restarted_mid_conversation(
    tmp_path: Path, emitted: Emitted
) -> None:
    keeper = RestartedRelay(tmp_path / "relay")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as outer:
            address = await outer.start(keeper.run)
            async with members(tmp_path, *NAMES) as clients:
                lead = await clients["lead"].create_cell("Eastside", address)
                cells = {
                    "lead": lead,
                    "ana": await admit(lead, clients["ana"]),
                    "ben": await admit(lead, clients["ben"]),
                }

                after_restart: dict[str, int] = dict.fromkeys(NAMES, 0)

                async def talk(name: str) -> None:
                    for n in range(PER_SENDER):
                        await cells[name].send_message(f"{name} {n}")
                        after_restart[name] += keeper.restarted.is_set()
                        if n == PER_SENDER // 2 and name == "lead":
                            keeper.kill_now.set()  # mid-conversation: the others are sending too
                        await trio.sleep(PAUSE)

                async with trio.open_nursery() as nursery:
                    for name in NAMES:
                        nursery.start_soon(talk, name)
                await keeper.restarted.wait()
                assert keeper.exit_status == -9
                # Every member was cut off mid-conversation: some of its messages went out after.
                assert all(0 < count < PER_SENDER for count in after_restart.values()), (
                    after_restart
                )
                expected = 2 * PER_SENDER  # from each of the two others
                await until(lambda: all(len(emitted.messages(n)) >= expected for n in NAMES), 30)
                await trio.sleep(0.3)  # anything extra still on its way
                for name in NAMES:
                    others = {n: PER_SENDER for n in NAMES if n != name}
                    check_exactly_once_in_order(emitted, name, others)
                assert all(cell.link.connections >= 2 for cell in cells.values())
            outer.cancel_scope.cancel()


async def test_client_closed_and_reopened_resumes_from_saved_cursors(
    running_relay: RunningRelay, tmp_path: Path, emitted: Emitted
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ben = await admit(lead, clients["ben"])
            async with members(tmp_path, "ana") as first_run:
                await admit(lead, first_run["ana"])
                for n in range(PER_SENDER // 2):
                    await lead.send_message(f"lead {n}")
                    await ben.send_message(f"ben {n}")
                await until(lambda: len(emitted.messages("ana")) == PER_SENDER)
            # Ana's client is closed; the others go on.
            for n in range(PER_SENDER // 2, PER_SENDER):
                await lead.send_message(f"lead {n}")
                await ben.send_message(f"ben {n}")
            async with members(tmp_path, "ana") as second_run:
                ana = second_run["ana"].cell("Eastside")
                await until(lambda: len(emitted.messages("ana")) >= 2 * PER_SENDER)
                await lead.send_message(f"lead {PER_SENDER}")  # and live again
                await until(lambda: len(emitted.messages("ana")) >= 2 * PER_SENDER + 1)
                await trio.sleep(0.3)
                check_exactly_once_in_order(
                    emitted, "ana", {"lead": PER_SENDER + 1, "ben": PER_SENDER}
                )
                assert ana.link.connections == 1
