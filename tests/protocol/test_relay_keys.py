"""Per-relay capability seeds (docs/protocol.md §C5.2): known answers, checked from the spec.

The vectors file `tests/vectors/relay-capability-v1.json` is generated here from pinned
inputs; the test checks each entry with hashlib's BLAKE2b and PyNaCl's Ed25519 directly, so
it holds the spec to the bytes, not the code to itself. Regenerate after a deliberate
change with `CELLRELAY_REGENERATE_VECTORS=1 python -m pytest tests/protocol/test_relay_keys.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Final

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol.cell._keys import PURPOSES, RELAY_CAPABILITY, relay_seed
from cellrelay.protocol.wire import CapabilityKey

VECTORS: Final = Path(__file__).parent.parent / "vectors" / "relay-capability-v1.json"


def _pinned(label: str) -> bytes:
    return hashlib.shake_256(b"cellrelay relay-capability-v1/" + label.encode()).digest(32)


def render() -> str:
    """The vectors file's text: three seeds on two relays, and the public keys they give."""
    cases = []
    for seed_label in ("group read", "group write", "control read"):
        seed = _pinned(seed_label)
        for relay_label in ("relay one", "relay two"):
            relay_key = _pinned(relay_label)
            derived = relay_seed(seed, relay_key)
            cases.append(
                {
                    "seed": seed.hex(),
                    "relay_key": relay_key.hex(),
                    "derived_seed": derived.hex(),
                    "derived_public": CapabilityKey.from_seed(derived).public.hex(),
                }
            )
    note = (
        "derived_seed = BLAKE2b(digest_size=32, key=seed, data='cellrelay/1 relay capability'"
        " || 0x00 || relay_key); derived_public = its Ed25519 public key (RFC 8032 5.1.5)"
    )
    return json.dumps({"note": note, "cases": cases}, indent=2) + "\n"


def test_the_vectors_file_is_what_the_code_generates() -> None:
    rendered = render()
    if os.environ.get("CELLRELAY_REGENERATE_VECTORS"):
        VECTORS.write_text(rendered)
    assert VECTORS.read_text() == rendered


def test_every_vector_holds_by_the_spec_alone() -> None:
    cases = json.loads(VECTORS.read_text())["cases"]
    assert len(cases) == 6
    for case in cases:
        seed, relay_key = bytes.fromhex(case["seed"]), bytes.fromhex(case["relay_key"])
        expected = hashlib.blake2b(
            b"cellrelay/1 relay capability\x00" + relay_key, key=seed, digest_size=32
        ).digest()
        assert case["derived_seed"] == expected.hex()
        public = nacl.signing.SigningKey(expected).verify_key.encode()
        assert case["derived_public"] == public.hex()


def test_the_purpose_is_registered_once() -> None:
    assert PURPOSES.count(RELAY_CAPABILITY) == 1


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_two_relays_never_share_a_key_and_the_seed_itself_is_not_used(
    seed: bytes, relay_key: bytes
) -> None:
    other = bytes([relay_key[0] ^ 1]) + relay_key[1:]
    derived = relay_seed(seed, relay_key)
    assert derived != relay_seed(seed, other)
    assert derived != seed
    assert derived == relay_seed(seed, relay_key)


@pytest.mark.parametrize(("seed", "key"), [(bytes(31), bytes(32)), (bytes(32), bytes(33))])
def test_wrong_sizes_are_refused(seed: bytes, key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        relay_seed(seed, key)
