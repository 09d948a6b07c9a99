"""What every endpoint of the tracker shares: the app's state, and the steps of a request
(enrich, parse, authorise, publish, reject, sample unlisted channels, CORS).

`TrackerApp` (`tracker.app`) is this with the endpoints of `tracker.click_route`,
`tracker.event_routes` and `tracker.call_routes` and its own pixel and routing; they are
classes over this one so that a handler reaches the state and steps as attributes of `self`
(one cached look-up each), with no layer between the routing and the handler.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson
from prometheus_client import CollectorRegistry

from adpulse.core.channels import AD_CLICK_ID_KEYS
from adpulse.core.contract import FORWARDED, FORWARDED_FIELDS
from adpulse.core.event import (
    MAX_BATCH_EVENTS,
    MAX_BODY_BYTES,
    Event,
    EventError,
    parse_event,
    partition_key,
)
from adpulse.core.fields import parse_text
from adpulse.core.throttle import ThrottledLog
from tracker.answers import JSON, RETRY_AFTER_SECONDS, Invalid
from tracker.enrich import client_ip, is_bot, truncate_ip
from tracker.home import HTML, home_page
from tracker.http import Request, Response
from tracker.metrics import TrackerCollector, TrackerMetrics
from tracker.numbers import NumberDesk
from tracker.openapi import openapi_document
from tracker.publisher import EventPublisher
from tracker.records import MAX_QUERY_PARAMETERS, QueryRecords
from tracker.settings import TrackerSettings
from tracker.snippet import Snippet
from tracker.spool import SpoolRecord

# The app's logger, as before the endpoints left tracker/app.py: what operators grep for.
log = logging.getLogger("tracker.app")

MAX_REJECTED_PAYLOAD: Final = 16 * 1024
# Bot clicks are steady traffic (crawlers follow links all day): a line every ten seconds, with
# the count of the rest, says so without burying everything else in the log or the dev terminal.
BOT_CLICK_LOG_INTERVAL: Final = 10.0
MAX_CACHED_USER_AGENTS: Final = 4096
MAX_CACHED_USER_AGENT_BYTES: Final = 512
# Cache busters a pixel may carry that are not event fields.
PIXEL_IGNORED: Final = frozenset({"_", "cb", "rnd", "r"})
# Unknown channels kept on the rejected topic for inspection, at most this many a second (and
# as many at once): enough to see what a client sends, never a flood of its own.
UNLISTED_SAMPLES_PER_SECOND: Final = 10


class Endpoints:
    """The tracker app's state and the steps its endpoints share."""

    # Built by `TrackerApp`, which has the handlers: (method, path) -> (route name, handler).
    _routes: dict[tuple[str, str], tuple[str, Callable[[Request], Response]]]

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
        # Both depend only on a few strings that repeat across requests, and each costs more
        # than the rest of a pixel's enrichment.
        self._client_address = lru_cache(maxsize=16384)(self._truncated_client_address)
        self._group = lru_cache(maxsize=16384)(settings.channel_rules.group)
        self._bots: dict[bytes | None, bool] = {}
        self._records = QueryRecords(settings.event_rules, ignored=PIXEL_IGNORED, group=self._group)
        self._sample_allowance = float(UNLISTED_SAMPLES_PER_SECOND)
        self._sample_refilled = time.monotonic()

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


def parse_query(query: bytes) -> dict[str, str]:
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


def checked(name: str, parse: Callable[[object], str | None], value: str | None) -> str | None:
    """`parse(value)`, None for absent, or Invalid naming `name`."""
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as error:
        raise Invalid(name, str(error)) from None
