"""`adpulse worker`: the stream worker, Kafka -> Redis counters."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any


def register(subcommands: Any) -> None:
    from stream.worker_settings import add_arguments

    parser: argparse.ArgumentParser = subcommands.add_parser(
        "worker",
        help="run a stream worker (Kafka events -> per-channel counters in Redis)",
        description=(
            "Run a stream worker: consume the events topic in one consumer group, apply each "
            "batch to the Redis counters in one call, commit the batch's offsets only after "
            "that. Any number of workers share the partitions. While Redis is unreachable the "
            "batch is retried with backoff and nothing is committed. Serves its own /metrics. "
            "SIGTERM finishes the batch in hand, commits it and exits 0."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import asyncio

    import uvloop

    from adpulse.core import logs
    from stream.worker import run as run_worker
    from stream.worker_settings import settings_from

    settings = settings_from(args, env)
    logs.configure(settings.log_level, "worker")
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return run_worker(settings, loop)
