"""The exporter's one settings object, each setting declared once in its fields."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adpulse.core.options import (
    CURRENCY,
    LOG_LEVEL,
    REDIS_URL,
    TIMEZONE,
    Secret,
    Setting,
    declarations,
    declare,
    option,
    parse_bool,
    parse_int,
    parse_port,
    parse_positive_float,
    resolve_all,
)
from adpulse.core.options import add_arguments as add_setting_arguments
from stream.advice_settings import (
    ADVICE_MAX_SHIFT,
    ADVICE_MIN_CONVERSIONS,
    ADVICE_MIN_SHARE,
    LAG_LOOKBACK,
    SPIKE_BASELINE,
    SPIKE_WINDOW,
    TARGET_CPA,
    TARGET_ROAS,
    Targets,
)
from stream.campaign_series import DEFAULT_MAX_CAMPAIGN_SERIES


def parse_max_channels(text: str) -> int:
    value = parse_int(text)
    if not 1 <= value <= 10_000:
        raise ValueError("from 1 to 10000 channels")
    return value


def parse_max_campaign_series(text: str) -> int:
    value = parse_int(text)
    if not 1 <= value <= 100_000:
        raise ValueError("from 1 to 100000 campaigns")
    return value


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    host: str = option(
        "--host", "ADPULSE_EXPORTER_HOST", "127.0.0.1", str, "address `/metrics` is served on"
    )
    port: int = option(
        "--port", "ADPULSE_EXPORTER_PORT", 9108, parse_port, "port `/metrics` is served on"
    )
    redis_url: str = declare(REDIS_URL)
    max_channels: int = option(
        "--max-channels",
        "ADPULSE_EXPORTER_MAX_CHANNELS",
        50,
        parse_max_channels,
        'channels with series of their own; the rest are summed into `channel="other"`',
    )
    scrape_timeout: float = option(
        "--scrape-timeout",
        "ADPULSE_EXPORTER_SCRAPE_TIMEOUT",
        5.0,
        parse_positive_float,
        "seconds a scrape may wait for Redis",
    )
    campaign_series: bool = option(
        "--campaign-series",
        "ADPULSE_EXPORTER_CAMPAIGN_SERIES",
        False,
        parse_bool,
        "also export this month's counters per channel and campaign "
        "(`adpulse_campaign_events_total` etc.): on/off; campaign names come from the events",
        shown_default="off",
    )
    max_campaign_series: int = option(
        "--max-campaign-series",
        "ADPULSE_EXPORTER_MAX_CAMPAIGN_SERIES",
        DEFAULT_MAX_CAMPAIGN_SERIES,
        parse_max_campaign_series,
        'campaigns with series of their own; the rest are summed into `campaign="other"` '
        "of their channel",
    )
    log_level: str = declare(LOG_LEVEL)
    # The read API's: the days and months of the report, and the currency it names and rounds to.
    timezone: str = declare(TIMEZONE)
    currency: str = declare(CURRENCY)
    read_token: Secret | None = declare(
        Setting(
            None,
            "ADPULSE_READ_TOKEN",
            None,
            Secret,
            "bearer token `GET /v1/report` and `GET /v1/advice` require; unset: no token needed",
            secret=True,
            name="read_token",
        )
    )
    # The advice's (`adpulse_advice_budget_share`, `GET /v1/advice`), as `adpulse advise` has them.
    lag_lookback: int = declare(LAG_LOOKBACK)
    target_cpa: Targets = declare(TARGET_CPA)
    target_roas: Targets = declare(TARGET_ROAS)
    advice_max_shift: float = declare(ADVICE_MAX_SHIFT)
    advice_min_share: float = declare(ADVICE_MIN_SHARE)
    advice_min_conversions: float = declare(ADVICE_MIN_CONVERSIONS)
    spike_window: int = declare(SPIKE_WINDOW)
    spike_baseline: int = declare(SPIKE_BASELINE)


SETTINGS: tuple[Setting[Any], ...] = declarations(ExporterSettings)
"""Every setting of `adpulse exporter`, in the order of --help and the README."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_arguments(parser, SETTINGS)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> ExporterSettings:
    """The exporter's settings: each flag, else its ADPULSE_* variable, else the default."""
    return ExporterSettings(**resolve_all(args, env, SETTINGS))
