"""`adpulse simulate`: realistic traffic through the tracker's HTTP endpoints, then a report."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import secrets
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adpulse.cli.simulate.plan import PlanSettings
from adpulse.cli.simulate.profiles import Spike, parse_duration, parse_spike
from adpulse.core.options import (
    API_TOKEN,
    LOG_LEVEL,
    Secret,
    Setting,
    SettingError,
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


def parse_duration_option(text: str) -> float:
    value = parse_duration(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def parse_start_hour(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 <= value < 24:
        raise ValueError("an hour from 0 to 24")
    return value


def parse_concurrency(text: str) -> int:
    value = parse_int(text)
    if not 1 <= value <= 1024:
        raise ValueError("from 1 to 1024")
    return value


def parse_seed(text: str) -> int | None:
    return parse_int(text)


def parse_run_id(text: str) -> str | None:
    return text


def parse_path(text: str) -> Path | None:
    return Path(text)


@dataclass(frozen=True, slots=True)
class SimulateSettings:
    tracker_url: str = option(
        "--tracker", "ADPULSE_TRACKER_URL", "http://127.0.0.1:8080", str, "tracker base URL"
    )
    api_token: Secret | None = declare(API_TOKEN)
    rate: float = option(
        "--rate",
        "ADPULSE_SIMULATE_RATE",
        20.0,
        parse_positive_float,
        "visits (clicks and redemptions) per second, averaged over the day; conversions, "
        "duplicates and spend come on top",
    )
    duration: float = option(
        "--duration",
        "ADPULSE_SIMULATE_DURATION",
        0.0,
        parse_duration_option,
        "how long to run, e.g. 90, 30s, 5m; 0 runs until Ctrl-C or SIGTERM",
    )
    seed: int | None = option(
        "--seed",
        "ADPULSE_SIMULATE_SEED",
        None,
        parse_seed,
        "the same seed gives the same events and values",
        shown_default="random, printed",
    )
    run_id: str | None = option(
        "--run-id",
        "ADPULSE_SIMULATE_RUN_ID",
        None,
        parse_run_id,
        "prefix of every event, order and click id, so that repeated runs with one seed are not "
        "deduplicated against each other",
        shown_default="random",
    )
    spikes: tuple[Spike, ...] = repeated(
        "--spike",
        parse_spike,
        "from OFFSET (e.g. 30s, 5m) on, multiply CHANNEL's cost per click, and so its CPA, by "
        "FACTOR; repeatable",
        metavar="CHANNEL=FACTOR@OFFSET",
    )
    start_hour: float = option(
        "--start-hour",
        "ADPULSE_SIMULATE_START_HOUR",
        12.0,
        parse_start_hour,
        "hour of the simulated day at the start, for the daily rhythm",
    )
    spend_interval: float = option(
        "--spend-interval",
        "ADPULSE_SIMULATE_SPEND_INTERVAL",
        10.0,
        parse_positive_float,
        "seconds of clicks each spend post covers",
    )
    concurrency: int = option(
        "--concurrency",
        "ADPULSE_SIMULATE_CONCURRENCY",
        32,
        parse_concurrency,
        "requests in flight at most",
    )
    coupons_out: Path | None = option(
        "--coupons-out",
        "ADPULSE_SIMULATE_COUPONS_OUT",
        None,
        parse_path,
        "write the coupon codes used, as CSV `code,channel`, to this file",
    )
    numbers_out: Path | None = option(
        "--numbers-out",
        "ADPULSE_SIMULATE_NUMBERS_OUT",
        None,
        parse_path,
        "write the tracked phone numbers called, as CSV `number,channel,campaign,kind` "
        "(`adpulse numbers import`), to this file",
    )
    customers: bool = switch(
        "--customers",
        "send a customer id with each order (some customers buy again, through any channel); "
        "the tracker refuses them without ADPULSE_HASH_KEY",
    )
    json: bool = switch("--json", "print the final report as JSON")
    log_level: str = declare(LOG_LEVEL)


SETTINGS: tuple[Setting[Any], ...] = declarations(SimulateSettings)
"""Every setting of `adpulse simulate`, in the order of --help and the README."""


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "simulate",
        help="drive realistic marketing traffic through a tracker and report what was sent",
        description=(
            "Send redirect and pixel clicks (some posted by a shop's server for the visitor), "
            "leads and conversions (with the click id of their click), coupon redemptions and "
            "periodic spend to a tracker, for the channels paid_search, paid_social, email, "
            "affiliate, marketplace, native, remarketing and influencer (coupons), with a daily "
            "rhythm, some bots and some duplicate posts. At the end, or on SIGINT/SIGTERM, "
            "prints per channel what the KPI counters should show (bot clicks and leads "
            "included). The tracker must allow redirects to shop.example.com "
            "(ADPULSE_REDIRECT_HOSTS) and share ADPULSE_API_TOKEN for spend and forwarded "
            "clicks; influencer figures need the coupons registered (see --coupons-out); calls "
            "need the tracker's --redis-url, ADPULSE_HASH_KEY and the numbers registered (see "
            "--numbers-out). Some orders are posted pending and restated later (approved, "
            "declined, refunded in full or in part); the report shows gross and net figures, and "
            "with --customers new customers and repeat sales."
        ),
    )
    add_arguments(parser, SETTINGS)
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> SimulateSettings:
    """The simulator's settings: each flag, else its ADPULSE_* variable, else the default."""
    return SimulateSettings(**resolve_all(args, env, SETTINGS))


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from adpulse.core import logs

    try:
        settings = settings_from(args, env)
        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        run_id = settings.run_id if settings.run_id is not None else secrets.token_hex(4)
        plan_settings = PlanSettings(
            seed=seed,
            rate=settings.rate,
            duration=settings.duration or None,
            run_id=run_id,
            spikes=settings.spikes,
            start_hour=settings.start_hour,
            spend_interval=settings.spend_interval,
            customers=settings.customers,
        )
    except (SettingError, ValueError) as error:
        print(f"adpulse simulate: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, "simulate")
    if settings.coupons_out is not None:
        write_coupons(settings.coupons_out)
    if settings.numbers_out is not None:
        write_numbers(settings.numbers_out)
    return asyncio.run(simulate(settings, plan_settings))


def write_coupons(path: Path) -> None:
    from adpulse.cli.simulate.profiles import coupon_rows

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["code", "channel"])
        writer.writerows(coupon_rows())


def write_numbers(path: Path) -> None:
    from adpulse.cli.simulate.profiles import number_rows

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "channel", "campaign", "kind"])
        writer.writerows(number_rows())


async def simulate(settings: SimulateSettings, plan_settings: PlanSettings) -> int:
    import logging

    from rich.console import Console

    from adpulse.cli.simulate.driver import DriverSettings, TrafficDriver
    from adpulse.cli.simulate.plan import TrafficPlan
    from adpulse.cli.simulate.profiles import CHANNEL_NAMES
    from adpulse.cli.simulate.tally import Tally, sent_table

    log = logging.getLogger("adpulse.simulate")
    if settings.api_token is None:
        log.warning("ADPULSE_API_TOKEN is not set: the tracker will refuse every spend post")
    log.info(
        "simulating against %s: seed %d, run id %s, %.6g visits/s, %s",
        settings.tracker_url,
        plan_settings.seed,
        plan_settings.run_id,
        settings.rate,
        f"{settings.duration:g}s" if settings.duration else "until stopped",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    driver = TrafficDriver(
        TrafficPlan(plan_settings),
        DriverSettings(
            settings.tracker_url,
            settings.api_token.reveal() if settings.api_token else None,
            settings.concurrency,
        ),
        Tally(CHANNEL_NAMES),
    )
    tally = await driver.run(stop)
    if settings.json:
        document = {
            "seed": plan_settings.seed,
            "run_id": plan_settings.run_id,
            "tracker": settings.tracker_url,
            "stopped": stop.is_set(),
            **tally.document(),
        }
        print(json.dumps(document, indent=2))
    else:
        title = f"adpulse simulate: seed {plan_settings.seed}, run id {plan_settings.run_id}"
        console = Console()
        if not console.is_terminal:
            console = Console(width=132)  # a file or a pipe: no need to squeeze
        console.print(sent_table(tally, title))
        if tally.errors:
            for kind, count in sorted(tally.errors.items()):
                console.print(f"errors: {count} x {kind}", markup=False)
        if tally.skipped:
            console.print(f"{tally.skipped} conversions skipped: their click failed")
    # Errors are in the report; only a run in which nothing got through is a failure.
    return 1 if tally.requests and tally.error_count == tally.requests else 0
