"""Client tests run against a real relay: reuse the relay fixtures."""

from ..relay.conftest import RunningRelay, connect, running_relay

__all__ = ["RunningRelay", "connect", "running_relay"]
