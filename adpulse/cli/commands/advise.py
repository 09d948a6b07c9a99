"""`adpulse advise`: next period's budget share per channel, with the reason, from Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adpulse.core.options import (
    CURRENCY,
    REDIS_URL,
    Setting,
    add_arguments,
    declarations,
    declare,
    option,
    parse_positive_float,
    resolve_all,
    switch,
)
from stream.advice_settings import (
    ADVICE_MAX_SHIFT,
    ADVICE_MIN_CONVERSIONS,
    ADVICE_MIN_SHARE,
    LAG_LOOKBACK,
    TARGET_CPA,
    TARGET_ROAS,
    Targets,
)

PIPE_WIDTH = 132


@dataclass(frozen=True, slots=True)
class AdviseSettings:
    redis_url: str = declare(REDIS_URL)
    json: bool = switch("--json", "print the recommendations as JSON")
    currency: str = declare(CURRENCY)
    timeout: float = option(
        "--timeout",
        "ADPULSE_ADVISE_TIMEOUT",
        5.0,
        parse_positive_float,
        "seconds to wait for Redis",
    )
    # Declared once in `stream.advice_settings`; the exporter declares the same.
    lag_lookback: int = declare(LAG_LOOKBACK)
    target_cpa: Targets = declare(TARGET_CPA)
    target_roas: Targets = declare(TARGET_ROAS)
    advice_max_shift: float = declare(ADVICE_MAX_SHIFT)
    advice_min_share: float = declare(ADVICE_MIN_SHARE)
    advice_min_conversions: float = declare(ADVICE_MIN_CONVERSIONS)


SETTINGS: tuple[Setting[Any], ...] = declarations(AdviseSettings)
"""Every setting of `adpulse advise`, in the order of --help and the README."""


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "advise",
        help="recommend each channel's share of the next day's budget, and say why",
        description=(
            "For every channel with spend in the last 24 hours: its share of the budget now and "
            "the recommended share, the expected CPA at that budget with a 90 % range, and one "
            "sentence saying why. Budget moves only from a channel surely dearer than the "
            "cheapest, at most ADPULSE_ADVICE_MAX_SHIFT (20 %) of its budget a step (README, "
            "'Budget advice'). Exit code "
            "1 when Redis cannot be read."
        ),
    )
    add_arguments(parser, SETTINGS)
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> AdviseSettings:
    """The advice's settings: each flag, else its ADPULSE_* variable, else the default."""
    return AdviseSettings(**resolve_all(args, env, SETTINGS))


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return asyncio.run(advise_now(settings_from(args, env)))


async def advise_now(settings: AdviseSettings) -> int:
    from redis.exceptions import RedisError

    from stream.advice import advice_document
    from stream.advice_settings import advice_options
    from stream.errors import StoreUnavailable
    from stream.evidence import read_reading, recommend
    from stream.store import KpiStore

    try:
        store = KpiStore.from_url(settings.redis_url, timeout=settings.timeout)
    except ValueError as error:
        print(f"adpulse advise: --redis-url {settings.redis_url!r}: {error}", file=sys.stderr)
        return 2
    try:
        await store.follow_active_prefix()
        options = advice_options(settings)
        reading = await read_reading(store, time.time(), options.lookback_hours)
    except (StoreUnavailable, RedisError) as error:
        print(
            f"adpulse advise: cannot read Redis at {settings.redis_url}: {error}", file=sys.stderr
        )
        return 1
    finally:
        await store.close()
    # `GET /v1/advice` answers the same document (`stream.read_api.advice_report`).
    recommendations = recommend(reading, options)
    if settings.json:
        print(json.dumps(advice_document(recommendations, settings.currency), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Budget advice for the next 24 hours ({settings.currency})")
    for column in ("channel", "share now", "advised", "CPA then", "90 % range", "why"):
        table.add_column(column, justify="left" if column in ("channel", "why") else "right")
    for rec in recommendations:
        span = (
            f"{rec.cpa_low:,.2f}-{rec.cpa_high:,.2f}"
            if rec.cpa_low is not None and rec.cpa_high is not None
            else "—"
        )
        table.add_row(
            rec.channel,
            f"{rec.share:.0%}",
            f"{rec.next_share:.0%}",
            "—" if rec.cpa is None else f"{rec.cpa:,.2f}",
            span,
            rec.reason.partition(": ")[2],
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    if not recommendations:
        console.print("No channel has spend in the last 24 hours: nothing to advise.")
    else:
        console.print(table)
    return 0
