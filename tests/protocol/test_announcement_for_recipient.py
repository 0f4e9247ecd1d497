"""`AnnouncementPayload.for_recipient`: a receiver reads its own MAC only (issue 12).

It must accept and refuse exactly the bytes `from_bytes` does, and give the MAC that
`from_bytes` puts at the receiver's index.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol.cell._envelope import MAC_SIZE, AnnouncementPayload
from cellrelay.protocol.cell._errors import MalformedError


def _payloads() -> st.SearchStrategy[bytes]:
    """Well-formed payloads, some cut or lengthened, some with a wrong MAC count."""
    valid = st.builds(
        lambda start, key, macs: AnnouncementPayload(
            start=start, signing_public=key, macs=tuple(macs)
        ).to_bytes(),
        st.integers(0, 2**32 - 1),
        st.binary(min_size=32, max_size=32),
        st.lists(st.binary(min_size=MAC_SIZE, max_size=MAC_SIZE), max_size=40),
    )
    return st.one_of(
        valid,
        st.tuples(valid, st.integers(1, 20)).map(lambda p: p[0][: max(0, len(p[0]) - p[1])]),
        st.tuples(valid, st.binary(min_size=1, max_size=20)).map(lambda p: p[0] + p[1]),
        st.tuples(valid, st.integers(0, 0xFFFF)).map(
            lambda p: p[0][:36] + p[1].to_bytes(2, "big") + p[0][38:]
        ),
        st.binary(max_size=200),
    )


@given(_payloads(), st.integers(-2, 45))
def test_for_recipient_reads_what_from_bytes_reads(data: bytes, index: int) -> None:
    try:
        full = AnnouncementPayload.from_bytes(data)
    except MalformedError:
        with pytest.raises(MalformedError):
            AnnouncementPayload.for_recipient(data, index)
        return
    mine, count = AnnouncementPayload.for_recipient(data, index)
    assert count == len(full.macs)
    assert (mine.start, mine.signing_public) == (full.start, full.signing_public)
    assert mine.macs == ((full.macs[index],) if 0 <= index < count else ())
