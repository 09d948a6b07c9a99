"""The harness itself: real broker and redis-server, restartable, isolated per test."""

from __future__ import annotations

import subprocess
import sys

import redis.asyncio
from aiokafka import AIOKafkaProducer
from redis.asyncio.cluster import RedisCluster as RedisClusterClient

from tests.conftest import RedisDatabase
from tests.kafka_helpers import TopicReader, create_topic, wait_until, wait_until_sync
from tests.services import KafkaService, RedisCluster, RedisService, kafka_metadata_answers


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def describe_partitions(bootstrap: str, topic: str) -> int:
    # In a fresh interpreter, as a subprocess-driven test would see it.
    code = (
        "import asyncio, sys\n"
        "from aiokafka.admin import AIOKafkaAdminClient\n"
        "async def main():\n"
        "    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1])\n"
        "    await admin.start()\n"
        "    (topic,) = await admin.describe_topics([sys.argv[2]])\n"
        "    await admin.close()\n"
        "    print(len(topic['partitions']))\n"
        "asyncio.run(main())\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code, bootstrap, topic],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(answer.stdout.strip())


async def test_topic_fixture_creates_topic_and_rejected_topic(
    kafka: KafkaService, topic: str
) -> None:
    assert topic.startswith("adpulse.events.t")
    assert describe_partitions(kafka.bootstrap, topic) == 4
    assert describe_partitions(kafka.bootstrap, f"{topic}.rejected") == 1


async def test_create_topic_is_idempotent(kafka: KafkaService, topic: str) -> None:
    await create_topic(kafka.bootstrap, topic, 4)


async def test_records_round_trip_through_the_broker(kafka: KafkaService, topic: str) -> None:
    sent = [(f"k{number}".encode(), f'{{"n": {number}}}'.encode()) for number in range(20)]
    async with TopicReader(kafka.bootstrap, topic) as reader:
        await produce(kafka.bootstrap, topic, sent)
        records = await reader.wait_for_count(20, timeout=10)

    assert sorted((record.key, record.value) for record in records) == sorted(sent)
    assert sorted(value["n"] for value in reader.values()) == list(range(20))
    assert len({record.partition for record in records}) > 1  # keys spread over partitions


async def test_broker_restart_answers_again_and_reader_rereads(
    restartable_kafka: KafkaService, topic: str
) -> None:
    kafka = restartable_kafka
    async with TopicReader(kafka.bootstrap, topic) as reader:
        await produce(kafka.bootstrap, topic, [(b"a", b"before")])
        await reader.wait_for_count(1, timeout=10)

        kafka.stop()
        assert not kafka.running
        kafka.start()
        host, _, port = kafka.bootstrap.partition(":")
        assert kafka_metadata_answers(host, int(port))
        # The memory broker forgot everything; start() re-created the declared topics.
        assert describe_partitions(kafka.bootstrap, topic) == 4

        await produce(kafka.bootstrap, topic, [(b"a", b"after")])
        records = await reader.wait_for(
            lambda seen: any(record.value == b"after" for record in seen), timeout=10
        )

    assert [record.value for record in records] == [b"before", b"after"]
    assert records[-1].offset == 0
    assert reader.restarts == 1


async def test_broker_left_stopped_by_a_test_runs_again(kafka: KafkaService) -> None:
    assert kafka.running


async def test_redis_restart_keeps_data(
    restartable_redis: RedisService, redis_db: RedisDatabase
) -> None:
    client = redis.asyncio.Redis.from_url(redis_db.url)
    try:
        await client.set("adpulse:harness", "kept")
        await client.aclose()

        restartable_redis.stop()
        assert not restartable_redis.running
        restartable_redis.start()

        client = redis.asyncio.Redis.from_url(redis_db.url)
        assert await client.get("adpulse:harness") == b"kept"
    finally:
        await client.aclose()


async def test_redis_db_is_clean_and_private(redis_db: RedisDatabase) -> None:
    client = redis.asyncio.Redis.from_url(redis_db.url)
    try:
        assert await client.dbsize() == 0
        assert redis_db.url.endswith(f"/{redis_db.number}")
        assert redis_db.number != 0
    finally:
        await client.aclose()


async def test_wait_until_polls_a_condition() -> None:
    calls: list[int] = []

    def third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until(third_call, timeout=2, interval=0.001)
    wait_until_sync(lambda: True, timeout=1)
    assert len(calls) == 3


async def test_redis_cluster_spreads_slots_and_keeps_data_across_a_restart(
    cluster_redis: RedisCluster,
) -> None:
    client = RedisClusterClient.from_url(
        cluster_redis.url.replace("redis+cluster://", "redis://"), decode_responses=True
    )
    try:
        nodes = await client.cluster_nodes()
        masters = [name for name, node in nodes.items() if "master" in str(node["flags"])]
        assert len(masters) == 3
        for tag in ("a", "b", "c", "d", "e", "f"):
            await client.set(f"{{{tag}}}:x", tag)
    finally:
        await client.aclose()
    cluster_redis.stop()
    assert not cluster_redis.running
    cluster_redis.start()
    client = RedisClusterClient.from_url(
        cluster_redis.url.replace("redis+cluster://", "redis://"), decode_responses=True
    )
    try:
        assert [await client.get(f"{{{tag}}}:x") for tag in "abcdef"] == list("abcdef")
    finally:
        await client.aclose()
