"""The posted events, ``POST /v1/events`` (site snippet, browsers and servers) with its CORS
preflight, and the ad spend, ``POST /v1/spend`` (API token)."""

from __future__ import annotations

import orjson

from adpulse.core.channels import UNLISTED
from adpulse.core.contract import EventType
from tracker.answers import (
    BOT_HEADER,
    JSON,
    OVERLOADED_BODY,
    RETRY_AFTER_SECONDS,
    SPEND_REFUSED,
    Invalid,
    json_answer,
)
from tracker.click_ids import issue_click_id
from tracker.endpoints import Endpoints
from tracker.http import Request, Response


class EventRoutes(Endpoints):
    def events(self, request: Request) -> Response:
        cors = self._cors(request)
        try:
            if not cors and b"origin" in request.headers:
                # A browser's request from a page not allowed (servers send no Origin): a
                # sendBeacon or a form post needs no preflight, so refusing it falls to here.
                raise Invalid(
                    "origin",
                    f"origin {(request.header('origin') or '')[:200]!r} may not send events "
                    "(ADPULSE_CORS_ORIGINS)",
                    status=403,
                )
            trusted = self._trusted(request)
            payloads = self._json_body(request, allow_plain_text=True)
            events = [
                self._parse(payload, request, index, trusted=trusted) for index, payload in payloads
            ]
        except Invalid as invalid:
            self._reject("events", invalid, request.body, request)
            return Response(invalid.status, invalid.body(), JSON, cors)
        # A click posted without an id (the site snippet's) gets one, in the answer's
        # `click_ids`, so that the page's later events can name it.
        issued: list[str | None] | None = None
        for position, event in enumerate(events):
            if event.type is EventType.CLICK and event.click_id is None:
                if issued is None:
                    issued = [None] * len(events)
                events[position] = event = issue_click_id(event, self._click_key)
                issued[position] = event.click_id
        if not self._publish(events):
            return self._overloaded("events", cors)
        for (index, payload), event in zip(payloads, events, strict=True):
            if event.channel == UNLISTED and payload.get("channel") != UNLISTED:
                self._sample_unlisted(payload.get("channel"), request, 202, index)
        body: dict[str, object] = {
            "accepted": len(events),
            "event_ids": [event.event_id for event in events],
        }
        if issued is not None:
            body["click_ids"] = issued
        refusal = Response(
            503, OVERLOADED_BODY, JSON, [*cors, ("Retry-After", RETRY_AFTER_SECONDS)]
        )
        headers = cors
        bots = sum(event.bot for event in events)
        if bots:
            headers = [*cors, (BOT_HEADER, str(bots))]
        return Response(202, orjson.dumps(body), JSON, headers, refusal=refusal)

    def spend(self, request: Request) -> Response:
        try:
            self._authorise(request)
            payloads = self._json_body(request, allow_plain_text=False)
            events = []
            for index, payload in payloads:
                if payload.setdefault("type", "spend") != "spend":
                    raise Invalid("type", "this endpoint takes spend only", index=index)
                events.append(self._parse(payload, request, index, trusted=True))
        except Invalid as invalid:
            self._reject("spend", invalid, request.body, request)
            headers = [("WWW-Authenticate", "Bearer")] if invalid.status == 401 else []
            return Response(invalid.status, invalid.body(), JSON, headers)
        if not self._publish(events):
            return self._overloaded("spend")
        body = {"accepted": len(events), "event_ids": [event.event_id for event in events]}
        return Response(202, orjson.dumps(body), JSON, refusal=SPEND_REFUSED)

    def preflight(self, request: Request) -> Response:
        headers = self._cors(request)
        if not headers:
            return json_answer(
                403, {"error": "origin_not_allowed", "origin": request.header("origin")}
            )
        headers += [
            ("Access-Control-Allow-Methods", "POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Max-Age", "86400"),
        ]
        return Response(204, b"", None, headers)
