"""The traffic plan and the tally of `adpulse simulate`, without any server."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.cli.simulate.plan import (
    RETURN_AFTER,
    Action,
    Call,
    Click,
    Conversion,
    Lead,
    PlanSettings,
    Redemption,
    Spend,
    TrafficPlan,
    rhythm,
)
from adpulse.cli.simulate.profiles import (
    CHANNEL_NAMES,
    CHANNELS,
    Spike,
    coupon_rows,
    parse_duration,
    parse_spike,
)
from adpulse.cli.simulate.tally import Tally

D = Decimal
M = 1_000_000
UNIT_COST = {profile.channel: profile.unit_cost for profile in CHANNELS}


def plan_actions(**overrides: object) -> list[Action]:
    values: dict[str, object] = {"seed": 7, "rate": 80.0, "duration": 40.0, "run_id": "t"}
    values.update(overrides)
    return list(TrafficPlan(PlanSettings(**values)).actions())  # type: ignore[arg-type]


def all_accepted(actions: list[Action]) -> Tally:
    tally = Tally(CHANNEL_NAMES)
    for action in actions:
        tally.accepted(action)
    return tally


def test_the_same_seed_gives_the_same_actions_and_another_seed_others() -> None:
    first = plan_actions()
    assert first == plan_actions()
    assert first != plan_actions(seed=8)
    # The run id changes the ids only, never the sequence or the values.
    other_run = plan_actions(run_id="u")
    assert [(type(a), a.at, a.channel) for a in first] == [
        (type(a), a.at, a.channel) for a in other_run
    ]
    assert {a.event_id for a in first}.isdisjoint(a.event_id for a in other_run)


def test_actions_come_in_time_order_within_the_duration() -> None:
    actions = plan_actions()
    times = [action.at for action in actions]
    assert times == sorted(times)
    assert times[-1] <= 40.0
    assert {type(action) for action in actions} == {
        Click, Lead, Conversion, Redemption, Spend, Call
    }  # fmt: skip
    assert {action.channel for action in actions} == set(CHANNEL_NAMES)


def test_every_kind_of_traffic_is_present() -> None:
    actions = plan_actions(duration=120.0)
    clicks = [a for a in actions if isinstance(a, Click)]
    assert any(c.bot for c in clicks)
    assert any(not c.bot for c in clicks)
    assert any(c.redirect for c in clicks)
    assert any(not c.redirect for c in clicks)
    conversions = [a for a in actions if isinstance(a, Conversion)]
    originals = {c.event_id for c in conversions if not c.duplicate}
    duplicates = [c for c in conversions if c.duplicate]
    assert any(c.event_id in originals for c in duplicates)  # same event id again
    assert any(c.event_id not in originals for c in duplicates)  # new id, same order id
    assert any(c.coupon is not None for c in conversions)


def test_conversions_follow_a_counted_click_of_their_channel_or_carry_a_coupon() -> None:
    actions = plan_actions()
    clicks = {a.key: a for a in actions if isinstance(a, Click)}
    followers: Counter[int] = Counter()
    coupons = dict(coupon_rows())
    for action in actions:
        if not isinstance(action, Conversion):
            continue
        if action.click_key is None:
            assert action.coupon is not None
            assert coupons[action.coupon] == action.channel
            continue
        click = clicks[action.click_key]
        assert not click.bot
        assert click.channel == action.channel
        assert click.at < action.at
        followers[click.key] += 1
    # A click knows how many posts wait for its id (all of them fall within this run).
    for key, count in followers.items():
        assert clicks[key].followers >= count


def expected_from_plan(actions: list[Action]) -> dict[str, dict[str, int]]:
    """What the counters should show, counted from the plan independently of `Tally`."""
    expected = {
        channel: Counter(
            clicks=0,
            bot_clicks=0,
            leads=0,
            conversions=0,
            revenue_micros=0,
            spend_micros=0,
            redemptions=0,
        )
        for channel in CHANNEL_NAMES
    }
    orders: set[str] = set()
    leads: set[str] = set()
    callers: set[str] = set()
    for action in actions:
        figures = expected[action.channel]
        if isinstance(action, Click):
            figures["bot_clicks" if action.bot else "clicks"] += 1
        elif isinstance(action, Redemption):
            figures["redemptions"] += 1
        elif isinstance(action, Lead) and not action.duplicate:
            assert action.lead_id not in leads
            leads.add(action.lead_id)
            figures["leads"] += 1
        elif isinstance(action, Conversion) and not action.duplicate and not action.restated:
            assert action.order_id not in orders
            orders.add(action.order_id)
            figures["conversions"] += 1
            figures["revenue_micros"] += int(action.value * M)
        elif isinstance(action, Call) and not action.duplicate and action.qualified:
            # A qualified call is a lead, its caller's first only.
            if action.caller not in callers:
                callers.add(action.caller)
                figures["leads"] += 1
        elif isinstance(action, Spend):
            figures["spend_micros"] += int(action.cost * M)
    return {channel: dict(figures) for channel, figures in expected.items()}


def test_the_tally_of_a_run_equals_the_plan_minus_bots_and_duplicates() -> None:
    actions = plan_actions()
    tally = all_accepted(actions)
    expected = expected_from_plan(actions)
    duplicates = Counter(
        a.channel for a in actions if isinstance(a, Conversion | Lead | Call) and a.duplicate
    )
    for channel, figures in tally.channels.items():
        for name, value in expected[channel].items():
            assert getattr(figures, name) == value, (channel, name)
        assert figures.duplicates == duplicates[channel]
        assert figures.errors == 0
    assert tally.requests == len(actions)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), duration=st.floats(1.0, 35.0))
def test_spend_is_the_counted_clicks_times_the_cost_per_click(seed: int, duration: float) -> None:
    actions = plan_actions(seed=seed, duration=duration, rate=40.0)
    expected = expected_from_plan(actions)
    for channel, figures in expected.items():
        units = figures["redemptions"] if channel == "influencer" else figures["clicks"]
        assert figures["spend_micros"] == units * int(UNIT_COST[channel] * M), channel
    spends = [a for a in actions if isinstance(a, Spend)]
    assert len({a.event_id for a in spends}) == len(spends)
    assert all(a.start < a.end <= duration for a in spends)


def test_a_spike_multiplies_the_channels_cost_per_click_from_its_offset_only() -> None:
    spike = parse_spike("email=3@20s")
    plain = plan_actions(duration=40.0)
    spiked_plan = TrafficPlan(
        PlanSettings(seed=7, rate=80.0, duration=40.0, run_id="t", spikes=(spike,))
    )
    spiked = list(spiked_plan.actions())
    # The traffic is the same; only the spend of email from 20 s on changes.
    assert [a for a in plain if not isinstance(a, Spend)] == [
        a for a in spiked if not isinstance(a, Spend)
    ]
    assert spiked_plan.unit_cost("email", 19.999) == D("0.05")
    assert spiked_plan.unit_cost("email", 20.0) == D("0.15")
    assert spiked_plan.unit_cost("paid_search", 30.0) == D("1.20")
    before = {a.event_id: a.cost for a in plain if isinstance(a, Spend)}
    for action in spiked:
        if not isinstance(action, Spend):
            continue
        if action.channel == "email" and action.start >= 20.0:
            assert action.cost == before[action.event_id] * 3
        else:
            assert action.cost == before[action.event_id]


def test_an_open_ended_plan_closes_with_the_spend_of_the_clicks_so_far() -> None:
    plan = TrafficPlan(PlanSettings(seed=3, rate=50.0, duration=None, run_id="t"))
    taken: list[Action] = []
    for action in plan.actions():
        if action.at > 25.0:
            break  # taken from the plan but never due: not sent, so not charged
        taken.append(action)
    closing = plan.close(25.0)
    assert closing
    assert all((a.start, a.end) == (20.0, 25.0) for a in closing)
    expected = expected_from_plan([*taken, *closing])
    for channel, figures in expected.items():
        units = figures["redemptions"] if channel == "influencer" else figures["clicks"]
        assert figures["spend_micros"] == units * int(UNIT_COST[channel] * M), channel
    assert list(plan.actions()) == []


def test_a_failed_original_makes_its_duplicate_the_counted_conversion() -> None:
    conversion = Conversion(1.0, "r-1", "email", "r-o1", D("10.00"), 4, None)
    again = Conversion(2.0, "r-2", "email", "r-o1", D("10.00"), 4, None, duplicate=True)
    tally = Tally(CHANNEL_NAMES)
    tally.failed(conversion, "HTTP 503")
    tally.accepted(again)
    tally.accepted(conversion)
    figures = tally.channels["email"]
    assert (figures.conversions, figures.duplicates, figures.revenue_micros) == (1, 1, 10 * M)
    assert tally.errors == Counter({"conversion: HTTP 503": 1})
    assert tally.document()["errors"] == 1


def order(
    at: float, event_id: str, value: str, status: str | None = None, **more: object
) -> Conversion:
    """A conversion of order "r-o1" of paid_search after click 4, unless `more` says otherwise."""
    fields: dict[str, object] = {"channel": "paid_search", "order_id": "r-o1", "click_key": 4}
    fields.update(more)
    return Conversion(
        at,
        event_id,
        value=D(value),
        coupon=None,
        status=status,
        **fields,  # type: ignore[arg-type]
    )


def test_restatements_move_net_figures_and_leave_gross_as_first_reported() -> None:
    tally = Tally(CHANNEL_NAMES)
    for action in (
        order(1, "a1", "10", "pending", order_id="a"),  # pending, then approved
        order(5, "a2", "10", "approved", order_id="a", restated=True),
        order(1, "b1", "20", "pending", order_id="b"),  # pending, then declined
        order(5, "b2", "20", "declined", order_id="b", restated=True),
        order(1, "c1", "30", order_id="c"),  # approved, then refunded in full
        order(5, "c2", "30", "refunded", order_id="c", restated=True),
        order(1, "d1", "40", order_id="d"),  # approved, then refunded in part
        order(5, "d2", "25", "approved", order_id="d", restated=True),
        order(6, "d3", "25", "approved", order_id="d", restated=True),  # changes nothing
        order(1, "e1", "50", "pending", order_id="e"),  # still pending
        order(2, "e1", "50", "pending", order_id="e", duplicate=True),  # the same post again
    ):
        tally.accepted(action)
    # Approved (absent) and "approved" are one status: this re-post changes nothing either.
    tally.accepted(order(7, "c3", "30", "refunded", order_id="c", restated=True))
    figures = tally.channels["paid_search"]
    assert (figures.conversions, figures.revenue_micros) == (5, 150 * M)
    assert (figures.net_conversions, figures.net_revenue_micros) == (3, (10 + 25 + 50) * M)
    assert (figures.pending, figures.pending_micros) == (1, 50 * M)
    assert (figures.declined, figures.declined_micros) == (1, 20 * M)
    assert (figures.refunded, figures.refunded_micros) == (1, 30 * M)
    assert (figures.restatements, figures.duplicates) == (4, 3)
    document = tally.document()["channels"]["paid_search"]
    assert document["net_revenue"] == "85.00"
    assert document["refunded_micros"] == 30 * M


def test_a_restatement_whose_first_report_failed_is_the_order_as_first_reported() -> None:
    first = order(1, "a1", "10", "pending")
    tally = Tally(CHANNEL_NAMES)
    tally.failed(first, "HTTP 503")
    tally.accepted(order(5, "a2", "10", "declined", restated=True))
    figures = tally.channels["paid_search"]
    assert (figures.conversions, figures.revenue_micros, figures.net_conversions) == (1, 10 * M, 0)
    assert (figures.declined, figures.restatements) == (1, 0)
    assert tally.errors == Counter({"conversion: HTTP 503": 1})


def test_a_customer_is_new_to_their_first_channel_and_a_repeat_buyer_elsewhere() -> None:
    ann = "r-cu1@example.com"
    tally = Tally(CHANNEL_NAMES)
    tally.accepted(order(1, "a1", "100", order_id="a", customer=ann))
    tally.accepted(order(9, "b1", "40", order_id="b", channel="email", customer=ann))
    tally.accepted(order(12, "b2", "0", "refunded", order_id="b", channel="email", restated=True))
    tally.accepted(order(13, "c1", "60", order_id="c", channel="email", customer="r-cu2@x.org"))
    search, email = tally.channels["paid_search"], tally.channels["email"]
    assert (search.new_customers, search.repeat_sales) == (1, 0)
    assert (email.new_customers, email.repeat_sales, email.repeat_revenue_micros) == (1, 1, 40 * M)
    # Ann's refunded repeat order came back out of paid_search's cohort revenue.
    assert (search.ltv_revenue_micros, email.ltv_revenue_micros) == (100 * M, 60 * M)
    assert email.net_revenue_micros == 60 * M


def test_orders_take_every_status_and_customers_come_back_through_other_channels() -> None:
    actions = plan_actions(customers=True, duration=60.0)
    conversions = [a for a in actions if isinstance(a, Conversion)]
    firsts = {c.order_id: c for c in conversions if not c.restated and not c.duplicate}
    restated = [c for c in conversions if c.restated]
    statuses = Counter(c.status for c in restated)
    assert statuses.keys() == {"approved", "declined", "refunded"}
    assert any(c.value < firsts[c.order_id].value for c in restated)  # partial refunds
    assert any(c.status == "pending" for c in firsts.values())
    for restatement in restated:
        # The same order, click (so the same Kafka key) and customer, after any re-post of it.
        first = firsts[restatement.order_id]
        assert (restatement.click_key, restatement.coupon, restatement.customer) == (
            first.click_key,
            first.coupon,
            first.customer,
        )
        reposts = [c.at for c in conversions if c.duplicate and c.order_id == first.order_id]
        assert restatement.at > max(reposts, default=first.at)
    first_order: dict[str, Conversion] = {}
    for conversion in sorted(firsts.values(), key=lambda c: c.at):
        assert conversion.customer is not None
        earlier = first_order.setdefault(conversion.customer, conversion)
        if earlier is not conversion:
            assert conversion.at >= earlier.at + RETURN_AFTER
    returning = [c for c in firsts.values() if first_order[str(c.customer)] is not c]
    assert any(c.channel != first_order[str(c.customer)].channel for c in returning)
    tally = all_accepted(actions)
    totals = tally.totals()
    assert totals.new_customers == len(first_order)
    assert totals.repeat_sales == len(returning)
    # Net revenue is every order's last report, when pending or approved.
    last = {c.order_id: c for c in sorted(conversions, key=lambda c: c.at)}
    net = sum(c.value for c in last.values() if (c.status or "approved") in ("approved", "pending"))
    assert totals.net_revenue_micros == int(net * M)
    assert totals.ltv_revenue_micros == totals.net_revenue_micros


def test_without_customers_no_customer_id_is_sent() -> None:
    actions = plan_actions(duration=20.0)
    assert all(a.customer is None for a in actions if isinstance(a, Conversion))


def test_spend_posted_again_under_its_id_replaces_the_figure() -> None:
    tally = Tally(CHANNEL_NAMES)
    tally.accepted(Spend(10.0, "r-spend-email-0", "email", D("3.50"), 0.0, 10.0))
    tally.accepted(Spend(10.0, "r-spend-email-0", "email", D("4.25"), 0.0, 10.0))
    assert tally.channels["email"].spend_micros == 4_250_000
    assert tally.document()["channels"]["email"]["spend"] == "4.25"


def test_the_daily_rhythm_is_smooth_and_averages_one() -> None:
    samples = [rhythm(hour / 10) for hour in range(240)]
    assert sum(samples) / len(samples) == pytest.approx(1.0)
    assert min(samples) == pytest.approx(0.4)
    assert max(samples) == pytest.approx(1.6)
    assert rhythm(20.0) == pytest.approx(1.6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("paid_search=3@2m", Spike("paid_search", D(3), 120.0)),
        ("Paid Search=1.5@30s", Spike("paid_search", D("1.5"), 30.0)),
        ("email=2@0", Spike("email", D(2), 0.0)),
        ("influencer=4@1h", Spike("influencer", D(4), 3600.0)),
    ],
)
def test_spikes_parse(text: str, expected: Spike) -> None:
    assert parse_spike(text) == expected


@pytest.mark.parametrize(
    "text", ["paid_search", "paid_search=3", "tv=3@1m", "email=0@1m", "email=x@1m", "email=2@1d"]
)
def test_bad_spikes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_spike(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_plan_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        PlanSettings(seed=1, rate=0)
    with pytest.raises(ValueError, match="run_id"):
        PlanSettings(seed=1, rate=1, run_id="a b")
    with pytest.raises(ValueError, match="unknown channel"):
        PlanSettings(seed=1, rate=1, spikes=(Spike("tv", D(2), 0.0),))


def test_coupon_rows_name_the_influencer_channel() -> None:
    rows = coupon_rows()
    assert rows
    assert {channel for _, channel in rows} == {"influencer"}


def test_calls_go_to_pooled_and_static_numbers_and_the_tally_counts_leads_once_a_caller() -> None:
    actions = plan_actions(rate=200, duration=60, call_share=0.5)
    calls = [action for action in actions if isinstance(action, Call)]
    # Pooled (after a paid_search visit) and static (the influencer's) numbers.
    assert {(call.channel, call.static_number is None) for call in calls} == {
        ("paid_search", True),
        ("influencer", False),
    }
    # Missed, short and long calls; repeat callers; webhooks posted twice.
    assert any(not call.answered for call in calls)
    assert any(call.answered and not call.qualified for call in calls)
    assert any(call.qualified for call in calls)
    assert len({call.caller for call in calls}) < len(calls)
    assert any(call.duplicate for call in calls)
    tally = all_accepted(actions)
    unique = {call.call_id: call for call in calls if not call.duplicate}
    for channel in ("paid_search", "influencer"):
        figures = tally.channels[channel]
        of_channel = [call for call in unique.values() if call.channel == channel]
        assert figures.calls == len(of_channel)
        assert figures.answered_calls == sum(call.answered for call in of_channel)
    first_leads: dict[str, Call] = {}
    for call in sorted(unique.values(), key=lambda call: call.at):
        if call.qualified:
            first_leads.setdefault(call.caller, call)
    forms = len({a.lead_id for a in actions if isinstance(a, Lead) and not a.duplicate})
    assert sum(figures.leads for figures in tally.channels.values()) == len(first_leads) + forms
    assert tally.document()["totals"]["leads"] == len(first_leads) + forms
