"""Order statuses at the edge (`adpulse.core.orders`) and what each counts (`stream.orders`)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from adpulse.core.event import EventError, EventRules, parse_event
from adpulse.core.orders import parse_status, parse_status_map
from stream.days import LocalDays
from stream.orders import OrderState, order_counts, restatement_counts

NOW = datetime(2026, 11, 23, 21, 53, tzinfo=UTC)
CODES = parse_status_map("1=approved,2=pending,3=declined,5=pending")


def test_the_status_map_reads_codes_onto_names() -> None:
    assert dict(CODES) == {"1": "approved", "2": "pending", "3": "declined", "5": "pending"}
    assert dict(parse_status_map("")) == {}
    assert dict(parse_status_map(" A = Refunded ,")) == {"A": "refunded"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1=paid", "the status must be one of approved, pending, declined, refunded"),
        ("1", "expected CODE=STATUS"),
        ("=pending", "expected CODE=STATUS"),
        ("pending=declined", "a code may not be a status name"),
    ],
)
def test_a_bad_status_map_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_status_map(text)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("pending", "pending"),
        (" DECLINED ", "declined"),
        ("Refunded", "refunded"),
        ("approved", None),  # the default: no status on the wire
        ("", None),
        ("2", "pending"),
        (3, "declined"),
        (1, None),
    ],
)
def test_statuses_by_name_or_code(value: object, status: str | None) -> None:
    assert parse_status(value, CODES) == status


def test_an_unknown_status_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"ADPULSE_STATUS_MAP \(no codes set\)"):
        parse_status("2", {})
    with pytest.raises(ValueError, match="expected a string"):
        parse_status(2.5, CODES)


def test_a_conversion_carries_its_status_on_the_wire_and_a_click_may_not() -> None:
    rules = EventRules(status_codes=CODES)
    event = parse_event(
        {"type": "conversion", "order_id": "A-1", "status": 2, "value": "5"},
        rules=rules,
        received_at=NOW,
    )
    assert event.status == "pending"
    assert orjson.loads(event.to_wire())["status"] == "pending"
    approved = parse_event(
        {"type": "conversion", "order_id": "A-1", "status": "1"}, rules=rules, received_at=NOW
    )
    assert "status" not in orjson.loads(approved.to_wire())
    with pytest.raises(EventError) as refused:
        parse_event({"type": "click", "status": "pending"}, rules=rules, received_at=NOW)
    assert (refused.value.field, refused.value.reason) == (
        "status",
        "not allowed on click events",
    )
    with pytest.raises(EventError) as unknown:
        parse_event({"type": "conversion", "status": "9"}, rules=rules, received_at=NOW)
    assert unknown.value.field == "status"
    assert "ADPULSE_STATUS_MAP" in unknown.value.reason


def test_what_each_status_counts() -> None:
    assert order_counts("a", 5) == [("c", 1), ("v", 5)]
    assert order_counts("p", 5) == [("c", 1), ("v", 5), ("e", 1), ("E", 5)]
    assert order_counts("d", 5) == [("d", 1), ("D", 5)]
    assert order_counts("r", 5, -1) == [("f", -1), ("F", -5)]
    assert order_counts("a", 0) == [("c", 1)]


def test_a_restatement_moves_every_counter_by_the_difference() -> None:
    order = OrderState("a", 29_000_000, 60, "search", "spring")
    moved: dict[str, int] = {}
    for counter, delta in restatement_counts(order, "r", 60):
        moved[counter] = moved.get(counter, 0) + delta
    assert moved == {"c": -1, "v": -60, "f": 1, "F": 60}
    partial: dict[str, int] = {}
    for counter, delta in restatement_counts(order, "a", 45):
        partial[counter] = partial.get(counter, 0) + delta
    assert partial == {"c": 0, "v": -15}
    assert OrderState.decode(order.encode()) == order


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Australia/Lord_Howe"])
def test_the_order_window_days_agree_with_each_minute(zone: str) -> None:
    """The script's table of the window's days gives every minute the day `of_minute` gives."""
    days = LocalDays(ZoneInfo(zone))
    now = int(datetime(2026, 11, 3, 12, tzinfo=UTC).timestamp())
    window = 40 * 86_400
    flat = orjson.loads(days.window_table(now, window))
    rows = [flat[i : i + 5] for i in range(0, len(flat), 5)]
    assert rows[0][0] * 60 <= now - window
    assert rows[-1][0] * 60 > now
    for row, following in itertools.pairwise(rows):
        for minute in (row[0], (row[0] + following[0]) // 2, following[0] - 1):
            assert days.of_minute(minute) == tuple(row[1:]), (zone, minute)
    assert days.window_table(now, window) is days.window_table(now + 60, window)
