"""Fixtures that run a real relay: in-process on loopback, or as a separate process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import trio

from protocol._noise import KeyPair
from relay._config import RelayConfig
from relay._memory_store import MemoryStore
from relay._server import Relay

from ..wire_client import WireClient


@dataclass
class RunningRelay:
    """A relay serving on loopback, with what tests need to reach it."""

    relay: Relay
    port: int
    key: KeyPair

    @property
    def public_key(self) -> bytes:
        return self.key.public


def relay_config(**overrides: object) -> RelayConfig:
    """A config for tests: loopback, free ports, memory store unless told otherwise."""
    settings: dict[str, object] = {
        "listen": ("127.0.0.1:0",),
        "ops_listen": "127.0.0.1:0",
        "store": "memory",
    }
    settings.update(overrides)
    return RelayConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def running_relay(nursery: trio.Nursery) -> RunningRelay:
    """An in-process relay on a MemoryStore, cancelled at the end of the test."""
    key = KeyPair.generate()
    relay = Relay(relay_config(), key=key, store=MemoryStore())
    ports = await nursery.start(relay.serve)
    return RunningRelay(relay=relay, port=ports[0][1], key=key)


@pytest.fixture
async def connect(
    running_relay: RunningRelay,
) -> AsyncIterator[Callable[[], Awaitable[WireClient]]]:
    """Open WireClients to `running_relay`; all are closed when the test ends."""
    opened: list[WireClient] = []

    async def open_client() -> WireClient:
        client = await WireClient.connect(running_relay.port, running_relay.public_key)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.aclose()
