"""The library's logger: silent until the application configures structlog.

A library must not write to the terminal of the program that uses it unless asked (issue
10: the client guide's three-line blocking example printed `[debug] relay_connected ...`,
because structlog, unconfigured, prints everything on standard output). The client's
modules log through `library_logger`, whose calls do nothing until `structlog.configure`
has been called, by the app or by our own command line (client/_cli.py); from then on
they go through the app's configuration, as any structlog logger would.

Only structlog's configuration counts: an app that uses the standard `logging` module
alone sees nothing from the library until it routes structlog there (docs/client-guide.md,
"Logging").
"""

from __future__ import annotations

import structlog

__all__ = ["LibraryLogger", "library_logger"]


class LibraryLogger:
    """A structlog logger that drops everything while structlog is unconfigured."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"<LibraryLogger {self._name}>"

    def _emit(self, method: str, event: str, fields: dict[str, object]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(self._name), method)(event, **fields)

    def debug(self, event: str, **fields: object) -> None:
        """Log `event` at debug level (if the app configured structlog)."""
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: object) -> None:
        """Log `event` at info level (if the app configured structlog)."""
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        """Log `event` at warning level (if the app configured structlog)."""
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: object) -> None:
        """Log `event` at error level (if the app configured structlog)."""
        self._emit("error", event, fields)


def library_logger(name: str) -> LibraryLogger:
    """The logger a client module uses: `log = library_logger("cellrelay.client")`."""
    return LibraryLogger(name)
