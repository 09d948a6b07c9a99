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
    SettingError,
    parse_int,
    parse_log_level,
    parse_positive_float,
    resolve,
)

DEFAULT_TRACKER = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class SimulateSettings:
    tracker_url: str = DEFAULT_TRACKER
    api_token: str | None = None
    rate: float = 20.0
    duration: float = 0.0
    """Seconds; 0 runs until SIGINT or SIGTERM."""
    seed: int | None = None
    """None: a random seed, printed so that the run can be repeated."""
    run_id: str | None = None
    spikes: tuple[Spike, ...] = ()
    start_hour: float = 12.0
    spend_interval: float = 10.0
    concurrency: int = 32
    coupons_out: Path | None = None
    json: bool = False
    log_level: str = "INFO"


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "simulate",
        help="drive realistic marketing traffic through a tracker and report what was sent",
        description=(
            "Send redirect and pixel clicks, conversions (with the click id of their click), "
            "coupon redemptions and periodic spend to a tracker, for the channels paid_search, "
            "paid_social, email, affiliate, marketplace, native, remarketing and influencer "
            "(coupons), with a daily rhythm, some bots and some duplicate posts. At the end, or "
            "on SIGINT/SIGTERM, prints per channel what the KPI counters should show. "
            "The tracker must allow redirects to shop.example.com (ADPULSE_REDIRECT_HOSTS) and "
            "share ADPULSE_API_TOKEN for spend; influencer figures need the coupons registered "
            "(see --coupons-out)."
        ),
    )
    add = parser.add_argument
    add("--tracker", help=f"tracker base URL (ADPULSE_TRACKER_URL, default {DEFAULT_TRACKER})")
    add(
        "--rate",
        help="visits (clicks and redemptions) per second, averaged over the day; conversions, "
        "duplicates and spend come on top (ADPULSE_SIMULATE_RATE, default 20)",
    )
    add(
        "--duration",
        help="how long to run, e.g. 90, 30s, 5m; 0 runs until Ctrl-C or SIGTERM "
        "(ADPULSE_SIMULATE_DURATION, default 0)",
    )
    add(
        "--seed",
        help="the same seed gives the same events and values (ADPULSE_SIMULATE_SEED, "
        "default random, printed)",
    )
    add(
        "--run-id",
        help="prefix of every event, order and click id (default random, so that repeated "
        "runs with one seed are not deduplicated against each other)",
    )
    add(
        "--spike",
        action="append",
        default=[],
        metavar="CHANNEL=FACTOR@OFFSET",
        help="from OFFSET (e.g. 30s, 5m) on, multiply CHANNEL's cost per click, and so its "
        "CPA, by FACTOR; repeatable",
    )
    add(
        "--start-hour",
        help="hour of the simulated day at the start, for the daily rhythm (default 12)",
    )
    add("--spend-interval", help="seconds of clicks each spend post covers (default 10)")
    add("--concurrency", help="requests in flight at most (default 32)")
    add("--coupons-out", help="write the coupon codes used, as CSV code,channel, to this file")
    add("--json", action="store_true", help="print the final report as JSON")
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (ADPULSE_LOG_LEVEL, default INFO)")
    parser.set_defaults(run=run)


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


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> SimulateSettings:

    defaults = SimulateSettings()
    spikes = []
    for text in args.spike:
        try:
            spikes.append(parse_spike(text))
        except ValueError as error:
            raise SettingError("--spike", text, str(error)) from error
    token = env.get("ADPULSE_API_TOKEN") or None
    return SimulateSettings(
        tracker_url=resolve(args, env, "tracker", "ADPULSE_TRACKER_URL", defaults.tracker_url, str),
        api_token=token,
        rate=resolve(
            args, env, "rate", "ADPULSE_SIMULATE_RATE", defaults.rate, parse_positive_float
        ),
        duration=resolve(
            args,
            env,
            "duration",
            "ADPULSE_SIMULATE_DURATION",
            defaults.duration,
            parse_duration_option,
        ),
        seed=resolve(args, env, "seed", "ADPULSE_SIMULATE_SEED", defaults.seed, parse_int),
        run_id=resolve(args, env, "run_id", "ADPULSE_SIMULATE_RUN_ID", defaults.run_id, str),
        spikes=tuple(spikes),
        start_hour=resolve(
            args, env, "start_hour", "ADPULSE_SIMULATE_START_HOUR", 12.0, parse_start_hour
        ),
        spend_interval=resolve(
            args,
            env,
            "spend_interval",
            "ADPULSE_SIMULATE_SPEND_INTERVAL",
            defaults.spend_interval,
            parse_positive_float,
        ),
        concurrency=resolve(
            args,
            env,
            "concurrency",
            "ADPULSE_SIMULATE_CONCURRENCY",
            defaults.concurrency,
            parse_concurrency,
        ),
        coupons_out=resolve(args, env, "coupons_out", "ADPULSE_SIMULATE_COUPONS_OUT", None, Path),
        json=bool(args.json),
        log_level=resolve(args, env, "log_level", "ADPULSE_LOG_LEVEL", "INFO", parse_log_level),
    )


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
        )
    except (SettingError, ValueError) as error:
        print(f"adpulse simulate: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, "simulate")
    if settings.coupons_out is not None:
        write_coupons(settings.coupons_out)
    return asyncio.run(simulate(settings, plan_settings))


def write_coupons(path: Path) -> None:
    from adpulse.cli.simulate.profiles import coupon_rows

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["code", "channel"])
        writer.writerows(coupon_rows())


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
        DriverSettings(settings.tracker_url, settings.api_token, settings.concurrency),
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
