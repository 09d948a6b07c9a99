"""The worker's operational metrics, on its own /metrics. The alert rules use these names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_SIZES = (1, 10, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
_WRITE_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_FRESHNESS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    """One set of the worker's metrics in `registry` (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_processed = Counter(
            "adpulse_worker_events_processed",
            "Valid events taken from Kafka and written to Redis, by type (a bot's click as "
            "bot_click); duplicates included",
            ["type"],
            registry=registry,
        )
        self.duplicates = Counter(
            "adpulse_worker_duplicates",
            "Events skipped because their event id (or a conversion's order id) was applied",
            registry=registry,
        )
        self.redelivered = Counter(
            "adpulse_worker_redelivered_events",
            "Records Kafka delivered again (after a crash or rebalance) that were applied "
            "already, recognised by their partition's applied offset",
            registry=registry,
        )
        self.late_events = Counter(
            "adpulse_worker_late_events",
            "Events older than the minute buckets kept: counted in hours and totals only",
            registry=registry,
        )
        self.unlisted_events = Counter(
            "adpulse_worker_unlisted_events",
            "Events counted under channel 'unlisted' because Redis holds the most channels "
            "allowed (ADPULSE_WORKER_MAX_CHANNELS)",
            registry=registry,
        )
        self.other_campaign_events = Counter(
            "adpulse_worker_other_campaign_events",
            "Events counted under campaign 'other' in the day and month buckets because their "
            "channel holds the most campaigns allowed in that month (ADPULSE_WORKER_MAX_CAMPAIGNS)",
            registry=registry,
        )
        self.rejected_records = Counter(
            "adpulse_worker_rejected_records",
            "Kafka records that are not a valid event; logged and skipped",
            registry=registry,
        )
        self.click_ids_rejected = Counter(
            "adpulse_worker_click_ids_rejected",
            "Conversions and leads naming no channel whose click id claims to be adpulse-signed "
            "but is not (forged, altered, or signed with another key than ADPULSE_CLICK_KEY or "
            "its _PREVIOUS): attributed to nothing; a redelivered record counts again",
            registry=registry,
        )
        self.batch_size = Histogram(
            "adpulse_worker_batch_size",
            "Kafka records per batch applied to Redis",
            buckets=_BATCH_SIZES,
            registry=registry,
        )
        self.redis_write_seconds = Histogram(
            "adpulse_worker_redis_write_seconds",
            "From sending a batch to Redis to its successful answer (a pipelined batch "
            "includes the wait for the one sent before it)",
            buckets=_WRITE_SECONDS,
            registry=registry,
        )
        self.event_to_counter_seconds = Histogram(
            "adpulse_worker_event_to_counter_seconds",
            "From an event's received_at at the tracker to its batch written to Redis "
            "(the oldest and newest event of each partition in a batch)",
            buckets=_FRESHNESS_SECONDS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "adpulse_worker_consumer_lag",
            "Records in a partition not yet written to Redis (high watermark - position)",
            ["partition"],
            registry=registry,
        )
        self.redis_up = Gauge(
            "adpulse_worker_redis_up",
            "1 while the last Redis write succeeded, 0 while writes are being retried",
            registry=registry,
        )
        self.redis_up.set(1)
