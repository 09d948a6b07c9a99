"""`adpulse report`: a period's figures per channel or campaign from Redis, as a live terminal
table, or as the read API's JSON or CSV."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adpulse.core.options import (
    CURRENCY,
    REDIS_URL,
    TIMEZONE,
    Setting,
    add_arguments,
    declarations,
    declare,
    option,
    parse_int,
    parse_positive_float,
    repeated,
    resolve_all,
    switch,
)
from stream.report import COMPARISONS, GROUPS, WINDOWS

if TYPE_CHECKING:
    from stream.store import KpiStore

PIPE_WIDTH = 132


def parse_period(text: str) -> str:
    period = text.strip().lower()
    if period not in WINDOWS:
        raise ValueError(f"one of {', '.join(WINDOWS)}")
    return period


def parse_comparison(text: str) -> str:
    comparison = text.strip().lower()
    if comparison not in COMPARISONS:
        raise ValueError(f"one of {', '.join(COMPARISONS)}")
    return comparison


def parse_group(text: str) -> str:
    group = text.strip().lower()
    if group not in GROUPS:
        raise ValueError(f"one of {', '.join(GROUPS)}")
    return group


def parse_width(text: str) -> int:
    width = parse_int(text)
    if not 40 <= width <= 1000:
        raise ValueError("from 40 to 1000 columns")
    return width


@dataclass(frozen=True, slots=True)
class ReportSettings:
    redis_url: str = declare(REDIS_URL)
    period: str | None = option(
        "--period",
        "ADPULSE_REPORT_PERIOD",
        None,
        parse_period,
        f"the period of the table: {', '.join(WINDOWS)}; unless --from and --to are given",
        shown_default="today",
    )
    first: str | None = option(
        "--from", None, None, str, "first date YYYY-MM-DD (reporting time zone), with --to"
    )
    last: str | None = option("--to", None, None, str, "last date YYYY-MM-DD, inclusive")
    compare: tuple[str, ...] = repeated(
        "--compare",
        parse_comparison,
        "compare with the previous period and/or the same period a year earlier (repeatable)",
        "PERIOD",
    )
    by: str = option(
        "--by",
        None,
        "channel",
        parse_group,
        "rows per channel, per campaign, or per acquisition channel (acquisition_channel: new "
        "customers, CAC, LTV at 30/90/365 days, LTV/CAC of the monthly cohorts the period "
        "touches)",
    )
    interval: float = option(
        "--interval",
        "ADPULSE_REPORT_INTERVAL",
        2.0,
        parse_positive_float,
        "seconds between refreshes",
    )
    once: bool = switch("--once", "print one table and exit")
    json: bool = switch("--json", "print the read API's JSON document and exit")
    csv: bool = switch("--csv", "print the report as CSV and exit")
    currency: str = declare(CURRENCY)
    timezone: str = declare(TIMEZONE)
    timeout: float = option(
        "--timeout",
        "ADPULSE_REPORT_TIMEOUT",
        5.0,
        parse_positive_float,
        "seconds to wait for Redis",
    )
    width: int | None = option(
        "--width",
        "COLUMNS",
        None,
        parse_width,
        f"table width in columns; unset: the terminal's, {PIPE_WIDTH} into a file or a pipe",
        shown_default="the terminal's",
    )

    def params(self) -> dict[str, str]:
        """The read API's query parameters for these settings."""
        params = {"group_by": self.by}
        if self.first is not None or self.last is not None:
            params.update({"from": self.first or "", "to": self.last or ""})
        else:
            params["window"] = self.period or "today"
        if self.compare:
            params["compare"] = ",".join(self.compare)
        return params


SETTINGS: tuple[Setting[Any], ...] = declarations(ReportSettings)
"""Every setting of `adpulse report`, in the order of --help and the README."""


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "report",
        help="show a period's figures per channel or campaign (live table, --json, --csv)",
        description=(
            "A table of every channel (or campaign) for a period: spend, revenue, "
            "conversions, CPA, ROAS, clicks, conversion rate, profit, AOV, CPC, ROMI, sorted "
            "by spend, with a totals row, and under each value its change against the "
            "comparisons asked for; refreshed in place. At a narrow terminal the least "
            "important columns are left out (the caption names them). --once prints one "
            "table; --json and --csv print what the exporter's GET /v1/report answers for "
            "the same parameters. Exit code 1 when Redis cannot be read with --once, --json "
            "or --csv; 2 for a bad parameter."
        ),
    )
    add_arguments(parser, SETTINGS)
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> ReportSettings:
    """The report's settings: each flag, else its ADPULSE_* variable, else the default."""
    values = resolve_all(args, env, SETTINGS)
    values["compare"] = tuple(dict.fromkeys(values["compare"]))
    return ReportSettings(**values)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = settings_from(args, env)
    return asyncio.run(report(settings))


async def _document(store: KpiStore, settings: ReportSettings) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    from stream.days import LocalDays
    from stream.read_api import report_document

    days = LocalDays(ZoneInfo(settings.timezone), store.retention.day_seconds)
    _, document = await report_document(
        store, settings.params(), days=days, currency=settings.currency
    )
    return document


async def report(settings: ReportSettings) -> int:
    import orjson
    from redis.exceptions import RedisError

    from stream.errors import StoreUnavailable
    from stream.report import ReportError, report_csv
    from stream.store import KpiStore

    try:
        store = KpiStore.from_url(settings.redis_url, timeout=settings.timeout)
    except ValueError as error:
        print(f"adpulse report: --redis-url {settings.redis_url!r}: {error}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(StoreUnavailable):  # unreachable: said by the first read
            await store.follow_active_prefix()
        if settings.json or settings.once or settings.csv:
            try:
                document = await _document(store, settings)
            except ReportError as error:
                print(f"adpulse report: {_flag(error.parameter)}: {error.reason}", file=sys.stderr)
                return 2
            except (StoreUnavailable, RedisError) as error:
                print(
                    f"adpulse report: cannot read Redis at {settings.redis_url}: {error}",
                    file=sys.stderr,
                )
                return 1
            if settings.json:
                sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
            elif settings.csv:
                sys.stdout.write(report_csv(document))
            else:
                from rich.console import Console

                from adpulse.cli.report import report_table
                from adpulse.core.currencies import minor_unit

                console = Console(width=settings.width)
                if not console.is_terminal and settings.width is None:
                    console = Console(width=PIPE_WIDTH)  # a file or a pipe: no need to squeeze
                console.print(report_table(document, console.width, minor_unit(settings.currency)))
            return 0
        await live(store, settings)
        return 0
    finally:
        await store.close()


def _flag(parameter: str) -> str:
    return {"window": "--period", "from": "--from", "to": "--to", "group_by": "--by"}.get(
        parameter, f"--{parameter}"
    )


async def live(store: KpiStore, settings: ReportSettings) -> None:
    """Refresh the table every interval until SIGINT or SIGTERM; Redis down is shown, not fatal."""
    from redis.exceptions import RedisError
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from adpulse.cli.report import report_table
    from adpulse.core.currencies import minor_unit
    from stream.errors import StoreUnavailable
    from stream.report import ReportError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    console = Console(width=settings.width)
    waiting = Text(f"waiting for Redis at {settings.redis_url} ...", style="yellow")
    with Live(waiting, console=console, auto_refresh=False, screen=False) as view:
        while not stop.is_set():
            try:
                document = await _document(store, settings)
            except ReportError as error:
                view.update(Text(f"{_flag(error.parameter)}: {error.reason}", style="red"))
                return
            except (StoreUnavailable, RedisError) as error:
                view.update(
                    Text(f"waiting for Redis at {settings.redis_url}: {error}", style="yellow"),
                    refresh=True,
                )
            else:
                table = report_table(document, console.width, minor_unit(settings.currency))
                view.update(table, refresh=True)
            try:
                await asyncio.wait_for(stop.wait(), settings.interval)
            except TimeoutError:
                continue
