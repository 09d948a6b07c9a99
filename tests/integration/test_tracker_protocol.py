"""The HTTP edge through the real tracker process and broker: signed links, CORS origins, the
rules of HTTP/1.1 and status lines (issue 10, defects 5, 6 and 7; issue 11, reason phrases)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest

from tests.integration.conftest import serve_tracker
from tests.kafka_helpers import TopicReader
from tests.processes import Tracker
from tests.services import KafkaService

REDIRECT_SECRET = "redirect-secret-3c9a"
ALLOWED_ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


@pytest.fixture
def strict_tracker(kafka: KafkaService, topic: str, tmp_path: Path) -> Iterator[Tracker]:
    """A tracker with a redirect secret and one allowed CORS origin."""
    yield from serve_tracker(
        kafka,
        topic,
        tmp_path,
        env={"ADPULSE_REDIRECT_SECRET": REDIRECT_SECRET},
        extra=["--cors-origins", ALLOWED_ORIGIN],
    )


@dataclass
class Answer:
    status_line: bytes
    headers: dict[str, str]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])


async def read_answer(reader: asyncio.StreamReader, *, head: bool = False) -> Answer:
    """One HTTP/1.1 response with a Content-Length (or none, for HEAD)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = raw[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return Answer(status_line, headers, body)


async def ask(port: int, raw: bytes, *, answers: int = 1, head: bool = False) -> list[Answer]:
    """Send `raw` on a new connection and read `answers` responses; then the connection must
    have nothing more to say before it closes or stays quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        read = [await read_answer(reader, head=head) for _ in range(answers)]
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest == b"", f"more than {answers} answer(s): {rest[:200]!r}"
        return read
    finally:
        writer.close()


async def test_a_malformed_signature_is_a_400_naming_sig(strict_tracker: Tracker) -> None:
    target = "https://shop.example/"  # not on the allow-list: only a signature lets it through
    signature = hmac.new(REDIRECT_SECRET.encode(), target.encode(), hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as http:
        for sig, status, field in [
            ("%E2%82%AC", 400, "sig"),  # the euro sign answered 500
            ("abc", 400, "sig"),
            ("0" * 64, 400, "sig"),
            (signature, 302, None),
            (signature.upper(), 302, None),
        ]:
            url = f"{strict_tracker.url}/c?to={quote(target, safe='')}&sig={sig}"
            async with http.get(url, allow_redirects=False) as response:
                assert response.status == status, (sig, await response.read())
                if field is not None:
                    document = await response.json()
                    assert document["field"] == field
                    assert document["reason"]
                else:
                    assert response.headers["Location"].startswith(target + "?adp_click_id=")


async def test_events_from_an_origin_not_allowed_are_refused_403(
    kafka: KafkaService, topic: str, strict_tracker: Tracker
) -> None:
    url = f"{strict_tracker.url}/v1/events"
    beacon = {"Content-Type": "text/plain;charset=UTF-8", "User-Agent": BROWSER}

    def event(event_id: str) -> bytes:
        return json.dumps({"type": "click", "event_id": event_id}).encode()

    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        async with http.post(
            url, data=event("evil"), headers={**beacon, "Origin": "https://evil.example"}
        ) as response:
            assert response.status == 403
            document = await response.json()
            assert document["field"] == "origin"
            assert "https://evil.example" in document["reason"]
            assert "ADPULSE_CORS_ORIGINS" in document["reason"]
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.post(
            url, data=event("shop"), headers={**beacon, "Origin": ALLOWED_ORIGIN}
        ) as response:
            assert response.status == 202
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        # A server sends no Origin, and stays allowed.
        async with http.post(url, json={"type": "click", "event_id": "server"}) as response:
            assert response.status == 202
        records = await reader.wait_for(
            lambda records: {"shop", "server"} <= {r.json()["event_id"] for r in records},
            timeout=20,
            message="the allowed events on the topic",
        )
    assert sorted(r.json()["event_id"] for r in records) == ["server", "shop"]
    async with TopicReader(kafka.bootstrap, f"{topic}.rejected") as reader:
        (rejected,) = await reader.wait_for_count(1, timeout=20)
    assert rejected.json()["field"] == "origin"
    assert rejected.json()["status"] == 403

    # The preflight's refusal has its standard reason phrase (it said "403 Unknown").
    (preflight,) = await ask(
        strict_tracker.port,
        b"OPTIONS /v1/events HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
        b"Access-Control-Request-Method: POST\r\n\r\n",
    )
    assert preflight.status_line == b"HTTP/1.1 403 Forbidden"


async def test_an_upgrade_is_answered_once_and_head_records_nothing(
    kafka: KafkaService, topic: str, strict_tracker: Tracker
) -> None:
    port = strict_tracker.port
    async with TopicReader(kafka.bootstrap, topic) as reader:
        # An upgrade is ignored: one answer, the body kept, the next request read as HTTP.
        body = json.dumps({"type": "click", "event_id": "upgraded"}).encode()
        upgraded, after = await ask(
            port,
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: %d\r\n\r\n%s"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" % (len(body), body),
            answers=2,
        )
        assert upgraded.status == 202, upgraded.body
        assert json.loads(upgraded.body)["event_ids"] == ["upgraded"]
        assert after.status == 200

        # HEAD answers the pixel's headers and records nothing; the GET after it does. One
        # click id puts both on one partition, so the GET's event would come after the HEAD's.
        (head,) = await ask(
            port,
            b"HEAD /p.gif?type=click&event_id=head-only&click_id=k1 HTTP/1.1\r\nHost: x\r\n\r\n",
            head=True,
        )
        assert head.status == 200
        assert head.headers["content-type"] == "image/gif"
        (pixel,) = await ask(
            port,
            b"GET /p.gif?type=click&event_id=after-head&click_id=k1 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        assert pixel.status == 200
        records = await reader.wait_for(
            lambda records: any(r.json()["event_id"] == "after-head" for r in records),
            timeout=20,
            message="the pixel after the HEAD on the topic",
        )
    assert sorted(r.json()["event_id"] for r in records) == ["after-head", "upgraded"]


async def test_host_version_expect_and_method_refusals(strict_tracker: Tracker) -> None:
    port = strict_tracker.port
    (no_host,) = await ask(port, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert no_host.status == 400
    assert b"Host" in no_host.body
    (no_version,) = await ask(port, b"GET /p.gif?type=click\r\n\r\n")
    assert no_version.status == 400
    assert b"version" in no_version.body

    # Too large a body is refused before the client sends it, not invited by a 100.
    (too_large,) = await ask(
        port,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2097152\r\nExpect: 100-continue\r\n\r\n",
    )
    assert too_large.status == 413, "the first answer is the refusal, not 100 Continue"

    (not_allowed,) = await ask(port, b"DELETE /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not_allowed.status == 405
    assert not_allowed.headers["allow"] == "OPTIONS, POST"
    (not_allowed,) = await ask(
        port, b"POST /p.gif HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert not_allowed.headers["allow"] == "GET, HEAD"


async def test_a_click_of_any_case_and_a_non_latin_target(
    kafka: KafkaService, topic: str, strict_tracker: Tracker
) -> None:
    target = "https://shop.example.com/café€?q=ü"
    async with TopicReader(kafka.bootstrap, topic) as reader, aiohttp.ClientSession() as http:
        async with http.get(
            f"{strict_tracker.url}/c",
            params={"to": target, "type": "Click", "channel": "email"},
            allow_redirects=False,
        ) as response:
            assert response.status == 302, await response.read()
            location = response.headers["Location"]
        assert location.startswith("https://shop.example.com/caf%C3%A9%E2%82%AC?q=%C3%BC&")
        click_id = parse_qs(urlsplit(location).query)["adp_click_id"][0]
        records = await reader.wait_for(
            lambda records: any(r.json().get("click_id") == click_id for r in records),
            timeout=20,
            message="the redirect's click on the topic",
        )
    (record,) = [r for r in records if r.json().get("click_id") == click_id]
    assert record.json()["type"] == "click"
