"""Where the worker's time goes, per event: its Python (decode, encode) and redis-server's script.

    .venv/bin/python bench/worker_parts.py [--events 200000] [--rounds 3] [--mixes new old]
                                           [--compare DIR ...] [--no-aof]
                                           [--previous N] [--load N] [--batch N]
    .venv/bin/python bench/worker_parts.py --callgrind --events 20000 --rounds 1
    .venv/bin/python bench/worker_parts.py --redis-callgrind --events 60000 --rounds 1 --previous 1

No broker: the events of `bench/worker_throughput.py`'s mix are made once, as the records the
tracker writes, and cut into batches of the worker's size (5,000). Each round, for each tree
(this one, and every `--compare` checkout, e.g. `git worktree add /tmp/base main`) and each mix,
a child process running that tree's code on `PYTHONPATH`:

- decodes and encodes every batch (`decode_records`, `encode_batch`): the worker's own CPU per
  event for them (process time), or with `--callgrind` its instruction count (valgrind);
- sends the batches one after the other to the script (EVAL) on a private redis-server, in a
  database emptied first: redis-server's CPU per event (user + system, from /proc, which also
  holds its append-only file's work: the bench's server syncs it on every write, as here unless
  `--no-aof`), and the script's own time per event from `INFO commandstats`.

With `--redis-callgrind`, redis-server runs under valgrind and the instructions of the script's
command (EVALSHA, from `evalGenericCommand` down; `ADPULSE_PARTS_TOGGLE=call` takes in what
`call` does after it too, e.g. feeding the append-only file) are counted per event: the same
count within 0.5 % run to run, whatever else the machine does (the first run on a fresh server
costs more, so one unshown run goes first). `ADPULSE_PARTS_SOURCES=1` gives each batch the
partition offsets the worker sends (`DecodedBatch.sources`, one an event), which the script
reads for redelivery; without it the batches have none. To see what a part of the script costs, the
environment can edit the script the children run: `ADPULSE_PARTS_SUB="text=>replacement||..."`,
and `ADPULSE_PARTS_CUT="<start of a line>"` returns before that line (with
`ADPULSE_PARTS_THEN_FULL=1` the whole script then runs on the batch, not counted, so a cut
before the writes sees the state the whole script leaves).

With `--previous N` the database holds N earlier generations of remembered ids before the
measured run, each as many events of the mix as the run (other ids), applied by the same tree's
script (not counted) with the clock one generation earlier each: the steady state of a flow,
where the measured run fills a fresh generation to the size of the one before it. So that every
kind of id (event, order, lead, caller, customer and click ids) rolls over at once, all their
windows are the dedupe window (24 h, generations of 6 h) with `--previous`; without it (the
default, 0) the run starts from an empty database, one generation growing from nothing. With
`--load N` buckets of remembered ids hold about N ids instead of Redis's compact-encoding share
(`keys.IdLayout`): a small N puts this bench's few events in the regime of a large generation,
where a batch writes and looks up about one id per bucket (at 1,000 events/s a generation of
event ids has about 100,000 buckets, more than a batch has ids).

The variants take turns within each round, so a drift of the shared machine's speed hits them
alike; compare within a round. Not counted: aiokafka's fetch and record iteration (about 1 µs an
event, bench/README.md "Decoding"), the loop's bookkeeping and metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from inspect import signature
from pathlib import Path
from typing import Any

from _proc import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
BATCH = 5000


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def layout_argument() -> dict[str, Any]:
    """`encode_batch`'s layout argument of the tree on the path (`--load`); none for a tree
    from before remembered ids were laid out in buckets."""
    from stream import keys as keyspace
    from stream.lua import encode_batch

    if "layout" not in signature(encode_batch).parameters:
        return {}
    load = int(os.environ.get("ADPULSE_PARTS_LOAD", 0))
    return {"layout": keyspace.IdLayout(load, load) if load else keyspace.DEFAULT_LAYOUT}


def decoded_batch(values: list[bytes]) -> Any:
    """`decode_records` of the tree on the path, with the click key of `--signed-clicks`."""
    from stream.batch import decode_records

    key = os.environ.get("ADPULSE_CLICK_KEY")
    try:
        from adpulse.core.click_ids import ClickKeys
    except ImportError:  # a tree from before signed click ids: every id is a foreign one
        return decode_records(values)
    return decode_records(values, ClickKeys(key.encode()) if key else None)


def prefill(client: Any, paths: list[str], retention: Any, size: int, now: int) -> None:
    """Apply the events of `paths` (hex lines, oldest generation first), each a generation of
    remembered event ids (a quarter of the dedupe window) before the one after it, with the
    tree's whole script: the earlier generations of a steady flow (`--previous`)."""
    from stream.days import LocalDays
    from stream.keys import KeySpace
    from stream.lua import APPLY_BATCH, encode_batch

    days = LocalDays(retention_seconds=retention.day_seconds)
    period = -(-int(retention.dedupe.total_seconds()) // 4)
    sha = client.script_load(APPLY_BATCH)
    for age, path in zip(range(len(paths), 0, -1), paths, strict=True):
        earlier = [bytes.fromhex(line) for line in Path(path).read_text().split()]
        for start in range(0, len(earlier), size):
            argv = encode_batch(
                decoded_batch(earlier[start : start + size]), keys=KeySpace(),
                retention=retention, now_seconds=now - age * period, stored_spend={},
                days=days, **layout_argument(),
            ).argv  # fmt: skip
            client.evalsha(sha, 0, *argv)


def prefill_worker_database(redis_url: str, paths: list[str]) -> None:
    """`prefill` for `bench/worker_throughput.py --previous`: with the worker's windows there
    (`PREVIOUS_WORKER_SETTINGS`), so that one clock shift rolls every kind of id over but
    customers (whose generation is 100 days)."""
    from datetime import timedelta

    import redis

    from stream.keys import Retention

    day = timedelta(days=1)
    client = redis.Redis.from_url(redis_url)
    prefill(client, paths, Retention(order=day, attribution=day), BATCH, int(time.time()))


PREVIOUS_WORKER_SETTINGS = {"ADPULSE_ORDER_DAYS": "1", "ADPULSE_ATTRIBUTION_DAYS": "1"}
"""The worker's windows under `bench/worker_throughput.py --previous`, as in
`prefill_worker_database`."""


def child(values_path: str, port: int, database: int, redis_pid: int, callgrind: bool) -> None:
    """Run in a tree's own interpreter: decode, encode, apply; print one JSON line."""
    import redis

    from stream.days import LocalDays
    from stream.keys import KeySpace, Retention
    from stream.lua import APPLY_BATCH, encode_batch

    values = [bytes.fromhex(line) for line in Path(values_path).read_text().split()]
    size = int(os.environ.get("ADPULSE_PARTS_BATCH", BATCH))
    batches = [values[i : i + size] for i in range(0, len(values), size)]
    keys, retention = KeySpace(), Retention()
    previous = [path for path in os.environ.get("ADPULSE_PARTS_PREVIOUS", "").split(",") if path]
    if previous:
        # One window for every kind of id: one clock shift rolls each of them over.
        window = retention.dedupe
        retention = Retention(order=window, attribution=window, customer=window)
    days = LocalDays(retention_seconds=retention.day_seconds)
    laid_out = layout_argument()
    now = int(time.time())
    if callgrind:
        # Only the measured part is instrumented (valgrind --instr-atstart=no).
        _control(os.getpid(), "-i", "on")
    started = time.process_time()
    decoded = [decoded_batch(batch) for batch in batches]
    decode_seconds = time.process_time() - started
    if os.environ.get("ADPULSE_PARTS_SOURCES"):
        # As the worker sends them (`DecodedBatch.sources`): one partition, an offset a row.
        from stream.batch import EVENT_FIELDS

        offset = 0
        for batch in decoded:
            rows = len(batch.rows) // EVENT_FIELDS
            batch.sources = [("0", 0, list(range(offset, offset + rows)))]
            offset += rows
    started = time.process_time()
    encoded = [
        encode_batch(batch, keys=keys, retention=retention, now_seconds=now,
                     stored_spend={}, days=days, **laid_out).argv
        for batch in decoded
    ]  # fmt: skip
    encode_seconds = time.process_time() - started
    if callgrind:
        _control(os.getpid(), "-i", "off")
        print(json.dumps({"events": len(values)}))
        return
    client = redis.Redis(port=port, db=database, socket_timeout=None)  # valgrind is slow
    client.flushdb()
    client.hset("adpulse:coupons", mapping={f"SAVE{n}": f"ch{n % 6}" for n in range(20)})
    if previous:
        prefill(client, previous, retention, size, now)
    client.script_flush()  # a fresh Lua interpreter: no garbage of the runs before
    script = APPLY_BATCH
    for edit in filter(None, os.environ.get("ADPULSE_PARTS_SUB", "").split("||")):
        # Profiling: "text=>replacement" edits of the script, to see what a part costs.
        before, after = edit.split("=>")
        if before not in script:
            raise SystemExit(f"not in the script: {before!r}")
        script = script.replace(before, after)
    whole = script
    cut = os.environ.get("ADPULSE_PARTS_CUT")
    full = None
    if cut:
        # Profiling: the script up to the first line starting with `cut`, then a return; with
        # ADPULSE_PARTS_THEN_FULL the whole script runs after it (not measured) on each batch,
        # so a cut that returns before writing anything sees the whole script's state.
        at = script.index("\n" + cut) + 1
        script = script[:at] + "do return {0, 0, 0, 0, 0} end\n" + script[at:]
        if os.environ.get("ADPULSE_PARTS_THEN_FULL"):
            full = client.script_load(whole)
    sha = client.script_load(script)
    applied_before = int(client.hget("adpulse:stats", "applied") or 0)
    client.config_resetstat()
    profiled = bool(os.environ.get("ADPULSE_REDIS_CALLGRIND"))
    if profiled:
        _control(redis_pid, "-z")
        _control(redis_pid, "-i", "on")
    cpu = cpu_seconds(redis_pid)
    wall = time.perf_counter()
    for argv in encoded:
        client.evalsha(sha, 0, *argv)
        if full is not None:
            if profiled:
                _control(redis_pid, "-i", "off")
            client.evalsha(full, 0, *argv)
            if profiled:
                _control(redis_pid, "-i", "on")
    wall = time.perf_counter() - wall
    cpu = cpu_seconds(redis_pid) - cpu
    if profiled:
        _control(redis_pid, "-i", "off")
        _control(redis_pid, "-d")
    stats = client.info("commandstats")["cmdstat_evalsha"]
    applied = int(client.hget("adpulse:stats", "applied") or 0) - applied_before
    print(json.dumps({
        "events": len(values), "applied": applied, "decode": decode_seconds,
        "encode": encode_seconds, "redis_cpu": cpu, "script": stats["usec"] / 1e6, "wall": wall,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mixes", nargs="+", default=["new", "old"])
    parser.add_argument("--compare", nargs="*", default=[], help="other checkouts to run too")
    parser.add_argument("--no-aof", action="store_true")
    parser.add_argument("--batch", type=int, default=BATCH, help="events a batch")
    parser.add_argument(
        "--previous",
        type=int,
        default=0,
        help="earlier generations of remembered ids, each of --events events, present first",
    )
    parser.add_argument(
        "--load", type=int, default=0, help="ids a bucket of remembered ids holds (0: Redis's)"
    )
    parser.add_argument(
        "--signed-clicks",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the clicks with an id the tracker issued, signed (worker_throughput.py)",
    )
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument(
        "--redis-callgrind",
        action="store_true",
        help="run redis-server under callgrind: its instructions an event, and where they go",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from worker_throughput import CLICK_KEY, build_events

    if args.signed_clicks:
        os.environ["ADPULSE_CLICK_KEY"] = CLICK_KEY  # read by every child

    from tests.services import free_port

    trees = [ROOT, *(Path(tree).resolve() for tree in args.compare)]
    work = Path(tempfile.mkdtemp(prefix="adpulse-parts-"))
    files = {}
    for mix in args.mixes:
        events = build_events(args.events, mix=mix, signed=args.signed_clicks)
        files[mix] = work / f"{mix}.hex"
        files[mix].write_text("\n".join(event.to_wire().hex() for event in events))
    previous: dict[str, list[Path]] = {}
    for mix in args.mixes:
        previous[mix] = []
        for age in range(args.previous, 0, -1):
            # Other ids than the run's: each event mix starts its ids with a random run name.
            path = work / f"{mix}.previous{age}.hex"
            earlier = build_events(args.events, mix=mix, signed=args.signed_clicks)
            path.write_text("\n".join(event.to_wire().hex() for event in earlier))
            previous[mix].append(path)
    port = free_port()
    aof = (
        ["--appendonly", "no"]
        if args.no_aof
        else ["--appendonly", "yes", "--appendfsync", "always"]
    )
    valgrind = (
        # Only inside the script's command: not the server's cron, whose work depends on time.
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--toggle-collect={os.environ.get('ADPULSE_PARTS_TOGGLE', 'evalGenericCommand')}",
            f"--callgrind-out-file={work}/redis.callgrind",
        ]
        if args.redis_callgrind
        else []
    )
    server = subprocess.Popen(
        [*valgrind, "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work),
         "--save", "", "--busy-reply-threshold", "0", *aof],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        deadline = time.monotonic() + 60
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        print(
            f"{args.events:,} events a mix, batches of {args.batch}, "
            f"{args.previous} earlier generations, bucket load {args.load or 'Redis'}; "
            "per event, µs:"
        )
        print(f"{'round':>5} {'tree':<28} {'mix':<4} {'decode':>7} {'encode':>7} "
              f"{'redis CPU':>9} {'script':>7} {'applied':>8}")  # fmt: skip
        # Round 0, not shown: the first script run on a fresh server costs more than the rest.
        for round_ in range(0 if args.redis_callgrind else 1, args.rounds + 1):
            for tree in trees:
                for mix in args.mixes:
                    if not round_ and (tree, mix) != (trees[0], args.mixes[0]):
                        continue
                    command = [
                        sys.executable, __file__, "--child", str(files[mix]), str(port), "1",
                        str(server.pid),
                    ]  # fmt: skip
                    env = {**os.environ, "PYTHONPATH": str(tree),
                           "ADPULSE_PARTS_BATCH": str(args.batch),
                           "ADPULSE_PARTS_LOAD": str(args.load),
                           "ADPULSE_PARTS_PREVIOUS": ",".join(map(str, previous[mix]))}  # fmt: skip
                    if args.redis_callgrind:
                        env["ADPULSE_REDIS_CALLGRIND"] = f"{round_}-{tree.name}-{mix}"
                    if args.callgrind:
                        command = [
                            "valgrind", "--tool=callgrind", "--instr-atstart=no",
                            f"--callgrind-out-file={work}/callgrind.{tree.name}.{mix}.%p",
                            *command, "--callgrind",
                        ]  # fmt: skip
                    done = subprocess.run(
                        command, env=env, capture_output=True, text=True, cwd=tree
                    )
                    if done.returncode:
                        raise SystemExit(f"{tree} {mix}: {done.stderr[-2000:]}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    count = result["events"]
                    if not round_:
                        continue
                    if args.redis_callgrind:
                        print(
                            f"{round_:>5} {tree.name:<28} {mix:<4} redis-server "
                            + _redis_instructions(work, count)
                        )
                        continue
                    row = f"{round_:>5} {tree.name:<28} {mix:<4} "
                    if args.callgrind:
                        print(row + _instructions(work, tree.name, mix, count))
                        continue
                    micros = {
                        part: result[part] / count * 1e6
                        for part in ("decode", "encode", "redis_cpu", "script")
                    }
                    print(
                        f"{row}{micros['decode']:7.2f} {micros['encode']:7.2f} "
                        f"{micros['redis_cpu']:9.2f} {micros['script']:7.2f} {result['applied']:8,}"
                    )
    finally:
        server.terminate()
        server.wait()
    if args.redis_callgrind:
        print(f"redis-server's profile: callgrind_annotate {work}/redis.callgrind")


def _redis_instructions(work: Path, count: int) -> str:
    dumps = sorted(work.glob("redis.callgrind.*"), key=lambda p: p.stat().st_mtime)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the dump is written after callgrind_control returns
        for line in dumps[-1].read_text().splitlines():
            if line.startswith("totals:"):
                return f"{int(line.split()[1]) / count:,.0f} instructions an event ({dumps[-1]})"
        time.sleep(0.2)
    return "no totals"


def _instructions(work: Path, tree: str, mix: str, count: int) -> str:
    files = sorted(work.glob(f"callgrind.{tree}.{mix}.*"), key=lambda p: p.stat().st_mtime)
    text = files[-1].read_text()
    total = 0
    for line in text.splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            total = int(line.split()[1])
    return f"decode+encode {total / count:,.0f} instructions an event"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--prefill":
        prefill_worker_database(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
              "--callgrind" in sys.argv)  # fmt: skip
    else:
        main()
