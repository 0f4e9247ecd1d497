"""The background Trio thread behind the blocking facade."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel

from cellrelay.client._portal import Portal


def test_calls_run_in_the_trio_thread_and_return() -> None:
    portal = Portal().start()
    try:

        async def add(a: int, b: int) -> int:
            await trio.lowlevel.checkpoint()
            return a + b

        assert portal.call(add, 2, 3) == 5
    finally:
        portal.stop()


def test_errors_propagate() -> None:
    portal = Portal().start()
    try:

        async def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            portal.call(fail)
    finally:
        portal.stop()


def test_background_tasks_are_cancelled_on_stop() -> None:
    portal = Portal().start()
    cancelled = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(True)

    portal.start_task(forever)
    portal.stop()
    assert cancelled == [True]
    with pytest.raises(RuntimeError):
        portal.call(trio.sleep, 0)
