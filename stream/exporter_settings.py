"""The exporter's one settings object, built from flags and ADPULSE_* variables in one place."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field

from adpulse.core.currencies import is_currency_code
from adpulse.core.options import (
    parse_int,
    parse_log_level,
    parse_port,
    parse_positive_float,
    resolve,
)
from stream.days import zone_named

DEFAULT_PORT = 9108


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    redis_url: str = "redis://localhost:6379/0"
    max_channels: int = 50
    scrape_timeout: float = 5.0
    log_level: str = "INFO"
    # Read API (issue 13)
    timezone: str = "UTC"
    """IANA name of the reporting time zone: the days and months of the report."""
    currency: str = "USD"
    """The reporting currency: named in the report, and its minor unit rounds money."""
    read_token: str | None = field(default=None, repr=False)
    """Bearer token /v1/report requires, when set (from the environment only)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", help="address to listen on (ADPULSE_EXPORTER_HOST, default 127.0.0.1)")
    add("--port", help=f"port to listen on (ADPULSE_EXPORTER_PORT, default {DEFAULT_PORT})")
    add("--redis-url", help="the KPI store (ADPULSE_REDIS_URL, default redis://localhost:6379/0)")
    add(
        "--max-channels",
        help='channels with a series of their own; the rest are summed into channel="other" '
        "(ADPULSE_EXPORTER_MAX_CHANNELS, default 50)",
    )
    add(
        "--scrape-timeout",
        help="seconds a scrape may wait for Redis (ADPULSE_EXPORTER_SCRAPE_TIMEOUT, default 5)",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (ADPULSE_LOG_LEVEL, default INFO)")
    # Read API (issue 13)
    add(
        "--timezone",
        help="reporting time zone, an IANA name; must be the worker's "
        "(ADPULSE_TIMEZONE, default UTC)",
    )
    add("--currency", help="reporting currency, ISO 4217 (ADPULSE_CURRENCY, default USD)")
    parser.epilog = (
        "Secrets are read from the environment only: ADPULSE_READ_TOKEN (bearer token the read "
        "API /v1/report requires; unset: no token needed)."
    )


def parse_max_channels(text: str) -> int:
    value = parse_int(text)
    if not 1 <= value <= 10_000:
        raise ValueError("from 1 to 10000 channels")
    return value


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> ExporterSettings:

    defaults = ExporterSettings()
    return ExporterSettings(
        host=resolve(args, env, "host", "ADPULSE_EXPORTER_HOST", defaults.host, str),
        port=resolve(args, env, "port", "ADPULSE_EXPORTER_PORT", defaults.port, parse_port),
        redis_url=resolve(args, env, "redis_url", "ADPULSE_REDIS_URL", defaults.redis_url, str),
        max_channels=resolve(
            args,
            env,
            "max_channels",
            "ADPULSE_EXPORTER_MAX_CHANNELS",
            defaults.max_channels,
            parse_max_channels,
        ),
        scrape_timeout=resolve(
            args,
            env,
            "scrape_timeout",
            "ADPULSE_EXPORTER_SCRAPE_TIMEOUT",
            defaults.scrape_timeout,
            parse_positive_float,
        ),
        log_level=resolve(args, env, "log_level", "ADPULSE_LOG_LEVEL", "INFO", parse_log_level),
        # Read API (issue 13)
        timezone=resolve(
            args, env, "timezone", "ADPULSE_TIMEZONE", defaults.timezone, parse_timezone
        ),
        currency=resolve(
            args, env, "currency", "ADPULSE_CURRENCY", defaults.currency, parse_currency
        ),
        read_token=env.get("ADPULSE_READ_TOKEN") or None,
    )


def parse_timezone(text: str) -> str:
    return zone_named(text.strip()).key


def parse_currency(text: str) -> str:
    code = text.strip().upper()
    if not is_currency_code(code):
        raise ValueError("an ISO 4217 code such as USD or EUR")
    return code
