"""The read API's cost: a one-year report by campaign for 50 channels x 20 campaigns.

    .venv/bin/python bench/read_api.py [--channels 50] [--campaigns 20] [--days 365]
                                       [--requests 30] [--years 2] [--compare-with DIR]

A private redis-server (as the other benches start it) is filled through `adpulse import
history`'s write path (`stream.imports.write_history`: one row per day, channel and campaign,
into the day and month buckets the worker writes) for `--years` periods of `--days` (2: the
compared periods hold figures too), then the exporter's app (`stream.read_api.build_app`)
answers `GET /v1/report?from=..&to=..&group_by=campaign&compare=previous_period,
previous_year` over HTTP on loopback, `--requests` times.

`--compare-with DIR` (another checkout, e.g. `git worktree add /tmp/before <commit>`) also
serves the same Redis with DIR's `stream` package in a second process, and alternates the
requests between the two: on a noisy machine the ratio of the two in one run is the figure.

Printed: latency p50/p99 (client side, includes JSON), Redis CPU per request (INFO
commandstats usec of the reads), the keys and fields read, and the Redis memory of the
day and month buckets (MEMORY USAGE, SAMPLES 0). Run it on a quiet machine for latency; the
memory and Redis-side figures do not depend on load.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import aiohttp
import redis.asyncio as redis
from aiohttp import web
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.imports import HistoryRow, write_history  # noqa: E402
from stream.read_api import build_app  # noqa: E402
from stream.store import KpiStore  # noqa: E402
from tests.services import RedisServer, free_port, redis_server_binary  # noqa: E402

M = 1_000_000


def rows(channels: int, campaigns: int, first: date, days: int) -> list[HistoryRow]:
    made = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        for channel in range(channels):
            for campaign in range(campaigns):
                seed = offset + channel * 7 + campaign * 13
                made.append(
                    HistoryRow(
                        day, f"channel_{channel}", f"campaign-{campaign}",
                        100 + seed % 50, 0, 3 + seed % 5, (seed % 900 + 100) * M,
                        (seed % 300 + 50) * M,
                    )
                )  # fmt: skip
    return made


async def redis_usec(client: redis.Redis) -> tuple[int, int]:
    stats = await client.info("commandstats")
    usec = sum(int(value["usec"]) for name, value in stats.items() if name.startswith("cmdstat_"))
    calls = sum(int(value["calls"]) for name, value in stats.items() if name.startswith("cmdstat_"))
    return usec, calls


async def bucket_memory(client: redis.Redis) -> tuple[int, int]:
    total = keys = 0
    async for key in client.scan_iter(count=1000):
        if key.startswith(("adpulse:d", "adpulse:m", "adpulse:hist")):
            total += int(await client.memory_usage(key, samples=0) or 0)
            keys += 1
    return total, keys


SERVE_OTHER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from aiohttp import web
from prometheus_client import CollectorRegistry
from stream.read_api import build_app
from stream.store import KpiStore

async def main():
    store = KpiStore.from_url(sys.argv[2])
    app = build_app(store, CollectorRegistry(), days=store.days, currency="USD", read_token=None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[3])).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def timed_gets(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.get(url) as response:
        response.raise_for_status()
        body = await response.json()
    return time.perf_counter() - started, len(body["rows"])


def percentiles(latencies: list[float]) -> tuple[float, float]:
    latencies = sorted(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return latencies[len(latencies) // 2], p99


async def main(args: argparse.Namespace) -> None:
    server = RedisServer()
    server.start()
    store = KpiStore.from_url(server.url_for(1))
    runner: web.AppRunner | None = None
    other: asyncio.subprocess.Process | None = None
    try:
        last = date.today() - timedelta(days=1)
        first = last - timedelta(days=args.days - 1)
        started = time.perf_counter()
        filled = 0
        for year in range(args.years):
            data = rows(
                args.channels,
                args.campaigns,
                first - timedelta(days=args.days * year),
                args.days,
            )
            await write_history(store, data)
            filled += len(data)
        print(f"filled {filled:,} day rows in {time.perf_counter() - started:.1f} s")
        client = store.single_client("the read API bench")
        memory, keys = await bucket_memory(client)
        print(f"day/month buckets and import records: {keys:,} keys, {memory / 2**20:.1f} MiB")

        app = build_app(
            store, CollectorRegistry(), days=store.days, currency="USD", read_token=None
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = (
            f"http://127.0.0.1:{port}/v1/report?from={first}&to={last}&group_by=campaign"
            "&compare=previous_period,previous_year"
        )
        latencies: list[float] = []
        before = await redis_usec(client)
        async with aiohttp.ClientSession() as session:
            for _ in range(args.requests):
                latency, count = await timed_gets(session, url)
                latencies.append(latency)
        after = await redis_usec(client)
        # The commandstats reads themselves are two INFO calls: negligible next to the reads.
        per_request_usec = (after[0] - before[0]) / args.requests
        per_request_calls = (after[1] - before[1]) / args.requests
        p50, p99 = percentiles(latencies)
        print(
            f"GET one year ({first} to {last}) by campaign, 2 comparisons: "
            f"{count} rows; p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
            f"over {args.requests} requests"
        )
        print(
            f"Redis per request: {per_request_usec / 1000:.1f} ms of CPU in "
            f"{per_request_calls:.0f} commands"
        )
        if args.compare_with is not None:
            other_port = free_port()
            other = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SERVE_OTHER, str(args.compare_with), server.url_for(1),
                str(other_port),
            )  # fmt: skip
            other_url = url.replace(f":{port}/", f":{other_port}/")
            ours: list[float] = []
            theirs: list[float] = []
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + 60
                while True:  # until the other process answers
                    try:
                        await timed_gets(session, other_url)
                        break
                    except aiohttp.ClientConnectionError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
                for _ in range(args.requests):
                    ours.append((await timed_gets(session, url))[0])
                    theirs.append((await timed_gets(session, other_url))[0])
            (ours_p50, ours_p99), (theirs_p50, theirs_p99) = percentiles(ours), percentiles(theirs)
            print(
                f"alternating with {args.compare_with}: this checkout p50 {ours_p50 * 1000:.0f} "
                f"ms, p99 {ours_p99 * 1000:.0f} ms; that one p50 {theirs_p50 * 1000:.0f} ms, "
                f"p99 {theirs_p99 * 1000:.0f} ms; ratio of p50s {ours_p50 / theirs_p50:.2f}"
            )
    finally:
        if other is not None:
            other.terminate()
            await other.wait()
        if runner is not None:
            await runner.cleanup()
        await store.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--years", type=int, default=2, help="periods of --days filled")
    parser.add_argument("--compare-with", type=Path, help="another checkout to alternate with")
    version = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; {version}")
    asyncio.run(main(parser.parse_args()))
