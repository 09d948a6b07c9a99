"""The tracker's routes: validate, normalise, enrich, hand to the publisher, answer.

Every handler is synchronous and answers without waiting for the broker; see `tracker.http`.
Bad input is answered 4xx with the field and the reason, and recorded on the rejected topic;
nothing here answers 5xx on purpose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from adpulse.core.channels import AD_CLICK_ID_KEYS, UNATTRIBUTED, UNLISTED
from adpulse.core.contract import FORWARDED, FORWARDED_FIELDS, EventType
from adpulse.core.event import (
    MAX_BATCH_EVENTS,
    MAX_BODY_BYTES,
    Event,
    EventError,
    parse_event,
    partition_key,
)
from adpulse.core.fields import parse_channel, parse_text, parse_token
from adpulse.core.phone import display_number
from adpulse.core.throttle import ThrottledLog
from tracker.calls import CallError, CallReport, read_call, redacted
from tracker.click_ids import issue_click_id
from tracker.enrich import client_ip, is_bot, truncate_ip
from tracker.home import HTML, home_page
from tracker.http import Request, Response
from tracker.metrics import TrackerCollector, TrackerMetrics
from tracker.numbers import UNKNOWN, CallSource, NumberDesk, NumbersUnavailable
from tracker.openapi import openapi_document
from tracker.publisher import EventPublisher
from tracker.records import MAX_QUERY_PARAMETERS, QueryRecords
from tracker.redirect import RedirectRefused, with_click_id
from tracker.settings import TrackerSettings
from tracker.snippet import Snippet
from tracker.spool import SpoolRecord

log = logging.getLogger(__name__)

GIF: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE: Final = [("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")]
ERROR_HEADER: Final = "X-Adpulse-Error"
# Says that a click was taken as a bot's (counted apart, in no KPI); on an event post, how many.
BOT_HEADER: Final = "X-Adpulse-Bot"
JSON: Final = "application/json"
MAX_REJECTED_PAYLOAD: Final = 16 * 1024
RETRY_AFTER_SECONDS: Final = "5"
# Bot clicks are steady traffic (crawlers follow links all day): a line every ten seconds, with
# the count of the rest, says so without burying everything else in the log or the dev terminal.
BOT_CLICK_LOG_INTERVAL: Final = 10.0
OVERLOADED_BODY: Final = (
    b'{"error":"overloaded","reason":"the spool cannot take more events now '
    b'(full, or its disk is); retry later"}'
)
# The pixel keeps its GIF when it cannot take the event, and says so in a header.
PIXEL_REFUSED: Final = Response(
    503,
    GIF,
    "image/gif",
    [*NO_STORE, ("Retry-After", RETRY_AFTER_SECONDS), (ERROR_HEADER, "overloaded")],
    constant=True,
)
PIXEL_OK: Final = Response(200, GIF, "image/gif", NO_STORE, constant=True, refusal=PIXEL_REFUSED)
PIXEL_BOT: Final = Response(
    200, GIF, "image/gif", [*NO_STORE, (BOT_HEADER, "1")], constant=True, refusal=PIXEL_REFUSED
)
# A HEAD records nothing, so it has no commit to wait for and nothing to refuse.
PIXEL_HEAD: Final = Response(200, GIF, "image/gif", NO_STORE, constant=True)
# Answered instead of an acceptance whose turn could not be written to the spool's log.
CLICK_REFUSED: Final = Response(
    503, OVERLOADED_BODY, JSON, [*NO_STORE, ("Retry-After", RETRY_AFTER_SECONDS)], constant=True
)
SPEND_REFUSED: Final = Response(
    503, OVERLOADED_BODY, JSON, [("Retry-After", RETRY_AFTER_SECONDS)], constant=True
)
CALLS_REFUSED: Final = Response(
    503, OVERLOADED_BODY, JSON, [("Retry-After", RETRY_AFTER_SECONDS)], constant=True
)
# User agents remembered with their bot flag; clients send a few hundred.
MAX_CACHED_USER_AGENTS: Final = 4096
MAX_CACHED_USER_AGENT_BYTES: Final = 512
# Cache busters a pixel may carry that are not event fields.
PIXEL_IGNORED: Final = frozenset({"_", "cb", "rnd", "r"})
# Unknown channels kept on the rejected topic for inspection, at most this many a second (and
# as many at once): enough to see what a client sends, never a flood of its own.
UNLISTED_SAMPLES_PER_SECOND: Final = 10
UTM_FIELDS: Final = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"}
)
_new_record: Final = tuple.__new__


class Invalid(Exception):
    """A request refused as invalid: becomes a 4xx with a JSON reason and a rejected record."""

    def __init__(
        self, field: str, reason: str, *, status: int = 400, index: int | None = None
    ) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status
        self.index = index

    def body(self) -> bytes:
        document: dict[str, Any] = {
            "error": "invalid_request",
            "field": self.field,
            "reason": self.reason,
        }
        if self.index is not None:
            document["index"] = self.index
        return orjson.dumps(document)


class TrackerApp:
    def __init__(
        self,
        settings: TrackerSettings,
        publisher: EventPublisher,
        numbers: NumberDesk | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        # The phone-number registry and leases, when the tracker has a Redis (--redis-url).
        self.numbers = numbers
        self._hash_key = None if settings.hash_key is None else settings.hash_key.reveal()
        click_key = settings.click_key
        self._click_key = None if click_key is None else click_key.reveal().encode()
        # Lease and attribution tasks in flight, kept so that none is collected unfinished.
        self._waiting: set[asyncio.Task[Callable[[], Response]]] = set()
        self.metrics = TrackerMetrics()
        self.registry = CollectorRegistry()
        self.registry.register(TrackerCollector(self.metrics, publisher))
        self._openapi = orjson.dumps(openapi_document(settings))
        self._home = Response(200, home_page(settings), HTML)
        self.site_snippet = Snippet.load()
        # Refusals and bot clicks, each at most a line a second with a count of the rest.
        self._refusals = ThrottledLog(log, logging.INFO, "refused")
        self._bot_clicks = ThrottledLog(
            log, logging.INFO, "bot clicks", interval=BOT_CLICK_LOG_INTERVAL
        )
        self._events_topic = settings.topic
        self._rejected_topic = settings.rejected_topic
        self._routes: dict[tuple[str, str], tuple[str, Callable[[Request], Response]]] = {
            ("GET", "/p.gif"): ("pixel", self.pixel),
            ("HEAD", "/p.gif"): ("pixel", self.pixel_head),
            ("GET", "/c"): ("click", self.click),
            ("POST", "/v1/events"): ("events", self.events),
            ("OPTIONS", "/v1/events"): ("preflight", self.preflight),
            ("POST", "/v1/spend"): ("spend", self.spend),
            ("GET", "/v1/number"): ("number", self.number),
            ("POST", "/v1/calls"): ("calls", self.calls),
            ("GET", "/healthz"): ("healthz", self.healthz),
            ("GET", "/readyz"): ("readyz", self.readyz),
            ("GET", "/metrics"): ("metrics", self.prometheus),
            ("GET", "/openapi.json"): ("openapi", self.openapi),
            ("GET", "/s.js"): ("snippet", self.snippet),
            ("GET", "/"): ("home", self.home),
        }
        # A path's methods, for the Allow header of a 405.
        self._allowed = {
            path: ", ".join(sorted(method for method, other in self._routes if other == path))
            for _, path in self._routes
        }
        # Both depend only on a few strings that repeat across requests, and each costs more
        # than the rest of a pixel's enrichment.
        self._client_address = lru_cache(maxsize=16384)(self._truncated_client_address)
        self._group = lru_cache(maxsize=16384)(settings.channel_rules.group)
        self._bots: dict[bytes | None, bool] = {}
        self._records = QueryRecords(settings.event_rules, ignored=PIXEL_IGNORED, group=self._group)
        self._sample_allowance = float(UNLISTED_SAMPLES_PER_SECOND)
        self._sample_refilled = time.monotonic()

    # dispatch

    def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        route = self._routes.get((request.method, request.path))
        if route is None:
            name = "unknown"
            allowed = self._allowed.get(request.path)
            if allowed is not None:
                response = _json(405, {"error": "method_not_allowed", "path": request.path})
                response.headers.append(("Allow", allowed))
            else:
                response = _json(404, {"error": "not_found", "path": request.path})
        else:
            name, handler = route
            response = handler(request)
        self.metrics.observe(name, response.status, time.perf_counter() - started)
        return response

    # event endpoints

    def pixel(self, request: Request) -> Response:
        event_type: str
        unlisted = None
        try:
            ip, bot = self._client(request)
            found = self._records.from_query(request.query, datetime.now(UTC), ip, bot)
            if found is not None:
                event_type, key, value = found
                # The NamedTuple's own constructor is a Python function: a frame per pixel.
                record = _new_record(SpoolRecord, (self._events_topic, key, value))
            else:
                fields = _query(request.query)
                if not PIXEL_IGNORED.isdisjoint(fields):
                    for name in PIXEL_IGNORED:
                        fields.pop(name, None)
                event_type, record, unlisted = self._query_record(fields, request)
        except Invalid as invalid:
            self._reject("pixel", invalid, request.query, request)
            return Response(
                invalid.status,
                GIF,
                "image/gif",
                [*NO_STORE, (ERROR_HEADER, f"{invalid.field}: {invalid.reason}")],
            )
        answer = PIXEL_OK
        if bot and event_type == "click":
            self._bot_click(request)
            answer = PIXEL_BOT
        if not self.publisher.submit_one(record):
            self.metrics.overloaded["pixel"] += 1
            return PIXEL_REFUSED
        self.metrics.accepted[event_type] += 1
        if unlisted is not None:
            self._sample_unlisted(unlisted, request, 200)
        return answer

    def pixel_head(self, request: Request) -> Response:
        # What a GET would answer, without recording anything: a HEAD asks about the resource.
        return PIXEL_HEAD

    def click(self, request: Request) -> Response:
        try:
            fields = _query(request.query)
            target = fields.pop("to", None)
            signature = fields.pop("sig", None)
            if not isinstance(target, str) or not isinstance(signature, str | None):
                raise Invalid("to", "the redirect target is required")
            try:
                location = self.settings.redirect_policy.check(target, signature)
            except RedirectRefused as refused:
                raise Invalid(refused.field, refused.reason) from None
            if "type" in fields and fields["type"].lower() != "click":
                raise Invalid("type", "a redirect always records a click")
            if "click_id" in fields:
                raise Invalid("click_id", "the click id is assigned by the tracker")
            # Campaign links usually carry their UTM tags on the landing page's URL; those count
            # unless the redirect names its own.
            if not any(key.startswith("utm_") for key in fields):
                fields.update(_landing_utm(target))
            fields["type"] = "click"
            event_type, record, unlisted, click_id = self._click_record(fields, request)
        except Invalid as invalid:
            self._reject("click", invalid, request.query, request)
            return Response(invalid.status, invalid.body(), JSON, NO_STORE)
        bot = self._client(request)[1]
        if bot:
            self._bot_click(request)
        if not self.publisher.submit_one(record):
            return self._overloaded("click")
        self.metrics.accepted[event_type] += 1
        if unlisted is not None:
            self._sample_unlisted(unlisted, request, 302)
        headers = [*NO_STORE, ("Location", with_click_id(location, click_id))]
        if bot:
            headers.append((BOT_HEADER, "1"))
        return Response(302, b"", None, headers, refusal=CLICK_REFUSED)

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

    # tracked phone numbers and calls (issue 14)

    def number(self, request: Request) -> Response:
        """The visitor's tracked number: 200 ``{"number", "display"}``, or 204 when there is
        none (no pool and no static number, no Redis, or Redis failing): never an error page
        for a visitor, whose page keeps the number it printed."""
        cors = self._cors(request)
        try:
            fields = _query(request.query)
            rules = self.settings.event_rules
            channel = _checked("channel", parse_channel, fields.get("channel"))
            if channel is None:
                channel = self._enrichment(fields, request)[0]
            campaign = _checked(
                "campaign",
                lambda value: parse_text(value, rules.max_campaign_length),
                fields.get("campaign") or fields.get("utm_campaign"),
            )
            click_id = _checked(
                "click_id",
                lambda value: parse_token(value, rules.max_id_length),
                fields.get("click_id"),
            )
        except Invalid as invalid:
            self.metrics.count_rejected(invalid.field)
            return Response(invalid.status, invalid.body(), JSON, [*NO_STORE, *cors])
        numbers = self.numbers
        if numbers is None:
            self.metrics.numbers["disabled"] += 1
            return Response(204, b"", None, [*NO_STORE, *cors])
        task = asyncio.ensure_future(
            self._lease(numbers, channel or UNATTRIBUTED, campaign or "", click_id or "", cors)
        )
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)
        return Response(200, later=task)

    async def _lease(
        self,
        numbers: NumberDesk,
        channel: str,
        campaign: str,
        click_id: str,
        cors: list[tuple[str, str]],
    ) -> Callable[[], Response]:
        headers = [*NO_STORE, *cors]
        try:
            lease = await numbers.lease(channel, campaign, click_id, time.time_ns() // 1_000_000)
        except NumbersUnavailable as error:
            self.metrics.numbers["failed"] += 1
            self._refusals.log("GET /v1/number answered 204: %s (--redis-url)", error)
            return lambda: Response(204, b"", None, headers)
        if lease is None:
            self.metrics.numbers["none"] += 1
            return lambda: Response(204, b"", None, headers)
        self.metrics.numbers[lease.how] += 1
        if lease.how == "reused":
            self._refusals.log(
                "the number pool of %s is exhausted: the oldest lease was reused "
                "(add numbers with `adpulse numbers pool add`)",
                channel,
            )
        body = orjson.dumps({"number": lease.number, "display": display_number(lease.number)})
        return lambda: Response(200, body, JSON, headers)

    def calls(self, request: Request) -> Response:
        """A telephony webhook: one call or an array; 202 once attributed and accepted."""
        try:
            self._authorise(request)
            payloads = self._json_body(request, allow_plain_text=False)
            reports = []
            for index, payload in payloads:
                try:
                    reports.append(
                        read_call(
                            payload, hash_key=self._hash_key, region=self.settings.phone_region
                        )
                    )
                except CallError as error:
                    raise Invalid(error.field, error.reason, index=index) from None
        except Invalid as invalid:
            self._reject("calls", invalid, redacted(request.body), request)
            headers = [("WWW-Authenticate", "Bearer")] if invalid.status == 401 else []
            return Response(invalid.status, invalid.body(), JSON, headers)
        task = asyncio.ensure_future(self._attribute_calls(reports, request))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)
        return Response(202, later=task)

    async def _attribute_calls(
        self, reports: list[CallReport], request: Request
    ) -> Callable[[], Response]:
        sources: list[CallSource] = []
        numbers = self.numbers
        try:
            for report in reports:
                if numbers is None:
                    sources.append(UNKNOWN)
                else:
                    started_ms = int(report.started_at.timestamp() * 1000)
                    sources.append(await numbers.attribute(report.tracked_number, started_ms))
        except NumbersUnavailable as error:
            log.warning("POST /v1/calls answered 503: %s (--redis-url)", error)
            body = orjson.dumps(
                {
                    "error": "unavailable",
                    "reason": "the phone-number registry (Redis, --redis-url) does not answer; "
                    "retry later",
                }
            )
            return lambda: Response(503, body, JSON, [("Retry-After", RETRY_AFTER_SECONDS)])

        # Built and submitted in the turn that answers, so that the turn's commit covers them.
        def accept() -> Response:
            try:
                events = [
                    self._call_event(report, source, request, index)
                    for index, (report, source) in enumerate(zip(reports, sources, strict=True))
                ]
            except Invalid as invalid:
                self._reject("calls", invalid, redacted(request.body), request)
                return Response(invalid.status, invalid.body(), JSON)
            if not self._publish(events):
                return self._overloaded("calls")
            for source in sources:
                self.metrics.calls[source.source] += 1
            body = {"accepted": len(events), "event_ids": [event.event_id for event in events]}
            body["channels"] = [event.channel for event in events]
            return Response(202, orjson.dumps(body), JSON, refusal=CALLS_REFUSED)

        return accept

    def _call_event(
        self, report: CallReport, source: CallSource, request: Request, index: int
    ) -> Event:
        fields: dict[str, object] = {
            "type": "call",
            "event_id": report.event_id,
            "ts": report.started_at.isoformat(),
            "channel": source.channel or UNATTRIBUTED,
        }
        if source.campaign:
            fields["campaign"] = source.campaign
        if source.click_id:
            fields["click_id"] = source.click_id
        try:
            event = parse_event(
                fields,
                rules=self.settings.event_rules,
                received_at=datetime.now(UTC),
                ip=self._client(request)[0],
                trusted=True,
                webhook=True,
            )
        except EventError as error:
            raise Invalid(error.field, error.reason, index=index) from None
        return dataclasses.replace(
            event,
            tracked_number=report.tracked_number,
            caller=report.caller,
            answered=report.answered,
            qualified=report.qualified(self.settings.call_qualified_seconds),
        )

    def preflight(self, request: Request) -> Response:
        headers = self._cors(request)
        if not headers:
            return _json(403, {"error": "origin_not_allowed", "origin": request.header("origin")})
        headers += [
            ("Access-Control-Allow-Methods", "POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Max-Age", "86400"),
        ]
        return Response(204, b"", None, headers)

    # operational endpoints

    def healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})

    def readyz(self, request: Request) -> Response:
        state = self.publisher.readiness()
        ready = state["accepting"] and not self.publisher.closing
        state["status"] = (
            "ready" if ready and state["broker"] == "up" else "degraded" if ready else "unavailable"
        )
        return _json(200 if ready else 503, state)

    def prometheus(self, request: Request) -> Response:
        return Response(200, generate_latest(self.registry), "text/plain; version=0.0.4")

    def openapi(self, request: Request) -> Response:
        return Response(200, self._openapi, JSON)

    def home(self, request: Request) -> Response:
        return self._home

    def snippet(self, request: Request) -> Response:
        return self.site_snippet.answer(request)

    def count_refused(self, refusal: Response) -> None:
        """An acceptance answered `refusal` instead: its turn could not be written to the log.
        The events route builds its refusal per request (CORS headers); the others are
        constants."""
        route = _REFUSAL_ROUTES.get(id(refusal), "events")
        self.metrics.overloaded[route] += 1

    def count_protocol_error(self, status: int) -> None:
        """Requests the HTTP layer refused before routing (malformed, too large, too slow)."""
        self.metrics.requests["protocol", status] += 1

    # helpers

    def _query_record(
        self, fields: dict[str, str], request: Request
    ) -> tuple[str, SpoolRecord, str | None]:
        """A pixel's or a click's event type and record, and the channel it named when that
        is unknown and counts as "unlisted".

        `QueryRecords` writes the usual query's record without building an `Event`; whatever
        it declines goes through `parse_event`, which accepts it or says why not.
        """
        grouped, ip, bot = self._enrichment(fields, request)
        received_at = datetime.now(UTC)
        found = self._records.record(fields, received_at, grouped, ip, bot)
        if found is not None:
            event_type, key, value = found
            return event_type, SpoolRecord(self._events_topic, key, value), None
        event = self._parse_enriched(fields, received_at, grouped, ip, bot)
        unlisted = None
        if event.channel == UNLISTED and fields.get("channel") != UNLISTED:
            unlisted = fields.get("channel")
        record = SpoolRecord(self._events_topic, partition_key(event), event.to_wire())
        return event.type, record, unlisted

    def _click_record(
        self, fields: dict[str, str], request: Request
    ) -> tuple[str, SpoolRecord, str | None, str]:
        """`_query_record` of a redirect's click, and the click id the tracker issued it: the
        event is built first, as a signed id carries the channel and campaign it resolved."""
        grouped, ip, bot = self._enrichment(fields, request)
        event = self._parse_enriched(fields, datetime.now(UTC), grouped, ip, bot)
        event = issue_click_id(event, self._click_key)
        unlisted = None
        if event.channel == UNLISTED and fields.get("channel") != UNLISTED:
            unlisted = fields.get("channel")
        record = SpoolRecord(self._events_topic, partition_key(event), event.to_wire())
        return event.type, record, unlisted, str(event.click_id)

    def _parse(
        self, fields: Mapping[str, object], request: Request, index: int = 0, *, trusted: bool
    ) -> Event:
        visitor = None
        if not FORWARDED_FIELDS.isdisjoint(fields):
            fields, visitor = _forwarded(fields, index, trusted=trusted)
        grouped, ip, bot = self._enrichment(fields, request)
        if visitor is not None:
            # A server posting for a visitor: the visitor's agent and address, where it gave
            # them, instead of its own connection's.
            user_agent, address = visitor
            if user_agent is not None:
                bot = self._bot(user_agent.encode("latin-1", "replace"))
            if address is not None:
                ip = address
        return self._parse_enriched(
            fields, datetime.now(UTC), grouped, ip, bot, index, trusted=trusted
        )

    def _parse_enriched(
        self,
        fields: Mapping[str, object],
        received_at: datetime,
        grouped: str | None,
        ip: str | None,
        bot: bool,
        index: int = 0,
        *,
        trusted: bool = False,
    ) -> Event:
        try:
            return parse_event(
                fields,
                rules=self.settings.event_rules,
                received_at=received_at,
                grouped_channel=grouped,
                ip=ip,
                bot=bot,
                trusted=trusted,
            )
        except EventError as error:
            raise Invalid(error.field, error.reason, index=index) from None

    def _enrichment(
        self, fields: Mapping[str, object], request: Request
    ) -> tuple[str | None, str | None, bool]:
        """The channel grouped from UTM values and ad click ids, the truncated client address,
        and whether the user agent is a bot's."""
        source = fields.get("utm_source")
        medium = fields.get("utm_medium")
        # Only ids with a value: a pixel template often leaves `gclid=` empty. Most events have
        # none, which one set test finds without collecting them.
        click_ids: tuple[str, ...] = ()
        if not AD_CLICK_ID_KEYS.isdisjoint(fields):
            click_ids = tuple(
                key for key in AD_CLICK_ID_KEYS if isinstance(fields.get(key), str) and fields[key]
            )
        grouped = self._group(
            source if isinstance(source, str) else None,
            medium if isinstance(medium, str) else None,
            click_ids,
        )
        return (grouped, *self._client(request))

    def _client(self, request: Request) -> tuple[str | None, bool]:
        """The truncated client address, and whether the user agent is a bot's."""
        headers = request.headers
        user_agent = headers.get(b"user-agent")
        bot = self._bots.get(user_agent)
        if bot is None:
            bot = self._bot(user_agent)
        return self._client_address(request.peer, headers.get(b"x-forwarded-for")), bot

    def _bot(self, user_agent: bytes | None) -> bool:
        """`is_bot`, remembered by the raw header, which spares decoding it and asking
        `is_bot`'s own cache on every request. Long agents are not kept, as there."""
        bot = is_bot(None if user_agent is None else user_agent.decode("latin-1"))
        if user_agent is None or len(user_agent) <= MAX_CACHED_USER_AGENT_BYTES:
            if len(self._bots) >= MAX_CACHED_USER_AGENTS:
                self._bots.clear()
            self._bots[user_agent] = bot
        return bot

    def _truncated_client_address(
        self, peer: str | None, forwarded_for: bytes | None
    ) -> str | None:
        # The raw header is the cache key, so a request decodes it only when the cache misses.
        forwarded = None if forwarded_for is None else forwarded_for.decode("latin-1")
        address = client_ip(peer, forwarded, self.settings.trusted_proxies)
        return truncate_ip(address) if address else None

    def _json_body(
        self, request: Request, *, allow_plain_text: bool
    ) -> list[tuple[int, dict[str, Any]]]:
        media_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        allowed = ("application/json", "text/plain") if allow_plain_text else ("application/json",)
        if media_type not in allowed:
            raise Invalid(
                "content-type", f"expected {' or '.join(allowed)}, got {media_type!r}", status=415
            )
        if len(request.body) > MAX_BODY_BYTES:
            raise Invalid("body", "the body is larger than 1 MiB", status=413)
        if not request.body.strip():
            raise Invalid("body", "the body is empty")
        try:
            document = orjson.loads(request.body)
        except orjson.JSONDecodeError as error:
            try:
                request.body.decode("utf-8")
            except UnicodeDecodeError:
                raise Invalid("body", "the body is not valid UTF-8") from None
            raise Invalid("body", f"malformed JSON: {error}") from None
        items = document if isinstance(document, list) else [document]
        if not items:
            raise Invalid("body", "the batch is empty")
        if len(items) > MAX_BATCH_EVENTS:
            raise Invalid("body", f"a batch holds at most {MAX_BATCH_EVENTS} events", status=413)
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise Invalid("body", "each event must be a JSON object", index=index)
        return list(enumerate(items))

    def _trusted(self, request: Request) -> bool:
        """Whether an event endpoint's caller showed the API token (its new channels are kept).

        Without a bearer token the caller is anonymous; a wrong one is refused with 401, so
        that a misconfigured server does not count its channels as "unlisted" unnoticed.
        """
        header = request.header("authorization")
        if header is None or header.partition(" ")[0].lower() != "bearer":
            return False
        self._authorise(request)
        return True

    def _authorise(self, request: Request) -> None:
        token = self.settings.api_token
        if token is None:
            raise Invalid(
                "authorization",
                "this endpoint is disabled: set ADPULSE_API_TOKEN on the tracker",
                status=401,
            )
        header = request.header("authorization") or ""
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise Invalid("authorization", "a bearer token is required", status=401)
        if not hmac.compare_digest(presented.strip().encode(), token.reveal().encode()):
            raise Invalid("authorization", "the bearer token is not valid", status=401)

    def _publish(self, events: list[Event]) -> bool:
        topic = self._events_topic
        # A loop rather than a comprehension, which in 3.11 is a function call of its own, to
        # spare that call for a pixel's single record.
        records = []
        for event in events:
            records.append(SpoolRecord(topic, partition_key(event), event.to_wire()))
        if not self.publisher.submit(records):
            return False
        accepted = self.metrics.accepted
        for event in events:
            accepted[event.type] += 1
        return True

    def _bot_click(self, request: Request) -> None:
        agent = (request.headers.get(b"user-agent") or b"").decode("latin-1")
        self._bot_clicks.log(
            "bot click accepted, counted apart from clicks: user agent %.80r", agent
        )

    def _reject(self, route: str, invalid: Invalid, payload: bytes, request: Request) -> None:
        self.metrics.count_rejected(invalid.field)
        self._refusals.log(
            "refused %s %s: %s: %.200s", route, invalid.status, invalid.field, invalid.reason
        )
        if invalid.field == "authorization":
            # Unauthenticated bodies are not worth keeping, and may be probes.
            return
        record = {
            "received_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "route": route,
            "status": invalid.status,
            "field": invalid.field,
            "reason": invalid.reason,
            "index": invalid.index,
            "ip": self._client_address(request.peer, request.headers.get(b"x-forwarded-for")),
            "payload": payload[:MAX_REJECTED_PAYLOAD].decode("utf-8", "replace"),
            "payload_truncated": len(payload) > MAX_REJECTED_PAYLOAD,
        }
        value = orjson.dumps(record)
        if not self.publisher.submit([SpoolRecord(self._rejected_topic, b"", value)]):
            log.warning("rejected record dropped: the spool is full (%s)", invalid)

    def _sample_unlisted(
        self, name: object, request: Request, status: int, index: int | None = None
    ) -> None:
        """Count an accepted event whose unknown channel `name` became "unlisted", and keep the
        name on the rejected topic, at most `UNLISTED_SAMPLES_PER_SECOND` (the rest counted)."""
        metrics = self.metrics
        metrics.unlisted_channels += 1
        now = time.monotonic()
        allowance = min(
            float(UNLISTED_SAMPLES_PER_SECOND),
            self._sample_allowance + (now - self._sample_refilled) * UNLISTED_SAMPLES_PER_SECOND,
        )
        self._sample_refilled = now
        if allowance < 1:
            self._sample_allowance = allowance
            metrics.unlisted_samples_dropped += 1
            return
        self._sample_allowance = allowance - 1
        route = self._routes[request.method, request.path][0]
        record = {
            "received_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "route": route,
            "status": status,
            "field": "channel",
            "reason": "not a known channel: counted as 'unlisted'; list it in ADPULSE_CHANNELS "
            "or send it with the API token",
            "index": index,
            "ip": self._client_address(request.peer, request.headers.get(b"x-forwarded-for")),
            "payload": str(name)[:MAX_REJECTED_PAYLOAD],
            "payload_truncated": False,
        }
        if not self.publisher.submit(
            [SpoolRecord(self._rejected_topic, b"", orjson.dumps(record))]
        ):
            metrics.unlisted_samples_dropped += 1

    def _overloaded(self, route: str, headers: list[tuple[str, str]] | None = None) -> Response:
        self.metrics.overloaded[route] += 1
        body = {
            "error": "overloaded",
            "reason": "the broker is unreachable and the spool is full; retry later",
        }
        return Response(
            503, orjson.dumps(body), JSON, [*(headers or []), ("Retry-After", RETRY_AFTER_SECONDS)]
        )

    def _cors(self, request: Request) -> list[tuple[str, str]]:
        origin = request.header("origin")
        allowed = self.settings.cors_origins
        if "*" in allowed:
            return [("Access-Control-Allow-Origin", "*")]
        if origin is not None and origin in allowed:
            return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        return []


def _query(query: bytes) -> dict[str, str]:
    """Query parameters; the first of a repeated one wins, as most analytics tools do.

    Hand-written rather than `parse_qsl`: this runs on every pixel and click, and most values
    need no unquoting at all.
    """
    if not query:
        return {}
    try:
        text = query.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("query", "the query string is not valid UTF-8") from None
    pairs = text.split("&")
    if len(pairs) > MAX_QUERY_PARAMETERS:
        raise Invalid("query", f"more than {MAX_QUERY_PARAMETERS} query parameters")
    fields: dict[str, str] = {}
    if "%" not in text and "+" not in text:
        # Nothing escaped, the usual pixel: cheaper than asking each name and value.
        for pair in pairs:
            key, _, value = pair.partition("=")
            if value and key not in fields:
                fields[key] = value
        return fields
    try:
        for pair in pairs:
            key, _, value = pair.partition("=")
            if not value:
                continue
            if "%" in pair or "+" in pair:
                if "%" in key or "+" in key:
                    key = unquote_plus(key, errors="strict")
                if "%" in value or "+" in value:
                    value = unquote_plus(value, errors="strict")
            if key not in fields:
                fields[key] = value
    except UnicodeDecodeError:
        raise Invalid("query", "a query parameter is not valid UTF-8 once decoded") from None
    return fields


def _forwarded(
    fields: Mapping[str, object], index: int, *, trusted: bool
) -> tuple[dict[str, object], tuple[str | None, str | None]]:
    """The event's fields without the visitor's `user_agent` and `ip`, and those two (the
    address truncated), None where not given; Invalid for a caller without the API token
    (403) and for a value that is not one (400)."""
    kept = dict(fields)
    given: dict[str, str | None] = {}
    for forwarded in FORWARDED:
        if forwarded.name not in kept:
            continue
        value = kept.pop(forwarded.name)
        if not trusted:
            raise Invalid(
                forwarded.name,
                "only a server with the API token (Authorization: Bearer) may send the "
                "visitor's user_agent and ip",
                status=403,
                index=index,
            )
        try:
            given[forwarded.name] = (
                None if value is None else parse_text(value, forwarded.max_length)
            )
        except ValueError as error:
            raise Invalid(forwarded.name, str(error), index=index) from None
    address = given.get("ip")
    if address is not None:
        address = truncate_ip(address)
        if address is None:
            raise Invalid("ip", "not an IPv4 or IPv6 address", index=index)
    return kept, (given.get("user_agent"), address)


def _landing_utm(target: str) -> dict[str, str]:
    """The utm_* parameters of a redirect target's query, first of each, as strings."""
    found: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(target).query):
        if key in UTM_FIELDS and key not in found:
            found[key] = value
    return found


_REFUSAL_ROUTES: Final = {
    id(PIXEL_REFUSED): "pixel",
    id(CLICK_REFUSED): "click",
    id(SPEND_REFUSED): "spend",
    id(CALLS_REFUSED): "calls",
}


def _checked(name: str, parse: Callable[[object], str | None], value: str | None) -> str | None:
    """`parse(value)`, None for absent, or Invalid naming `name`."""
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as error:
        raise Invalid(name, str(error)) from None


def _json(status: int, document: Mapping[str, Any]) -> Response:
    return Response(status, orjson.dumps(document), JSON)
