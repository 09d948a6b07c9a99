"""The set of channels is bounded by configuration: known channels, "unlisted", the label of
refusals, and the worker's cap in the reference fold."""

from __future__ import annotations

import argparse
import secrets
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adpulse.cli.simulate.profiles import CHANNEL_NAMES
from adpulse.core.channels import (
    DEFAULT_CHANNEL_RULES,
    DEFAULT_CHANNELS,
    UNATTRIBUTED,
    UNLISTED,
    known_channels,
    parse_channel_list,
    parse_channel_rules,
)
from adpulse.core.event import CLIENT_FIELDS, EventRules, EventType, parse_event
from adpulse.core.options import SettingError
from stream.aggregate import Aggregate
from stream.worker_settings import add_arguments as add_worker_arguments
from stream.worker_settings import settings_from as worker_settings_from
from tests.metrics import Samples
from tests.unit.test_stream_aggregate import make_event
from tracker.app import PIXEL_IGNORED, TrackerApp
from tracker.http import Request
from tracker.metrics import REJECTED_FIELDS, UNKNOWN_FIELD
from tracker.publisher import EventPublisher, PublisherSettings, PublisherState, TopicSpec
from tracker.records import QueryRecords
from tracker.settings import TrackerSettings, add_arguments, settings_from
from tracker.wal import WriteAheadLog

NOW = datetime(2026, 11, 23, 21, 53, 0, 123456, tzinfo=UTC)
KNOWN = EventRules(known_channels=known_channels(DEFAULT_CHANNEL_RULES, ["newsletter_de"]))


def test_the_defaults_know_the_rules_channels_and_the_simulator_s() -> None:
    known = known_channels(DEFAULT_CHANNEL_RULES)
    assert DEFAULT_CHANNEL_RULES.channels <= known
    assert set(CHANNEL_NAMES) <= known, "the simulator's traffic would count as unlisted"
    assert {UNLISTED, UNATTRIBUTED} <= DEFAULT_CHANNELS
    rules = parse_channel_rules("podcasts: source=spotify, defaults")
    assert "podcasts" in known_channels(rules)
    assert "podcasts" not in known


def test_channel_lists_are_slugs() -> None:
    assert parse_channel_list("Newsletter DE, podcasts\nTV-Spots,,") == (
        "newsletter_de",
        "podcasts",
        "tv_spots",
    )
    with pytest.raises(ValueError, match="'a/b'"):
        parse_channel_list("email, a/b")


def parse(channel: str, *, trusted: bool = False, rules: EventRules = KNOWN) -> str | None:
    raw = {"type": "click", "channel": channel}
    return parse_event(raw, rules=rules, received_at=NOW, trusted=trusted).channel


def test_an_unknown_channel_counts_as_unlisted_unless_trusted() -> None:
    assert parse("Paid Search") == "paid_search"
    assert parse("newsletter_de") == "newsletter_de"
    assert parse("c0123456789abcdef") == UNLISTED
    assert parse("c0123456789abcdef", trusted=True) == "c0123456789abcdef"
    assert parse("c0123456789abcdef", rules=EventRules()) == "c0123456789abcdef"
    with pytest.raises(ValueError, match="not a slug"):
        EventRules(known_channels=frozenset({"Paid Search"}))


def test_the_fast_path_leaves_unknown_channels_to_parse_event() -> None:
    records = QueryRecords(KNOWN, ignored=PIXEL_IGNORED, group=DEFAULT_CHANNEL_RULES.group)
    found = records.from_query(b"type=click&channel=newsletter_de&_=1", NOW)
    assert found is not None
    assert b'"channel":"newsletter_de"' in found[2]
    assert records.from_query(b"type=click&channel=c0123456789abcdef", NOW) is None
    assert records.record({"type": "click", "channel": "c0123456789abcdef"}, NOW) is None


def test_settings_list_channels_and_cap_them() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    tracker = settings_from(parser.parse_args([]), {"ADPULSE_CHANNELS": "Newsletter DE"})
    known = tracker.event_rules.known_channels
    assert known is not None
    assert {"newsletter_de", "email"} <= known
    rules = settings_from(parser.parse_args([]), {"ADPULSE_CHANNEL_RULES": "tv: medium=tv"})
    assert rules.event_rules.known_channels is not None
    assert "tv" in rules.event_rules.known_channels

    worker_parser = argparse.ArgumentParser()
    add_worker_arguments(worker_parser)
    args = worker_parser.parse_args([])
    assert worker_settings_from(args, {}).max_channels == 200
    assert worker_settings_from(args, {"ADPULSE_WORKER_MAX_CHANNELS": "12"}).max_channels == 12
    with pytest.raises(SettingError, match="ADPULSE_WORKER_MAX_CHANNELS"):
        worker_settings_from(args, {"ADPULSE_WORKER_MAX_CHANNELS": "0"})


def test_the_reference_fold_keeps_at_most_max_channels() -> None:
    model = Aggregate(max_channels=2, coupons={"SAVE10": "podcast"})
    events = [
        make_event(f"e{n}", EventType.CLICK, NOW - timedelta(minutes=1), channel=channel)
        for n, channel in enumerate(["a", "b", "c", "a", "c", UNLISTED])
    ]
    result = model.apply(events, NOW)
    # The coupon's channel holds one place; "a" takes the other; "b" and "c" are folded.
    assert model.channels == {"podcast", "a"}
    assert result.unlisted == 3
    assert model.counters[model.keys.totals] == {"a:k": 2, f"{UNLISTED}:k": 4}


def app(spool: Path) -> TrackerApp:
    """A tracker app with the default settings (the known channels included), its publisher
    up but never started: what it submits waits in the turn's group, `publisher._turn`."""
    publisher = EventPublisher(
        PublisherSettings("127.0.0.1:9", (TopicSpec("adpulse.events", 8),)),
        WriteAheadLog.open(spool, max_bytes=1 << 24),
    )
    publisher.state = PublisherState.UP
    # No event loop here: the test takes the turn's records itself.
    publisher.schedule_commit = lambda: None
    return TrackerApp(TrackerSettings(), publisher)


def count_rejected_series(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["field"]: count
        for (name, labels), count in samples.items()
        if name == "adpulse_tracker_events_rejected_total"
    }


def scrape_app(tracker: TrackerApp) -> Samples:
    response = tracker(Request("GET", "/metrics", b"", {}, b"", "127.0.0.1"))
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }


def test_random_field_names_count_under_one_label() -> None:
    assert set(EventRules()._field_parsers) == CLIENT_FIELDS
    with tempfile.TemporaryDirectory() as directory:
        tracker = app(Path(directory))
        for _ in range(2000):
            body = orjson.dumps({"type": "click", f"f{secrets.token_hex(8)}": "1"})
            headers = {b"content-type": b"application/json"}
            request = Request("POST", "/v1/events", b"", headers, body, "203.0.113.7")
            assert tracker(request).status == 400
        request = Request("GET", "/p.gif", b"type=click&value=1", {}, b"", "203.0.113.7")
        assert tracker(request).status == 400
        series = count_rejected_series(scrape_app(tracker))
    assert series == {UNKNOWN_FIELD: 2000, "value": 1}
    assert UNKNOWN_FIELD not in REJECTED_FIELDS


def test_unknown_channels_are_sampled_at_a_bounded_rate() -> None:
    with tempfile.TemporaryDirectory() as directory:
        tracker = app(Path(directory))
        for _ in range(500):
            query = f"type=click&channel=c{secrets.token_hex(8)}".encode()
            request = Request("GET", "/p.gif", query, {}, b"", "203.0.113.7")
            assert tracker(request).status == 200
        records = list(tracker.publisher._turn)
        samples = [orjson.loads(r.value) for r in records if r.topic.endswith(".rejected")]
        events = [orjson.loads(r.value) for r in records if not r.topic.endswith(".rejected")]
        metrics = tracker.metrics
    assert len(events) == 500
    assert all(event["channel"] == UNLISTED for event in events)
    # A burst of at most 10, then 10 a second: the loop takes well under a second here.
    assert 10 <= len(samples) <= 20
    assert all(s["field"] == "channel" and s["payload"].startswith("c") for s in samples)
    assert metrics.unlisted_channels == 500
    assert metrics.unlisted_samples_dropped == 500 - len(samples)
