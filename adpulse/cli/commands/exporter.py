"""`adpulse exporter`: the KPI snapshot from Redis as Prometheus metrics, read on every scrape."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any


def register(subcommands: Any) -> None:
    from stream.exporter_settings import add_arguments

    parser: argparse.ArgumentParser = subcommands.add_parser(
        "exporter",
        help="serve the per-channel KPIs as Prometheus metrics, and the read API /v1/report",
        description=(
            "Serve /metrics: adpulse_events_total, adpulse_spend_total, adpulse_revenue_total "
            "(counters per channel) and adpulse_cpa, adpulse_cpc, adpulse_conversion_rate, "
            "adpulse_roas, adpulse_romi, adpulse_aov (gauges per channel and window 5m/1h/24h), "
            "read from Redis on every scrape. When Redis does not answer, a scrape still "
            "answers, with adpulse_exporter_redis_up 0. With --campaign-series on, also "
            "adpulse_campaign_events_total, adpulse_campaign_spend_total and "
            "adpulse_campaign_revenue_total per channel and campaign (this month, capped by "
            "--max-campaign-series). On the same port: GET /v1/report, a "
            "period's figures per channel or campaign with comparisons (JSON or CSV; bearer "
            "ADPULSE_READ_TOKEN when set), and its spec at /openapi.json."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import uvloop

    from adpulse.core import logs
    from stream.exporter_server import serve
    from stream.exporter_settings import settings_from

    settings = settings_from(args, env)
    logs.configure(settings.log_level, "exporter")
    return uvloop.run(serve(settings))
