"""CPU time a pixel costs the tracker, against a bare asyncio GIF server: figures that a shared,
busy machine disturbs far less than requests/s.

    .venv/bin/python bench/tracker_cpu.py wrk [--rounds 12] [--seconds 2] [--connections 50]
    .venv/bin/python bench/tracker_cpu.py inproc [--rounds 7] [--requests 50000] [--callgrind]
        [--request pixel|post|batch]

`wrk`: the Tansu broker, the tracker (write-ahead log `process`, its default) and the bare
servers of bench/bare_gif_server.py start once and stay up; each server is pinned to one CPU,
wrk and the broker to the other(s). Round after round, wrk loads each server in turn for
`--seconds` (the order alternates every round), and the server's own CPU time (user and system,
from /proc/PID/stat) over that load is divided by the requests wrk completed: microseconds of
CPU per request. The ratio bare/tracker of one round is the tracker's requests per CPU-second
against the bare server's (DESIGN.md's target: at least 0.5 against the asyncio streams
server). Printed: each round, then the median and the spread (lowest, highest) of the rounds.
Requests/s as wrk saw them are printed too, but on a busy machine wrk cannot load a server and
they mean little; CPU per request rises a little when a server is not saturated (fewer
requests share each turn of its event loop), for all of them alike.

`inproc`: no sockets, no broker, no kernel: the tracker's HTTP protocol objects
(`tracker.http.Connection`) are fed the bench's pixel request (or with `--request`, its event
POSTed alone, or a POST of a batch of conversions), pre-built as bytes, over fake
transports, `--connections` of them per turn of the event loop (uvloop, as the tracker), with
the real app, publisher and write-ahead log (`process`; its records acknowledged after every
round instead of sent). Process CPU time per request, the median of `--rounds`: the Python
path alone (HTTP layer, pixel, record, group commit), steady enough to compare two trees
within a few percent (alternate with `PYTHONPATH=<other tree>/ python <this script>`, run from
outside the tree). `--profile` writes a cProfile of one round to the path given.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import cpu_times
from tracker_pixels import (
    PIXEL,
    ROOT,
    USER_AGENT,
    free_port,
    pinned,
    server_cpus,
    start_broker,
    wait_http,
    wait_ready,
    wrk,
)

BASELINES = {
    "streams": "bare asyncio streams",
    "protocol": "bare uvloop Protocol",
}


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} "
        f"(lowest {min(values):.2f}, highest {max(values):.2f})"
    )


def run_wrk(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/tracker_cpu.py wrk needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    server_cpu, load_cpu = server_cpus()
    broker, bootstrap = start_broker(load_cpu)
    spool = Path(tempfile.mkdtemp(prefix="adpulse-bench-cpu-"))
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(
        name: str,
        command: list[str],
        port: int,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: pinned(server_cpu),
        )
        servers[name] = (process, port)

    try:
        for kind in args.baselines:
            port = free_port()
            start(
                BASELINES[kind],
                [sys.executable, str(ROOT / "bench" / "bare_gif_server.py"), str(port), kind],
                port,
            )
        trackers = ["tracker"]
        for number, tree in enumerate([None, *args.compare]):
            port = free_port()
            name = "tracker" if tree is None else f"tracker@{tree}"
            env = {**os.environ, "ADPULSE_LOG_LEVEL": "WARNING"}
            if tree is not None:
                # `-m` imports from the working directory first, then PYTHONPATH, then the
                # editable install of this tree.
                env["PYTHONPATH"] = tree
                trackers.append(name)
            start(
                name,
                [sys.executable, "-m", "adpulse", "tracker", "--port", str(port), "--kafka",
                 bootstrap, "--spool-dir", str(spool / str(number)), "--durability", "process"],
                port,
                env,
                tree,
            )  # fmt: skip
        names = list(servers)
        for name in names:
            url = f"http://127.0.0.1:{servers[name][1]}{PIXEL}"
            wait_http(url, timeout=30)
            if name in trackers:
                wait_ready(f"http://127.0.0.1:{servers[name][1]}")
            wrk(url, 2, args.connections, load_cpu)  # warm-up
        # name -> per round (µs CPU per request, user µs, system µs, requests/s)
        figures: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in names}
        # (tracker, other server) -> per round, the tracker's requests per CPU-second over the
        # other's.
        ratios: dict[tuple[str, str], list[float]] = {
            (tracker, name): []
            for tracker in trackers
            for name in names
            if name != tracker and (tracker == "tracker" or name not in trackers)
        }
        for number in range(args.rounds):
            order = names if number % 2 == 0 else names[::-1]
            row: dict[str, tuple[float, float, float, float]] = {}
            for name in order:
                process, port = servers[name]
                url = f"http://127.0.0.1:{port}{PIXEL}"
                user0, system0 = cpu_times(process.pid)
                rps, _, _, total = wrk(url, args.seconds, args.connections, load_cpu)
                user1, system1 = cpu_times(process.pid)
                user = (user1 - user0) / total * 1e6
                system = (system1 - system0) / total * 1e6
                row[name] = (user + system, user, system, rps)
                figures[name].append(row[name])
            for tracker, name in ratios:
                ratios[tracker, name].append(row[name][0] / row[tracker][0])
            print(
                f"round {number + 1}: "
                + "; ".join(
                    f"{name} {cost:.1f} µs ({user:.1f} user, {system:.1f} sys), {rps:.0f}/s"
                    for name, (cost, user, system, rps) in row.items()
                )
                + "; ratio "
                + ", ".join(
                    f"{tracker} {values[-1]:.3f} vs {name}"
                    for (tracker, name), values in ratios.items()
                ),
                flush=True,
            )
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in servers.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(spool, ignore_errors=True)

    print(f"\n{args.rounds} rounds of {args.seconds} s, {args.connections} connections")
    print("µs of CPU per request (user + system), median and spread of the rounds:")
    for name, rows in figures.items():
        print(
            f"  {name:22} {spread([r[0] for r in rows])}; "
            f"user {statistics.median(r[1] for r in rows):.2f}, "
            f"system {statistics.median(r[2] for r in rows):.2f}; "
            f"wrk's requests/s {statistics.median(r[3] for r in rows):.0f}"
        )
    for (tracker, name), values in ratios.items():
        target = "" if name.startswith("tracker") else " (target >= 0.5)"
        print(f"{tracker} / {name}, requests per CPU-second: {spread(values)}{target}")
    return 0


class FakeTransport:
    """What `tracker.http.Connection` asks of a transport; writes are counted, not sent."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


REQUEST = (
    f"GET {PIXEL} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: {USER_AGENT}\r\n\r\n"
).encode()
# The pixel's event as a posted one (the site snippet's sendBeacon), alone and in a batch of
# `BATCH` with distinct ids and order values, as a shop's server posts its conversions.
_POSTED = (
    '{"type":"click","channel":"email","campaign":"black_friday",'
    '"utm_source":"newsletter","utm_medium":"email","utm_campaign":"bf26"}'
)
BATCH = 10
_BATCHED = ",".join(
    '{"type":"conversion","channel":"email","campaign":"black_friday",'
    f'"order_id":"A-{number:05d}","value":"{number}.50","event_id":"e{number:031x}"}}'
    for number in range(BATCH)
)


def _post(body: str) -> bytes:
    return (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: {USER_AGENT}\r\n"
        f"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


REQUESTS = {"pixel": REQUEST, "post": _post(_POSTED), "batch": _post(f"[{_BATCHED}]")}
EVENTS = {"pixel": 1, "post": 1, "batch": BATCH}


async def inproc_rounds(args: argparse.Namespace) -> list[float]:
    from tracker.app import TrackerApp
    from tracker.http import Connection, HttpServer
    from tracker.publisher import PublisherState
    from tracker.server import _settle_heap, build_publisher
    from tracker.settings import TrackerSettings

    spool = Path(tempfile.mkdtemp(prefix="adpulse-bench-inproc-"))
    try:
        settings = TrackerSettings(port=0, spool_dir=spool)
        publisher = await build_publisher(settings)
        # As when the broker is up, but the flush task never runs: the records are
        # acknowledged after each round instead.
        publisher.state = PublisherState.UP
        app = TrackerApp(settings, publisher)
        server = HttpServer(
            app.__call__,  # as tracker/server.py does
            on_protocol_error=app.count_protocol_error,
            commit=publisher.commit,
            on_refused=app.count_refused,
        )
        publisher.schedule_commit = server.end_turn
        transports = [FakeTransport() for _ in range(args.connections)]
        connections = []
        for transport in transports:
            connection = Connection(server)
            connection.connection_made(transport)  # type: ignore[arg-type]
            connections.append(connection)
        turns = max(1, args.requests // args.connections)
        request = REQUESTS[args.request]

        def run() -> None:
            # A turn of the event loop as the server sees it: the requests' I/O callbacks, then
            # the end of the turn (commit and answers), called here rather than by the loop so
            # that the figure is the tracker's own work (and one C call can wrap it all).
            for _ in range(turns):
                server._turn_ending = True
                for connection in connections:
                    connection.data_received(request)
                server._send_unsent()

        _settle_heap()
        costs = []
        for number in range(args.rounds + 1):  # the first warms up
            profile = None
            if args.profile and number == 1:
                import cProfile

                profile = cProfile.Profile()
                profile.enable()
            started = time.process_time()
            if number and args.callgrind:
                # valgrind counts the instructions inside this C function only.
                functools.reduce(lambda _, measured: measured(), [run], None)
            else:
                run()
            used = time.process_time() - started
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            # What the flush task would do once Kafka acknowledged the round.
            publisher._pending.clear()
            publisher._pending_bytes = 0
            publisher._acknowledge(publisher.spool.end, publisher.spool.records)
            if number:
                costs.append(used / (turns * args.connections) * 1e6)
        answered = sum(transport.written for transport in transports)
        expected = (args.rounds + 1) * turns * args.connections
        if answered != expected or publisher.stats.logged != expected * EVENTS[args.request]:
            raise RuntimeError(
                f"{answered} answers and {publisher.stats.logged} records for {expected} requests"
            )
        for connection in connections:
            connection.connection_lost(None)
        publisher.spool.close()
        return costs
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def run_inproc(args: argparse.Namespace) -> int:
    import uvloop

    if args.callgrind and not os.environ.get("ADPULSE_BENCH_UNDER_VALGRIND"):
        return run_under_callgrind(args)
    costs = uvloop.run(inproc_rounds(args))
    if args.callgrind:
        return 0
    print(
        f"in-process {args.request} path, {args.connections} requests a turn, "
        f"{args.requests} requests a round: "
        + ", ".join(f"{cost:.2f}" for cost in costs)
        + f" µs of CPU per request; {spread(costs)}"
    )
    return 0


def run_under_callgrind(args: argparse.Namespace) -> int:
    """The same in-process path under valgrind: instructions per request, the same from run to
    run whatever else the machine does (no kernel, no cache misses: a count, not a time)."""
    if shutil.which("valgrind") is None:
        print("--callgrind needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="adpulse-bench-callgrind-") as directory:
        output = Path(directory) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", "--toggle-collect=functools_reduce",
            f"--callgrind-out-file={output}", sys.executable, __file__, "inproc", "--callgrind",
            "--rounds", str(args.rounds), "--requests", str(args.requests),
            "--connections", str(args.connections), "--request", args.request,
        ]  # fmt: skip
        # A fixed hash seed: the same dict probes, so the same count, from run to run.
        env = {**os.environ, "ADPULSE_BENCH_UNDER_VALGRIND": "1", "PYTHONHASHSEED": "0"}
        subprocess.run(command, env=env, check=True, capture_output=True)
        totals = [
            int(line.split()[1])
            for line in output.read_text().splitlines()
            if line.startswith(("summary:", "totals:"))
        ]
    requests = args.rounds * max(1, args.requests // args.connections) * args.connections
    print(
        f"in-process {args.request} path under callgrind, {args.connections} requests a turn: "
        f"{max(totals) / requests:.0f} instructions per request ({requests} requests)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    by_wrk = modes.add_parser("wrk", help="CPU per request of the server processes under wrk")
    by_wrk.add_argument("--rounds", type=int, default=12)
    by_wrk.add_argument("--seconds", type=int, default=2, help="wrk's load per server a round")
    by_wrk.add_argument("--connections", type=int, default=50)
    by_wrk.add_argument(
        "--baselines",
        nargs="+",
        choices=sorted(BASELINES),
        default=["streams"],
        help="bare servers to compare with (streams: the target's)",
    )
    by_wrk.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="TREE",
        help="also run the tracker of another source tree (a checkout), to compare within a run",
    )
    inproc = modes.add_parser("inproc", help="CPU per request of the pixel path in-process")
    inproc.add_argument("--rounds", type=int, default=7)
    inproc.add_argument("--requests", type=int, default=50_000, help="requests a round")
    inproc.add_argument("--connections", type=int, default=50, help="requests a turn")
    inproc.add_argument(
        "--request",
        choices=sorted(REQUESTS),
        default="pixel",
        help=f"the bench's pixel GET, its event POSTed alone, or a POST of {BATCH} conversions",
    )
    inproc.add_argument("--profile", help="write a cProfile of the second round here")
    inproc.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions per request under valgrind's callgrind instead of timing",
    )
    args = parser.parse_args()
    return run_wrk(args) if args.mode == "wrk" else run_inproc(args)


if __name__ == "__main__":
    sys.exit(main())
