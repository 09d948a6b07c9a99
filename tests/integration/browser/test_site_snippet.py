"""The site snippet in a real headless Chromium against the real tracker, broker, worker and Redis
(issue 14, "what it must show" 1): a campaign landing records one click in its channel, a
conversion on the thank-you page is credited to that click's channel and campaign, a conversion
made while the tracker is down is counted once after it is back, and without consent nothing is
stored or sent.

The shop is served from another origin than the tracker (`Site`), with the README's install
lines; what reached Kafka is read from the topic, what was counted from the worker's Redis.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis.asyncio as redis

from adpulse.core.click_ids import is_signed
from tests.conftest import RedisDatabase
from tests.integration.browser.conftest import Site, SiteTracker
from tests.kafka_helpers import ConsumedRecord, TopicReader, wait_until
from tests.processes import Worker
from tests.services import KafkaService

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

TIMEOUT = 20.0
THANKS = """
const order = new URLSearchParams(location.search).get("order");
adpulse.conversion({order_id: order, value: "49.90"});
"""
# A sign-up form sent: a lead, before the sale.
SIGNED_UP = """
adpulse.lead({lead_id: new URLSearchParams(location.search).get("lead")});
"""
# The snippet has run and has nothing left to send.
SETTLED = "window.adpulse && window.adpulse.loaded && localStorage.getItem('adpulse_q') === null"


def campaign_query(campaign: str, gclid: str) -> str:
    return f"utm_source=google&utm_medium=cpc&utm_campaign={campaign}&gclid={gclid}"


def of_type(records: Sequence[ConsumedRecord], event_type: str) -> list[dict[str, Any]]:
    return [value for record in records if (value := record.json())["type"] == event_type]


async def totals(redis_db: RedisDatabase) -> dict[str, str]:
    async with redis.Redis.from_url(redis_db.url, decode_responses=True) as client:
        found = await client.hgetall("adpulse:t")
        return {str(name): str(value) for name, value in found.items()}


async def registered_click(redis_db: RedisDatabase, click_id: str) -> str | None:
    """What the worker's click registry holds for `click_id`: "channel<TAB>campaign"."""
    async with redis.Redis.from_url(redis_db.url, decode_responses=True) as client:
        async for key in client.scan_iter("adpulse:clicks:*"):
            stored = await client.hget(key, click_id)
            if stored is not None:
                return str(stored)
    return None


async def wait_for_totals(redis_db: RedisDatabase, expected: dict[str, str]) -> None:
    async def counted() -> bool:
        return await totals(redis_db) == expected

    try:
        await wait_until(counted, timeout=TIMEOUT, interval=0.1, message="the counters")
    except TimeoutError:
        assert await totals(redis_db) == expected  # says what differs
        raise


async def test_a_campaign_visit_and_its_conversion_are_credited_to_the_click(
    kafka: KafkaService,
    topic: str,
    redis_db: RedisDatabase,
    worker: Worker,
    site_tracker: SiteTracker,
    site: Site,
    context: BrowserContext,
) -> None:
    site.page("landing")
    site.page("thanks", THANKS)
    site.page("signed-up", SIGNED_UP)
    gclid = f"Cj0K{uuid.uuid4().hex}"
    order = f"A-{uuid.uuid4().hex[:8]}"
    lead = f"L-{uuid.uuid4().hex[:8]}"
    async with TopicReader(kafka.bootstrap, topic) as reader:
        page = await context.new_page()
        await page.goto(site.url("landing", campaign_query("spring", gclid)))
        records = await reader.wait_for(lambda seen: bool(of_type(seen, "click")), TIMEOUT)
        (click,) = of_type(records, "click")
        assert click["grouped_channel"] == "paid_search"
        assert click["campaign"] == "spring"
        assert click["utm_source"] == "google"
        assert click["ad_click_ids"] == {"gclid": gclid}
        # The tracker issued the click's id in its answer: signed, carrying its attribution.
        await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)
        stored = await page.evaluate("JSON.parse(localStorage.getItem('adpulse'))")
        assert stored["click_id"] == click["click_id"]
        assert is_signed(click["click_id"])

        # A reload of the landing page is the same visit, not a second click.
        await page.reload()
        await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)

        await page.goto(site.url("signed-up", f"lead={lead}"))
        await reader.wait_for(lambda seen: bool(of_type(seen, "lead")), TIMEOUT)
        await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)

        await page.goto(site.url("thanks", f"order={order}"))
        records = await reader.wait_for(lambda seen: bool(of_type(seen, "conversion")), TIMEOUT)
        await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)

    (sent_lead,) = of_type(records, "lead")
    assert (sent_lead["click_id"], sent_lead["lead_id"]) == (click["click_id"], lead)
    (conversion,) = of_type(records, "conversion")
    assert conversion["click_id"] == click["click_id"]
    assert conversion["order_id"] == order
    assert conversion["value_micros"] == 49_900_000
    await wait_for_totals(
        redis_db,
        {
            "paid_search:k": "1",
            "paid_search:l": "1",
            "paid_search:c": "1",
            "paid_search:v": "49900000",
            # gross as first reported, and its delay after the click (bin 0: under 5 minutes)
            "paid_search:g": "1",
            "paid_search:G": "49900000",
            "paid_search:t0": "1",
        },
    )
    # Attributed from the signed id itself: the click registry holds nothing for it.
    assert await registered_click(redis_db, click["click_id"]) is None
    assert len(of_type(reader.records, "click")) == 1
    assert await context.cookies() == []


async def test_a_conversion_made_while_the_tracker_is_down_is_counted_once_it_is_back(
    kafka: KafkaService,
    topic: str,
    redis_db: RedisDatabase,
    worker: Worker,
    site_tracker: SiteTracker,
    site: Site,
    context: BrowserContext,
) -> None:
    site.page("landing")
    site.page("thanks", THANKS)
    site.page("home")
    order = f"B-{uuid.uuid4().hex[:8]}"
    async with TopicReader(kafka.bootstrap, topic) as reader:
        page = await context.new_page()
        await page.goto(site.url("landing", campaign_query("autumn", uuid.uuid4().hex)))
        await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)

        site_tracker.stop()
        # The snippet comes from the browser's cache; the conversion cannot be sent.
        await page.goto(site.url("thanks", f"order={order}"))
        await page.wait_for_function(
            "(JSON.parse(localStorage.getItem('adpulse_q')) || []).some((x) => x.n >= 1)",
            timeout=TIMEOUT * 1000,
        )
        (queued,) = await page.evaluate("JSON.parse(localStorage.getItem('adpulse_q'))")
        assert queued["e"]["type"] == "conversion"
        assert queued["e"]["order_id"] == order
        await page.close()

        site_tracker.start()
        # Its retry is due (backoff) by the time the next page opens.
        await wait_until(
            lambda: time.time() * 1000 >= queued["next"], timeout=TIMEOUT, message="retry due"
        )
        page = await context.new_page()
        await page.goto(site.url("home"))
        await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)

        await wait_for_totals(
            redis_db,
            {
                "paid_search:k": "1",
                "paid_search:c": "1",
                "paid_search:v": "49900000",
                "paid_search:g": "1",
                "paid_search:G": "49900000",
                "paid_search:t0": "1",
            },
        )
        conversions = of_type(reader.records, "conversion")
    assert [c["event_id"] for c in conversions] == [queued["e"]["event_id"]]
    # The retry says when the conversion happened, not when it finally arrived.
    sent_at = datetime.fromisoformat(conversions[0]["ts"].replace("Z", "+00:00"))
    assert abs(sent_at - datetime.fromtimestamp(queued["at"] / 1000, UTC)).total_seconds() < 0.01


async def test_without_consent_nothing_is_stored_or_sent(
    site_tracker: SiteTracker, site: Site, context: BrowserContext
) -> None:
    # The consent manager's answer comes between the install lines, before the snippet runs.
    site.page(
        "landing",
        head="adpulse.consent(false)",
        body="adpulse.conversion({order_id: 'C-1', value: '10'})",
    )
    events_url = f"{site_tracker.url}/v1/events"
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = await context.new_page()
    await page.goto(site.url("landing", campaign_query("winter", uuid.uuid4().hex)))
    await page.wait_for_function("window.adpulse && window.adpulse.loaded")

    assert await page.evaluate("adpulse.conversion({order_id: 'C-2', value: '5'})") is None
    assert await page.evaluate("JSON.stringify(adpulse.attribution())") == "{}"
    assert await page.evaluate("localStorage.length") == 0
    assert await context.cookies() == []
    assert [url for url in requests if url.startswith(site_tracker.url)] == [
        f"{site_tracker.url}/s.js"
    ]

    # Consent given: the click held back goes out, and only it (nothing was kept from before).
    async with page.expect_request(lambda request: request.url == events_url) as sent:
        await page.evaluate("adpulse.consent(true)")
    click = json.loads((await sent.value).post_data or "{}")
    assert click["type"] == "click"
    assert click["campaign"] == "winter"
    await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)
    assert requests.count(events_url) == 1


async def test_an_event_the_tracker_refuses_is_dropped_with_a_warning_not_retried(
    site_tracker: SiteTracker, site: Site, context: BrowserContext
) -> None:
    site.page("home")
    events_url = f"{site_tracker.url}/v1/events"
    page = await context.new_page()
    warnings: list[str] = []
    page.on("console", lambda message: warnings.append(message.text))
    await page.goto(site.url("home"))
    await page.wait_for_function("window.adpulse && window.adpulse.loaded")
    async with page.expect_response(lambda response: response.url == events_url) as answered:
        await page.evaluate("adpulse.conversion({order_id: 'D-1', value: '-1'})")
    assert (await answered.value).status == 400
    await page.wait_for_function(SETTLED, timeout=TIMEOUT * 1000)
    assert any("the tracker refused an event" in text for text in warnings), warnings
