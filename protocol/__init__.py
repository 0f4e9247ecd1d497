"""cellrelay's sans-IO protocols: the wire protocol (`wire`) and the cell protocol (`cell`).

Nothing here does I/O, reads a clock or imports trio. This package holds what both share:
the error hierarchy with its stable codes, and the one doorway to libsodium (`_crypto`).
See docs/protocol.md for the specification.
"""

from ._errors import (
    CellrelayError,
    CryptoError,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "CellrelayError",
    "CryptoError",
    "ErrorCode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]
