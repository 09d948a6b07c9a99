"""The exporter's HTTP app: /metrics for Prometheus, the read API (/v1/report, /v1/advice),
/openapi.json.

One aiohttp application on the exporter's port. /metrics is prometheus-client's exposition of
the exporter's registry (text or OpenMetrics as the Accept header asks, gzip when accepted),
rendered in a thread because the collector waits for Redis on this loop. /v1/report answers
with `stream.report`'s document (JSON, or CSV with ``format=csv``); when ``ADPULSE_READ_TOKEN``
is set it requires ``Authorization: Bearer <token>``, as /v1/advice does, which answers with
`adpulse advise --json`'s document (`advice_report`). A bad parameter is a 400 naming it;
Redis unreachable is a 503.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from stream.advice import advice_document
from stream.advice_settings import AdviceOptions
from stream.days import LocalDays
from stream.errors import StoreUnavailable
from stream.evidence import read_reading, recommend
from stream.report import (
    ACQUISITION_FIGURES,
    COMPARISONS,
    FIGURES,
    FORMATS,
    GROUPS,
    WINDOWS,
    ReportError,
    ReportRequest,
    build_acquisition_report,
    build_report,
    parse_request,
    report_csv,
)
from stream.store import KpiStore

log = logging.getLogger("adpulse.exporter")

STORE: Final = web.AppKey("store", KpiStore)
REGISTRY: Final = web.AppKey("registry", CollectorRegistry)
SETTINGS: Final = web.AppKey("settings", dict[str, Any])
ADVICE_NUMBERS: Final = ("budget", "next_budget", "share", "next_share")
"""The advice document's numbers every channel has (`stream.advice.advice_document`)."""
ADVICE_OPTIONAL: Final = (
    "cpa",
    "cpa_low",
    "cpa_high",
    "baseline_ratio",
    "target_cpa",
    "above_target",
)
"""Its numbers that are null where a channel has none (held, no baseline, no target)."""


async def report_document(
    store: KpiStore,
    params: dict[str, str],
    *,
    days: LocalDays,
    currency: str,
    now: datetime | None = None,
) -> tuple[ReportRequest, dict[str, Any]]:
    """Parse `params`, read the sums and build the report (the API's and the CLI's one path).

    ReportError for a bad parameter, StoreUnavailable when Redis does not answer.
    """
    now = now or datetime.now(UTC)
    request = parse_request(params, days.today(now), int(now.timestamp()) // 60)
    if request.group_by == "acquisition_channel":
        cohorts = await store.acquisition_sums(request)
        document = build_acquisition_report(
            request, cohorts, currency=currency, timezone=days.zone.key
        )
        return request, document
    sums = await store.report_sums(request)
    # Thousands of rows take a while to build: off the loop, as their sums are.
    document = await asyncio.to_thread(
        build_report, request, sums, currency=currency, timezone=days.zone.key
    )
    return request, document


def _error(status: int, message: str, **extra: str) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@web.middleware
async def _authorise(request: web.Request, handler: Any) -> web.StreamResponse:
    token = request.app[SETTINGS]["read_token"]
    if token and request.path.startswith("/v1/"):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            refused = _error(401, "a bearer token is required (ADPULSE_READ_TOKEN)")
            refused.headers["WWW-Authenticate"] = 'Bearer realm="adpulse"'
            return refused
    response: web.StreamResponse = await handler(request)
    return response


async def advice_report(
    store: KpiStore, options: AdviceOptions, *, currency: str, now_seconds: float | None = None
) -> dict[str, Any]:
    """The budget advice now (the API's and `adpulse advise`'s one path); StoreUnavailable when
    Redis does not answer."""
    reading = await read_reading(store, now_seconds or time.time(), options.lookback_hours)
    # Hundreds of hours per channel: computed off the loop, which serves scrapes meanwhile.
    recommendations = await asyncio.to_thread(recommend, reading, options)
    return advice_document(recommendations, currency)


async def _advice(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if request.query:
        return _error(400, "/v1/advice takes no parameters", parameter=next(iter(request.query)))
    try:
        document = await advice_report(
            request.app[STORE], settings["advice"], currency=settings["currency"]
        )
    except StoreUnavailable as error:
        log.warning("advice: Redis does not answer: %s", error)
        return _error(503, "the KPI store (Redis) does not answer; try again")
    return web.json_response(document, dumps=_dumps)


async def _report(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    params = dict(request.query)
    if len(params) != len(request.query):
        return _error(400, "each parameter at most once", parameter="query")
    try:
        parsed, document = await report_document(
            request.app[STORE], params, days=settings["days"], currency=settings["currency"]
        )
    except ReportError as error:
        return _error(400, error.reason, parameter=error.parameter)
    except StoreUnavailable as error:
        log.warning("report: Redis does not answer: %s", error)
        return _error(503, "the KPI store (Redis) does not answer; try again")
    if parsed.format == "csv":
        return web.Response(text=report_csv(document), content_type="text/csv")
    # orjson's bytes as the body: a year by campaign is megabytes, not decoded to be re-encoded.
    return web.Response(body=orjson.dumps(document), content_type="application/json")


async def _metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    registry = request.app[REGISTRY]
    # The collector blocks until Redis answers on this loop: render in a thread.
    body: bytes = await asyncio.to_thread(encoder, registry)
    headers = {"Content-Type": content_type}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi(), dumps=_dumps)


def build_app(
    store: KpiStore,
    registry: CollectorRegistry,
    *,
    days: LocalDays,
    currency: str,
    read_token: str | None,
    advice: AdviceOptions | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_authorise])
    app[STORE] = store
    app[REGISTRY] = registry
    app[SETTINGS] = {
        "days": days,
        "currency": currency,
        "read_token": read_token,
        "advice": advice or AdviceOptions(),
    }
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/report", _report)
    app.router.add_get("/v1/advice", _advice)
    app.router.add_get("/openapi.json", _openapi)
    return app


def _enum_parameter(name: str, values: tuple[str, ...], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "enum": list(values)},
    }


def openapi() -> dict[str, Any]:
    """The read API's OpenAPI 3.1 document, from the same tuples the parser checks."""
    number = {"type": ["number", "null"]}
    figure = {
        "type": "object",
        "properties": {
            "value": number,
            **{name: number for name in COMPARISONS},
            **{f"{name}_change": number for name in COMPARISONS},
        },
        "required": ["value"],
    }
    row = {
        "type": "object",
        "properties": {
            "channel": {"type": "string"},
            "campaign": {"type": ["string", "null"]},
            **{name: {"$ref": "#/components/schemas/Figure"} for name in FIGURES},
        },
        "required": ["channel", *FIGURES],
    }
    acquisition_row = {
        "type": "object",
        "description": "a row of group_by=acquisition_channel: `channel` is the acquisition "
        "channel; figures of the whole cohort months the period touches (see `cohorts`)",
        "properties": {
            "channel": {"type": "string"},
            **{name: {"$ref": "#/components/schemas/Figure"} for name in ACQUISITION_FIGURES},
        },
        "required": ["channel", *ACQUISITION_FIGURES],
    }
    advice = {
        "type": "object",
        "properties": {
            "channel": {"type": "string"},
            "action": {"type": "string", "enum": ["decrease", "increase", "keep", "hold"]},
            "reason": {"type": "string"},
            **{name: {"type": "number"} for name in ADVICE_NUMBERS},
            **{name: number for name in ADVICE_OPTIONAL},
        },
        "required": ["channel", "action", "reason", *ADVICE_NUMBERS, *ADVICE_OPTIONAL],
    }
    dates = {
        "type": "object",
        "properties": {"from": {"type": "string", "format": "date"}, "to": {"type": "string"}},
    }
    dates_of_months = {
        "type": "object",
        "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "adpulse read API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Figure": figure,
                "Row": row,
                "AcquisitionRow": acquisition_row,
                "Advice": advice,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/report": {
                "get": {
                    "summary": "Figures per channel or campaign for a period, with comparisons",
                    "parameters": [
                        {
                            "name": name,
                            "in": "query",
                            "required": False,
                            "description": f"{name} date (reporting time zone), inclusive; "
                            "from and to go together, instead of window",
                            "schema": {"type": "string", "format": "date"},
                        }
                        for name in ("from", "to")
                    ]
                    + [
                        _enum_parameter("window", WINDOWS, "a named period ending now"),
                        _enum_parameter(
                            "group_by",
                            GROUPS,
                            "rows per channel, campaign, or acquisition channel (customers "
                            "acquired, CAC, LTV at 30/90/365 days and LTV/CAC of the monthly "
                            "cohorts the period touches)",
                        ),
                        {
                            "name": "compare",
                            "in": "query",
                            "required": False,
                            "description": "comma-separated: " + ", ".join(COMPARISONS),
                            "schema": {"type": "string"},
                        },
                        _enum_parameter("format", FORMATS, "json (default) or csv"),
                    ],
                    "responses": {
                        "200": {
                            "description": "the report",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "currency": {"type": "string"},
                                            "timezone": {"type": "string"},
                                            "group_by": {"type": "string"},
                                            "window": {"type": ["string", "null"]},
                                            "period": dates,
                                            "compare": {
                                                "type": "object",
                                                "additionalProperties": dates,
                                            },
                                            "figures": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            },
                                            "cohorts": {
                                                "description": "group_by=acquisition_channel "
                                                "only: the cohort months (YYYY-MM) read for "
                                                "`current` and each comparison",
                                                "type": "object",
                                                "additionalProperties": dates_of_months,
                                            },
                                            "rows": {
                                                "type": "array",
                                                "items": {
                                                    "oneOf": [
                                                        {"$ref": "#/components/schemas/Row"},
                                                        {
                                                            "$ref": "#/components/schemas/"
                                                            "AcquisitionRow"
                                                        },
                                                    ]
                                                },
                                            },
                                            "totals": {"type": "object"},
                                        },
                                    }
                                },
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        "400": {"description": "a bad parameter, named in `parameter`"},
                        "401": {"description": "missing or wrong bearer token"},
                        "503": {"description": "Redis does not answer"},
                    },
                }
            },
            "/v1/advice": {
                "get": {
                    "summary": "Each channel's recommended share of the next day's budget, and why "
                    "(the document of `adpulse advise --json`)",
                    "responses": {
                        "200": {
                            "description": "the advice, cheapest expected CPA first",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "currency": {"type": "string"},
                                            "channels": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Advice"},
                                            },
                                        },
                                        "required": ["currency", "channels"],
                                    }
                                }
                            },
                        },
                        "400": {"description": "a parameter was given; there are none"},
                        "401": {"description": "missing or wrong bearer token"},
                        "503": {"description": "Redis does not answer"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "exposition format"}},
                }
            },
        },
    }
