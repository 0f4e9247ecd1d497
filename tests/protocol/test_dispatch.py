"""Dispatch seals (docs/protocol.md §C11): who opens one, and what any bytes do to the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol.cell._dispatch import (
    ANSWER_KINDS,
    MAX_RECIPIENTS,
    NotForMeError,
    open_for_dispatch,
    seal_for_dispatch,
)
from cellrelay.protocol.cell._errors import GroupError, MalformedError, TamperedError
from cellrelay.protocol.cell._identity import Identity

POOL = [Identity.from_seeds(bytes([i]) * 32, bytes([i + 100]) * 32, f"m{i}") for i in range(8)]
CELL = bytes(range(16))
SENDER = bytes(range(16, 32))


@given(
    readers=st.sets(st.integers(0, len(POOL) - 1), min_size=1),
    kind=st.sampled_from(sorted(ANSWER_KINDS)),
    plaintext=st.binary(max_size=300),
)
def test_every_reader_opens_it_and_nobody_else(
    readers: set[int], kind: int, plaintext: bytes
) -> None:
    sealed = seal_for_dispatch(
        cell_id=CELL,
        sender_id=SENDER,
        recipients=[POOL[i].info for i in sorted(readers)],
        kind=kind,
        plaintext=plaintext,
    )
    assert len(sealed) == 59 + 48 * len(readers) + 1 + len(plaintext) + 16
    for i, identity in enumerate(POOL):
        if i in readers:
            assert open_for_dispatch(sealed, cell_id=CELL, sender_id=SENDER, me=identity) == (
                kind,
                plaintext,
            )
        else:
            with pytest.raises(NotForMeError):
                open_for_dispatch(sealed, cell_id=CELL, sender_id=SENDER, me=identity)


@given(other=st.binary(min_size=16, max_size=16), which=st.sampled_from(["cell", "sender"]))
def test_a_seal_is_bound_to_its_cell_and_sender(other: bytes, which: str) -> None:
    sealed = seal_for_dispatch(
        cell_id=CELL, sender_id=SENDER, recipients=[POOL[0].info], kind=2, plaintext=b"on my way"
    )
    cell, sender = (other, SENDER) if which == "cell" else (CELL, other)
    if (cell, sender) == (CELL, SENDER):
        return
    # Another member re-posting it as its own, or another cell: no box opens.
    with pytest.raises(NotForMeError):
        open_for_dispatch(sealed, cell_id=cell, sender_id=sender, me=POOL[0])


@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_any_altered_byte_is_refused(position: int, flip: int) -> None:
    sealed = bytearray(
        seal_for_dispatch(
            cell_id=CELL,
            sender_id=SENDER,
            recipients=[POOL[1].info, POOL[2].info],
            kind=3,
            plaintext=b"receipt",
        )
    )
    at = position % len(sealed)
    sealed[at] ^= flip
    if 59 <= at < 59 + 48:  # the other reader's box: this reader's answer is untouched
        assert open_for_dispatch(bytes(sealed), cell_id=CELL, sender_id=SENDER, me=POOL[2]) == (
            3,
            b"receipt",
        )
        return
    with pytest.raises(GroupError):
        open_for_dispatch(bytes(sealed), cell_id=CELL, sender_id=SENDER, me=POOL[2])


@given(data=st.binary(max_size=600))
def test_any_bytes_give_an_answer_or_a_group_error(data: bytes) -> None:
    try:
        kind, _ = open_for_dispatch(data, cell_id=CELL, sender_id=SENDER, me=POOL[0])
    except GroupError:
        return
    assert kind in ANSWER_KINDS  # pragma: no cover - a random string does not authenticate


def test_the_body_is_checked_after_a_box_opens() -> None:
    sealed = bytearray(
        seal_for_dispatch(
            cell_id=CELL, sender_id=SENDER, recipients=[POOL[0].info], kind=2, plaintext=b"x"
        )
    )
    sealed[-1] ^= 1
    with pytest.raises(TamperedError):
        open_for_dispatch(bytes(sealed), cell_id=CELL, sender_id=SENDER, me=POOL[0])


def test_a_count_out_of_range_is_malformed() -> None:
    sealed = bytearray(
        seal_for_dispatch(
            cell_id=CELL, sender_id=SENDER, recipients=[POOL[0].info], kind=2, plaintext=b"x"
        )
    )
    sealed[57:59] = (0).to_bytes(2, "big")
    with pytest.raises(MalformedError):
        open_for_dispatch(bytes(sealed), cell_id=CELL, sender_id=SENDER, me=POOL[0])


def test_only_answers_to_at_most_255_readers_are_sealed() -> None:
    for kind in (1, 4, 17, 19):  # an alert, a message, a step, a seal in a seal
        with pytest.raises(ValueError, match="not an answer"):
            seal_for_dispatch(
                cell_id=CELL, sender_id=SENDER, recipients=[POOL[0].info], kind=kind, plaintext=b""
            )
    for count in (0, MAX_RECIPIENTS + 1):
        with pytest.raises(ValueError, match="recipients"):
            seal_for_dispatch(
                cell_id=CELL, sender_id=SENDER, recipients=[POOL[0].info] * count, kind=2,
                plaintext=b"")  # fmt: skip
