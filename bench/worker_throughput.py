"""Worker throughput (Kafka -> Redis, exact counts) against plain faust agents, and freshness.

    .venv/bin/python bench/worker_throughput.py [--events 500000] [--baseline-seconds 20]
                                                [--rate 10000] [--latency-seconds 20]
                                                [--compare DIR ...] [--rounds 1]
                                                [--signed-clicks SHARE] [--previous N]
                                                [--callgrind]

One run, on the embedded Tansu broker and a private redis-server (both on the last CPU):

1. N events of a realistic mix (clicks, coupon redemptions, conversions with and without click
   ids, a little spend) are produced into a fresh 8-partition topic, as the tracker would.
2. `adpulse worker`, pinned to CPU 0, is started; events/s is measured from the first counter
   to all N counted (polling Redis), and from process start, with the CPU per event of the
   worker, redis-server and the broker over the same span (`--mix old`: the mix before
   issue 12's orders, customers, leads and bots). With `--compare`, the worker of each other
   checkout (e.g. `git worktree add /tmp/base main`) reads the same topic too, taking turns
   with this tree's for `--rounds` rounds, each on an emptied database (with `--previous N`,
   one holding N earlier generations of remembered ids, the steady state of a flow, applied
   by that tree's script). `--signed-clicks SHARE`: that share of the clicks carries the
   signed id the tracker issues with a click key (`/c`, the site snippet), not a foreign one.
   `--callgrind`: each worker runs under valgrind's callgrind, counting from its first counter
   to all counted: the instructions an event of the whole worker process (fetch, decode,
   encode, commit, metrics, faust's consumer thread), which a shared machine's load does not
   change, unlike its CPU time.
3. In the same run, on the same topic (own group, own Redis database), a faust agent applying
   each event on its own, and one batching with faust's `stream.take`, each pinned to CPU 0, for
   `--baseline-seconds` after their first counter (bench/worker_faust_agent.py).
4. Freshness: a fresh topic, the worker running, events produced at a steady `--rate` with
   received_at = send time; the counter is polled every 2 ms, and the k-th event sent is taken
   to be visible when the applied count reaches k (partitions interleave, so this is the
   latency of the k-th event in arrival order). Prints p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import redis
from aiokafka import AIOKafkaProducer
from redis.typing import EncodableT

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _proc import cpu_seconds, cpu_times  # noqa: E402  (beside this script)
from worker_parts import PREVIOUS_WORKER_SETTINGS  # noqa: E402  (beside this script)

from adpulse.core.event import Event, EventRules, parse_event, partition_key  # noqa: E402
from tests.kafka_helpers import create_topic  # noqa: E402
from tests.services import KafkaBroker, RedisServer, free_port  # noqa: E402
from tracker.click_ids import issue_click_id  # noqa: E402

CHANNELS = ("paid_search", "paid_social", "email", "affiliate", "display", "podcast")
COUPONS: dict[EncodableT, EncodableT] = {f"SAVE{n}": CHANNELS[n % len(CHANNELS)] for n in range(20)}
UTM = (("google", "cpc"), ("facebook", "paid_social"), ("newsletter", "email"))
PARTITIONS = 8
WORKER_CPU = 0
BOT = "_bot"
"""Marks a payload of `event_mix` as a bot's click: the edge's enrichment, not a client field."""


MIXES = ("new", "old")
"""`new`: issue 12's mix (restatements, leads, customers, bots); `old`: the mix before it
(clicks, redemptions and conversions only, each order reported once), for comparisons."""


def event_mix(count: int, seed: int = 7, mix: str = "new") -> Iterator[dict[str, object]]:
    """Client payloads: 80 % clicks (1 in 25 a bot's), 8 % redemptions, 4 % leads (a lead id,
    most naming a click), 8 % conversions (a quarter of them restating an earlier order, 30 % of
    the others pending, half of the others naming a customer, a third of those a returning
    one), 1 in 10k spend. The `old` mix: 80 % clicks, 8 % redemptions, 12 % conversions."""
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}: one of {MIXES}")
    new = mix == "new"
    rng = random.Random(seed)
    clicks: list[str] = []
    orders: list[tuple[str, bool, str]] = []  # (order id, pending, click id) not restated yet
    customers: list[str] = []
    run = uuid.uuid4().hex[:8]
    for number in range(count):
        roll = rng.random()
        event_id = f"{run}-{number}"
        if number % 10_000 == 9_999:
            yield {
                "type": "spend", "event_id": event_id, "channel": rng.choice(CHANNELS),
                "cost": "125.50", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z",
            }  # fmt: skip
        elif roll < 0.80:
            click_id = f"k{run}{number}"
            clicks.append(click_id)
            payload: dict[str, object] = {
                "type": "click", "event_id": event_id, "click_id": click_id,
                "campaign": f"c{number % 50}",
            }  # fmt: skip
            if rng.random() < 0.7:
                payload["channel"] = rng.choice(CHANNELS)
            else:
                source, medium = rng.choice(UTM)
                payload["utm_source"], payload["utm_medium"] = source, medium
            if new and number % 25 == 0:
                payload[BOT] = True  # the edge's flag, for `build_events`
            yield payload
        elif roll < 0.88:
            yield {
                "type": "redemption", "event_id": event_id, "coupon": rng.choice(list(COUPONS)),
                "order_id": f"r{run}{number}", "value": "19.90",
            }  # fmt: skip
        elif new and roll < 0.92:
            lead: dict[str, object] = {
                "type": "lead", "event_id": event_id, "lead_id": f"l{run}{number}",
            }  # fmt: skip
            if clicks and rng.random() < 0.6:
                lead["click_id"] = rng.choice(clicks[-5000:])
            else:
                lead["channel"] = rng.choice(CHANNELS)
            yield lead
        elif new and orders and rng.random() < 0.25:
            # A restatement of an earlier order (issue 12): each order once, so every one
            # changes something and counts as applied.
            # It names the same click as the first report: the same Kafka key, so it is never
            # applied before it.
            order_id, pending, click_id = orders.pop(rng.randrange(len(orders)))
            restatement: dict[str, object] = {
                "type": "conversion", "event_id": event_id, "order_id": order_id,
                "status": "approved" if pending else rng.choice(["refunded", "declined"]),
            }  # fmt: skip
            if click_id:
                restatement["click_id"] = click_id
            yield restatement
        else:
            conversion: dict[str, object] = {
                "type": "conversion", "event_id": event_id, "order_id": f"o{run}{number}",
                "value": f"{rng.randint(5, 500)}.{rng.randint(0, 99):02d}",
            }  # fmt: skip
            pending = new and rng.random() < 0.3
            if pending:
                conversion["status"] = "pending"
            if new and rng.random() < 0.5:
                if customers and rng.random() < 1 / 3:
                    conversion["customer_id"] = rng.choice(customers[-5000:])
                else:
                    conversion["customer_id"] = f"u{run}{number}@example.com"
                    customers.append(str(conversion["customer_id"]))
            if clicks and rng.random() < 0.6:
                conversion["click_id"] = rng.choice(clicks[-5000:])
            else:
                conversion["channel"] = rng.choice(CHANNELS)
            orders.append((f"o{run}{number}", pending, str(conversion.get("click_id", ""))))
            yield conversion


HASH_KEY = b"bench-worker-throughput-key-0123"
"""The edge's key for the mix's customer ids (ADPULSE_HASH_KEY)."""
CLICK_KEY = "bench-worker-throughput-click-key-0123456789"
"""The trackers' and workers' click key (ADPULSE_CLICK_KEY) of `--signed-clicks`."""


TURN: Final = 48
"""Events a tracker stamps with one time (`received_at`, and `ts` when the event has none): the
requests one turn of its event loop answers (`tracker/app.py`), about 50 with 50 connections
at the rates issue 12 is about; the worker's decode checks a time once per run of it."""
TURN_SECONDS: Final = 0.001


def build_events(
    count: int, mix: str = "new", signed: float = 0.0, turn: int = TURN
) -> list[Event]:
    """The events of `event_mix` as the edge makes them, `turn` at a time stamped with one
    time, a millisecond apart, ending now. A share `signed` of the clicks gets the id the
    tracker issues with a click key (`/c`, the site snippet: signed, carrying its channel,
    campaign and minute; README "Click ids that carry their attribution") instead of a foreign
    one (a gclid, an id of the site's own), and the conversions and leads naming such a click
    name its signed id."""
    rules = EventRules(hash_key=HASH_KEY)
    start = datetime.now(UTC) - timedelta(seconds=count // turn * TURN_SECONDS)
    chooser = random.Random(11)
    issued: dict[str, str] = {}  # foreign id -> the signed id issued instead
    events = []
    for number, raw in enumerate(event_mix(count, mix=mix)):
        received_at = start + timedelta(seconds=number // turn * TURN_SECONDS)
        bot = bool(raw.pop(BOT, False))
        event = parse_event(raw, rules=rules, received_at=received_at, bot=bot)
        foreign = event.click_id
        if foreign is not None and event.type == "click":
            if signed and chooser.random() < signed:
                issue_click_id(event, CLICK_KEY.encode())
                issued[foreign] = str(event.click_id)
        elif foreign is not None and foreign in issued:
            # Set as `issue_click_id` does: the event is a frozen dataclass.
            object.__setattr__(event, "click_id", issued[foreign])
        events.append(event)
    return events


def counted_events(events: list[Event]) -> int:
    """Applied events the stats hash will show: every event but spend (counted apart); a bot's
    click is applied too, under its own counter."""
    return sum(1 for event in events if event.type != "spend")


async def produce(bootstrap: str, topic: str, events: list[Event]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1
    )
    await producer.start()
    try:
        pending = [
            await producer.send(topic, event.to_wire(), key=partition_key(event))
            for event in events
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def pinned(cpu: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {cpu})


def start(
    argv: list[str],
    log: Path,
    tree: Path = ROOT,
    settings: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`argv` run by this interpreter on `tree`'s code, pinned to the worker's CPU, with
    `settings` in its environment; under `wrapper` (valgrind) if given."""
    handle = log.open("wb")
    return subprocess.Popen(
        [*wrapper, sys.executable, *argv],
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=tree,
        preexec_fn=pinned(WORKER_CPU),
        env={**os.environ, **(settings or {}), "PYTHONPATH": str(tree)},
    )


def applied(client: redis.Redis) -> int:
    return int(client.hget("adpulse:stats", "applied") or 0)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure_worker(
    kafka: str,
    topic: str,
    redis_url: str,
    expected: int,
    log: Path,
    others: dict[str, int],
    tree: Path = ROOT,
    previous: Sequence[Path] = (),
    callgrind: bool = False,
) -> tuple[float, float, dict[str, float], str]:
    """(events/s from the first counter to all counted, events/s from process start, µs of
    CPU per event over the same span of the worker and of each of `others`' processes, what
    the span is), the worker running `tree`'s code on an emptied database, into which the
    events of `previous` (hex lines) were first applied as earlier generations by `tree`'s
    script (`bench/worker_parts.py`'s `prefill_worker_database`). With `callgrind`, the worker
    runs under callgrind, counting from the first counter to the last (`_instructions`)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.hset("adpulse:coupons", mapping=COUPONS)
    if previous:
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "worker_parts.py"), "--prefill", redis_url,
             *map(str, previous)],
            check=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        )  # fmt: skip
        client.delete("adpulse:stats")  # the run's counts from 0
    client.config_resetstat()  # commandstats of this worker's run alone
    metrics_port = free_port()
    argv = [
        "-m", "adpulse", "worker", "--kafka", kafka, "--topic", topic, "--redis-url", redis_url,
        "--group", f"bench-{uuid.uuid4().hex[:6]}", "--port", str(metrics_port),
        "--log-level", "WARNING",
    ]  # fmt: skip
    started = time.perf_counter()
    profile = log.with_suffix(".callgrind")
    wrapper = (
        ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={profile}")
        if callgrind
        else ()
    )
    process = start(argv, log, tree, PREVIOUS_WORKER_SETTINGS if previous else {}, wrapper)
    pids = {"worker": process.pid, **others}
    first: tuple[float, int, dict[str, float]] | None = None
    # The last poll that saw nothing counted: the start instead of the first counter when
    # all events are counted by one poll (a small --events), which leaves no span after it.
    empty = (started, 0, _cpu(pids))
    try:
        while True:
            count = applied(client)
            now = time.perf_counter()
            if not count:
                empty = (now, 0, _cpu(pids))
            elif first is None:
                if callgrind:
                    _callgrind(process.pid, "--instr=on")
                    count = applied(client)
                first = (now, count, _cpu(pids))
            if count >= expected:
                if callgrind:
                    _callgrind(process.pid, "--dump")
                break
            if now - started > (3000 if callgrind else 300) or process.poll() is not None:
                raise RuntimeError(f"worker counted {count} of {expected}; see {log}")
            time.sleep(0.002)
        span = "first counter to all"
        if first is not None and count == first[1]:
            first = empty
            span = "all counted by one poll: from the poll before to all"
        assert first is not None
        cpu = {
            name: (seconds - first[2][name]) / (count - first[1]) * 1e6
            for name, seconds in _cpu(pids).items()
        }
        span += f"; {_mean_batch(metrics_port):,.0f} records a batch"
        if callgrind:
            span += f"; {_instructions(profile, count - first[1]):,.0f} instructions an event"
        if os.environ.get("ADPULSE_BENCH_COMMANDS"):
            # Diagnosis: redis-server's commands over the whole run, by their time.
            stats = client.info("commandstats")
            top = sorted(stats.items(), key=lambda item: -item[1]["usec"])[:6]
            span += "; " + ", ".join(
                f"{name[8:]} {entry['calls']:,} calls {entry['usec'] / 1e6:.2f} s"
                for name, entry in top
            )
    finally:
        stop(process)
    steady = (count - first[1]) / (now - first[0])
    return steady, count / (now - started), cpu, span


SPEED_CHECK: Final = "import time; t = time.process_time(); sum(range(10**7)); " \
    "print(time.process_time() - t)"  # fmt: skip
"""A fixed piece of Python CPU work: its time, on the worker's core just after a worker's run,
says how fast the shared machine's core was then (it varied by 40 % between hours), so that
CPU per event of runs at different times can be compared."""


def speed_check() -> float:
    """Milliseconds of `SPEED_CHECK` on the worker's CPU, the best of three."""
    return 1000 * min(
        float(subprocess.run(
            [sys.executable, "-c", SPEED_CHECK], capture_output=True, check=True, text=True,
            preexec_fn=pinned(WORKER_CPU),
        ).stdout)
        for _ in range(3)
    )  # fmt: skip


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process, and the worker's system (kernel) part apart: the
    worker's socket reads and writes, which callgrind's count of instructions leaves out."""
    seconds = {name: cpu_seconds(pid) for name, pid in pids.items()}
    seconds["the worker's kernel part"] = cpu_times(pids["worker"])[1]
    return seconds


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _instructions(profile: Path, events: int) -> float:
    """The worker's instructions an event in callgrind's dump (all its threads): the dump of
    `--dump` is numbered `profile`.1, written after callgrind_control returns."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for dump in profile.parent.glob(profile.name + ".*"):
            for line in dump.read_text().splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1]) / events
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind totals in {profile}.*")


def _mean_batch(port: int) -> float:
    """The worker's mean batch (its `adpulse_worker_batch_size` histogram), from its /metrics:
    a script call's fixed costs (the counter buckets above all) weigh less in a larger one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    figures = dict(
        line.split(" ", 1)
        for line in text.splitlines()
        if line.startswith(("adpulse_worker_batch_size_sum ", "adpulse_worker_batch_size_count "))
    )
    count = float(figures.get("adpulse_worker_batch_size_count", 0))
    return float(figures.get("adpulse_worker_batch_size_sum", 0)) / count if count else 0.0


def measure_agent(
    mode: str, kafka: str, topic: str, redis_url: str, seconds: float, log: Path
) -> float:
    client = redis.Redis.from_url(redis_url)
    client.hset("adpulse:coupons", mapping=COUPONS)
    script = str(ROOT / "bench" / "worker_faust_agent.py")
    group = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    process = start([script, mode, kafka, topic, group, redis_url], log)
    try:
        deadline = time.perf_counter() + 120
        while not applied(client):
            if time.perf_counter() > deadline or process.poll() is not None:
                raise RuntimeError(f"faust agent ({mode}) counted nothing; see {log}")
            time.sleep(0.01)
        first_time, first_count = time.perf_counter(), applied(client)
        time.sleep(seconds)  # a measurement window, not synchronisation
        return (applied(client) - first_count) / (time.perf_counter() - first_time)
    finally:
        stop(process)


async def paced_latency(
    kafka: str, topic: str, redis_url: str, rate: int, seconds: float
) -> list[float]:
    """Seconds from send to visible counter for each event, at a steady `rate`."""
    rules = EventRules(hash_key=HASH_KEY)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5, acks=1)
    await producer.start()
    client = redis.Redis.from_url(redis_url)
    sent: list[float] = []
    seen: list[tuple[float, int]] = []
    payloads = event_mix(int(rate * seconds) + rate)
    stop_polling = asyncio.Event()

    async def poll() -> None:
        while not stop_polling.is_set():
            seen.append((time.time(), await asyncio.to_thread(applied, client)))
            await asyncio.sleep(0.002)

    poller = asyncio.create_task(poll())
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    begin = time.perf_counter()
    total = 0
    try:
        while time.perf_counter() - begin < seconds:
            for _ in range(per_tick):
                raw = next(payloads)
                if raw["type"] == "spend":
                    continue
                now = datetime.now(UTC)
                bot = bool(raw.pop(BOT, False))
                event = parse_event(raw, rules=rules, received_at=now, bot=bot)
                await producer.send(topic, event.to_wire(), key=partition_key(event))
                sent.append(now.timestamp())
                total += 1
            target = begin + (total / rate)
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
        await producer.flush()
        deadline = time.time() + 30
        while (not seen or seen[-1][1] < total) and time.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        stop_polling.set()
        await poller
        await producer.stop()
    latencies: list[float] = []
    position = 0
    for index, sent_at in enumerate(sent, start=1):
        while position < len(seen) and seen[position][1] < index:
            position += 1
        if position == len(seen):
            break
        latencies.append(seen[position][0] - sent_at)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--mix", choices=MIXES, default="new", help="the event mix (see event_mix)")
    parser.add_argument(
        "--compare", nargs="*", default=[], help="other checkouts whose worker to run too"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each worker, in turns")
    parser.add_argument("--skip-latency", action="store_true", help="no freshness phase (step 4)")
    parser.add_argument(
        "--signed-clicks",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the clicks whose ids the tracker issued, signed (0 to 1; 0: every click "
        "id foreign, registered by the worker); the workers get the click key",
    )
    parser.add_argument(
        "--previous",
        type=int,
        default=0,
        metavar="N",
        help="earlier generations of remembered ids in the database before each worker starts, "
        "each as many other events of the mix (the steady state of a flow, as in "
        "bench/worker_parts.py; the workers then keep clicks and orders for a day)",
    )
    parser.add_argument(
        "--turn",
        type=int,
        default=TURN,
        metavar="N",
        help=f"events stamped with one time, as one turn of a tracker's loop stamps them "
        f"(default {TURN}; 1: every time distinct)",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run each worker under valgrind's callgrind: its instructions an event, which a "
        "shared machine's load does not change (slow: use --events 100000 or fewer)",
    )
    args = parser.parse_args()
    if not 0 <= args.signed_clicks <= 1:
        parser.error("--signed-clicks is a share, from 0 to 1")
    if args.turn < 1:
        parser.error("--turn is a number of events, at least 1")
    if args.signed_clicks:
        os.environ["ADPULSE_CLICK_KEY"] = CLICK_KEY  # inherited by every worker started
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"adpulse-bench-{uuid.uuid4().hex[:6]}"
    logs.mkdir()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"{_cpu_model()}, Python {platform.python_version()}, {platform.platform()}"
    )
    print(f"worker and agents pinned to CPU {WORKER_CPU}; broker and redis-server on the rest")
    broker, server = KafkaBroker(), RedisServer()
    rest = set(range(os.cpu_count() or 1)) - {WORKER_CPU} or {WORKER_CPU}
    try:
        broker.start()
        server.start()
        others: dict[str, int] = {}
        for pid in _child_pids():
            os.sched_setaffinity(pid, rest)
            others[Path(f"/proc/{pid}/comm").read_text().strip()] = pid
        topic = f"adpulse.events.bench{uuid.uuid4().hex[:6]}"
        asyncio.run(create_topic(broker.bootstrap, topic, PARTITIONS))
        began = time.perf_counter()
        events = build_events(args.events, args.mix, args.signed_clicks, args.turn)
        asyncio.run(produce(broker.bootstrap, topic, events))
        expected = counted_events(events)
        previous = []
        for age in range(args.previous, 0, -1):
            # Other ids than the run's: each event mix starts its ids with a random run name.
            earlier = build_events(args.events, args.mix, args.signed_clicks, args.turn)
            previous.append(logs / f"previous{age}.hex")
            previous[-1].write_text("\n".join(event.to_wire().hex() for event in earlier))
        print(f"produced {len(events)} events in {time.perf_counter() - began:.1f} s")

        trees = [ROOT, *(Path(tree).resolve() for tree in args.compare)]
        this_tree = 0.0
        for round_ in range(1, args.rounds + 1):
            # The trees take turns on the same topic, so a drift of a shared machine's speed
            # hits them alike; each worker reads it all with a group of its own.
            for tree in trees:
                label = "adpulse worker" if len(trees) == 1 else f"{round_} {tree.name}"
                log = logs / f"worker-{round_}-{tree.name}.log"
                steady, overall, cpu, span = measure_worker(
                    broker.bootstrap,
                    topic,
                    server.url_for(1),
                    expected,
                    log,
                    others,
                    tree,
                    previous,
                    args.callgrind,
                )
                this_tree = steady if tree == ROOT else this_tree
                print(f"{label + ':':<26} {steady:10,.0f} events/s ({span} {expected:,} "
                      f"counted); {overall:,.0f} from process start")  # fmt: skip
                # The worker has CPU 0 to itself; redis-server and the broker share the other:
                # the events/s above is bounded by whichever core's CPU per event is the larger.
                print("CPU per event over the same span, µs: " + ", ".join(
                    f"{name} {micros:.2f}" for name, micros in cpu.items())
                    + f"; the worker's core's speed: {speed_check():.0f} ms")  # fmt: skip
                # Issue 12's "events/s per core": the events a second of the worker's CPU
                # counts, whatever bounds the run's events/s (redis-server, on this machine).
                print(f"the worker's events per second of its CPU: {1e6 / cpu['worker']:,.0f} "
                      "(issue 12's target: 150,000)")  # fmt: skip
        if not args.skip_baseline:
            for database, mode in ((2, "per-event"), (3, "take")):
                rate = measure_agent(
                    mode,
                    broker.bootstrap,
                    topic,
                    server.url_for(database),
                    args.baseline_seconds,
                    logs / f"agent-{mode}.log",
                )
                print(f"faust agent ({mode:9}):   {rate:10,.0f} events/s; "
                      f"worker / agent = {this_tree / rate:.1f}x")  # fmt: skip

        if not args.skip_latency:
            latency_topic = f"{topic}.latency"
            asyncio.run(create_topic(broker.bootstrap, latency_topic, PARTITIONS))
            url = server.url_for(4)
            argv = [
                "-m", "adpulse", "worker", "--kafka", broker.bootstrap, "--topic", latency_topic,
                "--redis-url", url, "--port", str(free_port()), "--log-level", "WARNING",
            ]  # fmt: skip
            process = start(argv, logs / "worker-latency.log")
            try:
                # Warm up: the worker must have joined before the paced run starts.
                asyncio.run(paced_latency(broker.bootstrap, latency_topic, url, 100, 0.1))
                client = redis.Redis.from_url(url)
                while not applied(client):
                    time.sleep(0.05)
                client.hdel("adpulse:stats", "applied")
                latencies = asyncio.run(
                    paced_latency(
                        broker.bootstrap, latency_topic, url, args.rate, args.latency_seconds
                    )
                )
            finally:
                stop(process)
            print(
                f"event-to-counter at {args.rate:,} events/s for {args.latency_seconds:.0f} s: "
                f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms ({len(latencies):,} events)"
            )
        print(f"logs: {logs}")
    finally:
        broker.close()
        server.close()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _child_pids() -> list[int]:
    """Processes started by this one so far (the broker and redis-server)."""
    children: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid():
            children.append(int(stat.parent.name))
    return children


if __name__ == "__main__":
    main()
