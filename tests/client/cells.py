"""Helpers for client tests: members with their own keystores, against one relay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._client import Client, create_identity, open_client
from cellrelay.client._events import CellEvent
from cellrelay.client._keystore import TEST_COST


def passphrase_of(name: str) -> str:
    return f"passphrase of {name}"


@asynccontextmanager
async def members(tmp_path: Path, *names: str) -> AsyncIterator[dict[str, Client]]:
    """Open one client per name, each with its own keystore under tmp_path/name."""
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        for name in names:
            home = tmp_path / name
            if not (home / "keystore").exists():
                create_identity(passphrase_of(name), name, home=home, cost=TEST_COST)
            clients[name] = await stack.enter_async_context(
                open_client(passphrase_of(name), home=home)
            )
        yield clients


@asynccontextmanager
async def cell_of(tmp_path: Path, relay: str, *names: str) -> AsyncIterator[list[Cell]]:
    """A cell "Eastside" on `relay` created by the first of `names`, who admits the others."""
    async with members(tmp_path, *names) as clients:
        lead = await clients[names[0]].create_cell("Eastside", relay)
        cells = [lead]
        for name in names[1:]:
            cells.append(await admit(lead, clients[name]))
        yield cells


async def admit(lead: Cell, joiner: Client) -> Cell:
    """Invite `joiner` into `lead`'s cell and approve it; return the joiner's cell."""
    invite = await lead.invite()
    pending = await joiner.request_join(invite.to_link())
    with trio.fail_after(20):
        while not lead.join_requests:
            await trio.sleep(0.02)
        await lead.approve()
        return await joiner.wait_joined(pending)


async def announce(cell: Cell) -> None:
    """Publish the announcement `cell` owes in its epoch now, as its next send would first.

    Members announce lazily, before their first envelope of an epoch (docs/protocol.md §C6
    item 2): a test that tampers with "the next envelope" a member publishes, or publishes
    envelopes sealed outside the client, announces first.
    """
    await cell._flush_distribution(owed=True)


class Recorder:
    """Collects a cell's events in the background."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell
        self.events: list[CellEvent] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        iterator = self.cell.events()
        task_status.started()
        async for event in iterator:
            self.events.append(event)

    async def wait_for(
        self, predicate: Callable[[CellEvent], bool], timeout: float = 20
    ) -> CellEvent:
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                await trio.sleep(0.02)

    def of(self, kind: type) -> list[CellEvent]:
        return [e for e in self.events if isinstance(e, kind)]
