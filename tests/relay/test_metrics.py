"""Tests for relay/_metrics.py: the exposition read back with prometheus_client's parser."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PrometheusCounter
from prometheus_client import Gauge as PrometheusGauge
from prometheus_client.parser import text_string_to_metric_families

from cellrelay.protocol._errors import ErrorCode
from cellrelay.relay._metrics import (
    DEFAULT_MAX_LABEL_SETS,
    CardinalityError,
    Registry,
    RelayMetrics,
)

if TYPE_CHECKING:
    from collections.abc import Callable

# -- Reading the exposition back with prometheus_client's own parser -----------------------

Labels = frozenset[tuple[str, str]]


@dataclass
class ParsedFamily:
    """One metric family as read back from the text, keyed by the name in its HELP line."""

    help: str | None = None
    type: str | None = None
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


def parse_exposition(data: bytes) -> dict[str, ParsedFamily]:
    """Parse the text with `prometheus_client.parser`, the way a scraper reads it.

    The parser names a counter's family without `_total`; this keys it by the name the
    text gives (`x_total`), as the relay's documentation does.
    """
    families: dict[str, ParsedFamily] = {}
    for metric in text_string_to_metric_families(data.decode("utf-8")):
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        assert name not in families, f"family {name} appears twice"
        family = families[name] = ParsedFamily(help=metric.documentation, type=metric.type)
        for sample in metric.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in family.samples, f"duplicate series {key}"
            family.samples[key] = sample.value
    return families


# -- Registry ------------------------------------------------------------------------------


def test_counter_and_gauge_values_round_trip() -> None:
    registry = Registry()
    deliveries = registry.counter("cellrelay_test_deliveries_total", "Deliveries.")
    depth = registry.gauge("cellrelay_test_depth", "Depth.")
    deliveries.inc()
    deliveries.inc(41)
    depth.set(10)
    depth.inc(2.5)
    depth.dec(0.5)
    parsed = parse_exposition(registry.render())
    counter = parsed["cellrelay_test_deliveries_total"]
    assert (counter.help, counter.type) == ("Deliveries.", "counter")
    assert counter.samples == {("cellrelay_test_deliveries_total", frozenset()): 42}
    gauge = parsed["cellrelay_test_depth"]
    assert gauge.type == "gauge"
    assert gauge.samples == {("cellrelay_test_depth", frozenset()): 12.0}


def test_counter_refuses_to_go_down() -> None:
    counter = Registry().counter("c_total", "C.")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1)
    assert counter.value == 0


def test_special_float_values() -> None:
    registry = Registry()
    values = {"g_nan": math.nan, "g_pinf": math.inf, "g_ninf": -math.inf, "g_small": 1e-5}
    for name, value in values.items():
        registry.gauge(name, name).set(value)
    registry.gauge("g_bool", "A bool slipped in.").set(True)
    parsed = parse_exposition(registry.render())
    assert math.isnan(parsed["g_nan"].samples["g_nan", frozenset()])
    assert parsed["g_pinf"].samples["g_pinf", frozenset()] == math.inf
    assert parsed["g_ninf"].samples["g_ninf", frozenset()] == -math.inf
    assert parsed["g_small"].samples["g_small", frozenset()] == 1e-5
    assert parsed["g_bool"].samples["g_bool", frozenset()] == 1


def test_help_and_label_values_are_escaped() -> None:
    registry = Registry()
    awkward_help = 'Back\\slash, "quotes" and a\nnewline.'
    family = registry.counter_family("esc_total", awkward_help, ("reason",))
    awkward_value = 'a\\b"c\nd \u00e9\u2603 }{,='
    family.labels(reason=awkward_value).inc(3)
    text = registry.render()
    # Each logical line is one physical line: the newlines were escaped.
    assert text.count(b"\n") == 3
    parsed = parse_exposition(text)["esc_total"]
    assert parsed.help == awkward_help
    assert parsed.samples == {("esc_total", frozenset({("reason", awkward_value)})): 3}


def test_labelled_children_are_cached_and_independent() -> None:
    registry = Registry()
    family = registry.counter_family("req_total", "Requests.", ("method", "code"))
    a = family.labels(method="get", code="200")
    assert family.labels(code="200", method="get") is a
    a.inc()
    family.labels(method="get", code="404").inc(2)
    samples = parse_exposition(registry.render())["req_total"].samples
    assert samples == {
        ("req_total", frozenset({("method", "get"), ("code", "200")})): 1,
        ("req_total", frozenset({("method", "get"), ("code", "404")})): 2,
    }


@pytest.mark.parametrize(
    "labels",
    [
        {},
        {"method": "get"},
        {"method": "get", "code": "1", "extra": "x"},
        {"meth": "a", "code": "b"},
    ],
)
def test_labels_must_match_the_family(labels: dict[str, str]) -> None:
    family = Registry().counter_family("req_total", "Requests.", ("method", "code"))
    with pytest.raises(ValueError, match="takes labels"):
        family.labels(**labels)


def test_label_values_must_be_str() -> None:
    family = Registry().counter_family("req_total", "Requests.", ("code",))
    with pytest.raises(ValueError, match="must be str"):
        family.labels(code=200)  # type: ignore[arg-type]


def test_cardinality_cap() -> None:
    registry = Registry()
    family = registry.counter_family("capped_total", "Capped.", ("reason",), max_label_sets=3)
    children = [family.labels(reason=f"r{i}") for i in range(3)]
    with pytest.raises(CardinalityError) as info:
        family.labels(reason="attacker-chosen-value")
    assert "attacker-chosen-value" not in str(info.value)
    # Existing combinations still work after a refusal, and nothing was added.
    assert family.labels(reason="r1") is children[1]
    assert len(parse_exposition(registry.render())["capped_total"].samples) == 3


def test_default_cardinality_cap() -> None:
    family = Registry().gauge_family("g", "G.", ("x",))
    for i in range(DEFAULT_MAX_LABEL_SETS):
        family.labels(x=str(i))
    with pytest.raises(CardinalityError):
        family.labels(x="one-more")


BUCKETS = (0.001, 0.01, 0.1, 1.0)


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=50))
def test_histogram_buckets_are_cumulative(observations: list[float]) -> None:
    registry = Registry()
    histogram = registry.histogram("lat_seconds", "Latency.", BUCKETS)
    for value in observations:
        histogram.observe(value)
    parsed = parse_exposition(registry.render())["lat_seconds"]
    assert parsed.type == "histogram"
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in parsed.samples.items()
        if name == "lat_seconds_bucket"
    }
    assert list(buckets) == ["0.001", "0.01", "0.1", "1.0", "+Inf"]
    for le, count in buckets.items():
        bound = float(le)
        assert count == sum(1 for v in observations if v <= bound)
    assert buckets["+Inf"] == len(observations)
    assert parsed.samples["lat_seconds_count", frozenset()] == len(observations)
    assert parsed.samples["lat_seconds_sum", frozenset()] == pytest.approx(sum(observations))


def test_histogram_value_on_a_bound_counts_in_that_bucket() -> None:
    registry = Registry()
    histogram = registry.histogram("h", "H.", (1, 2))
    histogram.observe(1)
    histogram.observe(2)
    histogram.observe(3)
    samples = parse_exposition(registry.render())["h"].samples
    assert samples["h_bucket", frozenset({("le", "1.0")})] == 1
    assert samples["h_bucket", frozenset({("le", "2.0")})] == 2
    assert samples["h_bucket", frozenset({("le", "+Inf")})] == 3
    assert samples["h_sum", frozenset()] == 6


def test_labelled_histogram_keeps_le_last() -> None:
    registry = Registry()
    family = registry.histogram_family("h_seconds", "H.", ("op",), (0.5,))
    family.labels(op="commit").observe(0.25)
    samples = parse_exposition(registry.render())["h_seconds"].samples
    assert samples["h_seconds_bucket", frozenset({("op", "commit"), ("le", "0.5")})] == 1
    assert samples["h_seconds_bucket", frozenset({("op", "commit"), ("le", "+Inf")})] == 1


def test_callback_gauge_is_computed_at_scrape_time() -> None:
    registry = Registry()
    state = {"mailboxes": 3}
    registry.callback_gauge("mb", "Mailboxes.", lambda: state["mailboxes"])
    assert parse_exposition(registry.render())["mb"].samples == {("mb", frozenset()): 3}
    state["mailboxes"] = 7
    assert parse_exposition(registry.render())["mb"].samples == {("mb", frozenset()): 7}


def test_callback_gauge_without_function_has_no_sample_until_set() -> None:
    registry = Registry()
    gauge = registry.callback_gauge("mb", "Mailboxes.")
    parsed = parse_exposition(registry.render())["mb"]
    assert (parsed.type, parsed.samples) == ("gauge", {})
    gauge.set_function(lambda: 5)
    assert parse_exposition(registry.render())["mb"].samples == {("mb", frozenset()): 5}


def test_callback_exception_propagates() -> None:
    registry = Registry()

    def broken() -> float:
        raise RuntimeError("store gone")

    registry.callback_gauge("mb", "Mailboxes.", broken)
    with pytest.raises(RuntimeError, match="store gone"):
        registry.render()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: r.counter("bad name_total", "x"), "invalid metric name"),
        (lambda r: r.counter("requests", "x"), "must end in _total"),
        (lambda r: r.gauge_family("g", "x", ("__reserved",)), "invalid label name"),
        (lambda r: r.gauge_family("g", "x", ("a-b",)), "invalid label name"),
        (lambda r: r.gauge_family("g", "x", ("a", "a")), "duplicate label"),
        (lambda r: r.histogram("h", "x", ()), "finite"),
        (lambda r: r.histogram("h", "x", (1, math.inf)), "finite"),
        (lambda r: r.histogram("h", "x", (2, 1)), "strictly increasing"),
        (lambda r: r.histogram_family("h", "x", ("le",), (1,)), "reserved"),
    ],
)
def test_registry_refuses_bad_definitions(make: Callable[[Registry], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(Registry())


def test_registry_refuses_colliding_names() -> None:
    registry = Registry()
    registry.histogram("lat", "Latency.", (1,))
    registry.gauge("g", "G.")
    with pytest.raises(ValueError, match="collides"):
        registry.gauge("g", "Again.")
    with pytest.raises(ValueError, match="collides"):
        registry.gauge("lat_count", "Would be ambiguous with the histogram's _count.")


def test_render_follows_registration_order() -> None:
    registry = Registry()
    for name in ("b", "a", "c"):
        registry.gauge(name, name)
    assert list(parse_exposition(registry.render())) == ["b", "a", "c"]


def test_empty_registry_renders_nothing() -> None:
    assert Registry().render() == b""


def test_a_gauge_and_a_counter_of_one_family_name_are_refused() -> None:
    """The clash of issue 10: a gauge `x` and a counter `x_total` are one family to Prometheus.

    prometheus_client's own registry refuses them, and so does ours (it is one).
    """
    theirs = CollectorRegistry()
    PrometheusCounter("cellrelay_connections_total", "Accepted.", registry=theirs)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusGauge("cellrelay_connections", "Open now.", registry=theirs)
    ours = Registry()
    ours.counter("cellrelay_connections_total", "Accepted.")
    with pytest.raises(ValueError, match="collides"):
        ours.gauge("cellrelay_connections", "Open now.")


# -- RelayMetrics --------------------------------------------------------------------------


def test_relay_metrics_follow_naming_conventions() -> None:
    registry = Registry()
    RelayMetrics.create(registry)
    parsed = parse_exposition(registry.render())
    assert len(parsed) == 20
    # The names fit prometheus_client's model too: every family registers on its registry.
    names = {family.name for family in text_string_to_metric_families(registry.render().decode())}
    assert "cellrelay_connections_open" in names
    assert "cellrelay_connections" in names  # the counter cellrelay_connections_total
    for name, fam in parsed.items():
        assert name.startswith("cellrelay_")
        assert fam.help
        assert fam.help.endswith(".")
        assert name.endswith("_total") == (fam.type == "counter"), name
        # Base units only: no milliseconds or kilobytes.
        assert not re.search(r"_(ms|milliseconds|kb|kilobytes|mb)(_|$)", name)


def test_relay_metrics_label_sets_are_closed_and_initialised() -> None:
    registry = Registry()
    metrics = RelayMetrics.create(registry)
    parsed = parse_exposition(registry.render())
    reasons = {dict(labels)["reason"] for _, labels in parsed["cellrelay_rejections_total"].samples}
    assert reasons == {c.name.lower() for c in ErrorCode} - {"normal"}
    assert all(v == 0 for v in parsed["cellrelay_rejections_total"].samples.values())
    results = {dict(lb)["result"] for _, lb in parsed["cellrelay_handshakes_total"].samples}
    assert results == {"ok", "failed", "timeout"}
    dropped = {
        dict(lb)["reason"] for _, lb in parsed["cellrelay_connections_dropped_total"].samples
    }
    assert dropped == reasons | {"connection_lost"}
    for family in (metrics.rejections, metrics.connections_dropped):
        with pytest.raises(CardinalityError):
            family.labels(reason="0123456789abcdef")  # e.g. a mailbox id slipping in
    with pytest.raises(CardinalityError):
        metrics.handshakes.labels(result="maybe")
    with pytest.raises(CardinalityError):
        metrics.drop(ErrorCode.NORMAL)


def test_relay_metrics_record_what_the_relay_counts() -> None:
    registry = Registry()
    metrics = RelayMetrics.create(registry)
    metrics.reject(ErrorCode.RATE_LIMITED)
    metrics.reject(ErrorCode.RATE_LIMITED)
    metrics.rejections.labels(reason="mailbox_full").inc()
    metrics.drop(ErrorCode.SLOW_CONSUMER)
    metrics.drop("connection_lost")
    metrics.handshakes.labels(result="ok").inc()
    metrics.deliveries.inc(1000)
    metrics.connections_open.inc()
    metrics.mailboxes.set_function(lambda: 12)
    metrics.store_commit_seconds.observe(0.0003)
    metrics.store_batch_size.observe(17)
    metrics.send_queue_depth.observe(5000)
    parsed = parse_exposition(registry.render())

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        return parsed[family].samples[sample or family, frozenset(labels.items())]

    assert value("cellrelay_rejections_total", reason="rate_limited") == 2
    assert value("cellrelay_rejections_total", reason="mailbox_full") == 1
    assert value("cellrelay_rejections_total", reason="bad_proof") == 0
    assert value("cellrelay_connections_dropped_total", reason="slow_consumer") == 1
    assert value("cellrelay_connections_dropped_total", reason="connection_lost") == 1
    assert value("cellrelay_handshakes_total", result="ok") == 1
    assert value("cellrelay_deliveries_total") == 1000
    assert value("cellrelay_connections_open") == 1
    assert value("cellrelay_mailboxes") == 12
    commit = "cellrelay_store_commit_seconds"
    assert value(commit, commit + "_bucket", le="0.0001") == 0
    assert value(commit, commit + "_bucket", le="0.0005") == 1
    batch = "cellrelay_store_batch_size"
    assert value(batch, batch + "_bucket", le="16.0") == 0
    assert value(batch, batch + "_bucket", le="32.0") == 1
    queue = "cellrelay_send_queue_bytes"
    assert value(queue, queue + "_bucket", le="4096.0") == 0
    assert value(queue, queue + "_bucket", le="16384.0") == 1


def test_commit_buckets_span_a_tenth_of_a_millisecond_to_a_second() -> None:
    registry = Registry()
    RelayMetrics.create(registry)
    parsed = parse_exposition(registry.render())["cellrelay_store_commit_seconds"]
    bounds = sorted(
        float(dict(labels)["le"]) for name, labels in parsed.samples if name.endswith("_bucket")
    )
    assert bounds[0] == 0.0001
    assert bounds[-2] == 1.0  # the last finite bound; then +Inf
    assert bounds[-1] == math.inf
