"""The tracker's app: its routes, the pixel, and the operational endpoints.

The other endpoints are in their own modules, classes over `tracker.endpoints.Endpoints` (the
state and steps every endpoint shares) that `TrackerApp` combines: the click redirect in
`tracker.click_route`, the posted events and spend in `tracker.event_routes`, tracked numbers
and calls in `tracker.call_routes`. The pixel stays here, beside the routing, as the hot path.

Every handler is synchronous and answers without waiting for the broker; see `tracker.http`.
Bad input is answered 4xx with the field and the reason, and recorded on the rejected topic;
nothing here answers 5xx on purpose.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final, cast

from prometheus_client import generate_latest

from adpulse.core.channels import UNLISTED
from adpulse.core.event import partition_key
from tracker.answers import (
    BOT_HEADER,
    CALLS_REFUSED,
    CLICK_REFUSED,
    ERROR_HEADER,
    GIF,
    JSON,
    NO_STORE,
    PIXEL_BOT,
    PIXEL_HEAD,
    PIXEL_OK,
    PIXEL_REFUSED,
    SPEND_REFUSED,
    Invalid,
    json_answer,
)
from tracker.call_routes import CallRoutes
from tracker.click_route import ClickRoute
from tracker.endpoints import PIXEL_IGNORED, parse_query
from tracker.event_routes import EventRoutes
from tracker.http import Request, Response
from tracker.numbers import NumberDesk
from tracker.publisher import EventPublisher
from tracker.settings import TrackerSettings
from tracker.spool import SpoolRecord

# Names the app had before its endpoints moved out, still imported from here.
__all__ = ["BOT_HEADER", "GIF", "PIXEL_IGNORED", "Invalid", "TrackerApp"]


class TrackerApp(ClickRoute, EventRoutes, CallRoutes):
    def __init__(
        self,
        settings: TrackerSettings,
        publisher: EventPublisher,
        numbers: NumberDesk | None = None,
    ) -> None:
        super().__init__(settings, publisher, numbers)
        self._routes = {
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
        # The pixels' received_at, and the publisher's turn it was read in (see `pixel`).
        self._received_at = datetime.now(UTC)
        self._received_turn = -1
        # The routes with their metrics bound: (method, path) -> (handler, metrics).
        self._dispatch = {
            key: (handler, self.metrics.route(name))
            for key, (name, handler) in self._routes.items()
        }
        self._unknown_route = self.metrics.route("unknown")
        # A path's methods, for the Allow header of a 405.
        self._allowed = {
            path: ", ".join(sorted(method for method, other in self._routes if other == path))
            for _, path in self._routes
        }

    # dispatch

    def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        route = self._dispatch.get((request.method, request.path))
        if route is None:
            measured = self._unknown_route
            allowed = self._allowed.get(request.path)
            if allowed is not None:
                response = json_answer(405, {"error": "method_not_allowed", "path": request.path})
                response.headers.append(("Allow", allowed))
            else:
                response = json_answer(404, {"error": "not_found", "path": request.path})
        else:
            handler, measured = route
            response = handler(request)
        measured.observe(response.status, time.perf_counter() - started)
        return response

    # event endpoints

    def pixel(self, request: Request) -> Response:
        event_type: str
        unlisted = None
        try:
            ip, bot = self._client(request)
            publisher = self.publisher
            if self._received_turn != publisher.turns:
                # The pixels of one turn of the event loop were read at one wake-up: they
                # share its time, which spares each the clock and the timestamp's text.
                self._received_at = datetime.now(UTC)
                self._received_turn = publisher.turns
                # Ends the turn with a commit even if nothing is submitted, moving `turns` on.
                publisher.schedule_commit()
            found = self._records.from_query(request.query, self._received_at, ip, bot)
            if found is not None:
                event_type, key, value = found
                # A plain tuple: the NamedTuple's constructor is a Python function, and
                # `tuple.__new__` of a subclass copies the tuple; nothing reads its fields by
                # name.
                record = cast(SpoolRecord, (self._events_topic, key, value))
            else:
                fields = parse_query(request.query)
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

    # operational endpoints

    def healthz(self, request: Request) -> Response:
        return json_answer(200, {"status": "ok"})

    def readyz(self, request: Request) -> Response:
        state = self.publisher.readiness()
        ready = state["accepting"] and not self.publisher.closing
        state["status"] = (
            "ready" if ready and state["broker"] == "up" else "degraded" if ready else "unavailable"
        )
        return json_answer(200 if ready else 503, state)

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
        self.metrics.route("protocol").statuses[status] += 1

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


_REFUSAL_ROUTES: Final = {
    id(PIXEL_REFUSED): "pixel",
    id(CLICK_REFUSED): "click",
    id(SPEND_REFUSED): "spend",
    id(CALLS_REFUSED): "calls",
}
