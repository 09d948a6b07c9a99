"""What a run sent, per channel, as the KPI counters should count it. Pure.

The driver records each action with whether the tracker accepted it (2xx, or 302 for a
redirect). Bots are counted apart; a conversion re-posted with an event id already accepted is a
duplicate; spend re-posted under one event id replaces the figure; so `clicks`, `bot_clicks`,
`leads`, `redemptions` and `spend` are what the store should show (a lead re-sent with its lead
id is a duplicate too); so are `calls` and `answered_calls` (counters p, a; a call's webhook
posted again counts once, an answered call of at least a minute is a lead too, its caller's
later calls are not).

Orders (`stream.orders`): `conversions` and `revenue` are gross, every order once as first
reported (``g``, ``G``; the exporter's `adpulse_events_total{type="conversion"}` and
`adpulse_revenue_total`). A later conversion of the order restates it (`restatements`) unless it
changes neither status nor value (a duplicate); `net_conversions` and `net_revenue` are the
orders now pending or approved at their current value (``c``, ``v``), and `pending`, `declined`,
`refunded` count the orders now in that status with their amounts (``e E d D f F``).

Customers (`stream.customers`): a customer's first order makes a new customer of its channel
(``u``), their later orders are repeat sales of their own channel (``y``, ``Y`` as first
reported); `ltv_revenue` is the net revenue of the customers a channel acquired, what the
cohort's LTV counts (one month, every horizon, for a run within one local month).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from rich.table import Table

from adpulse.cli.report import money
from adpulse.cli.simulate.plan import Action, Call, Click, Conversion, Lead, Redemption, Spend

MICROS: Final = 1_000_000
NET_STATUSES: Final = frozenset({"approved", "pending"})
STATUS_FIGURES: Final = {
    "pending": ("pending", "pending_micros"),
    "declined": ("declined", "declined_micros"),
    "refunded": ("refunded", "refunded_micros"),
}


def micros(amount: Decimal) -> int:
    return int(amount * MICROS)


@dataclass(slots=True)
class ChannelTally:
    clicks: int = 0
    bot_clicks: int = 0
    leads: int = 0
    conversions: int = 0
    revenue_micros: int = 0
    spend_micros: int = 0
    redemptions: int = 0
    duplicates: int = 0
    errors: int = 0
    # Counters p and a: calls, answered calls (a qualified call is a lead too, a caller once).
    calls: int = 0
    answered_calls: int = 0
    # Orders by their current status, and customers.
    net_conversions: int = 0
    net_revenue_micros: int = 0
    pending: int = 0
    pending_micros: int = 0
    declined: int = 0
    declined_micros: int = 0
    refunded: int = 0
    refunded_micros: int = 0
    restatements: int = 0
    new_customers: int = 0
    repeat_sales: int = 0
    repeat_revenue_micros: int = 0
    ltv_revenue_micros: int = 0

    def count_order(self, status: str, value_micros: int, sign: int) -> None:
        """Add (sign 1) or take back (-1) an order of `status` and value."""
        if status in NET_STATUSES:
            self.net_conversions += sign
            self.net_revenue_micros += sign * value_micros
        if status in STATUS_FIGURES:
            count, amount = STATUS_FIGURES[status]
            setattr(self, count, getattr(self, count) + sign)
            setattr(self, amount, getattr(self, amount) + sign * value_micros)

    def document(self) -> dict[str, Any]:
        return {
            "clicks": self.clicks,
            "bot_clicks": self.bot_clicks,
            "leads": self.leads,
            "conversions": self.conversions,
            "revenue": money(self.revenue_micros),
            "revenue_micros": self.revenue_micros,
            "spend": money(self.spend_micros),
            "spend_micros": self.spend_micros,
            "redemptions": self.redemptions,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "calls": self.calls,
            "answered_calls": self.answered_calls,
            "net_conversions": self.net_conversions,
            "net_revenue": money(self.net_revenue_micros),
            "net_revenue_micros": self.net_revenue_micros,
            "pending": self.pending,
            "pending_micros": self.pending_micros,
            "declined": self.declined,
            "declined_micros": self.declined_micros,
            "refunded": self.refunded,
            "refunded_micros": self.refunded_micros,
            "restatements": self.restatements,
            "new_customers": self.new_customers,
            "repeat_sales": self.repeat_sales,
            "repeat_revenue_micros": self.repeat_revenue_micros,
            "ltv_revenue_micros": self.ltv_revenue_micros,
        }


def action_kind(action: Action) -> str:
    match action:
        case Click(redirect=True):
            return "redirect_click"
        case Click(forwarded=True):
            return "forwarded_click"
        case Lead(duplicate=True):
            return "duplicate_lead"
        case Lead():
            return "lead"
        case Click():
            return "pixel_click"
        case Conversion(duplicate=True):
            return "duplicate_conversion"
        case Conversion(restated=True):
            return "restatement"
        case Conversion():
            return "conversion"
        case Redemption():
            return "redemption"
        case Spend():
            return "spend"
        case Call():
            return "call"
    raise ValueError(f"unknown action {action!r}")


@dataclass(slots=True)
class OrderSent:
    """An order as the counters hold it: its channel, status and value now, and
    its customer's acquisition channel."""

    channel: str
    status: str
    value_micros: int
    acquired_by: str | None


def net(status: str, value_micros: int) -> int:
    """The order's share of net revenue."""
    return value_micros if status in NET_STATUSES else 0


class Tally:
    """Record outcomes with `accepted`, `failed` and `skipped`; read with `document()`."""

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels = {channel: ChannelTally() for channel in channels}
        self.requests = 0
        self.errors: Counter[str] = Counter()
        """"<kind>: <problem>" -> count, e.g. "conversion: HTTP 503"."""
        self.skipped = 0
        """Conversions not posted: their click failed, so there was no click id."""
        self._events: set[str] = set()
        self._orders: dict[str, OrderSent] = {}
        # Customer -> acquisition channel.
        self._customers: dict[str, str] = {}
        self._leads: set[str] = set()
        self._spend: dict[str, tuple[str, int]] = {}
        self._callers: set[str] = set()
        self.calls_skipped = 0
        """Calls not posted: no number was leased to their visit (see `document`)."""

    def accepted(self, action: Action) -> None:
        self.requests += 1
        tally = self.channels[action.channel]
        match action:
            case Click(bot=True):
                tally.bot_clicks += 1
            case Click():
                tally.clicks += 1
            case Redemption():
                tally.redemptions += 1
            case Lead():
                if action.event_id in self._events or action.lead_id in self._leads:
                    tally.duplicates += 1
                else:
                    tally.leads += 1
                self._leads.add(action.lead_id)
            case Conversion():
                self._conversion(action, tally)
            case Call():
                if action.call_id in self._events:
                    tally.duplicates += 1
                else:
                    tally.calls += 1
                    tally.answered_calls += action.answered
                    if action.qualified and action.caller not in self._callers:
                        self._callers.add(action.caller)
                        tally.leads += 1
            case Spend():
                earlier = self._spend.get(action.event_id)
                if earlier is not None:
                    self.channels[earlier[0]].spend_micros -= earlier[1]
                self._spend[action.event_id] = (action.channel, micros(action.cost))
                tally.spend_micros += micros(action.cost)
        self._events.add(action.event_id)

    def _conversion(self, action: Conversion, tally: ChannelTally) -> None:
        status = action.status or "approved"
        value = micros(action.value)
        order = self._orders.get(action.order_id)
        if action.event_id in self._events or (
            order is not None and (order.status, order.value_micros) == (status, value)
        ):
            tally.duplicates += 1
            return
        if order is not None:
            # A restatement moves the counters of the order's channel by the difference.
            counted = self.channels[order.channel]
            counted.restatements += 1
            counted.count_order(order.status, order.value_micros, -1)
            counted.count_order(status, value, 1)
            if order.acquired_by is not None:
                acquirer = self.channels[order.acquired_by]
                acquirer.ltv_revenue_micros += net(status, value) - net(
                    order.status, order.value_micros
                )
            order.status, order.value_micros = status, value
            return
        tally.conversions += 1
        tally.revenue_micros += value
        tally.count_order(status, value, 1)
        acquired_by = None
        if action.customer is not None:
            acquired_by = self._customers.get(action.customer)
            if acquired_by is None:
                acquired_by = self._customers[action.customer] = action.channel
                tally.new_customers += 1
            else:
                tally.repeat_sales += 1
                tally.repeat_revenue_micros += value
            self.channels[acquired_by].ltv_revenue_micros += net(status, value)
        self._orders[action.order_id] = OrderSent(action.channel, status, value, acquired_by)

    def failed(self, action: Action, problem: str) -> None:
        """The tracker answered something else than 2xx/302, or did not answer."""
        self.requests += 1
        self.channels[action.channel].errors += 1
        self.errors[f"{action_kind(action)}: {problem}"] += 1

    def skipped_for(self, action: Action) -> None:
        self.skipped += 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def totals(self) -> ChannelTally:
        total = ChannelTally()
        for tally in self.channels.values():
            for name in ChannelTally.__slots__:
                setattr(total, name, getattr(total, name) + getattr(tally, name))
        return total

    def document(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.error_count,
            "errors_by_kind": dict(sorted(self.errors.items())),
            "skipped_conversions": self.skipped,
            # A pooled call needs the number the tracker leased to its visit: without one (no
            # --redis-url on the tracker, numbers not registered) it is not posted.
            "skipped_calls": self.calls_skipped,
            "channels": {channel: tally.document() for channel, tally in self.channels.items()},
            "totals": self.totals().document(),
        }


COLUMNS: Final = (
    ("clicks", "Clicks"),
    ("bot_clicks", "Bot clicks"),
    ("leads", "Leads"),
    ("conversions", "Gross conv."),
    ("revenue", "Gross revenue"),
    ("net_conversions", "Net conv."),
    ("net_revenue", "Net revenue"),
    ("refunded", "Refunded"),
    ("new_customers", "New cust."),
    ("repeat_sales", "Repeat"),
    ("spend", "Spend"),
    ("redemptions", "Redemptions"),
    ("calls", "Calls (p)"),
    ("answered_calls", "Answered (a)"),
    ("duplicates", "Duplicates"),
    ("errors", "Errors"),
)


def sent_table(tally: Tally, title: str) -> Table:
    """The run's figures per channel, as the counters should show them."""
    table = Table(title=title, title_justify="left")
    table.add_column("Channel", no_wrap=True, min_width=max(map(len, tally.channels), default=5))
    for _, heading in COLUMNS:
        table.add_column(heading, justify="right")
    rows = [(channel, figures.document()) for channel, figures in tally.channels.items()]
    for channel, document in [*rows, ("total", tally.totals().document())]:
        table.add_row(
            channel,
            *(str(document[name]) for name, _ in COLUMNS),
            end_section=channel == rows[-1][0],
        )
    return table
