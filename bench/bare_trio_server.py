"""A bare Trio TCP echo server: the floor for memory per idle connection in Trio.

Run: `python bench/bare_trio_server.py [--port N]`; it prints the port it listens on
(127.0.0.1) and serves until SIGTERM or SIGINT. Each connection is one task waiting in
`receive_some`, echoing what it gets, which is the least a Trio server can hold per
connection; bench_memory.py compares the relay's memory per idle connection with it.
"""

from __future__ import annotations

import argparse
import resource
import signal
from functools import partial
from typing import Final

import trio

RECEIVE_SIZE: Final = 65_536  # the same order as the relay's reads


async def echo(stream: trio.SocketStream) -> None:
    """Echo whatever arrives until the client leaves."""
    try:
        while data := await stream.receive_some(RECEIVE_SIZE):
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:`port`, print the port, serve until SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, echo, port, host="127.0.0.1"))
            print(listeners[0].socket.getsockname()[1], flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(serve, args.port)


if __name__ == "__main__":
    main()
