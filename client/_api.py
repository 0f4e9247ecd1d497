"""The daemon's API: one handler per operation on cells, members, invites, alerts and events.

Each operation is a `Route`: method, path, what the body and query are, what it answers,
and the handler. client/_app.py routes requests to these (checking the Host, the
credentials, the body against its declaration) and turns errors into problem documents;
client/_openapi.py renders the same table as the OpenAPI document. Handlers work on the
daemon's one `Client` (client/_client.py): the same library a Python program uses.

Cells are named in paths by name (case-insensitive) or by a prefix of their hex id, as on
the command line; members and alerts by name or id prefix likewise. Operations that wait
for a relay honour `Prefer: wait=N` (RFC 7240; default `DEFAULT_WAIT` seconds) and answer
504 RELAY_TIMEOUT when it runs out, saying what they were waiting for. A send that timed
out may still go out: the relay link keeps retrying it, as the library always does.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import structlog
import trio

from cellrelay import __version__
from cellrelay.protocol import ErrorCode
from cellrelay.protocol.cell import Alert, AlertRollup, Invite, MessageId
from cellrelay.protocol.wire import RelayAddress

from ._api_types import (
    AlertLimitSet,
    AlertList,
    AlertOptions,
    AlertReceipts,
    AlertSent,
    BoardCode,
    BurnCell,
    Burned,
    CellList,
    CellSummary,
    ChangeRelay,
    CreateCell,
    CreateInvite,
    DaemonInfo,
    Escalate,
    EscalationSent,
    EscalationSet,
    EventsQuery,
    EventTicket,
    IdentityInfo,
    InviteCreated,
    JoinCell,
    JoinList,
    JoinStatus,
    LeaveCell,
    Left,
    MarkedRead,
    MemberDetail,
    MemberList,
    MessageList,
    MessageSent,
    MuteMember,
    MuteResult,
    NeighbourSet,
    NewEpoch,
    ReceiptSent,
    RecentMessage,
    RelayList,
    RelaysChanged,
    RelayState,
    ReplySent,
    SendAlert,
    SendMessage,
    SendReceipt,
    SendReply,
    SendStep,
    Session,
    SessionRequest,
    SetAlertLimit,
    SetEscalation,
    SetNeighbour,
    SetRole,
    SetVerifyFirst,
    StepSent,
    StreamEvent,
    Verification,
    VerifyFirstSet,
    VerifyMember,
)
from ._cell_member import CellError
from ._cli_output import duration_text
from ._events import (
    AlertReceived,
    MessageReceived,
    ReceiptReceived,
    StatusReceived,
    VerificationReceived,
)
from ._link import LinkState, RelayLink, RelayRefusedError
from ._qr import invite_qr_png_data_uri, invite_qr_svg

if TYPE_CHECKING:
    from ._auth import Gatekeeper
    from ._cell_admin import Cell
    from ._client import Client
    from ._events import CellEvent, Member
    from ._http import Request
    from ._schema import Registry
    from ._sse import EventHub

__all__ = ["DEFAULT_WAIT", "ROUTES", "USED_INVITE", "Api", "ApiError", "Call", "Route"]

log = structlog.get_logger("cellrelay.daemon")

# How long an operation waits for a relay unless the request says otherwise: the command
# line's default, for the same reasons (client/_cli.py).
DEFAULT_WAIT: Final = 20.0
_HEX: Final = re.compile(r"^[0-9a-f]+$")
USED_INVITE: Final = (
    "this invite was used or has expired (the relay no longer has its join mailbox): ask the"
    " cell's admin for a new one"
)


class ApiError(Exception):
    """An operation refused: HTTP `status`, stable `code`, a `detail` for people."""

    def __init__(self, status: int, code: str, detail: str | None = None) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(slots=True, kw_only=True)
class Call:
    """One request as a handler sees it: path parameters, the decoded body and query."""

    request: Request
    params: dict[str, str]
    body: Any = None
    query: Any = None
    wait: float = DEFAULT_WAIT
    waiting_for: str = "the relay did not answer"  # what a 504 says was not done in time


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One operation: how it is called, what it takes and gives (see client/_openapi.py)."""

    method: str
    path: str
    name: str  # the handler's method name on `Api`, and the OpenAPI operationId
    summary: str
    response: object = None  # the annotation of a successful response's body
    status: int = 200
    body: type | None = None  # the declaration of a JSON body
    body_required: bool = True
    text_field: str | None = None  # a text/plain body fills this field; the query the rest
    query: type | None = None
    waits: bool = False  # honours Prefer: wait=N; may answer 504
    public: bool = False  # no credentials needed
    ticket: bool = False  # a one-time event ticket in the query will do
    stream: bool = False  # answers text/event-stream
    errors: tuple[int, ...] = ()
    tag: str = "cells"
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


_CELL: Final = (404, 409)  # no such cell; several match


def _route(method: str, path: str, name: str, summary: str, **more: Any) -> Route:  # noqa: ANN401 - Route's keyword arguments
    return Route(method=method, path=path, name=name, summary=summary, **more)


ROUTES: Final[tuple[Route, ...]] = (
    _route("GET", "/daemon", "get_daemon", "The daemon: whose it is and where it listens.",
           response=DaemonInfo, tag="daemon"),
    _route("GET", "/relays", "list_relays", "Each relay and whether the connection to it is up.",
           response=RelayList, tag="daemon"),
    _route("GET", "/cells", "list_cells", "The cells, and joins waiting for an admin.",
           response=CellList),
    _route("POST", "/cells", "create_cell", "Create a cell on a relay; you become its admin.",
           body=CreateCell, response=CellSummary, status=201, waits=True, errors=(409, 422, 502)),
    _route("GET", "/cells/{cell}", "get_cell", "One cell.", response=CellSummary, errors=_CELL),
    _route("POST", "/cells/{cell}/leave", "leave_cell", "Tell a cell you leave, then delete its keys here.",
           body=LeaveCell, body_required=False, response=Left, waits=True, errors=(*_CELL, 502)),
    _route("POST", "/cells/{cell}/burn", "burn_cell",
           "Burn a cell: every member's client deletes it, its mailboxes leave the relay (admins).",
           body=BurnCell, body_required=False, response=Burned, waits=True, errors=(*_CELL, 403, 502)),
    _route("POST", "/cells/{cell}/rotate", "rotate_cell", "Start a new epoch: fresh keys for everyone (admins).",
           response=NewEpoch, waits=True, errors=(*_CELL, 403, 502)),
    _route("POST", "/cells/{cell}/recover", "recover_cell",
           "Move the cell to a fresh mailbox when a flood filled it: it posts again at once (admins).",
           response=NewEpoch, waits=True, errors=(*_CELL, 403, 502)),
    _route("PUT", "/cells/{cell}/alert-limit", "set_alert_limit",
           "Alerts a member may send per minute before every client mutes it (admins).",
           body=SetAlertLimit, response=AlertLimitSet, waits=True, errors=(*_CELL, 403, 502)),
    _route("POST", "/cells/{cell}/add-relay", "add_relay",
           "Put the cell on one more relay, run by another operator (admins; at most three).",
           body=ChangeRelay, response=RelaysChanged, waits=True, errors=(*_CELL, 403, 422, 502)),
    _route("POST", "/cells/{cell}/drop-relay", "drop_relay",
           "Take the cell off one of its further relays: members stop using it (admins).",
           body=ChangeRelay, response=RelaysChanged, waits=True, errors=(*_CELL, 403, 422, 502)),
    _route("PUT", "/cells/{cell}/verify-first", "set_verify_first",
           "Whether reports not yet confirmed go to verifiers only (admins).",
           body=SetVerifyFirst, response=VerifyFirstSet, waits=True, errors=(*_CELL, 403, 502)),
    _route("PUT", "/cells/{cell}/escalation", "set_escalation",
           "When confirmed alerts go to neighbouring cells: fewer than N answering after T seconds (admins).",
           body=SetEscalation, response=EscalationSet, waits=True, errors=(*_CELL, 403, 502)),
    _route("PUT", "/cells/{cell}/neighbours/{neighbour}", "set_neighbour",
           "Name two of your cells neighbours, or stop (your own setting, never sent).",
           body=SetNeighbour, response=NeighbourSet, errors=_CELL),
    _route("GET", "/cells/{cell}/members", "list_members", "The cell's members.",
           response=MemberList, errors=_CELL, tag="members"),
    _route("GET", "/cells/{cell}/members/{member}", "get_member", "One member, their fingerprint and your safety number.",
           response=MemberDetail, errors=_CELL, tag="members"),
    _route("DELETE", "/cells/{cell}/members/{member}", "remove_member",
           "Remove a member: new keys; they read nothing sent from now on (admins).",
           response=MemberDetail, waits=True, errors=(*_CELL, 403, 502), tag="members"),
    _route("POST", "/cells/{cell}/members/{member}/verify", "verify_member",
           "Compare the safety number a member's device shows; mark them verified when it matches.",
           body=VerifyMember, response=Verification, errors=_CELL, tag="members"),
    _route("POST", "/cells/{cell}/members/{member}/promote", "promote_member",
           "Make a member an admin too (admins).",
           response=MemberDetail, waits=True, errors=(*_CELL, 403, 502), tag="members"),
    _route("PUT", "/cells/{cell}/members/{member}/role", "set_role",
           "Give a member a role: admin, dispatcher, responder, observer, member (admins).",
           body=SetRole, response=MemberDetail, waits=True, errors=(*_CELL, 403, 502),
           tag="members"),
    _route("POST", "/cells/{cell}/members/{member}/mute", "mute_member",
           "Stop ringing for a member's alerts: for everyone (admins), else on this device.",
           body=MuteMember, body_required=False, response=MuteResult, waits=True,
           errors=(*_CELL, 403, 502), tag="members"),
    _route("POST", "/cells/{cell}/members/{member}/unmute", "unmute_member",
           "Ring again for a member's alerts: for everyone (admins), else on this device.",
           body=MuteMember, body_required=False, response=MuteResult, waits=True,
           errors=(*_CELL, 403, 502), tag="members"),
    _route("POST", "/cells/{cell}/invites", "create_invite",
           "A one-time invite: link and QR code (admins).", body=CreateInvite,
           body_required=False, response=InviteCreated, status=201, waits=True,
           errors=(*_CELL, 403, 422, 502), tag="members"),
    _route("GET", "/cells/{cell}/join-requests", "list_join_requests",
           "Who asked to join and waits for approval (admins).",
           response=JoinList, errors=(*_CELL, 403), tag="members"),
    _route("POST", "/cells/{cell}/join-requests/{member}/approve", "approve_join",
           "Admit someone who asked to join (admins).",
           response=MemberDetail, waits=True, errors=(*_CELL, 403, 502), tag="members"),
    _route("POST", "/cells/{cell}/join-requests/{member}/deny", "deny_join",
           "Turn down someone who asked to join; their invite is deleted (admins).",
           response=MemberDetail, waits=True, errors=(*_CELL, 403, 502), tag="members"),
    _route("POST", "/joins", "join_cell", "Ask to join a cell with an invite link, and wait.",
           body=JoinCell, response=JoinStatus, status=201, waits=True, errors=(409, 410, 422, 502)),
    _route("GET", "/cells/{cell}/alerts", "list_alerts",
           "Active alerts with their roll-ups, most urgent first.",
           response=AlertList, errors=_CELL, tag="alerts"),
    _route("POST", "/cells/{cell}/alerts", "send_alert",
           "Send an alert: a JSON body, or the text as a plain body with options in the query.",
           body=SendAlert, text_field="text", query=AlertOptions, response=AlertSent,
           status=201, waits=True, errors=(*_CELL, 403, 422, 502), tag="alerts"),
    _route("GET", "/cells/{cell}/alerts/{alert}", "get_alert", "One alert's roll-up.",
           response=AlertRollup, errors=_CELL, tag="alerts"),
    _route("GET", "/cells/{cell}/alerts/{alert}/receipts", "get_receipts",
           "How far your alert got: delivered and read, from its sampled reporters.",
           response=AlertReceipts, errors=_CELL, tag="alerts"),
    _route("POST", "/cells/{cell}/alerts/{alert}/read", "mark_read",
           "Say you read an alert (a read receipt goes out if you are one of its reporters).",
           response=MarkedRead, errors=_CELL, tag="alerts"),
    _route("POST", "/cells/{cell}/alerts/{alert}/replies", "reply",
           "Answer an alert: responding, on scene, resolved, false alarm.",
           body=SendReply, response=ReplySent, status=201, waits=True,
           errors=(*_CELL, 502), tag="alerts"),
    _route("POST", "/cells/{cell}/alerts/{alert}/steps", "verify_alert",
           "Verify a report: verifying, confirmed, false alarm, resolved (dispatchers, admins).",
           body=SendStep, response=StepSent, status=201, waits=True,
           errors=(*_CELL, 403, 502), tag="alerts"),
    _route("POST", "/cells/{cell}/alerts/{alert}/escalate", "escalate_alert",
           "Forward a confirmed alert to a neighbouring cell, or report its answers back (liaisons, dispatchers, admins).",
           body=Escalate, response=EscalationSent, waits=True,
           errors=(*_CELL, 502), tag="alerts"),
    _route("GET", "/cells/{cell}/messages", "list_messages", "Recent unexpired messages of every kind.",
           response=MessageList, errors=_CELL, tag="alerts"),
    _route("POST", "/cells/{cell}/messages", "send_message", "Send an ordinary message.",
           body=SendMessage, text_field="text", response=MessageSent, status=201, waits=True,
           errors=(*_CELL, 403, 422, 502), tag="alerts"),
    _route("POST", "/cells/{cell}/receipts", "send_receipt", "Say that messages were delivered or read.",
           body=SendReceipt, response=ReceiptSent, status=201, waits=True,
           errors=(*_CELL, 502), tag="alerts"),
    _route("GET", "/events", "events", "Server-Sent Events: every event, resumable with Last-Event-ID.",
           query=EventsQuery, ticket=True, stream=True, errors=(404, 409), tag="events"),
    _route("POST", "/events/tickets", "new_ticket", "A one-time ticket for opening /events without headers.",
           response=EventTicket, status=201, tag="events"),
    _route("POST", "/board/codes", "new_board_code", "A one-time code that opens a board session.",
           response=BoardCode, status=201, tag="daemon"),
    _route("POST", "/session", "open_session", "Redeem a one-time board code for a session token.",
           body=SessionRequest, response=Session, status=201, public=True, tag="daemon"),
)  # fmt: skip


def _fingerprint(member_id: bytes) -> str:
    digits = member_id.hex()
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


class Api:
    """The handlers, over one client, event hub and gatekeeper."""

    def __init__(
        self,
        client: Client,
        *,
        hub: EventHub,
        gatekeeper: Gatekeeper,
        socket_path: str,
        listen_url: str | None,
        registry: Registry,
    ) -> None:
        """Serve `client`'s cells; `listen_url` is the TCP listener's base URL, if any."""
        self.client = client
        self.registry = registry
        self._encode_event = registry.converter(StreamEvent).encode
        self.hub = hub
        self.gatekeeper = gatekeeper
        self.socket_path = socket_path
        self.listen_url = listen_url

    # -- finding things ----------------------------------------------------------------------

    def find_cell(self, text: str) -> Cell:
        """The one cell named `text` (case-insensitive) or whose hex id starts with it."""
        wanted = text.casefold()
        cells = self.client.cells
        found = [c for c in cells if c.name.casefold() == wanted]
        if not found and _HEX.match(wanted):
            found = [c for c in cells if c.cell_id.hex().startswith(wanted)]
        if not found:
            raise ApiError(404, "NO_SUCH_CELL", "no cell has that name or id")
        if len(found) > 1:
            raise ApiError(409, "AMBIGUOUS", "several cells match: give more of the id")
        return found[0]

    async def synced_cell(self, call: Call, *, admin: bool = False, member: bool = True) -> Cell:
        """The path's cell, caught up with its relay; refused if we were removed (or not admin)."""
        cell = self.find_cell(call.params["cell"])
        call.waiting_for = "could not catch up with the cell's relay"
        await cell.wait_synced()
        if member and cell.removed:
            raise ApiError(409, "REMOVED", "you were removed from this cell")
        if admin and not cell.is_admin:
            raise ApiError(403, "NOT_ADMIN", "only an admin of the cell can do that")
        return cell

    @staticmethod
    def _match_member(members: list[Member], text: str) -> Member:
        wanted = text.casefold()
        found = [m for m in members if m.name.casefold() == wanted]
        if not found and _HEX.match(wanted):
            found = [m for m in members if m.member_id.hex().startswith(wanted)]
        if not found:
            raise ApiError(404, "NO_SUCH_MEMBER", "no member has that name or id")
        if len(found) > 1:
            raise ApiError(409, "AMBIGUOUS", "several members match: give more of the id")
        return found[0]

    @staticmethod
    def find_alert(cell: Cell, text: str) -> bytes:
        """The id of the one alert this member holds whose hex id starts with `text`."""
        wanted = text.lower()
        if not _HEX.match(wanted):
            raise ApiError(404, "NO_SUCH_ALERT", "an alert id is hex digits")
        known = {r.alert_id for r in cell.active_alerts()}
        known.update(c.alert_id for _, c in cell.recent() if isinstance(c, Alert))
        found = [a for a in known if a.hex().startswith(wanted)]
        if not found:
            raise ApiError(404, "NO_SUCH_ALERT", "no current alert has that id (expired?)")
        if len(found) > 1:
            raise ApiError(409, "AMBIGUOUS", "several alerts match: give more of the id")
        return found[0]

    def echo(self, cell: Cell, event: CellEvent) -> None:
        """Publish what this daemon sent as the event another device of ours would see.

        The library hands the app no event for its own messages (they are marked seen
        when sent), but the daemon serves many apps: `listen` in one terminal, a board in a
        browser, a bot. Each must see what the others sent, as if from another device.
        """
        self.hub.publish(self._encode_event(event), cell_id=cell.cell_id)

    def summary(self, cell: Cell) -> CellSummary:
        """A cell as `CellSummary`."""
        removed = cell.removed
        return CellSummary(
            name=cell.name,
            cell_id=cell.cell_id,
            relay=cell.record.relay,
            role="removed" if removed else "admin" if cell.is_admin else "member",
            epoch=cell.crypto.epoch,
            members=0 if removed else len(cell.members()),
            active_alerts=0 if removed else len(cell.active_alerts()),
            join_requests=len(cell.join_requests) if cell.is_admin and not removed else 0,
            connected=cell.link.connected,
            alert_limit=cell.alert_limit,
            verify_first=cell.verify_first,
            cell_role=None if removed else cell.role,
            muted=[] if removed else [m.member_id for m in cell.muted()],
            max_ttl=None if cell.link.welcome is None else cell.link.welcome.max_ttl,
            gone=cell.gone,
            channel=cell.channel,
        )

    @staticmethod
    def check_may_post(cell: Cell) -> None:
        """403 NOT_POSTER: a broadcast channel's member that is not an admin or dispatcher."""
        if not cell.may_post:
            raise ApiError(403, "NOT_POSTER", f"{cell.name!r} is a broadcast channel: only its"
                           " admins and dispatchers post there; you can answer alerts")  # fmt: skip

    @staticmethod
    def check_ttl(cell: Cell, ttl: int) -> None:
        """Refuse a lifetime beyond what the cell's relay keeps, as the command line does.

        The relay would cut the envelope's life short while the message inside promised the
        longer one, and members' clients would keep it that long (issue 10).
        """
        welcome = cell.link.welcome
        if welcome is not None and ttl > welcome.max_ttl:
            raise ApiError(422, "TTL_TOO_LONG",
                           f"ttl {duration_text(ttl)} is longer than the relay of {cell.name!r} keeps "
                           f"anything (at most {duration_text(welcome.max_ttl)}, {welcome.max_ttl} s)")  # fmt: skip

    def _detail(self, cell: Cell, member: Member) -> MemberDetail:
        number = None
        if member.member_id != self.client.identity.member_id:
            with contextlib.suppress(CellError):  # just removed: its keys are gone
                number = cell.safety_number(member)
        return MemberDetail(
            cell=cell.name,
            member=member,
            fingerprint=_fingerprint(member.member_id),
            safety_number=number,
            verified=cell.is_verified(member),
        )

    # -- the daemon -------------------------------------------------------------------------

    async def get_daemon(self, call: Call) -> DaemonInfo:
        """GET /daemon."""
        identity = self.client.identity
        return DaemonInfo(
            identity=IdentityInfo(name=identity.name, member_id=identity.member_id),
            version=__version__,
            pid=os.getpid(),
            socket=self.socket_path,
            listen=self.listen_url,
        )

    def relay_states(self) -> list[RelayState]:
        """Each relay the cells live on, with its connection state."""
        by_relay: dict[str, tuple[RelayLink, list[str]]] = {}
        for cell in self.client.cells:
            for link in cell.links:  # every relay of a cell on several (issue 13)
                by_relay.setdefault(str(link.address), (link, []))[1].append(cell.name)
        states = []
        for address, (link, names) in by_relay.items():
            status = link.status
            state: LinkState
            if link.connected:
                state = (
                    "connected"
                    if status is not None and status.state == "connected"
                    else "caught_up"
                )
            else:  # before the first report, the link is trying its first connection
                state = (
                    "retrying" if status is None or status.state == "connected" else status.state
                )
            states.append(
                RelayState(
                    relay=f"{link.address.host}:{link.address.port}",
                    address=address,
                    connected=link.connected,
                    connections=link.connections,
                    cells=names,
                    state=state,
                    reason=None if status is None or link.connected else status.reason or None,
                )
            )
        return states

    async def list_relays(self, call: Call) -> RelayList:
        """GET /relays."""
        return RelayList(relays=self.relay_states())

    # -- cells --------------------------------------------------------------------------------

    async def list_cells(self, call: Call) -> CellList:
        """GET /cells."""
        waiting = [
            JoinStatus(cell=i.cell_name, cell_id=i.cell_id, joined=False,
                       expires_at=i.expires_at, members=[])
            for i in self.client.pending_joins()
        ]  # fmt: skip
        return CellList(cells=[self.summary(c) for c in self.client.cells], waiting=waiting)

    async def create_cell(self, call: Call) -> CellSummary:
        """POST /cells."""
        body: CreateCell = call.body
        try:
            addresses = [RelayAddress.parse(text) for text in (body.relay, *body.more_relays)]
        except ValueError as exc:
            raise ApiError(422, "BAD_ADDRESS", str(exc)) from None
        if any(c.name.casefold() == body.name.casefold() for c in self.client.cells):
            raise ApiError(409, "EXISTS", "you already have a cell of that name")
        call.waiting_for = "could not reach the relay at " + ", ".join(
            f"{a.host}:{a.port}" for a in addresses
        )
        try:
            cell = await self.client.create_cell(
                body.name,
                addresses,
                creation_secret=(body.creation_secret or "").encode(),
                channel=body.channel,
            )
        except CellError as exc:  # the same relay twice
            raise ApiError(422, "BAD_ADDRESS", str(exc)) from None
        return self.summary(cell)

    async def get_cell(self, call: Call) -> CellSummary:
        """GET /cells/{cell}."""
        return self.summary(self.find_cell(call.params["cell"]))

    async def leave_cell(self, call: Call) -> Left:
        """POST /cells/{cell}/leave."""
        body: LeaveCell = call.body or LeaveCell()
        cell = await self.synced_cell(call, member=False)
        members = [] if cell.removed else cell.members()
        admins = [m for m in members if m.is_admin]
        if (
            cell.is_admin
            and not cell.removed
            and len(admins) == 1
            and len(members) > 1
            and not body.force
        ):
            raise ApiError(409, "ONLY_ADMIN",
                           "you are the only admin: nobody could add or remove members after you leave (force: true leaves anyway)")  # fmt: skip
        call.waiting_for = "could not say to the cell that you leave"
        announced = await cell.leave(force=True)  # checked above, with the API's words
        await self.client.forget(cell)
        return Left(cell=cell.name, cell_id=cell.cell_id, announced=announced)

    async def burn_cell(self, call: Call) -> Burned:
        """POST /cells/{cell}/burn."""
        body: BurnCell = call.body or BurnCell()
        cell = await self.synced_cell(call, admin=True)
        call.waiting_for = "the relay did not confirm the burn"
        name, cell_id = cell.name, cell.cell_id
        await cell.burn(keep=body.keep)
        return Burned(cell=name, cell_id=cell_id, keep=body.keep,
                      mailboxes_pending=self.client.burns_pending)  # fmt: skip

    async def recover_cell(self, call: Call) -> NewEpoch:
        """POST /cells/{cell}/recover."""
        cell = await self.synced_cell(call, admin=True)
        call.waiting_for = "the relay did not confirm the move"
        await cell.recover()
        return NewEpoch(cell=cell.name, epoch=cell.crypto.epoch)

    async def add_relay(self, call: Call) -> RelaysChanged:
        """POST /cells/{cell}/add-relay."""
        return await self._change_relay(call, add=True)

    async def drop_relay(self, call: Call) -> RelaysChanged:
        """POST /cells/{cell}/drop-relay."""
        return await self._change_relay(call, add=False)

    async def _change_relay(self, call: Call, *, add: bool) -> RelaysChanged:
        body: ChangeRelay = call.body
        try:
            address = RelayAddress.parse(body.relay)
        except ValueError as exc:
            raise ApiError(422, "BAD_ADDRESS", str(exc)) from None
        cell = await self.synced_cell(call, admin=True)
        call.waiting_for = "the relay did not confirm the new epoch"
        # Refusals (on it already, three already, not on it, its first relay) are 409
        # REFUSED, a relay that does not answer 502 RELAY_UNAVAILABLE (`problem_for`).
        await (cell.add_relay(address) if add else cell.drop_relay(address))
        return RelaysChanged(cell=cell.name, relay=cell.record.relay,
                             more_relays=[f.record.relay for f in cell.further],
                             epoch=cell.crypto.epoch)  # fmt: skip

    async def set_alert_limit(self, call: Call) -> AlertLimitSet:
        """PUT /cells/{cell}/alert-limit."""
        body: SetAlertLimit = call.body
        cell = await self.synced_cell(call, admin=True)
        call.waiting_for = "the relay did not confirm the new epoch"
        await cell.set_alert_limit(body.limit)
        return AlertLimitSet(cell=cell.name, alert_limit=cell.alert_limit, epoch=cell.crypto.epoch)

    async def set_verify_first(self, call: Call) -> VerifyFirstSet:
        """PUT /cells/{cell}/verify-first."""
        body: SetVerifyFirst = call.body
        cell = await self.synced_cell(call, admin=True)
        call.waiting_for = "the relay did not confirm the new epoch"
        await cell.set_verify_first(body.verify_first)
        return VerifyFirstSet(
            cell=cell.name, verify_first=cell.verify_first, epoch=cell.crypto.epoch
        )

    async def set_escalation(self, call: Call) -> EscalationSet:
        """PUT /cells/{cell}/escalation."""
        body: SetEscalation = call.body
        cell = await self.synced_cell(call, admin=True)
        call.waiting_for = "the relay did not confirm the new epoch"
        await cell.set_escalation(body.below, body.after)
        record = cell.record
        return EscalationSet(cell=cell.name, below=record.escalate_below,
                             after=record.escalate_after, epoch=cell.crypto.epoch)  # fmt: skip

    async def set_neighbour(self, call: Call) -> NeighbourSet:
        """PUT /cells/{cell}/neighbours/{neighbour}."""
        body: SetNeighbour = call.body
        cell = self.find_cell(call.params["cell"])
        neighbour = self.find_cell(call.params["neighbour"])
        self.client.set_neighbour(cell, neighbour, on=body.on)
        if body.label is not None:
            cell.record.label = body.label
        await self.client.save()
        return neighbours_of_cell(self.client, cell)

    async def rotate_cell(self, call: Call) -> NewEpoch:
        """POST /cells/{cell}/rotate."""
        cell = await self.synced_cell(call, admin=True)
        call.waiting_for = "the relay did not confirm the new epoch"
        await cell.rotate()
        return NewEpoch(cell=cell.name, epoch=cell.crypto.epoch)

    # -- members -----------------------------------------------------------------------------

    async def list_members(self, call: Call) -> MemberList:
        """GET /cells/{cell}/members."""
        cell = await self.synced_cell(call)
        return MemberList(cell=cell.name, members=cell.members())

    async def get_member(self, call: Call) -> MemberDetail:
        """GET /cells/{cell}/members/{member}."""
        cell = await self.synced_cell(call)
        return self._detail(cell, self._match_member(cell.members(), call.params["member"]))

    async def remove_member(self, call: Call) -> MemberDetail:
        """DELETE /cells/{cell}/members/{member}."""
        cell = await self.synced_cell(call, admin=True)
        member = self._match_member(cell.members(), call.params["member"])
        if member.member_id == self.client.identity.member_id:
            raise ApiError(409, "SELF", "to remove yourself, leave the cell")
        call.waiting_for = "the relay did not confirm the membership change"
        await cell.remove(member)
        return self._detail(cell, member)

    async def mute_member(self, call: Call) -> MuteResult:
        """POST /cells/{cell}/members/{member}/mute."""
        return await self._muting(call, mute=True)

    async def unmute_member(self, call: Call) -> MuteResult:
        """POST /cells/{cell}/members/{member}/unmute."""
        return await self._muting(call, mute=False)

    async def _muting(self, call: Call, *, mute: bool) -> MuteResult:
        body: MuteMember = call.body or MuteMember()
        cell = await self.synced_cell(call)
        member = self._match_member(cell.members(), call.params["member"])
        call.waiting_for = "the relay did not confirm the new epoch"
        act = cell.mute if mute else cell.unmute
        everyone = await act(member, everyone=False if body.here else None)
        return MuteResult(cell=cell.name, member=member, muted=mute, everyone=everyone)

    async def verify_member(self, call: Call) -> Verification:
        """POST /cells/{cell}/members/{member}/verify."""
        body: VerifyMember = call.body
        cell = await self.synced_cell(call)
        member = self._match_member(cell.members(), call.params["member"])
        if member.member_id == self.client.identity.member_id:
            raise ApiError(409, "SELF", "compare safety numbers with another member")
        digits = re.sub(r"[ -]", "", body.safety_number)  # digits only, by its pattern
        verified = hmac.compare_digest(digits.encode(), cell.safety_number(member).encode())
        if verified:
            await cell.mark_verified(member)
        return Verification(cell=cell.name, member=member, verified=verified)

    async def promote_member(self, call: Call) -> MemberDetail:
        """POST /cells/{cell}/members/{member}/promote."""
        cell = await self.synced_cell(call, admin=True)
        member = self._match_member(cell.members(), call.params["member"])
        if member.is_admin:
            raise ApiError(409, "ALREADY_ADMIN", "that member is an admin already")
        call.waiting_for = "the relay did not confirm the membership change"
        await cell.promote(member)
        return self._detail(cell, member)

    async def set_role(self, call: Call) -> MemberDetail:
        """PUT /cells/{cell}/members/{member}/role."""
        body: SetRole = call.body
        cell = await self.synced_cell(call, admin=True)
        member = self._match_member(cell.members(), call.params["member"])
        if cell.role_of(member) is body.role:
            raise ApiError(409, "ALREADY", f"that member is a {body.role.value} already")
        call.waiting_for = "the relay did not confirm the membership change"
        await cell.set_role(member, body.role)
        member = self._match_member(cell.members(), member.member_id.hex())
        return self._detail(cell, member)

    async def create_invite(self, call: Call) -> InviteCreated:
        """POST /cells/{cell}/invites."""
        body: CreateInvite = call.body or CreateInvite()
        cell = await self.synced_cell(call, admin=True)
        self.check_ttl(cell, body.ttl)
        call.waiting_for = "could not create the invite's mailbox on the relay"
        invite = await cell.invite(ttl=body.ttl)
        link = invite.to_link()
        return InviteCreated(cell=cell.name, link=link, expires_at=invite.expires_at,
                             qr_svg=invite_qr_svg(link), qr_png=invite_qr_png_data_uri(link))  # fmt: skip

    async def list_join_requests(self, call: Call) -> JoinList:
        """GET /cells/{cell}/join-requests."""
        cell = await self.synced_cell(call, admin=True)
        return JoinList(cell=cell.name, requests=cell.join_requests)

    async def approve_join(self, call: Call) -> MemberDetail:
        """POST /cells/{cell}/join-requests/{member}/approve."""
        cell = await self.synced_cell(call, admin=True)
        wanted = self._match_member(cell.join_requests, call.params["member"])
        call.waiting_for = "the relay did not confirm the membership change"
        return self._detail(cell, await cell.approve(wanted))

    async def deny_join(self, call: Call) -> MemberDetail:
        """POST /cells/{cell}/join-requests/{member}/deny."""
        cell = await self.synced_cell(call, admin=True)
        wanted = self._match_member(cell.join_requests, call.params["member"])
        call.waiting_for = "the relay did not delete the invite"
        await cell.deny(wanted)
        return self._detail(cell, wanted)

    async def join_cell(self, call: Call) -> JoinStatus:
        """POST /joins."""
        body: JoinCell = call.body
        invite = Invite.parse(body.link)
        if not self.client.asked_to_join(invite):
            if any(c.cell_id == invite.cell_id and not c.removed for c in self.client.cells):
                cell = self.find_cell(invite.cell_id.hex())
                return self._join_status(invite, cell)
            invite.check_fresh(time.time())
            call.waiting_for = (
                f"could not reach the relay at {invite.relay.host}:{invite.relay.port}"
            )
            try:
                await self.client.request_join(body.link)
            except RelayRefusedError as exc:
                # The join mailbox is gone: deleted by the admin's client once the invite
                # was used, or expired (BAD_PROOF either way: docs/protocol.md §7).
                if exc.code in (ErrorCode.BAD_PROOF, ErrorCode.NO_SUCH_MAILBOX):
                    raise ApiError(410, "INVITE_USED", USED_INVITE) from None
                raise
        joined: Cell | None = None
        with trio.move_on_after(body.wait):
            joined = await self.client.wait_joined(invite)
            call.waiting_for = "could not catch up with the cell's relay"
            await joined.wait_synced()
        return self._join_status(invite, joined)

    @staticmethod
    def _join_status(invite: Invite, cell: Cell | None) -> JoinStatus:
        return JoinStatus(
            cell=invite.cell_name if cell is None else cell.name,
            cell_id=invite.cell_id,
            joined=cell is not None,
            expires_at=invite.expires_at,
            members=[] if cell is None else cell.members(),
        )

    # -- alerts, replies, messages, receipts -----------------------------------------------------

    async def list_alerts(self, call: Call) -> AlertList:
        """GET /cells/{cell}/alerts."""
        cell = await self.synced_cell(call, member=False)
        active = cell.active_alerts()
        receipts = {r.alert_id: c for r in active if (c := cell.receipts(r.alert_id)) is not None}
        return AlertList(cell=cell.name, alerts=active, receipts=receipts)

    async def send_alert(self, call: Call) -> AlertSent:
        """POST /cells/{cell}/alerts."""
        body: SendAlert = call.body
        cell = await self.synced_cell(call)
        self.check_may_post(cell)
        self.check_ttl(cell, body.ttl)
        call.waiting_for = "the relay did not store the alert"
        alert = await cell.send_alert(
            body.text, priority=body.priority, place=body.place, ttl=body.ttl,
            escalate_below=body.escalate_below, escalate_after=body.escalate_after,
        )  # fmt: skip
        rollup = cell.rollup(alert.alert_id)
        self.echo(cell, AlertReceived(cell=cell.name, sender=cell.me, alert=alert, rollup=rollup))
        return AlertSent(cell=cell.name, alert=alert, sender=cell.me,
                         recipients=len(cell.members()) - 1)  # fmt: skip

    async def get_alert(self, call: Call) -> AlertRollup:
        """GET /cells/{cell}/alerts/{alert}."""
        cell = await self.synced_cell(call, member=False)
        rollup = cell.rollup(self.find_alert(cell, call.params["alert"]))
        if rollup is None:
            raise ApiError(404, "NO_SUCH_ALERT", "no current alert has that id (expired?)")
        return rollup

    async def get_receipts(self, call: Call) -> AlertReceipts:
        """GET /cells/{cell}/alerts/{alert}/receipts."""
        cell = await self.synced_cell(call, member=False)
        alert_id = self.find_alert(cell, call.params["alert"])
        counts = cell.receipts(alert_id)
        if counts is None:
            raise ApiError(
                404, "NO_SUCH_ALERT", "receipts are counted only for your own current alerts"
            )
        return AlertReceipts(alert_id=MessageId(alert_id), members=counts.members,
                             sampled=counts.sampled, delivered=counts.delivered, read=counts.read)  # fmt: skip

    async def mark_read(self, call: Call) -> MarkedRead:
        """POST /cells/{cell}/alerts/{alert}/read."""
        cell = await self.synced_cell(call)
        alert_id = self.find_alert(cell, call.params["alert"])
        reported = await cell.mark_read(alert_id)
        return MarkedRead(alert_id=MessageId(alert_id), reported=reported)

    async def reply(self, call: Call) -> ReplySent:
        """POST /cells/{cell}/alerts/{alert}/replies."""
        body: SendReply = call.body
        cell = await self.synced_cell(call)
        alert_id = self.find_alert(cell, call.params["alert"])
        call.waiting_for = "the relay did not store the reply"
        answer = await cell.reply(alert_id, body.status, note=body.note)
        rollup = cell.rollup(alert_id)
        self.echo(cell, StatusReceived(cell=cell.name, sender=cell.me, reply=answer, rollup=rollup))
        return ReplySent(cell=cell.name, reply=answer, rollup=rollup)

    async def verify_alert(self, call: Call) -> StepSent:
        """POST /cells/{cell}/alerts/{alert}/steps."""
        body: SendStep = call.body
        cell = await self.synced_cell(call)
        if not cell.is_verifier:
            raise ApiError(403, "NOT_VERIFIER", "only a dispatcher or an admin can verify a report")
        alert_id = self.find_alert(cell, call.params["alert"])
        call.waiting_for = "the relay did not store the step"
        step = await cell.verify(alert_id, body.step, note=body.note)
        rollup = cell.rollup(alert_id)
        self.echo(
            cell, VerificationReceived(cell=cell.name, sender=cell.me, step=step, rollup=rollup)
        )
        return StepSent(cell=cell.name, step=step, rollup=rollup)

    async def escalate_alert(self, call: Call) -> EscalationSent:
        """POST /cells/{cell}/alerts/{alert}/escalate."""
        body: Escalate = call.body
        cell = await self.synced_cell(call)
        neighbour = self.find_cell(body.to)
        await neighbour.wait_synced()
        alert_id = self.find_alert(cell, call.params["alert"])
        call.waiting_for = "the relay did not store the escalation"
        done = await self.client.escalate(cell, alert_id, neighbour)
        return EscalationSent(cell=cell.name, to=neighbour.name, alert_id=done.alert_id,
                              forwarded_id=done.forwarded_id, forwarded=done.forwarded is not None,
                              note=done.note, rollup=cell.rollup(alert_id))  # fmt: skip

    async def list_messages(self, call: Call) -> MessageList:
        """GET /cells/{cell}/messages."""
        cell = await self.synced_cell(call, member=False)
        recent = [RecentMessage(sender=s, content=c) for s, c in cell.recent()]
        return MessageList(cell=cell.name, messages=recent)

    async def send_message(self, call: Call) -> MessageSent:
        """POST /cells/{cell}/messages."""
        body: SendMessage = call.body
        cell = await self.synced_cell(call)
        self.check_may_post(cell)
        self.check_ttl(cell, body.ttl)
        call.waiting_for = "the relay did not store the message"
        message = await cell.send_message(body.text, ttl=body.ttl)
        self.echo(cell, MessageReceived(cell=cell.name, sender=cell.me, message=message))
        return MessageSent(cell=cell.name, message=message)

    async def send_receipt(self, call: Call) -> ReceiptSent:
        """POST /cells/{cell}/receipts."""
        body: SendReceipt = call.body
        cell = await self.synced_cell(call)
        call.waiting_for = "the relay did not store the receipt"
        receipt = await cell.send_receipt(list(body.message_ids), body.state)
        self.echo(cell, ReceiptReceived(cell=cell.name, sender=cell.me, receipt=receipt))
        return ReceiptSent(cell=cell.name, receipt=receipt)

    # -- sessions and tickets ---------------------------------------------------------------------

    async def new_board_code(self, call: Call) -> BoardCode:
        """POST /board/codes."""
        code, expires_at = self.gatekeeper.new_code()
        path = f"/#code={code}"
        url = f"{self.listen_url}{path}" if self.listen_url else None
        return BoardCode(code=code, path=path, url=url, expires_at=expires_at)

    async def open_session(self, call: Call) -> Session:
        """POST /session."""
        body: SessionRequest = call.body
        session = self.gatekeeper.redeem_code(body.code)
        if session is None:
            raise ApiError(401, "UNAUTHORIZED")
        return Session(token=session[0], expires_at=session[1])

    async def new_ticket(self, call: Call) -> EventTicket:
        """POST /events/tickets."""
        ticket, expires_at = self.gatekeeper.new_ticket()
        return EventTicket(ticket=ticket, expires_at=expires_at)

    def stream_cell_id(self, query: EventsQuery) -> bytes | None:
        """The cell a stream is filtered to, if any."""
        return None if query.cell is None else self.find_cell(query.cell).cell_id


def neighbours_of_cell(client: Client, cell: Cell) -> NeighbourSet:
    """A cell's neighbours as this member named them, and the label it gives the cell."""
    return NeighbourSet(cell=cell.name, label=cell.record.label or cell.name,
                        neighbours=[n.name for n in client.neighbours(cell)])  # fmt: skip
