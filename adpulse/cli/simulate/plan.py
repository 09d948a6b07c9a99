"""The traffic plan: a seeded, time-ordered sequence of actions. Pure: no clock, no I/O.

`TrafficPlan(settings).actions()` yields clicks (some forwarded by a server for the visitor),
leads, redemptions, conversions (and their duplicate posts; some posted `pending` and restated
later as approved or declined, some approved and later refunded in full or in part; with
`customers`, each by a customer, some of whom come back through any channel), phone calls
(to pooled and static numbers, missed, short and long, from repeat callers) and spend posts,
each with `at`, its offset in seconds from the start of the run. The same settings give the
same actions, values and ids; the HTTP driver only sends them.

>>> plan = TrafficPlan(PlanSettings(seed=7, rate=50, duration=2, run_id="doc"))
>>> [type(action).__name__ for action in plan.actions()][:3]
['Click', 'Click', 'Click']
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

from adpulse.cli.simulate.profiles import (
    CALLERS,
    CHANNELS,
    NUMBER_POOLS,
    STATIC_NUMBERS,
    ChannelProfile,
    Spike,
)

CENT: Final = Decimal("0.01")
MICRO: Final = Decimal("0.000001")
DISCOUNT: Final = Decimal("0.15")
PAGES: Final = ("", "sale", "new", "shoes", "bags", "gift-cards", "checkout")
SHOP: Final = "https://shop.example.com/"
_RUN_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,40}")
QUALIFIED_SECONDS: Final = 60
"""The tracker's default ADPULSE_CALL_QUALIFIED_SECONDS: an answered call this long is a lead."""
RETURN_AFTER: Final = 3.0
"""A returning customer's new order comes at least this many seconds after their first, so
the worker sees the first one first (their acquisition)."""
REMEMBERED_CUSTOMERS: Final = 1000
"""Recent customers a returning customer is drawn from: the plan's memory stays bounded."""


def rhythm(hour: float) -> float:
    """The daily rhythm: traffic relative to the day's mean at `hour` (0-24), 0.4 to 1.6.

    A cosine peaking at 20:00 and lowest at 08:00; its mean over a day is 1.
    """
    return 1.0 + 0.6 * math.cos(2 * math.pi * (hour - 20.0) / 24.0)


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """`rate`: visits (clicks and redemptions) per second, averaged over the day.

    `duration` None runs until the consumer stops and calls `TrafficPlan.close`. `run_id`
    prefixes every event, order and click id, so two runs with one seed do not dedupe each
    other. `start_hour` is the hour of the simulated day at the start; it advances in real time.
    """

    seed: int
    rate: float
    duration: float | None = None
    run_id: str = "sim"
    spikes: tuple[Spike, ...] = ()
    start_hour: float = 12.0
    spend_interval: float = 10.0
    bot_share: float = 0.04
    duplicate_share: float = 0.03
    """Of conversions, posted again with the same event id."""
    reorder_share: float = 0.02
    """Of conversions, posted again with a new event id and the same order id."""
    call_share: float = 0.03
    """Of visits to a channel with tracked numbers (human clicks, redemptions), who call."""
    channels: tuple[ChannelProfile, ...] = CHANNELS
    forwarded_share: float = 0.1
    """Of pixel clicks, posted by a server for the visitor (its user agent and address)."""
    pending_share: float = 0.2
    """Of orders, posted `pending` first and restated a few seconds later: approved, or
    declined (`decline_share` of them)."""
    decline_share: float = 0.3
    refund_share: float = 0.05
    """Of orders, approved and later restated `refunded` (in full)."""
    partial_refund_share: float = 0.05
    """Of orders, approved and later restated at a lower value (a partial refund)."""
    customers: bool = False
    """Send a `customer_id` with each order: the tracker needs ADPULSE_HASH_KEY for it."""
    returning_share: float = 0.3
    """With `customers`: of orders, by a customer who bought before (through any channel)."""

    def __post_init__(self) -> None:
        if not self.rate > 0 or math.isinf(self.rate):
            raise ValueError("rate must be a positive number of visits per second")
        if self.duration is not None and not self.duration >= 0:
            raise ValueError("duration must be 0 or more seconds")
        if not self.spend_interval > 0:
            raise ValueError("spend_interval must be positive")
        if not 0 <= self.start_hour < 24:
            raise ValueError("start_hour must be from 0 to 24")
        for name in (
            "bot_share",
            "duplicate_share",
            "reorder_share",
            "forwarded_share",
            "call_share",
            "pending_share",
            "decline_share",
            "refund_share",
            "partial_refund_share",
            "returning_share",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be from 0 to 1")
        if self.pending_share + self.refund_share + self.partial_refund_share > 1:
            raise ValueError("pending_share, refund_share and partial_refund_share exceed 1")
        if _RUN_ID.fullmatch(self.run_id) is None:
            raise ValueError("run_id: 1 to 40 of letters, digits, '.', '_', ':' and '-'")
        if not self.channels or sum(profile.share for profile in self.channels) <= 0:
            raise ValueError("channels need a positive total share")
        names = {profile.channel for profile in self.channels}
        for spike in self.spikes:
            if spike.channel not in names:
                raise ValueError(f"spike on unknown channel {spike.channel!r}")


@dataclass(frozen=True, slots=True)
class Click:
    """A click through the redirect (the tracker assigns the click id) or a pixel (our own id).

    `key` names the click for the conversions and leads that follow it; `followers` is how
    many do. `forwarded`: a server posts it for the visitor, with the API token.
    """

    at: float
    event_id: str
    channel: str
    campaign: str
    redirect: bool
    target: str
    click_id: str | None
    bot: bool
    key: int
    followers: int
    forwarded: bool = False


@dataclass(frozen=True, slots=True)
class Lead:
    """A form sent after a click (`click_key`); `duplicate`: the CRM's re-send of the same lead
    (same lead id, a new event id), which counts once."""

    at: float
    event_id: str
    channel: str
    lead_id: str
    click_key: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Conversion:
    """An order: after a click (`click_key`), or with a coupon. `duplicate`: a re-post.

    `status` None is approved (the field is not sent). `restated`: a later report of the
    order (same order id, click and coupon, a new event id) with its new status or value.
    `customer`: the customer id sent, None without `PlanSettings.customers`.
    """

    at: float
    event_id: str
    channel: str
    order_id: str
    value: Decimal
    click_key: int | None
    coupon: str | None
    duplicate: bool = False
    status: str | None = None
    restated: bool = False
    customer: str | None = None


@dataclass(frozen=True, slots=True)
class Redemption:
    """A coupon redeemed; `value` is the discount given, which is not revenue."""

    at: float
    event_id: str
    channel: str
    coupon: str
    value: Decimal


@dataclass(frozen=True, slots=True)
class Spend:
    """The channel's cost over [start, end) seconds of the run; the id is stable per interval."""

    at: float
    event_id: str
    channel: str
    cost: Decimal
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Call:
    """A phone call: to the number leased to the visit of click `click_key` (a pool), or to
    the channel's `static_number`. `duplicate`: the webhook posted again."""

    at: float
    call_id: str
    channel: str
    campaign: str
    click_key: int | None
    static_number: str | None
    caller: str
    seconds: int
    answered: bool
    duplicate: bool = False

    @property
    def qualified(self) -> bool:
        return self.answered and self.seconds >= QUALIFIED_SECONDS

    @property
    def event_id(self) -> str:
        return self.call_id


Action = Click | Lead | Conversion | Redemption | Spend | Call


class TrafficPlan:
    """One run's actions. Iterate `actions()` once; `close(at)` ends an open-ended run."""

    def __init__(self, settings: PlanSettings) -> None:
        self.settings = settings
        self._random = random.Random(settings.seed)
        self._profiles = {profile.channel: profile for profile in settings.channels}
        self._cumulative: list[float] = []
        total = 0.0
        for profile in settings.channels:
            total += profile.share
            self._cumulative.append(total)
        self._pending: list[tuple[float, int, Action]] = []
        self._ids = 0
        self._order = 0
        self._lead = 0
        self._customer = 0
        # Recent customers' first orders (at, customer id), to draw returning customers from.
        self._customers: deque[tuple[float, str]] = deque(maxlen=REMEMBERED_CUSTOMERS)
        self._interval = 0
        # Paid units of the current spend interval: (at, channel, unit cost).
        self._accrued: list[tuple[float, str, Decimal]] = []
        self._closed = False

    def unit_cost(self, channel: str, at: float) -> Decimal:
        """The channel's cost per click (per redemption for coupons) at `at`, spikes applied."""
        cost = self._profiles[channel].unit_cost
        for spike in self.settings.spikes:
            if spike.channel == channel and at >= spike.offset:
                cost *= spike.factor
        return cost.quantize(MICRO)

    def actions(self) -> Iterator[Action]:
        """Every action in time order; with a duration, ends with the last interval's spend."""
        settings = self.settings
        duration = settings.duration
        at = 0.0
        while not self._closed:
            hour = (settings.start_hour + at / 3600.0) % 24.0
            at += self._random.expovariate(settings.rate * rhythm(hour))
            if duration is not None and at >= duration:
                break
            yield from self._due(at)
            yield from self._visit(at)
        if duration is not None and not self._closed:
            yield from self._due(duration)
            yield from self.close(duration)

    def close(self, at: float) -> list[Spend]:
        """End the run at `at`: the spend of the current interval up to then; nothing follows.

        Only paid units up to `at` are charged, so a unit taken from `actions()` but not yet
        due (and so never sent) is not.
        """
        self._closed = True
        self._pending.clear()
        start = self._interval * self.settings.spend_interval
        if at <= start:
            return []
        return self._spend(start, at, until=at)

    # helpers

    def _due(self, until: float) -> Iterator[Action]:
        interval = self.settings.spend_interval
        pending = self._pending
        while not self._closed:
            boundary = (self._interval + 1) * interval
            next_pending = pending[0][0] if pending else math.inf
            if min(boundary, next_pending) > until:
                return
            if boundary <= next_pending:
                yield from self._spend(self._interval * interval, boundary, until=boundary)
                self._interval += 1
            else:
                yield heapq.heappop(pending)[2]

    def _spend(self, start: float, end: float, *, until: float) -> list[Spend]:
        costs: dict[str, Decimal] = {}
        for at, channel, cost in self._accrued:
            if at <= until:
                costs[channel] = costs.get(channel, Decimal(0)) + cost
        self._accrued.clear()
        run_id = self.settings.run_id
        return [
            Spend(
                end,
                f"{run_id}-spend-{profile.channel}-{self._interval}",
                profile.channel,
                costs[profile.channel],
                start,
                end,
            )
            for profile in self.settings.channels
            if costs.get(profile.channel, 0) > 0
        ]

    def _visit(self, at: float) -> Iterator[Action]:
        draw = self._random
        profile = draw.choices(self.settings.channels, cum_weights=self._cumulative)[0]
        channel = profile.channel
        campaign = draw.choice(profile.campaigns)
        event_id = self._event_id()
        key = self._ids
        if profile.coupons:
            coupon = draw.choice(profile.coupons)
            value = self._order_value(profile)
            self._accrued.append((at, channel, self.unit_cost(channel, at)))
            if draw.random() < profile.conversion_rate:
                self._schedule_conversion(at, channel, value, click_key=None, coupon=coupon)
            if channel in STATIC_NUMBERS and draw.random() < self.settings.call_share:
                self._schedule_call(at, channel, campaign, None, STATIC_NUMBERS[channel])
            yield Redemption(at, event_id, channel, coupon, (value * DISCOUNT).quantize(CENT))
            return
        bot = draw.random() < self.settings.bot_share
        redirect = draw.random() < profile.redirect_share
        page = draw.choice(PAGES)
        target = f"{SHOP}{page}?utm_source={channel}&utm_campaign={campaign}"
        click_id = None if redirect else f"{self.settings.run_id}-k{key}"
        followers = 0
        if not bot:
            self._accrued.append((at, channel, self.unit_cost(channel, at)))
            if draw.random() < profile.conversion_rate:
                value = self._order_value(profile)
                followers = self._schedule_conversion(
                    at, channel, value, click_key=key, coupon=None
                )
            if draw.random() < profile.lead_rate:
                followers += self._schedule_lead(at, channel, key)
            if channel in NUMBER_POOLS and draw.random() < self.settings.call_share:
                followers += self._schedule_call(at, channel, campaign, key, None)
        forwarded = not redirect and draw.random() < self.settings.forwarded_share
        yield Click(
            at,
            event_id,
            channel,
            campaign,
            redirect,
            target,
            click_id,
            bot,
            key,
            followers,
            forwarded,
        )

    def _schedule_lead(self, at: float, channel: str, click_key: int) -> int:
        """Queue a lead and, sometimes, the CRM's re-send of it; returns how many posts."""
        draw = self._random
        self._lead += 1
        lead = Lead(
            at + draw.uniform(1.0, 8.0),
            self._event_id(),
            channel,
            f"{self.settings.run_id}-l{self._lead}",
            click_key,
        )
        posts = [lead]
        if draw.random() < self.settings.duplicate_share:
            posts.append(
                replace(
                    lead,
                    at=lead.at + draw.uniform(0.5, 3.0),
                    event_id=self._event_id(),
                    duplicate=True,
                )
            )
        for post in posts:
            self._ids += 1
            heapq.heappush(self._pending, (post.at, self._ids, post))
        return len(posts)

    def _schedule_conversion(
        self, at: float, channel: str, value: Decimal, *, click_key: int | None, coupon: str | None
    ) -> int:
        """Queue an order, its duplicate posts and its restatement; returns how many posts."""
        draw = self._random
        settings = self.settings
        self._order += 1
        fate = draw.random()
        pending = fate < settings.pending_share
        conversion = Conversion(
            at + draw.uniform(1.0, 8.0),
            self._event_id(),
            channel,
            f"{settings.run_id}-o{self._order}",
            value,
            click_key,
            coupon,
            status="pending" if pending else None,
        )
        if settings.customers:
            conversion = replace(conversion, customer=self._customer_for(conversion.at))
        posts = [conversion]
        if draw.random() < settings.duplicate_share:
            posts.append(
                replace(conversion, at=conversion.at + draw.uniform(0.5, 3.0), duplicate=True)
            )
        if draw.random() < settings.reorder_share:
            posts.append(
                replace(
                    conversion,
                    at=conversion.at + draw.uniform(0.5, 3.0),
                    event_id=self._event_id(),
                    duplicate=True,
                )
            )
        # The restatement comes after the re-posts above, so none of them restates it back.
        restated = replace(
            conversion, at=conversion.at + draw.uniform(3.5, 8.0), restated=True, status=None
        )
        if pending:
            declined = draw.random() < settings.decline_share
            posts.append(replace(restated, status="declined" if declined else "approved"))
        elif fate < settings.pending_share + settings.refund_share:
            posts.append(replace(restated, status="refunded"))
        elif fate < settings.pending_share + settings.refund_share + settings.partial_refund_share:
            kept = Decimal(draw.randint(50, 90)) / 100
            posts.append(replace(restated, status="approved", value=(value * kept).quantize(CENT)))
        for post in posts:
            if post.restated:
                post = replace(post, event_id=self._event_id())
            self._ids += 1
            heapq.heappush(self._pending, (post.at, self._ids, post))
        return len(posts)

    def _customer_for(self, at: float) -> str:
        """A returning customer (whose first order came `RETURN_AFTER` seconds before `at`)
        now and then, else a new one."""
        draw = self._random
        if self._customers and draw.random() < self.settings.returning_share:
            first, customer = draw.choice(self._customers)
            if first <= at - RETURN_AFTER:
                return customer
        self._customer += 1
        customer = f"{self.settings.run_id}-cu{self._customer}@example.com"
        self._customers.append((at, customer))
        return customer

    def _schedule_call(
        self,
        at: float,
        channel: str,
        campaign: str,
        click_key: int | None,
        static_number: str | None,
    ) -> int:
        """Queue a call some seconds after the visit: missed, short or long, from one of a few
        callers (so some call again), its webhook sometimes posted twice; returns the posts."""
        draw = self._random
        answered = draw.random() < 0.75
        seconds = 0
        if answered:
            seconds = draw.randint(5, QUALIFIED_SECONDS - 1)
            if draw.random() < 0.5:
                seconds = draw.randint(QUALIFIED_SECONDS, 600)
        self._ids += 1
        call = Call(
            at + draw.uniform(1.0, 5.0),
            f"{self.settings.run_id}-call{self._ids}",
            channel,
            campaign,
            click_key,
            static_number,
            draw.choice(CALLERS),
            seconds,
            answered,
        )
        posts = [call]
        if draw.random() < self.settings.duplicate_share:
            posts.append(replace(call, at=call.at + draw.uniform(0.5, 3.0), duplicate=True))
        for post in posts:
            self._ids += 1
            heapq.heappush(self._pending, (post.at, self._ids, post))
        return len(posts)

    def _order_value(self, profile: ChannelProfile) -> Decimal:
        factor = Decimal(self._random.randint(5000, 15000)) / 10000
        return (profile.order_value * factor).quantize(CENT)

    def _event_id(self) -> str:
        self._ids += 1
        return f"{self.settings.run_id}-{self._ids}"
