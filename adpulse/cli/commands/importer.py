"""`adpulse import`: past periods and ad-platform cost files into the day buckets.

adpulse import history history.csv     # date,channel,campaign,clicks,conversions,revenue,spend
adpulse import costs --format google-ads campaign_report.csv
adpulse import costs --format meta --channel paid_social ads_manager_export.csv

Every row is checked first: a bad row refuses the whole file (its line and reason) unless
--skip-bad, which imports the good rows and lists the bad ones. Re-importing a file replaces
what it imported before: figures never double.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adpulse.core.options import (
    CURRENCY,
    REDIS_URL,
    TIMEZONE,
    add_arguments,
    declared,
    resolve,
)
from stream.worker_settings import WorkerSettings

PROGRESS_ROWS = 2000
"""Files with more rows than this show a progress bar."""
CAPS = (declared(WorkerSettings, "max_channels"), declared(WorkerSettings, "max_campaigns"))
"""The worker's caps on channels and on campaigns per channel and month: imported rows count
where the worker would count their events, so give `import` the worker's values."""


def register(subcommands: Any) -> None:
    # Shared flags go before or after the kind alike (as for `adpulse coupons`); SUPPRESS keeps
    # a kind's parser from overwriting a value given before it with its own default.
    shared = argparse.ArgumentParser(add_help=False)
    add_arguments(shared, [REDIS_URL, TIMEZONE, *CAPS], default=argparse.SUPPRESS)
    per_file = argparse.ArgumentParser(add_help=False)
    per_file.add_argument(
        "--skip-bad",
        action="store_true",
        help="import the good rows of a file with bad rows, and list the bad ones "
        "(default: a bad row imports nothing)",
    )
    per_file.add_argument("file", type=Path, help="the CSV file")
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "import",
        parents=[shared],
        help="import past periods or ad-platform cost files into the day buckets",
        description="Load past periods (history) or daily cost exports (costs) into the day "
        "and month buckets the report and the read API read. Re-importing replaces.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    history = kinds.add_parser(
        "history",
        parents=[shared, per_file],
        help="past figures per date, channel and campaign",
        description="Load a CSV with the header date,channel,campaign,clicks,conversions,"
        "revenue,spend (and optionally redemptions, leads) into the day buckets, so that "
        "year-on-year comparisons work from the first day. Each (date, channel, campaign) "
        "replaces what an earlier import put there.",
    )
    history.set_defaults(run=run_history)
    costs = kinds.add_parser(
        "costs",
        parents=[shared, per_file],
        help="daily cost exports of Google Ads, Meta Ads Manager, or a plain CSV",
        description="Turn a daily cost export into spend records, one per date, channel and "
        "campaign, spread over that local day. google-ads: a campaign report segmented by "
        "Day (columns Day, Campaign, Cost, Currency code). meta: an Ads Manager export "
        "broken down by day (Campaign name, Amount spent (XXX), Day or Reporting "
        "starts/ends). csv: date,channel,campaign,cost[,currency]. A re-import restates the "
        "same days.",
    )
    costs.add_argument(
        "--format", choices=("google-ads", "meta", "csv"), help="the file's layout (required)"
    )
    costs.add_argument(
        "--channel",
        help="the channel of the file's costs (default: paid_search for google-ads, "
        "paid_social for meta; csv files name it per row)",
    )
    add_arguments(costs, [CURRENCY])
    costs.set_defaults(run=run_costs)


def _store(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    from zoneinfo import ZoneInfo

    from stream.store import KpiStore

    url = resolve(args, env, REDIS_URL)
    zone = resolve(args, env, TIMEZONE)
    max_channels, max_campaigns = (resolve(args, env, setting) for setting in CAPS)
    return KpiStore.from_url(
        url, zone=ZoneInfo(zone), max_channels=max_channels, max_campaigns=max_campaigns
    )


def _read(path: Path) -> list[str]:
    # utf-8-sig: spreadsheet exports often begin with a byte order mark.
    with path.open(encoding="utf-8-sig", newline="") as file:
        return file.readlines()


def _report_skipped(parsed: Any) -> None:
    for error in parsed.skipped:
        print(f"skipped {error}", file=sys.stderr)


def run_history(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from stream.errors import StoreUnavailable
    from stream.imports import ImportFileError, parse_history, write_history

    store = _store(args, env)
    try:
        parsed = parse_history(_read(args.file), skip_bad=args.skip_bad)
    except (ImportFileError, OSError, UnicodeDecodeError) as error:
        print(f"adpulse import history: {args.file}: {error}; nothing imported", file=sys.stderr)
        return 1
    _report_skipped(parsed)
    try:
        written = asyncio.run(
            _write(store, parsed.rows, lambda p: write_history(store, parsed.rows, p))
        )
    except StoreUnavailable as error:
        return _unavailable("history", error)
    print(f"imported {written.rows} rows of {args.file} ({len(parsed.skipped)} bad rows skipped)")
    if written.other_campaigns:
        print(
            f"{written.other_campaigns} rows counted under campaign other: their channel has "
            "the most campaigns allowed in that month (ADPULSE_WORKER_MAX_CAMPAIGNS)"
        )
    if written.unlisted:
        print(
            f"{written.unlisted} rows counted under channel unlisted: the store has the most "
            "channels allowed (ADPULSE_WORKER_MAX_CHANNELS)"
        )
    return 0


def run_costs(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from stream.errors import StoreUnavailable
    from stream.imports import ImportFileError, parse_costs, write_costs

    if args.format is None:
        print("adpulse import costs: --format google-ads, meta or csv is required", file=sys.stderr)
        return 2
    currency = resolve(args, env, CURRENCY)
    store = _store(args, env)
    try:
        parsed = parse_costs(
            _read(args.file),
            args.format,
            currency=currency,
            channel=args.channel,
            skip_bad=args.skip_bad,
        )
    except (ImportFileError, OSError, UnicodeDecodeError, ValueError) as error:
        print(f"adpulse import costs: {args.file}: {error}; nothing imported", file=sys.stderr)
        return 1
    _report_skipped(parsed)
    try:
        asyncio.run(
            _write(store, parsed.rows, lambda p: write_costs(store, parsed.rows, args.format, p))
        )
    except StoreUnavailable as error:
        return _unavailable("costs", error)
    print(
        f"imported {len(parsed.rows)} daily costs of {args.file} "
        f"({len(parsed.skipped)} bad rows skipped)"
    )
    return 0


def _unavailable(command: str, error: Exception) -> int:
    print(
        f"adpulse import {command}: {error} (--redis-url / ADPULSE_REDIS_URL); the rows written "
        "before stay, and importing the file again once Redis answers is safe: figures never "
        "double",
        file=sys.stderr,
    )
    return 1


async def _write(store: Any, rows: list[Any], write: Any) -> Any:
    from rich.progress import Progress

    try:
        await store.follow_active_prefix()
        if len(rows) <= PROGRESS_ROWS:
            return await write(None)
        with Progress(transient=True) as progress:
            task = progress.add_task("importing", total=len(rows))
            return await write(lambda done: progress.advance(task, done))
    finally:
        await store.close()
