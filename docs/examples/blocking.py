"""The blocking client, for programs that are not async: a dispatcher and a responder bot.

The dispatcher creates a cell and invites the bot; the bot answers every alert with
"responding" from a callback; the dispatcher sends an alert and waits for the roll-up.
No `async` anywhere: `BlockingClient` runs the Trio client in a background thread.

    python docs/examples/blocking.py cellrelay://KEY@HOST:PORT

(or set CELLRELAY_RELAY). Keystores live in a temporary directory deleted at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import structlog

from cellrelay.client import (
    AlertReceived,
    BlockingClient,
    CellEvent,
    Status,
    StatusReceived,
    create_identity,
)

PASSPHRASE = "an example passphrase"  # noqa: S105 - examples only: ask the person for it


def main(relay: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        desk_home, bot_home = Path(tmp, "desk"), Path(tmp, "bot")
        create_identity(PASSPHRASE, "dispatch desk", home=desk_home)
        create_identity(PASSPHRASE, "responder bot", home=bot_home)
        with (
            BlockingClient.open(PASSPHRASE, home=desk_home) as desk,
            BlockingClient.open(PASSPHRASE, home=bot_home) as bot,
        ):
            cell = desk.create_cell("Eastside", relay)

            # The bot asks to join; the desk approves once the request has arrived.
            pending = bot.request_join(cell.invite().to_link())
            deadline = time.monotonic() + 30
            while not cell.join_requests and time.monotonic() < deadline:
                time.sleep(0.05)
            print(f"desk approves {cell.approve().name}")
            bot_cell = bot.wait_joined(pending, timeout=30)

            def on_event(event: CellEvent) -> None:
                # Runs in the subscription's own thread, so it may block (here: to reply).
                if isinstance(event, AlertReceived):
                    print(f"bot received: {event.alert.text}")
                    bot_cell.reply(event.alert.alert_id, Status.RESPONDING)

            subscription = bot_cell.on_event(on_event)

            # Subscribe before sending, so the bot's answer cannot slip past.
            with cell.events(timeout=30) as events:
                # Said before sending: the bot may print what it got before send_alert returns.
                print("desk sends an alert")
                cell.send_alert("Agents at 14th & Main", priority="emergency", place="14th & Main")
                for event in events:
                    if isinstance(event, StatusReceived) and event.rollup is not None:
                        names = [s.name for s in event.rollup.responders.values()]
                        print(f"desk roll-up: responding: {', '.join(names)}")
                        break
            subscription.close()


if __name__ == "__main__":
    structlog.configure(  # the library's logs: warnings only, on standard error
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CELLRELAY_RELAY", "")
    if not address:
        sys.exit("usage: blocking.py RELAY_ADDRESS (or set CELLRELAY_RELAY)")
    main(address)
