"""`adpulse tracker`: the HTTP edge."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any


def register(subcommands: Any) -> None:
    from tracker.settings import add_arguments

    parser: argparse.ArgumentParser = subcommands.add_parser(
        "tracker",
        help="run the tracking endpoint (pixel, click redirect, event and spend posts)",
        description=(
            "Run the tracking endpoint: GET /p.gif, GET /c, POST /v1/events, POST /v1/spend, "
            "/healthz, /readyz, /metrics, /openapi.json. Accepted events go to Kafka; while "
            "Kafka is unreachable they wait in a bounded on-disk spool and are replayed in order."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import uvloop

    from adpulse.core import logs
    from tracker.server import serve
    from tracker.settings import settings_from

    settings = settings_from(args, env)
    logs.configure(settings.log_level, "tracker")
    return uvloop.run(serve(settings))
