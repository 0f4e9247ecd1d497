"""The relay's metrics: cheap values on the hot path, exposed through `prometheus_client`.

Theory of operation. Every metric lives on the Trio thread, so a value is a plain Python
number with no lock, and an update is one attribute add (`deliveries.inc(n)` counts a
whole fan-out batch in one call). `prometheus_client`'s own metric objects take a lock per
update: measured here, `Counter.inc` cost 0.96 µs against 0.21 µs for ours, and the fan-out
path counts bytes and frames on every send, so a delivery would pay about 1.5 µs more, on
a relay whose whole CPU per delivery under load is about 2 µs (docs/benchmarks.md). So the
values stay ours and `prometheus_client` does the rest: each family is a collector on a
`prometheus_client.CollectorRegistry`, which refuses names that collide (a gauge `x` and
a counter `x_total` are one family to it), and `generate_latest` writes the exposition
text at scrape time from `collect()`. The command to measure it again is in
docs/benchmarks.md ("Metrics").

A `Registry` owns families in registration order; a family has a fixed tuple of label
names and one child per label-value combination. Unlabelled metrics are families with no
label names and a single child, which the registry hands back directly, so the hot path
never looks anything up.

Label values must never come from user data (mailbox ids, addresses): a family refuses more
than `max_label_sets` combinations with `CardinalityError`, so a bug that lets a peer choose a
label value fails loudly instead of growing memory. `RelayMetrics` pre-creates every allowed
value and then caps the family at exactly that many, which makes its label sets closed.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from cellrelay.protocol._errors import ErrorCode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "CONNECTION_LOST",
    "CONTENT_TYPE",
    "DEFAULT_MAX_LABEL_SETS",
    "HANDSHAKE_RESULTS",
    "PREFIX",
    "SEND_QUEUE_BUCKETS",
    "STORE_BATCH_BUCKETS",
    "STORE_COMMIT_BUCKETS",
    "CallbackGauge",
    "CardinalityError",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "Registry",
    "RelayMetrics",
]

# The text format 0.0.4, which every Prometheus reads; `generate_latest` writes it (with
# its default escaping our names, all ASCII, are unchanged).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

# Our largest label set is one value per ErrorCode (38 today). 64 leaves room for growth
# while bounding what a buggy label source can cost to a few kilobytes per family.
DEFAULT_MAX_LABEL_SETS: Final = 64

_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class CardinalityError(ValueError):
    """A family was asked for more label combinations than its cap: a bug in the caller.

    Label values must come from a small closed set (enum names), never from user data.
    """


class Counter:
    """A monotonically increasing count (Prometheus `counter`)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        """Add `amount` (default 1, never negative) to the count."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount

    def _sample(self) -> float:
        return self.value


class Gauge:
    """A value that goes up and down (Prometheus `gauge`)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        """Set the gauge to `value`."""
        self.value = value

    def inc(self, amount: float = 1) -> None:
        """Add `amount` to the gauge."""
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        """Subtract `amount` from the gauge."""
        self.value -= amount

    def _sample(self) -> float:
        return self.value


class CallbackGauge:
    """A gauge whose value is computed by a function at scrape time.

    Until a function is set the gauge has no sample (absent, rather than a made-up zero).
    The function runs on the Trio thread during `Registry.render` and must not block;
    an exception from it propagates out of `render`.
    """

    __slots__ = ("_function",)

    def __init__(self, function: Callable[[], float] | None = None) -> None:
        self._function = function

    def set_function(self, function: Callable[[], float]) -> None:
        """Compute the gauge's value by calling `function` at each scrape from now on."""
        self._function = function

    def _sample(self) -> float | None:
        return None if self._function is None else self._function()


class Histogram:
    """Counts observations into fixed buckets (Prometheus `histogram`).

    `buckets` are the finite upper bounds, strictly increasing; `+Inf` is implied. An
    observation equal to a bound counts in that bound's bucket (`le` means <=).
    """

    __slots__ = ("_bounds", "_counts", "count", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # last slot: above every bound
        self.sum: float = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation (seconds, bytes or a count, per the metric's name)."""
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    def _buckets(self) -> list[tuple[str, float]]:
        """(`le`, cumulative count) per bucket, `+Inf` last, as prometheus_client wants them."""
        bounds = (*self._bounds, math.inf)
        return [
            ("+Inf" if bound == math.inf else repr(bound), count)
            for bound, count in zip(bounds, itertools.accumulate(self._counts), strict=True)
        ]


C = TypeVar("C", Counter, Gauge, CallbackGauge, Histogram)
Kind = Literal["counter", "gauge", "histogram"]


class Family(Generic[C]):
    """One metric name with a fixed tuple of label names and a child per label combination.

    It is also a `prometheus_client` collector: `collect` turns the children's values into
    one metric family at scrape time.
    """

    __slots__ = (
        "_children",
        "_factory",
        "help",
        "kind",
        "label_names",
        "max_label_sets",
        "name",
    )

    def __init__(
        self,
        *,
        name: str,
        help: str,
        kind: Kind,
        label_names: tuple[str, ...],
        factory: Callable[[], C],
        max_label_sets: int,
    ) -> None:
        self.name = name
        self.help = help
        self.kind = kind
        self.label_names = label_names
        self.max_label_sets = max_label_sets
        self._factory: Callable[[], C] = factory
        self._children: dict[tuple[str, ...], C] = {}

    def labels(self, **values: str) -> C:
        """Return the child for these label values, creating it within the cap.

        Raises:
            ValueError: the label names differ from the family's, or a value is not a str.
            CardinalityError: this would be one combination more than `max_label_sets`.
        """
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        try:
            key = tuple(values[n] for n in self.label_names)
        except KeyError:
            raise ValueError(f"{self.name} takes labels {self.label_names}") from None
        child = self._children.get(key)
        if child is None:
            if not all(isinstance(v, str) for v in key):
                raise ValueError(f"{self.name}: label values must be str")
            if len(self._children) >= self.max_label_sets:
                raise CardinalityError(
                    f"{self.name} already has {len(self._children)} label combinations"
                )
            child = self._children[key] = self._factory()
        return child

    def _empty(self) -> Metric:
        labels = list(self.label_names)
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=labels)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.help, labels=labels)
        return HistogramMetricFamily(self.name, self.help, labels=labels)

    def describe(self) -> list[Metric]:
        """The family without samples: how the registry learns its names at registration."""
        return [self._empty()]

    def collect(self) -> Iterator[Metric]:
        """The family with one sample (or histogram) per child, read now."""
        metric = self._empty()
        for key, child in self._children.items():
            if isinstance(child, Histogram):
                assert isinstance(metric, HistogramMetricFamily)  # noqa: S101 - same kind
                metric.add_metric(list(key), child._buckets(), sum_value=child.sum)
                continue
            value = child._sample()
            if value is not None:
                assert isinstance(metric, CounterMetricFamily | GaugeMetricFamily)  # noqa: S101
                metric.add_metric(list(key), float(value))
        yield metric


class Registry:
    """Owns metric families, in registration order, on a `prometheus_client` registry."""

    __slots__ = ("collectors",)

    def __init__(self) -> None:
        # Not prometheus_client's global REGISTRY: a process may hold several relays (tests).
        self.collectors = CollectorRegistry(auto_describe=False)

    def counter(self, name: str, help: str) -> Counter:
        """Register an unlabelled counter; its name must end in `_total`."""
        return self.counter_family(name, help, ()).labels()

    def counter_family(
        self,
        name: str,
        help: str,
        label_names: tuple[str, ...],
        *,
        max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
    ) -> Family[Counter]:
        """Register a counter with labels; its name must end in `_total`."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        return self._add(name, help, "counter", label_names, Counter, max_label_sets)

    def gauge(self, name: str, help: str) -> Gauge:
        """Register an unlabelled gauge."""
        return self.gauge_family(name, help, ()).labels()

    def gauge_family(
        self,
        name: str,
        help: str,
        label_names: tuple[str, ...],
        *,
        max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
    ) -> Family[Gauge]:
        """Register a gauge with labels."""
        return self._add(name, help, "gauge", label_names, Gauge, max_label_sets)

    def callback_gauge(
        self, name: str, help: str, function: Callable[[], float] | None = None
    ) -> CallbackGauge:
        """Register a gauge computed by `function` at scrape time (set it later if None)."""
        family = self._add(name, help, "gauge", (), lambda: CallbackGauge(function), 1)
        return family.labels()

    def histogram(self, name: str, help: str, buckets: Sequence[float]) -> Histogram:
        """Register an unlabelled histogram with fixed finite upper bounds `buckets`."""
        return self.histogram_family(name, help, (), buckets).labels()

    def histogram_family(
        self,
        name: str,
        help: str,
        label_names: tuple[str, ...],
        buckets: Sequence[float],
        *,
        max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
    ) -> Family[Histogram]:
        """Register a histogram with labels; every child shares `buckets`."""
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError(f"{name}: buckets must be finite (+Inf is implied)")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"{name}: buckets must be strictly increasing")
        if "le" in label_names:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        return self._add(
            name, help, "histogram", label_names, lambda: Histogram(bounds), max_label_sets
        )

    def render(self) -> bytes:
        """Return every metric in the Prometheus text format 0.0.4, UTF-8."""
        return generate_latest(self.collectors)

    def _add(
        self,
        name: str,
        help: str,
        kind: Kind,
        label_names: tuple[str, ...],
        factory: Callable[[], C],
        max_label_sets: int,
    ) -> Family[C]:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in label_names:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"{name}: invalid label name {label!r}")
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"{name}: duplicate label name")
        family = Family(
            name=name,
            help=help,
            kind=kind,
            label_names=label_names,
            factory=factory,
            max_label_sets=max_label_sets,
        )
        try:
            self.collectors.register(family)
        except ValueError as exc:  # "Duplicated timeseries in CollectorRegistry: {...}"
            raise ValueError(f"metric {name} collides with one already registered") from exc
        return family


# -- The relay's standard metrics ----------------------------------------------------------

PREFIX: Final = "cellrelay_"

# Group commits on SQLite take ~0.1 ms (no fsync, WAL) to ~10 ms (fsync on a slow disk);
# a second or more means the disk is in trouble. Roughly 1-2.5-5 steps per decade.
STORE_COMMIT_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# Publishes per group commit: powers of two up to the largest batch the hub would form.
STORE_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Bytes waiting in one connection's send queue: from one small frame (1 KiB) to past any
# sane per-connection queue limit (16 MiB), in powers of four.
SEND_QUEUE_BUCKETS: Final = tuple(1024 * 4**i for i in range(8))  # 1 KiB .. 16 MiB

HANDSHAKE_RESULTS: Final = ("ok", "failed", "timeout")
# Drop reasons besides an ErrorCode: the peer vanished (reset, EOF, broken pipe).
CONNECTION_LOST: Final = "connection_lost"
_CODE_LABELS: Final = tuple(code.name.lower() for code in ErrorCode if code is not ErrorCode.NORMAL)


def _close_family(family: Family[Counter], values: Sequence[str]) -> None:
    """Pre-create one child per allowed value, then cap the family at exactly those."""
    (label,) = family.label_names
    family.max_label_sets = len(values)
    for value in values:
        family.labels(**{label: value})


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayMetrics:
    """The relay's standard metrics, created on one registry by `RelayMetrics.create`.

    Label sets are closed: `handshakes` takes result=ok|failed|timeout; `rejections` takes
    reason=<ErrorCode name, lowercase>; `connections_dropped` takes the same or
    "connection_lost". Any other value raises `CardinalityError`. All are pre-created at zero,
    so `rate()` works from the first scrape.

    `send_queue_depth` is a histogram of the bytes waiting in one connection's send queue,
    observed by that connection's writer each time it wakes to drain the queue. The fan-out
    fast path (a direct non-blocking send into an idle connection) observes nothing, so the
    histogram shows how deep queues get when they exist, without a cost per delivery; a
    max-gauge would need a scrape-time reset and lie with more than one scraper.
    """

    connections_open: Gauge
    connections_total: Counter
    handshakes: Family[Counter]
    handshakes_in_progress: Gauge
    mailboxes: CallbackGauge
    stored_bytes: CallbackGauge
    mailboxes_created: Counter
    publishes: Counter
    deliveries: Counter
    bytes_received: Counter
    bytes_sent: Counter
    frames_sent: Counter
    send_queue_depth: Histogram
    subscriptions: Gauge
    rejections: Family[Counter]
    store_commit_seconds: Histogram
    store_batch_size: Histogram
    expired_deleted: Counter
    connections_dropped: Family[Counter]
    storage_full: Gauge
    _rejection_by_code: dict[ErrorCode, Counter] = field(repr=False)

    @classmethod
    def create(cls, registry: Registry) -> RelayMetrics:
        """Register the standard metrics on `registry` and return the holder.

        Set `mailboxes` with `metrics.mailboxes.set_function(...)` once the hub exists.
        """
        r, p = registry, PREFIX
        # Not `cellrelay_connections`: with the counter below it would be one family
        # name (a counter's is its name without `_total`), which Prometheus refuses.
        connections_open = r.gauge(p + "connections_open", "Client connections open now.")
        connections_total = r.counter(p + "connections_total", "Client connections accepted.")
        handshakes = r.counter_family(
            p + "handshakes_total", "Noise handshakes finished, by result.", ("result",)
        )
        handshakes_in_progress = r.gauge(
            p + "handshakes_in_progress", "Noise handshakes started and not yet finished."
        )
        mailboxes = r.callback_gauge(p + "mailboxes", "Mailboxes that exist now.")
        stored_bytes = r.callback_gauge(
            p + "stored_bytes",
            "Envelope bytes stored over all mailboxes (refreshed from the store at each sweep).",
        )
        mailboxes_created = r.counter(p + "mailboxes_created_total", "Mailboxes created.")
        publishes = r.counter(p + "publishes_total", "Envelopes accepted and stored.")
        deliveries = r.counter(
            p + "deliveries_total", "Envelopes handed to subscribed connections."
        )
        bytes_received = r.counter(
            p + "bytes_received_total", "Bytes read from client connections."
        )
        bytes_sent = r.counter(p + "bytes_sent_total", "Bytes written to client connections.")
        frames_sent = r.counter(p + "frames_sent_total", "Transport frames written.")
        send_queue_depth = r.histogram(
            p + "send_queue_bytes",
            "Bytes queued for one connection, observed when its writer drains the queue.",
            SEND_QUEUE_BUCKETS,
        )
        subscriptions = r.gauge(p + "subscriptions", "Mailbox subscriptions active now.")
        rejections = r.counter_family(
            p + "rejections_total",
            "Requests and connections refused, by error code (connections refused before the "
            "handshake get no message, so their code is only counted here).",
            ("reason",),
        )
        store_commit_seconds = r.histogram(
            p + "store_commit_seconds",
            "Time to make one group-commit batch durable.",
            STORE_COMMIT_BUCKETS,
        )
        store_batch_size = r.histogram(
            p + "store_batch_size", "Publishes per group-commit batch.", STORE_BATCH_BUCKETS
        )
        expired_deleted = r.counter(
            p + "expired_deleted_total", "Expired envelopes deleted from storage."
        )
        connections_dropped = r.counter_family(
            p + "connections_dropped_total",
            "Connections ended other than by an orderly goodbye, by reason.",
            ("reason",),
        )
        storage_full = r.gauge(
            p + "storage_full",
            "1 while the relay refuses publishes and creations because its storage is full, else 0.",
        )
        _close_family(handshakes, HANDSHAKE_RESULTS)
        _close_family(rejections, _CODE_LABELS)
        _close_family(connections_dropped, (*_CODE_LABELS, CONNECTION_LOST))
        return cls(
            connections_open=connections_open,
            connections_total=connections_total,
            handshakes=handshakes,
            handshakes_in_progress=handshakes_in_progress,
            mailboxes=mailboxes,
            stored_bytes=stored_bytes,
            mailboxes_created=mailboxes_created,
            publishes=publishes,
            deliveries=deliveries,
            bytes_received=bytes_received,
            bytes_sent=bytes_sent,
            frames_sent=frames_sent,
            send_queue_depth=send_queue_depth,
            subscriptions=subscriptions,
            rejections=rejections,
            store_commit_seconds=store_commit_seconds,
            store_batch_size=store_batch_size,
            expired_deleted=expired_deleted,
            connections_dropped=connections_dropped,
            storage_full=storage_full,
            _rejection_by_code={
                code: rejections.labels(reason=code.name.lower())
                for code in ErrorCode
                if code is not ErrorCode.NORMAL
            },
        )

    def reject(self, code: ErrorCode) -> None:
        """Count one refused request with `code` (a dict lookup, no string work)."""
        self._rejection_by_code[code].inc()

    def drop(self, reason: ErrorCode | Literal["connection_lost"]) -> None:
        """Count one connection ended for `reason`."""
        label = reason if isinstance(reason, str) else reason.name.lower()
        self.connections_dropped.labels(reason=label).inc()
