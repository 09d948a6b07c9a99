"""Every endpoint puts the right normalised event on the topic (issue: what it must show, 1)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests.integration.conftest import API_TOKEN
from tests.kafka_helpers import ConsumedRecord, TopicReader
from tests.processes import Tracker
from tests.services import KafkaService

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
WIRE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


async def one_event(reader: TopicReader, event_id: str) -> tuple[ConsumedRecord, dict[str, Any]]:
    records = await reader.wait_for(
        lambda records: any(r.json()["event_id"] == event_id for r in records),
        timeout=20,
        message=f"event {event_id} on the topic",
    )
    matching = [r for r in records if r.json()["event_id"] == event_id]
    assert len(matching) == 1
    return matching[0], matching[0].json()


async def test_pixel_puts_a_normalised_enriched_event_on_the_topic(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        query = {
            "type": "click",
            "event_id": "pixel-1",
            "channel": "Paid Search",
            "campaign": "Black Friday",
            "utm_source": "google",
            "utm_medium": "cpc",
            "gclid": "Cj0KCQ",
            "cb": "12345",
        }
        async with http.get(
            f"{tracker.url}/p.gif", params=query, headers={"User-Agent": BROWSER}
        ) as response:
            assert response.status == 200
            assert response.content_type == "image/gif"
            assert "no-store" in response.headers["Cache-Control"]
            assert (await response.read()).startswith(b"GIF89a")
        record, event = await one_event(reader, "pixel-1")

    assert event["type"] == "click"
    assert event["channel"] == "paid_search"
    assert event["campaign"] == "Black Friday"
    assert event["grouped_channel"] == "paid_search"
    assert event["ad_click_ids"] == {"gclid": "Cj0KCQ"}
    assert event["utm_source"] == "google"
    assert event["ip"] == "127.0.0.0"
    assert "bot" not in event or event["bot"] is False
    assert WIRE_TIME.fullmatch(event["ts"])
    assert WIRE_TIME.fullmatch(event["received_at"])
    assert "cb" not in event
    assert record.key == b"pixel-1"


async def test_a_plain_pixel_read_straight_from_its_query_string(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    # Nothing escaped, blank or repeated: the query goes straight into its record
    # (QueryRecords.from_query), the cache buster left out.
    query = "type=click&event_id=pixel-2&channel=Email&utm_source=newsletter&utm_medium=email&_=9"
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        async with http.get(
            f"{tracker.url}/p.gif?{query}", headers={"User-Agent": BROWSER}
        ) as response:
            assert response.status == 200
            assert (await response.read()).startswith(b"GIF89a")
        record, event = await one_event(reader, "pixel-2")

    assert record.key == b"pixel-2"
    assert event["channel"] == "email"
    assert event["grouped_channel"] == "email"
    assert event["utm_medium"] == "email"
    assert event["ip"] == "127.0.0.0"
    assert WIRE_TIME.fullmatch(event["received_at"])
    assert "_" not in event


async def test_redirect_answers_302_with_the_click_id_its_event_carries(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        target = "https://shop.example.com/deals?sku=42#top"
        async with http.get(
            f"{tracker.url}/c",
            params={"to": target, "channel": "email", "campaign": "nov"},
            allow_redirects=False,
            headers={"User-Agent": BROWSER},
        ) as response:
            assert response.status == 302
            location = response.headers["Location"]
        parts = urlsplit(location)
        assert parts.netloc == "shop.example.com"
        assert parts.fragment == "top"
        click_id = parse_qs(parts.query)["adp_click_id"][0]
        assert parse_qs(parts.query)["sku"] == ["42"]

        records = await reader.wait_for(
            lambda records: any(r.json().get("click_id") == click_id for r in records),
            timeout=20,
            message="the redirect's click on the topic",
        )
    (record,) = [r for r in records if r.json().get("click_id") == click_id]
    event = record.json()
    assert event["type"] == "click"
    assert event["channel"] == "email"
    assert event["campaign"] == "nov"
    assert record.key == click_id.encode()


async def test_single_post_converts_money_exactly_and_shares_the_click_partition(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        click = {"type": "click", "event_id": "c-1", "click_id": "click-77", "channel": "email"}
        conversion = {
            "type": "conversion",
            "event_id": "v-1",
            "click_id": "click-77",
            "order_id": "order-9",
            "value": "19.99",
            "currency": "eur",
            "ts": "2026-11-23T10:00:00+01:00",
        }
        for body in (click, conversion):
            async with http.post(f"{tracker.url}/v1/events", json=body) as response:
                assert response.status == 202
                assert (await response.json())["event_ids"] == [body["event_id"]]
        click_record, _ = await one_event(reader, "c-1")
        record, event = await one_event(reader, "v-1")

    assert event["value_micros"] == 21_989_000  # 19.99 EUR x 1.10, exact
    assert event["currency"] == "USD"
    assert event["source_currency"] == "EUR"
    assert event["source_amount_micros"] == 19_990_000
    assert event["ts"] == "2026-11-23T09:00:00.000000Z"
    assert event["order_id"] == "order-9"
    # Posted with aiohttp's own User-Agent, as a shop's back end would: still not a bot.
    assert "bot" not in event
    assert record.key == click_record.key == b"click-77"
    assert record.partition == click_record.partition


async def test_batch_post_as_send_beacon_text_plain(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    batch = [
        {"type": "click", "channel": "affiliate", "utm_source": "partner-net"},
        {"type": "redemption", "coupon": " summer-10 ", "order_id": "o-5", "value": 30},
        {"type": "conversion", "order_id": "o-5", "value": 30.5, "utm_medium": "email"},
    ]
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        async with http.post(
            f"{tracker.url}/v1/events",
            data=__import__("json").dumps(batch),
            headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.test"},
        ) as response:
            assert response.status == 202
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            answer = await response.json()
        assert answer["accepted"] == 3
        ids = answer["event_ids"]
        events = {}
        for event_id in ids:
            _, events[event_id] = await one_event(reader, event_id)

    click, redemption, conversion = (events[event_id] for event_id in ids)
    assert click["channel"] == "affiliate"
    assert click["type"] == "click"
    assert redemption["coupon"] == "SUMMER-10"
    assert redemption["value_micros"] == 30_000_000
    assert conversion["value_micros"] == 30_500_000
    assert conversion["grouped_channel"] == "email"
    assert "channel" not in conversion


async def test_spend_with_token_puts_a_spend_event_on_the_topic(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    spend = {
        "event_id": "spend-2026-11-23-google",
        "channel": "paid_search",
        "campaign": "brand",
        "cost": "1234.567891",
        "currency": "USD",
        "start": "2026-11-23T00:00:00Z",
        "end": "2026-11-23T01:00:00Z",
    }
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        async with http.post(
            f"{tracker.url}/v1/spend",
            json=spend,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as response:
            assert response.status == 202, await response.text()
        _, event = await one_event(reader, spend["event_id"])

    assert event["type"] == "spend"
    assert event["cost_micros"] == 1_234_567_891
    assert event["channel"] == "paid_search"
    assert event["campaign"] == "brand"
    assert event["start"] == "2026-11-23T00:00:00.000000Z"
    assert event["end"] == "2026-11-23T01:00:00.000000Z"


async def test_operational_endpoints(tracker: Tracker) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{tracker.url}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{tracker.url}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["broker"] == "up"
        async with http.get(f"{tracker.url}/openapi.json") as response:
            spec = await response.json()
            assert {"/p.gif", "/c", "/v1/events", "/v1/spend"} <= set(spec["paths"])
        async with http.get(f"{tracker.url}/p.gif?type=click") as response:
            assert response.status == 200
        async with http.get(f"{tracker.url}/metrics") as response:
            text = await response.text()
        assert 'adpulse_tracker_requests_total{route="pixel",status="200"} 1.0' in text
        assert "adpulse_tracker_request_duration_seconds_bucket" in text
        assert "adpulse_tracker_spool_records 0.0" in text
        assert "adpulse_tracker_produce_errors_total" in text
        async with http.options(
            f"{tracker.url}/v1/events", headers={"Origin": "https://shop.test"}
        ) as response:
            assert response.status == 204
            assert "POST" in response.headers["Access-Control-Allow-Methods"]


async def test_redirect_takes_utm_tags_from_the_landing_url(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    target = "https://shop.example.com/sale?utm_source=newsletter&utm_medium=email&utm_campaign=nov"
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        async with http.get(
            f"{tracker.url}/c", params={"to": target}, allow_redirects=False
        ) as response:
            assert response.status == 302
            click_id = parse_qs(urlsplit(response.headers["Location"]).query)["adp_click_id"][0]
        records = await reader.wait_for(
            lambda records: any(r.json().get("click_id") == click_id for r in records),
            timeout=20,
        )
    (event,) = [r.json() for r in records if r.json().get("click_id") == click_id]
    assert (event["utm_source"], event["utm_medium"], event["utm_campaign"]) == (
        "newsletter",
        "email",
        "nov",
    )
    assert event["grouped_channel"] == "email"
