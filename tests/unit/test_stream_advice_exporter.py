"""The nowcast and advice gauges (`stream.exporter.AdviceCollector`), from hour buckets."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.advice_settings import SpikeSpan, parse_span, parse_targets
from stream.evidence import HourReading, channel_cohorts, evidence_from_hours
from stream.exporter import AdviceCollector, HourBuckets
from stream.kpi import Counters

M = 1_000_000
NOW_HOUR = 493_000


def hours() -> HourBuckets:
    """paid_search at CPA 20, paid_social 25 until the last day and 50 in it, email too small."""
    buckets: dict[int, dict[str, Counters]] = {}
    for hour in range(NOW_HOUR - 8 * 24, NOW_HOUR):
        recent = hour >= NOW_HOUR - 24
        buckets[hour] = {
            "paid_search": Counters(clicks=200, conversions=5, spend_micros=100 * M),
            "paid_social": Counters(
                clicks=250, conversions=2 if recent else 4, spend_micros=90 * M
            ),
            "email": Counters(clicks=20, conversions=hour % 2, spend_micros=1 * M),
        }
    return buckets


def scrape(collector: AdviceCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_nowcast_and_advice_gauges() -> None:
    values = scrape(AdviceCollector(lambda: HourReading(NOW_HOUR, hours())))
    social_24h = (("channel", "paid_social"), ("window", "24h"))
    assert values["adpulse_conversions_nowcast", social_24h] == 48
    assert values["adpulse_cpa_nowcast", social_24h] == 2160 / 48
    assert (
        values["adpulse_conversions_nowcast", (("channel", "paid_search"), ("window", "1h"))] == 5
    )
    shares = {
        labels[0][1]: value
        for (name, labels), value in values.items()
        if name == "adpulse_advice_budget_share"
    }
    total = 2400 + 2160 + 24
    assert shares["paid_social"] == (2160 * 0.8) / total
    assert shares["paid_search"] > 2400 / total
    assert shares["email"] == 24 / total
    assert sum(shares.values()) == pytest.approx(1.0)
    spike = "adpulse_cpa_spike_probability"
    assert values[spike, (("channel", "paid_social"),)] > 0.95
    assert values[spike, (("channel", "paid_search"),)] < 0.1


def test_channels_are_capped_by_spend_and_a_failed_read_gives_no_series() -> None:
    values = scrape(AdviceCollector(lambda: HourReading(NOW_HOUR, hours()), max_channels=1))
    assert {dict(labels)["channel"] for _, labels in values} == {"paid_search"}

    def failing() -> HourReading:
        raise ConnectionError("redis down")

    assert scrape(AdviceCollector(failing)) == {}


def test_coupon_channels_are_judged_on_spend_and_young_hours_are_left_out() -> None:
    buckets = {
        NOW_HOUR - 2: {"influencer": Counters(redemptions=9, conversions=6, spend_micros=60 * M)},
        NOW_HOUR - 1: {"influencer": Counters(redemptions=4, conversions=4, spend_micros=40 * M)},
        NOW_HOUR: {"influencer": Counters(conversions=50, spend_micros=1 * M)},  # still filling
    }
    cohorts = channel_cohorts(buckets, "influencer")
    assert [c.exposure for c in cohorts] == [60.0, 40.0, 1.0]
    (item,) = evidence_from_hours(buckets, NOW_HOUR)
    assert (item.window.seen, item.window.cost, item.expected_conversions) == (10, 100.0, 10.0)
    assert item.baseline is None


def test_figures_the_statistics_cannot_digest_leave_the_gauges_out() -> None:
    broken = {
        NOW_HOUR - hour: {"paid_search": Counters(clicks=10, conversions=-50, spend_micros=M)}
        for hour in range(1, 30)
    }
    assert scrape(AdviceCollector(lambda: HourReading(NOW_HOUR, broken))) == {}


def test_delay_bins_teach_the_lag_and_the_nowcast_adds_the_late_conversions() -> None:
    """Half of each hour's 30 conversions come within 5 minutes of the click, half 4 to 8 hours
    later (bins 0 and 6): the last hour's clicks have shown 15, the nowcast says about 30."""
    buckets: dict[int, dict[str, Counters]] = {}
    delays: dict[int, dict[str, tuple[int, ...]]] = {}
    for hour in range(NOW_HOUR - 14 * 24, NOW_HOUR):
        age = NOW_HOUR - hour
        buckets[hour] = {"paid_search": Counters(clicks=1000, conversions=30, spend_micros=500 * M)}
        late = 15 if age > 8 else 0
        delays[hour] = {"paid_search": (15, 0, 0, 0, 0, 0, late, 0, 0, 0, 0)}
    reading = HourReading(float(NOW_HOUR), buckets, delays)
    values = scrape(AdviceCollector(lambda: reading))
    last_hour = values[
        "adpulse_conversions_nowcast", (("channel", "paid_search"), ("window", "1h"))
    ]
    assert 27 < last_hour < 34
    # Without the delay bins the same hours read as counted: 30 conversions an hour.
    (item,) = evidence_from_hours(buckets, NOW_HOUR, window_hours=1)
    assert item.expected_conversions == 30
    (tracked,) = evidence_from_hours(buckets, NOW_HOUR, window_hours=1, delays=delays)
    assert tracked.window.seen == 15
    # Half come within 5 minutes, linearly: the clicks of the last 5 minutes have shown less.
    assert tracked.window.maturity == pytest.approx(0.5 * (1 - 2.5 / 60), abs=0.01)


def test_a_roas_target_is_read_as_a_cpa_target_and_the_stricter_wins() -> None:
    """paid_search's orders are worth 60 on average: ROAS 2 is a CPA of at most 30."""
    buckets = {
        hour: {
            "paid_search": Counters(
                clicks=200, conversions=5, revenue_micros=300 * M, spend_micros=100 * M
            )
        }
        for hour in range(NOW_HOUR - 48, NOW_HOUR)
    }
    (item,) = evidence_from_hours(buckets, NOW_HOUR, target_roas=parse_targets("2"))
    assert item.target_cpa == pytest.approx(30.0)
    (both,) = evidence_from_hours(
        buckets, NOW_HOUR, target_roas=parse_targets("2"), target_cpa=parse_targets("25")
    )
    assert both.target_cpa == 25.0


def test_counted_and_usual_low_show_conversions_that_stopped() -> None:
    """paid_search's last hour brought no conversion from its 200 clicks where 5 is usual: the
    usual low bound is above the count. paid_social's count is normal: the bound is below it."""
    buckets = {hour: dict(counters) for hour, counters in hours().items()}
    buckets[NOW_HOUR - 1]["paid_search"] = Counters(clicks=200, conversions=0, spend_micros=100 * M)
    values = scrape(AdviceCollector(lambda: HourReading(NOW_HOUR, buckets)))
    search = (("channel", "paid_search"), ("window", "1h"))
    social = (("channel", "paid_social"), ("window", "1h"))
    assert values["adpulse_conversions_counted", search] == 0
    assert values["adpulse_conversions_usual_low", search] >= 1
    assert (
        values["adpulse_conversions_usual_low", social]
        <= values["adpulse_conversions_counted", social]
    )


def test_a_spike_rule_read_in_minutes_sees_a_tripled_cpa_within_minutes() -> None:
    """The dev stack's rule (2 minutes against the hour before): paid_search's cost per click
    triples for the last 2 minutes; email stays the same."""
    now_minute = NOW_HOUR * 60 + 30
    minutes: dict[int, dict[str, Counters]] = {}
    for minute in range(now_minute - 62, now_minute):
        cost = 3 if minute >= now_minute - 2 else 1
        minutes[minute] = {
            "paid_search": Counters(clicks=300, conversions=12, spend_micros=360 * cost * M),
            "email": Counters(clicks=150, conversions=8, spend_micros=8 * M),
        }
    reading = HourReading((now_minute + 0.5) / 60, {}, {}, minutes)
    values = scrape(AdviceCollector(lambda: reading, spike=SpikeSpan(2, 60)))
    spike = "adpulse_cpa_spike_probability"
    assert values[spike, (("channel", "paid_search"),)] > 0.98
    assert values[spike, (("channel", "email"),)] < 0.5


def test_spike_spans_read_in_minutes_are_bounded() -> None:
    assert SpikeSpan(12 * 60, 7 * 24 * 60).hourly
    assert not SpikeSpan(2, 60).hourly
    with pytest.raises(ValueError, match="ADPULSE_SPIKE_WINDOW"):
        SpikeSpan(30, 7 * 24 * 60)
    assert parse_span("2m") == 2
    assert parse_span("7d") == 7 * 24 * 60
    with pytest.raises(ValueError, match="duration"):
        parse_span("12")
