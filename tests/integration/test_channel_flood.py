"""Random channel names through the real tracker, broker, worker, Redis and exporter.

100,000 events with random channels from anonymous clients used to leave 100,000 never-expiring
fields in the totals hash and black out the exporter and the report (issue 10, defect 2). Now
they count under "unlisted", the scrape and the report take what they took before, and a
caller with the API token creates channels only up to the worker's cap.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from adpulse.core.channels import UNLISTED
from stream.keys import KeySpace
from tests.conftest import RedisDatabase
from tests.integration.conftest import API_TOKEN
from tests.kafka_helpers import TopicReader, wait_until
from tests.metrics import scrape, value
from tests.processes import Exporter, Tracker, Worker, exiting_cleanly
from tests.services import KafkaService

pytestmark = pytest.mark.integration

FLOOD = 100_000
BATCH = 500
KNOWN = ("paid_search", "email", "affiliate", "native")
WORKER_MAX_CHANNELS = 8
# A browser's, so that the clicks are not a bot's (those are counted apart).
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"}


@pytest.fixture
def worker(
    kafka: KafkaService, topic: str, redis_db: RedisDatabase, tmp_path: Path
) -> Iterator[Worker]:
    process = Worker(
        kafka=kafka.bootstrap,
        topic=topic,
        redis_url=redis_db.url,
        log=tmp_path / "worker.log",
        group=f"flood-{uuid.uuid4().hex[:8]}",
        extra=["--batch-size", "5000", "--max-channels", str(WORKER_MAX_CHANNELS)],
    )
    yield from exiting_cleanly(process)


def applied(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return int(client.hget(KeySpace().stats, "applied") or 0)


async def post_batches(
    http: aiohttp.ClientSession, url: str, events: list[dict[str, str]], token: str | None = None
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def post(chunk: list[dict[str, str]]) -> None:
        async with http.post(f"{url}/v1/events", json=chunk, headers=headers) as response:
            assert response.status == 202, await response.text()

    chunks = [events[start : start + BATCH] for start in range(0, len(events), BATCH)]
    for first in range(0, len(chunks), 8):
        await asyncio.gather(*(post(chunk) for chunk in chunks[first : first + 8]))


def scrape_seconds(url: str) -> float:
    started = time.perf_counter()
    samples = scrape(url)
    elapsed = time.perf_counter() - started
    assert value(samples, "adpulse_exporter_redis_up") == 1
    return elapsed


def report_seconds(redis_url: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "adpulse", "report", "--once", "--redis-url", redis_url],
        capture_output=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr.decode()
    return elapsed


def redis_footprint(redis_url: str) -> tuple[int, int, int]:
    """Bytes (MEMORY USAGE) of every key of the database and of the counters (totals, minute
    and hour buckets), and the fields in the totals hash."""
    keys = KeySpace()
    counters = (keys.totals, f"{keys.prefix}m:", f"{keys.prefix}h:")
    total = counted = 0
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        for key in client.scan_iter(count=1000):
            size = int(client.memory_usage(key, samples=0) or 0)
            total += size
            if key.startswith(counters):
                counted += size
        return total, counted, int(client.hlen(keys.totals))


async def test_random_channels_from_anonymous_clients_stay_one_bucket(
    kafka: KafkaService,
    topic: str,
    tracker: Tracker,
    worker: Worker,
    exporter: Exporter,
    redis_db: RedisDatabase,
) -> None:
    baseline = [{"type": "click", "channel": KNOWN[n % len(KNOWN)]} for n in range(2000)]
    async with aiohttp.ClientSession(headers=BROWSER) as http:
        await post_batches(http, tracker.url, baseline)
    await wait_until(lambda: applied(redis_db.url) == len(baseline), timeout=30)
    scrape_before = min([scrape_seconds(exporter.url) for _ in range(3)])
    report_before = min([report_seconds(redis_db.url) for _ in range(2)])
    memory_before, counters_before, _ = redis_footprint(redis_db.url)

    async with TopicReader(kafka.bootstrap, f"{topic}.rejected") as rejected:
        started = time.monotonic()
        flood = [{"type": "click", "channel": f"c{secrets.token_hex(8)}"} for _ in range(FLOOD)]
        async with aiohttp.ClientSession(headers=BROWSER) as http:
            await post_batches(http, tracker.url, flood)
            # The pixel's way too: an unknown channel leaves the fast path for parse_event.
            for _ in range(200):
                query = f"type=click&channel=c{secrets.token_hex(8)}&_=1"
                async with http.get(f"{tracker.url}/p.gif?{query}") as response:
                    assert response.status == 200
        flood_seconds = time.monotonic() - started
        total = len(baseline) + FLOOD + 200
        await wait_until(lambda: applied(redis_db.url) == total, timeout=60)
        tracker_metrics = scrape(f"{tracker.url}/metrics")
        unlisted = value(tracker_metrics, "adpulse_tracker_unlisted_channel_events_total")
        dropped = value(tracker_metrics, "adpulse_tracker_unlisted_channel_samples_dropped_total")
        assert unlisted is not None
        assert dropped is not None
        # Every sample the tracker kept reaches the topic; wait for all of them, not the first.
        await rejected.wait_for_count(int(unlisted - dropped), timeout=20)
        samples = [record.json() for record in rejected.records]

    assert unlisted == FLOOD + 200
    # The raw names are kept for inspection, at most 10 a second and 10 at once; the rest counted.
    assert all(
        sample["field"] == "channel" and sample["status"] in (200, 202) for sample in samples
    )
    assert all(sample["payload"].startswith("c") for sample in samples)
    assert len(samples) <= 10 + 10 * (flood_seconds + 1)
    assert dropped == FLOOD + 200 - len(samples)

    exported = scrape(exporter.url)
    assert value(exported, "adpulse_events_total", channel=UNLISTED, type="click") == FLOOD + 200
    scrape_after = min([scrape_seconds(exporter.url) for _ in range(3)])
    report_after = min([report_seconds(redis_db.url) for _ in range(2)])
    memory_after, counters_after, totals_fields = redis_footprint(redis_db.url)
    print(
        f"\nscrape {scrape_before * 1000:.1f} -> {scrape_after * 1000:.1f} ms, "
        f"report --once {report_before:.2f} -> {report_after:.2f} s, "
        f"Redis keys {memory_before} -> {memory_after} bytes "
        f"(counters {counters_before} -> {counters_after}), totals fields {totals_fields}"
    )
    # Within 2x of before; 50 ms of slack for a shared, noisy machine.
    assert scrape_after <= 2 * scrape_before + 0.05
    assert report_after <= 2 * report_before + 0.05
    # One more channel in the counters: (4 known + unlisted) channels x 1 counter.
    assert totals_fields == len(KNOWN) + 1
    # The counters grow by one channel's fields, not 100,000 channels'; the rest is the flood's
    # event ids, remembered for the dedupe window (about 80 bytes each) whatever the channel.
    assert counters_after - counters_before < 1024
    assert memory_after - memory_before < 120 * (FLOOD + 200)


async def test_channels_sent_with_the_token_are_created_up_to_the_worker_s_cap(
    tracker: Tracker, worker: Worker, redis_db: RedisDatabase
) -> None:
    names = [f"partner_{n}" for n in range(30)]
    events = [{"type": "click", "channel": names[n % len(names)]} for n in range(600)]
    async with aiohttp.ClientSession(headers=BROWSER) as http:
        await post_batches(http, tracker.url, events, token=API_TOKEN)
        # A wrong token is refused, not silently made anonymous.
        async with http.post(
            f"{tracker.url}/v1/events",
            json={"type": "click", "channel": "partner_x"},
            headers={"Authorization": "Bearer wrong"},
        ) as response:
            assert response.status == 401
    await wait_until(lambda: applied(redis_db.url) == len(events), timeout=30)

    with redis.Redis.from_url(redis_db.url, decode_responses=True) as client:
        kept = client.smembers(KeySpace().channels)
        totals = client.hgetall(KeySpace().totals)
        folded = int(client.hget(KeySpace().stats, "unlisted") or 0)
    assert len(kept) == WORKER_MAX_CHANNELS
    assert kept <= set(names)
    counted = {name.removesuffix(":k"): int(count) for name, count in totals.items()}
    assert set(counted) == kept | {UNLISTED}
    assert sum(counted.values()) == len(events)
    assert folded == counted[UNLISTED] == len(events) - sum(counted[name] for name in kept)
    assert value(scrape(worker.metrics_url), "adpulse_worker_unlisted_events_total") == folded


async def test_random_field_names_leave_one_rejected_series(tracker: Tracker) -> None:
    async with aiohttp.ClientSession(headers=BROWSER) as http:
        for first in range(0, 500, 50):

            async def post(number: int) -> None:
                body = {"type": "click", f"f{secrets.token_hex(8)}": number}
                async with http.post(f"{tracker.url}/v1/events", json=body) as response:
                    assert response.status == 400
                    assert (await response.json())["reason"] == "unknown field"

            await asyncio.gather(*(post(number) for number in range(first, first + 50)))
    samples = scrape(f"{tracker.url}/metrics")
    series = {
        dict(labels)["field"]: count
        for (name, labels), count in samples.items()
        if name == "adpulse_tracker_events_rejected_total"
    }
    assert series == {"unknown": 500}
