"""`adpulse report`: a period's figures per channel or campaign from Redis, as a live terminal
table, or as the read API's JSON or CSV."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adpulse.core.options import parse_int, parse_positive_float, resolve
from stream.report import COMPARISONS, GROUPS, WINDOWS

if TYPE_CHECKING:
    from stream.store import KpiStore

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
PIPE_WIDTH = 132


@dataclass(frozen=True, slots=True)
class ReportSettings:
    redis_url: str = DEFAULT_REDIS_URL
    period: str | None = None
    """A window name; None with `first`/`last` given, else "today"."""
    first: str | None = None
    last: str | None = None
    compare: tuple[str, ...] = ()
    by: str = "channel"
    interval: float = 2.0
    once: bool = False
    json: bool = False
    csv: bool = False
    currency: str = "USD"
    timezone: str = "UTC"
    timeout: float = 5.0
    width: int | None = None
    """Table width; None: the terminal's, or `PIPE_WIDTH` into a file or a pipe."""

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
    add = parser.add_argument
    add("--redis-url", help=f"the KPI store (ADPULSE_REDIS_URL, default {DEFAULT_REDIS_URL})")
    add(
        "--period",
        "--window",
        dest="period",
        help=f"{', '.join(WINDOWS)} (ADPULSE_REPORT_PERIOD, default today)",
    )
    add("--from", dest="first", help="first date YYYY-MM-DD (reporting time zone), with --to")
    add("--to", dest="last", help="last date YYYY-MM-DD, inclusive, with --from")
    add(
        "--compare",
        action="append",
        choices=COMPARISONS,
        help="compare with the previous period and/or the same period a year earlier (repeatable)",
    )
    add("--by", choices=GROUPS, help="rows per channel (default) or per campaign")
    add("--interval", help="seconds between refreshes (ADPULSE_REPORT_INTERVAL, default 2)")
    add("--once", action="store_true", help="print one table and exit")
    add("--json", action="store_true", help="print the read API's JSON document and exit")
    add("--csv", action="store_true", help="print the report as CSV and exit")
    add("--currency", help="reporting currency (ADPULSE_CURRENCY, default USD)")
    add("--timezone", help="reporting time zone, an IANA name (ADPULSE_TIMEZONE, default UTC)")
    add("--timeout", help="seconds to wait for Redis (ADPULSE_REPORT_TIMEOUT, default 5)")
    add(
        "--width",
        help="table width in columns (COLUMNS; default: the terminal's, "
        f"{PIPE_WIDTH} into a file or pipe)",
    )
    parser.set_defaults(run=run)


def parse_period(text: str) -> str:
    period = text.strip().lower()
    if period not in WINDOWS:
        raise ValueError(f"one of {', '.join(WINDOWS)}")
    return period


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> ReportSettings:
    from stream.exporter_settings import parse_currency, parse_timezone

    defaults = ReportSettings()
    return ReportSettings(
        redis_url=resolve(args, env, "redis_url", "ADPULSE_REDIS_URL", defaults.redis_url, str),
        period=resolve(args, env, "period", "ADPULSE_REPORT_PERIOD", None, parse_period),
        first=args.first,
        last=args.last,
        compare=tuple(dict.fromkeys(args.compare or ())),
        by=args.by or "channel",
        interval=resolve(
            args,
            env,
            "interval",
            "ADPULSE_REPORT_INTERVAL",
            defaults.interval,
            parse_positive_float,
        ),
        once=bool(args.once),
        json=bool(args.json),
        csv=bool(args.csv),
        currency=resolve(
            args, env, "currency", "ADPULSE_CURRENCY", defaults.currency, parse_currency
        ),
        timezone=resolve(
            args, env, "timezone", "ADPULSE_TIMEZONE", defaults.timezone, parse_timezone
        ),
        timeout=resolve(
            args, env, "timeout", "ADPULSE_REPORT_TIMEOUT", defaults.timeout, parse_positive_float
        ),
        width=resolve(args, env, "width", "COLUMNS", None, parse_width),
    )


def parse_width(text: str) -> int:
    width = parse_int(text)
    if not 40 <= width <= 1000:
        raise ValueError("from 40 to 1000 columns")
    return width


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
    import redis.asyncio as redis
    from redis.exceptions import RedisError

    from stream.errors import StoreUnavailable
    from stream.report import ReportError, report_csv
    from stream.store import KpiStore

    try:
        client = redis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
        )
    except ValueError as error:
        print(f"adpulse report: --redis-url {settings.redis_url!r}: {error}", file=sys.stderr)
        return 2
    store = KpiStore(client)
    try:
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
