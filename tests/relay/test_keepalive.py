"""Keepalive: the relay pings a silent client and closes it after three silent intervals.

Under trio's MockClock (virtual time, jumped by the test) with real loopback sockets;
`welcome.ping_interval` is 1 s and the relay's keepalive scanner runs once a second.
"""

from __future__ import annotations

import trio
import trio.testing

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import Goodbye, Ping, Pong

from .conftest import PATIENCE, RelayFactory, assert_quiet, read_until_closed, real_time_limit


async def test_silent_client_is_pinged_then_closed_with_idle_timeout(
    mock_clock: trio.testing.MockClock, relays: RelayFactory
) -> None:
    """A client that never answers gets a ping after one interval and IDLE_TIMEOUT after three.

    A client that answers pings stays connected over the same time. Catches a missing
    keepalive (dead connections held forever) and one that closes live clients.
    """
    async with real_time_limit(PATIENCE):
        running = await relays.start(ping_interval=1, handshake_timeout=10.0**9)
        silent = await running.connect()
        lively = await running.connect()
        assert silent.welcome.ping_interval == 1
        for i in range(5):
            # The lively client speaks every second (any bytes from it count as life)
            # and answers the relay's pings, as a client must.
            await lively.send(Ping(id=i))
            while (message := await lively.receive()) != Pong(id=i):
                assert isinstance(message, Ping)
                await lively.send(Pong(id=message.id))
            mock_clock.jump(1.0)
            await trio.testing.wait_all_tasks_blocked()
        first = await silent.receive()
        assert isinstance(first, Ping)
        ending = await read_until_closed(silent)
        assert isinstance(ending.goodbye, Goodbye)
        assert ending.goodbye.code == ErrorCode.IDLE_TIMEOUT
        await assert_quiet(lively)
    assert running.dropped("idle_timeout") == 1
