"""`GET /v1/number` requests/s and latency on one core, with a pool of 100 numbers.

    .venv/bin/python bench/number_leases.py [--seconds 5] [--connections 50] [--visitors 1000]

Needs `wrk` and `redis-server`. The tracker is pinned to CPU 0; wrk, redis-server and the Tansu
broker run on the other CPU(s). A pool of 100 numbers for paid_search is registered with
`adpulse numbers pool add`; wrk asks for a number for `--visitors` distinct click ids in turn
(a Lua script), so most requests renew a lease and, with more visitors than numbers, many take
over the oldest one (an exhausted pool, as a too-small pool would be in production). Each request
is one EVALSHA of the lease script (adpulse/core/phone.py) and its answer; the tracker's event
loop does not wait for it (tracker/http.py, `Response.later`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _proc import cpu_seconds  # noqa: E402  (beside this script)
from tracker_pixels import (  # noqa: E402  (beside this script)
    USER_AGENT,
    free_port,
    pinned,
    server_cpus,
    start_broker,
    wait_http,
)

POOL_SIZE = 100
WRK_SCRIPT = """
local visitors = tonumber(os.getenv("VISITORS") or "1000")
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/number?channel=paid_search&click_id=v" .. (n % visitors))
end
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--visitors", type=int, default=1000)
    args = parser.parse_args()
    server_cpu, load_cpu = server_cpus()
    redis_port = free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: pinned(load_cpu),
    )
    broker, bootstrap = start_broker(load_cpu)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    numbers = [f"+1415555{index:04d}" for index in range(POOL_SIZE)]
    with tempfile.TemporaryDirectory() as scratch:
        try:
            subprocess.run(
                [sys.executable, "-m", "adpulse", "numbers", "--redis-url", redis_url,
                 "--kafka", bootstrap, "pool", "add", "paid_search", *numbers],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            port = free_port()
            tracker = subprocess.Popen(
                [sys.executable, "-m", "adpulse", "tracker", "--port", str(port),
                 "--kafka", bootstrap, "--spool-dir", f"{scratch}/spool",
                 "--redis-url", redis_url, "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=lambda: pinned(server_cpu),
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                wait_http(f"{base}/healthz")
                script = Path(scratch) / "number.lua"
                script.write_text(WRK_SCRIPT)
                command = [
                    "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                    "-s", str(script), "-H", f"User-Agent: {USER_AGENT}", base,
                ]  # fmt: skip
                env = {"VISITORS": str(args.visitors), "PATH": "/usr/bin:/bin"}
                before = cpu_seconds(tracker.pid)
                output = subprocess.run(
                    command, capture_output=True, text=True, check=True, env=env,
                    preexec_fn=lambda: pinned(load_cpu),
                ).stdout  # fmt: skip
                used = cpu_seconds(tracker.pid) - before
            finally:
                tracker.terminate()
                tracker.wait(30)
        finally:
            broker.terminate()
            redis_server.terminate()
            broker.wait(10)
            redis_server.wait(10)
    print(output)
    print(f"tracker CPU seconds: {used:.2f} for {args.seconds} s of load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
