"""KPIs, window bucket plans and snapshots (`stream.kpi`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.kpi import (
    Bucket,
    Counters,
    build_snapshot,
    counters_by_channel,
    kpis,
    snapshot_reads,
    window_buckets,
)

D = Decimal
M = 1_000_000
NOW_MINUTE = 29_402_040 + 17  # a minute 17 past an hour
OLDEST = NOW_MINUTE - 8 * 1440


@pytest.mark.parametrize(
    ("counters", "expected"),
    [
        (
            Counters(clicks=200, conversions=4, revenue_micros=300 * M, spend_micros=100 * M),
            (D(25), D("0.5"), D("0.02"), D(3), D(2), D(75)),
        ),
        (Counters(), (None, None, None, None, None, None)),
        (Counters(clicks=10), (None, D(0), D(0), None, None, None)),
        (Counters(spend_micros=5 * M), (None, None, None, D(0), D(-1), None)),
        (
            Counters(conversions=3, revenue_micros=10 * M, spend_micros=1),
            (
                D("3.333333333333333333333333333333333E-7"),
                None,
                None,
                D(10_000_000),
                D(9_999_999),
                D("3.333333333333333333333333333333333"),
            ),
        ),
    ],
)
def test_kpi_table(counters: Counters, expected: tuple[Decimal | None, ...]) -> None:
    figures = kpis(counters)
    got = (
        figures.cpa,
        figures.cpc,
        figures.conversion_rate,
        figures.roas,
        figures.romi,
        figures.aov,
    )
    assert got == expected


def _exact(value: Decimal | None) -> Fraction | None:
    return None if value is None else Fraction(value)


counters_strategy = st.builds(
    Counters,
    clicks=st.integers(0, 10**9),
    redemptions=st.integers(0, 10**9),
    conversions=st.integers(0, 10**9),
    revenue_micros=st.integers(0, 10**18),
    spend_micros=st.integers(0, 10**18),
)


@given(counters_strategy)
def test_kpis_are_none_exactly_on_a_zero_denominator(counters: Counters) -> None:
    figures = kpis(counters)
    assert (figures.cpa is None) == (counters.conversions == 0)
    assert (figures.aov is None) == (counters.conversions == 0)
    assert (figures.cpc is None) == (counters.clicks == 0)
    assert (figures.conversion_rate is None) == (counters.clicks == 0)
    assert (figures.roas is None) == (counters.spend_micros == 0)
    assert (figures.romi is None) == (counters.spend_micros == 0)


@given(counters_strategy)
def test_kpis_agree_with_exact_fractions(counters: Counters) -> None:
    figures = kpis(counters)
    relative = Fraction(1, 10**30)
    checks = [
        (figures.cpa, counters.spend_micros, counters.conversions * M),
        (figures.aov, counters.revenue_micros, counters.conversions * M),
        (figures.roas, counters.revenue_micros, counters.spend_micros),
        (figures.romi, counters.revenue_micros - counters.spend_micros, counters.spend_micros),
    ]
    for value, numerator, denominator in checks:
        if denominator:
            exact = Fraction(numerator, denominator)
            got = _exact(value)
            assert got is not None
            assert abs(got - exact) <= abs(exact) * relative


@given(counters_strategy, counters_strategy)
def test_counters_add_field_by_field(a: Counters, b: Counters) -> None:
    total = a + b
    assert total.clicks == a.clicks + b.clicks
    assert total.spend_micros == a.spend_micros + b.spend_micros
    assert total + Counters() == total


def test_counters_from_a_bucket_hash() -> None:
    fields = {"search:k": "3", "search:v": "1000", "email:c": "1", "junk": "5", "email:zz": "1"}
    assert counters_by_channel(fields) == {
        "search": Counters(clicks=3, revenue_micros=1000),
        "email": Counters(conversions=1),
    }


@pytest.mark.parametrize("length", [1, 5, 60, 61, 1440])
@pytest.mark.parametrize("end", [NOW_MINUTE, NOW_MINUTE - 17, NOW_MINUTE - 18, NOW_MINUTE + 42])
def test_window_buckets_cover_each_minute_once(length: int, end: int) -> None:
    buckets, hourly = window_buckets(end, length, OLDEST)
    assert not hourly
    covered: list[int] = []
    for tier, number in buckets:
        covered += [number] if tier == "m" else list(range(number * 60, number * 60 + 60))
    assert sorted(covered) == list(range(end - length + 1, end + 1))


def test_window_buckets_for_a_day_use_hours() -> None:
    buckets, _ = window_buckets(NOW_MINUTE, 1440, OLDEST)
    assert sum(tier == "h" for tier, _ in buckets) == 23
    assert len(buckets) == 23 + 60  # 42 minutes of the first hour, 18 of the last


def test_window_past_the_minute_retention_reads_whole_hours() -> None:
    buckets, hourly = window_buckets(OLDEST + 2, 5, OLDEST)
    assert hourly
    assert buckets == [("h", hour) for hour in range((OLDEST - 2) // 60, (OLDEST + 2) // 60 + 1)]


def test_snapshot_sums_each_window() -> None:
    taken = datetime(2026, 11, 23, 12, 17, tzinfo=UTC)
    search_click = {"search": Counters(clicks=1)}
    buckets: dict[Bucket, dict[str, Counters]] = {
        ("m", NOW_MINUTE): search_click,
        ("m", NOW_MINUTE - 4): {"search": Counters(clicks=1, spend_micros=2 * M)},
        ("m", NOW_MINUTE - 5): search_click,
        ("m", NOW_MINUTE - 1440): {"search": Counters(conversions=1, spend_micros=M)},
        ("h", NOW_MINUTE // 60 - 2): {"email": Counters(conversions=2)},
    }
    totals = {"search": Counters(clicks=9), "email": Counters(conversions=2)}
    snapshot = build_snapshot(taken, NOW_MINUTE, OLDEST, buckets, totals)
    assert list(snapshot.channels) == ["email", "search"]
    search = snapshot.channels["search"].windows
    assert search["5m"].current.counters == Counters(clicks=2, spend_micros=2 * M)
    assert search["5m"].current.kpis.cpc == 1
    assert search["1h"].current.counters == Counters(clicks=3, spend_micros=2 * M)
    assert search["5m"].day_earlier.kpis.cpa == 1
    assert search["5m"].week_earlier.counters == Counters()
    email = snapshot.channels["email"].windows
    assert email["1h"].current.counters == Counters()
    assert email["24h"].current.counters == Counters(conversions=2)
    assert snapshot.channels["email"].totals == Counters(conversions=2)


def test_snapshot_reads_name_every_window() -> None:
    reads = snapshot_reads(NOW_MINUTE, OLDEST)
    assert len(reads) == 9
    distinct = {bucket for buckets in reads.values() for bucket in buckets}
    assert len(distinct) < 3 * (24 + 60 + 60)


def test_the_funnel_by_hand() -> None:
    # 10 clicks -> 4 leads -> 2 sales for $50; 15 bot clicks beside them, in no KPI.
    counters = Counters(clicks=10, leads=4, conversions=2, spend_micros=50 * M, bot_clicks=15)
    found = kpis(counters)
    assert (found.cpl, found.lead_rate, found.lead_to_sale_rate) == (D("12.5"), D("0.4"), D("0.5"))
    assert (found.cpc, found.conversion_rate, found.bot_share) == (D(5), D("0.2"), D("0.6"))
    assert kpis(Counters(clicks=3)).cpl is None


def test_leads_and_bot_clicks_are_read_from_a_bucket() -> None:
    assert counters_by_channel({"search:l": "4", "search:b": 7, "search:k": 1}) == {
        "search": Counters(clicks=1, leads=4, bot_clicks=7)
    }
