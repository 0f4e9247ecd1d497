"""The exceptions cellrelay raises on purpose, and the stable error codes on the wire.

Every error that can cross the wire has an `ErrorCode`. The numbers are part of the
protocol (docs/protocol.md, "Error codes") and never change meaning; new codes get new
numbers. They are grouped by hundreds:

* 1xx: the bytes themselves are wrong (framing, msgpack, schema, crypto, state).
  A connection that receives one of these is closed.
* 2xx: authorisation (capability proofs, admin signatures, unknown mailboxes).
* 3xx: a limit was reached; the request was refused but the connection may go on,
  except where the relay says otherwise in a `Goodbye`.
* 4xx: lifecycle: why a subscription or a connection was ended.
* 5xx: the relay failed internally; the client should retry later.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "DESCRIPTIONS",
    "CellrelayError",
    "CryptoError",
    "ErrorCode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(IntEnum):
    """Stable numeric codes carried by `Error` and `Goodbye` messages."""

    NORMAL = 0  # Goodbye only: an orderly close, nothing went wrong

    # 1xx: malformed input. The receiving side closes the connection.
    MALFORMED = 100  # not msgpack, or a message cut off inside a frame
    UNKNOWN_TYPE = 101  # the "t" field names no message type
    MISSING_FIELD = 102
    EXTRA_FIELD = 103
    WRONG_TYPE = 104  # a field holds the wrong msgpack type
    OUT_OF_RANGE = 105  # an integer, or an enumerated string, outside its range
    TOO_LARGE = 106  # a bytes, string or list field longer than its limit
    TOO_DEEP = 107  # nesting deeper than the schema allows
    EXTENSION_TYPE = 108  # msgpack extension types (including timestamps) are not used
    BAD_FRAME = 109  # a frame length that no valid frame can have
    DECRYPT_FAILED = 110  # a Noise message failed to authenticate
    UNEXPECTED_MESSAGE = 111  # a message the sender's role or the current state forbids
    TRUNCATED = 112  # the stream ended in the middle of a frame
    DUPLICATE_FIELD = 113  # a map names the same key twice
    HANDSHAKE_FAILED = 114  # bad handshake message: wrong length, low-order key, ...
    BUFFER_FULL = 115  # the peer sent more unprocessed bytes than the receiver buffers

    # 2xx: authorisation.
    UNAUTHORIZED = 200  # this connection has not proven the capability the request needs
    BAD_PROOF = 201  # a capability proof or an admin signature does not verify
    STALE_COUNTER = 202  # an admin operation's counter is not above the last one accepted
    NO_SUCH_MAILBOX = 203
    CREATE_FORBIDDEN = 204  # the relay requires a creation secret and this one is wrong

    # 3xx: limits. The request is refused; the connection goes on.
    EXPIRED = 300  # expires_at is not in the future
    TTL_TOO_LONG = 301  # expires_at is beyond the mailbox's or the relay's maximum TTL
    ENVELOPE_TOO_LARGE = 302
    MAILBOX_FULL = 303  # the mailbox's (or the relay's) stored-bytes quota is used up
    RATE_LIMITED = 304
    TOO_MANY_MAILBOXES = 305  # this connection authorised or subscribed too many mailboxes
    TOO_MANY_CONNECTIONS = 306  # from this source address
    SLOW_CONSUMER = 307  # the connection did not read its deliveries fast enough
    BUSY = 308  # too many handshakes in progress, or (to create) the relay's mailbox limit
    STORAGE_FULL = 309  # the relay's disk is full: nothing was stored; reads still work

    # 4xx: lifecycle.
    REVOKED = 400  # the mailbox's keys were rotated; prove the new ones
    DELETED = 401  # the mailbox was deleted by its admin
    SHUTTING_DOWN = 402  # the relay is stopping; reconnect (to it or another) later
    IDLE_TIMEOUT = 403
    HANDSHAKE_TIMEOUT = 404

    # 5xx: the relay's own failure.
    INTERNAL = 500


class CellrelayError(Exception):
    """Base class for every exception cellrelay raises on purpose."""


class ProtocolError(CellrelayError):
    """Somebody broke the wire protocol; `code` says how. Never raised directly.

    The message names states, message types and sizes, never content, so it is safe to log.
    """

    code: ErrorCode

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r}, code={self.code.name})"


class LocalProtocolError(ProtocolError):
    """Our own code asked for something the protocol forbids: a bug on this side."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: the connection must be closed, with `code` if possible."""


class CryptoError(CellrelayError):
    """A sealed value failed to authenticate, or a key was unusable.

    Deliberately says nothing about why: which check failed is itself information.
    """


# What each code means and what the receiver should do; docs/protocol.md renders its table
# from this mapping, and the CLI shows it to people.
DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.NORMAL: "Orderly close; nothing went wrong.",
    ErrorCode.MALFORMED: "Not msgpack, a message cut off inside its frame, or an empty frame.",
    ErrorCode.UNKNOWN_TYPE: "The `t` field names no message type of this protocol revision.",
    ErrorCode.MISSING_FIELD: "A required field (or a page item element) is absent.",
    ErrorCode.EXTRA_FIELD: "A field (or a page item element) that the message does not define.",
    ErrorCode.WRONG_TYPE: "A value, key or message of the wrong msgpack type.",
    ErrorCode.OUT_OF_RANGE: "An integer outside its range, bytes shorter than the minimum, or an unknown choice.",
    ErrorCode.TOO_LARGE: "Bytes or a list longer than the field allows.",
    ErrorCode.TOO_DEEP: "Nesting deeper than msgpack decoding allows.",
    ErrorCode.EXTENSION_TYPE: "A msgpack extension type (timestamps included); none are used.",
    ErrorCode.BAD_FRAME: "A frame length no valid frame can have.",
    ErrorCode.DECRYPT_FAILED: "A transport frame failed to authenticate.",
    ErrorCode.UNEXPECTED_MESSAGE: "A message the sender's role or the connection's state forbids.",
    ErrorCode.TRUNCATED: "The stream ended inside a frame.",
    ErrorCode.DUPLICATE_FIELD: "A map repeats a key.",
    ErrorCode.HANDSHAKE_FAILED: "A handshake message failed: wrong length, bad key or failed authentication (wrong relay key?).",
    ErrorCode.BUFFER_FULL: "The peer sent more unprocessed data than the receiver buffers.",
    ErrorCode.UNAUTHORIZED: "This connection has not proven the capability the request needs; send Auth first.",
    ErrorCode.BAD_PROOF: "A capability proof or admin signature does not verify (wrong key, keys rotated, or no such mailbox).",
    ErrorCode.STALE_COUNTER: "An admin counter not above the last accepted; use the current time in milliseconds.",
    ErrorCode.NO_SUCH_MAILBOX: "The mailbox was deleted while this connection held a capability on it (auth and admin operations on a missing mailbox get BAD_PROOF).",
    ErrorCode.CREATE_FORBIDDEN: "The relay requires a creation secret and this one is wrong; ask the operator.",
    ErrorCode.EXPIRED: "expires_at is not in the future (by the relay's clock; see Welcome.time_ms).",
    ErrorCode.TTL_TOO_LONG: "expires_at is beyond the mailbox's or the relay's maximum TTL.",
    ErrorCode.ENVELOPE_TOO_LARGE: "The envelope exceeds the relay's limit (Welcome.max_envelope).",
    ErrorCode.MAILBOX_FULL: "The mailbox's stored-bytes quota, or the relay's, is used up; wait for envelopes to expire.",
    ErrorCode.RATE_LIMITED: "Too many requests of this kind; retry after a pause.",
    ErrorCode.TOO_MANY_MAILBOXES: "This connection uses too many mailboxes; open another connection.",
    ErrorCode.TOO_MANY_CONNECTIONS: "Too many connections from this address.",
    ErrorCode.SLOW_CONSUMER: "Deliveries were not read fast enough; reconnect and resume from the cursor.",
    ErrorCode.BUSY: "The relay is overloaded, or holds as many mailboxes as its operator allows (create); retry later with backoff.",
    ErrorCode.STORAGE_FULL: "The relay's storage is full: nothing was stored (publish, create). Reads, subscriptions and admin operations still work; retry later with backoff.",
    ErrorCode.REVOKED: "The mailbox's keys were rotated; authenticate with the new keys.",
    ErrorCode.DELETED: "The mailbox was deleted by its admin.",
    ErrorCode.SHUTTING_DOWN: "The relay is stopping; reconnect later.",
    ErrorCode.IDLE_TIMEOUT: "Nothing was received for too long (no answer to Ping).",
    ErrorCode.HANDSHAKE_TIMEOUT: "The handshake did not finish in time.",
    ErrorCode.INTERNAL: "The relay failed internally; retry later.",
}
