"""`adpulse report`: the per-channel KPIs from Redis as a live terminal table, or as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from stream.kpi import WINDOWS

if TYPE_CHECKING:
    from stream.store import KpiStore

PIPE_WIDTH = 132


def parse_window(text: str) -> str:
    window = text.strip().lower()
    if window not in WINDOWS:
        raise ValueError(f"one of {', '.join(WINDOWS)}")
    return window


@dataclass(frozen=True, slots=True)
class ReportSettings:
    redis_url: str = declare(REDIS_URL)
    window: str = option(
        "--window",
        "ADPULSE_REPORT_WINDOW",
        "1h",
        parse_window,
        f"the window of the table: {', '.join(WINDOWS)}",
    )
    interval: float = option(
        "--interval",
        "ADPULSE_REPORT_INTERVAL",
        2.0,
        parse_positive_float,
        "seconds between refreshes",
    )
    once: bool = switch("--once", "print one table and exit")
    json: bool = switch("--json", "print the snapshot as JSON and exit")
    currency: str = declare(CURRENCY)
    timeout: float = option(
        "--timeout",
        "ADPULSE_REPORT_TIMEOUT",
        5.0,
        parse_positive_float,
        "seconds to wait for Redis",
    )


SETTINGS: tuple[Setting[Any], ...] = declarations(ReportSettings)
"""Every setting of `adpulse report`, in the order of --help and the README."""


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "report",
        help="show every channel's KPIs as a live terminal table (or --json)",
        description=(
            "A table of every channel: clicks, conversions, spend, revenue, CPA, conversion "
            "rate, ROAS and AOV over a window, each with its change against the same window a "
            "day earlier, refreshed in place. --once prints one table; --json prints the whole "
            "snapshot (all windows, now, a day and a week earlier) for scripts. Exit code 1 "
            "when Redis cannot be read with --once or --json."
        ),
    )
    add_arguments(parser, SETTINGS)
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> ReportSettings:
    """The report's settings: each flag, else its ADPULSE_* variable, else the default."""
    return ReportSettings(**resolve_all(args, env, SETTINGS))


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = settings_from(args, env)
    return asyncio.run(report(settings))


async def report(settings: ReportSettings) -> int:
    import redis.asyncio as redis
    from redis.exceptions import RedisError

    from stream.errors import StoreUnavailable
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
        if settings.json or settings.once:
            try:
                snapshot = await store.snapshot()
            except (StoreUnavailable, RedisError) as error:
                print(
                    f"adpulse report: cannot read Redis at {settings.redis_url}: {error}",
                    file=sys.stderr,
                )
                return 1
            if settings.json:
                from adpulse.cli.report import snapshot_document

                print(json.dumps(snapshot_document(snapshot), indent=2))
            else:
                from rich.console import Console

                from adpulse.cli.report import report_table

                console = Console()
                if not console.is_terminal:
                    console = Console(width=PIPE_WIDTH)  # a file or a pipe: no need to squeeze
                console.print(report_table(snapshot, settings.window, settings.currency))
            return 0
        await live(store, settings)
        return 0
    finally:
        await store.close()


async def live(store: KpiStore, settings: ReportSettings) -> None:
    """Refresh the table every interval until SIGINT or SIGTERM; Redis down is shown, not fatal."""
    from redis.exceptions import RedisError
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from adpulse.cli.report import report_table
    from stream.errors import StoreUnavailable

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    console = Console()
    waiting = Text(f"waiting for Redis at {settings.redis_url} ...", style="yellow")
    with Live(waiting, console=console, auto_refresh=False, screen=False) as view:
        while not stop.is_set():
            try:
                snapshot = await store.snapshot()
            except (StoreUnavailable, RedisError) as error:
                view.update(
                    Text(f"waiting for Redis at {settings.redis_url}: {error}", style="yellow"),
                    refresh=True,
                )
            else:
                view.update(
                    report_table(snapshot, settings.window, settings.currency), refresh=True
                )
            try:
                await asyncio.wait_for(stop.wait(), settings.interval)
            except TimeoutError:
                continue
