"""Both connection roles driven through random legal and illegal sequences (STYLE.md §6).

Two ends are joined by a wire that delivers any prefix of what was sent. Legal sends
must always be accepted by the other end, whatever was in flight when it was sent;
illegal sends must raise `LocalProtocolError` (tried on a copy, so the run goes on);
whenever the wire is quiet both ends must agree on the state.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cellrelay.protocol._errors import LocalProtocolError
from cellrelay.protocol.wire._connection import OTHER_ROLE, TRANSITIONS, Connection, Role, State
from cellrelay.protocol.wire._messages import Hello, Message, Welcome
from cellrelay.protocol.wire._noise import KeyPair

from .strategies import ANY_MESSAGE

RELAY_KEY = KeyPair.from_private(bytes(range(1, 33)))


class ClientRelayPair(RuleBasedStateMachine):
    """A client and a relay joined by a wire that delivers any prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.ends = {
            Role.CLIENT: Connection(Role.CLIENT, relay_public_key=RELAY_KEY.public),
            Role.RELAY: Connection(Role.RELAY, static_key=RELAY_KEY),
        }
        self.wire = dict.fromkeys(Role, b"")  # sent by that role, not yet received
        self.sent = dict.fromkeys(Role, 0)
        self.received = dict.fromkeys(Role, 0)

    @rule(sender=st.sampled_from(Role), message=ANY_MESSAGE)
    def send(self, sender: Role, message: Message) -> None:
        end = self.ends[sender]
        if (end.state, sender, type(message)) not in TRANSITIONS:
            with pytest.raises(LocalProtocolError):
                copy.deepcopy(end).send(message)
            return
        self.wire[sender] += end.send(message)
        self.sent[sender] += 1

    @rule(sender=st.sampled_from(Role))
    def handshake_step(self, sender: Role) -> None:
        """Hello and Welcome drawn from ANY_MESSAGE are rare; offer them often."""
        welcome = Welcome(time_ms=1, max_envelope=100, max_ttl=60, ping_interval=30)
        self.send(sender, Hello() if sender is Role.CLIENT else welcome)

    @rule(sender=st.sampled_from(Role), data=st.data())
    def deliver_a_prefix(self, sender: Role, data: st.DataObject) -> None:
        cut = data.draw(st.integers(0, len(self.wire[sender])))
        messages = self.ends[OTHER_ROLE[sender]].receive_data(
            self.wire[sender][:cut]
        )  # must not raise
        self.received[sender] += len(messages)
        self.wire[sender] = self.wire[sender][cut:]

    @invariant()
    def quiet_wire_means_same_state(self) -> None:
        if not any(self.wire.values()):
            assert self.ends[Role.CLIENT].state is self.ends[Role.RELAY].state
            assert self.sent == self.received

    @invariant()
    def never_failed(self) -> None:
        assert State.ERROR not in {end.state for end in self.ends.values()}


TestClientRelayPair = ClientRelayPair.TestCase
