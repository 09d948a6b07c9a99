"""History and cost files into the day buckets: parsing (pure) and the writes.

`adpulse import history` loads past periods per (date, channel, campaign) straight into the day
and month buckets (``stream.keys``): each row's figures are remembered in ``hist:{day}``, so a
re-import writes only the difference and never doubles. `adpulse import costs` turns the daily
cost exports of Google Ads and Meta Ads Manager (or a plain CSV) into spend records, one per
(date, channel, campaign) with a deterministic id: a re-import restates the earlier figure, as
re-sending a spend event does (`stream.aggregate.SpendRecord`).

On a Redis Cluster both write where one instance's figures would be read from: a history row in
its channel's part of the key space (`history_part`), a cost row's spend record in its id's part,
through the worker's own per-part script call (`KpiStore.apply_spend`).

Parsing checks every row first: `ImportFileError` names the line and the reason of the first
bad row, and nothing is written (unless bad rows are skipped, which are then listed).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Final, Generic, TypeVar

from redis.exceptions import ResponseError

from adpulse.core.channels import channel_slug
from adpulse.core.currencies import parse_micros
from adpulse.core.event import Event, EventRules, EventType
from stream.aggregate import BatchResult
from stream.days import LocalDays, day_number, month_number, next_month
from stream.errors import StoreUnavailable
from stream.keys import KeySpace, part_of
from stream.lua import assemble
from stream.store import REDIS_UNAVAILABLE, KpiStore, slot_moving

# A row's amounts and campaign have the limits an event's have (the contract's defaults), so
# that an import holds nothing an event could not.
MAX_AMOUNT: Final = EventRules().max_money
MAX_COUNT: Final = 10**12
MAX_CAMPAIGN_LENGTH: Final = EventRules().max_campaign_length
HISTORY_COLUMNS: Final = (
    "date",
    "channel",
    "campaign",
    "clicks",
    "conversions",
    "revenue",
    "spend",
)
HISTORY_OPTIONAL: Final = ("redemptions", "leads")
COST_FORMATS: Final = ("google-ads", "meta", "csv")
DEFAULT_COST_CHANNELS: Final = {"google-ads": "paid_search", "meta": "paid_social"}
IMPORT_BATCH: Final = 500
"""Rows per Redis call: one script call stays short however large the file."""


class ImportFileError(ValueError):
    """A file that cannot be imported: `line` (1-based, in the file) and `reason`."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HistoryRow:
    day: date
    channel: str
    campaign: str
    clicks: int
    redemptions: int
    conversions: int
    revenue_micros: int
    spend_micros: int
    leads: int = 0

    def encode(self) -> str:
        return (
            f"{self.clicks},{self.redemptions},{self.conversions},"
            f"{self.revenue_micros},{self.spend_micros},{self.leads}"
        )


@dataclass(frozen=True, slots=True)
class CostRow:
    day: date
    channel: str
    campaign: str
    cost_micros: int


T = TypeVar("T")


@dataclass(slots=True)
class Parsed(Generic[T]):
    rows: list[T] = field(default_factory=list)
    skipped: list[ImportFileError] = field(default_factory=list)


def _count(text: str, column: str) -> int:
    cleaned = text.strip().replace(",", "")
    if not cleaned:
        return 0
    if not cleaned.isascii() or not cleaned.isdigit():
        raise ValueError(f"{column}: {text!r} is not a whole number")
    value = int(cleaned)
    if value > MAX_COUNT:
        raise ValueError(f"{column}: more than {MAX_COUNT}")
    return value


def _money(text: str, column: str) -> int:
    try:
        return parse_micros(text.strip().replace(",", ""), MAX_AMOUNT) or 0
    except ValueError as error:
        raise ValueError(f"{column}: {error}") from None


def _day(text: str, column: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{column}: {text!r} is not a date YYYY-MM-DD") from None


def _campaign(text: str) -> str:
    campaign = text.strip()
    if len(campaign) > MAX_CAMPAIGN_LENGTH:
        raise ValueError(f"campaign: longer than {MAX_CAMPAIGN_LENGTH} characters")
    return campaign


def _channel(text: str) -> str:
    try:
        return channel_slug(text)
    except ValueError as error:
        raise ValueError(f"channel: {error}") from None


def parse_history(lines: Iterable[str], *, skip_bad: bool = False) -> Parsed[HistoryRow]:
    """The rows of a history CSV (header: date, channel, campaign, clicks, conversions,
    revenue, spend; optional redemptions and leads). A (date, channel, campaign) twice is bad."""
    parsed: Parsed[HistoryRow] = Parsed()
    reader = csv.reader(lines)
    header = [name.strip().lower() for name in next(reader, [])]
    missing = [name for name in HISTORY_COLUMNS if name not in header]
    if missing:
        raise ImportFileError(1, f"the header lacks {', '.join(missing)}")
    position: dict[str, int] = {
        name: header.index(name) for name in (*HISTORY_COLUMNS, *HISTORY_OPTIONAL) if name in header
    }
    seen: set[tuple[date, str, str]] = set()
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        try:
            if len(cells) != len(header):
                raise ValueError(f"{len(cells)} cells for {len(header)} columns")

            def cell(name: str, cells: list[str] = cells) -> str:
                index = position.get(name)
                return "" if index is None else cells[index]

            row = HistoryRow(
                _day(cell("date"), "date"),
                _channel(cell("channel")),
                _campaign(cell("campaign")),
                _count(cell("clicks"), "clicks"),
                _count(cell("redemptions"), "redemptions"),
                _count(cell("conversions"), "conversions"),
                _money(cell("revenue"), "revenue"),
                _money(cell("spend"), "spend"),
                _count(cell("leads"), "leads"),
            )
            key = (row.day, row.channel, row.campaign)
            if key in seen:
                raise ValueError(f"{row.day} {row.channel} {row.campaign!r} appears twice")
            seen.add(key)
        except ValueError as error:
            bad = ImportFileError(line, str(error))
            if not skip_bad:
                raise bad from None
            parsed.skipped.append(bad)
            continue
        parsed.rows.append(row)
    return parsed


_AMOUNT_SPENT: Final = re.compile(r"amount spent \(([A-Z]{3})\)")


def parse_costs(
    lines: Iterable[str],
    file_format: str,
    *,
    currency: str,
    channel: str | None = None,
    skip_bad: bool = False,
) -> Parsed[CostRow]:
    """Daily costs per campaign of a Google Ads or Meta Ads Manager export, or of a plain CSV
    (date, channel, campaign, cost[, currency]). Rows of one (date, channel, campaign) are
    summed; a currency other than `currency` is a bad row (convert before importing)."""
    if file_format not in COST_FORMATS:
        raise ValueError(f"format must be one of {', '.join(COST_FORMATS)}")
    fixed_channel = _channel(channel) if channel else DEFAULT_COST_CHANNELS.get(file_format)
    parsed: Parsed[CostRow] = Parsed()
    reader = csv.reader(lines)
    header: list[str] = []
    header_line = 0
    # Google Ads puts a title and the date range above its header: find the header row.
    for header_line, cells in enumerate(reader, start=1):  # noqa: B007
        header = [cell.strip().lower() for cell in cells]
        if _cost_columns(header, file_format) is not None:
            break
    else:
        raise ImportFileError(max(header_line, 1), _header_needs(file_format))
    columns = _cost_columns(header, file_format)
    assert columns is not None  # found above
    day_column, campaign_column, cost_column, currency_column, channel_column = columns
    sums: dict[tuple[date, str, str], int] = {}
    for line, cells in enumerate(reader, start=header_line + 1):
        if not any(cell.strip() for cell in cells) or cells[0].strip().lower().startswith("total"):
            continue  # blank lines and the exports' total rows
        try:
            if len(cells) < len(header):
                raise ValueError(f"{len(cells)} cells for {len(header)} columns")
            row_currency = (
                header[cost_column].partition("(")[2].rstrip(")").upper()
                if currency_column is None and file_format == "meta"
                else cells[currency_column].strip().upper()
                if currency_column is not None
                else currency
            )
            if row_currency and row_currency != currency:
                raise ValueError(f"cost in {row_currency}, the reporting currency is {currency}")
            if file_format == "meta" and day_column is None:
                starts = _day(cells[header.index("reporting starts")], "Reporting starts")
                ends = _day(cells[header.index("reporting ends")], "Reporting ends")
                if starts != ends:
                    raise ValueError("not a daily row: export with the breakdown by day")
                day = starts
            else:
                day = _day(cells[day_column or 0], header[day_column or 0])
            row_channel = (
                _channel(cells[channel_column]) if channel_column is not None else fixed_channel
            )
            if not row_channel:
                raise ValueError("no channel: give --channel")
            key = (day, row_channel, _campaign(cells[campaign_column]))
            sums[key] = sums.get(key, 0) + _money(cells[cost_column], header[cost_column])
        except ValueError as error:
            bad = ImportFileError(line, str(error))
            if not skip_bad:
                raise bad from None
            parsed.skipped.append(bad)
    parsed.rows = [CostRow(d, ch, camp, cost) for (d, ch, camp), cost in sums.items()]
    return parsed


def _cost_columns(
    header: Sequence[str], file_format: str
) -> tuple[int | None, int, int, int | None, int | None] | None:
    """(day, campaign, cost, currency, channel) positions, or None when `header` is not the
    format's header row."""

    def find(*names: str) -> int | None:
        for name in names:
            if name in header:
                return header.index(name)
        return None

    if file_format == "google-ads":
        day, campaign, cost = find("day", "date"), find("campaign"), find("cost")
        if day is None or campaign is None or cost is None:
            return None
        return day, campaign, cost, find("currency code", "currency"), None
    if file_format == "meta":
        spent = next((i for i, name in enumerate(header) if name.startswith("amount spent")), None)
        campaign = find("campaign name")
        day = find("day")
        if spent is None or campaign is None:
            return None
        if day is None and ("reporting starts" not in header or "reporting ends" not in header):
            return None
        return day, campaign, spent, find("currency"), None
    day, campaign, cost = find("date"), find("campaign"), find("cost", "spend")
    if day is None or campaign is None or cost is None:
        return None
    return day, campaign, cost, find("currency"), find("channel")


def _header_needs(file_format: str) -> str:
    return {
        "google-ads": "no header row with Day, Campaign and Cost (a Google Ads campaign report "
        "segmented by day)",
        "meta": "no header row with Campaign name, Amount spent (XXX) and Day or Reporting "
        "starts/ends (an Ads Manager export broken down by day)",
        "csv": "no header row with date, campaign and cost (channel and currency optional)",
    }[file_format]


def chunks(rows: Sequence[T], size: int = IMPORT_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- writes --------------------------------------------------------------------------------

_HISTORY_ARGUMENTS: Final = r"""
-- ARGV: prefix, max channels, max campaigns, then per row: day, month, day expiry, month expiry,
-- channel, campaign, figures "k,r,c,v,s,l" (an earlier import's record may lack the leads: 0).
-- Each row replaces what an earlier import put into its day: the day's and month's buckets get
-- the difference.
-- A row counts where an event would: its channel while the channel set knows it or has room,
-- else "unlisted"; its campaign while the channel's set for the month knows it or has room,
-- else "other", by the apply-batch script's own `admit` and `admit_campaign` (its admission
-- part, which follows). The record remembers where the row went, so a re-import takes the old
-- figures from there whatever the sets hold by then.
local p = ARGV[1]
local max_channels, max_campaigns = tonumber(ARGV[2]), tonumber(ARGV[3])
"""
_HISTORY_ROWS: Final = r"""
local counters = {'k', 'r', 'c', 'v', 's', 'l'}
local function split(text)
  local values = {}
  if text then
    for value in string.gmatch(text, '[^,]+') do values[#values + 1] = tonumber(value) end
  end
  return values
end
local unlisted, other = 0, 0
for j = 4, #ARGV, 7 do
  local day, month, day_expiry, month_expiry = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]
  local channel, campaign, figures = ARGV[j + 4], ARGV[j + 5], ARGV[j + 6]
  local record_key = p .. 'hist:' .. day
  local record_field = channel .. '\t' .. campaign
  -- A record is "figures" (written before rows were capped: counted under its own names) or
  -- "figures\nchannel\tcampaign" (where the row was counted).
  local record = redis.call('HGET', record_key, record_field)
  local old, old_row = nil, nil
  if record then
    local newline = string.find(record, '\n', 1, true)
    if newline then
      old, old_row = string.sub(record, 1, newline - 1), string.sub(record, newline + 1)
    else
      old, old_row = record, record_field
    end
  end
  local row = old_row
  if row == nil then
    local kept_channel = admit(channel)
    local kept_campaign = admit_campaign(month, tonumber(month_expiry), kept_channel, campaign)
    row = kept_channel .. '\t' .. kept_campaign
  end
  local kept_channel = string.match(row, '^[^\t]*')
  if kept_channel ~= channel then unlisted = unlisted + 1 end
  if string.sub(row, #kept_channel + 2) ~= campaign then other = other + 1 end
  local olds, news = split(old), split(figures)
  for i, counter in ipairs(counters) do
    local delta = (news[i] or 0) - (olds[i] or 0)
    if delta ~= 0 then
      local text = string.format('%d', delta)
      redis.call('HINCRBY', p .. 'd:' .. day, kept_channel .. ':' .. counter, text)
      redis.call('HINCRBY', p .. 'mo:' .. month, kept_channel .. ':' .. counter, text)
      redis.call('HINCRBY', p .. 'dc:' .. day, row .. ':' .. counter, text)
      redis.call('HINCRBY', p .. 'mc:' .. month, row .. ':' .. counter, text)
    end
  end
  redis.call('HSET', record_key, record_field, figures .. '\n' .. row)
  for _, key in ipairs({p .. 'd:' .. day, p .. 'dc:' .. day, record_key}) do
    redis.call('EXPIREAT', key, day_expiry)
  end
  for _, key in ipairs({p .. 'mo:' .. month, p .. 'mc:' .. month}) do
    redis.call('EXPIREAT', key, month_expiry)
  end
end
return {(#ARGV - 3) / 7, unlisted, other}
"""
IMPORT_HISTORY: Final = _HISTORY_ARGUMENTS + assemble(("admission",)) + _HISTORY_ROWS
"""History rows into the buckets, with the apply-batch script's channel and campaign caps."""


@dataclass(slots=True)
class HistoryResult:
    """What a history import wrote: `rows`, and of them those counted under channel
    "unlisted" (the channel set was full) or campaign "other" (the channel's campaigns for
    the month were), as events would be."""

    rows: int = 0
    unlisted: int = 0
    other_campaigns: int = 0


def history_arguments(rows: Sequence[HistoryRow], days: LocalDays) -> list[str | int]:
    """The arguments of `IMPORT_HISTORY` (after the prefix) for `rows`."""
    arguments: list[str | int] = []
    for row in rows:
        month_first = row.day.replace(day=1)
        arguments += (
            day_number(row.day),
            month_number(row.day),
            days.start(date.fromordinal(row.day.toordinal() + 1)) + days.retention_seconds,
            days.start(next_month(month_first)) + days.retention_seconds,
            row.channel,
            row.campaign,
            row.encode(),
        )
    return arguments


def cost_id(source: str, row: CostRow) -> str:
    """The spend id of a cost row: the same for the same (source, date, channel, campaign)."""
    key = "\t".join((source, row.day.isoformat(), row.channel, row.campaign))
    return f"import-{hashlib.blake2b(key.encode(), digest_size=12).hexdigest()}"


def history_part(row: HistoryRow) -> int:
    """Cluster mode: the part of the key space a history row is written in, its channel's: a
    re-import finds the row's record (``hist:{day}``) where the first left it, and a channel's
    rows of a month meet one campaign set, so its campaign cap holds as on one instance."""
    return part_of(row.channel)


async def write_history(
    store: KpiStore, rows: Sequence[HistoryRow], progress: Callable[[int], None] | None = None
) -> HistoryResult:
    """Write history rows in chunks (each row idempotent), within the store's channel and
    campaign caps (`KpiStore.max_channels`, `.max_campaigns`: give it the worker's);
    `progress` gets rows written. In cluster mode a chunk is one script call per part its
    rows go to (`history_part`), each in its part's slot, at once."""
    script = store.client.register_script(IMPORT_HISTORY)
    result = HistoryResult()

    def settings(keys: KeySpace) -> list[str | int]:
        return [keys.prefix, store.max_channels, store.max_campaigns]

    for chunk in chunks(rows):
        calls: list[tuple[KeySpace, Sequence[HistoryRow]]] = [(store.keys, chunk)]
        if store.cluster:
            parts: dict[int, list[HistoryRow]] = {}
            for row in chunk:
                parts.setdefault(history_part(row), []).append(row)
            calls = [(store.keys.part(number), part) for number, part in sorted(parts.items())]
        # The script builds its keys from the prefix; the key it is given routes a cluster's
        # call to the part's slot.
        replies = await asyncio.gather(
            *(
                script(
                    keys=[keys.stats] if store.cluster else [],
                    args=[*settings(keys), *history_arguments(part, store.days)],
                )
                for keys, part in calls
            ),
            return_exceptions=True,
        )
        for reply in replies:
            if store.cluster and isinstance(reply, ResponseError):
                reply = slot_moving(reply) or reply
            if isinstance(reply, REDIS_UNAVAILABLE):
                raise StoreUnavailable("import history", reply) from reply
            if isinstance(reply, BaseException):
                raise reply
            written, unlisted, other = reply
            result.rows += int(written)
            result.unlisted += int(unlisted)
            result.other_campaigns += int(other)
        if progress is not None:
            progress(len(chunk))
    return result


async def write_costs(
    store: KpiStore,
    rows: Sequence[CostRow],
    source: str,
    progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Write cost rows as spend records in chunks. The file restates its days: a (channel,
    campaign) an earlier import of `source` had on one of those days and this file has not
    is set to zero. What each day holds is remembered in ``KeySpace.cost_import``.

    In cluster mode each spend record goes to its part as the worker's would
    (`KpiStore.apply_spend`), and each day's ``cost_import`` key is a key of its own slot."""
    restated: dict[date, dict[str, str]] = {}
    for row in rows:
        restated.setdefault(row.day, {})[cost_id(source, row)] = f"{row.channel}\t{row.campaign}"
    keys = {day: store.keys.cost_import(source, day_number(day)) for day in restated}
    try:
        # The store's client decodes responses: names and values are str.
        earlier: list[dict[str, str]] = [
            await store.client.hgetall(key)  # type: ignore[misc]
            for key in keys.values()
        ]
    except REDIS_UNAVAILABLE as error:
        raise StoreUnavailable("import costs", error) from error
    gone = [
        CostRow(day, pair.partition("\t")[0], pair.partition("\t")[2], 0)
        for day, held in zip(keys, earlier, strict=True)
        for spend_id, pair in held.items()
        if spend_id not in restated[day]
    ]
    # The spend records of imported days live as long as the day buckets they were added to:
    # a record gone after the 400 days of one sent to /v1/spend would make a re-import of a
    # year-old file count it twice. The rest is the store's (its buckets, caps, time zone).
    lasting = KpiStore(
        store.client,
        keys=store.keys,
        retention=replace(store.retention, spend_record=store.retention.day),
        max_channels=store.max_channels,
        zone=store.days.zone,
        max_campaigns=store.max_campaigns,
    )
    result = BatchResult()
    done = 0
    for chunk in chunks([*rows, *gone], 50):
        result += await lasting.apply_spend(cost_events(chunk, store.days, source))
        step = min(len(chunk), len(rows) - done)  # the progress bar counts the file's rows
        done += step
        if progress is not None and step > 0:
            progress(step)
    # One MULTI/EXEC; in cluster mode one per day (its key's slot): a day's record is whole.
    batches = [list(keys.items())] if not store.cluster else [[item] for item in keys.items()]
    try:
        for batch in batches:
            async with store.client.pipeline(transaction=True) as pipe:
                for day, key in batch:
                    pipe.delete(key)
                    pipe.hset(key, mapping=restated[day])  # type: ignore[arg-type]
                    expiry = store.days.start(day) + store.days.retention_seconds + 86_400
                    pipe.expireat(key, expiry)
                await pipe.execute()
    except REDIS_UNAVAILABLE as error:
        raise StoreUnavailable("import costs", error) from error
    return result


def cost_events(rows: Iterable[CostRow], days: LocalDays, source: str) -> list[Event]:
    """One spend event per row over its local day, with an id that a re-import repeats."""
    events: list[Event] = []
    received = datetime.now(UTC)
    for row in rows:
        start = datetime.fromtimestamp(days.start(row.day), UTC)
        end = datetime.fromtimestamp(days.start(date.fromordinal(row.day.toordinal() + 1)), UTC)
        events.append(
            Event(
                event_id=cost_id(source, row),
                type=EventType.SPEND,
                ts=start,
                received_at=received,
                channel=row.channel,
                campaign=row.campaign or None,
                cost_micros=row.cost_micros,
                start=start,
                end=end,
            )
        )
    return events
