"""Helpers for daemon tests: daemons in the test's process, on a real relay, and an HTTP client.

`start_daemon` creates an identity (at libsodium's smallest Argon2id cost) and runs
`run_daemon` for it in the test's nursery; the returned `RunningDaemon` talks to it over
its Unix socket (or TCP with the token) with the library's own client, and stops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from cellrelay.client._client import create_identity
from cellrelay.client._daemon import DaemonAddress, run_daemon
from cellrelay.client._daemon_client import DaemonResponse, open_daemon
from cellrelay.client._keystore import TEST_COST
from cellrelay.protocol.wire import RelayAddress

from .conftest import RunningRelay

PASSPHRASE = "passphrase of the daemon tests"
PATIENCE = 30.0  # a loaded 2-core machine; waits end as soon as what they wait for happens


def relay_address(relay: RunningRelay) -> str:
    return str(RelayAddress(host="127.0.0.1", port=relay.port, public_key=relay.public_key))


@dataclass
class RunningDaemon:
    name: str
    home: Path
    address: DaemonAddress
    scope: trio.CancelScope

    @property
    def token(self) -> str:
        return self.address.token_file.read_text().strip()

    async def request(self, method: str, path: str, **kwargs: Any) -> DaemonResponse:  # noqa: ANN401 - DaemonConnection.request's
        """One request over the Unix socket."""
        with trio.fail_after(PATIENCE):
            async with open_daemon(self.address.socket) as daemon:
                return await daemon.request(method, path, **kwargs)

    async def tcp(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "",
        **kwargs: Any,  # noqa: ANN401 - DaemonConnection.request's
    ) -> DaemonResponse:
        """One request over TCP, with the daemon's token unless told otherwise."""
        assert self.address.url is not None
        with trio.fail_after(PATIENCE):
            async with open_daemon(
                url=self.address.url, token=self.token if token == "" else token
            ) as daemon:
                return await daemon.request(method, path, **kwargs)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:  # noqa: ANN401 - JSON
        """A request that must answer `status`; its JSON."""
        response = await self.request(method, path, **kwargs)
        assert response.status == status, (method, path, response.status, response.body)
        return response.json()

    def stop(self) -> None:
        self.scope.cancel()


async def _serve(
    home: Path, listen: tuple[str, int] | None, task_status: trio.TaskStatus[Any]
) -> None:
    async with trio.open_nursery() as inner:
        address = await inner.start(partial(run_daemon, PASSPHRASE, home=home, listen=listen))
        task_status.started((address, inner.cancel_scope))


async def start_daemon(
    nursery: trio.Nursery, tmp_path: Path, name: str, *, tcp: bool = True
) -> RunningDaemon:
    """Create `name`'s identity (first time) and run a daemon for it."""
    home = tmp_path / name
    if not (home / "keystore").exists():
        create_identity(PASSPHRASE, name, home=home, cost=TEST_COST)
    address, scope = await nursery.start(_serve, home, ("127.0.0.1", 0) if tcp else None)
    return RunningDaemon(name=name, home=home, address=address, scope=scope)


async def make_cell(
    lead: RunningDaemon, relay: RunningRelay, name: str = "Eastside", *, channel: bool = False
) -> dict[str, Any]:
    body = {"name": name, "relay": relay_address(relay), "channel": channel}
    cell: dict[str, Any] = await lead.ok("POST", "/cells", 201, json_body=body)
    return cell


async def admit(lead: RunningDaemon, joiner: RunningDaemon, cell: str = "Eastside") -> None:
    """Invite `joiner` into `lead`'s cell through both APIs, and approve it."""
    invite = await lead.ok("POST", f"/cells/{cell}/invites", 201)
    status = await joiner.ok("POST", "/joins", 201, json_body={"link": invite["link"]})
    assert status["joined"] is False
    with trio.fail_after(PATIENCE):
        while True:
            requests = await lead.ok("GET", f"/cells/{cell}/join-requests")
            if requests["requests"]:
                break
            await trio.sleep(0.02)
    await lead.ok("POST", f"/cells/{cell}/join-requests/{joiner.name}/approve")
    joined = await joiner.ok("POST", "/joins", 201, json_body={"link": invite["link"], "wait": 30})
    assert joined["joined"] is True
