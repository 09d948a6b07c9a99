"""The tracker's own metrics, kept as plain integers and rendered on scrape.

prometheus-client's Counter and Histogram take a lock and a label lookup per update; at tens of
thousands of requests a second on one core that is measurable. Here a request costs a few dict
and list updates, and a collector turns them into metric families when Prometheus asks.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from adpulse.core.contract import FORWARDED_FIELDS
from adpulse.core.event import CLIENT_FIELDS
from tracker.publisher import EventPublisher, PublisherState

# What a refusal may name besides an event's own fields: the parts of the request and of the
# event as a whole. Any other name (a client's unknown field) is shown as `UNKNOWN_FIELD`:
# no label value comes from client input.
REQUEST_PARTS: Final = frozenset(
    {"event", "body", "query", "content-type", "authorization", "to", "sig", "origin", "host"}
    | {"ad_click_ids", "bot"}
    # POST /v1/calls's own fields (tracker/calls.py).
    | {"call_id", "tracked_number", "caller", "started_at", "duration_seconds", "answered"}
)
# How GET /v1/number answered: a number of the pool newly leased, renewed for its visitor,
# reused (the pool was exhausted: pool too small), the static number, none, or none because
# Redis failed or is not configured.
NUMBER_OUTCOMES: Final = ("leased", "renewed", "reused", "static", "none", "failed", "disabled")
# Where a call's channel came from: the lease held at its start, the number's pool (no lease
# then), its static registration, or nowhere (an unknown number: "unattributed").
CALL_SOURCES: Final = ("lease", "pool", "static", "unknown")
REJECTED_FIELDS: Final = CLIENT_FIELDS | REQUEST_PARTS | FORWARDED_FIELDS
UNKNOWN_FIELD: Final = "unknown"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class RouteMetrics:
    """A route's requests by status and its latency histogram, bound to the route once so that
    a request finds them without a look-up by name."""

    __slots__ = ("counts", "statuses", "total")

    def __init__(self) -> None:
        self.statuses: defaultdict[int, int] = defaultdict(int)
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        # Nearly every answer takes less than the first bucket: one comparison, not a bisect.
        if seconds <= _FIRST_BUCKET:
            self.counts[0] += 1
        else:
            self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


_FIRST_BUCKET: Final = LATENCY_BUCKETS[0]


class TrackerMetrics:
    def __init__(self) -> None:
        # By route name ("protocol": requests refused before routing, which have no latency).
        self.routes: dict[str, RouteMetrics] = {}
        self.accepted: defaultdict[str, int] = defaultdict(int)
        self.rejected: defaultdict[str, int] = defaultdict(int)
        # Exported at 0 from the start, so that rate() sees the first 503 of each route.
        self.overloaded: defaultdict[str, int] = defaultdict(
            int, dict.fromkeys(("pixel", "click", "events", "spend", "calls"), 0)
        )
        self.unlisted_channels = 0
        self.unlisted_samples_dropped = 0
        self.numbers: dict[str, int] = dict.fromkeys(NUMBER_OUTCOMES, 0)
        self.calls: dict[str, int] = dict.fromkeys(CALL_SOURCES, 0)
        # POST /v1/calls answered 503 as the numbers' Redis did not answer (counted as the
        # route's 202 in `routes`, whose status is known before the answer).
        self.calls_unavailable = 0

    def count_rejected(self, field: str) -> None:
        """One refusal, by the field at fault: one of `REJECTED_FIELDS`, else "unknown"."""
        self.rejected[field if field in REJECTED_FIELDS else UNKNOWN_FIELD] += 1

    def route(self, name: str) -> RouteMetrics:
        """The metrics of the route `name`, made on first use."""
        route = self.routes.get(name)
        if route is None:
            route = self.routes[name] = RouteMetrics()
        return route


class TrackerCollector(Collector):
    def __init__(self, metrics: TrackerMetrics, publisher: EventPublisher) -> None:
        self.metrics = metrics
        self.publisher = publisher

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        requests = CounterMetricFamily(
            "adpulse_tracker_requests", "HTTP requests answered", labels=["route", "status"]
        )
        routes = sorted(metrics.routes.items())
        for name, route in routes:
            for status, count in sorted(route.statuses.items()):
                requests.add_metric([name, str(status)], count)
        yield requests

        latency = HistogramMetricFamily(
            "adpulse_tracker_request_duration_seconds",
            "Time from a request's last byte to its response",
            labels=["route"],
        )
        for name, route in routes:
            if not any(route.counts):
                continue  # bound to a route, never answered yet
            cumulative = 0
            buckets = []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), route.counts, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            latency.add_metric([name], buckets, route.total)
        yield latency

        yield _labelled_counter(
            "adpulse_tracker_events_accepted",
            "Events accepted and queued for Kafka, by type",
            "type",
            metrics.accepted,
        )
        yield _labelled_counter(
            "adpulse_tracker_events_rejected",
            "Requests refused as invalid, by the field at fault",
            "field",
            metrics.rejected,
        )
        yield CounterMetricFamily(
            "adpulse_tracker_unlisted_channel_events",
            "Events whose channel is not a known one, counted under channel 'unlisted'",
            value=metrics.unlisted_channels,
        )
        yield CounterMetricFamily(
            "adpulse_tracker_unlisted_channel_samples_dropped",
            "Unknown channel names not kept on the rejected topic (over the sampling rate)",
            value=metrics.unlisted_samples_dropped,
        )
        yield _labelled_counter(
            "adpulse_tracker_overloaded",
            "Requests answered 503 because the spool or the memory queue was full",
            "route",
            metrics.overloaded,
        )
        yield _labelled_counter(
            "adpulse_tracker_number_requests",
            "GET /v1/number answers by outcome; `reused` means a pool was exhausted and the "
            "oldest lease was taken over (the pool is too small)",
            "outcome",
            metrics.numbers,
        )
        yield _labelled_counter(
            "adpulse_tracker_calls",
            "Calls accepted on POST /v1/calls, by where their channel came from",
            "source",
            metrics.calls,
        )
        yield CounterMetricFamily(
            "adpulse_tracker_calls_unavailable",
            "POST /v1/calls answered 503 because the phone-number registry (Redis, --redis-url) "
            "did not answer in time",
            value=metrics.calls_unavailable,
        )

        stats = self.publisher.stats
        publisher = self.publisher
        yield CounterMetricFamily(
            "adpulse_tracker_produce_errors",
            "Produce batches the broker did not acknowledge",
            value=stats.produce_errors,
        )
        yield CounterMetricFamily(
            "adpulse_tracker_records_sent", "Records acknowledged by Kafka", value=stats.sent
        )
        yield CounterMetricFamily(
            "adpulse_tracker_records_logged",
            "Records written to the spool's write-ahead log before they were answered",
            value=stats.logged,
        )
        yield CounterMetricFamily(
            "adpulse_tracker_records_refused",
            "Records answered 503 because the spool was full or could not be written",
            value=stats.refused,
        )
        yield _labelled_counter(
            "adpulse_tracker_spool_errors",
            "Spool file operations that failed (disk full, I/O error), by operation",
            "operation",
            publisher.spool_errors,
        )
        yield CounterMetricFamily(
            "adpulse_tracker_publisher_task_errors",
            "Unexpected failures of the publisher's flush task, each retried",
            value=stats.task_errors,
        )
        yield CounterMetricFamily(
            "adpulse_tracker_records_replayed",
            "Records replayed from the spool into Kafka",
            value=stats.replayed,
        )
        yield GaugeMetricFamily(
            "adpulse_tracker_spool_records",
            "Records in the spool waiting for the broker (not in flight)",
            value=publisher.backlog,
        )
        yield GaugeMetricFamily(
            "adpulse_tracker_spool_bytes",
            "Bytes in the spool not yet acknowledged by Kafka",
            value=publisher.spool.size_bytes,
        )
        yield GaugeMetricFamily(
            "adpulse_tracker_spool_max_bytes",
            "The disk spool's capacity",
            value=publisher.spool.max_bytes,
        )
        yield GaugeMetricFamily(
            "adpulse_tracker_pending_records",
            "Records in memory waiting for the next produce batch",
            value=publisher.pending,
        )
        yield GaugeMetricFamily(
            "adpulse_tracker_broker_up",
            "1 when records go straight to Kafka, 0 while spooling or replaying",
            value=1 if publisher.state is PublisherState.UP else 0,
        )


def _labelled_counter(
    name: str, documentation: str, label: str, values: dict[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(values.items()):
        family.add_metric([key], count)
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
