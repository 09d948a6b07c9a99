"""`adpulse dev --simulate` left running: memory of every process, minute by minute.

    .venv/bin/python bench/dev_hour.py [--duration 3600] [--interval 60] [--visits N]

Starts `adpulse dev --simulate` (the simulator at its default rate, or `--visits` visits a
second) on free loopback ports in a temporary directory, as a developer runs it, and every
`--interval` seconds prints a markdown row: RSS and CPU (share of one core over the interval) of
the broker, redis-server, tracker, worker and exporter, Redis `used_memory`, how many times the
stack has replaced its broker so far, the worker's consumer lag, and the events counted (the
exporter's `adpulse_events_total`, read from Redis, so a worker restart does not reset it) with
their rate over the interval. At the end: each process's RSS slope after `--warmup` seconds.
Unlike bench/soak.py it sends no load of its own: the simulator is the only traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from soak import (  # noqa: E402
    COMPONENTS,
    REPLACED,
    START_DEADLINE,
    cpu,
    discover,
    slope_mb_per_minute,
    worker_lag,
)

from adpulse.cli.processes import free_port  # noqa: E402

EVENTS_SERIES = re.compile(rb"^adpulse_events_total\{[^}]*\} (\S+)$", re.MULTILINE)


def events_counted(port: int) -> float:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return sum(float(value) for value in EVENTS_SERIES.findall(body))


def start(workdir: Path, ports: dict[str, int], visits: float | None) -> subprocess.Popen[bytes]:
    output = workdir / "dev.out"
    env = {k: v for k, v in os.environ.items() if k not in {"ADPULSE_KAFKA", "ADPULSE_REDIS_URL",
           "ADPULSE_TRACKER_PORT", "ADPULSE_DEV_DIR"}}  # fmt: skip
    argv = [
        sys.executable, "-m", "adpulse", "dev", "--simulate", "--host", "127.0.0.1",
        "--port", str(ports["tracker"]), "--exporter-port", str(ports["exporter"]),
        "--worker-port", str(ports["worker"]), "--kafka-port", str(ports["broker"]),
        "--redis-port", str(ports["redis"]), "--data-dir", str(workdir / "dev"),
    ]  # fmt: skip
    if visits is not None:
        argv += ["--rate", f"{visits:g}"]
    with output.open("wb") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_DEADLINE
    while "adpulse dev is running" not in output.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"adpulse dev did not start; see {output}:\n{output.read_text()}")
        time.sleep(0.5)
    return process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds (default 3600)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between rows")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before the slope")
    parser.add_argument("--visits", type=float, default=None, help="simulator visits a second")
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="adpulse-dev-hour-"))
    ports = {name: free_port() for name in COMPONENTS[:5]}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.node()} {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at start, "
        f"Python {platform.python_version()}; stack in {workdir}",
        flush=True,
    )
    stack = start(workdir, ports, args.visits)
    output = workdir / "dev.out"
    client = redis.Redis.from_url(f"redis://127.0.0.1:{ports['redis']}/0")
    names = COMPONENTS[:5]
    print(
        "\n| min | "
        + " | ".join(f"{n} MB / CPU%" for n in names)
        + " | redis used MB | broker replaced (so far) | lag | events counted | events/s |\n|"
        + "---|" * (len(names) + 6),
        flush=True,
    )
    samples: dict[str, list[tuple[float, int]]] = {}
    try:
        begin = time.monotonic()
        processes = discover(psutil.Process(stack.pid))
        brokers = [processes["broker"].pid] if "broker" in processes else []
        last_cpu = {p.pid: cpu(p) for p in processes.values()}
        last_events, last_at = 0.0, begin
        with contextlib.suppress(OSError):
            last_events = events_counted(ports["exporter"])
        tick = 0
        while time.monotonic() - begin < args.duration:
            tick += 1
            time.sleep(max(0.0, begin + tick * args.interval - time.monotonic()))
            now = time.monotonic()
            processes = discover(psutil.Process(stack.pid))
            cells = [f"{(now - begin) / 60:.0f}"]
            current: dict[int, float] = {}
            for name in names:
                process = processes.get(name)
                if process is None:
                    cells.append("- / -")
                    continue
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    cells.append("- / -")
                    continue
                total = cpu(process)
                current[process.pid] = total
                share = (total - last_cpu.get(process.pid, 0.0)) / (now - last_at) * 100
                samples.setdefault(name, []).append((now - begin, rss))
                cells.append(f"{rss / 1e6:.0f} / {share:.0f}")
            try:
                used = int(client.info("memory")["used_memory"]) / 1e6
                cells.append(f"{used:.1f}")
            except redis.RedisError:
                cells.append("-")
            # A new broker process is a replacement (the stack says so only once the worker
            # is back, seconds later).
            broker = processes.get("broker")
            if broker is not None and broker.pid not in brokers:
                brokers.append(broker.pid)
            cells.append(str(len(brokers) - 1))
            try:
                cells.append(f"{worker_lag(ports['worker']):.0f}")
            except OSError:
                cells.append("-")
            try:
                events = events_counted(ports["exporter"])
                cells += [f"{events:,.0f}", f"{(events - last_events) / (now - last_at):,.1f}"]
                last_events = events
            except OSError:
                cells += ["-", "-"]
            last_cpu, last_at = current, now
            print("| " + " | ".join(cells) + " |", flush=True)
            if stack.poll() is not None:
                print(f"the stack stopped; see {output}")
                break
        print(f"\nRSS slope after {args.warmup:.0f} s (least squares, MB/minute):")
        for name in names:
            kept = [(t, rss) for t, rss in samples.get(name, []) if t >= args.warmup]
            if len(kept) >= 2:
                print(
                    f"  {name:<9} {slope_mb_per_minute(kept):+7.2f} MB/min  "
                    f"({kept[0][1] / 1e6:.0f} MB -> {kept[-1][1] / 1e6:.0f} MB)"
                )
        lines = output.read_text(errors="replace").splitlines()
        replaced = [line.strip() for line in lines if REPLACED in line]
        print(f"broker replacements: {len(replaced)}")
        for line in replaced:
            print(f"  {line}")
    finally:
        client.close()
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(90)
        except subprocess.TimeoutExpired:
            stack.kill()
        if args.keep:
            print(f"stack directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
