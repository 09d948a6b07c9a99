"""`adpulse worker` end to end: the real broker, a real redis-server, the worker as a subprocess.

One scripted scenario (`Scenario`) over several channels and ages, produced as the tracker
would (wire bytes, partition keys), and its expected counters worked out here from the script
alone; every test compares `KpiStore.snapshot` with them, for every channel and window.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adpulse.core.event import Event, EventRules, parse_event, partition_key
from stream.errors import StoreUnavailable
from stream.kpi import OFFSETS, WINDOWS, Counters, Snapshot, kpis
from stream.store import KpiStore
from tests.conftest import TOPIC_PARTITIONS, RedisDatabase
from tests.kafka_helpers import wait_until
from tests.processes import Worker
from tests.services import KafkaService, RedisService

pytestmark = pytest.mark.integration

COUPONS = {"SAVE10": "email", "PODCAST": "podcast"}
RULES = EventRules()
CENT = 10_000  # micros


@dataclass(frozen=True)
class Cell:
    """Traffic of one channel at one age. Conversions `via_click` name a click of this cell
    and carry no channel; redemptions use the channel's coupon when it has one."""

    channel: str
    age: timedelta
    clicks: int = 0
    via_click: int = 0
    direct: int = 0
    redemptions: int = 0
    spend_cents: int = 0
    value_cents: int = 2550


CELLS = (
    Cell("paid_search", timedelta(minutes=1), clicks=8, via_click=3, direct=1, spend_cents=4000),
    Cell("paid_search", timedelta(minutes=20), clicks=5, via_click=1, spend_cents=1234),
    Cell("paid_search", timedelta(hours=5), clicks=4, direct=2, value_cents=9999),
    Cell("paid_search", timedelta(days=1, minutes=2), clicks=6, via_click=2, spend_cents=3000),
    Cell("paid_search", timedelta(days=7, minutes=2), clicks=3, direct=1, spend_cents=700),
    Cell("email", timedelta(minutes=2), clicks=4, via_click=1, redemptions=3, spend_cents=500),
    Cell("email", timedelta(minutes=40), redemptions=2, direct=2, value_cents=1000),
    Cell("email", timedelta(days=1, minutes=3), clicks=2, redemptions=1),
    Cell("social", timedelta(minutes=3), clicks=10, via_click=1, spend_cents=2500),
    Cell("social", timedelta(hours=20), clicks=7, direct=1, spend_cents=900),
    Cell("podcast", timedelta(minutes=4), redemptions=4, spend_cents=1500),
    Cell("podcast", timedelta(days=7, minutes=1), redemptions=1),
)


@dataclass
class Scenario:
    """The scenario's events in production order, and the counters they must give."""

    now: datetime
    events: list[Event]
    scale: int

    @classmethod
    def build(cls, scale: int = 1) -> Scenario:
        now = datetime.now(UTC).replace(second=30, microsecond=0)
        run = uuid.uuid4().hex[:8]
        numbers = iter(range(10**9))
        events: list[Event] = []

        def event(raw: dict[str, object]) -> Event:
            return parse_event(
                {"event_id": f"{run}-{next(numbers)}", **raw}, rules=RULES, received_at=now
            )

        for cell in CELLS * scale:
            ts = (now - cell.age).isoformat()
            value = f"{cell.value_cents / 100:.2f}"
            clicks = [f"k{run}{next(numbers)}" for _ in range(cell.clicks)]
            for click_id in clicks:
                events.append(
                    event(
                        {"type": "click", "channel": cell.channel, "click_id": click_id, "ts": ts}
                    )
                )
            for number in range(cell.via_click):
                events.append(
                    event(
                        {
                            "type": "conversion",
                            "click_id": clicks[number % len(clicks)],
                            "order_id": f"o{run}{next(numbers)}",
                            "value": value,
                            "ts": ts,
                        }
                    )
                )
            for _ in range(cell.direct):
                events.append(
                    event(
                        {
                            "type": "conversion",
                            "channel": cell.channel,
                            "value": value,
                            "ts": ts,
                            "order_id": f"o{run}{next(numbers)}",
                        }
                    )
                )
            coupon = next((code for code, ch in COUPONS.items() if ch == cell.channel), None)
            for _ in range(cell.redemptions):
                where = {"coupon": coupon} if coupon else {"channel": cell.channel}
                events.append(event({"type": "redemption", **where, "ts": ts}))
            if cell.spend_cents:
                start = (now - cell.age).replace(second=0)
                events.append(
                    event(
                        {
                            "type": "spend",
                            "channel": cell.channel,
                            "cost": f"{cell.spend_cents / 100:.2f}",
                            "start": start.isoformat(),
                            "end": (start + timedelta(minutes=1)).isoformat(),
                        }
                    )
                )
        return cls(now=now, events=events, scale=scale)

    def expected(self, window: str | None, comparison: str = "current") -> dict[str, Counters]:
        """Counters per channel in a window (None: lifetime totals), from the script alone."""
        now_minute = int(self.now.timestamp()) // 60
        found: dict[str, Counters] = {}
        for cell in CELLS:
            minute = int((self.now - cell.age).timestamp()) // 60
            if window is not None:
                end = now_minute - OFFSETS[comparison]
                if not end - WINDOWS[window] < minute <= end:
                    continue
            conversions = cell.via_click + cell.direct
            counters = Counters(
                clicks=cell.clicks * self.scale,
                redemptions=cell.redemptions * self.scale,
                conversions=conversions * self.scale,
                revenue_micros=conversions * cell.value_cents * CENT * self.scale,
                # Every order approved as first reported: gross is net.
                gross_conversions=conversions * self.scale,
                gross_revenue_micros=conversions * cell.value_cents * CENT * self.scale,
                # One spend record per cell and scale copy, each with its own event id.
                spend_micros=cell.spend_cents * CENT * self.scale,
            )
            found[cell.channel] = found.get(cell.channel, Counters()) + counters
        return found


def assert_snapshot(snapshot: Snapshot, scenario: Scenario) -> None:
    totals = scenario.expected(None)
    assert {name: channel.totals for name, channel in snapshot.channels.items()} == totals
    for name, channel in snapshot.channels.items():
        for window, comparison_figures in channel.windows.items():
            for comparison in OFFSETS:
                figures = getattr(comparison_figures, comparison)
                expected = scenario.expected(window, comparison).get(name, Counters())
                assert figures.counters == expected, (name, window, comparison)
                assert figures.kpis == kpis(expected), (name, window, comparison)


def snapshot_matches(snapshot: Snapshot, scenario: Scenario) -> bool:
    try:
        assert_snapshot(snapshot, scenario)
    except AssertionError:
        return False
    return True


async def produce(bootstrap: str, topic: str, events: Sequence[Event]) -> list[int]:
    """Send the events as the tracker would; the end offset of each partition afterwards.

    The end offsets come from the produce acknowledgements: Tansu answers ListOffsets
    (`end_offsets`) with the last record batch's base offset + 1, not the end.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(topic, event.to_wire(), key=partition_key(event))
            for event in events
        ]
        sent = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    ends = [0] * TOPIC_PARTITIONS
    for metadata in sent:
        ends[metadata.partition] = max(ends[metadata.partition], metadata.offset + 1)
    return ends


async def produce_paced(
    bootstrap: str, topic: str, events: Sequence[Event], chunks: int, pause: float
) -> None:
    """The events in `chunks` pieces, `pause` seconds apart: a stream, not one burst."""
    size = -(-len(events) // chunks)
    for start in range(0, len(events), size):
        await produce(bootstrap, topic, events[start : start + size])
        await asyncio.sleep(pause)


async def committed_offsets(bootstrap: str, group: str, topic: str) -> list[int]:
    """The group's committed offset of each partition of `topic` (0 for none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [
            await consumer.committed(TopicPartition(topic, number)) or 0
            for number in range(TOPIC_PARTITIONS)
        ]
    finally:
        await consumer.stop()


@pytest.fixture
async def store(redis_db: RedisDatabase) -> AsyncIterator[KpiStore]:
    kpi_store = KpiStore.from_url(redis_db.url)
    await kpi_store.import_coupons(COUPONS.items())
    yield kpi_store
    await kpi_store.close()


@dataclass
class Workers:
    kafka: KafkaService
    topic: str
    redis_url: str
    logs: Path
    group: str
    started: list[Worker]

    def start(self, name: str = "worker") -> Worker:
        worker = Worker(
            kafka=self.kafka.bootstrap,
            topic=self.topic,
            redis_url=self.redis_url,
            log=self.logs / f"{name}.log",
            group=self.group,
        )
        self.started.append(worker)
        return worker

    async def kill_while_counting(
        self, store: KpiStore, worker: Worker, pause: float, kills: int = 3
    ) -> Worker:
        """SIGKILL the running worker `kills` times, each once it counted more and then a random
        0 to `pause` seconds later, starting another ("worker-1", ...) each time: the last."""
        rng = random.Random()
        for kill in range(1, kills + 1):
            applied_before = (await store.stats()).get("applied", 0)

            async def progressed(before: int = applied_before) -> bool:
                return (await store.stats()).get("applied", 0) > before

            await wait_until(progressed, timeout=30, message="the worker counts")
            await asyncio.sleep(rng.uniform(0.0, pause))  # a random point, not a synchronisation
            worker.kill()
            worker = self.start(f"worker-{kill}")
        return worker


@pytest.fixture
def workers(
    kafka: KafkaService, topic: str, redis_db: RedisDatabase, tmp_path: Path
) -> Iterator[Workers]:
    """Starts workers on the test's topic and database, one group; all stopped afterwards."""
    group = f"adpulse-worker-t{uuid.uuid4().hex[:8]}"
    made = Workers(kafka, topic, redis_db.url, tmp_path, group, [])
    yield made
    for worker in made.started:
        if worker.process.poll() is None:
            worker.terminate()


async def wait_for_counters(store: KpiStore, scenario: Scenario, timeout: float) -> None:
    async def exact() -> bool:
        try:
            snapshot = await store.snapshot(now=scenario.now)
        except StoreUnavailable:  # the test's own connection, after a Redis restart
            return False
        return snapshot_matches(snapshot, scenario)

    try:
        await wait_until(exact, timeout=timeout, interval=0.1, message="exact counters")
    except TimeoutError:
        assert_snapshot(await store.snapshot(now=scenario.now), scenario)  # says what differs
        raise


def assigned(worker: Worker) -> set[int]:
    found = re.findall(r"partitions assigned: ([\d,]+|none)", worker.log())
    if not found or found[-1] == "none":
        return set()
    return {int(number) for number in found[-1].split(",")}


async def test_scenario_gives_exact_counters_and_kpis(
    kafka: KafkaService, topic: str, store: KpiStore, workers: Workers
) -> None:
    scenario = Scenario.build()
    worker = workers.start()
    ends = await produce(kafka.bootstrap, topic, scenario.events)
    await wait_for_counters(store, scenario, timeout=30)

    snapshot = await store.snapshot(now=scenario.now)
    paid_search = snapshot.channels["paid_search"]
    # By hand: 5m holds the 1-minute-old cell: 4 conversions at $25.50, $40 spend, 8 clicks.
    five = paid_search.windows["5m"].current
    assert five.kpis.cpa == Decimal(10)
    assert five.kpis.conversion_rate == Decimal("0.5")
    assert five.kpis.roas == Decimal("2.55")
    assert five.kpis.aov == Decimal("25.5")
    # Conversions naming a click count for the click's channel, redemptions for the coupon's.
    assert snapshot.channels["email"].totals.redemptions == 6
    assert snapshot.channels["podcast"].totals.redemptions == 5
    assert "unattributed" not in snapshot.channels
    assert 'adpulse_worker_events_processed_total{type="click"} 49.0' in worker.metrics()
    assert worker.terminate() == 0
    assert await committed_offsets(kafka.bootstrap, workers.group, topic) == ends


async def test_duplicates_and_resent_orders_change_nothing(
    kafka: KafkaService, topic: str, store: KpiStore, workers: Workers
) -> None:
    scenario = Scenario.build()
    conversion = next(e for e in scenario.events if e.type == "conversion" and e.order_id)
    resent = parse_event(
        {"event_id": f"again-{uuid.uuid4().hex[:8]}", "type": "conversion",
         "order_id": conversion.order_id, "click_id": conversion.click_id,
         "channel": conversion.channel, "ts": conversion.ts.isoformat(),
         # The same order as it was: a duplicate (another value would restate it).
         "value": str(Decimal(conversion.value_micros or 0) / 1_000_000)},
        rules=RULES, received_at=scenario.now,
    )  # fmt: skip
    worker = workers.start()
    await produce(kafka.bootstrap, topic, scenario.events)
    ends = await produce(kafka.bootstrap, topic, [*scenario.events, resent])
    assert sum(ends) == 2 * len(scenario.events) + 1

    async def all_read() -> bool:
        return await committed_offsets(kafka.bootstrap, workers.group, topic) == ends

    await wait_until(all_read, timeout=30, interval=0.2, message="every record committed")
    assert_snapshot(await store.snapshot(now=scenario.now), scenario)
    # Every second copy (spend records too: the same record again), and the re-sent order.
    duplicates = re.search(r"^adpulse_worker_duplicates_total (\S+)$", worker.metrics(), re.M)
    assert duplicates is not None
    assert float(duplicates.group(1)) == len(scenario.events) + 1


async def test_killed_workers_restarted_give_the_same_counters(
    kafka: KafkaService, topic: str, store: KpiStore, workers: Workers
) -> None:
    scenario = Scenario.build(scale=8)
    streaming = asyncio.create_task(
        produce_paced(kafka.bootstrap, topic, scenario.events, chunks=40, pause=0.25)
    )
    worker = await workers.kill_while_counting(store, workers.start("worker-0"), pause=0.8)
    await streaming
    await wait_for_counters(store, scenario, timeout=60)
    assert worker.terminate() == 0


async def test_two_workers_split_the_partitions_and_one_takes_over(
    kafka: KafkaService, topic: str, store: KpiStore, workers: Workers
) -> None:
    scenario = Scenario.build(scale=4)
    half = len(scenario.events) // 2
    first, second = workers.start("worker-a"), workers.start("worker-b")

    def split() -> bool:
        mine, theirs = assigned(first), assigned(second)
        return bool(mine) and bool(theirs) and mine | theirs == set(range(TOPIC_PARTITIONS))

    await wait_until(split, timeout=30, interval=0.1, message="partitions split between two")
    assert not assigned(first) & assigned(second)
    await produce(kafka.bootstrap, topic, scenario.events[:half])
    assert second.terminate() == 0
    await wait_until(
        lambda: assigned(first) == set(range(TOPIC_PARTITIONS)),
        timeout=30,
        interval=0.1,
        message="the remaining worker took every partition",
    )
    await produce(kafka.bootstrap, topic, scenario.events[half:])
    await wait_for_counters(store, scenario, timeout=30)


async def test_redis_outage_commits_nothing_and_loses_nothing(
    kafka: KafkaService,
    topic: str,
    restartable_redis: RedisService,
    store: KpiStore,
    workers: Workers,
) -> None:
    scenario = Scenario.build(scale=4)
    half = len(scenario.events) // 2
    worker = workers.start()
    before = await produce(kafka.bootstrap, topic, scenario.events[:half])

    async def committed(offsets: list[int]) -> bool:
        return await committed_offsets(kafka.bootstrap, workers.group, topic) == offsets

    await wait_until(lambda: committed(before), timeout=30, message="first half committed")

    restartable_redis.stop()
    ends = await produce(kafka.bootstrap, topic, scenario.events[half:])
    await wait_until(
        lambda: "adpulse_worker_redis_up 0.0" in worker.metrics(),
        timeout=30,
        interval=0.1,
        message="the worker sees Redis down",
    )
    for _ in range(3):  # the outage lasts a while; the committed offsets must not move
        await asyncio.sleep(0.7)
        assert await committed_offsets(kafka.bootstrap, workers.group, topic) == before
    assert worker.process.poll() is None
    restartable_redis.start()

    await wait_for_counters(store, scenario, timeout=30)
    await wait_until(
        lambda: "adpulse_worker_redis_up 1.0" in worker.metrics(), timeout=10, message="up"
    )
    assert "redis write failed, retrying" in worker.log()
    assert worker.terminate() == 0
    assert await committed_offsets(kafka.bootstrap, workers.group, topic) == ends
