"""`adpulse coupons`: the coupon registry (code -> channel) that attributes redemptions.

adpulse coupons add SUMMER10 email
adpulse coupons import coupons.csv      # header: code,channel
adpulse coupons list
adpulse coupons remove SUMMER10

A change goes to the registry topic in Kafka first (`stream.registry`, so that `adpulse
rebuild` restores it after Redis is lost), then to Redis; Kafka unreachable: no change.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adpulse.core.channels import channel_slug
from adpulse.core.options import KAFKA, REDIS_URL, REGISTRY_TOPIC, add_arguments, resolve

CSV_HEADER = ("code", "channel")


class CouponFileError(ValueError):
    """A coupon CSV that cannot be imported; nothing of it was written."""


def register(subcommands: Any) -> None:
    # Shared flags go before or after the action alike; SUPPRESS keeps an action's parser from
    # overwriting a value given before the action with its own default.
    shared = argparse.ArgumentParser(add_help=False)
    add_arguments(shared, [REDIS_URL, KAFKA, REGISTRY_TOPIC], default=argparse.SUPPRESS)
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "coupons",
        parents=[shared],
        help="manage the coupon registry (coupon code -> channel)",
        description=(
            "Manage the coupon registry the worker uses to attribute redemptions and "
            "conversions that carry a coupon but no channel. Codes are upper-cased; "
            "channels are slugs ('Paid Search' becomes paid_search)."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        parents=[shared],
        help="register a code for a channel (or move it)",
        description=(
            "Register CODE (upper-cased) for CHANNEL (a slug: 'Paid Search' becomes "
            "paid_search). A code registered already is moved to CHANNEL, and the output says "
            "from which channel. Redemptions counted before keep their channel."
        ),
    )
    add.add_argument("code", help="the coupon code, e.g. SUMMER10")
    add.add_argument("channel", help="the channel its redemptions count for, e.g. email")
    load = actions.add_parser(
        "import",
        parents=[shared],
        help="register every row of a CSV file with the header code,channel",
        description=(
            "Register every row of a CSV file (UTF-8) whose first line is the header "
            "code,channel, e.g. the line SUMMER10,email. Codes registered already are moved to "
            "the file's channel. Every row is checked before anything is written: one bad row "
            "(a bad code or channel, a wrong column count, a code given twice for different "
            "channels), no change."
        ),
    )
    load.add_argument("file", type=Path, help="the CSV file, header code,channel")
    actions.add_parser(
        "list",
        parents=[shared],
        help="print every registered code and its channel",
        description="Print every registered coupon code and its channel, sorted by code.",
    )
    remove = actions.add_parser(
        "remove",
        parents=[shared],
        help="forget a code",
        description=(
            "Forget a coupon code: later redemptions with it are counted as unattributed. "
            "Exit code 1 when it was not registered."
        ),
    )
    remove.add_argument("code", help="the coupon code to forget")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    url = resolve(args, env, REDIS_URL)
    registry = Registry(resolve(args, env, KAFKA), resolve(args, env, REGISTRY_TOPIC))
    rows: list[tuple[str, str]] = []
    if args.action == "import":
        try:
            rows = read_csv(args.file)
        except CouponFileError as error:
            return _fail(str(error), 1)
    return asyncio.run(_run(args, url, registry, rows))


@dataclass(frozen=True, slots=True)
class Registry:
    kafka: str
    topic: str

    async def publish(self, rows: list[tuple[str, str | None]]) -> None:
        """Every row to the registry topic (None: removed) before Redis is written."""
        from stream.registry import RegistryEntry, publish

        await publish(self.kafka, self.topic, [RegistryEntry("coupon", c, v) for c, v in rows])


async def _run(
    args: argparse.Namespace, url: str, registry: Registry, rows: list[tuple[str, str]]
) -> int:
    from stream.errors import StoreUnavailable
    from stream.registry import RegistryUnavailable
    from stream.store import KpiStore

    store = KpiStore.from_url(url)
    try:
        await store.follow_active_prefix()
        if args.action == "add":
            code, channel = _code(args.code), channel_slug(args.channel)
            before = (await store.list_coupons()).get(code)
            await registry.publish([(code, channel)])
            await store.add_coupon(code, channel)
            print(added_message(code, channel, before))
        elif args.action == "import":
            checked = [(_code(code), channel_slug(channel)) for code, channel in rows]
            await registry.publish(list(checked))
            count = await store.import_coupons(checked)
            print(f"imported {count} coupon codes from {args.file}")
        elif args.action == "list":
            coupons = await store.list_coupons()
            width = max((len(code) for code in coupons), default=4)
            for code, channel in coupons.items():
                print(f"{code:<{width}}  {channel}")
        else:
            code = _code(args.code)
            if code not in await store.list_coupons():
                return _fail(f"coupon {code} is not registered", 1)
            await registry.publish([(code, None)])
            await store.remove_coupon(code)
            print(f"removed {code}")
    except ValueError as error:
        return _fail(str(error), 1)
    except StoreUnavailable as error:
        return _fail(f"{error} ({url})", 1)
    except RegistryUnavailable as error:
        return _fail(f"{error}; nothing changed", 1)
    finally:
        await store.close()
    return 0


def added_message(code: str, channel: str, before: str | None) -> str:
    if before is None:
        return f"{code} -> {channel}"
    if before == channel:
        return f"{code} -> {channel} (registered already, unchanged)"
    return f"{code} -> {channel} (moved from {before} to {channel})"


def _code(text: str) -> str:
    from stream.store import coupon_code

    return coupon_code(text)


def read_csv(path: Path) -> list[tuple[str, str]]:
    """The (code, channel) rows of a CSV with the header ``code,channel``, all checked.

    CouponFileError names the file, the line and the reason of the first problem: a bad code
    or channel, a wrong column count, or a code given twice with different channels.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise CouponFileError(f"cannot read {path}: {error}") from error
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(cell.strip().lower() for cell in header) != CSV_HEADER:
        raise CouponFileError(f"{path}: the first line must be the header code,channel")
    rows: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != 2:
            raise CouponFileError(f"{path} line {line}: expected 2 columns, got {len(cells)}")
        try:
            code, channel = _code(cells[0]), channel_slug(cells[1])
        except ValueError as error:
            raise CouponFileError(f"{path} line {line}: {error}") from error
        if seen.setdefault(code, channel) != channel:
            raise CouponFileError(
                f"{path} line {line}: {code} is given twice, for {seen[code]} and {channel}"
            )
        rows.append((code, channel))
    if not rows:
        raise CouponFileError(f"{path}: no coupon rows after the header")
    return rows


def _fail(message: str, code: int) -> int:
    print(f"adpulse coupons: {message}", file=sys.stderr)
    return code
