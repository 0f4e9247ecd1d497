"""Member identities: an Ed25519 signing key, an X25519 key and a display name.

docs/protocol.md, Part 2, "Identities". A member is known to others by its `MemberInfo`
(the public half); its id is

    member_id = BLAKE2b(digest_size=16, person="cellrelay-member", data=sign_pub || dh_pub)

so an id cannot be claimed without the keys it names. Pairwise keys between two members are

    KDF(X25519(my_private, their_public), purpose, min(pub_a, pub_b) || max(pub_a, pub_b))

(an all-zero X25519 result, from a low-order public key, is refused), so both ends derive
the same key for each purpose and no two purposes share one.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeAlias

from .._crypto import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SEED_SIZE,
    X25519_KEY_SIZE,
    blake2b,
    ed25519_from_seed,
    ed25519_sign,
    random_bytes,
    x25519,
    x25519_public_from_private,
    zero,
)
from ._binary import Reader, Writer
from ._errors import MalformedError
from ._keys import kdf

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._crypto import Readable

__all__ = [
    "MAX_NAME_BYTES",
    "MEMBER_ID_SIZE",
    "Identity",
    "MemberInfo",
    "Rng",
    "check_name",
    "member_id_of",
]

Rng: TypeAlias = "Callable[[int], bytes]"
"""A source of random bytes: libsodium's CSPRNG by default, pinned in known-answer tests."""

MEMBER_ID_SIZE: Final = 16
# A display name travels in every log entry and in the welcome's member list. 32 bytes of
# UTF-8 (32 Latin letters, about 10 CJK characters) keep a welcome for the largest cell
# (MAX_MEMBERS) inside one default relay envelope (docs/protocol.md, Part 2, "Limits").
MAX_NAME_BYTES: Final = 32
_MEMBER_PERSON: Final = b"cellrelay-member"
_IDENTITY_VERSION: Final = 1
# Characters a terminal or a UI would interpret rather than show: C0/C1 controls (escape
# sequences), format characters (bidirectional overrides that reorder a name), line and
# paragraph separators.
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})


def check_name(name: str) -> bytes:
    """Return `name` as UTF-8 if it is a valid display name.

    Raises:
        ValueError: longer than 32 bytes of UTF-8, or containing control or format characters.
    """
    encoded = name.encode("utf-8", "strict")
    if len(encoded) > MAX_NAME_BYTES:
        raise ValueError(f"a name is at most {MAX_NAME_BYTES} bytes of UTF-8")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in name):
        raise ValueError("a name may not contain control or format characters")
    return encoded


def _read_name(reader: Reader) -> str:
    raw = reader.short(MAX_NAME_BYTES)
    try:
        name = raw.decode("utf-8", "strict")
        check_name(name)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedError("bad name") from exc
    return name


def member_id_of(sign_pub: bytes, dh_pub: bytes) -> bytes:
    """Return the 16-byte member id of a pair of public keys."""
    return blake2b(sign_pub + dh_pub, size=MEMBER_ID_SIZE, person=_MEMBER_PERSON)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberInfo:
    """What other members know of a member: its id, public keys and display name."""

    member_id: bytes
    sign_pub: bytes
    dh_pub: bytes
    name: str
    # The wire form, made once: a saved state writes every member once per epoch it is in,
    # and writing the four fields each time was most of what saving cost (a 100-member cell
    # saves after each message it receives; bench/bench_cells.py).
    _wire: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name.encode("utf-8")
        if len(name) > 255:  # Writer.short's limit; check_name allows far less
            raise ValueError("a member name is at most 255 bytes")
        object.__setattr__(self, "_wire", self.sign_pub + self.dh_pub + bytes([len(name)]) + name)

    def __repr__(self) -> str:
        """Name the member and the start of its id, not its keys (reprs end up in logs)."""
        return f"MemberInfo(name={self.name!r}, member_id={self.member_id[:4].hex()}...)"

    @classmethod
    def create(cls, sign_pub: bytes, dh_pub: bytes, name: str = "") -> MemberInfo:
        """Return the info for these public keys, computing the member id.

        Raises:
            ValueError: a key has the wrong size or the name is not valid.
        """
        if len(sign_pub) != ED25519_PUBLIC_KEY_SIZE or len(dh_pub) != X25519_KEY_SIZE:
            raise ValueError("public keys are 32 bytes each")
        check_name(name)
        return cls(
            member_id=member_id_of(sign_pub, dh_pub), sign_pub=sign_pub, dh_pub=dh_pub, name=name
        )

    def write(self, writer: Writer) -> None:
        """Append sign_pub (32) || dh_pub (32) || name (1-byte length, UTF-8)."""
        writer.raw(self._wire)

    @classmethod
    def read(cls, reader: Reader) -> MemberInfo:
        """Read what `write` wrote; the member id is recomputed from the keys."""
        sign_pub = reader.take(ED25519_PUBLIC_KEY_SIZE)
        dh_pub = reader.take(X25519_KEY_SIZE)
        name = _read_name(reader)
        return cls(
            member_id=member_id_of(sign_pub, dh_pub), sign_pub=sign_pub, dh_pub=dh_pub, name=name
        )

    def to_bytes(self) -> bytes:
        """Return the info's wire form (for invites and join requests)."""
        writer = Writer()
        self.write(writer)
        return writer.bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> MemberInfo:
        """Parse `to_bytes` output.

        Raises:
            MalformedError: not a member info.
        """
        reader = Reader(data)
        info = cls.read(reader)
        reader.end()
        return info


@dataclass(slots=True, eq=False)
class Identity:
    """One person's (or device's) keys: Ed25519 for signing, X25519 for pairwise keys, a name.

    Secret keys live in `bytearray`s that `clear` zeroes. `to_bytes` returns them in the
    clear, for the client's encrypted keystore only.
    """

    sign_pub: bytes = field(repr=False)
    dh_pub: bytes = field(repr=False)
    name: str
    member_id: bytes = field(repr=False)
    _sign_secret: bytearray = field(repr=False)
    _dh_private: bytearray = field(repr=False)

    @classmethod
    def generate(cls, name: str = "", *, rng: Rng = random_bytes) -> Identity:
        """Return a fresh identity from libsodium's CSPRNG (or from `rng`, for tests)."""
        seed = bytearray(rng(ED25519_SEED_SIZE))
        private = bytearray(rng(X25519_KEY_SIZE))
        try:
            return cls.from_seeds(seed, private, name)
        finally:
            zero(seed)
            zero(private)

    @classmethod
    def from_seeds(cls, sign_seed: Readable, dh_private: Readable, name: str = "") -> Identity:
        """Return the identity with this Ed25519 seed and X25519 private key (both 32 bytes).

        Raises:
            ValueError: wrong sizes, or an invalid name.
        """
        check_name(name)
        if len(sign_seed) != ED25519_SEED_SIZE or len(dh_private) != X25519_KEY_SIZE:
            raise ValueError("seeds are 32 bytes each")
        sign_pub, sign_secret = ed25519_from_seed(bytes(sign_seed))
        private = bytearray(dh_private)
        dh_pub = x25519_public_from_private(private)
        return cls(
            sign_pub=sign_pub,
            dh_pub=dh_pub,
            name=name,
            member_id=member_id_of(sign_pub, dh_pub),
            _sign_secret=sign_secret,
            _dh_private=private,
        )

    @property
    def info(self) -> MemberInfo:
        """The public part, as others know it."""
        return MemberInfo(
            member_id=self.member_id, sign_pub=self.sign_pub, dh_pub=self.dh_pub, name=self.name
        )

    def sign(self, message: Readable) -> bytes:
        """Return the Ed25519 signature of `message` by this identity."""
        return ed25519_sign(self._sign_secret, message)

    def pairwise_key(self, peer_dh_pub: bytes, purpose: bytes) -> bytearray:
        """Return the key this member shares with the owner of `peer_dh_pub` for `purpose`.

        Raises:
            CryptoError: the peer's key is low-order (the shared secret would be all zeros).
        """
        shared = x25519(self._dh_private, peer_dh_pub)
        try:
            low, high = sorted((self.dh_pub, peer_dh_pub))
            return kdf(shared, purpose, low + high)
        finally:
            zero(shared)

    def dh(self, public: bytes) -> bytearray:
        """Return X25519(this identity's private key, `public`) (CryptoError if low-order)."""
        return x25519(self._dh_private, public)

    def to_bytes(self) -> bytes:
        """Return version || Ed25519 seed (32) || X25519 private key (32) || name: SECRET."""
        writer = Writer().u8(_IDENTITY_VERSION)
        writer.raw(self._sign_secret[:ED25519_SEED_SIZE]).raw(self._dh_private)
        return writer.short(self.name.encode("utf-8")).bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Identity:
        """Parse `to_bytes` output.

        Raises:
            MalformedError: not a saved identity of this version.
        """
        reader = Reader(data)
        if reader.u8() != _IDENTITY_VERSION:
            raise MalformedError("unknown identity version")
        seed = bytearray(reader.take(ED25519_SEED_SIZE))
        private = bytearray(reader.take(X25519_KEY_SIZE))
        name = _read_name(reader)
        reader.end()
        try:
            return cls.from_seeds(seed, private, name)
        finally:
            zero(seed)
            zero(private)

    def clear(self) -> None:
        """Zero both secret keys; the identity is unusable afterwards."""
        zero(self._sign_secret)
        zero(self._dh_private)
