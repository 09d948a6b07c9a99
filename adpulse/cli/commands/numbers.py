"""`adpulse numbers`: the tracked phone numbers (static ones, and pools for dynamic insertion).

adpulse numbers add +14155550100 flyers --campaign spring   # a static number
adpulse numbers pool add paid_search +14155550101 +14155550102
adpulse numbers import numbers.csv    # header: number,channel[,campaign[,kind]]
adpulse numbers list
adpulse numbers remove +14155550100

The layout in Redis is `adpulse.core.phone`'s; the tracker reads it (`--redis-url`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adpulse.core.channels import channel_slug
from adpulse.core.fields import parse_text
from adpulse.core.options import REDIS_URL, add_arguments, resolve
from adpulse.core.phone import (
    PHONE_REGION,
    POOL,
    STATIC,
    NumberEntry,
    NumberError,
    NumberKeys,
    normalise_number,
    static_field,
)

if TYPE_CHECKING:
    import redis.asyncio as redis

CSV_COLUMNS = ("number", "channel", "campaign", "kind")
MAX_CAMPAIGN_LENGTH = 256
SETTINGS = (REDIS_URL, PHONE_REGION)


class NumberFileError(ValueError):
    """A numbers CSV that cannot be imported; nothing of it was written."""


def register(subcommands: Any) -> None:
    shared = argparse.ArgumentParser(add_help=False)
    add_arguments(shared, SETTINGS, default=argparse.SUPPRESS)
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "numbers",
        parents=[shared],
        help="manage the tracked phone numbers (static numbers and pools)",
        description=(
            "Manage the tracked phone numbers: a static number counts its calls for one "
            "channel (and campaign); a pool's numbers are shown to a channel's visitors by the "
            "site snippet (GET /v1/number), each held for one visitor for ADPULSE_NUMBER_LEASE, "
            "so a call counts for the visit's channel, campaign and click. Numbers are stored "
            "in E.164 (+14155550123); national ones need --phone-region."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        parents=[shared],
        help="register a static number for a channel (or move it)",
        description=(
            "Register NUMBER as a static number of CHANNEL (a slug: 'Paid Search' becomes "
            "paid_search), optionally of a campaign. A number registered already (static or "
            "pooled) is moved; the output says from where."
        ),
    )
    add.add_argument("number", help="the phone number, e.g. +14155550100")
    add.add_argument("channel", help="the channel its calls count for, e.g. flyers")
    add.add_argument("--campaign", default="", help="the campaign its calls count for")
    pool = actions.add_parser(
        "pool",
        parents=[shared],
        help="add numbers to a channel's pool for dynamic insertion: pool add CHANNEL NUMBER...",
        description=(
            "pool add CHANNEL NUMBER...: add each NUMBER to CHANNEL's pool for dynamic number "
            "insertion, moving it from wherever it was registered. A pool should hold at least "
            "the visitors a channel has at once within a lease; when it runs out, the oldest "
            "lease is reused and counted "
            '(adpulse_tracker_number_requests_total{outcome="reused"}).'
        ),
    )
    pool.add_argument(
        "pool_action",
        choices=["add"],
        metavar="add",
        help="add each NUMBER to CHANNEL's pool (moving it from wherever it was registered)",
    )
    pool.add_argument("channel", help="the channel, e.g. paid_search")
    pool.add_argument("numbers", nargs="+", metavar="NUMBER", help="phone numbers")
    load = actions.add_parser(
        "import",
        parents=[shared],
        help="register every row of a CSV file (header number,channel[,campaign[,kind]])",
        description=(
            "Register every row of a CSV file (UTF-8) whose first line is the header "
            "number,channel and optionally campaign and kind (static, the default, or pool). "
            "Every row is checked before anything is written: one bad row, no change."
        ),
    )
    load.add_argument("file", type=Path, help="the CSV file")
    actions.add_parser(
        "list",
        parents=[shared],
        help="print every registered number, its kind, channel and campaign",
        description="Print every registered number with its kind, channel and campaign.",
    )
    remove = actions.add_parser(
        "remove",
        parents=[shared],
        help="forget a number",
        description=(
            "Forget a number: later calls to it count as unattributed. Exit code 1 when it "
            "was not registered."
        ),
    )
    remove.add_argument("number", help="the phone number to forget")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    url = resolve(args, env, REDIS_URL)
    region = resolve(args, env, PHONE_REGION)
    try:
        entries = _entries(args, region)
    except (NumberError, NumberFileError, ValueError) as error:
        return _fail(str(error), 1)
    return asyncio.run(_run(args, url, region, entries))


def _entries(args: argparse.Namespace, region: str | None) -> list[NumberEntry]:
    """The entries an add, pool add or import writes, all checked."""
    if args.action == "add":
        return [entry(args.number, STATIC, args.channel, args.campaign, region)]
    if args.action == "pool":
        return [entry(number, POOL, args.channel, "", region) for number in args.numbers]
    if args.action == "import":
        return read_csv(args.file, region)
    return []


def entry(number: str, kind: str, channel: str, campaign: str, region: str | None) -> NumberEntry:
    """A checked registry entry; ValueError (NumberError) with the reason."""
    normal = normalise_number(number, region)
    slug = channel_slug(channel)
    name = parse_text(campaign, MAX_CAMPAIGN_LENGTH) or ""
    if "\t" in name:
        raise ValueError(f"campaign {campaign!r}: no tabs")
    if kind == POOL and name:
        raise ValueError(f"{normal}: a pooled number has no campaign (its lease gives one)")
    return NumberEntry(normal, kind, slug, name)


async def _run(
    args: argparse.Namespace, url: str, region: str | None, entries: list[NumberEntry]
) -> int:
    # Imported here: `adpulse --help` imports every command's module.
    import redis.asyncio as redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5.0)
    registry = NumberRegistry(client)
    try:
        if args.action in ("add", "pool", "import"):
            moved = await registry.register(entries)
            for new in entries:
                print(registered_message(new, moved.get(new.number)))
        elif args.action == "list":
            for found in await registry.entries():
                campaign = found.campaign or "-"
                print(f"{found.number:<16}  {found.kind:<6}  {found.channel}  {campaign}")
        else:
            number = normalise_number(args.number, region)
            if not await registry.remove(number):
                return _fail(f"{number} is not registered", 1)
            print(f"removed {number}")
    except NumberError as error:
        return _fail(str(error), 1)
    except (RedisError, OSError) as error:
        return _fail(f"Redis at {url} (ADPULSE_REDIS_URL) does not answer: {error}", 1)
    finally:
        await client.aclose()
    return 0


class NumberRegistry:
    """The registry's writes, each a MULTI/EXEC so the tracker never sees half of one."""

    def __init__(self, client: redis.Redis, keys: NumberKeys | None = None) -> None:
        self.client = client
        self.keys = keys or NumberKeys()

    async def entries(self) -> list[NumberEntry]:
        found = await self.client.hgetall(self.keys.registry)
        # The client decodes responses: str, whatever redis-py's types allow.
        return [
            NumberEntry.decode(str(number), str(text)) for number, text in sorted(found.items())
        ]

    async def register(self, entries: Sequence[NumberEntry]) -> dict[str, NumberEntry]:
        """Write `entries`; returns the earlier entry of each number that had one."""
        keys = self.keys
        numbers = [new.number for new in entries]
        before = await self.client.hmget(keys.registry, numbers) if numbers else []
        moved = {
            number: NumberEntry.decode(number, str(text))
            for number, text in zip(numbers, before, strict=True)
            if text is not None
        }
        async with self.client.pipeline(transaction=True) as pipe:
            for old in moved.values():
                self._unlink(pipe, old)
            for new in entries:
                pipe.hset(keys.registry, new.number, new.encode())
                if new.kind == POOL:
                    # Never leased yet: first in line for the next visitor.
                    pipe.zadd(keys.pool(new.channel), {new.number: 0}, nx=True)
                else:
                    pipe.hset(keys.static, static_field(new.channel, new.campaign), new.number)
            await pipe.execute()
        return moved

    async def remove(self, number: str) -> bool:
        text = await self.client.hget(self.keys.registry, number)
        if text is None:
            return False
        async with self.client.pipeline(transaction=True) as pipe:
            self._unlink(pipe, NumberEntry.decode(number, str(text)))
            pipe.hdel(self.keys.registry, number)
            await pipe.execute()
        return True

    def _unlink(self, pipe: Any, old: NumberEntry) -> None:
        """Take `old` out of its pool or its static slot (its lease record stays, so a call
        that started within it still counts for that visit)."""
        if old.kind == POOL:
            pipe.zrem(self.keys.pool(old.channel), old.number)
        else:
            # Only if the slot still names this number (a later add may have taken it).
            pipe.eval(
                "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then "
                "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0",
                1,
                self.keys.static,
                static_field(old.channel, old.campaign),
                old.number,
            )


def registered_message(new: NumberEntry, before: NumberEntry | None) -> str:
    where = _where(new)
    if before is None:
        return f"{new.number} -> {where}"
    if before == new:
        return f"{new.number} -> {where} (registered already, unchanged)"
    return f"{new.number} -> {where} (moved from {_where(before)})"


def _where(found: NumberEntry) -> str:
    if found.kind == POOL:
        return f"pool of {found.channel}"
    return f"{found.channel}" + (f" campaign {found.campaign}" if found.campaign else "")


def read_csv(path: Path, region: str | None) -> list[NumberEntry]:
    """The entries of a CSV with the header ``number,channel[,campaign[,kind]]``, all checked.

    NumberFileError names the file, the line and the reason of the first problem.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise NumberFileError(f"cannot read {path}: {error}") from error
    reader = csv.reader(text.splitlines())
    header = tuple(cell.strip().lower() for cell in next(reader, None) or ())
    if len(header) < 2 or header != CSV_COLUMNS[: len(header)]:
        raise NumberFileError(
            f"{path}: the first line must be the header number,channel[,campaign[,kind]]"
        )
    entries: list[NumberEntry] = []
    seen: dict[str, NumberEntry] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise NumberFileError(
                f"{path} line {line}: expected {len(header)} columns, got {len(cells)}"
            )
        row = dict(zip(header, cells, strict=True))
        kind = (row.get("kind") or STATIC).strip().lower()
        if kind not in (STATIC, POOL):
            raise NumberFileError(f"{path} line {line}: kind is static or pool, not {kind!r}")
        try:
            new = entry(row["number"], kind, row["channel"], row.get("campaign", ""), region)
        except ValueError as error:
            raise NumberFileError(f"{path} line {line}: {error}") from error
        if seen.setdefault(new.number, new) != new:
            raise NumberFileError(f"{path} line {line}: {new.number} is given twice, differently")
        entries.append(new)
    if not entries:
        raise NumberFileError(f"{path}: no rows after the header")
    return entries


def _fail(message: str, code: int) -> int:
    print(f"adpulse numbers: {message}", file=sys.stderr)
    return code
