"""Customer ids hashed at the edge (`adpulse.core.customers`) and cohorts (`stream.customers`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from adpulse.core.customers import hash_customer, parse_customer
from adpulse.core.event import EventError, EventRules, parse_event
from stream.customers import cohort_values, horizon_of, ltv_increments

NOW = datetime(2026, 11, 23, 21, 53, tzinfo=UTC)


def test_the_hash_is_keyed_and_ignores_an_address_case() -> None:
    one = hash_customer("Ann@Example.com ", b"key-1")
    assert one == hash_customer("ann@example.com", b"key-1")
    assert one != hash_customer("ann@example.com", b"key-2")
    assert len(one) == 32
    assert int(one, 16) >= 0
    # A CRM id keeps its case: two ids that differ only by it are two customers.
    assert hash_customer("AB-1", b"k") != hash_customer("ab-1", b"k")


def test_without_a_key_the_field_is_refused_saying_how_to_make_one() -> None:
    assert parse_customer("  ", None) is None
    with pytest.raises(EventError) as refused:
        parse_event(
            {"type": "conversion", "customer_id": "ann@example.com"},
            rules=EventRules(),
            received_at=NOW,
        )
    assert refused.value.field == "customer_id"
    assert "ADPULSE_HASH_KEY" in refused.value.reason
    assert "secrets.token_hex(32)" in refused.value.reason


def test_only_the_hash_reaches_the_wire() -> None:
    event = parse_event(
        {"type": "conversion", "customer_id": "ann@example.com", "order_id": "A-1"},
        rules=EventRules(hash_key=b"k"),
        received_at=NOW,
    )
    wire = event.to_wire()
    assert b"ann" not in wire
    assert orjson.loads(wire)["customer_id"] == hash_customer("ann@example.com", b"k")


def test_horizons_and_cohorts() -> None:
    assert [horizon_of(days * 1440) for days in (0, 29, 30, 89, 90, 364, 365)] == [
        1, 1, 2, 2, 3, 3, 4,
    ]  # fmt: skip
    assert ltv_increments((202611, 2, "email"), 5) == [("email:90", 5), ("email:365", 5)]
    cohort = cohort_values({"email:u": "2", "email:30": "50000000", "search:365": "7"})
    assert cohort["email"].ltv(30) == Decimal(25)
    assert cohort["email"].ltv(90) == Decimal(0)
    assert cohort["search"].ltv(365) is None  # no customers acquired: no LTV
