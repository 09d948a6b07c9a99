"""Issue 12, item 5: any sequence of restatements of an order, applied in any batch split and
with any redelivery, gives the counters of its final state applied once (gross: its first
report), through the Lua script on a real redis-server and through the reference fold."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adpulse.core.event import Event, EventType
from stream.aggregate import Aggregate
from stream.orders import STATUS_LETTERS, net_value
from stream.store import KpiStore
from tests.integration.test_store_redis import DAY_TIERS, counters_in_redis, drop_keys, unique_keys
from tests.services import RedisService
from tests.unit.test_stream_aggregate import make_event

pytestmark = pytest.mark.integration

STATUSES = (None, "pending", "declined", "refunded")
# o1 and o2 are one customer's (o2 a repeat sale, in the cohort's LTV), o3 another's.
CUSTOMERS = {"o1": "cust-a", "o2": "cust-a", "o3": "cust-b"}
# Letters of the original buckets that must end as the final state's; g and G are the first
# report's, n and N count the moments of change.
FINAL_STATE = frozenset("cvefdDEF" + "uy")


@dataclass(frozen=True)
class Report:
    order: str
    status: str | None
    value_micros: int | None
    minutes_later: int


@st.composite
def order_histories(draw: st.DrawFn) -> list[Report]:
    """Reports of up to three orders, interleaved; each order's first report comes first."""
    reports: list[Report] = []
    for order in ("o1", "o2", "o3")[: draw(st.integers(1, 3))]:
        for index in range(draw(st.integers(1, 6))):
            reports.append(
                Report(
                    order,
                    draw(st.sampled_from(STATUSES)),
                    draw(st.sampled_from([None, 1, 40_000_000, 10**15]))
                    if index
                    else draw(st.sampled_from([None, 25_000_000, 10**15])),
                    # Restatements come minutes to days later (another day's bucket).
                    index and draw(st.sampled_from([1, 61, 1500, 4 * 1440])),
                )
            )
    # Interleave orders but keep each order's reports in their order (one partition each).
    by_order = {order: [r for r in reports if r.order == order] for order in ("o1", "o2", "o3")}
    mixed: list[Report] = []
    while any(by_order.values()):
        order = draw(st.sampled_from(sorted(name for name, left in by_order.items() if left)))
        mixed.append(by_order[order].pop(0))
    return mixed


def events_of(reports: Sequence[Report], start: datetime) -> list[Event]:
    """The conversions of `reports`; each order's time moves on with its restatements."""
    events: list[Event] = []
    moment = dict.fromkeys((r.order for r in reports), start)
    for index, report in enumerate(reports):
        moment[report.order] += timedelta(minutes=report.minutes_later)
        events.append(
            make_event(
                f"x{index}",
                EventType.CONVERSION,
                moment[report.order],
                channel="search",
                campaign="spring",
                order_id=report.order,
                status=report.status,
                value_micros=report.value_micros,
                customer_id=CUSTOMERS[report.order],
            )
        )
    return events


def final_states(events: Sequence[Event]) -> list[Event]:
    """One conversion per order: its first report's time, its last status and last value."""
    first: dict[str, Event] = {}
    last: dict[str, tuple[str | None, int | None]] = {}
    for event in events:
        order = str(event.order_id)
        first.setdefault(order, event)
        value = event.value_micros or (last[order][1] if order in last else None)
        last[order] = (event.status, value)
    return [
        make_event(
            f"final-{order}",
            EventType.CONVERSION,
            event.ts,
            channel="search",
            campaign="spring",
            order_id=order,
            status=last[order][0],
            value_micros=last[order][1],
            customer_id=CUSTOMERS[order],
        )
        for order, event in first.items()
    ]


def deliveries(events: list[Event], cuts: list[int], replays: list[int]) -> list[list[Event]]:
    """`events` in batches split at `cuts`; after batch i, batches replays[i]..i again (a
    worker that died before committing them), as at-least-once delivery may."""
    bounds = sorted({0, *(c % (len(events) + 1) for c in cuts), len(events)})
    batches = [events[a:b] for a, b in itertools.pairwise(bounds)]
    delivered: list[list[Event]] = []
    for index, batch in enumerate(batches):
        delivered.append(batch)
        if index < len(replays) and replays[index] >= 0:
            delivered += batches[min(replays[index], index) : index + 1]
    return delivered


def by_letter(counters: dict[str, dict[str, int]], letters: frozenset[str]) -> dict[str, int]:
    return {
        f"{key}|{name}": value
        for key, fields in counters.items()
        for name, value in fields.items()
        if name[-1] in letters and name[-2] == ":"
    }


async def applied(url: str, batches: list[list[Event]], now: datetime) -> dict[str, dict[str, int]]:
    store = KpiStore.from_url(url, keys=unique_keys())
    try:
        for batch in batches:
            await store.apply_batch(batch, now=now)
        found = await counters_in_redis(store, ("m:", "h:", *DAY_TIERS))
        return {key.removeprefix(store.keys.prefix): fields for key, fields in found.items()}
    finally:
        await drop_keys(store.client, store.keys)
        await store.close()


def folded(batches: list[list[Event]], now: datetime) -> dict[str, dict[str, int]]:
    model = Aggregate()
    for batch in batches:
        model.apply(batch, now)
    return {key.removeprefix(model.keys.prefix): f for key, f in model.nonzero().items()}


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    reports=order_histories(),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    replays=st.lists(st.integers(-1, 6), max_size=8),
)
def test_any_restatements_in_any_batches_give_the_final_state_once(
    redis_server: RedisService, reports: list[Report], cuts: list[int], replays: list[int]
) -> None:
    # A week and a half of restatements, ending two minutes ahead of the clock (so that Redis
    # expires nothing the test reads).
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
    events = events_of(reports, now - timedelta(days=30))
    now = max(now, max(event.ts for event in events) + timedelta(minutes=1))
    batches = deliveries(events, cuts, replays)
    once = final_states(events)

    script = asyncio.run(applied(redis_server.url, batches, now))
    reference = folded(batches, now)
    final = asyncio.run(applied(redis_server.url, [once], now))
    assert script == reference
    assert by_letter(script, FINAL_STATE) == by_letter(final, FINAL_STATE)
    # Lifetime value: the net revenue of the final states, by cohort and horizon.
    assert {k: v for k, v in script.items() if k.startswith("ltv:")} == {
        k: v for k, v in final.items() if k.startswith("ltv:")
    }
    # Gross: every order once, at its first report's value.
    assert by_letter(script, frozenset("g")) == by_letter(final, frozenset("g"))
    first_values = {
        event.order_id: event.value_micros or 0
        for event in reversed(events)  # the first report of each order wins
    }
    assert script["t"].get("search:G", 0) == sum(first_values.values())
    # The moments of change add up to the change of net revenue from first to last report.
    first_net = sum(
        net_value(STATUS_LETTERS[event.status or ""], event.value_micros or 0)
        for event in {e.order_id: e for e in reversed(events)}.values()
    )
    last_net = sum(
        net_value(STATUS_LETTERS[event.status or ""], event.value_micros or 0) for event in once
    )
    assert script["t"].get("search:N", 0) == last_net - first_net
