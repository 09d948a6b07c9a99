"""The worker's exactness tests against a real three-master Redis Cluster (issue 16, must-show
3): the same tests as against one redis-server (`test_worker_pipeline`, `test_redelivery`), with
`redis_db` (the Redis every worker, store and reader of a test uses) and `restartable_redis`
(the Redis a test stops and starts) the harness's cluster, and ADPULSE_REDIS_URL's cluster form
``redis+cluster://`` in every process (`keys`, "Redis Cluster").

Redelivery has a test of its own here: a part holds a subsequence of a partition's rows, so a
new log (a broker restarted empty) is recognised in a part only once its rows pass the offset
that part applied last; until then its re-read records are caught by their event ids, counted
as duplicates rather than redelivered. The counters are exact either way."""

from __future__ import annotations

import uuid

import pytest

from stream.keys import KeySpace
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_redelivery import clicks, new_ids
from tests.integration.test_worker_pipeline import (
    store,
    test_duplicates_and_resent_orders_change_nothing,
    test_killed_workers_restarted_give_the_same_counters,
    test_redis_outage_commits_nothing_and_loses_nothing,
    workers,
)
from tests.services import RedisCluster

pytestmark = pytest.mark.integration

__all__ = [
    "store",
    "test_duplicates_and_resent_orders_change_nothing",
    "test_killed_workers_restarted_give_the_same_counters",
    "test_redis_outage_commits_nothing_and_loses_nothing",
    "workers",
]


@pytest.fixture
def redis_db(cluster_redis: RedisCluster) -> RedisDatabase:
    """The cluster, flushed before and after the test (`cluster_redis`); one database there."""
    return RedisDatabase(url=cluster_redis.url, number=0)


@pytest.fixture
def restartable_redis(cluster_redis: RedisCluster) -> RedisCluster:
    """The cluster: stopped and started by the outage test, every node at once."""
    return cluster_redis


async def test_redelivered_records_are_skipped_in_every_part_and_a_new_log_is_not(
    cluster_redis: RedisCluster,
) -> None:
    store = KpiStore.from_url(cluster_redis.url, keys=KeySpace(f"re{uuid.uuid4().hex[:8]}:"))
    try:
        log = new_ids(15)
        first = await store.apply_decoded(clicks(log[:10], 0))
        assert (first.applied, first.redelivered) == (10, 0)
        # The same batch again: every part finds the row it applied last in its slice.
        again = await store.apply_decoded(clicks(log[:10], 0))
        assert (again.applied, again.duplicates, again.redelivered) == (0, 0, 10)
        overlap = await store.apply_decoded(clicks(log[5:15], 5))
        assert overlap.applied == 5
        assert overlap.duplicates + overlap.redelivered == 5
        # A new log from offset 0: none of its records is skipped.
        short = await store.apply_decoded(clicks(new_ids(5), 0))
        assert (short.applied, short.redelivered) == (5, 0)
        newer = new_ids(20)
        longer = await store.apply_decoded(clicks(newer, 0))
        assert (longer.applied, longer.redelivered) == (20, 0)
        reread = await store.apply_decoded(clicks(newer[10:], 10))
        assert reread.applied == 0
        assert reread.duplicates + reread.redelivered == 10

        assert (await store.totals())["email"].clicks == 15 + 5 + 20
        assert (await store.stats())["applied"] == 15 + 5 + 20
    finally:
        await store.close()
