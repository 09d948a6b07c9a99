"""The compact batch: the fast path over raw records agrees with `Event.from_wire`."""

from __future__ import annotations

from types import MappingProxyType

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.event import Event, EventError, EventType
from stream.batch import EVENT_FIELDS, MAX_AMOUNT_MICROS, decode_events, decode_records
from tests.unit.test_stream_aggregate import NOW, event_streams, make_event


@st.composite
def enriched(draw: st.DrawFn) -> list[Event]:
    """Streams with the enrichment fields the fast path must read past."""
    events = draw(event_streams())
    out = []
    for event in events:
        fields = {name: getattr(event, name) for name in Event.__dataclass_fields__}
        if draw(st.booleans()):
            fields["utm_source"], fields["utm_medium"] = "google", "cpc"
            fields["ad_click_ids"] = MappingProxyType({"gclid": "abc"})
            fields["ip"] = "192.0.2.0"
        fields["bot"] = draw(st.booleans()) and draw(st.booleans())
        out.append(Event(**fields))
    return out


@settings(max_examples=200, deadline=None)
@given(enriched())
def test_records_decode_like_events(events: list[Event]) -> None:
    from_records = decode_records([event.to_wire() for event in events])
    from_events = decode_events(events)
    assert from_records.rows == from_events.rows
    assert from_records.spend == from_events.spend
    assert from_records.bots == from_events.bots
    assert from_records.rejected == []
    assert len(from_records) == len(events) - from_records.bots


def test_row_layout() -> None:
    event = make_event(
        "v1",
        EventType.CONVERSION,
        NOW,
        click_id="k1",
        coupon="SAVE10",
        order_id="o1",
        value_micros=5,
        campaign="bf",
    )
    row = decode_records([event.to_wire()]).rows
    assert len(row) == EVENT_FIELDS
    assert row == [
        "c",
        "v1",
        int(NOW.timestamp()) // 60,
        "",
        "k1",
        "SAVE10",
        "unattributed",
        "o1",
        5,
        "bf",
    ]


GOOD = orjson.loads(make_event("e1", EventType.CLICK, NOW, channel="search").to_wire())


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[1, 2]",
        orjson.dumps({**GOOD, "surprise": 1}),
        orjson.dumps({**GOOD, "channel": 5}),
        orjson.dumps({**GOOD, "ts": "2026-11-23T12:00:30Z"}),
        orjson.dumps({**GOOD, "ts": "2026-13-23T12:00:30.000000Z"}),
        orjson.dumps({**GOOD, "received_at": "yesterday"}),
        orjson.dumps({**GOOD, "type": "view"}),
        orjson.dumps({**GOOD, "ad_click_ids": {"utm": "x"}}),
        orjson.dumps({key: value for key, value in GOOD.items() if key != "event_id"}),
    ],
)
def test_bad_records_are_rejected_as_from_wire_says(record: bytes) -> None:
    with pytest.raises(EventError) as raised:
        Event.from_wire(record)
    batch = decode_records([orjson.dumps(GOOD), record])
    assert len(batch) == 1
    [(position, error)] = batch.rejected
    assert position == 1
    assert (error.field, error.reason) == (raised.value.field, raised.value.reason)


def test_amount_beyond_the_contract_is_rejected() -> None:
    event = make_event("v", EventType.CONVERSION, NOW, value_micros=MAX_AMOUNT_MICROS + 1)
    assert decode_records([event.to_wire()]).rejected[0][1].field == "value_micros"
    with pytest.raises(ValueError, match="above the maximum"):
        decode_events([event])
