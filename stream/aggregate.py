"""Attribution, buckets, the pro-rata spend split, and the reference fold of a batch.

Pure: no Redis here. `Aggregate` is the specification of what `KpiStore.apply_batch` does to
Redis (the Lua script is its fast twin); its state is laid out exactly like the Redis keys, so
tests compare the two directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from adpulse.core.channels import UNATTRIBUTED, UNLISTED
from adpulse.core.click_ids import ClickKeys, is_signed, verify
from adpulse.core.event import Event, EventType
from stream.customers import (
    ACQUIRED,
    HORIZON_DAYS,
    NEW_CUSTOMERS,
    REPEAT_REVENUE,
    REPEAT_SALES,
    CustomerState,
    LtvShare,
    horizon_of,
    ltv_increments,
)
from stream.days import LocalDays
from stream.keys import (
    ANSWERED,
    BOT_CLICKS,
    CALLS,
    CLICKS,
    CONVERSIONS,
    DEFAULT_MAX_CAMPAIGNS,
    DEFAULT_MAX_CHANNELS,
    DELAY,
    HOUR_SECONDS,
    LEADS,
    MINUTE_SECONDS,
    OTHER_CAMPAIGN,
    REDEMPTIONS,
    SPEND,
    KeySpace,
    Retention,
    campaign_field,
)
from stream.lag import delay_bin_minutes
from stream.orders import (
    GROSS_CONVERSIONS,
    GROSS_REVENUE,
    NET_REVENUE_CHANGE,
    RESTATEMENTS,
    STATUS_LETTERS,
    OrderState,
    net_value,
    order_counts,
    restatement_counts,
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
    EventType.LEAD: LEADS,
    EventType.CALL: CALLS,
}
# The types attributed through the click id they name (a click registers its own).
_CLICK_ATTRIBUTED: Final = frozenset({EventType.CONVERSION, EventType.LEAD})


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

    Its own channel; for a conversion or lead, the channel of the click it names; for a
    redemption, conversion or lead, the registered channel of its coupon; the edge's UTM
    grouping; else "unattributed". A bot's click: its own channel or grouping only.
    """
    if event.channel is not None:
        return event.channel
    if event.bot:
        return event.grouped_channel or UNATTRIBUTED
    if event.type in _CLICK_ATTRIBUTED and event.click_id is not None:
        channel = click_channel.get(event.click_id)
        if channel is not None:
            return channel
    if event.coupon is not None and event.type in _COUPON_ATTRIBUTED:
        channel = coupon_channel.get(event.coupon)
        if channel is not None:
            return channel
    return event.grouped_channel or UNATTRIBUTED


_COUPON_ATTRIBUTED: Final = frozenset({EventType.REDEMPTION, EventType.CONVERSION, EventType.LEAD})


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
    redelivered: int = 0
    """Records Kafka delivered again that the script had applied (`keys`, "Redelivery")."""

    def __iadd__(self, other: BatchResult) -> BatchResult:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.late += other.late
        self.bots += other.bots
        self.unlisted += other.unlisted
        self.other_campaigns += other.other_campaigns
        self.redelivered += other.redelivered
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
    orders: dict[str, OrderState] = field(default_factory=dict)
    """Order id -> its state (`stream.orders`); kept forever here."""
    customers: dict[str, CustomerState] = field(default_factory=dict)
    """Customer hash -> acquisition (`stream.customers`); kept forever here."""
    leads: set[str] = field(default_factory=set)
    clicks: dict[str, tuple[str, str, int | None]] = field(default_factory=dict)
    """Click id -> (channel, campaign, the click's minute or None for an old registration)."""
    callers: set[str] = field(default_factory=set)
    """Caller hashes whose qualified call counted as a lead (`KeySpace.generation`)."""
    spend: dict[str, SpendRecord] = field(default_factory=dict)
    channels: set[str] = field(default_factory=set)
    max_channels: int = DEFAULT_MAX_CHANNELS
    days: LocalDays = field(default_factory=LocalDays)
    campaign_sets: dict[str, set[str]] = field(default_factory=dict)
    """`KeySpace.campaign_set` key -> the campaigns it admitted."""
    max_campaigns: int = DEFAULT_MAX_CAMPAIGNS
    click_keys: ClickKeys | None = None
    """Verify signed click ids (`adpulse.core.click_ids`); without, each is forged."""
    rejected_click_ids: int = 0
    """Conversions and leads naming no channel (once each) whose click id claims to be signed
    and is not: the stats hash's ``click_ids_rejected``."""

    def apply(self, events: Iterable[Event], now: datetime) -> BatchResult:
        now_seconds = epoch_micros(now) // 1_000_000
        oldest_minute = self.retention.oldest_minute(now_seconds)
        result = BatchResult()
        self.channels.update(set(self.coupons.values()) - FIXED_CHANNELS)
        # Spend is summed per bucket field and applied after the events, as the script does.
        spend_deltas: dict[tuple[str, str], int] = {}
        click_channels = {click: channel for click, (channel, *_) in self.clicks.items()}
        for event in events:
            if event.bot:
                result.bots += 1
            if event.type is EventType.SPEND and not event.bot:
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
                # A bot's event is a bot click whatever its type, as the script's row says.
                kind = None if event.bot else event.type
                # A signed click id names no registration and registers nothing: it carries
                # its click's channel, campaign and minute, or is forged and attributes nothing.
                # It is verified (and counted when forged) only where it would attribute.
                carried = None
                if event.click_id is not None and is_signed(event.click_id):
                    if event.channel is None and kind in _CLICK_ATTRIBUTED:
                        keys = self.click_keys
                        carried = None if keys is None else verify(keys, event.click_id)
                        self.rejected_click_ids += carried is None
                    event = dataclasses.replace(event, click_id=None)
                order = None
                if kind is EventType.CONVERSION and event.order_id is not None:
                    order = self.orders.get(event.order_id)
                if order is not None:
                    self._restate(order, event, now_seconds, oldest_minute, result)
                    continue
                if kind is EventType.LEAD and event.lead_id is not None:
                    if event.lead_id in self.leads:
                        result.duplicates += 1
                        continue
                    self.leads.add(event.lead_id)
                channel = attribute(event, click_channels, self.coupons)
                campaign = event.campaign or ""
                if carried is not None and carried.channel:
                    channel, campaign = carried.channel, campaign or carried.campaign
                via_click = (
                    event.channel is None
                    and kind in _CLICK_ATTRIBUTED
                    and event.click_id in self.clicks
                )
                if via_click and not campaign and event.click_id is not None:
                    # A conversion or lead without a campaign of its own counts for its click's.
                    campaign = self.clicks[event.click_id][1]
                kept = self._admit(channel)
                if kept != channel:
                    result.unlisted += 1
                    channel = kept
                click_minute = None
                if via_click and kind is EventType.CONVERSION and event.click_id is not None:
                    click_minute = self.clicks[event.click_id][2]
                if carried is not None and carried.channel and kind is EventType.CONVERSION:
                    click_minute = carried.minute
                minute = minute_of(event.ts)
                if kind is EventType.CLICK and event.click_id and channel != UNATTRIBUTED:
                    self.clicks[event.click_id] = (channel, event.campaign or "", minute)
                    click_channels[event.click_id] = channel
                result.applied += 1
                if minute < oldest_minute:
                    result.late += 1
                increments = [(BOT_CLICKS if kind is None else TYPE_COUNTERS[kind], 1)]
                if kind is EventType.CALL:
                    increments += self._call_increments(event)
                _, day_expiry, month, _ = self.days.of_minute(minute)
                if day_expiry > now_seconds:
                    kept_campaign = self._admit_campaign(month, channel, campaign)
                    if kept_campaign != campaign:
                        result.other_campaigns += 1
                        campaign = kept_campaign
                if kind is EventType.CONVERSION:
                    status = STATUS_LETTERS[event.status or ""]
                    value = event.value_micros or 0
                    increments = [(GROSS_CONVERSIONS, 1)]
                    if value:
                        increments.append((GROSS_REVENUE, value))
                    increments += order_counts(status, value)
                    share = None
                    if event.customer_id is not None:
                        share = self._customer(
                            event.customer_id,
                            channel,
                            minute,
                            month if day_expiry > now_seconds else None,
                            increments,
                        )
                        self._add_ltv(share, net_value(status, value))
                    if event.order_id is not None:
                        self.orders[event.order_id] = OrderState(
                            status, minute, value, channel, campaign, share
                        )
                self._count(minute, channel, campaign, increments, now_seconds)
                if click_minute is not None:
                    oldest_hour = self.retention.oldest_hour(now_seconds)
                    self._add_delay(channel, click_minute, minute, oldest_minute, oldest_hour)
        for (key, name), delta in spend_deltas.items():
            if delta:
                self._add([(key, self._admit_spend(key, name), delta, 0)])
        return result

    def _count(
        self,
        minute: int,
        channel: str,
        campaign: str,
        increments: Iterable[tuple[str, int]],
        now_seconds: int,
    ) -> None:
        """Add `increments` (counter, delta) to every bucket of `minute` still kept."""
        oldest_minute = self.retention.oldest_minute(now_seconds)
        oldest_hour = self.retention.oldest_hour(now_seconds)
        day, day_expiry, month, _ = self.days.of_minute(minute)
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

    def _restate(
        self,
        order: OrderState,
        event: Event,
        now_seconds: int,
        oldest_minute: int,
        result: BatchResult,
    ) -> None:
        """A conversion of an order already counted: see `stream.orders`."""
        status = STATUS_LETTERS[event.status or ""]
        value = event.value_micros or order.value_micros
        if status == order.status and value == order.value_micros:
            result.duplicates += 1
            return
        result.applied += 1
        minute = minute_of(event.ts)
        if minute < oldest_minute:
            result.late += 1
        self._count(
            order.minute,
            order.channel,
            order.campaign,
            restatement_counts(order, status, value),
            now_seconds,
        )
        moment_campaign = order.campaign
        _, day_expiry, month, _ = self.days.of_minute(minute)
        if day_expiry > now_seconds:
            moment_campaign = self._admit_campaign(month, order.channel, order.campaign)
        moments = [(RESTATEMENTS, 1)]
        change = net_value(status, value) - net_value(order.status, order.value_micros)
        if change:
            moments.append((NET_REVENUE_CHANGE, change))
        self._count(minute, order.channel, moment_campaign, moments, now_seconds)
        self._add_ltv(order.ltv, change)
        order.status, order.value_micros = status, value

    def _customer(
        self,
        customer_id: str,
        channel: str,
        minute: int,
        month: int | None,
        increments: list[tuple[str, int]],
    ) -> LtvShare | None:
        """A conversion's customer: acquired now (``u``) or a repeat sale (``y``, ``Y``); the
        cohort share its order's net revenue goes to, if within the horizons."""
        customer = self.customers.get(customer_id)
        if customer is None:
            customer = self.customers[customer_id] = CustomerState(channel, minute, month)
            increments.append((NEW_CUSTOMERS, 1))
            if month is not None:
                self._add([(self.keys.lifetime_value(month), f"{channel}:{ACQUIRED}", 1, 0)])
        else:
            increments.append((REPEAT_SALES, 1))
            value = next((delta for counter, delta in increments if counter == "G"), 0)
            if value:
                increments.append((REPEAT_REVENUE, value))
        horizon = horizon_of(minute - customer.minute)
        if customer.cohort is None or horizon > len(HORIZON_DAYS):
            return None
        return customer.cohort, horizon, customer.channel

    def _add_ltv(self, share: LtvShare | None, delta: int) -> None:
        if share is None or delta == 0:
            return
        key = self.keys.lifetime_value(share[0])
        self._add([(key, name, change, 0) for name, change in ltv_increments(share, delta)])

    def _add_delay(
        self, channel: str, click_minute: int, minute: int, oldest_minute: int, oldest_hour: int
    ) -> None:
        """A conversion's delay bin, in its click's minute and hour and the totals, no day."""
        name = f"{channel}:{DELAY}{delay_bin_minutes(minute - click_minute)}"
        if click_minute >= oldest_minute:
            self._add([(self.keys.minute(click_minute), name, 1, 0)])
        if hour_of(click_minute) >= oldest_hour:
            self._add([(self.keys.hour(hour_of(click_minute)), name, 1, 0)])
        self._add([(self.keys.totals, name, 1, 0)])

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
