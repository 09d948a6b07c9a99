"""Dynamic number insertion in a real headless Chromium (issue 14, "what it must show" 2): the
page shows the number the tracker leased from the visitor's channel's pool, two visitors at once
see different numbers, and a call to a shown number within its lease is counted by the real
worker as a lead of that visit's channel and campaign."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import redis.asyncio as redis

from tests.conftest import RedisDatabase
from tests.integration.browser.conftest import Site, SiteTracker
from tests.integration.browser.test_site_snippet import (
    SETTLED,
    TIMEOUT,
    campaign_query,
    wait_for_totals,
)
from tests.integration.conftest import API_TOKEN
from tests.processes import Worker
from tests.services import KafkaService

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

POOL = ("+14155550101", "+14155550102")
PRINTED = "+1 800 555 0100"
# What a shop prints: its own number, marked for the snippet to replace.
PHONE = (
    "document.body.insertAdjacentHTML('afterbegin', "
    f'\'<a id="phone" data-adpulse-phone href="tel:+18005550100">{PRINTED}</a>\')'
)
SHOWN = f"document.getElementById('phone').textContent !== '{PRINTED}'"


@pytest.fixture
async def number_tracker(
    kafka: KafkaService,
    topic: str,
    tmp_path: Path,
    site: Site,
    redis_db: RedisDatabase,
    registry_env: str,
) -> AsyncIterator[SiteTracker]:
    registered = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "adpulse", "numbers", "--redis-url", redis_db.url, "pool", "add",
         "paid_search", *POOL],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    made = SiteTracker(
        kafka.bootstrap,
        topic,
        tmp_path,
        site.origin,
        extra=["--redis-url", redis_db.url],
        env={"ADPULSE_HASH_KEY": "h" * 40},
    )
    await asyncio.to_thread(made.start)
    site.tracker_url = made.url
    try:
        yield made
    finally:
        await asyncio.to_thread(made.stop)


async def shown_number(page: Page) -> tuple[str, str]:
    await page.wait_for_function(SHOWN, timeout=TIMEOUT * 1000)
    text = await page.evaluate("document.getElementById('phone').textContent")
    href = await page.evaluate("document.getElementById('phone').getAttribute('href')")
    return str(text), str(href)


async def test_the_page_shows_the_leased_number_and_a_call_to_it_is_a_lead_of_the_visit(
    redis_db: RedisDatabase,
    worker: Worker,
    number_tracker: SiteTracker,
    site: Site,
    browser: Browser,
    context: BrowserContext,
) -> None:
    site.page("landing", PHONE)
    visitor = await context.new_page()
    # A second visitor: a browser of its own, with the first one's (not headless) user agent.
    second = await browser.new_context(user_agent=await visitor.evaluate("navigator.userAgent"))
    try:
        await visitor.goto(site.url("landing", campaign_query("spring", uuid.uuid4().hex)))
        text, href = await shown_number(visitor)
        number = href.removeprefix("tel:")
        assert number in POOL
        assert text.replace(" ", "").replace("-", "") == number
        # Another visitor at the same time sees the pool's other number.
        other = await second.new_page()
        await other.goto(site.url("landing", campaign_query("spring", uuid.uuid4().hex)))
        assert (await shown_number(other))[1] == f"tel:{({*POOL} - {number}).pop()}"
        # The same visitor on the next page keeps its number.
        await visitor.reload()
        assert (await shown_number(visitor))[1] == href
        for page in (visitor, other):
            await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)
    finally:
        await second.close()

    payload = {
        "call_id": f"CA{uuid.uuid4().hex}",
        "tracked_number": number,
        "caller": "+14155557777",
        "started_at": datetime.now(UTC).isoformat(),
        "duration_seconds": 125,
        "answered": True,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{number_tracker.url}/v1/calls",
            json=payload,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as response,
    ):
        assert response.status == 202
        assert (await response.json())["channels"] == ["paid_search"]
    await wait_for_totals(
        redis_db,
        {"paid_search:k": "2", "paid_search:p": "1", "paid_search:a": "1", "paid_search:l": "1"},
    )
    async with redis.Redis.from_url(redis_db.url, decode_responses=True) as client:
        campaigns: dict[str, str] = {}
        async for key in client.scan_iter("adpulse:dc:*"):
            found = await client.hgetall(key)
            campaigns.update({str(name): str(value) for name, value in found.items()})
    assert campaigns["paid_search\tspring:l"] == "1"
