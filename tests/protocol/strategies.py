"""Hypothesis strategies that build any valid wire message from its declared field specs."""

from __future__ import annotations

from hypothesis import strategies as st

from cellrelay.protocol.wire._messages import (
    MESSAGE_TYPES,
    FieldSpec,
    Message,
    PageItem,
    field_specs,
)

# Envelopes may be up to 60,000 bytes; drawing such sizes in every example is slow and
# adds nothing that a few hundred bytes do not, except at the bounds, which unit tests pin.
MAX_DRAWN_BYTES = 300


def value_for(spec: FieldSpec) -> st.SearchStrategy[object]:
    """Return a strategy for values that satisfy `spec`."""
    if spec.kind == "uint":
        return st.integers(spec.lo, spec.hi)
    if spec.kind == "bytes":
        return st.binary(min_size=spec.lo, max_size=min(spec.hi, max(spec.lo, MAX_DRAWN_BYTES)))
    if spec.kind == "choice":
        return st.sampled_from(spec.choices)
    if spec.kind == "bool":
        return st.booleans()
    item = st.builds(
        PageItem,
        seq=st.integers(0, 2**64 - 1),
        expires_at=st.integers(0, 2**64 - 1),
        envelope=st.binary(min_size=1, max_size=64),
    )
    return st.lists(item, max_size=5).map(tuple)


def messages_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Return a strategy for valid instances of one message class."""
    kwargs = {name: value_for(spec) for name, spec in field_specs(cls)}
    return st.builds(cls, **kwargs)


ANY_MESSAGE: st.SearchStrategy[Message] = st.one_of(
    [messages_of(cls) for cls in MESSAGE_TYPES.values()]
)
