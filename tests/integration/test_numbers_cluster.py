"""Tracked phone numbers on a real three-master Redis Cluster (issue 16): `adpulse numbers`
writes the registry under its one hash tag (`NumberKeys.in_cluster`), and a real tracker whose
`--redis-url` is the cluster leases pool numbers to visitors and attributes calls from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from redis.crc import key_slot

from adpulse.core.phone import POOL, STATIC, NumberEntry, NumberKeys
from stream.number_registry import NumberRegistry
from stream.store import KpiStore
from tests.integration.conftest import TRACKER_ENV, serving
from tests.integration.test_calls import FLYER, HASH_KEY, call, lease, numbers, post_calls
from tests.integration.test_calls import POOL as POOLED
from tests.kafka_helpers import wait_until
from tests.processes import Tracker
from tests.services import KafkaService, RedisCluster, RedisServer
from tracker.numbers import REDIS_TIMEOUT_SECONDS, NumberDesk, NumbersUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("registry_env")]

KEYS = NumberKeys.in_cluster()
# The longest a page or a webhook may wait on a hanging Redis: the desk's one timeout, and the
# scheduling of a loaded test machine.
BOUND = REDIS_TIMEOUT_SECONDS + 1.0
T = TypeVar("T")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may freeze without stalling other tests."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def registered(url: str) -> tuple[list[NumberEntry], dict[str, str], set[int]]:
    """The registry and static slots as the cluster holds them, and the slots of every key."""
    store = KpiStore.from_url(url)
    try:
        entries = await NumberRegistry(store.client, KEYS).entries()
        static = {str(slot): str(number) for slot, number in
                  (await store.client.hgetall(KEYS.static)).items()}  # fmt: skip
        names = [KEYS.registry, KEYS.static, KEYS.pool("paid_search")]
        for name in names:
            assert await store.client.exists(name), name
    finally:
        await store.close()
    return entries, static, {key_slot(name.encode()) for name in names}


async def test_numbers_are_added_moved_listed_and_removed_on_a_cluster(
    cluster_redis: RedisCluster,
) -> None:
    url = cluster_redis.url
    done = numbers(url, "add", "+1 415 555 0100", "Flyers")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "+14155550100 -> flyers"
    # Moved from its static slot into a pool: the registry's MULTI/EXEC in the one slot.
    moved = numbers(url, "pool", "add", "paid_search", "+14155550100", *POOLED)
    assert moved.returncode == 0, moved.stderr
    assert "+14155550100 -> pool of paid_search (moved from flyers)" in moved.stdout
    assert numbers(url, "add", FLYER, "flyers", "--campaign", "spring").returncode == 0

    entries, static, slots = await registered(url)
    assert len(slots) == 1
    assert entries == [
        NumberEntry("+14155550100", POOL, "paid_search"),
        NumberEntry(POOLED[0], POOL, "paid_search"),
        NumberEntry(POOLED[1], POOL, "paid_search"),
        NumberEntry(FLYER, STATIC, "flyers", "spring"),
    ]
    assert static == {"flyers\tspring": FLYER}
    listed = numbers(url, "list").stdout.splitlines()
    assert [line.split() for line in listed] == [
        ["+14155550100", "pool", "paid_search", "-"],
        [POOLED[0], "pool", "paid_search", "-"],
        [POOLED[1], "pool", "paid_search", "-"],
        [FLYER, "static", "flyers", "spring"],
    ]
    assert numbers(url, "remove", "+14155550100").returncode == 0
    assert numbers(url, "remove", "+14155550100").returncode == 1
    entries, _, _ = await registered(url)
    assert "+14155550100" not in {entry.number for entry in entries}


@pytest.fixture
def cluster_tracker(
    kafka: KafkaService, topic: str, tmp_path: Path, cluster_redis: RedisCluster
) -> Iterator[Tracker]:
    """A tracker on the cluster's number desk, with paid_search's pool and a static number."""
    url = cluster_redis.url
    for change in (("pool", "add", "paid_search", *POOLED), ("add", FLYER, "flyers")):
        done = numbers(url, *change)
        assert done.returncode == 0, done.stderr
    process = Tracker(
        kafka=kafka.bootstrap,
        topic=topic,
        spool_dir=tmp_path / "spool",
        log=tmp_path / "tracker.log",
        env={**TRACKER_ENV, "ADPULSE_HASH_KEY": HASH_KEY},
        extra=["--redis-url", url, "--call-qualified-seconds", "60"],
    )
    yield from serving(process)


async def test_a_tracker_leases_numbers_and_attributes_calls_from_a_cluster(
    cluster_tracker: Tracker, cluster_redis: RedisCluster
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        first = await lease(http, cluster_tracker, "channel=paid_search&campaign=x&click_id=v-a")
        second = await lease(http, cluster_tracker, "channel=paid_search&click_id=v-b")
        assert first[0] == second[0] == 200
        assert {first[1]["number"], second[1]["number"]} == set(POOLED)
        again = await lease(http, cluster_tracker, "channel=paid_search&campaign=x&click_id=v-a")
        assert again == first
        static = await lease(http, cluster_tracker, "channel=flyers&click_id=v-c")
        assert static[1]["number"] == FLYER

        # A call to the leased number counts for the visit; one to the static number for its
        # channel; one to a number nobody registered for nobody.
        calls = [
            call("cluster-1", first[1]["number"], "+14155557777", 120, answered=True),
            call("cluster-2", FLYER, None, 30, answered=True),
            call("cluster-3", "+14155550000", None, 30, answered=True),
        ]
        status, body = await post_calls(http, cluster_tracker, calls)
        assert status == 202, body
        assert body["channels"] == ["paid_search", "flyers", "unattributed"]

        # The cluster down: a page keeps its printed number, a webhook is told to retry.
        cluster_redis.stop()
        assert (await lease(http, cluster_tracker, "channel=paid_search&click_id=v-d"))[0] == 204
        status, body = await post_calls(http, cluster_tracker, calls[1])
        assert (status, body["error"]) == (503, "unavailable")
        async with http.get(f"{cluster_tracker.url}/metrics") as response:
            metrics = await response.text()
    assert 'adpulse_tracker_number_requests_total{outcome="leased"} 2.0' in metrics
    assert 'adpulse_tracker_number_requests_total{outcome="renewed"} 1.0' in metrics
    assert 'adpulse_tracker_number_requests_total{outcome="failed"} 1.0' in metrics


async def timed(answer: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    return await answer, time.monotonic() - started


async def test_a_hanging_master_costs_a_visitor_and_a_webhook_one_timeout(
    cluster_tracker: Tracker, cluster_redis: RedisCluster
) -> None:
    """The master of the numbers' slot stops answering, its connections open (a stall, a
    partition): the page's number and the webhook's attribution fail within the desk's one
    timeout (`tracker.numbers`), not after the cluster client's retries and refreshes."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        leased = await lease(http, cluster_tracker, "channel=paid_search&click_id=v-a")
        assert leased[0] == 200
        with cluster_redis.frozen_master(KEYS.registry):
            (page, page_took), (hook, hook_took) = await asyncio.gather(
                timed(lease(http, cluster_tracker, "channel=paid_search&click_id=v-b")),
                timed(post_calls(http, cluster_tracker, call("c-1", FLYER, None, 30, True))),
            )
        assert page[0] == 204
        assert (hook[0], hook[1]["error"]) == (503, "unavailable")
        assert page_took < BOUND, page_took
        assert hook_took < BOUND, hook_took
        async with http.get(f"{cluster_tracker.url}/metrics") as response:
            metrics = await response.text()
        assert 'adpulse_tracker_number_requests_total{outcome="failed"} 1.0' in metrics
        assert "adpulse_tracker_calls_unavailable_total 1.0" in metrics

        # The master answering again, the same desk leases again: a call cut short by the
        # timeout leaves its client usable.
        async def leases() -> bool:
            status, _ = await lease(http, cluster_tracker, "channel=paid_search&click_id=v-a")
            return status == 200

        await wait_until(leases, timeout=10, interval=0.1, message="leases again")


@pytest.mark.parametrize("cluster", [False, True], ids=["one instance", "cluster"])
async def test_a_desk_gives_up_on_a_hanging_redis_after_one_timeout(
    cluster: bool, cluster_redis: RedisCluster, own_redis: RedisServer
) -> None:
    """Each call of the desk fails with NumbersUnavailable within its one timeout, on one
    instance as on a cluster, whatever the client's own retries would do."""
    if cluster:
        desk = NumberDesk.from_url(cluster_redis.url, lease_seconds=60)
        hanging = cluster_redis.frozen_master(KEYS.registry)
    else:
        desk = NumberDesk.from_url(own_redis.url, lease_seconds=60)
        hanging = own_redis.frozen()
    try:
        assert await desk.lease("paid_search", "", "v-a", 1) is None  # nothing registered
        with hanging:
            for attempt in (
                lambda: desk.lease("paid_search", "", "v-b", 2),
                lambda: desk.attribute(FLYER, 2),
                lambda: desk.lease("paid_search", "", "v-c", 3),  # after the first's refresh
            ):
                started = time.monotonic()
                with pytest.raises(NumbersUnavailable):
                    await attempt()
                assert time.monotonic() - started < BOUND
    finally:
        await desk.close()
