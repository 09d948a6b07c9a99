"""Tracked phone numbers and calls (issue 14): a visitor's number lease, ``GET /v1/number``,
and the telephony webhook, ``POST /v1/calls``, whose calls are attributed by the number's
lease."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from adpulse.core.channels import UNATTRIBUTED
from adpulse.core.event import Event, EventError, parse_event
from adpulse.core.fields import parse_channel, parse_text, parse_token
from adpulse.core.phone import display_number
from tracker.answers import CALLS_REFUSED, JSON, NO_STORE, RETRY_AFTER_SECONDS, Invalid
from tracker.calls import CallError, CallReport, read_call, redacted
from tracker.endpoints import Endpoints, checked, parse_query
from tracker.http import Request, Response
from tracker.numbers import UNKNOWN, CallSource, NumberDesk, NumbersUnavailable

# The app's logger, as before the endpoints left tracker/app.py: what operators grep for.
log = logging.getLogger("tracker.app")


class CallRoutes(Endpoints):
    def number(self, request: Request) -> Response:
        """The visitor's tracked number: 200 ``{"number", "display"}``, or 204 when there is
        none (no pool and no static number, no Redis, or Redis failing): never an error page
        for a visitor, whose page keeps the number it printed."""
        cors = self._cors(request)
        try:
            fields = parse_query(request.query)
            rules = self.settings.event_rules
            channel = checked("channel", parse_channel, fields.get("channel"))
            if channel is None:
                channel = self._enrichment(fields, request)[0]
            campaign = checked(
                "campaign",
                lambda value: parse_text(value, rules.max_campaign_length),
                fields.get("campaign") or fields.get("utm_campaign"),
            )
            click_id = checked(
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
            self.metrics.calls_unavailable += 1
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
