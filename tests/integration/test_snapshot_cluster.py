"""Snapshots on a real three-master Redis Cluster (issue 16; `stream.snapshot`, "Redis Cluster"):
a cluster's snapshot restores every key of every part exactly, customer facts on their way
between parts included; a snapshot of one instance restores into a cluster, which then counts on
as the instance does; the reverse is refused; `adpulse rebuild --snapshot` on a cluster, with
only the events after the snapshot left to replay, gives the counters from before the loss."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as RedisClusterClient

from adpulse.core.event import EventType
from stream import snapshot as snapshot_module
from stream.batch import decode_events
from stream.keys import CLUSTER_PARTS, KeySpace
from stream.report import parse_request
from stream.snapshot import (
    CLUSTER_FORMAT,
    FORMAT,
    PAUSE_LEASE_MS,
    SnapshotError,
    _node_clients,
    _read_paused,
    export_snapshot,
    load,
    restore,
    save,
)
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_rebuild import registry_topic, with_duplicates
from tests.integration.test_rebuild_cluster import readings
from tests.integration.test_store_cluster import (
    _DiesAfterFirstCalls,
    _in_distinct_parts,
    assert_same_customers,
    customer_batches,
)
from tests.integration.test_store_redis import scenario
from tests.integration.test_worker_cluster import shoppers
from tests.integration.test_worker_pipeline import COUPONS, Scenario, committed_offsets
from tests.integration.test_worker_pipeline import produce as produce_events
from tests.kafka_helpers import wait_until
from tests.processes import Worker
from tests.rebuilds import adpulse
from tests.services import KafkaService, RedisCluster
from tests.unit.test_stream_aggregate import COUPONS as STORE_COUPONS
from tests.unit.test_stream_aggregate import NOW, make_event

pytestmark = pytest.mark.integration

__all__ = ["registry_topic"]

TOPIC = "adpulse.events"


@pytest.fixture
async def cluster_store(cluster_redis: RedisCluster) -> AsyncIterator[KpiStore]:
    store = KpiStore.from_url(cluster_redis.url)
    await store.import_coupons(STORE_COUPONS.items())
    yield store
    await store.close()


@pytest.fixture
async def single_store(redis_db: RedisDatabase) -> AsyncIterator[KpiStore]:
    store = KpiStore.from_url(redis_db.url)
    await store.import_coupons(STORE_COUPONS.items())
    yield store
    await store.close()


async def every_key(store: KpiStore, prefix: str) -> dict[str, tuple[str, Any, int]]:
    """Every key under `prefix` on every master: (type, value, expiry in Unix ms or -1)."""
    client = store.client
    assert isinstance(client, RedisClusterClient)
    found: dict[str, tuple[str, Any, int]] = {}
    async for name in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = str(await client.type(name))
        value: Any
        if kind == "hash":
            value = await client.hgetall(name)
        elif kind == "set":
            value = await client.smembers(name)
        elif kind == "list":
            value = await client.lrange(name, 0, -1)
        else:
            value = await client.get(name)
        found[name[len(prefix) :]] = (kind, value, int(await client.pexpiretime(name)))
    return found


async def assert_same_reports(cluster: KpiStore, single: KpiStore) -> None:
    """What `adpulse report` and the read API answer, by channel and by campaign, and the
    figures customers touch, from the cluster and from one instance."""
    await assert_same_customers(cluster, single)
    for group_by in ("channel", "campaign"):
        params = {"from": f"{NOW - timedelta(days=1):%Y-%m-%d}", "to": f"{NOW:%Y-%m-%d}",
                  "group_by": group_by, "compare": "previous_period"}  # fmt: skip
        request = parse_request(params, NOW.date(), int(NOW.timestamp()) // 60)
        sums = await cluster.report_sums(request)
        assert sums["current"]
        assert sums == await single.report_sums(request)
    month = int(NOW.strftime("%Y%m"))
    assert await cluster.month_campaigns(month) == await single.month_campaigns(month)
    assert await cluster.stats() == await single.stats()


async def test_a_cluster_snapshot_restores_every_key_of_every_part(
    cluster_store: KpiStore, single_store: KpiStore, cluster_redis: RedisCluster, tmp_path: Path
) -> None:
    batches = [*customer_batches(), scenario()]
    # One more sale of a known customer, whose fact a worker SIGKILLed between the batch's two
    # calls leaves in its part's outbox: on its way, in the snapshot.
    (order,) = _in_distinct_parts("late-", 1)
    stranded = make_event("s1", EventType.CONVERSION, NOW, order_id=order, channel="video",
                          customer_id="cust-a", value_micros=2_500_000)  # fmt: skip
    for batch in [*batches, [stranded]]:
        await single_store.apply_batch(batch, now=NOW)
    for batch in batches:
        await cluster_store.apply_batch(batch, now=NOW)
    dying = _DiesAfterFirstCalls.from_url(cluster_redis.url)
    try:
        with pytest.raises(asyncio.CancelledError):
            await dying.apply_batch([stranded], now=NOW)
    finally:
        await dying.close()
    keys = KeySpace()
    before = await every_key(cluster_store, keys.prefix)
    outboxes = [name for name, (kind, _, _) in before.items() if kind == "list"]
    assert len(outboxes) == 1, outboxes

    path = tmp_path / "cluster.json"
    snapshot = await export_snapshot(cluster_store.client, keys, {0: 7}, TOPIC, "worker")
    await save(snapshot, path)
    document = orjson.loads(path.read_bytes())
    assert (document["format"], document["parts"]) == (CLUSTER_FORMAT, CLUSTER_PARTS)
    assert {entry["key"] for entry in document["keys"]} == set(before)
    assert {"coupons", "channels"} <= {entry["key"] for entry in document["keys"]}

    # One instance cannot take a cluster's parts: refused before anything is written.
    with pytest.raises(SnapshotError, match=r"redis\+cluster://"):
        await restore(single_store.client, await load(path), KeySpace("adpulse-t:"))
    assert not await single_store.client.keys("adpulse-t:*")

    cluster_redis.flush()
    assert not await every_key(cluster_store, keys.prefix)
    assert await restore(cluster_store.client, await load(path), keys) == len(before)
    assert await every_key(cluster_store, keys.prefix) == before

    # The stranded fact is still on its way: sent at a worker's start, it counts once.
    restarted = KpiStore.from_url(cluster_redis.url)
    try:
        await restarted.send_customer_facts()
        assert not await restarted._read_outboxes()
        await assert_same_customers(restarted, single_store)
        assert await restarted.stats() == await single_store.stats()
        assert await restarted.list_coupons() == await single_store.list_coupons()
    finally:
        await restarted.close()


async def test_a_snapshot_of_one_instance_restores_into_a_cluster_that_counts_on_alike(
    cluster_store: KpiStore, single_store: KpiStore, tmp_path: Path
) -> None:
    first, second, third = customer_batches()
    events = scenario()
    for batch in (first, second, events):
        await single_store.apply_batch(batch, now=NOW)
    path = tmp_path / "single.json"
    await save(await export_snapshot(single_store.client, single_store.keys, {}, TOPIC, "w"), path)
    assert orjson.loads(path.read_bytes())["format"] == FORMAT

    keys = KeySpace(f"adpulse-r{uuid.uuid4().hex[:8]}:")
    cluster = KpiStore(cluster_store.client, keys=keys)
    assert await restore(cluster_store.client, await load(path), keys)
    await assert_same_reports(cluster, single_store)
    assert await cluster.list_coupons() == await single_store.list_coupons()

    # The cluster counts on as the instance: restatements of restored orders, repeat sales of
    # restored customers, re-sent events (remembered by the instance: duplicates here too).
    repeats = [
        make_event(f"r-{customer}", EventType.CONVERSION, NOW, order_id=f"ord-r-{customer}",
                   channel="video", customer_id=customer, value_micros=1_500_000)
        for customer in ("cust-a", "cust-b", "cust-c", *(f"cust-new{n}" for n in range(6)))
    ]  # fmt: skip
    for store in (single_store, cluster):
        await store.apply_batch([*third, *repeats], now=NOW)
        again = await store.apply_decoded(decode_events([*events[:6], *first]), now=NOW)
        assert (again.applied, again.duplicates) == (0, 6 + len(first))
    await assert_same_reports(cluster, single_store)
    # Customers went to their own parts only; a bucket a part lacked gets its expiry when the
    # part's first customer there is written, as every other remembered id.
    remembered = {name: expiry for name, (_, _, expiry) in (await every_key(cluster, keys.prefix)).items()
                  if ":cust:" in name}  # fmt: skip
    assert remembered
    assert all(expiry > 0 for expiry in remembered.values()), {
        n: e for n, e in remembered.items() if not e or e <= 0
    }


async def test_rebuild_from_a_snapshot_on_a_cluster_replays_only_what_came_after_it(
    kafka: KafkaService,
    topic: str,
    registry_topic: str,
    cluster_redis: RedisCluster,
    redis_db: RedisDatabase,
    tmp_path: Path,
) -> None:
    """Kafka's retention shorter than the history, as `rebuild` sees it: the snapshot covers the
    first scenario, the log after it holds the second only."""
    url = cluster_redis.url
    kafka_flags = ["--kafka", kafka.bootstrap, "--registry-topic", registry_topic]
    coupons_csv = tmp_path / "coupons.csv"
    coupons_csv.write_text("code,channel\n" + "".join(f"{c},{ch}\n" for c, ch in COUPONS.items()))
    imported = adpulse("coupons", "import", str(coupons_csv), "--redis-url", url, *kafka_flags)
    assert imported.returncode == 0, imported.stderr

    first, second = Scenario.build(), Scenario.build()
    # Customers' first sales before the snapshot, their repeat sales, restatements and re-sends
    # after it: the rebuild counts those against the customers and orders the snapshot keeps.
    shop = shoppers(second.now, 4, 16)
    earlier = [*first.events, *shop[:4]]
    later = [*with_duplicates(second), *shop[4:]]
    months = {int(f"{event.ts:%Y%m}") for event in [*earlier, *later]}
    group = f"adpulse-worker-t{uuid.uuid4().hex[:8]}"
    snapshot = tmp_path / "adpulse-snapshot.json"
    flags = ["--redis-url", url, "--topic", topic, "--group", group, *kafka_flags]
    worker = Worker(kafka=kafka.bootstrap, topic=topic, redis_url=url,
                    log=tmp_path / "worker.log", group=group)  # fmt: skip
    try:
        for produced in (earlier, later):
            ends = await produce_events(kafka.bootstrap, topic, produced)

            async def committed_all(ends: list[int] = ends) -> bool:
                return await committed_offsets(kafka.bootstrap, group, topic) == ends

            await wait_until(committed_all, timeout=30, interval=0.2, message="caught up")
            if produced is earlier:  # taken while the worker runs
                _, at_export = await readings(url, months, first)
                exported = adpulse("snapshot", "export", str(snapshot), *flags)
                assert exported.returncode == 0, exported.stderr
                assert "covering" in exported.stdout
    finally:
        assert worker.terminate() == 0, worker.log()
    assert orjson.loads(snapshot.read_bytes())["format"] == CLUSTER_FORMAT

    _, before = await readings(url, months, second)
    assert any(before["cohorts"].values()), "customers counted"
    cluster_redis.flush()  # FLUSHALL on every master
    rebuilt = adpulse("rebuild", "--snapshot", str(snapshot), *flags)
    assert rebuilt.returncode == 0, rebuilt.stderr
    # Only the records after the snapshot were replayed: the first scenario's came from it.
    assert f" {len(later)} records" in rebuilt.stdout, rebuilt.stdout
    assert f"started from {snapshot}" in rebuilt.stdout
    prefix, after = await readings(url, months, second)
    assert prefix.startswith("adpulse-r")
    for name in sorted(before):
        assert after[name] == before[name], name

    # `snapshot import` alone: the counters as they were at export, nothing replayed.
    restored = adpulse("snapshot", "import", str(snapshot), *flags)
    assert restored.returncode == 0, restored.stderr
    _, imported_now = await readings(url, months, first)
    for name in sorted(at_export):
        assert imported_now[name] == at_export[name], name

    # Not into one instance: refused before anything is written, saying what to do instead.
    for command in (("snapshot", "import"), ("rebuild", "--snapshot")):
        refused = adpulse(*command, str(snapshot), *flags, "--redis-url", redis_db.url)
        assert refused.returncode == 1, refused.stdout
        assert "redis+cluster://" in refused.stderr, refused.stderr


async def test_a_cluster_snapshot_is_consistent_while_a_worker_writes(
    cluster_store: KpiStore, cluster_redis: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Customer facts move between parts all the time under a worker's load; each export reads
    the parts while the worker writes, and where facts moved meanwhile reads them once more with
    writes paused, which agrees: never a third read, never a failed export."""
    stop = asyncio.Event()
    batches = 0

    async def worker() -> None:
        nonlocal batches
        writer = KpiStore.from_url(cluster_redis.url)
        try:
            while not stop.is_set():
                run = uuid.uuid4().hex[:6]
                await writer.apply_batch(
                    [make_event(f"{run}-{n}", EventType.CONVERSION, NOW, order_id=f"o{run}-{n}",
                                channel="search", customer_id=f"c{n % 5}", value_micros=1_000)
                     for n in range(40)],
                    now=NOW,
                )  # fmt: skip
                batches += 1
        finally:
            await writer.close()

    writing = asyncio.ensure_future(worker())
    reads = []
    try:
        for _ in range(5):
            before = batches

            def wrote(before: int = before) -> bool:
                return batches > before

            # Facts moved since the last export (a pause, if any, has ended).
            await wait_until(wrote, timeout=10, interval=0.01, message="the worker wrote")
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="stream.snapshot"):
                snapshot = await export_snapshot(cluster_store.client, KeySpace(), {}, TOPIC, "w")
            again = [record.getMessage() for record in caplog.records
                     if record.getMessage().startswith("reading the parts again")]  # fmt: skip
            assert all("with writes paused" in message for message in again), again
            reads.append(1 + len(again))
            assert any(entry["key"].endswith(":outbox") for entry in snapshot.keys)
    finally:
        stop.set()
        await writing
    # Each export is consistent by its second read at the latest (the paused one): a third
    # would mean the pause did not hold the parts still. Whether a first read already is
    # depends on the worker's pace, so that is not asserted.
    assert max(reads) <= 2, reads


Masters = tuple[RedisClusterClient, dict[int, AsyncRedis], list[AsyncRedis]]


@pytest.fixture
async def masters(cluster_store: KpiStore) -> AsyncIterator[Masters]:
    """The cluster's client, part number -> its master's client, and the masters, as an export
    has them."""
    client = cluster_store.client
    assert isinstance(client, RedisClusterClient)
    clients = await _node_clients(client, KeySpace())
    unique = list({id(master): master for master in clients.values()}.values())
    yield client, clients, unique
    for master in unique:
        await master.aclose(close_connection_pool=True)


async def assert_writes_go(clients: dict[int, AsyncRedis]) -> None:
    """A write to every master answers well within a pause's lease: none is left paused."""
    parts = {id(master): (number, master) for number, master in clients.items()}
    for number, master in parts.values():
        async with asyncio.timeout(PAUSE_LEASE_MS / 4000):
            await master.set(f"{KeySpace().part(number).prefix}probe", 1)


@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_cancelled_export_leaves_no_master_paused(
    cluster_store: KpiStore, masters: Masters, cancels: int
) -> None:
    """Ctrl-C or a timeout at any point of a read with writes paused (while pausing, reading,
    resuming; `cancels` 2: once more while it resumes): every master a pause was sent to is
    resumed before the cancellation goes on. Each run is cancelled after more turns of the event
    loop than the last, until a run ends before it is cancelled."""
    await cluster_store.apply_batch(customer_batches()[0], now=NOW)
    client, clients, unique = masters
    # Every turn while the masters are paused, then every thirtieth: the read is much the same.
    for turns in itertools.chain(range(40), itertools.count(40, 30)):
        paused: list[AsyncRedis] = []
        reading = asyncio.ensure_future(_read_paused(client, clients, unique, KeySpace(), paused))
        for _ in range(turns):
            await asyncio.sleep(0)
        if reading.done():
            assert await reading is not None
            break
        for _ in range(cancels):
            reading.cancel()
            for _ in range(turns % 5):
                await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert not paused, turns
        await assert_writes_go(clients)
    assert turns > 10


async def test_a_paused_read_that_takes_too_long_gives_up_and_resumes(
    cluster_store: KpiStore,
    masters: Masters,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes are paused for `PAUSE_LIMIT_SECONDS` at most: a longer read fails the export,
    saying to stop the workers, and the masters write again at once."""
    await cluster_store.apply_batch(customer_batches()[0], now=NOW)
    client, clients, unique = masters
    monkeypatch.setattr(snapshot_module, "PAUSE_LIMIT_SECONDS", 0.0)
    with pytest.raises(SnapshotError, match="stop the workers"):
        await _read_paused(client, clients, unique, KeySpace())
    await assert_writes_go(clients)


async def test_masters_that_refuse_to_pause_are_read_with_the_check_alone(
    cluster_store: KpiStore, cluster_redis: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A user without CLIENT PAUSE (a managed cluster's): with no worker writing, the export
    reads once and never asks for a pause; where it must, it warns and reads without one."""
    await cluster_store.apply_batch(customer_batches()[0], now=NOW)
    user, password = f"snap{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    nodes = [redis.Redis(port=port) for port in cluster_redis.ports]
    for node in nodes:
        node.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"],
                         channels=["*"], commands=["+@all", "-client|pause"])  # fmt: skip
    refusing = KpiStore.from_url(
        f"redis+cluster://{user}:{password}@127.0.0.1:{cluster_redis.ports[0]}"
    )
    client = refusing.client
    assert isinstance(client, RedisClusterClient)
    try:
        with caplog.at_level(logging.INFO, logger="stream.snapshot"):
            snapshot = await export_snapshot(client, KeySpace(), {}, TOPIC, "w")
        assert not [record for record in caplog.records if record.name == "stream.snapshot"]
        assert {entry["key"] for entry in snapshot.keys} == set(
            await every_key(cluster_store, KeySpace().prefix)
        )

        clients = await _node_clients(client, KeySpace())
        unique = list({id(master): master for master in clients.values()}.values())
        try:
            with caplog.at_level(logging.WARNING, logger="stream.snapshot"):
                assert await _read_paused(client, clients, unique, KeySpace()) is None
            assert "cannot pause writes on the cluster's masters" in caplog.text
            await assert_writes_go(clients)
        finally:
            for master in unique:
                await master.aclose(close_connection_pool=True)
    finally:
        await refusing.close()
        for node in nodes:
            node.acl_deluser(user)
            node.close()
