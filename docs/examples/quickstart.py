"""Two members, one cell, an alert and a reply, with the async (Trio) client library.

Run it against any relay (`cellrelay relay init` prints the address):

    python docs/examples/quickstart.py cellrelay://KEY@HOST:PORT

or set CELLRELAY_RELAY instead of passing the address. The two members' keystores are
created in a temporary directory and deleted at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import structlog
import trio

from cellrelay.client import (
    AlertReceived,
    Cell,
    JoinRequested,
    Member,
    Status,
    StatusReceived,
    create_identity,
    open_client,
)

# Examples only: a real passphrase comes from the person, never from the source code.
PASSPHRASE = "an example passphrase"  # noqa: S105


async def next_join_request(cell: Cell) -> Member:
    """Wait for someone to ask to join `cell` (an admin's view)."""
    # Looking and then iterating is race-free: nothing runs in between (no await).
    if cell.join_requests:
        return cell.join_requests[0]
    async for event in cell.events():
        if isinstance(event, JoinRequested):
            return event.member
    raise RuntimeError("the cell was closed")


async def respond_to_first_alert(cell: Cell) -> None:
    """A member's side: answer the first alert that arrives."""
    async for event in cell.events():
        if isinstance(event, AlertReceived):
            alert = event.alert
            print(
                f"ana received from {event.sender.name}: {alert.text} ({alert.priority}, at {alert.place})"
            )
            await cell.reply(alert.alert_id, Status.RESPONDING, note="five minutes away")
            return


async def main(relay: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lead_home, ana_home = Path(tmp, "lead"), Path(tmp, "ana")
        create_identity(PASSPHRASE, "lead", home=lead_home)
        create_identity(PASSPHRASE, "ana", home=ana_home)
        async with (
            open_client(PASSPHRASE, home=lead_home) as lead,
            open_client(PASSPHRASE, home=ana_home) as ana,
        ):
            # The lead creates a cell and a one-time invite link (a QR code in real life).
            cell = await lead.create_cell("Eastside", relay)
            invite = await cell.invite()
            print(f"lead created {cell.name} and an invite: {invite.to_link()[:32]}...")

            # Ana asks to join with the link; the lead approves; Ana receives the keys.
            pending = await ana.request_join(invite.to_link())
            member = await next_join_request(cell)
            await cell.approve(member)
            ana_cell = await ana.wait_joined(pending)
            print(f"ana joined {ana_cell.name}: {', '.join(m.name for m in ana_cell.members())}")

            # The lead sends an alert; Ana answers it; the lead watches the roll-up.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(respond_to_first_alert, ana_cell)
                alert = await cell.send_alert(
                    "Agents at 14th & Main", priority="urgent", place="14th & Main"
                )
                async for event in cell.events():
                    if isinstance(event, StatusReceived) and event.reply.alert_id == alert.alert_id:
                        break
            rollup = cell.rollup(alert.alert_id)
            if rollup is None:
                raise RuntimeError("the lead holds no roll-up of its own alert")
            for status in rollup.responders.values():
                print(f"roll-up on lead: {status.name} is {status.status} ({status.note})")


if __name__ == "__main__":
    # The library logs with structlog and leaves the set-up to the app: here, warnings only,
    # on standard error.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CELLRELAY_RELAY", "")
    if not address:
        sys.exit("usage: quickstart.py RELAY_ADDRESS (or set CELLRELAY_RELAY)")
    trio.run(main, address)
