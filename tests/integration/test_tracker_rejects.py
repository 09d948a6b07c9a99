"""Bad input: a 4xx with a JSON reason, a rejected record, never a 5xx (must show, 2)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.integration.conftest import API_TOKEN
from tests.kafka_helpers import TopicReader
from tests.processes import Tracker
from tests.services import KafkaService

ONE_MIB = 1 << 20


@dataclass(frozen=True)
class Bad:
    name: str
    path: str
    body: bytes | None = None
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    status: int = 400
    field: str = "body"
    recorded: bool = True


def event(**fields: object) -> bytes:
    return json.dumps(fields).encode()


BEARER = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
SPEND = {
    "channel": "email",
    "cost": "10",
    "start": "2026-11-23T00:00:00Z",
    "end": "2026-11-23T01:00:00Z",
}

CASES = [
    Bad("malformed json", "/v1/events", b'{"type": "click",'),
    Bad("not an object", "/v1/events", b"[1, 2]"),
    Bad("wrong type of a field", "/v1/events", event(type="click", channel=5), field="channel"),
    Bad("negative money", "/v1/events", event(type="conversion", value="-5"), field="value"),
    Bad("NaN money", "/v1/events", event(type="conversion", value="NaN"), field="value"),
    Bad("NaN literal", "/v1/events", b'{"type": "conversion", "value": NaN}'),
    Bad("huge money", "/v1/events", event(type="conversion", value=1e300), field="value"),
    Bad("too many decimals", "/v1/events", event(type="conversion", value="0.1234567"), field="value"),
    Bad("unknown event type", "/v1/events", event(type="pageview"), field="type"),
    Bad("unknown field", "/v1/events", event(type="click", colour="red"), field="colour"),
    Bad("unknown currency", "/v1/events", event(type="conversion", value="5", currency="XYZ"), field="currency"),
    Bad("currency without a rate", "/v1/events", event(type="conversion", value="5", currency="JPY"), field="currency"),
    Bad("naive timestamp", "/v1/events", event(type="click", ts="2026-11-23T10:00:00"), field="ts"),
    Bad("invalid utf-8", "/v1/events", b'{"type": "click", "channel": "\xff\xfe"}'),
    Bad("oversized body", "/v1/events", b"[" + b" " * ONE_MIB + b"]", status=413),
    Bad("too many events", "/v1/events", json.dumps([{"type": "click"}] * 501).encode(), status=413),
    Bad("one bad event spoils the batch", "/v1/events", json.dumps([{"type": "click"}, {"type": "click", "ts": "x"}]).encode(), field="ts"),
    Bad("empty body", "/v1/events", b""),
    Bad("unsupported content type", "/v1/events", b"type=click", headers={"Content-Type": "application/x-www-form-urlencoded"}, status=415, field="content-type"),
    Bad("redirect to a host not allowed", "/c?to=https%3A%2F%2Fevil.example.net%2F&channel=email", method="GET", field="to"),
    Bad("redirect with user info", "/c?to=https%3A%2F%2Fshop.example.com%40evil.net%2F", method="GET", field="to"),
    Bad("redirect to javascript", "/c?to=javascript%3Aalert(1)", method="GET", field="to"),
    Bad("redirect without a target", "/c?channel=email", method="GET", field="to"),
    Bad("spend without a token", "/v1/spend", json.dumps(SPEND).encode(), status=401, field="authorization", recorded=False),
    Bad("spend with a wrong token", "/v1/spend", json.dumps(SPEND).encode(), headers={**BEARER, "Authorization": "Bearer nope"}, status=401, field="authorization", recorded=False),
    Bad("spend without cost", "/v1/spend", event(channel="email", start="2026-11-23T00:00:00Z", end="2026-11-23T01:00:00Z"), headers=BEARER, field="cost"),
    Bad("spend ending before it starts", "/v1/spend", json.dumps({**SPEND, "end": "2026-11-22T00:00:00Z"}).encode(), headers=BEARER, field="end"),
    Bad("click posted as spend", "/v1/spend", event(type="click"), headers=BEARER, field="type"),
]  # fmt: skip


async def test_every_bad_input_is_refused_with_a_reason_and_recorded(
    kafka: KafkaService, topic: str, tracker: Tracker
) -> None:
    answers = {}
    async with aiohttp.ClientSession() as http:
        for case in CASES:
            # A stream, not bytes: aiohttp warns about large bytes bodies, and warnings fail.
            stream = io.BytesIO(case.body) if case.body else None
            async with http.request(
                case.method, f"{tracker.url}{case.path}", data=stream, headers=case.headers
            ) as response:
                answers[case.name] = (response.status, await response.read())

    for case in CASES:
        status, body = answers[case.name]
        assert status == case.status, (case.name, status, body)
        document = json.loads(body)
        assert document["field"] == case.field, (case.name, document)
        assert document["reason"], case.name

    expected = [case for case in CASES if case.recorded]
    async with TopicReader(kafka.bootstrap, f"{topic}.rejected") as reader:
        records = await reader.wait_for_count(len(expected), timeout=20)
        rejected = [record.json() for record in records]
    assert len(rejected) == len(expected)
    assert sorted(r["field"] for r in rejected) == sorted(case.field for case in expected)
    assert all(r["reason"] and r["status"] in (400, 413, 415) for r in rejected)
    oversized = [r for r in rejected if r["status"] == 413 and r["payload_truncated"]]
    assert oversized, "the oversized body is recorded, truncated"
    assert all(len(r["payload"]) <= 16 * 1024 for r in rejected)

    async with TopicReader(kafka.bootstrap, topic) as reader:
        async with aiohttp.ClientSession() as http:
            # A marker after the bad input: once it is on the topic, nothing before it was.
            async with http.post(
                f"{tracker.url}/v1/events", json={"type": "click", "event_id": "marker"}
            ) as response:
                assert response.status == 202
        records = await reader.wait_for(
            lambda records: any(r.json()["event_id"] == "marker" for r in records), timeout=20
        )
    assert [r.json()["event_id"] for r in records] == ["marker"], "no bad event was half-applied"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("type=pageview", "type"),
        ("type=conversion&value=-1", "value"),
        ("type=click&channel=%FF", "query"),
        ("type=click&nope=1", "nope"),
    ],
)
async def test_a_bad_pixel_still_answers_its_gif_with_the_reason_in_a_header(
    tracker: Tracker, query: str, field: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{tracker.url}/p.gif?{query}") as response:
            assert response.status == 400
            assert response.content_type == "image/gif"
            assert (await response.read()).startswith(b"GIF89a")
            assert response.headers["X-Adpulse-Error"].startswith(f"{field}: ")


async def test_protocol_garbage_gets_a_4xx_and_the_server_keeps_serving(tracker: Tracker) -> None:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await reader.read(1024)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")

    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    writer.write(b"GET /p.gif?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await reader.read(1024)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 414")

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{tracker.url}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{tracker.url}/nowhere") as response:
            assert response.status == 404
        async with http.delete(f"{tracker.url}/v1/events") as response:
            assert response.status == 405


async def test_head_has_no_body_and_expect_continue_is_answered(tracker: Tracker) -> None:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    writer.write(b"HEAD /p.gif?type=click HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0\r\n\r\n")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while answer.count(b"HTTP/1.1 200") < 2:
        answer += await asyncio.wait_for(reader.read(4096), 10)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: 43" in head
    assert b"image/gif" in head
    assert rest.startswith(b"HTTP/1.1 200"), "no GIF bytes after the HEAD answer"

    body = b'{"type": "click", "campaign": "' + b"x" * 200 + b'"}'
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert final.startswith(b"HTTP/1.1 202")
