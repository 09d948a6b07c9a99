"""`adpulse import` on a real three-master Redis Cluster (issue 16): history and cost files give
the readers what they give on one instance, exactly, re-imports change nothing, each row lands
in its part, and a cost import leaves the workers' customer outboxes alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis

from stream import imports
from stream.aggregate import BatchResult
from stream.batch import DecodedBatch
from stream.cluster import Fact
from stream.days import day_number
from stream.errors import StoreUnavailable
from stream.imports import (
    CostRow,
    HistoryResult,
    HistoryRow,
    cost_events,
    cost_id,
    history_part,
    write_costs,
    write_history,
)
from stream.keys import CLUSTER_PARTS, DAY_RETENTION, KeySpace, part_of
from stream.report import Period, ReportRequest
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_import_caps import campaign_rows, row
from tests.services import RedisCluster, RedisServer, free_port

pytestmark = pytest.mark.integration

M = 1_000_000
CHANNELS = ("display", "email", "search", "social", "affiliate", "podcast")
FEBRUARY, MARCH = date(2025, 2, 10), date(2025, 3, 14)


def history_rows() -> list[HistoryRow]:
    """Rows over two months, several channels (so several parts) and campaigns."""
    rows = []
    for number, channel in enumerate(CHANNELS):
        for day in (FEBRUARY, MARCH):
            for campaign in ("", "brand", "generic", "video"):
                rows.append(
                    HistoryRow(day, channel, campaign, 10 + number, number % 3, 2 + number,
                               (25 + number) * M, (7 + number) * M + 123_456, number)
                )  # fmt: skip
    return rows


async def readings(store: KpiStore) -> dict[str, Any]:
    """What the report and the read API read for February and March 2025."""
    period = Period(date(2025, 2, 1), date(2025, 3, 31))
    found: dict[str, Any] = {}
    for group_by in ("channel", "campaign"):
        request = ReportRequest(period, None, group_by, {})
        found[group_by] = (await store.report_sums(request))["current"]
    for month in (202502, 202503):
        found[f"month {month}"] = await store.month_campaigns(month)
    return found


@pytest.fixture
async def stores(
    redis_db: RedisDatabase, cluster_redis: RedisCluster
) -> AsyncIterator[tuple[KpiStore, KpiStore]]:
    """One instance's store and a cluster's, with the same caps."""
    single = KpiStore.from_url(redis_db.url, max_campaigns=2)
    cluster = KpiStore.from_url(cluster_redis.url, max_campaigns=2)
    assert cluster.cluster
    assert not single.cluster
    yield single, cluster
    await single.close()
    await cluster.close()


async def test_a_history_import_counts_on_a_cluster_what_it_counts_on_one_instance(
    stores: tuple[KpiStore, KpiStore],
) -> None:
    single, cluster = stores
    rows = history_rows()
    assert len({history_part(row) for row in rows}) > 2, "the channels spread over parts"
    results = [await write_history(store, rows) for store in stores]
    # Two campaigns of each channel and month have room; the third counts under "other".
    assert results[0] == results[1] == HistoryResult(len(rows), 0, len(rows) // 4)
    first = await readings(single)
    assert first["campaign"]
    assert await readings(cluster) == first
    assert first["channel"]["search", None].clicks == 2 * 4 * 12
    assert first["campaign"]["search", "other"].clicks == 2 * 12

    # Each row's record is in its channel's part, where a re-import finds it: nothing doubles.
    for written in rows[:8]:
        record = cluster.keys.part(history_part(written)).history(day_number(written.day))
        assert await cluster.client.hget(record, f"{written.channel}\t{written.campaign}")
        assert not await cluster.client.exists(cluster.keys.history(day_number(written.day)))
    for store in stores:
        assert await write_history(store, rows) == results[0]
    assert await readings(cluster) == await readings(single) == first

    # A restated row moves only its own difference, on both.
    restated = HistoryRow(MARCH, "email", "brand", 100, 0, 9, 90 * M, 0, 4)
    for store in stores:
        assert await write_history(store, [restated]) == HistoryResult(1, 0, 0)
    after = await readings(single)
    assert after != first
    assert after["campaign"]["email", "brand"].clicks == 11 + 100
    assert await readings(cluster) == after


async def test_a_history_import_keeps_a_channels_campaign_cap_on_a_cluster(
    cluster_redis: RedisCluster,
) -> None:
    # test_import_caps's first case, on a cluster: the same rows under "other".
    store = KpiStore.from_url(cluster_redis.url, max_campaigns=2)
    rows = [row("a", 1, 10), row("b", 2, 20), row("c", 4, 40), row("d", 8, 80)]
    try:
        result = await write_history(store, rows)
        assert (result.rows, result.other_campaigns, result.unlisted) == (4, 2, 0)
        expected = {
            ("display", "a"): (1, 10),
            ("display", "b"): (2, 20),
            ("display", "other"): (12, 120),
        }
        assert await campaign_rows(store) == expected
        await write_history(store, rows)
        assert await campaign_rows(store) == expected
        await write_history(store, [row("c", 5, 41)])
        assert await campaign_rows(store) == {**expected, ("display", "other"): (13, 121)}
    finally:
        await store.close()


def cost_rows() -> list[CostRow]:
    return [
        CostRow(day, channel, campaign, (3 + index) * M + 450_000)
        for index, (day, channel, campaign) in enumerate(
            (day, channel, campaign)
            for day in (FEBRUARY, MARCH)
            for channel in CHANNELS
            for campaign in ("brand", "generic")
        )
    ]


async def test_a_cost_import_counts_on_a_cluster_what_it_counts_on_one_instance(
    stores: tuple[KpiStore, KpiStore],
) -> None:
    single, cluster = stores
    rows = cost_rows()
    assert len({part_of(cost_id("csv", row)) for row in rows}) > 2, "records in many parts"
    results = [await write_costs(store, rows, "csv") for store in stores]
    assert results[0] == results[1] == BatchResult(applied=len(rows))
    first = await readings(single)
    assert first["channel"]["email", None].spend_micros > 0
    assert await readings(cluster) == first

    # Each spend record is in its part as the worker puts it, and lives as long as the days.
    for written in rows[:4]:
        spend_id = cost_id("csv", written)
        ttl = await cluster.client.ttl(cluster.keys.part(part_of(spend_id)).spend(spend_id))
        assert ttl > DAY_RETENTION.total_seconds() - 60

    # The same file again: restated, nothing doubles.
    for store in stores:
        assert await write_costs(store, rows, "csv") == BatchResult(duplicates=len(rows))
    assert await readings(cluster) == await readings(single) == first

    # A file without a row of a day it covers sets that row to zero, on both.
    for store in stores:
        await write_costs(store, rows[1:], "csv")
    after = await readings(single)
    assert after["campaign"]["display", "brand"].spend_micros == rows[len(CHANNELS) * 2].cost_micros
    assert await readings(cluster) == after


async def test_a_cost_import_leaves_the_workers_outboxes_alone(cluster_redis: RedisCluster) -> None:
    """The customer facts in the outboxes are the workers' to send, in their order: a cost
    import, another process, must not send them (`KpiStore.apply_spend`)."""
    store = KpiStore.from_url(cluster_redis.url)
    source, destination = store.keys.part(0), 3
    waiting = "1\t1\tn\t12345\t29000000\temail\t\tapproved\t1000000\t4242\t0"
    try:
        await store.client.rpush(source.outbox_to(destination), waiting)
        await store.client.hset(source.outbox, str(destination), "1")
        await write_costs(store, cost_rows()[:5], "csv")
        assert await store.client.lrange(source.outbox_to(destination), 0, -1) == [waiting]
    finally:
        await store.close()


def test_the_import_command_takes_a_cluster_url(
    cluster_redis: RedisCluster, tmp_path: Path
) -> None:
    history = tmp_path / "history.csv"
    history.write_text(
        "date,channel,campaign,clicks,conversions,revenue,spend\n"
        "2025-03-14,search,brand,10,2,80.00,50.00\n"
        "2025-03-14,email,,8,2,45.00,0\n"
        "2025-03-15,display,summer,5,0,0,10.00\n"
    )
    costs = tmp_path / "costs.csv"
    costs.write_text("date,channel,campaign,cost\n2025-03-14,search,generic,12.50\n")
    for args, said in (
        (("history", str(history)), f"imported 3 rows of {history}"),
        (("costs", "--format", "csv", str(costs)), f"imported 1 daily costs of {costs}"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "adpulse", "import", *args, "--redis-url", cluster_redis.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert said in done.stdout
    request = ReportRequest(Period(date(2025, 3, 1), date(2025, 3, 31)), None, "channel", {})

    async def read() -> dict[Any, tuple[int, int]]:
        store = KpiStore.from_url(cluster_redis.url)
        try:
            sums = (await store.report_sums(request))["current"]
        finally:
            await store.close()
        return {key: (counters.clicks, counters.spend_micros) for key, counters in sums.items()}

    assert asyncio.run(read()) == {
        ("search", None): (10, 62_500_000),
        ("email", None): (8, 0),
        ("display", None): (5, 10_000_000),
    }


class _OnePartFails(KpiStore):
    """A store whose first part's call fails (as a master going away would) while the other
    parts' calls are still on their way to Redis."""

    failed: asyncio.Event
    first = -1
    started = 0
    finished = 0

    async def _apply_in(
        self,
        keys: KeySpace,
        batch: DecodedBatch,
        now_seconds: int,
        outbox: tuple[int, int, list[int], list[Fact]] | None = None,
    ) -> BatchResult:
        assert outbox is not None
        if outbox[0] == self.first:
            self.failed.set()
            raise StoreUnavailable("apply_batch", ConnectionError("master gone"))
        self.started += 1
        await self.failed.wait()
        try:
            return await super()._apply_in(keys, batch, now_seconds, outbox)
        finally:
            self.finished += 1


async def test_a_failed_part_of_a_cost_import_leaves_no_call_running(
    cluster_redis: RedisCluster,
) -> None:
    """`apply_spend` raises a part's error once every other part's call ended: the CLI closes
    the store after it, which must not cut calls still running."""
    store = _OnePartFails.from_url(cluster_redis.url)
    store.failed = asyncio.Event()
    events = cost_events(cost_rows(), store.days, "csv")
    store.first = min(part_of(event.event_id) for event in events)
    try:
        with pytest.raises(StoreUnavailable, match="master gone"):
            await store.apply_spend(events)
        assert store.started > 1
        assert store.finished == store.started
    finally:
        await store.close()


async def test_a_slot_moving_under_a_history_import_is_redis_unavailable_naming_resharding(
    cluster_redis: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a slot migrating under the import's call: the script touches a key it did not
    declare, another master's (`keys`, "Resharding"); the store's own check answers."""
    store = KpiStore.from_url(cluster_redis.url)
    elsewhere = store.keys.part(CLUSTER_PARTS - 1).stats
    monkeypatch.setattr(imports, "IMPORT_HISTORY", f"return redis.call('GET', '{elsewhere}')")
    rows = [row for row in history_rows() if history_part(row) != CLUSTER_PARTS - 1]
    try:
        with pytest.raises(StoreUnavailable, match="resharding while workers run"):
            await write_history(store, rows[:1])
    finally:
        await store.close()


@pytest.fixture
def replica() -> Iterator[RedisServer]:
    """A redis-server that is a replica (of a port nobody listens on): every write is refused
    with READONLY, as the old master's connections are after a failover."""
    server = RedisServer()
    server.start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.replicaof("127.0.0.1", free_port())
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("command", ["history", "costs"])
def test_an_import_refused_as_read_only_says_redis_is_unavailable(
    replica: RedisServer, tmp_path: Path, command: str
) -> None:
    if command == "history":
        path = tmp_path / "history.csv"
        path.write_text(
            "date,channel,campaign,clicks,conversions,revenue,spend\n"
            "2025-03-14,search,brand,10,2,80.00,50.00\n"
        )
        args = ["history", str(path)]
    else:
        path = tmp_path / "costs.csv"
        path.write_text("date,channel,campaign,cost\n2025-03-14,search,generic,12.50\n")
        args = ["costs", "--format", "csv", str(path)]
    done = subprocess.run(
        [sys.executable, "-m", "adpulse", "import", *args, "--redis-url", replica.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"adpulse import {command}: Redis unavailable during" in done.stderr
    assert "read only replica" in done.stderr
    assert "--redis-url / ADPULSE_REDIS_URL" in done.stderr
