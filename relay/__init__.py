"""The cellrelay relay: a Trio server that stores and forwards sealed, expiring envelopes.

It never decrypts what it forwards: it has no code for the group layer (docs/design.md).
"""

from ._config import ConfigError, RelayConfig, load_config
from ._keys import create_key_file, load_key_file
from ._memory_store import MemoryStore
from ._metrics import Registry, RelayMetrics
from ._server import Relay
from ._sqlite_store import SQLiteStore, open_sqlite_store
from ._store import (
    AppendResult,
    MailboxExistsError,
    MailboxRecord,
    PendingAppend,
    StorageError,
    StorageFullError,
    Store,
    StoredEnvelope,
)

__all__ = [
    "AppendResult",
    "ConfigError",
    "MailboxExistsError",
    "MailboxRecord",
    "MemoryStore",
    "PendingAppend",
    "Registry",
    "Relay",
    "RelayConfig",
    "RelayMetrics",
    "SQLiteStore",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoredEnvelope",
    "create_key_file",
    "load_config",
    "load_key_file",
    "open_sqlite_store",
]
