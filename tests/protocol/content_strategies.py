"""Hypothesis strategies for valid message contents, built from their declared field specs."""

from __future__ import annotations

import typing

from hypothesis import strategies as st

from cellrelay.protocol.cell._content import (
    CONTENT_TYPES,
    Alert,
    Content,
    ContentFieldSpec,
    EscalationNote,
    Status,
    _Content,
    content_field_specs,
)

# Texts may be 2,000 characters; drawing such sizes in every example is slow and adds
# nothing that a few dozen do not, except at the bounds, which unit tests pin.
MAX_DRAWN = 40

# Any character a field may hold: no control characters (category Cc covers C0, DEL and
# C1), no surrogates; line separators (Zl, Zp) only where newlines are allowed.
LINE_CHARS = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))
TEXT_CHARS = st.one_of(
    st.characters(exclude_categories=("Cc", "Cs")), st.sampled_from(["\n", "\t"])
)


def value_for(spec: ContentFieldSpec) -> st.SearchStrategy[object]:
    """Return a strategy for values that satisfy `spec`."""
    base: st.SearchStrategy[object]
    hi = min(spec.hi, max(spec.lo, MAX_DRAWN))
    if spec.kind == "uint":
        base = st.integers(spec.lo, spec.hi)
    elif spec.kind == "bytes":
        base = st.binary(min_size=spec.lo, max_size=hi)
    elif spec.kind == "text":
        base = st.text(TEXT_CHARS, min_size=spec.lo, max_size=hi)
    elif spec.kind == "line":
        base = st.text(LINE_CHARS, min_size=spec.lo, max_size=hi)
    elif spec.kind == "choice":
        assert spec.choices is not None
        base = st.sampled_from(list(spec.choices))
    else:
        ids = st.lists(
            st.binary(min_size=16, max_size=16),
            min_size=spec.lo,
            max_size=min(spec.hi, 5),
            unique=True,
        )
        base = ids.map(tuple)
    return st.one_of(st.none(), base) if spec.optional else base


def _expires_after_sent(fields: dict[str, object]) -> bool:
    expires_at, sent_at_ms = fields["expires_at"], fields["sent_at_ms"]
    assert isinstance(expires_at, int)
    assert isinstance(sent_at_ms, int)
    return expires_at * 1000 > sent_at_ms


def _escalated_both_or_neither(fields: dict[str, object]) -> bool:
    return (fields["from_label"] is None) == (fields["from_ref"] is None)


def _an_outcome(fields: dict[str, object]) -> bool:
    return fields["outcome"] in (None, Status.RESOLVED, Status.FALSE_ALARM)


def contents_of(cls: type[_Content]) -> st.SearchStrategy[Content]:
    """Return a strategy for valid instances of one content class."""
    fields = st.fixed_dictionaries(
        {name: value_for(spec) for name, spec in content_field_specs(cls)}
    )
    if cls is Alert:
        fields = fields.filter(_expires_after_sent).filter(_escalated_both_or_neither)
    if cls is EscalationNote:
        fields = fields.filter(_an_outcome)
    return fields.map(lambda f: typing.cast("Content", cls(**f)))


ANY_CONTENT: st.SearchStrategy[Content] = st.one_of(
    [contents_of(c) for c in CONTENT_TYPES.values()]
)
