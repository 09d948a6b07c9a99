"""`adpulse numbers`: the tracked phone numbers (static ones, and pools for dynamic insertion).

adpulse numbers add +14155550100 flyers --campaign spring   # a static number
adpulse numbers pool add paid_search +14155550101 +14155550102
adpulse numbers import numbers.csv    # header: number,channel[,campaign[,kind]]
adpulse numbers list
adpulse numbers remove +14155550100

A change goes to the registry topic in Kafka first (`stream.registry`, so that `adpulse
rebuild` restores it after Redis is lost), then to Redis, in `adpulse.core.phone`'s layout that
the tracker reads (its `--redis-url`); Kafka unreachable: no change.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from adpulse.cli.registry import REGISTRY_SETTINGS, Actions, RegistryCommand, read_csv
from adpulse.core.channels import channel_slug
from adpulse.core.event import EventRules
from adpulse.core.fields import parse_text
from adpulse.core.options import resolve
from adpulse.core.phone import PHONE_REGION, POOL, STATIC, NumberEntry, normalise_number

if TYPE_CHECKING:
    from stream.registry import RegistryEntry

CSV_COLUMNS = ("number", "channel", "campaign", "kind")
# A number's campaign is its calls' campaign, so it has an event's limit.
MAX_CAMPAIGN_LENGTH = EventRules().max_campaign_length
SETTINGS = (*REGISTRY_SETTINGS, PHONE_REGION)


class Numbers(RegistryCommand):
    name = "numbers"
    kind = "number"
    settings = SETTINGS

    def entries(self, args: argparse.Namespace, env: Mapping[str, str]) -> list[RegistryEntry]:
        """The entries an add, pool add, import or remove names, all checked."""
        region = resolve(args, env, PHONE_REGION)
        if args.action == "add":
            return [_record(entry(args.number, STATIC, args.channel, args.campaign, region))]
        if args.action == "pool":
            return [_record(entry(n, POOL, args.channel, "", region)) for n in args.numbers]
        if args.action == "import":
            return read_entries(args.file, region)
        from stream.registry import RegistryEntry

        return [RegistryEntry(self.kind, normalise_number(args.number, region), None)]

    def changed(
        self, args: argparse.Namespace, entries: list[RegistryEntry], before: list[str | None]
    ) -> list[str]:
        return [
            registered_message(_number(new.key, str(new.value)), _number(new.key, old))
            for new, old in zip(entries, before, strict=True)
        ]

    def listed(self, registered: dict[str, str]) -> list[str]:
        lines = []
        for number, text in registered.items():
            found = NumberEntry.decode(number, text)
            campaign = found.campaign or "-"
            lines.append(f"{found.number:<16}  {found.kind:<6}  {found.channel}  {campaign}")
        return lines


COMMAND = Numbers()


def register(subcommands: Any) -> None:
    command = Actions(
        subcommands,
        COMMAND,
        help="manage the tracked phone numbers (static numbers and pools)",
        description=(
            "Manage the tracked phone numbers: a static number counts its calls for one "
            "channel (and campaign); a pool's numbers are shown to a channel's visitors by the "
            "site snippet (GET /v1/number), each held for one visitor for ADPULSE_NUMBER_LEASE, "
            "so a call counts for the visit's channel, campaign and click. Numbers are stored "
            "in E.164 (+14155550123); national ones need --phone-region."
        ),
    )
    add = command.add(
        "add",
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
    pool = command.add(
        "pool",
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
    command.add_import(
        "number,channel[,campaign[,kind]]",
        "Register every row of a CSV file (UTF-8) whose first line is the header "
        "number,channel and optionally campaign and kind (static, the default, or pool).",
    )
    command.add_list_and_remove(
        "every registered number with its kind, channel and campaign",
        "number",
        "phone number",
        "later calls to it count as unattributed",
    )


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


def read_entries(path: Path, region: str | None) -> list[RegistryEntry]:
    """The entries of a CSV with the header ``number,channel[,campaign[,kind]]``, all checked;
    RegistryFileError names the file, the line and the reason of the first problem."""

    def row(cells: dict[str, str]) -> RegistryEntry:
        kind = (cells.get("kind") or STATIC).strip().lower()
        if kind not in (STATIC, POOL):
            raise ValueError(f"kind is static or pool, not {kind!r}")
        return _record(entry(cells["number"], kind, cells["channel"], cells.get("campaign", ""),
                             region))  # fmt: skip

    return read_csv(path, CSV_COLUMNS, 2, row, "number",
                    lambda found: _where(_number(found.key, str(found.value))))  # fmt: skip


def _record(found: NumberEntry) -> RegistryEntry:
    from stream.registry import number_entry

    return number_entry(found)


@overload
def _number(number: str, text: str) -> NumberEntry: ...
@overload
def _number(number: str, text: str | None) -> NumberEntry | None: ...
def _number(number: str, text: str | None) -> NumberEntry | None:
    return None if text is None else NumberEntry.decode(number, text)
