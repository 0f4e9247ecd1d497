"""The client library for programs that are not async: a Flask view, a script, a bot.

```python
with BlockingClient.open(passphrase) as client:
    client.cell("Eastside").send_alert("Agents at 14th & Main", priority="urgent")
```

Theory of operation. `BlockingClient.open` starts a `Portal` (one background thread
running `trio.run`) and, in it, a task that holds `open_client(...)` open until `close`.
Every method then runs the async client's own code in that thread (`Portal.call`) and
waits for the result, so there is one implementation and this module is a thin shell:

* Every operation that talks to a relay takes `timeout` (seconds, `DEFAULT_TIMEOUT` by
  default; None waits for ever) and raises `TimeoutError` when it runs out. The operation
  is then cancelled, but a message already queued may still reach the relay when the
  connection returns, as with the async API: a timeout means "not confirmed", not "not sent".
* Reading methods (`members`, `rollup`, `active_alerts`, ...) also run in the Trio thread,
  so they never see the client's state half-updated by a delivery.
* Events: `cell.events()` registers at once and buffers everything from that moment in
  a thread-safe queue; iterate it (each step waits up to its `timeout`) or `get` one.
  `cell.on_event(callback)` calls `callback(event)` in a thread of its own, in order,
  so a slow callback delays later events but never the client.

The client is used by one thread at a time or by several: calls are serialised only where
the async client serialises them (sending, saving). Close it (or leave the `with` block)
to say goodbye to the relays and release the keystore; a process that forgets to close it
loses nothing (the state is saved after every change) but holds the keystore lock until
it exits.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import queue
import threading
from typing import TYPE_CHECKING, Final, TypeVar

import trio

from cellrelay.protocol.cell import Priority, ReceiptState, Status, Step

from ._cell_admin import DEFAULT_INVITE_TTL, Cell
from ._cell_member import DEFAULT_ALERT_TTL, DEFAULT_MESSAGE_TTL
from ._client import open_client
from ._log import library_logger
from ._portal import Portal
from ._shims import subscribe

if TYPE_CHECKING:
    import os
    from collections.abc import Awaitable, Callable, Iterator
    from types import TracebackType

    from cellrelay.protocol.cell import (
        Alert,
        AlertRollup,
        Content,
        Invite,
        PlainMessage,
        Receipt,
        ReceiptCounts,
        StatusReply,
        VerificationStep,
    )
    from cellrelay.protocol.cell._identity import Identity
    from cellrelay.protocol.wire import RelayAddress

    from ._client import Client
    from ._events import CellEvent, CellRole, Member

__all__ = ["DEFAULT_TIMEOUT", "BlockingCell", "BlockingClient", "EventStream", "Subscription"]

T = TypeVar("T")

log = library_logger("cellrelay.client")

# Long enough for a phone on a poor link to reconnect (the link's backoff restarts at half
# a second) and catch up; short enough that a web request does not hang on a dead relay.
DEFAULT_TIMEOUT: Final = 30.0
_END: Final = object()  # marks the end of an event queue


class ClientClosedError(RuntimeError):
    """The blocking client was closed, or its background thread stopped after an error."""


async def _bounded(seconds: float | None, fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn` in the Trio thread, raising the builtin TimeoutError after `seconds`."""
    if seconds is None:
        return await fn()
    try:
        with trio.fail_after(seconds):
            return await fn()
    except trio.TooSlowError:
        raise TimeoutError(
            f"not confirmed within {seconds:g} s (is the relay reachable?)"
        ) from None


async def _sync(fn: Callable[[], T]) -> T:
    return fn()


class BlockingClient:
    """A `Client` driven from ordinary threads (module docstring); make one with `open`."""

    def __init__(self, portal: Portal) -> None:
        """Wrap a started portal; use `BlockingClient.open`."""
        self._portal = portal
        self._client: Client | None = None
        self._stop: trio.Event | None = None
        self._held: concurrent.futures.Future[Client] = concurrent.futures.Future()
        self._finished = threading.Event()
        self._closed = False
        self._failure: BaseException | None = None

    @classmethod
    def open(
        cls,
        passphrase: str,
        *,
        home: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> BlockingClient:
        """Unlock the keystore in `home` (default: the data directory) and connect to the cells' relays.

        Raises:
            KeystoreError, WrongPassphraseError, KeystoreBusyError: see `open_client`.
            TimeoutError: the relays could not be reached within `timeout` seconds.
        """
        client = cls(Portal().start())
        client._portal.start_task(client._hold, passphrase, home)
        try:
            client._client = client._held.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            client.close()
            raise TimeoutError(
                f"could not reach the relays of this client's cells within {timeout:g} s"
            ) from None
        except BaseException:
            client.close()
            raise
        return client

    async def _hold(self, passphrase: str, home: str | os.PathLike[str] | None) -> None:
        """Keep the async client open in the portal's thread until `close` (or an error)."""
        self._stop = trio.Event()
        try:
            async with open_client(passphrase, home=home) as client:
                self._held.set_result(client)
                await self._stop.wait()
        except Exception as exc:  # noqa: BLE001 - handed to the caller, not to the portal
            self._failure = exc
            if not self._held.done():
                self._held.set_exception(exc)
        finally:
            self._finished.set()

    def close(self) -> None:
        """Say goodbye to the relays, release the keystore and stop the background thread."""
        if self._closed:
            return
        self._closed = True
        # A client still opening is cancelled with the portal; an open one closes itself.
        if self._stop is not None and not self._finished.is_set() and self._held.done():
            self._portal.call(_sync, self._stop.set)
            self._finished.wait()
        self._portal.stop()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BlockingClient {'closed' if self._closed else 'open'}>"

    # -- calling into the Trio thread --------------------------------------------------------

    def _async(self) -> Client:
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._failure is not None:
            raise ClientClosedError("the client stopped after an error") from self._failure
        assert self._client is not None  # noqa: S101 - set by open
        return self._client

    def _run(self, fn: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        self._async()
        result: T = self._portal.call(_bounded, timeout, fn)
        return result

    def _read(self, fn: Callable[[], T]) -> T:
        self._async()
        result: T = self._portal.call(_sync, fn)
        return result

    # -- the client ----------------------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        """This member's identity (`name`, `member_id`)."""
        return self._async().identity

    @property
    def cells(self) -> list[BlockingCell]:
        """The cells this member belongs to."""
        return [BlockingCell(self, cell) for cell in self._read(lambda: self._async().cells)]

    def cell(self, name_or_id: str) -> BlockingCell:
        """Find a cell by name (case-insensitive) or a prefix of its hex id.

        Raises:
            CellError: none or several match.
        """
        return BlockingCell(self, self._read(functools.partial(self._async().cell, name_or_id)))

    def create_cell(
        self,
        name: str,
        relay: str | RelayAddress,
        *,
        creation_secret: bytes = b"",
        channel: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> BlockingCell:
        """Create a cell on a relay, with this member as its first admin (`channel`: a
        broadcast channel, docs/protocol.md §C11)."""
        client = self._async()
        return BlockingCell(
            self,
            self._run(
                functools.partial(
                    client.create_cell,
                    name,
                    relay,
                    creation_secret=creation_secret,
                    channel=channel,
                ),
                timeout,
            ),
        )

    def request_join(self, link: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> Invite:
        """Ask to join the cell an invite link names; an admin must approve.

        Raises:
            InviteError: the link is malformed or expired.
        """
        return self._run(functools.partial(self._async().request_join, link), timeout)

    def safety_number_for(self, invite: Invite) -> str:
        """Your safety number with the admin who made `invite` (see `Client.safety_number_for`)."""
        return self._read(functools.partial(self._async().safety_number_for, invite))

    def wait_joined(self, invite: Invite, *, timeout: float | None) -> BlockingCell:
        """Wait until an admin approves the request made with `invite`; return the cell."""
        return BlockingCell(
            self, self._run(functools.partial(self._async().wait_joined, invite), timeout)
        )

    def join(self, link: str, *, timeout: float | None) -> BlockingCell:
        """Ask to join and wait (up to `timeout` seconds) for an admin's approval."""
        return BlockingCell(self, self._run(functools.partial(self._async().join, link), timeout))


class BlockingCell:
    """A `Cell` driven from ordinary threads; get one from `BlockingClient`."""

    def __init__(self, client: BlockingClient, cell: Cell) -> None:
        """Wrap a cell of `client`."""
        self._client = client
        self._cell = cell

    def __repr__(self) -> str:
        return f"<BlockingCell {self._cell.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlockingCell) and other._cell is self._cell

    def __hash__(self) -> int:
        return id(self._cell)

    # -- reading -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The cell's display name."""
        return self._client._read(lambda: self._cell.name)

    @property
    def cell_id(self) -> bytes:
        """The cell's 16-byte id."""
        return self._client._read(lambda: self._cell.cell_id)

    @property
    def channel(self) -> bool:
        """Whether the cell is a broadcast channel (only admins and dispatchers post)."""
        return self._cell.channel

    @property
    def is_admin(self) -> bool:
        """Whether this member may invite, approve and remove."""
        return self._client._read(lambda: self._cell.is_admin)

    @property
    def removed(self) -> bool:
        """Whether this member was removed from the cell."""
        return self._client._read(lambda: self._cell.removed)

    @property
    def me(self) -> Member:
        """This member."""
        return self._client._read(lambda: self._cell.me)

    @property
    def join_requests(self) -> list[Member]:
        """People who asked to join with one of our invites, waiting for approval."""
        return self._client._read(lambda: self._cell.join_requests)

    def members(self) -> list[Member]:
        """The current members, admins first, then by name."""
        return self._client._read(self._cell.members)

    def find_member(self, text: str) -> Member:
        """Find a member by name (case-insensitive) or by a prefix of its hex id."""
        return self._client._read(functools.partial(self._cell.find_member, text))

    def rollup(self, alert_id: bytes) -> AlertRollup | None:
        """The live roll-up of an alert: who responds, who is on scene, is it over."""
        return self._client._read(functools.partial(self._cell.rollup, alert_id))

    def active_alerts(self, *, include_muted: bool = False) -> list[AlertRollup]:
        """Unexpired, unresolved alerts, most urgent first (not muted members' unless asked)."""
        return self._client._read(
            functools.partial(self._cell.active_alerts, include_muted=include_muted)
        )

    @property
    def alert_limit(self) -> int:
        """Alerts per member per minute before flood control mutes it."""
        return self._client._read(lambda: self._cell.alert_limit)

    def muted(self) -> list[Member]:
        """The members muted on this device (by it, by flood control, or by admins for all)."""
        return self._client._read(self._cell.muted)

    def recent(self) -> list[tuple[Member, Content]]:
        """Recent unexpired messages."""
        return self._client._read(self._cell.recent)

    def send_status(self, message_id: bytes) -> str | None:
        """ "sending", "sent" (acknowledged by the relay) or "failed", for a message you sent."""
        return self._client._read(functools.partial(self._cell.send_status, message_id))

    def unsent(self) -> list[tuple[Content, str]]:
        """Your messages the relay has not acknowledged: ("sending" or "failed")."""
        return self._client._read(self._cell.unsent)

    def safety_number(self, member: Member) -> str:
        """The 60-digit safety number of you and `member`, to compare in person (§C8)."""
        return self._client._read(functools.partial(self._cell.safety_number, member))

    def is_verified(self, member: Member) -> bool:
        """Whether you marked `member` verified."""
        return self._client._read(functools.partial(self._cell.is_verified, member))

    def verified(self) -> list[Member]:
        """The current members you marked verified."""
        return self._client._read(self._cell.verified)

    def mark_verified(self, member: Member, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Record that your safety numbers matched (kept in the keystore)."""
        self._client._run(functools.partial(self._cell.mark_verified, member), timeout)

    def unmark_verified(self, member: Member, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Forget that `member` was verified."""
        self._client._run(functools.partial(self._cell.unmark_verified, member), timeout)

    def wait_synced(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Wait until what the relay held for this cell when the client connected is processed."""
        self._client._run(self._cell.wait_synced, timeout)

    # -- sending -------------------------------------------------------------------------------

    def send_alert(
        self,
        text: str,
        *,
        priority: Priority | str = Priority.URGENT,
        place: str | None = None,
        ttl: int = DEFAULT_ALERT_TTL,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Alert:
        """Send an alert to every member; it expires everywhere after `ttl` seconds."""
        return self._client._run(
            functools.partial(self._cell.send_alert, text, priority=priority, place=place, ttl=ttl),
            timeout,
        )

    def reply(
        self,
        alert_id: bytes,
        status: Status | str,
        *,
        note: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> StatusReply:
        """Answer an alert: responding, on_scene, resolved or false_alarm."""
        return self._client._run(
            functools.partial(self._cell.reply, alert_id, status, note=note), timeout
        )

    def verify(
        self,
        alert_id: bytes,
        step: Step | str,
        *,
        note: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> VerificationStep:
        """A dispatcher's step on a report: verifying, confirmed, false_alarm or resolved."""
        return self._client._run(
            functools.partial(self._cell.verify, alert_id, step, note=note), timeout
        )

    def send_receipt(
        self,
        message_ids: list[bytes],
        state: ReceiptState | str = ReceiptState.READ,
        *,
        ttl: int = DEFAULT_ALERT_TTL,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Receipt:
        """Tell the cell these messages were delivered (or read) here."""
        return self._client._run(
            functools.partial(self._cell.send_receipt, message_ids, state, ttl=ttl), timeout
        )

    def send_message(
        self, text: str, *, ttl: int = DEFAULT_MESSAGE_TTL, timeout: float | None = DEFAULT_TIMEOUT
    ) -> PlainMessage:
        """Send an ordinary message to the cell."""
        return self._client._run(functools.partial(self._cell.send_message, text, ttl=ttl), timeout)

    # -- membership ----------------------------------------------------------------------------

    def invite(
        self, *, ttl: int = DEFAULT_INVITE_TTL, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Invite:
        """Create a one-time invite valid for `ttl` seconds (`.to_link()` gives the link)."""
        return self._client._run(functools.partial(self._cell.invite, ttl=ttl), timeout)

    def approve(
        self, member: Member | None = None, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Member:
        """Admit someone who asked to join (the only one waiting, if `member` is None)."""
        return self._client._run(functools.partial(self._cell.approve, member), timeout)

    def remove(self, member: Member, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Remove a member: a new epoch, new keys, a fresh mailbox; they read and send nothing new."""
        self._client._run(functools.partial(self._cell.remove, member), timeout)

    def rotate(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Start a new epoch with fresh keys for everyone."""
        self._client._run(self._cell.rotate, timeout)

    def mute(
        self,
        member: Member,
        *,
        everyone: bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> bool:
        """Mute a member (for everyone by default when an admin); see `Cell.mute`."""
        return self._client._run(
            functools.partial(self._cell.mute, member, everyone=everyone), timeout
        )

    def unmute(
        self,
        member: Member,
        *,
        everyone: bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> bool:
        """Unmute a member (for everyone by default when an admin); see `Cell.unmute`."""
        return self._client._run(
            functools.partial(self._cell.unmute, member, everyone=everyone), timeout
        )

    def set_alert_limit(self, limit: int, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Set the cell's alerts per member per minute before flood control mutes (admins)."""
        self._client._run(functools.partial(self._cell.set_alert_limit, limit), timeout)

    def set_role(
        self, member: Member, role: CellRole | str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        """Give a member a role: admin, dispatcher, responder, observer or member (admins)."""
        self._client._run(functools.partial(self._cell.set_role, member, role), timeout)

    def set_verify_first(self, on: bool, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Whether unverified reports go to verifiers only (admins)."""
        self._client._run(functools.partial(self._cell.set_verify_first, on), timeout)

    def role_of(self, member: Member) -> CellRole:
        """A member's role in the cell's current signed membership."""
        return self._client._read(lambda: self._cell.role_of(member))

    def recover(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Move the cell to a fresh group mailbox (a new epoch), when a flood filled the old one."""
        self._client._run(self._cell.recover, timeout)

    def leave(self, *, timeout: float | None = DEFAULT_TIMEOUT, force: bool = False) -> bool:
        """Leave the cell: announce it, forget it here; whether it was announced (`Cell.leave`)."""
        announce = math.inf if timeout is None else timeout
        return self._client._run(
            functools.partial(self._cell.leave, timeout=announce, force=force), None
        )

    def receipts(self, alert_id: bytes) -> ReceiptCounts | None:
        """How far one of this member's alerts got (see `Cell.receipts`)."""
        return self._client._read(lambda: self._cell.receipts(alert_id))

    def mark_read(self, alert_id: bytes, *, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        """Say this member read an alert (see `Cell.mark_read`)."""
        return self._client._run(functools.partial(self._cell.mark_read, alert_id), timeout)

    def burn(self, *, keep: float = 0.0, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Burn the cell on every member's device and the relay (admins; see `Cell.burn`)."""
        self._client._run(functools.partial(self._cell.burn, keep=keep), timeout)

    @property
    def gone(self) -> bool:
        """Whether the relay has no mailbox for this cell any more (see `CellGone`)."""
        return self._client._read(lambda: self._cell.gone)

    # -- events ----------------------------------------------------------------------------------

    def events(self, *, timeout: float | None = None) -> EventStream:
        """Every event from now on, in order: iterate, or `get` one at a time.

        Iteration ends when no event came for `timeout` seconds (None: never) or when the
        stream or the client is closed. Use it as a context manager, or call `close`.
        """
        channel = self._client._read(functools.partial(subscribe, self._cell))
        stream = EventStream(self._client, timeout)
        self._client._portal.start_task(stream._pump, channel)
        return stream

    def on_event(self, callback: Callable[[CellEvent], object]) -> Subscription:
        """Call `callback(event)` for every event from now on, in order, in a thread of its own."""
        return Subscription(self.events(), callback)


class EventStream:
    """A cell's events in a thread-safe queue (see `BlockingCell.events`)."""

    def __init__(self, client: BlockingClient, timeout: float | None) -> None:
        """Make an empty stream; `BlockingCell.events` fills it."""
        self._client = client
        self._timeout = timeout
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._scope: trio.CancelScope | None = None
        self._closing = False
        self._ended = False

    async def _pump(self, channel: trio.MemoryReceiveChannel[CellEvent]) -> None:
        """Move events from the cell's channel to the queue (in the Trio thread)."""
        try:
            with trio.CancelScope() as self._scope:
                async with channel:
                    if self._closing:  # closed before this task started
                        return
                    async for event in channel:
                        self._queue.put(event)
        finally:
            # However it ends (closed stream, closed cell, stopped portal): wake the reader.
            self._queue.put(_END)

    def get(self, timeout: float | None = None) -> CellEvent:
        """Wait up to `timeout` seconds (None: for ever) for the next event.

        Raises:
            TimeoutError: none came in time.
            EOFError: the stream or the client was closed.
        """
        if self._ended:
            raise EOFError("the event stream is closed")
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout:g} s") from None
        if item is _END:
            self._ended = True
            raise EOFError("the event stream is closed")
        return item  # type: ignore[return-value]

    def __iter__(self) -> Iterator[CellEvent]:
        return self

    def __next__(self) -> CellEvent:
        try:
            return self.get(self._timeout)
        except (TimeoutError, EOFError):
            raise StopIteration from None

    def close(self) -> None:
        """Stop receiving events (ones already queued can still be taken)."""
        # Either the pump sees the flag when it starts, or it has set the scope by now: it
        # sets the scope before reading the flag, and we set the flag before reading the scope.
        self._closing = True
        scope = self._scope
        if scope is not None and not self._client._closed:
            self._client._portal.call(_sync, scope.cancel)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Subscription:
    """A callback receiving a cell's events in its own thread; `close` stops it."""

    def __init__(self, stream: EventStream, callback: Callable[[CellEvent], object]) -> None:
        """Start calling `callback` with the events of `stream`."""
        self._stream = stream
        self._callback = callback
        self._thread = threading.Thread(target=self._run, name="cellrelay-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                event = self._stream.get()
            except EOFError:
                return
            try:
                self._callback(event)
            except Exception as exc:  # noqa: BLE001 - one failing call must not end the subscription
                log.warning("event_callback_failed", error=type(exc).__name__)

    def close(self) -> None:
        """Stop calling back (after the event in progress, if any) and wait for the thread."""
        self._stream.close()
        if threading.current_thread() is not self._thread:
            self._thread.join()
