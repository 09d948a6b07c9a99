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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adpulse.cli.registry import Actions, RegistryCommand, RegistryFileError
from adpulse.cli.registry import read_csv as read_registry_csv

if TYPE_CHECKING:
    from stream.registry import RegistryEntry

CSV_HEADER = ("code", "channel")


class CouponFileError(RegistryFileError):
    """A coupon CSV that cannot be imported; nothing of it was written."""


class Coupons(RegistryCommand):
    name = "coupons"
    kind = "coupon"

    def entries(self, args: argparse.Namespace, env: Mapping[str, str]) -> list[RegistryEntry]:
        if args.action == "import":
            return read_entries(args.file)
        if args.action == "add":
            return [_entry(args.code, args.channel)]
        return [_entry(args.code, None)]

    def changed(
        self, args: argparse.Namespace, entries: list[RegistryEntry], before: list[str | None]
    ) -> list[str]:
        if args.action == "import":
            codes = len({entry.key for entry in entries})
            return [f"imported {codes} coupon codes from {args.file}"]
        (entry,), (old,) = entries, before
        return [added_message(entry.key, str(entry.value), old)]

    def listed(self, registered: dict[str, str]) -> list[str]:
        width = max((len(code) for code in registered), default=4)
        return [f"{code:<{width}}  {channel}" for code, channel in registered.items()]

    def missing(self, key: str) -> str:
        return f"coupon {key} is not registered"


COMMAND = Coupons()


def register(subcommands: Any) -> None:
    command = Actions(
        subcommands,
        COMMAND,
        help="manage the coupon registry (coupon code -> channel)",
        description=(
            "Manage the coupon registry the worker uses to attribute redemptions and "
            "conversions that carry a coupon but no channel. Codes are upper-cased; "
            "channels are slugs ('Paid Search' becomes paid_search)."
        ),
    )
    add = command.add(
        "add",
        help="register a code for a channel (or move it)",
        description=(
            "Register CODE (upper-cased) for CHANNEL (a slug: 'Paid Search' becomes "
            "paid_search). A code registered already is moved to CHANNEL, and the output says "
            "from which channel. Redemptions counted before keep their channel."
        ),
    )
    add.add_argument("code", help="the coupon code, e.g. SUMMER10")
    add.add_argument("channel", help="the channel its redemptions count for, e.g. email")
    command.add_import(
        "code,channel",
        "Register every row of a CSV file (UTF-8) whose first line is the header code,channel, "
        "e.g. the line SUMMER10,email. Codes registered already are moved to the file's "
        "channel; a code given twice for different channels is a bad row.",
    )
    command.add_list_and_remove(
        "every registered coupon code and its channel, sorted by code",
        "code",
        "coupon code",
        "later redemptions with it are counted as unattributed",
    )


def added_message(code: str, channel: str, before: str | None) -> str:
    if before is None:
        return f"{code} -> {channel}"
    if before == channel:
        return f"{code} -> {channel} (registered already, unchanged)"
    return f"{code} -> {channel} (moved from {before} to {channel})"


def _entry(code: str, channel: str | None) -> RegistryEntry:
    from stream.registry import coupon_entry

    return coupon_entry(code, channel)


def read_entries(path: Path) -> list[RegistryEntry]:
    return read_registry_csv(
        path,
        CSV_HEADER,
        len(CSV_HEADER),
        lambda row: _entry(row["code"], row["channel"]),
        "coupon",
        lambda entry: str(entry.value),
        CouponFileError,
    )


def read_csv(path: Path) -> list[tuple[str, str]]:
    """The (code, channel) rows of a CSV with the header ``code,channel``, all checked.

    CouponFileError names the file, the line and the reason of the first problem: a bad code
    or channel, a wrong column count, or a code given twice with different channels.
    """
    return [(entry.key, str(entry.value)) for entry in read_entries(path)]
