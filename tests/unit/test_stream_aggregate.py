"""Attribution, buckets, the spend split and the reference fold (`stream.aggregate`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.core.channels import UNATTRIBUTED
from adpulse.core.click_ids import ClickKeys, mint
from adpulse.core.event import Event, EventType, partition_key
from stream.aggregate import (
    Aggregate,
    BatchResult,
    SpendRecord,
    attribute,
    epoch_micros,
    hour_of,
    minute_of,
    split_pro_rata,
)
from stream.keys import KeySpace

# Relative to the clock, not fixed: the integration tests replay these streams into a real Redis,
# which expires bucket keys by its own clock.
NOW = datetime.now(UTC).replace(second=30, microsecond=0)
COUPONS = {"SAVE10": "email", "PODCAST": "podcast"}
_AGES = (
    timedelta(0),
    timedelta(minutes=4),
    timedelta(minutes=58),
    timedelta(hours=5),
    timedelta(days=1),
    timedelta(days=7, minutes=3),
    timedelta(days=9),
    timedelta(days=40),
    timedelta(days=1200),
)
_CAMPAIGNS = (None, "black-friday", "spring", "brand\tsearch: exact", "other")
# Signed click ids (`adpulse.core.click_ids`): one carrying a channel of its own and a campaign,
# one a built-in channel, one nothing (a bot's or unattributed click), and a forged one.
CLICK_KEYS: Final = ClickKeys(b"test-click-key-" * 3)
_CLICK_MINUTE: Final = epoch_micros(NOW) // 60_000_000 - 30


def _signed(channel: str, campaign: str) -> str:
    click_id = mint(CLICK_KEYS.current, channel, campaign, _CLICK_MINUTE)
    if click_id is None:
        raise ValueError("too long to carry")
    return click_id


SIGNED_IDS: Final = (
    _signed("search", "spring"),
    _signed("email", ""),
    _signed("", ""),
    _signed("social", "black-friday").replace("adp1.A", "adp1.B", 1),
)


def make_event(event_id: str, kind: EventType, ts: datetime, **fields: object) -> Event:
    return Event(event_id=event_id, type=kind, ts=ts, received_at=ts, **fields)  # type: ignore[arg-type]


_STATUSES: Final = (None, None, "pending", "declined", "refunded")


@st.composite
def event_streams(draw: st.DrawFn, max_events: int = 30) -> list[Event]:
    """A stream as a partition-respecting producer would emit it, with re-sends."""
    events: list[Event] = []
    for index in range(draw(st.integers(0, max_events))):
        kind = draw(
            st.sampled_from(
                ["click", "redemption", "conversion", "spend", "again", "lead", "bot", "call"]
            )
        )
        age = draw(st.sampled_from(_AGES)) + timedelta(seconds=draw(st.integers(0, 3599)))
        ts = NOW - age
        channel = draw(st.sampled_from([None, None, "search", "social"]))
        grouped = draw(st.sampled_from([None, "paid_social", "email"]))
        if kind == "again" and events:
            earlier = draw(st.sampled_from(events))
            if earlier.type in (EventType.CONVERSION, EventType.LEAD) and draw(st.booleans()):
                # The shop's postback (the CRM's lead) again, under a new event id: same order
                # (lead), same click; perhaps restating the order (another status, another
                # value, another time).
                earlier = _replace(earlier, event_id=f"e{index}")
                if earlier.order_id is not None and draw(st.booleans()):
                    earlier = _replace(
                        earlier,
                        ts=ts,
                        received_at=ts,
                        status=draw(st.sampled_from(_STATUSES)),
                        value_micros=draw(st.sampled_from([None, 0, 1, 10**15])),
                    )
            events.append(earlier)
        elif kind == "lead":
            events.append(
                make_event(
                    f"e{index}",
                    EventType.LEAD,
                    ts,
                    channel=channel,
                    grouped_channel=grouped,
                    click_id=draw(st.sampled_from([None, "k1", "k2", "k4", *SIGNED_IDS])),
                    coupon=draw(st.sampled_from([None, "SAVE10", "UNKNOWN"])),
                    lead_id=f"L{index}" if draw(st.booleans()) else None,
                    campaign=draw(st.sampled_from(_CAMPAIGNS)),
                )
            )
        elif kind == "bot":
            # A crawler following a link: counted apart, registers no click id.
            events.append(
                make_event(
                    f"e{index}",
                    EventType.CLICK,
                    ts,
                    channel=channel,
                    grouped_channel=grouped,
                    click_id=draw(st.sampled_from([None, "k1", "k5"])),
                    campaign=draw(st.sampled_from(_CAMPAIGNS)),
                    bot=True,
                )
            )
        elif kind == "click":
            click_id = draw(st.sampled_from([None, "k1", "k2", "k3", *SIGNED_IDS]))
            campaign = draw(st.sampled_from(_CAMPAIGNS))
            events.append(
                make_event(
                    f"e{index}",
                    EventType.CLICK,
                    ts,
                    channel=channel,
                    grouped_channel=grouped,
                    click_id=click_id,
                    campaign=campaign,
                )
            )
        elif kind == "call":
            # As the tracker's webhook writes it: a caller hash (or none: withheld), answered,
            # and qualified only if answered.
            answered = draw(st.booleans())
            events.append(
                make_event(
                    f"e{index}",
                    EventType.CALL,
                    ts,
                    channel=channel,
                    grouped_channel=grouped,
                    campaign=draw(st.sampled_from(_CAMPAIGNS)),
                    click_id=draw(st.sampled_from([None, "k1"])),
                    tracked_number="+14155550101",
                    caller=draw(st.sampled_from([None, "h1", "h2"])),
                    answered=answered,
                    qualified=answered and draw(st.booleans()),
                )
            )
        elif kind in ("redemption", "conversion"):
            is_conversion = kind == "conversion"
            click_id = (
                draw(st.sampled_from([None, "k1", "k2", "k4", *SIGNED_IDS]))
                if is_conversion
                else None
            )
            coupon = (
                draw(st.sampled_from([None, "SAVE10", "PODCAST", "UNKNOWN"]))
                if is_conversion
                else draw(st.sampled_from(["SAVE10", "PODCAST", "UNKNOWN"]))
            )
            order_id = f"o{index}" if is_conversion and draw(st.booleans()) else None
            # A customer's conversions share a Kafka key here (the same click, or order), so
            # that no interleaving of partitions changes who acquired them.
            customer_id = None
            if is_conversion and draw(st.booleans()):
                customer_id = f"u-{click_id or order_id or index}"
            events.append(
                make_event(
                    f"e{index}",
                    EventType.CONVERSION if is_conversion else EventType.REDEMPTION,
                    ts,
                    channel=channel,
                    grouped_channel=grouped,
                    click_id=click_id,
                    coupon=coupon,
                    order_id=order_id,
                    campaign=draw(st.sampled_from(_CAMPAIGNS)),
                    value_micros=draw(st.integers(0, 10**15)) if is_conversion else None,
                    status=draw(st.sampled_from(_STATUSES)) if is_conversion else None,
                    customer_id=customer_id,
                )
            )
        elif kind == "spend":
            start = ts.replace(microsecond=draw(st.integers(0, 999_999)))
            length = draw(st.sampled_from([1, 59, 61, 3600, 90_000])) * 1_000_000
            length += draw(st.integers(0, 999_999))
            events.append(
                make_event(
                    draw(st.sampled_from(["s1", "s2", "s3"])),
                    EventType.SPEND,
                    ts,
                    channel=channel or "search",
                    campaign=draw(st.sampled_from(_CAMPAIGNS)),
                    cost_micros=draw(st.integers(0, 10**15)),
                    start=start,
                    end=start + timedelta(microseconds=length),
                )
            )
    return events


def _replace(event: Event, **changes: object) -> Event:
    fields = {name: getattr(event, name) for name in Event.__dataclass_fields__}
    fields.update(changes)
    return Event(**fields)


def fold(batches: Sequence[Sequence[Event]]) -> tuple[Aggregate, BatchResult]:
    aggregate = Aggregate(coupons=dict(COUPONS))
    total = BatchResult()
    for batch in batches:
        total += aggregate.apply(batch, NOW)
    return aggregate, total


def interleave(events: Sequence[Event], rng: random.Random) -> list[Event]:
    """Another order a consumer could see: partitions keep their order, nothing else does."""
    queues: dict[bytes, list[Event]] = {}
    for event in events:
        queues.setdefault(partition_key(event), []).append(event)
    lanes = [queue[::-1] for queue in queues.values()]
    mixed: list[Event] = []
    while lanes:
        lane = rng.choice(lanes)
        mixed.append(lane.pop())
        if not lane:
            lanes.remove(lane)
    return mixed


# -- attribution --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields", "expected"),
    [
        (EventType.CONVERSION, {"channel": "tv", "click_id": "k1", "coupon": "SAVE10"}, "tv"),
        (EventType.CONVERSION, {"click_id": "k1", "coupon": "SAVE10"}, "search"),
        (EventType.CONVERSION, {"click_id": "k9", "coupon": "SAVE10"}, "email"),
        (EventType.CONVERSION, {"click_id": "k9", "grouped_channel": "social"}, "social"),
        (EventType.CONVERSION, {"coupon": "NOPE", "grouped_channel": "social"}, "social"),
        (EventType.REDEMPTION, {"click_id": "k1", "coupon": "SAVE10"}, "email"),
        (EventType.REDEMPTION, {"coupon": "NOPE"}, UNATTRIBUTED),
        (EventType.CLICK, {"coupon": "SAVE10"}, UNATTRIBUTED),
        (EventType.CLICK, {"grouped_channel": "paid_search"}, "paid_search"),
    ],
)
def test_attribution_order(kind: EventType, fields: dict[str, str], expected: str) -> None:
    event = make_event("e", kind, NOW, **fields)
    assert attribute(event, {"k1": "search"}, COUPONS) == expected


# -- buckets and the split ----------------------------------------------------------------------


def test_buckets() -> None:
    moment = datetime(2026, 11, 23, 21, 53, 59, 999_999, tzinfo=UTC)
    assert minute_of(moment) * 60 == int(moment.replace(second=0, microsecond=0).timestamp())
    assert minute_of(moment + timedelta(microseconds=1)) == minute_of(moment) + 1
    assert hour_of(minute_of(moment)) * 3600 == int(moment.replace(minute=0, second=0).timestamp())
    assert epoch_micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (10, [1, 1, 1], [4, 3, 3]),
        (2, [1, 1, 1], [1, 1, 0]),
        (0, [5, 7], [0, 0]),
        (100, [1, 0, 3], [25, 0, 75]),
        (7, [2, 3], [3, 4]),
    ],
)
def test_split_table(total: int, weights: list[int], expected: list[int]) -> None:
    assert split_pro_rata(total, weights) == expected


def test_split_refuses_bad_weights() -> None:
    with pytest.raises(ValueError, match="weights"):
        split_pro_rata(5, [0, 0])
    with pytest.raises(ValueError, match="weights"):
        split_pro_rata(5, [3, -1])


@given(st.integers(0, 10**18), st.lists(st.integers(0, 10**12), min_size=1, max_size=50))
def test_split_is_exact_and_fair(total: int, weights: list[int]) -> None:
    if sum(weights) == 0:
        weights[0] = 1
    parts = split_pro_rata(total, weights)
    assert sum(parts) == total
    for part, weight in zip(parts, weights, strict=True):
        share = Fraction(total * weight, sum(weights))
        assert share - 1 < part < share + 1


@given(
    st.integers(0, 10**15),
    st.integers(1_700_000_000_000_000, 1_800_000_000_000_000),
    st.integers(1, 3 * 86_400_000_000),
)
def test_spend_parts_cover_the_range(cost: int, start: int, length: int) -> None:
    record = SpendRecord("search", start, start + length, cost)
    parts = record.minute_parts()
    assert sum(micros for _, micros in parts) == cost
    assert parts[0][0] == start // 60_000_000
    assert parts[-1][0] == (start + length - 1) // 60_000_000
    assert SpendRecord.decode(record.encode()) == record


def test_spend_split_is_pro_rata() -> None:
    # 90 seconds from 30 s past a minute: half of it in the first minute, half in the second.
    start = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)
    event = make_event(
        "s",
        EventType.SPEND,
        start,
        channel="search",
        cost_micros=3,
        start=start,
        end=start + timedelta(seconds=60),
    )
    record = SpendRecord.from_event(event)
    assert [micros for _, micros in record.minute_parts()] == [2, 1]


# -- the fold -----------------------------------------------------------------------------------


def test_fold_table() -> None:
    keys = KeySpace()
    minute = minute_of(NOW)
    stream = [
        make_event("c1", EventType.CLICK, NOW, channel="search", click_id="k1"),
        make_event(
            "v1", EventType.CONVERSION, NOW, click_id="k1", order_id="o1", value_micros=50_000_000
        ),
        make_event("v2", EventType.CONVERSION, NOW, order_id="o1", value_micros=50_000_000),
        make_event("r1", EventType.REDEMPTION, NOW, coupon="SAVE10"),
        make_event("r1", EventType.REDEMPTION, NOW, coupon="SAVE10"),
        make_event("b1", EventType.CLICK, NOW, channel="search", bot=True),
        make_event("old", EventType.CLICK, NOW - timedelta(days=40), channel="search"),
    ]
    aggregate, result = fold([stream])
    assert result == BatchResult(applied=5, duplicates=2, late=1, bots=1)
    assert aggregate.counters[keys.minute(minute)] == {
        "search:k": 1,
        "search:c": 1,
        "search:v": 50_000_000,
        "search:g": 1,
        "search:G": 50_000_000,
        "search:t0": 1,
        "email:r": 1,
        "search:b": 1,
    }
    assert aggregate.counters[keys.totals] == {
        "search:k": 2,
        "search:c": 1,
        "search:v": 50_000_000,
        "search:g": 1,
        "search:G": 50_000_000,
        "search:t0": 1,
        "email:r": 1,
        "search:b": 1,
    }


def test_spend_resent_replaces() -> None:
    start = NOW.replace(minute=0, second=0) - timedelta(hours=2)
    first = make_event(
        "s1",
        EventType.SPEND,
        NOW,
        channel="search",
        cost_micros=7_000_000,
        start=start,
        end=start + timedelta(hours=1),
    )
    corrected = _replace(first, cost_micros=5_000_000, channel="social")
    aggregate, result = fold([[first], [first], [corrected]])
    assert result.applied == 2
    assert result.duplicates == 1
    assert aggregate.nonzero()[KeySpace().totals] == {"social:s": 5_000_000}
    hours = {key: fields for key, fields in aggregate.nonzero().items() if ":h:" in key}
    assert list(hours.values()) == [{"social:s": 5_000_000}]


@settings(max_examples=150, deadline=None)
@given(event_streams(), st.randoms(use_true_random=False))
def test_counts_ignore_batch_boundaries(events: list[Event], rng: random.Random) -> None:
    whole, whole_result = fold([events])
    cuts = sorted(rng.sample(range(len(events) + 1), k=min(len(events) + 1, 4)))
    batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    split, split_result = fold(batches)
    assert split.nonzero() == whole.nonzero()
    assert split_result == whole_result


@settings(max_examples=150, deadline=None)
@given(event_streams(), st.randoms(use_true_random=False))
def test_counts_ignore_order_across_partitions(events: list[Event], rng: random.Random) -> None:
    assert fold([interleave(events, rng)])[0].nonzero() == fold([events])[0].nonzero()


@settings(max_examples=150, deadline=None)
@given(event_streams(), st.data())
def test_counts_ignore_redelivery(events: list[Event], data: st.DataObject) -> None:
    # A consumer that dies after applying up to `applied` but committed only up to `committed`
    # sees events[committed:] again.
    applied = data.draw(st.integers(0, len(events)))
    committed = data.draw(st.integers(0, applied))
    replayed, result = fold([events[:applied], events[committed:]])
    once, once_result = fold([events])
    assert replayed.nonzero() == once.nonzero()
    assert result.applied + result.duplicates == len(events) + applied - committed
    assert result.duplicates >= once_result.duplicates


def test_conversions_through_a_click_count_their_delay_in_the_clicks_buckets() -> None:
    """t{bin} in the click's minute, hour and totals (not the conversion's, not the days); a
    conversion naming its own channel, or a click registered without a minute, counts none."""
    keys = KeySpace()
    clicked = NOW - timedelta(hours=3)
    stream = [
        make_event("c1", EventType.CLICK, clicked, channel="search", click_id="k1"),
        make_event("c2", EventType.CLICK, clicked, channel="search", click_id="k2"),
        make_event("v1", EventType.CONVERSION, NOW, click_id="k1"),
        make_event("v2", EventType.CONVERSION, clicked + timedelta(minutes=4), click_id="k2"),
        make_event("v3", EventType.CONVERSION, NOW, channel="search", click_id="k1"),
    ]
    aggregate, _ = fold([stream])
    click_minute, now_minute = minute_of(clicked), minute_of(NOW)
    # 3 hours is bin 5 ([2 h, 4 h)), 4 minutes bin 0 ([0, 5 min)).
    delays = {"search:t5": 1, "search:t0": 1}
    assert {
        name: value
        for name, value in aggregate.counters[keys.minute(click_minute)].items()
        if name.startswith("search:t")
    } == delays
    hour_fields = aggregate.counters[keys.hour(hour_of(click_minute))]
    assert {name: hour_fields[name] for name in delays} == delays
    assert not any(":t" in name for name in aggregate.counters[keys.minute(now_minute)])
    assert all(
        ":t" not in name
        for key, fields in aggregate.counters.items()
        if ":d:" in key or ":dc:" in key
        for name in fields
    )
    assert aggregate.counters[keys.totals]["search:c"] == 3

    old = Aggregate(clicks={"k9": ("search", "", None)})
    old.apply([make_event("v9", EventType.CONVERSION, NOW, click_id="k9")], NOW)
    assert old.counters[keys.totals] == {"search:g": 1, "search:c": 1}


def test_calls_count_answered_and_one_lead_per_caller() -> None:
    def called(event_id: str, caller: str | None, answered: bool, qualified: bool) -> Event:
        return make_event(
            event_id,
            EventType.CALL,
            NOW,
            channel="flyers",
            caller=caller,
            answered=answered,
            qualified=qualified,
        )

    model = Aggregate()
    result = model.apply(
        [
            called("missed", "h1", answered=False, qualified=False),
            called("short", "h1", answered=True, qualified=False),
            called("long", "h1", answered=True, qualified=True),
            called("again", "h1", answered=True, qualified=True),
            called("withheld", None, answered=True, qualified=True),
            called("long", "h1", answered=True, qualified=True),
        ],
        NOW,
    )
    assert (result.applied, result.duplicates) == (5, 1)
    assert model.counters[model.keys.totals] == {"flyers:p": 5, "flyers:a": 4, "flyers:l": 2}
