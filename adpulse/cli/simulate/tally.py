"""What a run sent, per channel, as the KPI counters should count it. Pure.

The driver records each action with whether the tracker accepted it (2xx, or 302 for a
redirect). Bots are counted apart; a conversion re-posted with an event id or an order id
already accepted is a duplicate; spend re-posted under one event id replaces the figure; so
`clicks`, `bot_clicks`, `leads`, `conversions`, `revenue`, `spend` and `redemptions` are what
the store should show (a lead re-sent with its lead id is a duplicate too); so are `calls` and
`answered_calls` (counters p, a; a call's webhook posted again counts once, an answered call of
at least a minute is a lead too, its caller's later calls are not).
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
        case Conversion():
            return "conversion"
        case Redemption():
            return "redemption"
        case Spend():
            return "spend"
        case Call():
            return "call"
    raise ValueError(f"unknown action {action!r}")


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
        self._orders: set[str] = set()
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
                if action.event_id in self._events or action.order_id in self._orders:
                    tally.duplicates += 1
                else:
                    tally.conversions += 1
                    tally.revenue_micros += micros(action.value)
                self._orders.add(action.order_id)
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
    ("conversions", "Conversions"),
    ("revenue", "Revenue"),
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
