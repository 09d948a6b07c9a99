"""Shared fixtures: real services started once per session, a clean namespace per test.

Session fixtures
    kafka          `KafkaService`: `.bootstrap` ("127.0.0.1:PORT"), `.stop()`, `.start()`,
                   `.running`, `.restartable`, `.declare_topic()`, `.forget_topic()`.
                   The embedded Tansu broker, or the Kafka named by ADPULSE_KAFKA=host:port.
    redis_server   `RedisService`: `.url` (redis://127.0.0.1:PORT/0), `.url_for(db)`, `.stop()`,
                   `.start()` (data kept across a restart), `.running`, `.restartable`.
                   A private redis-server, or the Redis named by ADPULSE_REDIS_URL.
    redis_cluster  `RedisCluster`: a Redis Cluster of three redis-server masters on loopback
                   ports (`.url` is redis+cluster://127.0.0.1:PORT), `.stop()`, `.start()` (data
                   kept), `.flush()`; started on first use. Use it through `cluster_redis`.

Function fixtures
    topic              a unique topic name "adpulse.events.t<8 hex>" created with 4 partitions,
                       plus "<name>.rejected" with 1; both re-created after a broker restart and
                       deleted after the test.
    redis_db           `RedisDatabase` (`.url`, `.number`): a database of its own, numbered 1 to
                       15 in turn and flushed before and after the test. A database rather than a
                       key prefix, so the code under test needs no prefix option; db 0 is left for
                       poking by hand. An external ADPULSE_REDIS_URL server must be disposable:
                       databases 1-15 are flushed.
    restartable_kafka  `kafka`, for tests that stop and start it: skips (fails under CI=true)
    restartable_redis  on an external service; the broker/server runs again after the test.
    cluster_redis      `redis_cluster`, flushed before and after the test and running again
                       after it (a test may stop and start it).

Whatever a test does, a service it stopped is started again after it (`_services_running`).
A missing binary skips with the install command, and fails when CI=true. Every test under
tests/integration is marked `integration` (`pytest -m "not integration"` runs the rest).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from tests.services import (
    BinaryNotFound,
    ExternalKafka,
    ExternalRedis,
    KafkaBroker,
    KafkaService,
    RedisCluster,
    RedisServer,
    RedisService,
    kafka_metadata_answers,
)

INTEGRATION_DIR = Path(__file__).parent / "integration"
TOPIC_PARTITIONS = 4


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaService]:
    external = os.environ.get("ADPULSE_KAFKA")
    if external:
        host, _, port = external.rpartition(":")
        try:
            kafka_metadata_answers(host, int(port))
        except (OSError, ValueError) as error:
            pytest.fail(f"ADPULSE_KAFKA={external} does not answer Kafka: {error}", pytrace=False)
        yield ExternalKafka(external)
        return
    try:
        broker = KafkaBroker()
    except BinaryNotFound as error:
        _unavailable(str(error))
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisService]:
    external = os.environ.get("ADPULSE_REDIS_URL")
    if external:
        try:
            with redis.Redis.from_url(external, socket_timeout=2) as client:
                client.ping()
        except redis.RedisError as error:
            pytest.fail(f"ADPULSE_REDIS_URL={external} does not answer: {error}", pytrace=False)
        yield ExternalRedis(external)
        return
    try:
        server = RedisServer()
    except BinaryNotFound as error:
        _unavailable(str(error))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    try:
        cluster = RedisCluster()
    except BinaryNotFound as error:
        _unavailable(str(error))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster_redis(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    redis_cluster.flush()
    yield redis_cluster
    if not redis_cluster.running:
        redis_cluster.stop(grace=0)  # the nodes a test left running, before all start again
        redis_cluster.start()
    with contextlib.suppress(redis.ConnectionError):
        redis_cluster.flush()


@pytest.fixture(autouse=True)
def _services_running(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    set_up = getattr(request.node, "funcargs", {})
    for name in ("kafka", "redis_server"):
        service: KafkaService | RedisService | None = set_up.get(name)
        if service is not None and service.restartable and not service.running:
            service.start()


@pytest.fixture
def restartable_kafka(kafka: KafkaService) -> Iterator[KafkaService]:
    if not kafka.restartable:
        _unavailable(f"this test stops and starts Kafka; {kafka.bootstrap} is external")
    yield kafka
    if not kafka.running:
        kafka.start()


@pytest.fixture
def restartable_redis(redis_server: RedisService) -> Iterator[RedisService]:
    if not redis_server.restartable:
        _unavailable(f"this test stops and starts Redis; {redis_server.url} is external")
    yield redis_server
    if not redis_server.running:
        redis_server.start()


@pytest.fixture
def topic(kafka: KafkaService) -> Iterator[str]:
    name = f"adpulse.events.t{uuid.uuid4().hex[:8]}"
    rejected = f"{name}.rejected"
    kafka.declare_topic(name, TOPIC_PARTITIONS)
    kafka.declare_topic(rejected, 1)
    try:
        yield name
    finally:
        kafka.forget_topic(rejected)
        kafka.forget_topic(name)


@dataclass(frozen=True)
class RedisDatabase:
    url: str
    number: int


_database_numbers = itertools.cycle(range(1, 16))


def _flush(url: str) -> None:
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.flushdb()


@pytest.fixture
def redis_db(redis_server: RedisService) -> Iterator[RedisDatabase]:
    number = next(_database_numbers)
    database = RedisDatabase(url=redis_server.url_for(number), number=number)
    _flush(database.url)
    yield database
    if redis_server.running:
        # Best effort: a database left unflushed is flushed again before its next use.
        with contextlib.suppress(redis.ConnectionError):
            _flush(database.url)
