"""Attribution, buckets, the pro-rata spend split, and the reference fold of a batch.

Pure: no Redis here. `Aggregate` is the specification of what `KpiStore.apply_batch` does to
Redis (the Lua script is its fast twin); its state is laid out exactly like the Redis keys, so
tests compare the two directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from adpulse.core.channels import UNATTRIBUTED, UNLISTED
from adpulse.core.event import Event, EventType
from stream.days import LocalDays
from stream.keys import (
    ANSWERED,
    CALLS,
    CLICKS,
    CONVERSIONS,
    DEFAULT_MAX_CAMPAIGNS,
    DEFAULT_MAX_CHANNELS,
    HOUR_SECONDS,
    LEADS,
    MINUTE_SECONDS,
    OTHER_CAMPAIGN,
    REDEMPTIONS,
    REVENUE,
    SPEND,
    KeySpace,
    Retention,
    campaign_field,
)

FIXED_CHANNELS: Final = frozenset({UNATTRIBUTED, UNLISTED})
FIXED_CAMPAIGNS: Final = frozenset({"", OTHER_CAMPAIGN})
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
MINUTE_MICROS: Final = MINUTE_SECONDS * 1_000_000

TYPE_COUNTERS: Final[Mapping[EventType, str]] = {
    EventType.CLICK: CLICKS,
    EventType.REDEMPTION: REDEMPTIONS,
    EventType.CONVERSION: CONVERSIONS,
    EventType.CALL: CALLS,
}


def epoch_micros(moment: datetime) -> int:
    """Exact microseconds since the Unix epoch of an aware datetime."""
    return (moment - EPOCH) // _MICROSECOND


def minute_of(moment: datetime) -> int:
    """The minute bucket of `moment`: Unix seconds // 60."""
    return epoch_micros(moment) // MINUTE_MICROS


def hour_of(minute: int) -> int:
    return minute * MINUTE_SECONDS // HOUR_SECONDS


def attribute(
    event: Event,
    click_channel: Mapping[str, str],
    coupon_channel: Mapping[str, str],
) -> str:
    """The channel an event counts for, in the order the issue gives.

    Its own channel; for a conversion, the channel of the click it names; for a redemption or
    conversion, the registered channel of its coupon; the edge's UTM grouping; else
    "unattributed".
    """
    if event.channel is not None:
        return event.channel
    if event.type is EventType.CONVERSION and event.click_id is not None:
        channel = click_channel.get(event.click_id)
        if channel is not None:
            return channel
    if event.coupon is not None and event.type in (EventType.REDEMPTION, EventType.CONVERSION):
        channel = coupon_channel.get(event.coupon)
        if channel is not None:
            return channel
    return event.grouped_channel or UNATTRIBUTED


def split_pro_rata(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights`; the parts sum to `total` exactly.

    Largest remainder: each part is the floor of its share, and the units left over go to the
    largest remainders, earlier parts first on a tie.

    >>> split_pro_rata(10, [1, 1, 1])
    [4, 3, 3]
    """
    weight_sum = sum(weights)
    if weight_sum <= 0 or any(weight < 0 for weight in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    parts: list[int] = []
    remainders: list[tuple[int, int]] = []
    for index, weight in enumerate(weights):
        part, remainder = divmod(total * weight, weight_sum)
        parts.append(part)
        remainders.append((-remainder, index))
    left = total - sum(parts)
    for _, index in sorted(remainders)[:left]:
        parts[index] += 1
    return parts


@dataclass(frozen=True, slots=True)
class SpendRecord:
    """What one spend event (by event id) contributed; stored so a re-send can replace it.

    `campaign` None: a record stored before day buckets existed, which added nothing to them
    (so replacing it takes nothing from them)."""

    channel: str
    start_micros: int
    end_micros: int
    cost_micros: int
    campaign: str | None = ""

    @classmethod
    def from_event(cls, event: Event) -> SpendRecord:
        if event.channel is None or event.start is None or event.end is None:
            raise ValueError(f"spend event {event.event_id} needs channel, start and end")
        start, end = epoch_micros(event.start), epoch_micros(event.end)
        if end <= start:
            raise ValueError(f"spend event {event.event_id}: end must be after start")
        return cls(event.channel, start, end, event.cost_micros or 0, event.campaign or "")

    def encode(self) -> str:
        text = f"{self.channel}\t{self.start_micros}\t{self.end_micros}\t{self.cost_micros}"
        return text if self.campaign is None else f"{text}\t{self.campaign}"

    @classmethod
    def decode(cls, text: str) -> SpendRecord:
        channel, start, end, cost, *campaign = text.split("\t", 4)
        return cls(channel, int(start), int(end), int(cost), campaign[0] if campaign else None)

    def minute_parts(self) -> list[tuple[int, int]]:
        """(minute, micros) for every minute [start, end) touches, pro rata to the overlap."""
        first = self.start_micros // MINUTE_MICROS
        last = (self.end_micros - 1) // MINUTE_MICROS
        minutes = range(first, last + 1)
        weights = [
            min(self.end_micros, (minute + 1) * MINUTE_MICROS)
            - max(self.start_micros, minute * MINUTE_MICROS)
            for minute in minutes
        ]
        return list(zip(minutes, split_pro_rata(self.cost_micros, weights), strict=True))


Increment = tuple[str, str, int, int]
"""(bucket key, hash field, delta, Unix time the key expires at or 0 for never)"""


def spend_increments(
    record: SpendRecord,
    keys: KeySpace,
    retention: Retention,
    now_seconds: int,
    sign: int = 1,
    days: LocalDays | None = None,
) -> list[Increment]:
    """The counter increments of a spend record: retained minutes, retained hours, totals,
    and (with `days`) the retained local days and months of its channel and campaign.

    An hour's or a day's part is the sum of its minutes' parts, so every tier agrees.
    """
    oldest_minute = retention.oldest_minute(now_seconds)
    oldest_hour = retention.oldest_hour(now_seconds)
    field_name = f"{record.channel}:{SPEND}"
    increments: list[Increment] = []
    hours: dict[int, int] = {}
    # local day -> (the minute that names it, micros): the day of each minute, in order
    day_parts: dict[int, list[int]] = {}
    spans = None
    if days is not None and record.campaign is not None:
        spans = iter(
            days.spans(record.start_micros // 1_000_000, -(-record.end_micros // 1_000_000))
        )
    span = next(spans, None) if spans is not None else None
    for minute, micros in record.minute_parts():
        if micros == 0:
            continue
        if minute >= oldest_minute:
            expire_at = (minute + 1) * MINUTE_SECONDS + retention.minute_seconds
            increments.append((keys.minute(minute), field_name, sign * micros, expire_at))
        hour = hour_of(minute)
        if hour >= oldest_hour:
            hours[hour] = hours.get(hour, 0) + micros
        if spans is not None:
            moment = max(minute * MINUTE_SECONDS, record.start_micros // 1_000_000)
            while span is not None and moment >= span[2]:
                span = next(spans, None)
            if span is not None:
                part = day_parts.setdefault(span[0], [moment // MINUTE_SECONDS, 0])
                part[1] += micros
    for hour, micros in hours.items():
        expire_at = (hour + 1) * HOUR_SECONDS + retention.hour_seconds
        increments.append((keys.hour(hour), field_name, sign * micros, expire_at))
    if days is not None and record.campaign is not None:
        campaign_name = campaign_field(record.channel, record.campaign, SPEND)
        for minute, micros in day_parts.values():
            day, day_expiry, month, month_expiry = days.of_minute(minute)
            if day_expiry <= now_seconds:
                continue
            increments += (
                (keys.day(day), field_name, sign * micros, day_expiry),
                (keys.month(month), field_name, sign * micros, month_expiry),
                (keys.day_campaigns(day), campaign_name, sign * micros, day_expiry),
                (keys.month_campaigns(month), campaign_name, sign * micros, month_expiry),
            )
    if record.cost_micros:
        increments.append((keys.totals, field_name, sign * record.cost_micros, 0))
    return increments


@dataclass(slots=True)
class BatchResult:
    """What one batch did. `late`: applied outside the retained minute buckets; `unlisted`:
    counted under "unlisted" because the store keeps no more channels."""

    applied: int = 0
    duplicates: int = 0
    late: int = 0
    bots: int = 0
    unlisted: int = 0
    other_campaigns: int = 0
    """Events counted under campaign "other" for want of room in their channel's month."""

    def __iadd__(self, other: BatchResult) -> BatchResult:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.late += other.late
        self.bots += other.bots
        self.unlisted += other.unlisted
        self.other_campaigns += other.other_campaigns
        return self


@dataclass
class Aggregate:
    """The reference fold: what applying batches does, in memory, keyed like Redis.

    `counters` maps a bucket key (`KeySpace.minute`, `.hour`, `.totals`) to its hash fields.
    Dedupe keys never expire here; everything else matches the store. `channels` is the
    store's channel set: at most `max_channels`, plus the coupons' channels (see `stream.keys`).
    """

    retention: Retention = field(default_factory=Retention)
    keys: KeySpace = field(default_factory=KeySpace)
    coupons: dict[str, str] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    orders: set[str] = field(default_factory=set)
    clicks: dict[str, tuple[str, str]] = field(default_factory=dict)
    callers: set[str] = field(default_factory=set)
    """Caller hashes whose qualified call counted as a lead (`KeySpace.generation`)."""
    spend: dict[str, SpendRecord] = field(default_factory=dict)
    channels: set[str] = field(default_factory=set)
    max_channels: int = DEFAULT_MAX_CHANNELS
    days: LocalDays = field(default_factory=LocalDays)
    campaign_sets: dict[str, set[str]] = field(default_factory=dict)
    """`KeySpace.campaign_set` key -> the campaigns it admitted."""
    max_campaigns: int = DEFAULT_MAX_CAMPAIGNS

    def apply(self, events: Iterable[Event], now: datetime) -> BatchResult:
        now_seconds = epoch_micros(now) // 1_000_000
        oldest_minute = self.retention.oldest_minute(now_seconds)
        oldest_hour = self.retention.oldest_hour(now_seconds)
        result = BatchResult()
        self.channels.update(set(self.coupons.values()) - FIXED_CHANNELS)
        # Spend is summed per bucket field and applied after the events, as the script does.
        spend_deltas: dict[tuple[str, str], int] = {}
        click_channels = {click: channel for click, (channel, _) in self.clicks.items()}
        for event in events:
            if event.bot:
                result.bots += 1
            elif event.type is EventType.SPEND:
                record = SpendRecord.from_event(event)
                old = self.spend.get(event.event_id)
                if old == record:
                    result.duplicates += 1
                    continue
                self.spend[event.event_id] = record
                result.applied += 1
                changes = spend_increments(
                    record, self.keys, self.retention, now_seconds, days=self.days
                )
                if old is not None:
                    changes += spend_increments(
                        old, self.keys, self.retention, now_seconds, -1, days=self.days
                    )
                for key, name, delta, _ in changes:
                    spend_deltas[key, name] = spend_deltas.get((key, name), 0) + delta
            elif event.event_id in self.seen:
                result.duplicates += 1
            else:
                self.seen.add(event.event_id)
                if event.type is EventType.CONVERSION and event.order_id is not None:
                    if event.order_id in self.orders:
                        result.duplicates += 1
                        continue
                    self.orders.add(event.order_id)
                channel = attribute(event, click_channels, self.coupons)
                campaign = event.campaign or ""
                via_click = (
                    event.channel is None
                    and event.type is EventType.CONVERSION
                    and event.click_id in self.clicks
                )
                if via_click and not campaign and event.click_id is not None:
                    # A conversion without a campaign of its own counts for its click's.
                    campaign = self.clicks[event.click_id][1]
                kept = self._admit(channel)
                if kept != channel:
                    result.unlisted += 1
                    channel = kept
                if event.type is EventType.CLICK and event.click_id and channel != UNATTRIBUTED:
                    self.clicks[event.click_id] = (channel, event.campaign or "")
                    click_channels[event.click_id] = channel
                result.applied += 1
                minute = minute_of(event.ts)
                if minute < oldest_minute:
                    result.late += 1
                increments = [(TYPE_COUNTERS[event.type], 1)]
                if event.type is EventType.CONVERSION and event.value_micros:
                    increments.append((REVENUE, event.value_micros))
                if event.type is EventType.CALL:
                    increments += self._call_increments(event)
                day, day_expiry, month, _ = self.days.of_minute(minute)
                if day_expiry > now_seconds:
                    kept_campaign = self._admit_campaign(month, channel, campaign)
                    if kept_campaign != campaign:
                        result.other_campaigns += 1
                        campaign = kept_campaign
                for counter, delta in increments:
                    name = f"{channel}:{counter}"
                    if minute >= oldest_minute:
                        self._add([(self.keys.minute(minute), name, delta, 0)])
                    if hour_of(minute) >= oldest_hour:
                        self._add([(self.keys.hour(hour_of(minute)), name, delta, 0)])
                    self._add([(self.keys.totals, name, delta, 0)])
                    if day_expiry > now_seconds:
                        per_campaign = campaign_field(channel, campaign, counter)
                        self._add(
                            [
                                (self.keys.day(day), name, delta, 0),
                                (self.keys.month(month), name, delta, 0),
                                (self.keys.day_campaigns(day), per_campaign, delta, 0),
                                (self.keys.month_campaigns(month), per_campaign, delta, 0),
                            ]
                        )
        for (key, name), delta in spend_deltas.items():
            if delta:
                self._add([(key, self._admit_spend(key, name), delta, 0)])
        return result

    def _call_increments(self, event: Event) -> list[tuple[str, int]]:
        """A call's counters besides the call itself: answered, and a lead when qualified and
        its caller has not been a lead before (a withheld caller is always a new one)."""
        increments = []
        if event.answered:
            increments.append((ANSWERED, 1))
        if event.qualified and (not event.caller or event.caller not in self.callers):
            if event.caller:
                self.callers.add(event.caller)
            increments.append((LEADS, 1))
        return increments

    def _admit_spend(self, key: str, name: str) -> str:
        """The field a spend increment lands in, once its channel (and campaign) are admitted."""
        channel, tab, campaign = name.removesuffix(f":{SPEND}").partition("\t")
        kept = self._admit(channel)
        if not tab:
            return f"{kept}:{SPEND}"
        number = int(key.rpartition(":")[2])
        month = number // 100 if key.startswith(self.keys.day_campaigns(0)[:-1]) else number
        return campaign_field(kept, self._admit_campaign(month, kept, campaign), SPEND)

    def _admit_campaign(self, month: int, channel: str, campaign: str) -> str:
        """The campaign an event counts under in its month: its own while its channel's set
        for the month knows it or has room, else "other"."""
        if campaign in FIXED_CAMPAIGNS:
            return campaign
        known = self.campaign_sets.setdefault(self.keys.campaign_set(month, channel), set())
        if campaign in known:
            return campaign
        if len(known) < self.max_campaigns:
            known.add(campaign)
            return campaign
        return OTHER_CAMPAIGN

    def _admit(self, channel: str) -> str:
        """The channel an event counts under: its own while the set knows it or has room."""
        if channel in FIXED_CHANNELS or channel in self.channels:
            return channel
        if len(self.channels) < self.max_channels:
            self.channels.add(channel)
            return channel
        return UNLISTED

    def _add(self, increments: Iterable[Increment]) -> None:
        for key, name, delta, _ in increments:
            bucket = self.counters.setdefault(key, {})
            bucket[name] = bucket.get(name, 0) + delta

    def nonzero(self) -> dict[str, dict[str, int]]:
        """`counters` without zero fields and empty buckets (a replaced spend leaves zeros)."""
        return nonzero(self.counters)


def nonzero(counters: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    kept = {key: {k: v for k, v in fields.items() if v} for key, fields in counters.items()}
    return {key: fields for key, fields in kept.items() if fields}
