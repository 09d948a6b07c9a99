"""Signed click ids end to end: the tracker issues them (`/c`, a click posted without an id),
the real broker carries them, and the worker attributes conversions from the id alone, with
no click registry entry; a tampered id attributes nothing and is counted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import redis.asyncio as redis

from adpulse.core.click_ids import ClickKeys, is_signed, verify
from stream.keys import ACTIVE_PREFIX_KEY
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.conftest import serve_tracker
from tests.kafka_helpers import wait_until
from tests.processes import Tracker, Worker
from tests.services import KafkaService

pytestmark = pytest.mark.integration

CLICK_KEY = "signed-click-test-key-" + "7" * 20
KEYS = ClickKeys(CLICK_KEY.encode())
# A bot's click carries no channel (it attributes nothing): these clicks come from a browser.
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0"}


@pytest.fixture
def signing_tracker(kafka: KafkaService, topic: str, tmp_path: Path) -> Iterator[Tracker]:
    yield from serve_tracker(kafka, topic, tmp_path, env={"ADPULSE_CLICK_KEY": CLICK_KEY})


def clean_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("ADPULSE_")}


def _tampered(click_id: str) -> str:
    """The same id with the last characters of its tag changed: it still claims its channel."""
    ending = "AAAA" if not click_id.endswith("AAAA") else "BBBB"
    return click_id[:-4] + ending


async def test_conversions_attribute_from_the_signed_id_without_a_registry_entry(
    kafka: KafkaService,
    topic: str,
    tmp_path: Path,
    redis_db: RedisDatabase,
    signing_tracker: Tracker,
) -> None:
    worker_group = f"adpulse-worker-t{uuid.uuid4().hex[:8]}"
    worker = Worker(
        kafka=kafka.bootstrap,
        topic=topic,
        redis_url=redis_db.url,
        log=tmp_path / "worker.log",
        group=worker_group,
        env={"ADPULSE_CLICK_KEY": CLICK_KEY},
    )
    client = redis.Redis.from_url(redis_db.url, decode_responses=True)
    store = KpiStore.from_url(redis_db.url)

    async def applied(count: int) -> bool:
        return await client.hget("adpulse:stats", "applied") == str(count)

    try:
        async with aiohttp.ClientSession(headers=BROWSER) as http:
            async with http.get(
                f"{signing_tracker.url}/c",
                params={"to": "https://shop.example.com/p", "channel": "email", "campaign": "nov"},
                allow_redirects=False,
            ) as response:
                assert response.status == 302
                location = response.headers["Location"]
            redirected = parse_qs(urlsplit(location).query)["adp_click_id"][0]
            assert is_signed(redirected)
            carried = verify(KEYS, redirected)
            assert carried is not None
            assert (carried.channel, carried.campaign) == ("email", "nov")
            # The site snippet's click: posted without an id, it gets one in the answer.
            snippet_click = {
                "type": "click",
                "event_id": "snippet-click-1",
                "utm_source": "google",
                "utm_medium": "cpc",
                "campaign": "brand",
            }
            async with http.post(f"{signing_tracker.url}/v1/events", json=snippet_click) as answer:
                assert answer.status == 202
                (snippet_id,) = (await answer.json())["click_ids"]
            snippet_carried = verify(KEYS, snippet_id)
            assert snippet_carried is not None
            grouped = snippet_carried.channel
            assert grouped not in ("", "email")
            await wait_until(lambda: applied(2), timeout=60, message="both clicks applied")
            # Neither click was registered; any registry there might be goes, to be sure.
            registry = [key async for key in client.scan_iter("adpulse:clicks:*")]
            assert registry == []
            await client.delete("adpulse:clicks:0", *registry)

            conversions = [
                {"type": "conversion", "event_id": "v-1", "click_id": redirected,
                 "order_id": "o-1", "value": "10.00"},
                {"type": "conversion", "event_id": "v-2", "click_id": snippet_id,
                 "order_id": "o-2", "value": "5.00"},
                {"type": "conversion", "event_id": "v-3", "click_id": _tampered(redirected),
                 "order_id": "o-3", "value": "7.00"},
            ]  # fmt: skip
            async with http.post(f"{signing_tracker.url}/v1/events", json=conversions) as answer:
                assert answer.status == 202
                assert "click_ids" not in await answer.json()
        await wait_until(lambda: applied(5), timeout=60, message="the conversions applied")

        totals = await store.totals()
        assert (totals["email"].clicks, totals["email"].conversions) == (1, 1)
        assert totals["email"].revenue_micros == 10_000_000
        assert (totals[grouped].clicks, totals[grouped].conversions) == (1, 1)
        # The tampered id claimed email: it counts as attributed to nothing.
        assert totals["unattributed"].conversions == 1
        stats = await store.stats()
        assert stats["click_ids_rejected"] == 1
        assert "adpulse_worker_click_ids_rejected_total 1.0" in worker.metrics()
        # Each conversion took its click's campaign, and its delay counts in its click's minute.
        month = int(datetime.now(UTC).strftime("%Y%m"))
        campaigns = await store.month_campaigns(month)
        assert campaigns[("email", "nov")].conversions == 1
        assert campaigns[(grouped, "brand")].conversions == 1
        raw_totals = await client.hgetall("adpulse:t")
        assert any(str(name).startswith("email:t") for name in raw_totals), raw_totals
        assert [key async for key in client.scan_iter("adpulse:clicks:*")] == []

        # `adpulse rebuild` with the same key gives the same counters from Kafka alone.
        assert worker.terminate() == 0, worker.log()
        registry_topic = f"{topic}.registry"
        rebuilt = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "adpulse", "rebuild", "--redis-url", redis_db.url,
             "--topic", topic, "--group", worker_group, "--kafka", kafka.bootstrap,
             "--registry-topic", registry_topic],
            capture_output=True, text=True, timeout=120, check=False,
            env={**clean_environment(), "ADPULSE_CLICK_KEY": CLICK_KEY},
        )  # fmt: skip
        kafka.forget_topic(registry_topic)
        assert rebuilt.returncode == 0, rebuilt.stderr
        prefix = str(await client.get(ACTIVE_PREFIX_KEY))
        assert prefix != "adpulse:"
        assert await client.hgetall(f"{prefix}t") == raw_totals
        assert await client.hget(f"{prefix}stats", "click_ids_rejected") == "1"
    finally:
        await store.close()
        await client.aclose()
        code = worker.terminate()
    assert code == 0, worker.log()
