"""A server's post for a visitor: `user_agent` and `ip` only with the API token, used for the bot
flag and the truncated address; bot clicks said in X-Adpulse-Bot."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from adpulse.core.options import Secret
from tests.unit.test_known_channels import app
from tracker.app import BOT_HEADER, TrackerApp
from tracker.http import Request, Response

TOKEN = "forwarding-token"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SERVER = "python-requests/2.32"


@pytest.fixture
def tracker(tmp_path: Path) -> TrackerApp:
    made = app(tmp_path)
    made.settings = dataclasses.replace(made.settings, api_token=Secret(TOKEN))
    return made


def post(tracker: TrackerApp, body: object, *, token: str | None) -> Response:
    headers = {b"content-type": b"application/json", b"user-agent": SERVER.encode()}
    if token is not None:
        headers[b"authorization"] = f"Bearer {token}".encode()
    request = Request("POST", "/v1/events", b"", headers, orjson.dumps(body), "192.0.2.10")
    return tracker(request)


def written(tracker: TrackerApp) -> list[dict[str, Any]]:
    return [orjson.loads(record.value) for record in tracker.publisher._turn]


def test_a_forwarded_visitor_replaces_the_server_s_agent_and_address(tracker: TrackerApp) -> None:
    body = {"type": "click", "channel": "email", "user_agent": BROWSER, "ip": "203.0.113.77"}
    response = post(tracker, body, token=TOKEN)
    assert response.status == 202, response.body
    assert BOT_HEADER not in dict(response.headers)
    (event,) = written(tracker)
    # The visitor's address, truncated; its browser's agent: not a bot. Neither kept as sent.
    assert event["ip"] == "203.0.113.0"
    assert "bot" not in event
    assert "user_agent" not in event


def test_without_a_forwarded_agent_the_server_s_own_decides(tracker: TrackerApp) -> None:
    response = post(tracker, [{"type": "click", "ip": "2001:db8:1:2::7"}] * 2, token=TOKEN)
    assert response.status == 202, response.body
    assert dict(response.headers)[BOT_HEADER] == "2"
    assert [(event["ip"], event["bot"]) for event in written(tracker)] == [
        ("2001:db8:1::", True)
    ] * 2


@pytest.mark.parametrize("name", ["user_agent", "ip"])
def test_without_the_token_the_fields_are_refused_by_name(tracker: TrackerApp, name: str) -> None:
    response = post(tracker, [{"type": "lead"}, {"type": "click", name: "x"}], token=None)
    assert response.status == 403
    document = orjson.loads(response.body)
    assert (document["field"], document["index"]) == (name, 1)
    assert "API token" in document["reason"]
    assert tracker.metrics.rejected[name] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ip": "not-an-address"}, "ip"),
        ({"ip": 7}, "ip"),
        ({"user_agent": "x" * 1025}, "user_agent"),
    ],
)
def test_a_bad_forwarded_value_is_a_400_naming_it(
    tracker: TrackerApp, body: dict[str, object], field: str
) -> None:
    response = post(tracker, {"type": "click", **body}, token=TOKEN)
    assert response.status == 400
    assert orjson.loads(response.body)["field"] == field


def test_the_pixel_says_a_bot_click_was_taken_as_one(tracker: TrackerApp) -> None:
    def pixel(agent: str, query: bytes) -> Response:
        headers = {b"user-agent": agent.encode()}
        return tracker(Request("GET", "/p.gif", query, headers, b"", "198.51.100.4"))

    assert dict(pixel("curl/8.5.0", b"type=click&channel=email").headers)[BOT_HEADER] == "1"
    assert BOT_HEADER not in dict(pixel(BROWSER, b"type=click&channel=email").headers)
    # Only a click is a bot's: a conversion posted by a server's library counts.
    assert BOT_HEADER not in dict(pixel("curl/8.5.0", b"type=conversion&value=5").headers)
