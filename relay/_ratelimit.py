"""Token buckets for publish and creation rates, and a bounded table of them per address.

Time is passed in (`now`, float seconds, any monotonic origin), so the buckets are plain
arithmetic and tests drive them without a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

__all__ = ["AddressBuckets", "TokenBucket"]


class TokenBucket:
    """Allow `rate` events per second on average, with bursts of up to `burst`."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        """Create a full bucket."""
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, count: float = 1.0) -> bool:
        """Take `count` tokens if there are enough and return True; else change nothing."""
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens >= count:
            self._tokens = tokens - count
            return True
        self._tokens = tokens
        return False


# Creation buckets are kept for this many recent source addresses; an address evicted and
# seen again starts with a full bucket, so the bound trades a little precision under a
# flood of many addresses for memory that cannot grow without limit.
MAX_ADDRESSES: Final = 10_000


class AddressBuckets:
    """One `TokenBucket` per source address, least recently used evicted beyond a bound."""

    __slots__ = ("_buckets", "_burst", "_max", "_rate")

    def __init__(self, rate: float, burst: int, max_addresses: int = MAX_ADDRESSES) -> None:
        """Create an empty table."""
        self._rate = rate
        self._burst = burst
        self._max = max_addresses
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, address: str, now: float) -> bool:
        """Take one token from `address`'s bucket."""
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self._rate, self._burst, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket.take(now)
