"""The comparison for bench/worker_throughput.py: the same counting done the plain faust way.

    .venv/bin/python bench/worker_faust_agent.py MODE KAFKA TOPIC GROUP REDIS_URL

MODE ``per-event``: an agent that applies each event on its own (one Lua call per event, the
same exact, deduplicated counting as the worker). MODE ``take``: an agent that batches with
faust's own `stream.take(5000, within=0.1)` and applies each batch with one call, which
isolates the cost of faust's per-record delivery. Both with concurrency=1, the same faust
settings as `adpulse worker`, and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

import faust
import uvloop

from stream.batch import decode_records
from stream.store import KpiStore


def main() -> None:
    mode, kafka, topic, group, redis_url = sys.argv[1:6]
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = faust.App(
        group,
        broker=f"kafka://{kafka}",
        autodiscover=False,
        datadir=tempfile.mkdtemp(prefix="adpulse-bench-agent-"),
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=3.0,
        broker_heartbeat_interval=0.75,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    store = KpiStore.from_url(redis_url)

    if mode == "per-event":

        @app.agent(source, concurrency=1)
        async def count_each(stream: faust.StreamT[bytes]) -> None:
            async for value in stream:
                await store.apply_decoded(decode_records([value]))

    elif mode == "take":

        @app.agent(source, concurrency=1)
        async def count_batches(stream: faust.StreamT[bytes]) -> None:
            async for values in stream.take(5000, within=0.1):
                await store.apply_decoded(decode_records(values))

    else:
        raise SystemExit(f"unknown mode {mode!r}: per-event or take")
    worker = faust.Worker(app, loop=loop, quiet=True, loglevel="WARNING")
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
