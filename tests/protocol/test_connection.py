"""The sans-IO connection: handshake, transitions, coalescing, rekeying, failing closed."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from cellrelay.protocol.wire._codec import encode_message
from cellrelay.protocol.wire._connection import (
    CLIENT_MESSAGES,
    MAX_PLAINTEXT,
    REKEY_INTERVAL,
    RELAY_MESSAGES,
    TRANSITIONS,
    Connection,
    EncodedMessage,
    HandshakeRefusedError,
    Role,
    State,
    refusal_frame,
)
from cellrelay.protocol.wire._messages import (
    Deliver,
    Goodbye,
    Hello,
    MailboxId,
    Message,
    Ok,
    Ping,
    Pong,
    Publish,
    Welcome,
)
from cellrelay.protocol.wire._noise import KeyPair

from .strategies import messages_of

RELAY_KEY = KeyPair.from_private(bytes(range(32)))
MAILBOX = MailboxId(bytes(16))
WELCOME = Welcome(time_ms=1_700_000_000_000, max_envelope=16384, max_ttl=604800, ping_interval=30)


def state_of(connection: Connection) -> State:
    """Read the state through a call, so the type checker does not narrow it."""
    return connection.state


def pair() -> tuple[Connection, Connection]:
    return Connection(Role.CLIENT, relay_public_key=RELAY_KEY.public), Connection(
        Role.RELAY, static_key=RELAY_KEY
    )


def open_pair() -> tuple[Connection, Connection]:
    client, relay = pair()
    assert relay.receive_data(client.send(Hello())) == [Hello()]
    assert client.receive_data(relay.send(WELCOME)) == [WELCOME]
    return client, relay


def test_handshake_opens_both_ends_with_the_same_hash() -> None:
    client, relay = open_pair()
    assert client.state is State.OPEN
    assert relay.state is State.OPEN
    assert client.handshake_hash == relay.handshake_hash
    assert len(client.handshake_hash) == 64


def test_handshake_hash_is_unavailable_before_the_end() -> None:
    client, relay = pair()
    with pytest.raises(LocalProtocolError):
        _ = client.handshake_hash
    relay.receive_data(client.send(Hello()))
    with pytest.raises(LocalProtocolError):
        _ = relay.handshake_hash


def test_each_connection_has_its_own_hash() -> None:
    first, _ = open_pair()
    second, _ = open_pair()
    assert first.handshake_hash != second.handshake_hash


def test_messages_flow_both_ways() -> None:
    client, relay = open_pair()
    publish = Publish(id=7, mailbox=MAILBOX, expires_at=10, envelope=b"sealed")
    assert relay.receive_data(client.send(publish)) == [publish]
    deliver = Deliver(mailbox=MAILBOX, seq=1, expires_at=10, envelope=b"sealed")
    assert client.receive_data(relay.send(deliver)) == [deliver]


@given(st.lists(st.sampled_from([Ping(id=1), Pong(id=2), Ok(id=3)]), min_size=1, max_size=30))
def test_one_byte_at_a_time_gives_the_same_messages(messages: list[Message]) -> None:
    client, relay = open_pair()
    relay_messages = [m for m in messages if type(m) in RELAY_MESSAGES]
    wire = relay.send_many(relay_messages) if relay_messages else b""
    received = []
    for i in range(len(wire)):
        received += client.receive_data(wire[i : i + 1])
    assert received == relay_messages


def test_coalesced_messages_share_one_frame() -> None:
    client, relay = open_pair()
    delivers = [
        Deliver(mailbox=MAILBOX, seq=i, expires_at=10, envelope=b"e" * 600) for i in range(32)
    ]
    wire = relay.send_many(delivers)
    assert int.from_bytes(wire[:2], "big") == len(wire) - 2  # exactly one frame
    assert client.receive_data(wire) == delivers


def test_coalescing_splits_at_the_frame_limit() -> None:
    client, relay = open_pair()
    delivers = [
        Deliver(mailbox=MAILBOX, seq=i, expires_at=10, envelope=b"e" * 20000) for i in range(7)
    ]
    wire = relay.send_many(delivers)
    frames = 0
    pos = 0
    while pos < len(wire):
        size = int.from_bytes(wire[pos : pos + 2], "big")
        assert size <= MAX_PLAINTEXT + 16
        pos += 2 + size
        frames += 1
    assert frames == 3  # three 20 kB messages fit in one 65,519-byte plaintext
    assert client.receive_data(wire) == delivers


def test_encoded_messages_can_be_sent_to_many_connections() -> None:
    deliver = EncodedMessage.of(Deliver(mailbox=MAILBOX, seq=1, expires_at=10, envelope=b"x"))
    wires = set()
    for _ in range(3):
        client, relay = open_pair()
        wire = relay.send_encoded([deliver])
        wires.add(wire)
        assert client.receive_data(wire) == [
            Deliver(mailbox=MAILBOX, seq=1, expires_at=10, envelope=b"x")
        ]
    assert len(wires) == 3  # different keys, different bytes


def test_oversize_message_is_refused_locally() -> None:
    _, relay = open_pair()
    with pytest.raises(LocalProtocolError):
        relay.send_encoded([EncodedMessage(Deliver, b"x" * (MAX_PLAINTEXT + 1))])
    assert relay.state is State.ERROR


def test_both_sides_rekey_in_step() -> None:
    client, relay = open_pair()
    # Jump both directions' nonces to just before a rekey boundary (as if 65,534 frames
    # had passed), then cross it: the receiver must rekey at the same frame.
    for cipher in (relay._send_cipher, client._receive_cipher):
        assert cipher is not None
        cipher.n = REKEY_INTERVAL - 2
    sent_key = bytes(relay._send_cipher._key)  # type: ignore[union-attr]
    for i in range(4):
        assert client.receive_data(relay.send(Ok(id=i))) == [Ok(id=i)]
    assert bytes(relay._send_cipher._key) != sent_key  # type: ignore[union-attr]


def test_wrong_relay_key_fails_the_handshake() -> None:
    client = Connection(Role.CLIENT, relay_public_key=KeyPair.generate().public)
    relay = Connection(Role.RELAY, static_key=RELAY_KEY)
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(client.send(Hello()))
    assert info.value.code is ErrorCode.HANDSHAKE_FAILED
    assert relay.state is State.ERROR


def test_tampered_transport_frame_is_refused() -> None:
    client, relay = open_pair()
    wire = bytearray(relay.send(Ok(id=1)))
    wire[5] ^= 1
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(bytes(wire))
    assert info.value.code is ErrorCode.DECRYPT_FAILED


def test_replayed_frame_is_refused() -> None:
    client, relay = open_pair()
    wire = relay.send(Ok(id=1))
    client.receive_data(wire)
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(wire)
    assert info.value.code is ErrorCode.DECRYPT_FAILED


def test_client_speaking_before_welcome_is_unexpected() -> None:
    client, relay = pair()
    wire = client.send(Hello())
    relay.receive_data(wire)
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(b"\x00\x40" + b"x" * 64)
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE


def test_handshake_payload_must_be_hello() -> None:
    client, relay = pair()
    handshake = client._handshake
    assert handshake is not None
    body = handshake.write_message(encode_message(Ping(id=1)))
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(len(body).to_bytes(2, "big") + body)
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE


def test_short_handshake_frame_is_bad() -> None:
    _, relay = pair()
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(b"\x00\x10" + b"x" * 16)
    assert info.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("cls", CLIENT_MESSAGES, ids=lambda c: c.TYPE)
def test_relay_refuses_to_send_client_messages(cls: type[Message]) -> None:
    _, relay = open_pair()
    if cls in RELAY_MESSAGES:  # ping/pong go both ways
        return
    with pytest.raises(LocalProtocolError):
        relay.send_encoded([EncodedMessage(cls, b"\x80")])


@given(st.sampled_from(RELAY_MESSAGES).flatmap(messages_of))
def test_client_refuses_relay_messages_from_a_client(message: Message) -> None:
    client, relay = open_pair()
    if type(message) in CLIENT_MESSAGES:
        return
    # Forge a client frame carrying a relay-only message; the relay must refuse it.
    cipher = client._send_cipher
    assert cipher is not None
    body = cipher.encrypt(encode_message(message))
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(len(body).to_bytes(2, "big") + body)
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE


def test_goodbye_then_crossing_messages_then_goodbye() -> None:
    client, relay = open_pair()
    bye = client.send(Goodbye())
    assert client.state is State.CLIENT_DONE
    crossing = relay.send(Ok(id=1))  # sent before the relay saw the goodbye
    assert relay.receive_data(bye) == [Goodbye()]
    assert relay.state is State.CLIENT_DONE
    assert client.receive_data(crossing) == [Ok(id=1)]
    final = relay.send(Goodbye(code=ErrorCode.NORMAL))
    assert client.receive_data(final) == [Goodbye()]
    assert state_of(client) is State.CLOSED
    assert state_of(relay) is State.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send(Ping(id=1))


def test_failed_connection_stays_failed() -> None:
    client, _ = open_pair()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"\x00\x20" + b"z" * 32)
    assert client.state is State.ERROR
    for call in (
        lambda: client.receive_data(b""),
        client.receive_eof,
        lambda: client.send(Ping(id=1)),
    ):
        with pytest.raises(LocalProtocolError):
            call()


def test_eof_mid_frame_is_truncated_and_clean_eof_closes() -> None:
    client, relay = open_pair()
    wire = relay.send(Ok(id=1))
    client.receive_data(wire[:5])
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_eof()
    assert info.value.code is ErrorCode.TRUNCATED
    client, relay = open_pair()
    client.receive_eof()
    assert client.state is State.CLOSED


def test_constructor_requires_the_right_keys() -> None:
    with pytest.raises(LocalProtocolError):
        Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        Connection(Role.RELAY)
    with pytest.raises(LocalProtocolError):
        Connection(Role.RELAY, static_key=RELAY_KEY, relay_public_key=RELAY_KEY.public)


def test_connection_objects_deep_copy_independently() -> None:
    client, relay = open_pair()
    twin = copy.deepcopy(client)
    wire = relay.send(Ok(id=1))
    assert twin.receive_data(wire) == [Ok(id=1)]
    assert client.receive_data(wire) == [Ok(id=1)]


def test_transition_table_has_no_dead_states() -> None:
    reachable = {State.IDLE} | set(TRANSITIONS.values())
    assert reachable == set(State) - {State.ERROR}


def test_farewell_after_a_remote_error_reaches_the_peer() -> None:
    client, relay = open_pair()
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(b"\x00\x20" + b"z" * 32)
    wire = relay.farewell(info.value.code)
    assert client.receive_data(wire) == [Goodbye(code=ErrorCode.DECRYPT_FAILED)]
    assert relay.farewell(ErrorCode.INTERNAL) == b""  # only once


def test_a_relay_refuses_a_failed_handshake_and_the_client_reads_why() -> None:
    """docs/protocol.md §3.2: the refusal is a plaintext goodbye, shorter than any message 2."""
    client, relay = pair()
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(b"\x00\x40" + b"z" * 64)
    assert info.value.code is ErrorCode.HANDSHAKE_FAILED
    refusal = relay.farewell(ErrorCode.HANDSHAKE_FAILED)
    assert refusal == refusal_frame(ErrorCode.HANDSHAKE_FAILED)
    assert refusal == b"\x00\x11" + encode_message(Goodbye(code=ErrorCode.HANDSHAKE_FAILED))
    assert relay.farewell(ErrorCode.HANDSHAKE_FAILED) == b""  # only once
    client.send(Hello())
    with pytest.raises(HandshakeRefusedError) as refused:
        client.receive_data(refusal)
    assert refused.value.code is ErrorCode.HANDSHAKE_FAILED
    assert client.state is State.ERROR


def test_a_client_that_pinned_another_key_is_refused_with_handshake_failed() -> None:
    client = Connection(Role.CLIENT, relay_public_key=KeyPair.generate().public)
    relay = Connection(Role.RELAY, static_key=RELAY_KEY)
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(client.send(Hello()))
    with pytest.raises(HandshakeRefusedError) as refused:
        client.receive_data(relay.farewell(info.value.code))
    assert refused.value.code is ErrorCode.HANDSHAKE_FAILED


def test_a_bad_hello_is_refused_with_its_own_code() -> None:
    client, relay = pair()
    handshake = client._handshake
    assert handshake is not None
    body = handshake.write_message(b"\x82\xa1t\xa5hello\xa1v\x00")  # v = 0
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(len(body).to_bytes(2, "big") + body)
    assert info.value.code is ErrorCode.OUT_OF_RANGE
    client.state = State.HANDSHAKE  # as if it had sent that message itself
    with pytest.raises(HandshakeRefusedError) as refused:
        client.receive_data(relay.farewell(info.value.code))
    assert refused.value.code is ErrorCode.OUT_OF_RANGE


def test_a_short_frame_that_is_no_refusal_is_a_bad_frame() -> None:
    client, _ = pair()
    client.send(Hello())
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(b"\x00\x03" + encode_message(Ping(id=1))[:3])
    assert info.value.code is ErrorCode.BAD_FRAME
    assert not isinstance(info.value, HandshakeRefusedError)


def test_a_client_never_sends_a_refusal() -> None:
    client, _ = pair()
    client.send(Hello())
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"\x00\x40" + b"z" * 64)
    assert client.farewell(ErrorCode.HANDSHAKE_FAILED) == b""


def test_farewell_only_after_failure() -> None:
    client, _ = open_pair()
    with pytest.raises(LocalProtocolError):
        client.farewell(ErrorCode.NORMAL)


def test_handshake_and_transport_frames_in_one_read() -> None:
    """Found by the stateful test: the minimum frame size depends on the frame's place."""
    client, relay = pair()
    relay.receive_data(client.send(Hello()))
    wire = relay.send(WELCOME) + relay.send(Ok(id=0))
    assert client.receive_data(wire) == [WELCOME, Ok(id=0)]


def _frame_of(client: Connection, plaintext: bytes) -> bytes:
    """One transport frame from the client carrying exactly `plaintext` (valid or not)."""
    cipher = client._send_cipher
    assert cipher is not None
    return client._seal_frame(cipher, plaintext)


def test_a_frame_is_handled_whole_and_the_frames_before_it_are_handled() -> None:
    """docs/protocol.md §8.1: a bad message spoils its whole frame, not the frames before it.

    One read brings a good frame, then a frame holding a good ping and a broken message:
    the first frame's message is kept (`received`), the second frame's ping is not.
    """
    client, relay = open_pair()
    good = client.send(Ping(id=1))
    spoiled = _frame_of(client, encode_message(Ping(id=2)) + b"\xc1")
    assert relay.receive_data(good + spoiled) == [Ping(id=1)]
    assert relay.failing
    assert client.receive_data(relay.send(Pong(id=1))) == [Pong(id=1)]  # it may still answer
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(b"")
    assert info.value.code is ErrorCode.MALFORMED
    assert state_of(relay) is State.ERROR


def test_an_illegal_message_spoils_its_frame_even_after_legal_ones() -> None:
    client, relay = open_pair()
    frame = _frame_of(client, encode_message(Ping(id=1)) + encode_message(WELCOME))
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(frame)
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE


def test_decoding_faults_win_over_state_faults_within_a_frame() -> None:
    """Every message of a frame is decoded before any is checked against the state."""
    client, relay = open_pair()
    frame = _frame_of(client, encode_message(WELCOME) + b"\x81\x01\x01")  # then an int key
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(frame)
    assert info.value.code is ErrorCode.WRONG_TYPE


def test_frames_before_a_zero_length_frame_are_handled() -> None:
    client, relay = open_pair()
    assert relay.receive_data(client.send(Ping(id=7)) + b"\x00\x00") == [Ping(id=7)]
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_eof()  # the fault comes first, whichever call is next
    assert info.value.code is ErrorCode.BAD_FRAME


def test_a_transport_frame_cannot_hold_an_empty_plaintext() -> None:
    """A 16-byte frame (a tag, no plaintext) is BAD_FRAME by its length, before decryption."""
    client, relay = open_pair()
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(_frame_of(client, b""))
    assert info.value.code is ErrorCode.BAD_FRAME
