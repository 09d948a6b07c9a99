"""The click redirect, ``GET /c``: records the click with a click id the tracker issues (see
`tracker.click_ids`) and sends the visitor on to the checked target with that id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from adpulse.core.channels import UNLISTED
from adpulse.core.event import partition_key
from tracker.answers import BOT_HEADER, CLICK_REFUSED, JSON, NO_STORE, Invalid
from tracker.click_ids import issue_click_id
from tracker.endpoints import Endpoints, parse_query
from tracker.http import Request, Response
from tracker.redirect import RedirectRefused, with_click_id
from tracker.spool import SpoolRecord

UTM_FIELDS: Final = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"}
)


class ClickRoute(Endpoints):
    def click(self, request: Request) -> Response:
        try:
            fields = parse_query(request.query)
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


def _landing_utm(target: str) -> dict[str, str]:
    """The utm_* parameters of a redirect target's query, first of each, as strings."""
    found: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(target).query):
        if key in UTM_FIELDS and key not in found:
            found[key] = value
    return found
