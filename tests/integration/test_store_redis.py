"""`KpiStore` against a real redis-server: exact counters, KPIs, dedupe, spend replacement."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from adpulse.core.contract import FIELDS
from adpulse.core.event import Event, EventType
from stream.aggregate import Aggregate, BatchResult, minute_of, nonzero
from stream.batch import decode_records
from stream.days import LocalDays
from stream.errors import StoreUnavailable
from stream.keys import DEFAULT_MAX_CAMPAIGNS, DEFAULT_MAX_CHANNELS, KeySpace, Retention
from stream.kpi import Counters
from stream.store import KpiStore, OrderedCalls
from tests.conftest import RedisDatabase
from tests.kafka_helpers import wait_until
from tests.services import RedisService, free_port
from tests.unit.test_contract import COUPONS as CONTRACT_COUPONS
from tests.unit.test_contract import NOW as CONTRACT_NOW
from tests.unit.test_contract import case, general
from tests.unit.test_stream_aggregate import (
    CLICK_KEYS,
    COUPONS,
    NOW,
    event_streams,
    make_event,
)

pytestmark = pytest.mark.integration

MINUTE = NOW.replace(second=0)
DOLLAR = 1_000_000
D = Decimal


def unique_keys() -> KeySpace:
    return KeySpace(f"test:{uuid.uuid4().hex[:12]}:")


async def drop_keys(client: redis.Redis | RedisCluster, keys: KeySpace) -> None:
    doomed = [key async for key in client.scan_iter(match=keys.pattern, count=1000)]
    if doomed:
        await client.delete(*doomed)


@pytest.fixture
async def store(redis_db: RedisDatabase) -> AsyncIterator[KpiStore]:
    """A store with the production key prefix in a database of its own, scenario coupons set."""
    kpi_store = KpiStore.from_url(redis_db.url)
    await kpi_store.import_coupons(COUPONS.items())
    yield kpi_store
    await kpi_store.close()


DAY_TIERS = ("d:", "mo:", "dc:", "mc:", "ltv:")


async def counters_in_redis(
    store: KpiStore, tiers: tuple[str, ...] = ("m:", "h:")
) -> dict[str, dict[str, int]]:
    """Every bucket of `tiers` and the totals hash of the store's prefix, zero fields left out."""
    found: dict[str, dict[str, int]] = {}
    prefix = store.keys.prefix
    async for raw in store.client.scan_iter(match=store.keys.pattern, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        rest = key[len(prefix) :]
        if rest == "t" or rest.startswith(tiers):
            fields = await store.client.hgetall(key)
            found[key] = {str(name): int(value) for name, value in fields.items()}
    return nonzero(found)


def spend(event_id: str, channel: str, dollars: int, start: datetime, minutes: int) -> Event:
    return make_event(
        event_id,
        EventType.SPEND,
        start,
        channel=channel,
        cost_micros=dollars * DOLLAR,
        start=start,
        end=start + timedelta(minutes=minutes),
    )


def scenario() -> list[Event]:
    """Known traffic over five channels, now, a day ago, a week ago, and too old for buckets."""
    click, conversion, redemption = EventType.CLICK, EventType.CONVERSION, EventType.REDEMPTION
    recent = NOW - timedelta(minutes=1)
    half_hour = NOW - timedelta(minutes=30)
    day = NOW - timedelta(days=1)
    week = NOW - timedelta(days=7)
    return [
        make_event("c1", click, recent, channel="search", click_id="k1", campaign="bf"),
        make_event("c2", click, recent, channel="search", click_id="k2"),
        make_event("c3", click, recent, channel="search"),
        # The click's channel beats the coupon's; a coupon alone gives its channel.
        make_event("v1", conversion, NOW, click_id="k1", order_id="o1", value_micros=120 * DOLLAR),
        make_event(
            "v2",
            conversion,
            NOW,
            click_id="k2",
            coupon="SAVE10",
            order_id="o2",
            value_micros=80 * DOLLAR,
        ),
        make_event("v3", conversion, NOW, coupon="SAVE10", order_id="o3", value_micros=50 * DOLLAR),
        make_event("r1", redemption, NOW, coupon="PODCAST"),
        make_event("r2", redemption, NOW, coupon="UNKNOWN", grouped_channel="paid_social"),
        make_event("v4", conversion, NOW, order_id="o4", value_micros=10 * DOLLAR),
        make_event("c4", click, half_hour, grouped_channel="paid_social"),
        make_event(
            "v5", conversion, half_hour, grouped_channel="paid_social", value_micros=40 * DOLLAR
        ),
        spend("s1", "search", 20, MINUTE - timedelta(minutes=9), 10),
        spend("s2", "paid_social", 30, MINUTE - timedelta(hours=3), 60),
        make_event("d1", click, day, channel="search"),
        make_event("d2", conversion, day, channel="search", value_micros=100 * DOLLAR),
        spend("s3", "search", 5, MINUTE - timedelta(days=1, minutes=2), 2),
        make_event("w1", click, week, channel="search"),
        make_event("w2", click, week, channel="search"),
        make_event("late1", click, NOW - timedelta(days=9), channel="search"),
        make_event(
            "late2", conversion, NOW - timedelta(days=40), channel="search", value_micros=7 * DOLLAR
        ),
    ]


def approved(**fields: int) -> Counters:
    """Counters where every order is approved as first reported: gross is net."""
    return Counters(
        **fields,
        gross_conversions=fields.get("conversions", 0),
        gross_revenue_micros=fields.get("revenue_micros", 0),
    )


def dollars(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(Decimal("0.000001"))


async def test_scenario_gives_exact_counters_and_kpis(store: KpiStore) -> None:
    result = await store.apply_batch(scenario(), now=NOW)
    assert result == BatchResult(applied=20, duplicates=0, late=2, bots=0)
    snapshot = await store.snapshot(NOW)
    assert list(snapshot.channels) == ["email", "paid_social", "podcast", "search", "unattributed"]

    search = snapshot.channels["search"]
    assert search.totals == approved(
        clicks=7, conversions=4, revenue_micros=307 * DOLLAR, spend_micros=25 * DOLLAR
    )
    now_5m = search.windows["5m"].current
    assert now_5m.counters == approved(
        clicks=3, conversions=2, revenue_micros=200 * DOLLAR, spend_micros=10 * DOLLAR
    )
    assert now_5m.kpis.cpa == 5
    assert dollars(now_5m.kpis.cpc) == Decimal("3.333333")
    assert dollars(now_5m.kpis.conversion_rate) == Decimal("0.666667")
    assert (now_5m.kpis.roas, now_5m.kpis.romi, now_5m.kpis.aov) == (D(20), D(19), D(100))
    for window in ("1h", "24h"):
        figures = search.windows[window].current
        assert figures.counters.spend_micros == 20 * DOLLAR
        assert (figures.kpis.cpa, figures.kpis.roas, figures.kpis.romi) == (D(10), D(10), D(9))
    day_5m = search.windows["5m"].day_earlier
    assert day_5m.counters == approved(
        clicks=1, conversions=1, revenue_micros=100 * DOLLAR, spend_micros=5 * DOLLAR
    )
    assert (day_5m.kpis.cpa, day_5m.kpis.roas, day_5m.kpis.aov) == (D(5), D(20), D(100))
    week = search.windows["24h"].week_earlier
    assert week.counters == approved(clicks=2)
    assert not week.hourly
    assert (week.kpis.cpa, week.kpis.cpc, week.kpis.conversion_rate) == (None, D(0), D(0))
    assert (week.kpis.roas, week.kpis.romi, week.kpis.aov) == (None, None, None)

    email = snapshot.channels["email"].windows["5m"].current
    assert email.counters == approved(conversions=1, revenue_micros=50 * DOLLAR)
    assert (email.kpis.cpa, email.kpis.conversion_rate, email.kpis.roas) == (D(0), None, None)

    social = snapshot.channels["paid_social"].windows
    assert social["5m"].current.counters == approved(redemptions=1)
    assert social["1h"].current.counters == approved(
        clicks=1, redemptions=1, conversions=1, revenue_micros=40 * DOLLAR
    )
    assert social["24h"].current.counters == approved(
        clicks=1, redemptions=1, conversions=1, revenue_micros=40 * DOLLAR, spend_micros=30 * DOLLAR
    )
    assert social["24h"].current.kpis.cpa == 30
    assert social["24h"].day_earlier.counters == approved()
    assert snapshot.channels["podcast"].totals == approved(redemptions=1)
    unattributed = snapshot.channels["unattributed"].windows["5m"].current
    assert unattributed.kpis.aov == 10
    assert await store.stats() == {"applied": 17, "late": 2}


async def test_everything_twice_counts_once(store: KpiStore, redis_db: RedisDatabase) -> None:
    events = scenario()
    resent_order = make_event(
        "v1-again",
        EventType.CONVERSION,
        NOW,
        click_id="k1",
        order_id="o1",
        value_micros=120 * DOLLAR,
    )
    once = KpiStore.from_url(redis_db.url, keys=unique_keys())
    await once.import_coupons(COUPONS.items())
    try:
        await once.apply_batch(events, now=NOW)
        expected = {
            key.removeprefix(once.keys.prefix): fields
            for key, fields in (await counters_in_redis(once)).items()
        }
    finally:
        await drop_keys(once.client, once.keys)
        await once.close()

    first = await store.apply_batch(events[:12], now=NOW)
    second = await store.apply_batch([*events[5:], *events[:7], resent_order], now=NOW)
    third = await store.apply_batch(events, now=NOW)
    assert first.applied + second.applied == len(events)
    assert second.duplicates == 7 + 7 + 1
    assert third == BatchResult(applied=0, duplicates=len(events), late=0)
    got = {
        key.removeprefix(store.keys.prefix): fields
        for key, fields in (await counters_in_redis(store)).items()
    }
    assert got == expected


async def test_ids_are_remembered_for_their_window_then_forgotten(redis_db: RedisDatabase) -> None:
    window = timedelta(hours=4)
    retention = Retention(dedupe=window, order=window, attribution=window)
    store = KpiStore.from_url(redis_db.url, keys=unique_keys(), retention=retention)
    click = make_event("c1", EventType.CLICK, NOW, channel="search", click_id="k1")

    def conversion(event_id: str, order_id: str) -> Event:
        return make_event(event_id, EventType.CONVERSION, NOW, click_id="k1", order_id=order_id)

    try:
        assert (await store.apply_batch([click], now=NOW)).applied == 1
        # Just inside the window: the same event id, and the same order again, are duplicates;
        # the click still attributes a new order.
        inside = NOW + window - timedelta(seconds=1)
        result = await store.apply_batch(
            [click, conversion("v1", "o1"), conversion("v2", "o1")], now=inside
        )
        assert result == BatchResult(applied=1, duplicates=2)
        # A window and a generation (a quarter window) after the last sighting, all is forgotten:
        # the ids count again and the click attributes nothing.
        after = inside + window + window / 4
        result = await store.apply_batch([conversion("v1", "o1"), click], now=after)
        assert result == BatchResult(applied=2)
        totals = await store.totals()
        assert totals["search"] == approved(clicks=2, conversions=1)
        assert totals["unattributed"] == approved(conversions=1)
        # Memory is bounded by generations, not by events: a few generations of buckets per
        # kind of id, each key expiring on its own even if no worker is left to unlink it.
        names = [name async for name in store.client.scan_iter(match=store.keys.pattern)]
        kinds = tuple(store.keys.generation(kind, 0)[:-1] for kind in ("ids", "ord", "clicks"))
        keys = [name for name in names if name.startswith(kinds)]
        generations = {name.rsplit(":", 1)[0] for name in keys}
        assert 0 < len(generations) <= 6
        for name in keys:
            assert await store.client.ttl(name) > 0
    finally:
        await drop_keys(store.client, store.keys)
        await store.close()


async def test_spend_resent_with_the_same_id_replaces(store: KpiStore) -> None:
    start = MINUTE - timedelta(minutes=30)
    first = spend("cost-report-1", "search", 60, start, 60)
    corrected = spend("cost-report-1", "social", 45, start, 30)
    assert (await store.apply_batch([first], now=NOW)).applied == 1
    assert (await store.apply_batch([first], now=NOW)).duplicates == 1
    assert (await store.apply_batch([corrected, first, corrected], now=NOW)).applied == 3
    totals = await store.totals()
    assert totals["search"] == approved()
    assert totals["social"] == approved(spend_micros=45 * DOLLAR)
    snapshot = await store.snapshot(NOW)
    # 45 over the 30 minutes before this one: 1.5 a minute, four of them in the last 5m.
    assert snapshot.channels["social"].windows["5m"].current.counters.spend_micros == 6 * DOLLAR
    assert snapshot.channels["social"].windows["1h"].current.counters.spend_micros == 45 * DOLLAR
    assert snapshot.channels["search"].windows["1h"].current.counters == approved()


async def test_late_events_land_where_their_time_is_kept(store: KpiStore) -> None:
    keys = store.keys
    events = [
        make_event("fresh", EventType.CLICK, NOW - timedelta(hours=47), channel="search"),
        make_event("hourly", EventType.CLICK, NOW - timedelta(days=9), channel="search"),
        make_event("ancient", EventType.CLICK, NOW - timedelta(days=37), channel="search"),
    ]
    assert await store.apply_batch(events, now=NOW) == BatchResult(applied=3, late=2)
    kept = await counters_in_redis(store)
    fresh_minute = minute_of(events[0].ts)
    assert kept == {
        keys.minute(fresh_minute): {"search:k": 1},
        keys.hour(fresh_minute // 60): {"search:k": 1},
        keys.hour(minute_of(events[1].ts) // 60): {"search:k": 1},
        keys.totals: {"search:k": 3},
    }
    # Buckets expire at their end plus the retention, whenever they were last written.
    expire_at = await store.client.expiretime(keys.minute(fresh_minute))
    assert expire_at == (fresh_minute + 1) * 60 + store.retention.minute_seconds


async def test_coupon_registry(store: KpiStore) -> None:
    await store.add_coupon(" summer-24 ", "Paid Social")
    assert (await store.list_coupons())["SUMMER-24"] == "paid_social"
    assert await store.remove_coupon("summer-24")
    assert not await store.remove_coupon("summer-24")
    with pytest.raises(ValueError, match="row 2"):
        await store.import_coupons([("OK1", "email"), ("bad code", "email")])
    assert "OK1" not in await store.list_coupons()
    assert await store.import_coupons([("OK1", "email"), ("OK2", "tv")]) == 2
    assert await store.list_coupons() == {**COUPONS, "OK1": "email", "OK2": "tv"}


async def test_unreachable_redis_is_retriable() -> None:
    store = KpiStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.apply_batch(scenario(), now=NOW)
        assert raised.value.retriable
        with pytest.raises(StoreUnavailable):
            await store.snapshot(NOW)
    finally:
        await store.close()


def _shifted(event: Event, shift: timedelta) -> Event:
    fields = {name: getattr(event, name) for name in Event.__dataclass_fields__}
    for name in ("ts", "received_at", "start", "end"):
        if fields[name] is not None:
            fields[name] += shift
    return Event(**fields)


def _split(events: Sequence[Event], rng: random.Random) -> list[list[Event]]:
    cuts = sorted(rng.sample(range(len(events) + 1), k=min(len(events) + 1, 3)))
    return [list(events[a:b]) for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    events=event_streams(max_events=40),
    rng=st.randoms(use_true_random=False),
    max_channels=st.sampled_from([DEFAULT_MAX_CHANNELS, 1, 3]),
    max_campaigns=st.sampled_from([DEFAULT_MAX_CAMPAIGNS, 1]),
    zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
)
def test_script_matches_the_reference_fold(
    redis_server: RedisService,
    events: list[Event],
    rng: random.Random,
    max_channels: int,
    max_campaigns: int,
    zone: str,
) -> None:
    """The Lua script and `Aggregate` agree, bucket by bucket (day and month buckets of any time
    zone included), on any stream and batching, and with caps on channels and campaigns that
    fold some into "unlisted" and "other"."""
    # Redis expires the oldest retained bucket by its own clock, within a minute of `now`: run
    # the example two minutes ahead of the clock so that none goes while the test looks.
    shift = datetime.now(UTC) + timedelta(minutes=2) - NOW
    now = NOW + shift
    batches = _split([_shifted(event, shift) for event in events], rng)
    days = LocalDays(ZoneInfo(zone))
    model = Aggregate(
        coupons=dict(COUPONS),
        max_channels=max_channels,
        days=days,
        max_campaigns=max_campaigns,
        click_keys=CLICK_KEYS,
    )
    expected = BatchResult()
    for batch in batches:
        expected += model.apply(batch, now)

    async def run() -> tuple[BatchResult, dict[str, dict[str, int]], int]:
        kpi_store = KpiStore.from_url(
            redis_server.url,
            keys=unique_keys(),
            max_channels=max_channels,
            zone=ZoneInfo(zone),
            max_campaigns=max_campaigns,
        )
        try:
            await kpi_store.import_coupons(COUPONS.items())
            got = BatchResult()
            for batch in batches:
                got += await kpi_store.apply_batch(batch, now=now, click_keys=CLICK_KEYS)
            found = await counters_in_redis(kpi_store, ("m:", "h:", *DAY_TIERS))
            rejected = (await kpi_store.stats()).get("click_ids_rejected", 0)
            return (
                got,
                {key.removeprefix(kpi_store.keys.prefix): fields for key, fields in found.items()},
                rejected,
            )
        finally:
            await drop_keys(kpi_store.client, kpi_store.keys)
            await kpi_store.close()

    result, counters, rejected_click_ids = asyncio.run(run())
    assert result == expected
    assert rejected_click_ids == model.rejected_click_ids
    assert counters == {
        key.removeprefix(model.keys.prefix): fields for key, fields in model.nonzero().items()
    }


async def test_every_contract_field_counts_alike_through_the_script(
    redis_db: RedisDatabase,
) -> None:
    """tests/unit/test_contract.py's cases, one per field of the contract, as records decoded
    by the worker's fast path and applied by the script: the counters `Aggregate` gives."""
    records = [general(*case(field))[2] for field in FIELDS]
    events = [Event.from_wire(record) for record in records]
    model = Aggregate(coupons=dict(CONTRACT_COUPONS))
    expected = model.apply(events, CONTRACT_NOW)
    kpi_store = KpiStore.from_url(redis_db.url, keys=unique_keys())
    try:
        await kpi_store.import_coupons(CONTRACT_COUPONS.items())
        batch = decode_records(records)
        assert batch.rejected == []
        assert await kpi_store.apply_decoded(batch, now=CONTRACT_NOW) == expected
        found = await counters_in_redis(kpi_store, ("m:", "h:", *DAY_TIERS))
    finally:
        await drop_keys(kpi_store.client, kpi_store.keys)
        await kpi_store.close()
    prefix = kpi_store.keys.prefix
    assert {key.removeprefix(prefix): fields for key, fields in found.items()} == {
        key.removeprefix(model.keys.prefix): fields for key, fields in model.nonzero().items()
    }
    assert expected.applied == len(FIELDS) > 0


async def test_ordered_calls_answer_in_order_and_stop_after_a_failure(
    redis_db: RedisDatabase,
) -> None:
    client = redis.Redis.from_url(redis_db.url, decode_responses=True)
    ordered = OrderedCalls(client.connection_pool)
    key = f"test:{uuid.uuid4().hex[:12]}:list"
    try:
        answers = [await ordered.send("RPUSH", key, str(n)) for n in range(50)]
        assert [await answer for answer in answers] == list(range(1, 51))
        assert await client.lrange(key, 0, -1) == [str(n) for n in range(50)]

        # An error answer fails its own call only.
        failing = await ordered.send("INCR", key)
        after = await ordered.send("LLEN", key)
        with pytest.raises(ResponseError):
            await failing
        assert await after == 50

        # The connection is cut while two calls wait (the second behind a blocked BLPOP):
        # both fail, and nothing is sent until `resume`.
        blocked = await ordered.send("BLPOP", f"{key}:empty", 0)
        behind = await ordered.send("RPUSH", key, "late")

        async def blocked_client() -> int | None:
            for entry in await client.client_list():
                if entry.get("cmd") == "blpop":
                    return int(entry["id"])
            return None

        async def blocked_now() -> bool:
            return await blocked_client() is not None

        await wait_until(blocked_now, timeout=10, message="the BLPOP is blocked")
        client_id = await blocked_client()
        assert client_id is not None
        await client.client_kill_filter(_id=str(client_id))
        for answer in (blocked, behind):
            with pytest.raises(RedisConnectionError):
                await answer
        assert ordered.failed
        with pytest.raises(RedisConnectionError):
            await ordered.send("RPUSH", key, "refused")
        ordered.resume()
        assert await (await ordered.send("RPUSH", key, "again")) == 51
        assert (await client.lrange(key, -1, -1)) == ["again"]
    finally:
        await ordered.close()
        await client.delete(key)
        await client.aclose()


async def test_figures_past_2_to_the_53_stay_exact(store: KpiStore) -> None:
    """The script writes read-and-add sums; past 4e15 it leaves a field to HINCRBY, so a
    lifetime revenue beyond what a Lua number holds exactly is still exact."""
    amount = 999_999_999_999_999
    for number in range(11):  # 11 x amount is odd and above 2**53: no double holds it
        event = make_event(
            f"big{number}", EventType.CONVERSION, NOW, channel="search", value_micros=amount
        )
        await store.apply_batch([event], now=NOW)
    totals = await store.client.hgetall(store.keys.totals)
    assert int(totals["search:v"]) == 11 * amount
    assert int(totals["search:c"]) == 11


async def test_sums_past_4e15_within_one_batch_stay_exact(store: KpiStore) -> None:
    """Values that take a minute's sums past 4e15 within one batch still give exact figures in
    every bucket, as the reference's: what was summed so far goes to the buckets apart (`add`,
    `route`), into buckets whose sums the minute's others share (`add_sums`)."""
    amount = 999_999_999_999_999
    events = [
        make_event(
            f"big{number}", EventType.CONVERSION, NOW, channel="search", campaign="spring",
            value_micros=amount, order_id=f"o{number}", customer_id="u1",
            status="pending" if number % 3 else None,
        )
        for number in range(11)
    ]  # fmt: skip
    model = Aggregate(coupons=dict(COUPONS), days=store.days)
    model.apply(events, NOW)
    await store.apply_batch(events, now=NOW)
    found = await counters_in_redis(store, ("m:", "h:", *DAY_TIERS))
    assert int(found[store.keys.totals]["search:G"]) == 11 * amount
    assert found == {key: fields for key, fields in model.nonzero().items()}


async def test_a_click_far_from_its_generation_keeps_its_minute(store: KpiStore) -> None:
    """A click minute more than 600,000 minutes before its generation's start is kept whole
    (`keys`, "Remembered ids"): its conversion still gets its channel, campaign and delay."""
    now = datetime.now(UTC)
    clicked = now - timedelta(days=500)
    await store.apply_batch(
        [
            make_event("far", EventType.CLICK, clicked, channel="social", campaign="old",
                       click_id="far-click"),
            make_event("v-far", EventType.CONVERSION, now, click_id="far-click"),
        ],
        now=now,
    )  # fmt: skip
    stored = [
        value
        async for name in store.client.scan_iter(
            match=store.keys.generation("clicks", 0)[:-1] + "*"
        )
        if name.rsplit(":", 1)[1].isdigit()
        for value in (await store.client.hgetall(name)).values()
    ]
    assert len(stored) == 1
    assert str(stored[0]).startswith("-")
    totals = await store.client.hgetall(store.keys.totals)
    # 500 days: the last delay bin.
    assert (totals["social:c"], totals["social:t10"]) == ("1", "1")


async def test_clicks_attribute_with_their_delay_and_old_registrations_are_ignored(
    store: KpiStore,
) -> None:
    """A new click gives its conversion its channel, campaign and delay. A registration in the
    pre-fingerprint form (a whole ``clicks:{gen}`` hash of raw click ids, written by a worker
    before the upgrade) is not read: README, "Upgrading"."""
    now = datetime.now(UTC)
    now_seconds = int(now.timestamp())
    period = -(-int(store.retention.attribution.total_seconds()) // 4)
    generation = store.keys.generation("clicks", now_seconds // period)
    await store.client.hset(generation, "old-click", "search\tspring")
    clicked = now - timedelta(minutes=20)
    await store.apply_batch(
        [
            make_event("new", EventType.CLICK, clicked, channel="social", click_id="new-click"),
            make_event("v-old", EventType.CONVERSION, now, click_id="old-click"),
            make_event("v-new", EventType.CONVERSION, now, click_id="new-click"),
        ],
        now=now,
    )
    totals = {
        str(name): int(value)
        for name, value in (await store.client.hgetall(store.keys.totals)).items()
    }
    # 20 minutes: bin 2, [15 min, 30 min).
    assert totals == {
        "social:k": 1, "social:c": 1, "social:g": 1, "social:t2": 1,
        "unattributed:c": 1, "unattributed:g": 1,
    }  # fmt: skip
    # The click counts in its own day: 20 minutes before a midnight run, that is yesterday.
    days = {store.days.of_minute(minute_of(moment))[0] for moment in (clicked, now)}
    campaigns = {
        str(name)
        for day in days
        for name in await store.client.hgetall(store.keys.day_campaigns(day))
    }
    assert campaigns == {
        "unattributed\t:c", "unattributed\t:g", "social\t:k", "social\t:c", "social\t:g"
    }  # fmt: skip
    click_hour = await store.client.hgetall(store.keys.hour(minute_of(clicked) // 60))
    assert int(click_hour["social:t2"]) == 1
