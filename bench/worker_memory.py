"""What the worker's memory holds under a steady load: RSS over time and tracemalloc's growth.

    .venv/bin/python bench/worker_memory.py [--rate 2500] [--duration 900] [--snapshot 60]
                                            [--warmup 300] [--frames 12]

Starts the embedded Tansu broker and a private redis-server (tests/services.py), then
`adpulse worker` (this file runs it, `--child`), tracing its allocations with tracemalloc from
`--trace-from` seconds on (`--frames` frames a trace), and produces the worker benchmark's
event mix (bench/worker_throughput.py) at `--rate` events a second for `--duration` seconds.
The worker writes a tracemalloc snapshot every `--snapshot` seconds; this side samples its RSS
every 10 s. At the end it prints, per snapshot, the worker's RSS and the memory tracemalloc
traces (Python's own allocations since tracing began), the slope of both after `--warmup`
seconds, and the allocation sites that grew most between the first snapshot after the warm-up
and the last (by the traceback's last frames). `--untraced` runs the worker as is, for its RSS
alone: tracemalloc slows the worker down and adds its own memory to the RSS (the traced figure
is unaffected); the slope of the traced memory is the one that says whether Python objects grow.
"""

from __future__ import annotations

import argparse
import asyncio
import linecache
import os
import pickle
import runpy
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis
from aiokafka import AIOKafkaProducer

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from worker_throughput import COUPONS, HASH_KEY, PARTITIONS, applied, event_mix  # noqa: E402

from adpulse.core.event import EventRules, parse_event, partition_key  # noqa: E402
from tests.kafka_helpers import create_topic  # noqa: E402
from tests.services import KafkaBroker, RedisServer, free_port  # noqa: E402


def child(directory: Path, start: float, interval: float, frames: int, argv: list[str]) -> None:
    """Run `adpulse <argv>` in this process; from `start` seconds on, trace its allocations
    and take a tracemalloc snapshot every `interval` seconds. Tracing from the start would
    slow the imports down tenfold and trace them, which is not what grows."""
    began = time.monotonic()

    def snapshots() -> None:
        time.sleep(start)
        tracemalloc.start(frames)
        number = 0
        while True:
            number += 1
            time.sleep(max(0.0, began + start + number * interval - time.monotonic()))
            snapshot = tracemalloc.take_snapshot()
            traced, _peak = tracemalloc.get_traced_memory()
            path = directory / f"snapshot-{number:04d}.pickle"
            with path.open("wb") as handle:
                pickle.dump((start + number * interval, traced, snapshot), handle)

    threading.Thread(target=snapshots, daemon=True, name="snapshots").start()
    sys.argv = ["adpulse", *argv]
    runpy.run_module("adpulse", run_name="__main__", alter_sys=True)


async def load(bootstrap: str, topic: str, rate: int, seconds: float) -> int:
    """Produce the mix at `rate` events a second for `seconds`; the number sent."""
    rules = EventRules(hash_key=HASH_KEY)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    payloads = event_mix(int(rate * seconds) + rate, seed=int(time.time()))
    begin = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - begin < seconds:
            due = int(rate * (time.monotonic() - begin)) - sent
            for _ in range(due):
                raw = next(payloads)
                event = parse_event(raw, rules=rules, received_at=datetime.now(UTC))
                await producer.send(topic, event.to_wire(), key=partition_key(event))
            sent += max(due, 0)
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def slope(points: list[tuple[float, float]]) -> float:
    """Least squares, units of y per minute (x in seconds)."""
    if len(points) < 2:
        return float("nan")
    xs = [t / 60 for t, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def where(trace: tracemalloc.Traceback, depth: int) -> str:
    lines = []
    for frame in list(trace)[-depth:]:
        name = frame.filename.replace(str(ROOT) + "/", "")
        if "site-packages/" in name:
            name = name.split("site-packages/", 1)[1]
        source = linecache.getline(frame.filename, frame.lineno).strip()[:70]
        lines.append(f"{name}:{frame.lineno} {source}")
    return "\n      ".join(lines)


def report(directory: Path, warmup: float, rss: list[tuple[float, int]], top: int) -> None:
    paths = sorted(directory.glob("snapshot-*.pickle"))
    loaded = []
    for path in paths:
        with path.open("rb") as handle:
            loaded.append(pickle.load(handle))  # written by this script
    if not loaded:
        print("\n| s | worker RSS MB |\n|---|---|")
        for at, size in rss[5::6]:  # a minute apart
            print(f"| {at:.0f} | {size / 1e6:.1f} |")
        late = [(t, r / 1e6) for t, r in rss if t >= warmup]
        print(f"\nafter {warmup:.0f} s: RSS slope {slope(late):+.3f} MB/min")
        return
    print("\n| s | worker RSS MB | traced MB |\n|---|---|---|")
    by_time = dict(rss)
    for at, traced, _snapshot in loaded:
        near = min(by_time, key=lambda t: abs(t - at)) if by_time else None
        shown = f"{by_time[near] / 1e6:.1f}" if near is not None else "-"
        print(f"| {at:.0f} | {shown} | {traced / 1e6:.2f} |")
    late_rss = [(t, r / 1e6) for t, r in rss if t >= warmup]
    late_traced = [(t, traced / 1e6) for t, traced, _s in loaded if t >= warmup]
    print(
        f"\nafter {warmup:.0f} s: RSS slope {slope(late_rss):+.3f} MB/min, "
        f"traced {slope(late_traced):+.3f} MB/min"
    )
    later = [entry for entry in loaded if entry[0] >= warmup]
    if len(later) < 2:
        print("too few snapshots after the warm-up to compare")
        return
    first, last = later[0], later[-1]
    for depth in (1, 6):
        print(f"\ngrowth {first[0]:.0f} s -> {last[0]:.0f} s by the last {depth} frame(s):")
        stats = last[2].compare_to(first[2], "traceback" if depth > 1 else "lineno")
        listed = 0
        for stat in stats:
            if stat.size_diff <= 0:
                continue
            print(
                f"  {stat.size_diff / 1e3:+9.1f} kB {stat.count_diff:+7d} blocks "
                f"(now {stat.size / 1e3:.1f} kB)\n      {where(stat.traceback, depth)}"
            )
            listed += 1
            if listed == top:
                break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=2500)
    parser.add_argument("--duration", type=float, default=900.0)
    parser.add_argument("--snapshot", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=300.0)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument(
        "--trace-from", type=float, default=120.0, help="seconds before tracing starts"
    )
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--untraced", action="store_true", help="RSS only, no tracemalloc")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        directory, start, interval, frames, *argv = args.child
        child(Path(directory), float(start), float(interval), int(frames), argv)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="adpulse-worker-memory-"))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; files in {workdir}")
    broker, server = KafkaBroker(), RedisServer()
    try:
        broker.start()
        server.start()
        topic = f"adpulse.events.memory{uuid.uuid4().hex[:6]}"
        asyncio.run(create_topic(broker.bootstrap, topic, PARTITIONS))
        url = server.url_for(1)
        client = redis.Redis.from_url(url)
        client.hset("adpulse:coupons", mapping=COUPONS)
        worker = [
            "worker", "--kafka", broker.bootstrap, "--topic", topic, "--redis-url", url,
            "--port", str(free_port()), "--log-level", "WARNING",
        ]  # fmt: skip
        if args.untraced:
            argv = [sys.executable, "-m", "adpulse", *worker]
        else:
            argv = [sys.executable, __file__, "--child", str(workdir), str(args.trace_from),
                    str(args.snapshot), str(args.frames), *worker]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (workdir / "worker.log").open("wb") as log:
            process = psutil.Popen(argv, stdout=log, stderr=log, env=env, cwd=ROOT)
        rss: list[tuple[float, int]] = []
        stop = threading.Event()
        begin = time.monotonic()

        def sample() -> None:
            while not stop.wait(10.0):
                rss.append((time.monotonic() - begin, process.memory_info().rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            sent = asyncio.run(load(broker.bootstrap, topic, args.rate, args.duration))
            stop.set()
            sampler.join()
            print(f"sent {sent:,} events; the worker counted {applied(client):,} so far")
        finally:
            process.terminate()
            process.wait(60)
        report(workdir, args.warmup, rss, args.top)
    finally:
        broker.close()
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
