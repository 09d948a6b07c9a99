"""Every field of the contract through every path derived from it.

For each field of `adpulse.core.contract.FIELDS`, an event that carries it goes through the
general path (`parse_event`, `Event.to_wire`), the tracker's query fast path
(`QueryRecords.record` and `.from_query`) when the field is one it reads, `Event.from_wire`, and
the worker's decoders (`decode_records`, `decode_events`), which must all agree; and the
reference fold (`stream.aggregate.Aggregate`) counts the fast and the general records alike.
tests/integration/test_store_redis.py runs the same cases through the Redis script.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from adpulse.core.contract import (
    AD_CLICK_IDS,
    CLIENT_FIELDS,
    COUNTED,
    FIELDS,
    WEBHOOK_TYPES,
    WIRE_KEYS,
    EventType,
    Field,
    Kind,
    Source,
)
from adpulse.core.event import Event, EventError, EventRules, parse_event, partition_key
from stream.aggregate import Aggregate
from stream.batch import ROW, decode_events, decode_records
from tracker.records import QUERY_FIELDS, QueryRecords

NOW = datetime.now(UTC).replace(second=30, microsecond=123456)
RULES = EventRules(fx_rates={"EUR": Decimal("1.08")}, hash_key=b"contract-test-key")
COUPONS = {"SAVE10": "email"}
# A value of each kind of client field that the fast path takes as it is.
SAMPLES: dict[Kind, str] = {
    Kind.ID: "ev-contract",
    Kind.TYPE: "conversion",
    Kind.TEXT: "summer_sale",
    Kind.TOKEN: "tok-1",
    Kind.AD_CLICK_ID: "Cj0-1",
    Kind.SLUG: "paid_search",
    Kind.COUPON: "SAVE10",
    Kind.CURRENCY: "USD",
    Kind.MONEY: "12.5",
    Kind.TIME: (NOW - timedelta(minutes=1)).isoformat(),
    Kind.STATUS: "pending",
    Kind.CUSTOMER: "Ann@Example.com",
}
SPEND = {"type": "spend", "channel": "search", "cost": "30", "start": "", "end": ""}


def case(field: Field) -> tuple[dict[str, str], dict[str, Any]]:
    """A query that makes `field` appear in the record, and the edge's enrichment."""
    enrichment: dict[str, Any] = {"received_at": NOW, "grouped_channel": None, "ip": None}
    event_id = {"event_id": f"e-{field.name}"}
    if field.types <= {EventType.SPEND}:
        start = NOW.replace(second=0) - timedelta(minutes=10)
        fields = {
            **SPEND,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=5)).isoformat(),
        }
        return event_id | fields, enrichment
    if field.types <= WEBHOOK_TYPES:
        # A call's own fields: the tracker's webhook writes them onto the event it parsed.
        enrichment["webhook"] = True
        enrichment["call"] = {
            "tracked_number": "+14155550123",
            "caller": "ab" * 32,
            "answered": True,
            "qualified": True,
        }
        return event_id | {"type": "call", "channel": "paid_search"}, enrichment
    fields = event_id | {"type": "conversion", "order_id": f"o-{field.name}"}
    if EventType.CONVERSION not in field.types:  # a field of another type's (a lead's lead_id)
        fields["type"] = min(field.types).value
    if field.source is Source.CLIENT and field.name != "event_id":
        fields[field.name] = SAMPLES[field.kind]
        if field.kind is Kind.CURRENCY:  # dropped without an amount
            fields["value"] = SAMPLES[Kind.MONEY]
    elif field.name == "grouped_channel":
        enrichment["grouped_channel"] = "paid_social"
    elif field.name == "ip":
        enrichment["ip"] = "203.0.113.0"
    elif field.name == "bot":
        fields["type"] = "click"
        enrichment["bot"] = True
    elif field.name in ("source_currency", "source_amount_micros"):
        fields |= {"value": "10", "currency": "EUR"}
    elif field.name == "ad_click_ids":
        fields["gclid"] = "Cj0-1"
    if fields["type"] == "click":
        del fields["order_id"]
    return fields, enrichment


def built(fields: dict[str, str], enrichment: dict[str, Any]) -> Event:
    edge = dict(enrichment)
    call = edge.pop("call", None)
    event = parse_event(fields, rules=RULES, **edge)
    return event if call is None else dataclasses.replace(event, **call)


def general(fields: dict[str, str], enrichment: dict[str, Any]) -> tuple[EventType, bytes, bytes]:
    event = built(fields, enrichment)
    return event.type, partition_key(event), event.to_wire()


def counted(records: list[bytes]) -> dict[str, dict[str, int]]:
    model = Aggregate(coupons=dict(COUPONS))
    model.apply([Event.from_wire(record) for record in records], NOW)
    return model.nonzero()


def test_event_attributes_are_the_wire_keys() -> None:
    assert set(Event.__dataclass_fields__) == set(WIRE_KEYS)
    assert set(RULES._field_parsers) == CLIENT_FIELDS
    wire_row = {"kind", "minute", *(str(field.wire_key) for field in COUNTED)} - {"type", "ts"}
    assert wire_row | {"carried_minute"} == set(ROW)


@pytest.mark.parametrize("field", FIELDS, ids=[field.name for field in FIELDS])
def test_every_field_takes_every_path_to_the_same_counters(field: Field) -> None:
    fields, enrichment = case(field)
    found = general(fields, enrichment)
    wire = orjson.loads(found[2])
    # The field is on the wire: under its key, or among the ad click ids.
    if field.kind is Kind.AD_CLICK_ID:
        assert wire["ad_click_ids"] == {field.name: SAMPLES[Kind.AD_CLICK_ID]}
    else:
        assert field.wire_key in wire, (field.name, wire)
    records = [found[2]]

    # The fast path takes every field it knows, as a dict and as a query string.
    takes = (
        set(fields) <= QUERY_FIELDS
        and fields.get("currency") != "EUR"
        and "webhook" not in enrichment
    )
    if "webhook" in enrichment:
        # A call never comes through a query: the fast path leaves it to `parse_event`, which
        # refuses it from a client.
        with pytest.raises(EventError, match="webhook"):
            parse_event(fields, rules=RULES, received_at=NOW)
    quick = {key: value for key, value in enrichment.items() if key not in ("webhook", "call")}
    fast = QueryRecords(RULES).record(fields, **quick)
    assert (fast is not None) is takes
    if fast is not None:
        assert fast == found
        records.append(fast[2])
        grouped = enrichment["grouped_channel"]
        straight = QueryRecords(RULES, group=lambda source, medium, ids: grouped)
        query = "&".join(f"{key}={value}" for key, value in fields.items()).encode()
        edge = {key: value for key, value in enrichment.items() if key != "grouped_channel"}
        assert straight.from_query(query, **edge) == found

    # The wire reads back as the event, and the worker's two decoders agree on it.
    event = Event.from_wire(found[2])
    assert event == built(fields, enrichment)
    assert event.to_wire() == found[2]
    for record in records:
        batch = decode_records([record])
        assert batch.rejected == []
        careful = decode_events([Event.from_wire(record)])
        assert (batch.rows, batch.spend, batch.bots) == (careful.rows, careful.spend, careful.bots)
    assert counted(records[-1:]) == counted(records[:1])
    if field.counted and not event.bot:
        assert counted(records[:1]), "a counted field's event counts"


def test_the_cases_cover_every_client_field_and_the_bot() -> None:
    assert {name for field in FIELDS for name in case(field)[0]} == CLIENT_FIELDS
    assert any(case(field)[1].get("bot") for field in FIELDS)
    assert set(AD_CLICK_IDS) <= CLIENT_FIELDS
