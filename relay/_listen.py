"""Opening the relay's TCP listeners, with an error an operator can act on.

`trio.open_tcp_listeners` fails with a bare `OSError` ("Address already in use"), which
does not say which of the relay's listeners failed: with only the ops port taken, the
relay used to report `listen: cannot listen (Address already in use)`, naming the wrong
setting (issue 10). `open_listeners` names the setting and the address.
"""

from __future__ import annotations

import errno
from typing import Final

import trio

from ._config import ConfigError

__all__ = ["open_listeners"]

# What to do about the bind errors an operator meets, by errno.
_BIND_ADVICE: Final = {
    errno.EADDRINUSE: "another program (an older relay?) listens there; find it with "
    "`ss -ltnp 'sport = :{port}'`, or choose another port",
    errno.EACCES: "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address",
}


async def open_listeners(
    setting: str, address: str, host: str, port: int
) -> list[trio.SocketListener]:
    """Open TCP listeners on `host`:`port` for the setting named `setting`.

    Raises:
        ConfigError: binding failed; the message names the setting, the address and what
            to do (an address in use, a privileged port, an address not on this machine).
    """
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        advice = _BIND_ADVICE.get(exc.errno or 0, "check the address")
        raise ConfigError(
            f"{setting}: cannot listen on {address} ({exc.strerror or exc}); "
            + advice.format(port=port)
        ) from None
