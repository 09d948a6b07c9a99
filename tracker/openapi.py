"""The OpenAPI 3.1 description of the tracker's HTTP interface, served at /openapi.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adpulse.event import MAX_BATCH_EVENTS

if TYPE_CHECKING:
    from tracker.settings import TrackerSettings

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "field": {"type": "string", "description": "the field or part of the request at fault"},
        "reason": {"type": "string"},
        "index": {"type": "integer", "description": "position in a batch"},
    },
    "required": ["error"],
}
_ACCEPTED = {
    "type": "object",
    "properties": {
        "accepted": {"type": "integer"},
        "event_ids": {"type": "array", "items": {"type": "string"}},
    },
}
_EVENT = {
    "type": "object",
    "description": (
        "One tracking event. Money is a decimal string or number with at most 6 decimals; "
        "ts is ISO-8601 with an offset or epoch seconds, defaulting to the time received."
    ),
    "properties": {
        "event_id": {"type": "string", "maxLength": 128, "description": "idempotency key"},
        "type": {"enum": ["click", "redemption", "conversion", "spend"]},
        "ts": {"type": ["string", "number"]},
        "channel": {"type": "string", "maxLength": 64},
        "campaign": {"type": "string", "maxLength": 256},
        "click_id": {"type": "string", "maxLength": 128},
        "coupon": {"type": "string", "maxLength": 64},
        "order_id": {"type": "string", "maxLength": 128},
        "value": {"type": ["string", "number"], "description": "revenue"},
        "cost": {"type": ["string", "number"], "description": "spend"},
        "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "utm_source": {"type": "string"},
        "utm_medium": {"type": "string"},
        "utm_campaign": {"type": "string"},
        "utm_term": {"type": "string"},
        "utm_content": {"type": "string"},
    },
    "required": ["type"],
}

_EVENT_FIELDS = tuple(_EVENT["properties"])


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json(_ERROR)}


def openapi_document(settings: TrackerSettings) -> dict[str, Any]:
    gif: dict[str, Any] = {"content": {"image/gif": {}}}
    event_parameters = [
        {"name": name, "in": "query", "schema": {"type": "string"}} for name in _EVENT_FIELDS
    ]
    batch = {"oneOf": [_EVENT, {"type": "array", "items": _EVENT, "maxItems": MAX_BATCH_EVENTS}]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "adpulse tracker",
            "version": "1",
            "description": "Tracking edge: pixels, click redirects, event and spend posts.",
        },
        "paths": {
            "/p.gif": {
                "get": {
                    "summary": "Tracking pixel; query parameters are event fields",
                    "parameters": event_parameters,
                    "responses": {
                        "200": {"description": "1x1 GIF, no-store", **gif},
                        "400": {"description": "GIF; the reason in X-Adpulse-Error", **gif},
                        "503": {"description": "GIF; spool full, Retry-After", **gif},
                    },
                }
            },
            "/c": {
                "get": {
                    "summary": "Click redirect: records a click, 302 with adp_click_id appended",
                    "parameters": [
                        {
                            "name": "to",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {"name": "sig", "in": "query", "schema": {"type": "string"}},
                        *event_parameters,
                    ],
                    "responses": {
                        "302": {"description": "redirect to the target with the click id"},
                        "400": _error("target not allowed or a field invalid"),
                        "503": _error("spool full"),
                    },
                }
            },
            "/v1/events": {
                "post": {
                    "summary": "One event or a batch; application/json or text/plain (sendBeacon)",
                    # Anonymous, or with the API token to name channels not yet known.
                    "security": [{}, {"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": batch},
                            "text/plain": {"schema": batch},
                        },
                    },
                    "responses": {
                        "202": {"description": "accepted", **_json(_ACCEPTED)},
                        "400": _error("invalid event"),
                        "401": _error("wrong bearer token"),
                        "403": _error("Origin not in ADPULSE_CORS_ORIGINS"),
                        "413": _error("body over 1 MiB or batch too large"),
                        "415": _error("unsupported content type"),
                        "503": _error("spool full"),
                    },
                }
            },
            "/v1/spend": {
                "post": {
                    "summary": "Ad spend over [start, end); re-sending an event_id replaces it",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, **_json(batch)},
                    "responses": {
                        "202": {"description": "accepted", **_json(_ACCEPTED)},
                        "400": _error("invalid spend"),
                        "401": _error("missing or wrong bearer token"),
                        "503": _error("spool full"),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "Broker reachable and spool state",
                    "responses": {
                        "200": {"description": "accepting events (broker up, or spooling)"},
                        "503": {"description": "not accepting: spool full or shutting down"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text"}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "JSON"}}}
            },
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "servers": [{"url": f"http://{settings.host}:{settings.port}"}],
    }
