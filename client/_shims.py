"""Small operations the command line and the blocking facade use, now thin aliases.

They stood in for `Cell.subscribe`, `Client.pending_joins` and `Client.forget` until those
existed; the command line still imports them from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

    from cellrelay.protocol.cell import Invite

    from ._cell_admin import Cell
    from ._client import Client
    from ._events import CellEvent

__all__ = ["forget_cell", "join_known", "pending_joins", "subscribe"]


def subscribe(cell: Cell) -> trio.MemoryReceiveChannel[CellEvent]:
    """Register for `cell`'s events from this moment on (`Cell.subscribe`)."""
    return cell.subscribe()


def pending_joins(client: Client) -> list[Invite]:
    """The invites this member asked to join with, still waiting (`Client.pending_joins`)."""
    return client.pending_joins()


def join_known(client: Client, invite: Invite) -> bool:
    """Whether this client asked to join with `invite` (waiting, being welcomed, or welcomed)."""
    return client.asked_to_join(invite)


async def forget_cell(client: Client, cell: Cell) -> None:
    """Delete a cell the member has left from the keystore (`Client.forget`)."""
    await client.forget(cell)
