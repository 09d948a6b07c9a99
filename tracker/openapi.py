"""The OpenAPI 3.1 description of the tracker's HTTP interface, served at /openapi.json."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from adpulse.core.contract import (
    AD_CLICK_IDS,
    ANY_TYPE,
    CLIENT,
    EVENT_TYPES,
    FORWARDED,
    WEBHOOK_TYPES,
    Field,
    Kind,
)
from adpulse.core.event import MAX_BATCH_EVENTS, MAX_BODY_BYTES, EventRules
from adpulse.core.fields import COUPON_PATTERN, EVENT_ID_PATTERN
from adpulse.core.orders import ORDER_STATUSES
from adpulse.core.phone import MAX_NUMBER_LENGTH
from tracker.calls import MAX_CALL_ID_LENGTH, MAX_CALL_SECONDS
from tracker.http import Limits
from tracker.redirect import MAX_TARGET_LENGTH, RedirectPolicy

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
        "click_ids": {
            "type": "array",
            "items": {"type": ["string", "null"]},
            "description": "present when a click came without a click_id: the id the tracker "
            "issued it (signed with ADPULSE_CLICK_KEY, carrying its attribution), per event in "
            "order, null for the other events",
        },
    },
}


# What the snippet sends GET /v1/number besides channel, campaign and click_id: the landing's
# UTM values and ad click ids, from which the tracker groups the channel as for an event.
UTM_QUERY: Final = ("utm_source", "utm_medium", "utm_campaign", *AD_CLICK_IDS)
_NUMBER: Final = {
    "type": "object",
    "properties": {
        "number": {"type": "string", "description": "E.164"},
        "display": {"type": "string", "description": "international format, for the page"},
    },
}


def event_schema(rules: EventRules) -> dict[str, Any]:
    """One client event as JSON Schema: the contract's client fields (`contract.CLIENT`), their
    limits read from `rules` and the field declarations.

    Only what a schema can say exactly: rules between fields (no `value` on a click) and rules
    that depend on the clock or the configuration (the `ts` window, exchange rates) are the
    tracker's, answered 400 with the field and the reason.
    """
    properties = {field.name: field_schema(field, rules) for field in CLIENT}
    return {
        "type": "object",
        "description": (
            "One tracking event. Money is a decimal string or number with at most 6 decimals; "
            "ts, start and end are ISO-8601 with an offset or epoch seconds; ts defaults to "
            "the time received. null or an empty string means absent."
        ),
        "properties": properties,
        "required": [field.name for field in CLIENT if field.required == ANY_TYPE],
        "additionalProperties": False,
    }


def field_schema(field: Field, rules: EventRules) -> dict[str, Any]:
    """One client field as JSON Schema, by its kind; its length limit in the pattern."""
    kind = field.kind
    limit = field.max_length(rules)
    schema: dict[str, Any]
    if kind is Kind.TYPE:
        # A call is the tracker's own webhook's (POST /v1/calls), never a client's event.
        schema = _event_type(name for name in EVENT_TYPES if name not in WEBHOOK_TYPES)
    elif kind is Kind.CURRENCY:
        schema = {"type": ["string", "null"], "pattern": _stripped("[A-Za-z]", 3, 3)}
    elif kind in (Kind.MONEY, Kind.TIME):
        schema = {"type": ["string", "number", "null"]}
    elif kind is Kind.STATUS:
        choices = "|".join(_any_case(name) for name in ORDER_STATUSES)
        codes = "|".join(re.escape(code) for code in rules.status_codes)
        pattern = rf"^\s*({choices}{'|' + codes if codes else ''})?\s*$"
        schema = {"type": ["string", "integer", "null"], "pattern": pattern}
    elif limit is None:
        raise ValueError(f"field {field.name!r} of kind {kind} needs a length limit")
    else:
        characters = _CHARACTERS.get(kind, r"[\s\S]")
        schema = {"type": ["string", "null"], "pattern": _stripped(characters, limit)}
    if field.description:
        schema["description"] = field.description
    return schema


def _http_errors() -> dict[str, Any]:
    """What `tracker.http` answers any route before it runs (JSON, like the routes' errors)."""
    limits = Limits()
    return {
        "400": _error("malformed HTTP request"),
        "408": _error("the request did not arrive in time"),
        "413": _error(f"body over {limits.max_body_bytes} bytes"),
        "414": _error(f"URL over {limits.max_url_bytes} bytes"),
        "431": _error(f"headers over {limits.max_header_bytes} bytes or {limits.max_headers}"),
        "503": _error("too many connections, or the spool is full"),
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json(_ERROR)}


_HTTP_ERRORS: dict[str, Any] = _http_errors()


def _event_type(names: Iterable[str]) -> dict[str, Any]:
    """One of `names` in any case, as the tracker reads `type`."""
    choices = "|".join(_any_case(name) for name in names)
    return {"type": "string", "pattern": rf"^\s*({choices})\s*$", "examples": list(names)}


def _stripped(characters: str, max_length: int, min_length: int = 1) -> str:
    """A pattern for a field the tracker strips: blank is absent, limits apply to the rest."""
    return rf"^\s*({characters}{{{min_length},{max_length}}})?\s*$"


def _characters(pattern: re.Pattern[str]) -> str:
    """`[...]+` -> `[...]`: the character class of a whole-value pattern of `fields`."""
    if not (pattern.pattern.startswith("[") and pattern.pattern.endswith("]+")):
        raise ValueError(f"expected a pattern like [...]+, got {pattern.pattern!r}")
    return pattern.pattern[:-1]


# The characters of the kinds whose parser checks them with a pattern; any for the others.
_CHARACTERS: dict[Kind, str] = {
    Kind.ID: _characters(EVENT_ID_PATTERN),
    Kind.COUPON: _characters(COUPON_PATTERN),
}

_CALL: Final = {
    "type": "object",
    "properties": {
        "call_id": {
            "type": "string",
            "pattern": rf"^\s*{_CHARACTERS[Kind.ID]}{{1,{MAX_CALL_ID_LENGTH}}}\s*$",
        },
        "tracked_number": {"type": "string", "maxLength": MAX_NUMBER_LENGTH},
        "caller": {"type": ["string", "null"], "maxLength": MAX_NUMBER_LENGTH},
        "started_at": {"type": ["string", "number"]},
        "duration_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_CALL_SECONDS},
        "answered": {"type": "boolean"},
    },
    "required": ["call_id", "tracked_number", "started_at", "answered"],
    "additionalProperties": False,
}


def redirect_target_schema(policy: RedirectPolicy) -> dict[str, Any]:
    """`/c`'s `to`: an http(s) URL on the allow-list; any http(s) URL when links may be signed."""
    schema: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TARGET_LENGTH,
        "description": "an http(s) URL on ADPULSE_REDIRECT_HOSTS, or any with a valid `sig`",
    }
    # An allowed target for the examples a client (or a fuzzer) starts from.
    example_hosts = sorted(host.removeprefix("*.") for host in policy.hosts)
    if example_hosts:
        schema["examples"] = [f"https://{example_hosts[0]}/landing?utm_source=newsletter"]
    if policy.secret is None and policy.hosts:
        # Host names match in any case, a wildcard any run of labels; the rest of the URL has no
        # spaces, control characters or backslashes (`RedirectPolicy.check`).
        hosts = "|".join(
            rf"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*{_any_case(host[1:])}"
            if host.startswith("*.")
            else _any_case(host)
            for host in sorted(policy.hosts)
        )
        # Non-ASCII is allowed: the Location header carries it percent-encoded.
        rest = r"[^\x00-\x20\\]*"
        schema["pattern"] = rf"^{_any_case('http')}[sS]?://({hosts})\.?(:[0-9]*)?([/?#]{rest})?$"
    return schema


def signature_schema(policy: RedirectPolicy) -> dict[str, Any]:
    """`/c`'s `sig`: what `tracker.redirect.sign` writes; ignored without a secret."""
    if policy.secret is None:
        return {"type": "string"}
    return {"type": "string", "pattern": f"^[0-9a-f]{{{2 * hashlib.sha256().digest_size}}}$"}


def _any_case(text: str) -> str:
    return "".join(
        f"[{char.lower()}{char.upper()}]" if char.isalpha() else re.escape(char) for char in text
    )


def _query_parameters(event: dict[str, Any], *, leave_out: tuple[str, ...] = ()) -> list[Any]:
    """The event's fields as query parameters: strings, with the same limits."""
    parameters = []
    for name, field in event["properties"].items():
        if name in leave_out:
            continue
        schema = {**field, "type": "string"}
        parameters.append({"name": name, "in": "query", "schema": schema})
    return parameters


def openapi_document(settings: TrackerSettings) -> dict[str, Any]:
    gif: dict[str, Any] = {"content": {"image/gif": {}}}
    event = event_schema(settings.event_rules)
    spend = {
        **event,
        "properties": {**event["properties"], "type": _event_type(["spend"])},
        "required": [],
    }
    pixel_parameters = [
        {**parameter, "required": True} if parameter["name"] == "type" else parameter
        for parameter in _query_parameters(event)
    ]
    click_parameters = [
        {"name": "type", "in": "query", "schema": _event_type(["click"])},
        *_query_parameters(event, leave_out=("type", "click_id")),
    ]

    def batch(item: dict[str, Any]) -> dict[str, Any]:
        many = {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_BATCH_EVENTS}
        return {"oneOf": [item, many]}

    document: dict[str, Any] = {
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
                    "parameters": pixel_parameters,
                    "responses": {
                        "200": {
                            "description": "1x1 GIF, no-store; X-Adpulse-Bot: 1 when the click "
                            "was taken as a bot's (counted apart from clicks)",
                            **gif,
                        },
                        "400": {
                            "description": "GIF, the reason in X-Adpulse-Error; JSON when the "
                            "HTTP request itself is malformed",
                            "content": {**gif["content"], **_json(_ERROR)["content"]},
                        },
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
                            "schema": redirect_target_schema(settings.redirect_policy),
                        },
                        {
                            "name": "sig",
                            "in": "query",
                            "schema": signature_schema(settings.redirect_policy),
                            "description": "hex HMAC-SHA256 of `to` with ADPULSE_REDIRECT_SECRET",
                        },
                        *click_parameters,
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
                    "description": "With the API token, a server posting for a visitor may add "
                    + "; ".join(f"`{item.name}`: {item.description}" for item in FORWARDED)
                    + ". A click taken as a bot's is counted apart; the answer's X-Adpulse-Bot "
                    "says how many of the events were.",
                    # Anonymous, or with the API token to name channels not yet known.
                    "security": [{}, {"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": batch(event)},
                            "text/plain": {"schema": batch(event)},
                        },
                    },
                    "responses": {
                        "202": {"description": "accepted", **_json(_ACCEPTED)},
                        "400": _error("invalid event"),
                        "401": _error("wrong bearer token"),
                        "403": _error(
                            "Origin not in ADPULSE_CORS_ORIGINS, or user_agent or ip without "
                            "the API token"
                        ),
                        "413": _error(
                            f"body over {MAX_BODY_BYTES} bytes or over {MAX_BATCH_EVENTS} events"
                        ),
                        "415": _error("unsupported content type"),
                        "503": _error("spool full"),
                    },
                }
            },
            "/v1/spend": {
                "post": {
                    "summary": "Ad spend over [start, end); re-sending an event_id replaces it",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, **_json(batch(spend))},
                    "responses": {
                        "202": {"description": "accepted", **_json(_ACCEPTED)},
                        "400": _error("invalid spend"),
                        "401": _error("missing or wrong bearer token"),
                        "413": _error(
                            f"body over {MAX_BODY_BYTES} bytes or over {MAX_BATCH_EVENTS} events"
                        ),
                        "415": _error("not application/json"),
                        "503": _error("spool full"),
                    },
                }
            },
            "/v1/number": {
                "get": {
                    "summary": "The visitor's tracked phone number (dynamic number insertion): "
                    "one of the channel's pool leased to the visitor for ADPULSE_NUMBER_LEASE, "
                    "else the channel's static number",
                    "parameters": [
                        {"name": name, "in": "query", "schema": {"type": "string"}}
                        for name in ("channel", "campaign", "click_id", *UTM_QUERY)
                    ],
                    "responses": {
                        "200": {"description": "the number", **_json(_NUMBER)},
                        "204": {"description": "no number: no pool, no static number or no Redis"},
                        "400": _error("a parameter invalid"),
                    },
                }
            },
            "/v1/calls": {
                "post": {
                    "summary": "Telephony webhook: one call or a batch, idempotent by call_id; "
                    "the caller's number is hashed (ADPULSE_HASH_KEY) before it is kept",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, **_json(batch(_CALL))},
                    "responses": {
                        "202": {"description": "accepted", **_json(_ACCEPTED)},
                        "400": _error("a field invalid, or a caller without ADPULSE_HASH_KEY"),
                        "401": _error("missing or wrong bearer token"),
                        "413": _error(
                            f"body over {MAX_BODY_BYTES} bytes or over {MAX_BATCH_EVENTS} calls"
                        ),
                        "415": _error("not application/json"),
                        "503": _error("spool full, or the number registry's Redis down"),
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
            "/s.js": {
                "get": {
                    "summary": "The site snippet; cached a year when v is its version (the ETag)",
                    "parameters": [{"name": "v", "in": "query", "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "JavaScript", "content": {"text/javascript": {}}},
                        "304": {"description": "unchanged (If-None-Match)"},
                    },
                }
            },
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "servers": [{"url": f"http://{settings.host}:{settings.port}"}],
    }
    for item in document["paths"].values():
        for operation in item.values():
            for status, response in _HTTP_ERRORS.items():
                operation["responses"].setdefault(status, response)
    return document
