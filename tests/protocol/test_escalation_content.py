"""The escalation contents (docs/protocol.md §C10): the alert's added fields and kind 18."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.cell._content import (
    MAX_ESCALATE_AFTER,
    MAX_ESCALATE_BELOW,
    Alert,
    ContentError,
    ContentKind,
    EscalationNote,
    MessageId,
    Priority,
    Status,
    decode_content,
    escalation_ref,
)

from .content_strategies import contents_of

MID = MessageId(bytes(range(16)))
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BASE = {
    "message_id": MID,
    "sent_at_ms": T0,
    "text": "Agents at 14th & Main, responders needed",
    "priority": "urgent",
    "place": "14th & Main",
    "expires_at": T0 // 1000 + 3600,
}


def code_of(kind: int, fields: dict[str, object]) -> ErrorCode:
    with pytest.raises(ContentError) as info:
        decode_content(kind, msgpack.packb(fields, use_bin_type=True))
    return info.value.code


def test_an_alert_without_the_added_fields_encodes_as_before() -> None:
    """The six-key map of §C1.4: a client that predates escalation reads it unchanged."""
    plain = Alert(**{**BASE, "priority": Priority.URGENT})  # type: ignore[arg-type]
    assert set(msgpack.unpackb(plain.encode())) == set(BASE)
    assert plain.encode() == msgpack.packb(BASE, use_bin_type=True)


def test_the_added_fields_may_be_absent_or_nil() -> None:
    absent = decode_content(ContentKind.ALERT, msgpack.packb(BASE, use_bin_type=True))
    nil = decode_content(
        ContentKind.ALERT,
        msgpack.packb(
            {**BASE, "escalate_below": None, "escalate_after": None, "from_label": None,
             "from_ref": None},
            use_bin_type=True,
        ),
    )  # fmt: skip
    assert absent == nil
    assert isinstance(absent, Alert)
    assert absent.escalate_below is None
    assert absent.from_ref is None


def test_an_escalated_alert_round_trips_and_names_its_origin_by_ref() -> None:
    ref = escalation_ref(MID)
    # Independent of the code under test: hashlib's BLAKE2b with the documented parameters.
    assert ref == hashlib.blake2b(MID, digest_size=16, person=b"cellrelay-escref").digest()
    alert = Alert(**{**BASE, "priority": Priority.URGENT}, escalate_below=3, escalate_after=600,  # type: ignore[arg-type]
                  from_label="Eastside", from_ref=ref)  # fmt: skip
    wire = msgpack.unpackb(alert.encode())
    assert wire["from_label"] == "Eastside"
    assert wire["from_ref"] == ref
    assert decode_content(ContentKind.ALERT, alert.encode()) == alert


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"from_label": "Eastside"}, ErrorCode.MISSING_FIELD),  # a label without its ref
        ({"from_ref": bytes(16)}, ErrorCode.MISSING_FIELD),
        ({"from_label": "East", "from_ref": bytes(15)}, ErrorCode.OUT_OF_RANGE),
        ({"from_label": "East\x1b[31m", "from_ref": bytes(16)}, ErrorCode.OUT_OF_RANGE),
        ({"from_label": "", "from_ref": bytes(16)}, ErrorCode.OUT_OF_RANGE),
        ({"escalate_below": -1}, ErrorCode.OUT_OF_RANGE),
        ({"escalate_below": MAX_ESCALATE_BELOW + 1}, ErrorCode.OUT_OF_RANGE),
        ({"escalate_after": MAX_ESCALATE_AFTER + 1}, ErrorCode.OUT_OF_RANGE),
        ({"escalate_after": True}, ErrorCode.WRONG_TYPE),
        ({"escalate_after": 1.5}, ErrorCode.WRONG_TYPE),
        ({"escalated": 1}, ErrorCode.EXTRA_FIELD),  # only the documented keys may be added
    ],
)
def test_bad_added_fields_are_refused(changes: dict[str, object], code: ErrorCode) -> None:
    assert code_of(ContentKind.ALERT, {**BASE, **changes}) is code


def test_the_original_fields_may_still_not_be_absent() -> None:
    fields = dict(BASE)
    del fields["place"]
    assert code_of(ContentKind.ALERT, fields) is ErrorCode.MISSING_FIELD


def test_known_encoding_of_an_escalation_note() -> None:
    """The example in docs/protocol.md §C10, byte for byte."""
    note = EscalationNote(message_id=MID, sent_at_ms=T0, alert_id=MessageId(bytes(16)),
                          label="Westside", responding=2, on_scene=1, outcome=None)  # fmt: skip
    assert note.encode().hex() == (
        "87"
        "aa6d6573736167655f6964c410000102030405060708090a0b0c0d0e0f"
        "aa73656e745f61745f6d73cf0000019b76daa800"
        "a8616c6572745f6964c41000000000000000000000000000000000"
        "a56c6162656ca85765737473696465"
        "aa726573706f6e64696e6702"
        "a86f6e5f7363656e6501"
        "a76f7574636f6d65c0"
    )
    assert decode_content(ContentKind.ESCALATION, note.encode()) == note


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"outcome": "responding"}, ErrorCode.OUT_OF_RANGE),  # a close, or nothing
        ({"outcome": "closed"}, ErrorCode.OUT_OF_RANGE),
        ({"responding": MAX_ESCALATE_BELOW + 1}, ErrorCode.OUT_OF_RANGE),
        ({"on_scene": -1}, ErrorCode.OUT_OF_RANGE),
        ({"label": None}, ErrorCode.WRONG_TYPE),
        ({"label": "a" * 65}, ErrorCode.TOO_LARGE),
        ({"extra": 1}, ErrorCode.EXTRA_FIELD),
    ],
)
def test_bad_escalation_notes_are_refused(changes: dict[str, object], code: ErrorCode) -> None:
    fields = {"message_id": MID, "sent_at_ms": T0, "alert_id": bytes(16), "label": "W",
              "responding": 0, "on_scene": 0, "outcome": "resolved", **changes}  # fmt: skip
    assert code_of(ContentKind.ESCALATION, fields) is code


def test_an_escalation_note_needs_every_key() -> None:
    """Kind 18 is new: its fields are all required (nil where allowed), none omissible."""
    fields = {"message_id": MID, "sent_at_ms": T0, "alert_id": bytes(16), "label": "W",
              "responding": 0, "on_scene": 0}  # fmt: skip
    assert code_of(ContentKind.ESCALATION, fields) is ErrorCode.MISSING_FIELD


@given(alert=contents_of(Alert), drop=st.sets(st.sampled_from(
    ["escalate_below", "escalate_after", "from_label", "from_ref"])))  # fmt: skip
def test_absent_means_nil(alert: Alert, drop: set[str]) -> None:
    """Removing an added key whose value is nil decodes to the same alert."""
    wire = msgpack.unpackb(alert.encode())
    for name in drop:
        if getattr(alert, name) is None:
            wire.pop(name, None)
            again = decode_content(ContentKind.ALERT, msgpack.packb(wire, use_bin_type=True))
            assert again == alert


@given(note=contents_of(EscalationNote))
def test_escalation_notes_round_trip(note: EscalationNote) -> None:
    assert decode_content(ContentKind.ESCALATION, note.encode()) == note
    assert note.outcome in (None, Status.RESOLVED, Status.FALSE_ALARM)


def test_the_documented_ref() -> None:
    """docs/protocol.md §C10, "Example"."""
    assert escalation_ref(MID).hex() == "3e91ab20148123b13c2cbd105625477b"
    assert len(EscalationNote(message_id=MID, sent_at_ms=T0, alert_id=MessageId(bytes(16)),
                              label="Westside", responding=2, on_scene=1).encode()) == 123  # fmt: skip
