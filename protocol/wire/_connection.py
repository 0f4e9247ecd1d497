"""The sans-IO cellrelay connection: bytes in, messages out; messages in, bytes out.

Theory of operation (docs/protocol.md §1-§3, §5):

* One `Connection` per side. The client knows the relay's static X25519 public key (from
  the invite) and speaks `Noise_NK_25519_ChaChaPoly_BLAKE2b` with the prologue
  `PROLOGUE`. Handshake message 1 (client to relay) carries a `Hello`, message 2 (relay to
  client) a `Welcome`; after that every frame is a Noise transport message whose plaintext
  is one or more concatenated msgpack messages.
* Every message passes through `TRANSITIONS`, keyed by (state, sender role, message type).
  A message absent from it is illegal: sending one raises `LocalProtocolError`, receiving
  one raises `RemoteProtocolError(UNEXPECTED_MESSAGE)`. docs/protocol.md renders its state
  table from the same mapping.
* Fail closed: any exception from `send*`, `receive_data` or `receive_eof` moves the
  connection to `State.ERROR`, after which every call raises `LocalProtocolError`.
* Both directions rekey (Noise §11.3) after every `REKEY_INTERVAL` transport frames, at
  the same frame on both sides, so a key captured later cannot open earlier frames of a
  long-lived connection.
* A relay that cannot accept handshake message 1 (it does not authenticate: the client
  pinned another key; or its payload is not a valid `Hello`) has no key to say so with.
  It answers with a *refusal* (docs/protocol.md §3.2): one frame whose body is a
  plaintext `Goodbye` with the code, which `farewell` returns on the relay side before the
  handshake finished (`refusal_frame`). A refusal is shorter than any handshake message 2,
  so a client tells them apart by length, and raises `HandshakeRefusedError`. It is not
  authenticated: it may say why, never prove it.
* The object reads no clock, opens no socket and draws randomness only for its Noise
  ephemeral key, which tests may pin.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar

from .._errors import (
    CellrelayError,
    CryptoError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
)
from ._codec import decode_messages, decode_single, encode_message
from ._framing import FRAME_HEADER, MAX_FRAME, FrameDecoder, encode_frame
from ._messages import (
    Auth,
    Create,
    Created,
    Delete,
    Deliver,
    Error,
    Fetch,
    Goodbye,
    Hello,
    Message,
    Ok,
    Page,
    Ping,
    Pong,
    Publish,
    Published,
    Revoked,
    Rotate,
    SetLimits,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
)
from ._noise import CipherState, HandshakeState, KeyPair

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "CLIENT_MESSAGES",
    "MAX_PLAINTEXT",
    "NOISE_PROTOCOL",
    "PROLOGUE",
    "REKEY_INTERVAL",
    "RELAY_MESSAGES",
    "TRANSITIONS",
    "Connection",
    "EncodedMessage",
    "HandshakeRefusedError",
    "Role",
    "State",
    "refusal_frame",
]

NOISE_PATTERN: Final = "NK"
NOISE_PROTOCOL: Final = "Noise_NK_25519_ChaChaPoly_BLAKE2b"
# The prologue names the protocol and its major version; both sides mix it into the
# handshake hash, so a peer speaking another major version fails the handshake at once.
PROLOGUE: Final = b"cellrelay/1"
AEAD_TAG: Final = 16
MAX_PLAINTEXT: Final = MAX_FRAME - AEAD_TAG  # 65,519 bytes of messages per frame
# Smallest possible frames: a handshake message is an ephemeral key (32) plus an
# encrypted payload (tag 16 + at least one byte); a transport frame is a tag plus at
# least one byte of message.
MIN_HANDSHAKE_FRAME: Final = 32 + AEAD_TAG + 1
MIN_TRANSPORT_FRAME: Final = AEAD_TAG + 1
# 2^16 frames between rekeys: one extra 32-byte AEAD per 65,536 frames costs nothing
# measurable, and bounds what one transport key can open to about 4 GB of traffic.
REKEY_INTERVAL: Final = 1 << 16

P = ParamSpec("P")
R = TypeVar("R")


class HandshakeRefusedError(RemoteProtocolError):
    """The relay refused the handshake with `code` (docs/protocol.md §3.2); unauthenticated.

    `HANDSHAKE_FAILED` means the relay could not read handshake message 1: it does not
    hold the static key the client pinned (a wrong key in the address or invite, or a
    relay whose key changed). Anyone on the network path could send a refusal, as they
    could close the connection, so it explains a failure and proves nothing.
    """


def refusal_frame(code: ErrorCode) -> bytes:
    """The frame a relay sends to refuse a handshake: a plaintext `Goodbye(code)` (§3.2)."""
    return encode_frame(encode_message(Goodbye(code=code)))


class Role(enum.Enum):
    """Which end of a connection this is."""

    CLIENT = "client"
    RELAY = "relay"

    # Members are singletons, so identity is equality; `Enum.__hash__` is Python code
    # (hash of the name) and cost 0.25 µs per transition lookup, on every message.
    __hash__ = object.__hash__


OTHER_ROLE: Final = {Role.CLIENT: Role.RELAY, Role.RELAY: Role.CLIENT}


class State(enum.Enum):
    """The phases of a connection, shared by both ends (they agree whenever the wire is quiet)."""

    IDLE = "idle"  # nothing sent yet
    HANDSHAKE = "handshake"  # Hello sent; waiting for Welcome
    OPEN = "open"  # both may send
    CLIENT_DONE = "client_done"  # the client said Goodbye; the relay may still send
    RELAY_DONE = "relay_done"  # the relay said Goodbye; the client may still send
    CLOSED = "closed"  # both said Goodbye, or the stream ended
    ERROR = "error"  # something failed; the connection is unusable

    __hash__ = object.__hash__  # as for Role


CLIENT_MESSAGES: Final[tuple[type[Message], ...]] = (
    Create, Auth, Publish, Subscribe, Unsubscribe, Fetch, Rotate, SetLimits, Delete, Ping, Pong,
)  # fmt: skip
RELAY_MESSAGES: Final[tuple[type[Message], ...]] = (
    Created, Ok, Error, Published, Subscribed, Page, Deliver, Revoked, Ping, Pong,
)  # fmt: skip


def _transitions() -> dict[tuple[State, Role, type[Message]], State]:
    table = {
        (State.IDLE, Role.CLIENT, Hello): State.HANDSHAKE,
        (State.HANDSHAKE, Role.RELAY, Welcome): State.OPEN,
        (State.OPEN, Role.CLIENT, Goodbye): State.CLIENT_DONE,
        (State.OPEN, Role.RELAY, Goodbye): State.RELAY_DONE,
        # After one side's Goodbye the other may have messages already in flight, and
        # answers with its own Goodbye, which closes the connection.
        (State.CLIENT_DONE, Role.RELAY, Goodbye): State.CLOSED,
        (State.RELAY_DONE, Role.CLIENT, Goodbye): State.CLOSED,
    }
    for message_type in CLIENT_MESSAGES:
        table[(State.OPEN, Role.CLIENT, message_type)] = State.OPEN
        table[(State.RELAY_DONE, Role.CLIENT, message_type)] = State.RELAY_DONE
    for message_type in RELAY_MESSAGES:
        table[(State.OPEN, Role.RELAY, message_type)] = State.OPEN
        table[(State.CLIENT_DONE, Role.RELAY, message_type)] = State.CLIENT_DONE
    return table


# (state, sender, message type) -> next state. Anything absent is illegal.
TRANSITIONS: Final[Mapping[tuple[State, Role, type[Message]], State]] = _transitions()

# The same table split by (state, sender): a connection looks up its row once per frame
# or per `send_encoded` call, then only the message type per message.
_ROWS: Final[Mapping[tuple[State, Role], Mapping[type[Message], State]]] = {
    (state, role): {
        message_type: next_state
        for (from_state, sender, message_type), next_state in TRANSITIONS.items()
        if from_state is state and sender is role
    }
    for state in State
    for role in Role
}


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """A message encoded once, to be sent on many connections (the fan-out path)."""

    message_type: type[Message]
    data: bytes = field(repr=False)

    @classmethod
    def of(cls, message: Message) -> EncodedMessage:
        """Encode `message`."""
        return cls(type(message), encode_message(message))


class Connection:
    """One end of a cellrelay connection, without I/O. See the module docstring."""

    def __init__(
        self,
        our_role: Role,
        *,
        static_key: KeyPair | None = None,
        relay_public_key: bytes | None = None,
        ephemeral_key: KeyPair | None = None,
    ) -> None:
        """Create one end.

        Args:
            our_role: CLIENT or RELAY.
            static_key: the relay's static key pair (relay role only).
            relay_public_key: the relay's pinned static public key (client role only).
            ephemeral_key: pins the Noise ephemeral key; only for known-answer tests.
        """
        self.our_role: Final = our_role
        self.their_role: Final = OTHER_ROLE[our_role]
        if our_role is Role.RELAY:
            if static_key is None or relay_public_key is not None:
                raise LocalProtocolError("a relay connection needs static_key and nothing else")
            self._handshake: HandshakeState | None = HandshakeState(
                NOISE_PATTERN, initiator=False, prologue=PROLOGUE, s=static_key, e=ephemeral_key
            )
        else:
            if relay_public_key is None or static_key is not None:
                raise LocalProtocolError("a client connection needs relay_public_key only")
            self._handshake = HandshakeState(
                NOISE_PATTERN,
                initiator=True,
                prologue=PROLOGUE,
                rs=relay_public_key,
                e=ephemeral_key,
            )
        self.state = State.IDLE
        # The decoder only refuses empty frames: several frames may arrive in one read,
        # the handshake's and transport ones together, so the minimum depends on the frame's
        # place and _receive_frame checks it.
        self._decoder = FrameDecoder()
        self._send_cipher: CipherState | None = None
        self._receive_cipher: CipherState | None = None
        self._handshake_hash: bytes | None = None
        self._farewell_cipher: CipherState | None = None
        self._refused = False  # a refusal was made (farewell before the handshake finished)
        self._fault: CellrelayError | None = None  # found after messages returned (`failing`)
        self.frames_sent = 0  # transport frames sealed so far (for the relay's metrics)

    def __repr__(self) -> str:
        return f"<Connection {self.our_role.value} {self.state.value}>"

    @property
    def handshake_hash(self) -> bytes:
        """The final Noise handshake hash: what capability proofs sign (channel binding).

        Raises:
            LocalProtocolError: the handshake has not finished.
        """
        if self._handshake_hash is None:
            raise LocalProtocolError(f"no handshake hash in state {self.state.name}")
        return self._handshake_hash

    # -- sending -------------------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """Return the bytes that carry `message`.

        Raises:
            LocalProtocolError: the message is illegal for our role in this state.
        """
        if self.state is State.IDLE or self.state is State.HANDSHAKE:
            return self._guard(self._send_handshake, message)
        return self.send_encoded((EncodedMessage.of(message),))

    def send_many(self, messages: Iterable[Message]) -> bytes:
        """Return the bytes that carry `messages`, coalesced into as few frames as fit."""
        return self.send_encoded([EncodedMessage.of(m) for m in messages])

    def send_encoded(self, messages: Sequence[EncodedMessage]) -> bytes:
        """Return the bytes that carry already-encoded messages, coalesced into few frames.

        Either every message is legal and all are sent, or nothing changes but the state
        (ERROR) and `LocalProtocolError` is raised.
        """
        state = self.state
        cipher = self._send_cipher
        if cipher is None:
            raise self._fail(
                LocalProtocolError(f"{self.our_role.name} cannot send in {state.name}")
            )
        role = self.our_role
        row = _ROWS[state, role]
        for encoded in messages:
            next_state = row.get(encoded.message_type)
            if next_state is None:
                raise self._fail(
                    LocalProtocolError(
                        f"{role.name} may not send {encoded.message_type.__name__} in {state.name}"
                    )
                )
            if len(encoded.data) > MAX_PLAINTEXT:
                raise self._fail(
                    LocalProtocolError(f"a {len(encoded.data)}-byte message cannot fit a frame")
                )
            if next_state is not state:
                state = next_state
                row = _ROWS[state, role]
        self.state = state
        # `_guard` inlined, and `_seal` skipped for one message (a reply, or a delivery to
        # an idle subscriber: the fan-out's case): every call layer here is paid once per
        # subscriber per alert. ERROR was ruled out above (a failed connection has no send
        # cipher).
        try:
            if len(messages) == 1:
                self.frames_sent += 1
                return self._seal_frame(cipher, messages[0].data)
            return self._seal(cipher, messages)
        except CellrelayError as exc:
            raise self._fail(exc) from None

    def _seal(self, cipher: CipherState, messages: Sequence[EncodedMessage]) -> bytes:
        out: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for encoded in messages:
            data = encoded.data
            if size + len(data) > MAX_PLAINTEXT:
                out.append(self._seal_frame(cipher, b"".join(batch)))
                batch, size = [], 0
            batch.append(data)
            size += len(data)
        if batch:
            out.append(self._seal_frame(cipher, batch[0] if len(batch) == 1 else b"".join(batch)))
        self.frames_sent += len(out)
        return out[0] if len(out) == 1 else b"".join(out)

    @staticmethod
    def _seal_frame(cipher: CipherState, plaintext: bytes) -> bytes:
        body = cipher.encrypt(plaintext)
        if cipher.n % REKEY_INTERVAL == 0:
            cipher.rekey()
        return len(body).to_bytes(FRAME_HEADER, "big") + body

    def _send_handshake(self, message: Message) -> bytes:
        handshake = self._handshake
        next_state = TRANSITIONS.get((self.state, self.our_role, type(message)))
        if next_state is None or handshake is None:
            raise LocalProtocolError(
                f"{self.our_role.name} may not send {type(message).__name__} in {self.state.name}"
            )
        body = handshake.write_message(encode_message(message))
        self.state = next_state
        if handshake.finished:  # the relay just wrote message 2
            self._finish_handshake(handshake)
        return len(body).to_bytes(FRAME_HEADER, "big") + body

    def _finish_handshake(self, handshake: HandshakeState) -> None:
        self._handshake_hash = handshake.handshake_hash
        self._send_cipher, self._receive_cipher = handshake.split()
        self._handshake = None

    # -- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Feed bytes from the peer; return the messages they complete, oldest first.

        A frame is checked whole before any of its messages is returned (docs/protocol.md
        §8.1). A fault after complete frames does not hide them: their messages are
        returned and `failing` is set; the next call raises the fault.

        Raises:
            RemoteProtocolError: the peer broke the protocol; the code says how.
        """
        if self.state is State.ERROR:
            raise LocalProtocolError("the connection has failed; discard it")
        self._raise_fault()
        messages: list[Message] = []
        decoder = self._decoder
        try:
            frames = decoder.receive_data(data)
            while frames:
                for frame in frames:
                    self._receive_frame(frame, messages)
                # A bad length after complete frames waits in the decoder: surface it now.
                frames = decoder.receive_data(b"") if decoder.buffered >= FRAME_HEADER else []
        except CellrelayError as exc:
            if not messages:
                raise self._fail(exc) from None
            # docs/protocol.md §8.1: the frames before the fault are valid and are handled,
            # answers included; the fault is raised by the next call (see `failing`).
            self._fault = exc
        return messages

    @property
    def failing(self) -> bool:
        """True when the last `receive_data` found a fault after the messages it returned.

        Handle those messages, then call `receive_data(b"")`, which raises the fault.
        """
        return self._fault is not None

    def _raise_fault(self) -> None:
        fault, self._fault = self._fault, None
        if fault is not None:
            raise self._fail(fault) from None

    def _receive_frame(self, frame: bytes, out: list[Message]) -> None:
        """Check one frame whole, then add its messages to `out` (none if any is bad)."""
        cipher = self._receive_cipher
        if cipher is None:
            if len(frame) < MIN_HANDSHAKE_FRAME:
                if self.our_role is Role.CLIENT and self.state is State.HANDSHAKE:
                    _raise_if_refusal(frame)
                raise RemoteProtocolError(
                    f"a {len(frame)}-byte handshake frame is below {MIN_HANDSHAKE_FRAME}",
                    ErrorCode.BAD_FRAME,
                )
            out.append(self._receive_handshake(frame))
            return
        if len(frame) < MIN_TRANSPORT_FRAME:
            raise RemoteProtocolError(
                f"a {len(frame)}-byte transport frame is below {MIN_TRANSPORT_FRAME}",
                ErrorCode.BAD_FRAME,
            )
        try:
            plaintext = cipher.decrypt(frame)
        except CryptoError:
            raise RemoteProtocolError(
                "transport frame failed to authenticate", ErrorCode.DECRYPT_FAILED
            ) from None
        if cipher.n % REKEY_INTERVAL == 0:
            cipher.rekey()
        state = self.state
        their_role = self.their_role
        row = _ROWS[state, their_role]
        messages = decode_messages(plaintext)  # every message decoded before any state check
        for message in messages:
            next_state = row.get(type(message))
            if next_state is None:
                raise RemoteProtocolError(
                    f"{their_role.name} may not send {type(message).__name__} in {state.name}",
                    ErrorCode.UNEXPECTED_MESSAGE,
                )
            if next_state is not state:
                state = next_state
                row = _ROWS[state, their_role]
        out.extend(messages)
        self.state = state

    def _receive_handshake(self, frame: bytes) -> Message:
        handshake = self._handshake
        if handshake is None or not self._expecting_handshake_frame():
            raise RemoteProtocolError(
                f"{self.their_role.name} sent a frame out of turn in {self.state.name}",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        try:
            payload = handshake.read_message(frame)
        except CryptoError:
            raise RemoteProtocolError(
                "handshake failed to authenticate", ErrorCode.HANDSHAKE_FAILED
            ) from None
        message = decode_single(payload)
        next_state = TRANSITIONS.get((self.state, self.their_role, type(message)))
        if next_state is None:
            raise RemoteProtocolError(
                f"{self.their_role.name} may not send {type(message).__name__} in {self.state.name}",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        self.state = next_state
        if handshake.finished:  # the client just read message 2
            self._finish_handshake(handshake)
        return message

    def _expecting_handshake_frame(self) -> bool:
        # NK has two messages: the client writes in IDLE, the relay answers in HANDSHAKE.
        if self.our_role is Role.RELAY:
            return self.state is State.IDLE
        return self.state is State.HANDSHAKE

    def receive_eof(self) -> None:
        """Note that the peer closed its side of the stream.

        Raises:
            RemoteProtocolError: the stream ended inside a frame (TRUNCATED).
        """
        if self.state is State.ERROR:
            raise LocalProtocolError("the connection has failed; discard it")
        self._raise_fault()
        try:
            self._decoder.receive_eof()
        except CellrelayError as exc:
            raise self._fail(exc) from None
        self.state = State.CLOSED

    # -- failure -------------------------------------------------------------------------

    def _fail(self, exc: CellrelayError) -> CellrelayError:
        """Move to ERROR, drop key material, and return `exc` for the caller to raise.

        The send key survives only until `farewell` uses or discards it: our sending
        direction is not weakened by what the peer sent, and a Goodbye with the error code
        tells an honest peer what went wrong.
        """
        self.state = State.ERROR
        if self._receive_cipher is not None:
            self._receive_cipher.clear()
        self._farewell_cipher, self._send_cipher, self._receive_cipher = (
            self._send_cipher,
            None,
            None,
        )
        self._handshake = None
        return exc

    def farewell(self, code: ErrorCode) -> bytes:
        """After a failure, return the bytes of one last `Goodbye(code)`, then forget the send key.

        Before the handshake finished there is no key to send with: a relay then gets a
        refusal (`refusal_frame`, docs/protocol.md §3.2), a client b"". Returns b"" too
        once a farewell was made. Only valid in `State.ERROR`.
        """
        if self.state is not State.ERROR:
            raise LocalProtocolError(f"farewell is for failed connections, not {self.state.name}")
        cipher, self._farewell_cipher = self._farewell_cipher, None
        if cipher is None:
            if self.our_role is Role.RELAY and self._handshake_hash is None and not self._refused:
                self._refused = True
                return refusal_frame(code)
            return b""
        try:
            return self._seal_frame(cipher, encode_message(Goodbye(code=code)))
        except CellrelayError:
            return b""
        finally:
            cipher.clear()

    def _guard(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self.state is State.ERROR:
            raise LocalProtocolError("the connection has failed; discard it")
        try:
            return fn(*args, **kwargs)
        except CellrelayError as exc:
            raise self._fail(exc) from None


def _raise_if_refusal(frame: bytes) -> None:
    """Raise `HandshakeRefusedError` if a short handshake-position frame is a refusal (§3.2)."""
    try:
        message = decode_single(frame)
    except RemoteProtocolError:
        return  # not a refusal: the caller reports the frame as BAD_FRAME
    if not isinstance(message, Goodbye):
        return
    try:
        code = ErrorCode(message.code)
    except ValueError:  # a code from a newer relay: still a refusal
        code = ErrorCode.HANDSHAKE_FAILED
    raise HandshakeRefusedError(f"the relay refused the handshake: {code.name}", code)
