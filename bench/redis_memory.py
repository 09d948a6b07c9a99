"""Redis memory of the ids the worker remembers, per event, for sizing (README, Production).

    .venv/bin/python bench/redis_memory.py [--clicks 160000] [--conversions 40000]
                                           [--click-ids uuid,gclid] [--batch-size 5000]

A private redis-server (as the other benches start it) and the worker's own write path:
`KpiStore.apply_batch`, which decodes the events as the worker does and runs the batch Lua
script of `stream.lua`. The events: `--clicks` clicks with UUID event ids and click ids, then
`--conversions` conversions with UUID event ids and UUID order ids, 60 % of them naming one of
the clicks, half of them naming a customer (a third of those a returning one). For each kind
of click id asked for (`uuid`: 36 characters; `gclid`: 96, the length of a Google Ads gclid),
the database is flushed and the events applied again.

Printed per run: `MEMORY USAGE` (exact, SAMPLES 0) of each kind of remembered id (event ids,
clicks with their channel and campaign, order ids with their state, customers with theirs;
every key of the kind: buckets, layouts, dictionaries) divided by the number of ids, the growth
of `used_memory` (INFO memory) divided by the number of events, redis-server's CPU time per
event (INFO cpu: the price of the small buckets, see `stream.keys`, "Remembered ids"), and what
that means at 1,000 events/s of which 800 clicks and 200 conversions over the default windows
(`keys.Retention`).
Memory does not depend on how busy the machine is; the CPU figure does.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import secrets
import string
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adpulse.core.event import Event, EventRules, parse_event  # noqa: E402
from stream.keys import KeySpace, Retention  # noqa: E402
from stream.store import KpiStore  # noqa: E402
from tests.services import RedisServer, redis_server_binary  # noqa: E402

CHANNELS = ("paid_search", "paid_social", "email", "affiliate", "display", "podcast")
GCLID_LENGTH = 96
GCLID_ALPHABET = string.ascii_letters + string.digits + "_-"
HASH_KEY = b"bench-redis-memory"
"""Customers arrive as keyed hashes (`adpulse.core.customers`): any key will do here."""
# The README's example load.
EVENTS_PER_SECOND = 1000
CLICKS_PER_SECOND = 800
CONVERSIONS_PER_SECOND = 200


@dataclass(frozen=True)
class Usage:
    """Bytes of Redis memory: each kind of remembered id, and `used_memory` as a whole."""

    ids: int
    clicks: int
    orders: int
    customers: int
    used_memory: int
    cpu_seconds: float
    """redis-server's CPU time so far (INFO cpu, user + system)."""


def click_id(kind: str) -> str:
    if kind == "uuid":
        return str(uuid.uuid4())
    return "".join(secrets.choice(GCLID_ALPHABET) for _ in range(GCLID_LENGTH))


def build_events(
    clicks: int, conversions: int, kind: str, seed: int = 7
) -> tuple[list[Event], int]:
    """The events, and how many customers they name."""
    rng = random.Random(seed)
    rules = EventRules(hash_key=HASH_KEY)
    customers: list[str] = []
    now = datetime.now(UTC)
    click_ids = [click_id(kind) for _ in range(clicks)]
    raw: list[dict[str, object]] = [
        {
            "type": "click",
            "event_id": str(uuid.uuid4()),
            "click_id": clicked,
            "channel": rng.choice(CHANNELS),
            "campaign": f"spring_sale_{number % 50}",
        }
        for number, clicked in enumerate(click_ids)
    ]
    for _ in range(conversions):
        conversion: dict[str, object] = {
            "type": "conversion",
            "event_id": str(uuid.uuid4()),
            "order_id": str(uuid.uuid4()),
            "value": f"{rng.randint(5, 500)}.{rng.randint(0, 99):02d}",
        }
        if rng.random() < 0.6:
            conversion["click_id"] = rng.choice(click_ids)
        else:
            conversion["channel"] = rng.choice(CHANNELS)
        if rng.random() < 0.5:
            if customers and rng.random() < 1 / 3:
                conversion["customer_id"] = rng.choice(customers)
            else:
                conversion["customer_id"] = f"c{len(customers)}@example.com"
                customers.append(str(conversion["customer_id"]))
        raw.append(conversion)
    events = [parse_event(payload, rules=rules, received_at=now) for payload in raw]
    return events, len(customers)


async def usage(client: redis.Redis, keys: KeySpace) -> Usage:
    # Every key of each kind: its generations' buckets, layouts and dictionaries.
    by_kind = {"ids": 0, "clicks": 0, "ord": 0, "cust": 0}
    for kind in by_kind:
        async for key in client.scan_iter(match=keys.generation(kind, 0)[:-1] + "*"):
            by_kind[kind] += await client.memory_usage(key, samples=0) or 0
    memory = await client.info("memory")
    cpu = await client.info("cpu")
    return Usage(
        ids=by_kind["ids"],
        clicks=by_kind["clicks"],
        orders=by_kind["ord"],
        customers=by_kind["cust"],
        used_memory=int(memory["used_memory"]),
        cpu_seconds=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    )


async def measure(url: str, events: list[Event], batch_size: int) -> tuple[Usage, Usage]:
    keys = KeySpace()
    store = KpiStore.from_url(url, keys=keys)
    try:
        client = store.single_client("the memory bench")
        await client.flushdb()
        before = await usage(client, keys)
        for first in range(0, len(events), batch_size):
            await store.apply_batch(events[first : first + batch_size])
        after = await usage(client, keys)
    finally:
        await store.close()
    return before, after


def report(
    kind: str, clicks: int, conversions: int, customers: int, before: Usage, after: Usage
) -> None:
    events = clicks + conversions
    retention = Retention()
    per_id = (after.ids - before.ids) / events
    per_click = (after.clicks - before.clicks) / clicks
    per_order = (after.orders - before.orders) / conversions
    per_customer = (after.customers - before.customers) / max(customers, 1)
    per_event = (after.used_memory - before.used_memory) / events
    cpu_micros = (after.cpu_seconds - before.cpu_seconds) / events * 1e6
    day = 86_400
    ids_bytes = per_id * EVENTS_PER_SECOND * retention.dedupe.total_seconds()
    clicks_bytes = per_click * CLICKS_PER_SECOND * retention.attribution.total_seconds()
    orders_bytes = per_order * CONVERSIONS_PER_SECOND * retention.order.total_seconds()
    print(f"\n{kind} click ids: {clicks:,} clicks + {conversions:,} conversions")
    print(f"  event ids    {per_id:7.1f} bytes per event       (MEMORY USAGE of ids:*)")
    print(
        f"  clicks       {per_click:7.1f} bytes per click       (clicks:*, id -> channel, campaign)"
    )
    print(f"  order ids    {per_order:7.1f} bytes per conversion  (ord:*, the order's state)")
    print(f"  customers    {per_customer:7.1f} bytes per customer    (cust:*, acquisition, cohort)")
    print(f"  used_memory  {per_event:7.1f} bytes per event       (INFO memory, growth)")
    print(f"  redis CPU    {cpu_micros:7.1f} µs per event          (INFO cpu; noisy machines vary)")
    print(
        f"  at {EVENTS_PER_SECOND:,} events/s ({CLICKS_PER_SECOND} clicks, "
        f"{CONVERSIONS_PER_SECOND} conversions): event ids {ids_bytes / 1e9:.1f} GB "
        f"({retention.dedupe.total_seconds() / 3600:.0f} h), clicks {clicks_bytes / 1e9:.1f} GB "
        f"({retention.attribution.total_seconds() / day:.0f} days), order ids "
        f"{orders_bytes / 1e9:.1f} GB ({retention.order.total_seconds() / day:.0f} days); "
        "a generation may hold ids up to a quarter window longer"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=160_000)
    parser.add_argument("--conversions", type=int, default=40_000)
    parser.add_argument("--click-ids", default="uuid,gclid", help="uuid, gclid or both")
    parser.add_argument("--batch-size", type=int, default=5000, help="the worker's default")
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.click_ids.split(",")]
    if not set(kinds) <= {"uuid", "gclid"} or args.clicks < 1 or args.conversions < 1:
        parser.error("--click-ids takes uuid and/or gclid; --clicks and --conversions >= 1")
    version = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; {version}")
    server = RedisServer()
    try:
        server.start()
        for kind in kinds:
            events, customers = build_events(args.clicks, args.conversions, kind)
            before, after = asyncio.run(measure(server.url_for(1), events, args.batch_size))
            report(kind, args.clicks, args.conversions, customers, before, after)
    finally:
        server.close()


if __name__ == "__main__":
    main()
