"""Nothing answered 2xx is lost: broker outage and SIGTERM under load (must show, 3 and 4)."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import aiohttp

from tests.integration.conftest import TRACKER_ENV, readiness
from tests.kafka_helpers import TopicReader, wait_until
from tests.processes import Tracker
from tests.services import KafkaService

CONCURRENCY = 20


async def post_events(http: aiohttp.ClientSession, url: str, count: int, prefix: str) -> list[str]:
    """Post `count` single events, CONCURRENCY at a time; the event ids answered 2xx."""
    accepted: list[str] = []
    queue = iter(range(count))

    async def client() -> None:
        for number in queue:
            body = {"type": "click", "channel": "email", "campaign": f"{prefix}-{number}"}
            async with http.post(f"{url}/v1/events", json=body) as response:
                assert response.status == 202, await response.text()
                accepted.extend((await response.json())["event_ids"])

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return accepted


async def test_broker_outage_loses_nothing_answered_2xx(
    restartable_kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    async with TopicReader(restartable_kafka.bootstrap, topic) as reader:
        async with aiohttp.ClientSession() as http:
            before = await post_events(http, tracker.url, 50, "before")
            await reader.wait_for(
                lambda records: {r.json()["event_id"] for r in records} >= set(before), timeout=20
            )

            restartable_kafka.stop()
            during = await post_events(http, tracker.url, 1000, "during")
            assert len(during) == 1000
            # The tracker notices, keeps every accepted event in its spool, and says so.
            await wait_until(
                lambda: (
                    readiness(tracker.url).get("spool_records") == 1000
                    and readiness(tracker.url).get("broker") == "down"
                ),
                timeout=30,
                interval=0.2,
                message="all 1000 events in the spool",
            )
            state = readiness(tracker.url)
            assert state["broker"] == "down"
            assert state["status"] == "degraded"

            restartable_kafka.start()
            expected = set(before) | set(during)
            records = await reader.wait_for(
                lambda records: {r.json()["event_id"] for r in records} >= expected,
                timeout=60,
                message="every accepted event on the topic after the outage",
            )
            await wait_until(
                lambda: readiness(tracker.url).get("spool_records") == 0,
                timeout=30,
                message="spool drained",
            )
            assert readiness(tracker.url)["broker"] == "up"

    seen = collections.Counter(r.json()["event_id"] for r in records)
    assert set(seen) == expected, "only accepted events, each at least once"
    # The outage's events reached the broker after its restart: through the spool, not before.
    after_restart = [r for r in records if r.restarts > 0]
    assert {r.json()["event_id"] for r in after_restart} >= set(during)


async def test_sigterm_under_load_flushes_everything_answered_2xx(
    kafka: KafkaService, topic: str, tmp_path: Path
) -> None:
    tracker = Tracker(
        kafka=kafka.bootstrap,
        topic=topic,
        spool_dir=tmp_path / "spool",
        log=tmp_path / "tracker.log",
        env=TRACKER_ENV,
    )
    accepted: list[str] = []
    refused = 0
    stop_load = asyncio.Event()

    async def client(http: aiohttp.ClientSession, number: int) -> None:
        nonlocal refused
        sequence = 0
        while not stop_load.is_set():
            batch = [{"type": "click", "campaign": f"c{number}-{sequence + i}"} for i in range(5)]
            sequence += 5
            try:
                async with http.post(f"{tracker.url}/v1/events", json=batch) as response:
                    if response.status == 202:
                        accepted.extend((await response.json())["event_ids"])
                    else:
                        refused += 1
            except aiohttp.ClientError:
                refused += 1
                if tracker.process.poll() is not None:
                    return

    try:
        await wait_until(
            lambda: readiness(tracker.url).get("broker") == "up", timeout=30, interval=0.1
        )
        async with TopicReader(kafka.bootstrap, topic) as reader:
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                load = [asyncio.create_task(client(http, n)) for n in range(10)]
                await wait_until(lambda: len(accepted) >= 2000, timeout=60, interval=0.01)
                tracker.process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(tracker.process.wait, 60)
                stop_load.set()
                await asyncio.gather(*load)
            assert code == 0, tracker.log()
            assert refused > 0, "the load was still running when the tracker stopped"
            expected = set(accepted)
            records = await reader.wait_for(
                lambda records: {r.json()["event_id"] for r in records} >= expected,
                timeout=30,
                message=f"all {len(expected)} events answered 2xx on the topic",
            )
    finally:
        tracker.terminate()
    assert {r.json()["event_id"] for r in records} == expected
    assert "publisher closed" in tracker.log()
