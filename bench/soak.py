"""Soak: a fixed pixel rate through the whole dev stack for a long time; freshness and memory.

    .venv/bin/python bench/soak.py [--duration 30m] [--rate 5000] [--connections 8]
                                   [--warmup 300] [--sample 5] [--broker-max-memory MB]

Starts `adpulse dev` on free loopback ports in a temporary directory (embedded Tansu broker,
redis-server, tracker, worker, exporter: the stack a developer runs), then for `--duration`
seconds:

- load: `--rate` pixels a second (clicks on a few channels, a browser User-Agent) on
  `--connections` keep-alive connections, each paced every 10 ms and pipelining what is due
  (pre-built request bytes, responses read in large chunks: the client's own CPU is a column);
- probe: one click on the channel `soak_probe` every 200 ms on a connection of its own, timed
  from its 200 answer to the end of the first exporter scrape whose
  `adpulse_events_total{channel="soak_probe"}` counts it; the exporter is scraped every 100 ms,
  so a figure is at most one poll (plus the scrape's own time) late;
- samples every `--sample` seconds: RSS and CPU of every process of the stack (the broker and
  redis-server included), Redis `used_memory`, the worker's consumer lag.

Prints a markdown row per minute (with the broker replacements the stack reported in it) and a
summary at the end: freshness p50/p99/max over the run, each process's RSS slope (least squares,
MB per minute) over the samples after `--warmup` seconds (and within its longest-lived process,
when the stack replaced it), and a PASS or FAIL line for "freshness p99 under 1 s in every
minute" (a minute in which no probe was seen fails, and so does a load that reached under 95%
of `--rate`: the rate achieved is stated), with the broker's peak RSS and when the slow probes
and the broker replacements came; the exit status is 1 on FAIL. It stops by
itself and listens on loopback only. Environment variables ADPULSE_* are passed to the stack
(e.g. ADPULSE_WORKER_BATCH_WITHIN); `--broker-max-memory` is the stack's own flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adpulse.cli.processes import free_port  # noqa: E402

PROBE_CHANNEL = "soak_probe"
LOAD_CHANNELS = ("paid_search", "paid_social", "email", "affiliate", "display", "podcast")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126"
TICK = 0.01
PROBE_INTERVAL = 0.2
POLL_INTERVAL = 0.1
START_DEADLINE = 120.0
COMPONENTS = ("broker", "redis", "tracker", "worker", "exporter", "dev")
PROBE_SERIES = re.compile(
    rb'^adpulse_events_total\{channel="' + PROBE_CHANNEL.encode() + rb'",type="click"\} (\S+)$',
    re.MULTILINE,
)
LAG_SERIES = re.compile(rb"^adpulse_worker_consumer_lag(?:\{[^}]*\})? (\S+)$", re.MULTILINE)
REPLACED = "replaced by an empty one"
"""What the stack's broker recycler prints when a replacement came about (once the old broker
and worker stopped); an attempt it undid says "not replaced" instead."""
FRESH_P99_LIMIT = 1.0
"""Seconds: the design's freshness target, p99 of every minute."""
DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smh]?)")


def duration_seconds(text: str) -> float:
    """Seconds of "1800", "1800s", "30m" or "1h"."""
    found = DURATION.fullmatch(text.strip())
    if found is None or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 1800, 30m or 1h")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


def request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: image/*\r\n\r\n"
    ).encode()


LOAD_REQUESTS = tuple(
    request(f"/p.gif?type=click&channel={channel}&campaign=soak{n}")
    for n, channel in enumerate(LOAD_CHANNELS)
)
PROBE_REQUEST = request(f"/p.gif?type=click&channel={PROBE_CHANNEL}&campaign=probe")
LOAD_CYCLE = b"".join(LOAD_REQUESTS) * 64
"""The load's requests in turn, pre-built: a burst is one slice of it (`burst`)."""
LOAD_OFFSETS = tuple(
    sum(len(LOAD_REQUESTS[n % len(LOAD_REQUESTS)]) for n in range(index))
    for index in range(len(LOAD_REQUESTS) * 64 + 1)
)
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*([0-9]+)", re.IGNORECASE)
RATE_SHORTFALL = 0.95
"""The share of `--rate` the load must reach over the run for a PASS: a client that could not
send the rate did not test it."""


def burst(first: int, count: int) -> bytes:
    """`count` load requests in turn from the `first`-th, without building them."""
    start = first % len(LOAD_REQUESTS)
    if start + count < len(LOAD_OFFSETS):
        return LOAD_CYCLE[LOAD_OFFSETS[start] : LOAD_OFFSETS[start + count]]
    return b"".join(LOAD_REQUESTS[(first + n) % len(LOAD_REQUESTS)] for n in range(count))


async def read_statuses(reader: asyncio.StreamReader, buffer: bytearray, count: int) -> int:
    """Read `count` pipelined responses (each with a Content-Length) in large chunks; how many
    were not 200. `buffer` keeps what was read past them for the next call."""
    errors = 0
    position = 0
    while count:
        end = buffer.find(b"\r\n\r\n", position)
        after = len(buffer) + 1  # a head not read whole yet: read more, as for a short body
        if end >= 0:
            length = CONTENT_LENGTH.search(buffer, position, end + 2)
            after = end + 4 + (int(length.group(1)) if length else 0)
        if after > len(buffer):
            del buffer[:position]
            position = 0
            chunk = await reader.read(1 << 16)
            if not chunk:
                raise ConnectionError("the tracker closed the load's connection")
            buffer += chunk
            continue
        if buffer[position + 9 : position + 12] != b"200":
            errors += 1
        position = after
        count -= 1
    del buffer[:position]
    return errors


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


@dataclass
class Minute:
    sent: int = 0
    errors: int = 0
    freshness: list[float] = field(default_factory=list)
    scrape: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    redis_memory: list[int] = field(default_factory=list)
    rss: dict[str, list[int]] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    replacements: int = 0
    """Broker replacements the stack reported in this minute (`REPLACED`)."""
    client_cpu: float = float("nan")
    """CPU seconds of this load generator (the bench itself) in the minute."""


@dataclass
class Soak:
    tracker: int
    exporter: int
    worker: int
    redis_url: str
    processes: dict[str, psutil.Process]
    rate: int
    connections: int
    duration: float
    sample: float
    output: Path
    """The stack's output, where it reports each broker replacement."""
    begin: float = 0.0
    minutes: list[Minute] = field(default_factory=list)
    rss_samples: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)
    """(seconds into the run, RSS, process id) per component."""
    probes: list[float] = field(default_factory=list)
    probes_seen: int = 0
    all_freshness: list[float] = field(default_factory=list)
    slow_probes: list[tuple[float, float]] = field(default_factory=list)
    """(seconds into the run it was answered, freshness) of each probe of 1 s or more."""
    new_broker_at: list[float] = field(default_factory=list)
    """Seconds into the run at which a broker process not seen before was first sampled: a
    replacement begun (also one the stack undid)."""
    broker_limit: int | None = None
    """The stack's --broker-max-memory in MB, None for its default."""
    broker_peak: int = 0
    """Bytes: the largest RSS of any broker process sampled (two run during a replacement)."""
    client_cpu: float = 0.0
    """CPU seconds of this process (the load, probe and sampler) over the run."""

    def minute(self, at: float | None = None) -> Minute:
        """The minute of the run that `at` (a monotonic time, default now) falls in."""
        index = int(((time.monotonic() if at is None else at) - self.begin) // 60)
        if at is not None:
            index = min(index, math.ceil(self.duration / 60) - 1)
        while len(self.minutes) <= index:
            self.minutes.append(Minute())
        return self.minutes[index]

    def running(self) -> bool:
        return time.monotonic() - self.begin < self.duration

    async def load(self, number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.tracker)
        share = self.rate / self.connections
        sent = 0
        choice = number
        buffer = bytearray()
        try:
            while self.running():
                due = int(share * (time.monotonic() - self.begin)) - sent
                if due > 0:
                    writer.write(burst(choice, due))
                    choice += due
                    minute = self.minute()
                    minute.errors += await read_statuses(reader, buffer, due)
                    minute.sent += due
                    sent += due
                await asyncio.sleep(TICK)
        finally:
            writer.close()

    async def probe(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.tracker)
        try:
            next_at = time.monotonic()
            while self.running():
                writer.write(PROBE_REQUEST)
                status, _body = await read_response(reader)
                if status == 200:
                    self.probes.append(time.monotonic())
                else:
                    self.minute().errors += 1
                next_at += PROBE_INTERVAL
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            writer.close()

    async def poll(self) -> None:
        """Scrape the exporter every 100 ms; each probe is fresh at the first scrape counting it."""
        # One connection per scrape: the exporter closes after each answer.
        scrape = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        base: int | None = None
        next_at = time.monotonic()
        # Probes still in flight when the load stops are waited for, a few seconds at most.
        while self.running() or (
            self.probes_seen < len(self.probes)
            and time.monotonic() < self.begin + self.duration + 5
        ):
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", self.exporter)
            writer.write(scrape)
            body = await reader.read()
            writer.close()
            done = time.monotonic()
            minute = self.minute()
            minute.scrape.append(done - started)
            found = PROBE_SERIES.search(body)
            count = int(float(found.group(1))) if found else 0
            if base is None:
                base = count  # probes of an earlier run in the same Redis would count
            for index in range(self.probes_seen, min(count - base, len(self.probes))):
                age = done - self.probes[index]
                # Charged to the minute the probe was answered in, tail probes to the last one.
                self.minute(self.probes[index]).freshness.append(age)
                self.all_freshness.append(age)
                if age >= FRESH_P99_LIMIT:
                    self.slow_probes.append((self.probes[index] - self.begin, age))
            self.probes_seen = max(self.probes_seen, min(count - base, len(self.probes)))
            next_at += POLL_INTERVAL
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def sampler(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        # CPU seconds per process id, at the minute's start and when last seen: a replaced
        # broker or worker is a new process, and a minute's CPU is that of all of them.
        every = components(self.processes["dev"])
        at_start = {p.pid: cpu(p) for _name, p in every}
        seen: dict[int, tuple[str, float]] = {}
        last_minute = 0
        brokers = {self.processes["broker"].pid}
        said = StackOutput(self.output)
        me = psutil.Process()
        client_cpu = cpu(me)
        while self.running():
            await asyncio.sleep(self.sample)
            now = time.monotonic() - self.begin
            minute = self.minute()
            every = components(self.processes["dev"])
            self.processes = dict(every)
            for name, process in every:
                seen[process.pid] = (name, cpu(process) or seen.get(process.pid, (name, 0.0))[1])
                if name == "broker":
                    with contextlib.suppress(psutil.Error):
                        self.broker_peak = max(self.broker_peak, process.memory_info().rss)
            for name, process in self.processes.items():
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                minute.rss.setdefault(name, []).append(rss)
                self.rss_samples.setdefault(name, []).append((now, rss, process.pid))
            for name, process in every:
                if name == "broker" and process.pid not in brokers:
                    brokers.add(process.pid)
                    self.new_broker_at.append(now)
            # A new broker process may yet be stopped again (the stack undoes a replacement
            # whose worker did not join): only the stack's own report counts one.
            minute.replacements += sum(REPLACED in line for line in said.new_lines())
            info = await asyncio.to_thread(client.info, "memory")
            minute.redis_memory.append(int(info["used_memory"]))
            with contextlib.suppress(OSError):  # the worker replaced with its broker
                port = metrics_port(self.processes.get("worker")) or self.worker
                minute.lag.append(await asyncio.to_thread(worker_lag, port))
            index = int(now // 60)
            if index != last_minute:
                at_start, seen, client_cpu = self.close_minute(
                    last_minute, every, at_start, seen, client_cpu
                )
                last_minute = index
        if last_minute < len(self.minutes) and not self.minutes[last_minute].cpu_seconds:
            # The run's last minute ends with the run, before the sampler's next turn.
            self.close_minute(last_minute, every, at_start, seen, client_cpu)
        client.close()

    def close_minute(
        self,
        index: int,
        every: list[tuple[str, psutil.Process]],
        at_start: dict[int, float],
        seen: dict[int, tuple[str, float]],
        client_cpu: float,
    ) -> tuple[dict[int, float], dict[int, tuple[str, float]], float]:
        """Charge CPU seconds to the minute that just ended (every process of a component seen
        in it, a retired one up to its last sample) and print its row; the counters for the
        next minute."""
        ended = self.minutes[index]
        for pid, (name, total) in seen.items():
            spent = total - at_start.get(pid, 0.0)
            ended.cpu_seconds[name] = ended.cpu_seconds.get(name, 0.0) + spent
        alive = {process.pid for _name, process in every}
        at_start = {pid: total for pid, (_name, total) in seen.items() if pid in alive}
        seen = {pid: entry for pid, entry in seen.items() if pid in alive}
        ended.client_cpu = cpu(psutil.Process()) - client_cpu
        print_row(index, ended, self.duration, flush=True)
        return at_start, seen, client_cpu + ended.client_cpu

    async def run(self) -> None:
        me = psutil.Process()
        began = cpu(me)
        try:
            await self.run_tasks()
        finally:
            self.client_cpu = cpu(me) - began

    async def wait_counting(self) -> float:
        """Seconds until a first probe is counted: the run's first minute must not charge any
        of the stack's start-up to freshness (the stack says it runs once its worker has joined
        its group; a probe counted shows the whole path works)."""
        began = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.tracker)
        try:
            writer.write(PROBE_REQUEST)
            await read_response(reader)
        finally:
            writer.close()
        while time.monotonic() < began + START_DEADLINE:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.exporter)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            body = await reader.read()
            writer.close()
            if PROBE_SERIES.search(body):
                return time.monotonic() - began
            await asyncio.sleep(POLL_INTERVAL)  # the worker's join, polled with a deadline
        raise SystemExit(f"the stack counted no probe within {START_DEADLINE:.0f} s")

    async def run_tasks(self) -> None:
        waited = await self.wait_counting()
        print(f"the stack counted a first probe {waited:.1f} s after it said it runs\n")
        print(header(), flush=True)
        self.begin = time.monotonic()
        tasks = [
            asyncio.create_task(self.load(n)) for n in range(self.connections if self.rate else 0)
        ]
        tasks += [asyncio.create_task(self.probe()), asyncio.create_task(self.poll())]
        tasks.append(asyncio.create_task(self.sampler()))
        await asyncio.gather(*tasks)


class StackOutput:
    """The lines the stack printed since the last look (its output file, read on from where
    the last look stopped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            read = handle.read()
        self.offset += len(read)
        *lines, self.partial = (self.partial + read).split(b"\n")
        return [line.decode(errors="replace") for line in lines]


def cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def metrics_port(worker: psutil.Process | None) -> int | None:
    """The `--port` of a worker process: a replacement's worker listens on a port of its own."""
    try:
        argv = worker.cmdline() if worker is not None else []
    except psutil.Error:
        return None
    return int(argv[argv.index("--port") + 1]) if "--port" in argv[:-1] else None


def worker_lag(port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return sum(float(value) for value in LAG_SERIES.findall(body))


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def slope_mb_per_minute(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return float("nan")
    xs = [t / 60 for t, _ in samples]
    ys = [rss / 1e6 for _, rss in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def header() -> str:
    processes = " | ".join(f"{name} MB / CPU%" for name in COMPONENTS[:5])
    return (
        f"| min | pixels/s | errors | fresh p50 ms | p99 ms | max ms | scrape ms | lag | "
        f"redis used MB | {processes} | broker replaced | load client CPU% |\n|"
        + "---|"
        * (9 + 5 + 2)
    )


def print_row(index: int, minute: Minute, duration: float, flush: bool = False) -> None:
    """One minute's markdown row; the run's last minute may be shorter than 60 s."""
    seconds = max(1.0, min(60.0, duration - index * 60))

    def ms(value: float) -> str:
        return "-" if value != value else f"{value * 1000:.0f}"

    cells = [
        str(index),
        f"{minute.sent / seconds:,.0f}",
        str(minute.errors),
        ms(percentile(minute.freshness, 0.5)),
        ms(percentile(minute.freshness, 0.99)),
        ms(max(minute.freshness, default=float("nan"))),
        ms(percentile(minute.scrape, 0.5)),
        f"{max(minute.lag, default=0):.0f}",
        f"{max(minute.redis_memory, default=0) / 1e6:.1f}",
    ]
    for name in COMPONENTS[:5]:
        rss = minute.rss.get(name, [0])[-1] / 1e6
        share = minute.cpu_seconds.get(name, float("nan")) / seconds * 100
        cells.append(f"{rss:.0f} / {share:.0f}")
    cells.append(str(minute.replacements))
    cells.append(f"{minute.client_cpu / seconds * 100:.0f}")
    print("| " + " | ".join(cells) + " |", flush=flush)


def component_of(process: psutil.Process) -> str | None:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return None
    if not argv:
        return None
    if "tansu" in Path(argv[0]).name:
        return "broker"
    if "redis-server" in Path(argv[0]).name:
        return "redis"
    if len(argv) > 3 and argv[1:3] == ["-m", "adpulse"] and argv[3] in COMPONENTS:
        return argv[3]
    return None


def components(dev: psutil.Process) -> list[tuple[str, psutil.Process]]:
    """Every process of the stack with its component, oldest first (during a replacement two
    brokers and two workers run)."""
    found = [("dev", dev)]
    children: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        children = dev.children(recursive=True)
    for child in sorted(children, key=started_at):
        name = component_of(child)
        if name:
            found.append((name, child))
    return found


def started_at(process: psutil.Process) -> float:
    try:
        return process.create_time()
    except psutil.Error:
        return 0.0


def discover(dev: psutil.Process) -> dict[str, psutil.Process]:
    """The newest process of each component, found again each time: some get replaced."""
    return dict(components(dev))


def start_stack(
    workdir: Path, ports: dict[str, int], simulate: float, broker_max_memory: int | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    output = workdir / "dev.out"
    env = {key: value for key, value in os.environ.items() if key not in {"ADPULSE_KAFKA",
           "ADPULSE_REDIS_URL", "ADPULSE_TRACKER_PORT", "ADPULSE_DEV_DIR"}}  # fmt: skip
    env["PYTHONPATH"] = str(ROOT)
    # Channels outside the default set are counted as "unlisted" unless listed: the probe's
    # channel must be a series of its own.
    listed = [env.get("ADPULSE_CHANNELS", ""), PROBE_CHANNEL, *LOAD_CHANNELS]
    env["ADPULSE_CHANNELS"] = ",".join(name for name in listed if name)
    argv = [
        sys.executable, "-m", "adpulse", "dev", "--host", "127.0.0.1",
        "--port", str(ports["tracker"]), "--exporter-port", str(ports["exporter"]),
        "--worker-port", str(ports["worker"]), "--kafka-port", str(ports["broker"]),
        "--redis-port", str(ports["redis"]), "--data-dir", str(workdir / "dev"),
        "--log-level", "WARNING",
    ]  # fmt: skip
    if simulate:
        argv += ["--simulate", "--rate", str(simulate)]
    if broker_max_memory is not None:
        argv += ["--broker-max-memory", str(broker_max_memory)]
    with output.open("wb") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + START_DEADLINE
    while "adpulse dev is running" not in output.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"adpulse dev did not start; see {output}:\n{output.read_text()}")
        time.sleep(0.2)
    return process, output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration",
        type=duration_seconds,
        default=1800.0,
        help="seconds, or with a unit: 30m, 1h (default 30m)",
    )
    parser.add_argument(
        "--rate", type=int, default=5000, help="pixels per second, 0 for none (default 5000)"
    )
    parser.add_argument(
        "--simulate",
        type=float,
        default=0.0,
        help="also run the stack's simulator at this many visits per second (default: off)",
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before the slope")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--broker-max-memory",
        type=int,
        default=None,
        metavar="MB",
        help="the stack's --broker-max-memory (default: the stack's own, 256; 0 never replaces)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory")
    args = parser.parse_args()
    if args.rate < 0 or args.simulate < 0 or args.duration <= 0 or args.connections <= 0:
        parser.error(
            "--duration and --connections must be positive, --rate and --simulate not negative"
        )
    # A SIGTERM stops the stack too (the `finally` below runs).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="adpulse-soak-"))
    ports = {name: free_port() for name in COMPONENTS[:5]}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at start, "
        f"Python {platform.python_version()}"
    )
    tuned = {k: v for k, v in os.environ.items() if k.startswith("ADPULSE_WORKER_")}
    print(f"stack: adpulse dev in {workdir}; worker settings from the environment: {tuned or '-'}")
    stack, output = start_stack(workdir, ports, args.simulate, args.broker_max_memory)
    passed = False
    try:
        found = discover(psutil.Process(stack.pid))
        missing = set(COMPONENTS) - set(found)
        if missing:
            raise SystemExit(f"processes not found: {', '.join(sorted(missing))}")
        soak = Soak(
            tracker=ports["tracker"],
            exporter=ports["exporter"],
            worker=ports["worker"],
            redis_url=f"redis://127.0.0.1:{ports['redis']}/0",
            processes=found,
            rate=args.rate,
            connections=args.connections,
            duration=args.duration,
            sample=args.sample,
            output=output,
            broker_limit=args.broker_max_memory,
        )
        simulated = f" and the simulator at {args.simulate:g} visits/s" if args.simulate else ""
        print(
            f"\n{args.rate:,} pixels/s{simulated} for {args.duration:.0f} s; CPU% is of one core\n"
        )
        run_client(soak.run())
        if stack.poll() is not None:
            print(f"the stack stopped during the run; see {output}")
        last = len(soak.minutes) - 1
        if last >= 0 and not soak.minutes[last].cpu_seconds and soak.minutes[last].sent:
            print_row(last, soak.minutes[last], soak.duration)
        passed = summarise(soak, args.warmup)
        replaced = [line.strip() for line in output.read_text().splitlines() if REPLACED in line]
        print(f"broker replacements by the dev stack: {len(replaced)}")
        for line in replaced:
            print(f"  {line}")
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(90)
        except subprocess.TimeoutExpired:
            stack.kill()
        if args.keep:
            print(f"stack directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if passed else 1


def run_client(main: Coroutine[Any, Any, None]) -> None:
    """Run the load, probe and sampler on uvloop when it is installed: at 10,000 pixels/s the
    client's own CPU is part of what the shared machine has to give."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def p99_text(minute: Minute) -> str:
    if not minute.freshness:
        return "no probe seen"
    return f"p99 {percentile(minute.freshness, 0.99) * 1000:,.0f} ms"


def summarise(soak: Soak, warmup: float) -> bool:
    """Print the run's summary; whether freshness p99 stayed under 1 s in every minute."""
    fresh = soak.all_freshness
    sent = sum(m.sent for m in soak.minutes)
    errors = sum(m.errors for m in soak.minutes)
    minutes = soak.minutes[: math.ceil(soak.duration / 60)]  # not the probes' tail
    over = [
        index
        for index, m in enumerate(minutes)
        if not m.freshness or percentile(m.freshness, 0.99) >= FRESH_P99_LIMIT
    ]
    # The rows above were printed as each minute ended, before the probes answered in its last
    # seconds were seen: the table to keep is this one.
    print("\nper minute, every probe in the minute it was answered in (the table to keep):\n")
    print(header())
    for index, minute in enumerate(minutes):
        print_row(index, minute, soak.duration)
    achieved = sent / soak.duration
    print(
        f"\nsummary: {sent:,} pixels ({achieved:,.0f}/s achieved of {soak.rate:,}/s asked), "
        f"{errors} not 200; "
        f"{len(soak.probes)} probes, {soak.probes_seen} seen; freshness "
        f"p50 {percentile(fresh, 0.5) * 1000:.0f} ms, p99 {percentile(fresh, 0.99) * 1000:.0f} ms, "
        f"max {max(fresh, default=float('nan')) * 1000:.0f} ms; "
        f"minutes with p99 of 1 s or more (or no probe seen): {len(over)} of {len(minutes)}"
    )
    print(f"RSS slope after {warmup:.0f} s (least squares, MB/minute):")
    for name in COMPONENTS:
        kept = [(t, rss, pid) for t, rss, pid in soak.rss_samples.get(name, []) if t >= warmup]
        if not kept:
            continue
        samples = [(t, rss) for t, rss, _pid in kept]
        first, last = samples[0][1] / 1e6, samples[-1][1] / 1e6
        line = (
            f"  {name:<9} {slope_mb_per_minute(samples):+7.2f} MB/min  "
            f"({first:.0f} MB -> {last:.0f} MB)"
        )
        pids = list(dict.fromkeys(pid for _t, _rss, pid in kept))
        if len(pids) > 1:
            # A replaced broker or worker starts small again: its own slope says more.
            runs = [[(t, rss) for t, rss, pid in kept if pid == p] for p in pids]
            longest = max(runs, key=lambda run: run[-1][0] - run[0][0])
            line += (
                f"; {len(pids)} processes, the longest-lived "
                f"{slope_mb_per_minute(longest):+.2f} MB/min over "
                f"{(longest[-1][0] - longest[0][0]) / 60:.1f} min"
            )
        print(line)
    peak = soak.broker_peak
    limit = "the stack's default" if soak.broker_limit is None else f"{soak.broker_limit} MB"
    print(
        f"broker peak RSS {peak / 1e6:.0f} MB over the run (replaced past --broker-max-memory: "
        f"{limit}, checked every 5 s)"
    )
    print(
        f"load generator (this process): {soak.client_cpu / soak.duration * 100:.0f}% of a core "
        "on average"
    )
    if soak.slow_probes:
        # When the slow ones were answered, beside when the stack replaced its broker.
        shown = ", ".join(f"{at:.1f} s ({age:.2f} s)" for at, age in soak.slow_probes[:20])
        print(f"probes of 1 s or more, answered at (freshness): {shown}")
    if soak.new_broker_at:
        seen = ", ".join(f"{at:.0f} s" for at in soak.new_broker_at)
        print(f"new broker seen (sampled every {soak.sample:g} s) at: {seen}")
    recycled = [index for index, m in enumerate(minutes) if m.replacements]
    if soak.rate and achieved < RATE_SHORTFALL * soak.rate:
        print(
            f"FAIL: the load reached {achieved:,.0f} pixels/s, under {RATE_SHORTFALL:.0%} of the "
            f"{soak.rate:,}/s asked: the run did not test the rate (see the load client CPU%)"
        )
        return False
    if over:
        shown = ", ".join(
            f"{index} ({p99_text(minutes[index])}"
            f"{', broker replaced' if index in recycled else ''})"
            for index in over
        )
        print(f"FAIL: freshness p99 of 1 s or more (or no probe seen) in minutes {shown}")
        return False
    print(f"PASS: freshness p99 under 1 s in every minute ({len(minutes)} of {len(minutes)})")
    return True


if __name__ == "__main__":
    sys.exit(main())
