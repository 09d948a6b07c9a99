from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from stream.customers import CohortValue
from stream.exporter import (
    LTV_MONTHS,
    OTHER,
    KpiCollector,
    LtvCollector,
    cap_channels,
    cohort_months,
)
from stream.kpi import WINDOWS, ChannelSnapshot, Comparison, Counters, Snapshot, WindowFigures, kpis

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def figures(counters: Counters) -> WindowFigures:
    return WindowFigures(counters, kpis(counters))


def snapshot(channels: dict[str, Counters]) -> Snapshot:
    return Snapshot(
        NOW,
        {
            name: ChannelSnapshot(
                name,
                totals,
                {
                    window: Comparison(figures(totals), figures(Counters()), figures(Counters()))
                    for window in WINDOWS
                },
            )
            for name, totals in channels.items()
        },
    )


counters = st.builds(
    Counters,
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
)


@given(
    st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), counters, max_size=40),
    st.integers(1, 12),
)
def test_capping_bounds_the_series_and_preserves_totals(
    channels: dict[str, Counters], maximum: int
) -> None:
    capped = cap_channels(snapshot(channels), maximum)
    assert len(capped) <= maximum
    assert len({figure.channel for figure in capped}) == len(capped)
    assert sum((f.totals for f in capped), Counters()) == sum(channels.values(), Counters())
    for window in WINDOWS:
        assert sum((f.windows[window] for f in capped), Counters()) == sum(
            channels.values(), Counters()
        )
    if len(channels) <= maximum:
        assert OTHER not in {f.channel for f in capped} - set(channels)


def test_the_busiest_channels_keep_their_own_series() -> None:
    channels = {f"c{n}": Counters(clicks=n) for n in range(10)}
    capped = cap_channels(snapshot(channels), 4)
    assert [f.channel for f in capped] == ["c9", "c8", "c7", OTHER]
    assert capped[-1].totals.clicks == sum(range(7))


def test_a_zero_denominator_leaves_the_series_out() -> None:
    channels = {
        "email": Counters(
            clicks=100, conversions=4, revenue_micros=200_000_000, spend_micros=50_000_000
        ),
        "organic": Counters(clicks=10),
    }
    registry = CollectorRegistry()
    registry.register(KpiCollector(lambda: snapshot(channels)))
    text = generate_latest(registry).decode()
    assert 'adpulse_cpa{channel="email",window="1h"} 12.5' in text
    assert 'adpulse_roas{channel="email",window="5m"} 4.0' in text
    assert 'adpulse_conversion_rate{channel="organic",window="24h"} 0.0' in text
    assert 'adpulse_cpa{channel="organic"' not in text
    assert 'adpulse_events_total{channel="organic",type="click"} 10.0' in text
    assert 'adpulse_spend_total{channel="email"} 50.0' in text
    assert "adpulse_exporter_redis_up 1.0" in text


def test_a_failing_store_still_answers_the_scrape() -> None:
    def broken() -> Snapshot:
        raise ConnectionError("redis is down")

    registry = CollectorRegistry()
    registry.register(KpiCollector(broken))
    text = generate_latest(registry).decode()
    assert "adpulse_exporter_redis_up 0.0" in text
    assert "adpulse_exporter_scrape_errors_total 1.0" in text
    assert "adpulse_cpa{" not in text


def test_max_channels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KpiCollector(lambda: snapshot({}), max_channels=0)


def test_cohort_months_count_back_across_a_year() -> None:
    months = cohort_months(date(2026, 3, 31))
    assert len(months) == LTV_MONTHS
    assert months[:4] == [202603, 202602, 202601, 202512]
    assert months[-1] == 202504


def ltv_series(collector: LtvCollector) -> dict[tuple[str, str], float]:
    [family] = list(collector.collect())
    assert family.name == "adpulse_ltv"
    return {
        (sample.labels["channel"], sample.labels["horizon"]): sample.value
        for sample in family.samples
    }


def test_the_ltv_gauge_sums_the_cohorts_per_acquisition_channel() -> None:
    m = 1_000_000
    this_month = {
        "paid_search": CohortValue(2, {30: 150 * m, 90: 150 * m, 365: 150 * m}),
        "email": CohortValue(1, {30: 60 * m, 90: 60 * m, 365: 60 * m}),
        "native": CohortValue(0, {30: 5 * m}),  # revenue of a cohort whose customers aged out
    }
    last_month = {"paid_search": CohortValue(1, {30: 30 * m, 90: 90 * m, 365: 90 * m})}
    series = ltv_series(LtvCollector(lambda: [this_month, last_month]))
    assert series == {
        ("paid_search", "30d"): 60.0,
        ("paid_search", "90d"): 80.0,
        ("paid_search", "365d"): 80.0,
        ("email", "30d"): 60.0,
        ("email", "90d"): 60.0,
        ("email", "365d"): 60.0,
    }


def test_the_ltv_gauge_keeps_the_channels_with_most_customers_and_folds_the_rest() -> None:
    cohort = {
        f"c{n}": CohortValue(n, dict.fromkeys((30, 90, 365), n * 10 * 1_000_000))
        for n in range(1, 6)
    }
    series = ltv_series(LtvCollector(lambda: [cohort], max_channels=3))
    assert {channel for channel, _ in series} == {"c5", "c4", OTHER}
    # "other" is c1 + c2 + c3: (10 + 20 + 30) / (1 + 2 + 3) customers.
    assert series[OTHER, "30d"] == 10.0


def test_the_ltv_gauge_is_empty_when_the_cohorts_cannot_be_read() -> None:
    def broken() -> list[dict[str, CohortValue]]:
        raise ConnectionError("redis is down")

    assert ltv_series(LtvCollector(broken)) == {}
    registry = CollectorRegistry()
    registry.register(LtvCollector(lambda: []))
    assert b"# TYPE adpulse_ltv gauge" in generate_latest(registry)
