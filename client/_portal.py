"""A Trio run in a background thread, for the blocking facade.

Programs that are not async (a Flask view, a script) call into the client through a
`Portal`: it starts one thread running `trio.run`, keeps a nursery open there for
long-lived tasks (relay links), and runs each call with `trio.from_thread.run`, so the
async client code is the only implementation and the facade is a thin shell.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Portal"]

T = TypeVar("T")


class Portal:
    """One background Trio thread; `call` runs coroutines there and returns their results."""

    def __init__(self) -> None:
        """Create a stopped portal; `start` runs it."""
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=self._main, name="cellrelay-trio", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> Portal:
        """Start the thread and wait until it can take calls."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of start()
            self._error = exc
            self._ready.set()

    async def _run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _checked_token(self) -> trio.lowlevel.TrioToken:
        if self._token is None or not self._thread.is_alive():
            raise RuntimeError("the client's background thread is not running")
        return self._token

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:  # noqa: ANN401 - passed through
        """Run `await fn(*args)` in the Trio thread and return its result (or raise its error)."""
        return trio.from_thread.run(fn, *args, trio_token=self._checked_token())

    def start_task(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:  # noqa: ANN401
        """Start a long-lived task in the portal's nursery."""

        def spawn() -> None:
            assert self._nursery is not None  # noqa: S101 - set before _ready
            self._nursery.start_soon(fn, *args)

        trio.from_thread.run_sync(spawn, trio_token=self._checked_token())

    def stop(self) -> None:
        """Cancel every task and end the thread."""
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._checked_token())
        self._thread.join()
