"""Issue 12, items 3 and 4, end to end: the tracker, the real broker, the worker, a real
redis-server and the exporter (its /metrics and /v1/report).

Leads and the funnel: leads attributed like conversions (own channel, the click they name, a
registered coupon), deduplicated by event id and by lead id; per channel the funnel rates and
the CPL exactly as worked out by hand. Bots: clicks whose user agent is a bot's counted apart per
channel and exported; a click a server forwards with the API token and a browser's user agent
counts as a click; the same fields without the token are refused naming the field.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from stream.kpi import Counters
from stream.store import KpiStore
from tests.integration.conftest import API_TOKEN
from tests.integration.test_worker_pipeline import Workers, store, workers
from tests.kafka_helpers import wait_until
from tests.processes import Exporter, Tracker

pytestmark = pytest.mark.integration

__all__ = ["store", "workers"]  # fixtures, shared with the pipeline's tests

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
SERVER = "crm-backend/3.1 python-requests/2.32"
DOLLAR = 1_000_000


class Client:
    """The tracker as a site, a shop back end and a CRM see it."""

    def __init__(self, session: aiohttp.ClientSession, tracker: Tracker) -> None:
        self.session = session
        self.base = tracker.url
        self.run = uuid.uuid4().hex[:8]

    async def pixel(self, agent: str, **fields: str) -> aiohttp.ClientResponse:
        async with self.session.get(
            f"{self.base}/p.gif", params=fields, headers={"User-Agent": agent}
        ) as response:
            await response.read()
            assert response.status == 200, response.headers
            return response

    async def post(
        self, body: object, *, token: str | None = None, agent: str = SERVER, path: str = "events"
    ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
        headers = {"User-Agent": agent}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(
            f"{self.base}/v1/{path}", json=body, headers=headers
        ) as response:
            document: dict[str, Any] = await response.json()
            return response.status, document, response

    async def accepted(self, body: object, **options: Any) -> aiohttp.ClientResponse:
        status, document, response = await self.post(body, **options)
        assert status == 202, document
        return response


async def wait_for_totals(kpi_store: KpiStore, expected: dict[str, Counters]) -> None:
    async def exact() -> bool:
        totals = await kpi_store.totals()
        return {channel: totals.get(channel) for channel in expected} == expected

    try:
        await wait_until(exact, timeout=30, interval=0.1, message="exact counters")
    except TimeoutError:
        totals = await kpi_store.totals()
        assert {channel: totals.get(channel) for channel in expected} == expected
        raise


def metric(text: str, name: str, **labels: str) -> float | None:
    """A sample's value from Prometheus text, None when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and ",".join(sorted(found[1].split(","))) == wanted:
            return float(found[2])
    return None


async def test_leads_and_the_funnel_exact_per_channel(
    tracker: Tracker, workers: Workers, store: KpiStore, exporter: Exporter
) -> None:
    workers.start()
    now = datetime.now(UTC)
    spend_start = (now - timedelta(minutes=10)).isoformat()
    spend_end = (now - timedelta(minutes=5)).isoformat()
    async with aiohttp.ClientSession() as session:
        client = Client(session, tracker)
        run = client.run
        # paid_search: 10 clicks; 4 leads (3 naming a click, 1 its channel), one of them re-sent
        # by the CRM under a new event id and another posted twice; 2 sales; $50 spend.
        for number in range(10):
            await client.pixel(
                BROWSER, type="click", channel="paid_search", click_id=f"{run}-ps{number}"
            )
        for number in range(3):
            await client.accepted(
                {"type": "lead", "click_id": f"{run}-ps{number}", "lead_id": f"{run}-L{number}"}
            )
        again = {"type": "lead", "click_id": f"{run}-ps0", "lead_id": f"{run}-L0"}
        await client.accepted(again)
        twice = {
            "type": "lead",
            "channel": "paid_search",
            "lead_id": f"{run}-L3",
            "event_id": f"{run}-lead-3",
        }
        await client.accepted(twice)
        await client.accepted(twice)
        for number in range(2):
            await client.accepted(
                {
                    "type": "conversion",
                    "channel": "paid_search",
                    "order_id": f"{run}-ps-o{number}",
                    "value": "30",
                }
            )
        # email: 8 clicks; 2 leads (the coupon's channel, and its own, without a lead id);
        # 1 sale; $10 spend.
        for number in range(8):
            await client.pixel(BROWSER, type="click", channel="email", event_id=f"{run}-e{number}")
        await client.accepted({"type": "lead", "coupon": "SAVE10", "lead_id": f"{run}-L9"})
        await client.accepted({"type": "lead", "channel": "email"})
        await client.accepted(
            {"type": "conversion", "channel": "email", "order_id": f"{run}-e-o", "value": "40"}
        )
        for channel, cost in (("paid_search", "50"), ("email", "10")):
            body = {"channel": channel, "cost": cost, "start": spend_start, "end": spend_end}
            await client.accepted(body, token=API_TOKEN, path="spend")

    expected = {
        # every order approved as first reported: gross is net
        "paid_search": Counters(
            clicks=10,
            conversions=2,
            revenue_micros=60 * DOLLAR,
            spend_micros=50 * DOLLAR,
            leads=4,
            gross_conversions=2,
            gross_revenue_micros=60 * DOLLAR,
        ),
        "email": Counters(
            clicks=8,
            conversions=1,
            revenue_micros=40 * DOLLAR,
            spend_micros=10 * DOLLAR,
            leads=2,
            gross_conversions=1,
            gross_revenue_micros=40 * DOLLAR,
        ),
    }
    await wait_for_totals(store, expected)

    # By hand: CPL = spend / leads; lead rate = leads / clicks; lead-to-sale = sales / leads.
    by_hand = {
        "paid_search": (Decimal("12.5"), Decimal("0.4"), Decimal("0.5")),
        "email": (Decimal(5), Decimal("0.25"), Decimal("0.5")),
    }
    snapshot = await store.snapshot()
    for channel, (cpl, lead_rate, lead_to_sale) in by_hand.items():
        window = snapshot.channels[channel].windows["24h"].current
        assert window.counters == expected[channel]
        assert (window.kpis.cpl, window.kpis.lead_rate, window.kpis.lead_to_sale_rate) == (
            cpl,
            lead_rate,
            lead_to_sale,
        )

    async with aiohttp.ClientSession() as session:
        async with session.get(exporter.url) as response:
            text = await response.text()
        async with session.get(f"{exporter.base}/v1/report", params={"window": "24h"}) as answer:
            assert answer.status == 200
            report = await answer.json()
    for channel, (cpl, lead_rate, lead_to_sale) in by_hand.items():
        leads = expected[channel].leads
        assert metric(text, "adpulse_events_total", channel=channel, type="lead") == leads
        assert metric(text, "adpulse_cpl", channel=channel, window="24h") == float(cpl)
        assert metric(text, "adpulse_lead_rate", channel=channel, window="24h") == float(lead_rate)
        row = next(row for row in report["rows"] if row["channel"] == channel)
        assert row["leads"]["value"] == leads
        assert row["cpl"]["value"] == float(cpl)
        assert row["lead_rate"]["value"] == float(lead_rate)
        assert row["lead_to_sale_rate"]["value"] == float(lead_to_sale)
    # The lead re-sent under a new event id and the one posted twice were not counted again.
    assert (await store.stats())["duplicates"] == 2


async def test_bot_clicks_counted_apart_and_forwarded_clicks_counted(
    tracker: Tracker, workers: Workers, store: KpiStore, exporter: Exporter
) -> None:
    workers.start()
    async with aiohttp.ClientSession() as session:
        client = Client(session, tracker)
        # paid_search: 2 browser clicks, 3 crawler clicks, each answered as such.
        for _ in range(2):
            response = await client.pixel(BROWSER, type="click", channel="paid_search")
            assert "X-Adpulse-Bot" not in response.headers
        for agent in (CRAWLER, "curl/8.5.0", ""):
            response = await client.pixel(agent, type="click", channel="paid_search")
            assert response.headers["X-Adpulse-Bot"] == "1"
        # email: 2 crawler clicks through the redirect.
        for _ in range(2):
            async with session.get(
                f"{tracker.url}/c",
                params={"to": "https://shop.example.com/", "channel": "email"},
                headers={"User-Agent": CRAWLER},
                allow_redirects=False,
            ) as response:
                assert response.status == 302
                assert response.headers["X-Adpulse-Bot"] == "1"

        # social: a server (its own agent an HTTP library's) forwards a visitor's click with
        # the token: counted as a click by the visitor's browser agent; a crawler's as a bot's.
        visitor = {"type": "click", "channel": "social", "ip": "203.0.113.77"}
        response = await client.accepted(
            {**visitor, "user_agent": BROWSER}, token=API_TOKEN, agent=SERVER
        )
        assert "X-Adpulse-Bot" not in response.headers
        response = await client.accepted(
            [{**visitor, "user_agent": CRAWLER}, {**visitor, "user_agent": BROWSER}],
            token=API_TOKEN,
            agent=BROWSER,
        )
        assert response.headers["X-Adpulse-Bot"] == "1"
        # Without the token, either field is refused, naming it.
        for name, value in (("user_agent", BROWSER), ("ip", "203.0.113.77")):
            body = {"type": "click", "channel": "social", name: value}
            status, document, _ = await client.post(body, agent=BROWSER)
            assert status == 403, document
            assert document["field"] == name

    expected = {
        "paid_search": Counters(clicks=2, bot_clicks=3),
        "email": Counters(bot_clicks=2),
        "social": Counters(clicks=2, bot_clicks=1),
    }
    await wait_for_totals(store, expected)
    snapshot = await store.snapshot()
    hour = snapshot.channels["paid_search"].windows["1h"].current
    # Bot clicks are in no KPI (the clicks are the 2 real ones); their share is shown apart.
    assert (hour.counters.clicks, hour.kpis.bot_share) == (2, Decimal("0.6"))

    async with aiohttp.ClientSession() as session:
        async with session.get(exporter.url) as response:
            text = await response.text()
        async with session.get(f"{exporter.base}/v1/report", params={"window": "1h"}) as answer:
            report = await answer.json()
    for channel, counters in expected.items():
        assert metric(text, "adpulse_bot_clicks_total", channel=channel) == counters.bot_clicks
        assert metric(text, "adpulse_events_total", channel=channel, type="click") == (
            counters.clicks
        )
        row = next(row for row in report["rows"] if row["channel"] == channel)
        assert row["bot_clicks"]["value"] == counters.bot_clicks
        assert row["clicks"]["value"] == counters.clicks
