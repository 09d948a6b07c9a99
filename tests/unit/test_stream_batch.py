"""The compact batch: the fast path over raw records agrees with `Event.from_wire`."""

from __future__ import annotations

from types import MappingProxyType

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.core.click_ids import is_signed, mint
from adpulse.core.currencies import MICROS
from adpulse.core.event import Event, EventError, EventRules, EventType
from stream.batch import (
    ABSENT_ROW,
    EVENT_FIELDS,
    MAX_AMOUNT_MICROS,
    REJECTED_CLICK_ID,
    ROW,
    decode_events,
    decode_records,
    make_row,
)
from tests.unit.test_stream_aggregate import CLICK_KEYS, NOW, event_streams, make_event


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
    from_records = decode_records([event.to_wire() for event in events], CLICK_KEYS)
    from_events = decode_events(events, CLICK_KEYS)
    assert from_records.rows == from_events.rows
    assert from_records.spend == from_events.spend
    assert from_records.bots == from_events.bots
    assert from_records.rejected_click_ids == from_events.rejected_click_ids
    assert from_records.rejected == []
    # A bot's click is a row of its own (kind "b"), counted apart by the script.
    assert len(from_records) == len(events)
    assert from_records.rows[0 :: len(ROW)].count("b") == from_records.bots


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
    assert len(row) == EVENT_FIELDS == len(ROW)
    assert dict(zip(ROW, row, strict=True)) == {
        "kind": "c",
        "minute": int(NOW.timestamp()) // 60,
        "event_id": "v1",
        "channel": "",
        "coupon": "SAVE10",
        "value_micros": 5,
        "campaign": "bf",
        "click_id": "k1",
        "order_id": "o1",
        "status": "",
        "customer_id": "",
        "lead_id": "",
        "grouped_channel": "",
        "caller": "",
        "answered": False,
        "qualified": False,
        "carried_minute": 0,
    }


def test_a_row_built_by_hand_is_the_decoded_row() -> None:
    """`make_row` fills what it is not given with what decoding writes for an absent field, so
    a script row built by hand (tests) is one the worker could have sent."""
    event = make_event("v1", EventType.CONVERSION, NOW, order_id="o1", value_micros=5)
    decoded = decode_events([event]).rows
    given: dict[str, str | int] = {
        "kind": "c",
        "event_id": "v1",
        "minute": int(NOW.timestamp()) // 60,
    }
    assert make_row(**given, order_id="o1", value_micros=5) == decoded
    assert tuple(ABSENT_ROW) == ROW
    with pytest.raises(ValueError, match="click_idd"):
        make_row(click_idd="k1")


@pytest.mark.parametrize("kind", ["click", "redemption", "conversion", "lead", "call"])
def test_the_fast_row_follows_the_derived_row(kind: str) -> None:
    """Every counted field with a value of its own: the fast path's row, written out, puts each
    where `ROW` (derived from the contract) says, as the careful path does."""
    wire = orjson.loads(make_event("e-1", EventType.CLICK, NOW).to_wire())
    values: dict[str, object] = {}
    # The last, carried_minute, is the worker's own (a signed click id's), not a wire field.
    for position, name in enumerate(ROW[3:-1]):
        values[name] = position + 1 if name == "value_micros" else f"{name}-value"
        if name in ("answered", "qualified"):
            values[name] = True
    values["status"] = "pending"  # a status the script knows
    record = orjson.dumps({**wire, **values, "type": kind})
    fast = decode_records([record])
    assert fast.rejected == []
    assert fast.rows == decode_events([Event.from_wire(record)]).rows
    row = dict(zip(ROW, fast.rows, strict=True))
    assert {name: row[name] for name in values} == values
    letters = {"click": "k", "redemption": "r", "conversion": "c", "lead": "l", "call": "p"}
    assert (row["kind"], row["event_id"]) == (letters[kind], "e-1")


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
        orjson.dumps(GOOD).replace(b'"search"', b'"se\xffarch"'),
        orjson.dumps(GOOD).replace(b'"search"', b'"se\\ud800arch"'),
        orjson.dumps({**GOOD, "ad_click_ids": {"gclid": 7}}),
        orjson.dumps({**GOOD, "bot": "yes"}),
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


def test_the_contracts_largest_amount_is_the_batchs_and_exact_in_lua() -> None:
    largest = int(EventRules().max_money * MICROS)
    event = make_event("v", EventType.CONVERSION, NOW, value_micros=largest)
    assert not decode_records([event.to_wire()]).rejected
    assert decode_events([event])
    # The script adds amounts as Lua numbers, doubles below 2**53.
    assert largest < 2**53


@pytest.mark.parametrize(
    ("field", "value"), [("status", "not-a-status"), ("value_micros", MAX_AMOUNT_MICROS + 1)]
)
def test_a_rejected_bot_record_is_not_counted_as_a_bot(field: str, value: object) -> None:
    # Found by the near-miss property test: the fast path counted the bot before rejecting.
    wire = orjson.loads(make_event("v", EventType.CONVERSION, NOW, value_micros=1).to_wire())
    wire.update({"bot": True, "order_id": "o1", field: value})
    batch = decode_records([orjson.dumps(wire)])
    assert [error.field for _, error in batch.rejected] == [field]
    assert batch.bots == 0


TIME_KEYS = ("ts", "received_at")
TIME_CHARACTERS = "0123456789:-.TZ+ ,\u0663\uff11"
GOOD_TIME = NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
ODD_TIMES = (
    GOOD_TIME[:20] + "\u0663" * 6 + "Z",
    GOOD_TIME[:20] + "12345\uff11Z",
    GOOD_TIME + "Z",
    GOOD_TIME + " ",
    GOOD_TIME[:19] + ",123456Z",
    GOOD_TIME[:19] + "+123456Z",
    GOOD_TIME[:19] + " 123456Z",
    GOOD_TIME[:26] + "z",
    GOOD_TIME[:10] + " " + GOOD_TIME[11:],
    "2026-11-23T24:00:00.000000Z",
    "2026-11-23T23:59:60.000000Z",
    "2026-02-29T12:00:00.000000Z",
    "2028-02-29T12:00:00.000000Z",
    "0000-01-01T00:00:00.000000Z",
    "0001-01-01T00:00:00.000000Z",
    "9999-12-31T23:59:59.999999Z",
    "1969-12-31T23:59:59.999999Z",
    "2026-11-23 12:00:30.000000Z",
    "2026-11-23T12:00:30,000000Z",
    "2026-W47-1T12:00:30.000000Z",
    "20261123T120030.0000000000Z",
    "2026-11-23T12:00:30.000+0000Z",
    "2026-11-23T12:00:30.000000z",
    "2026-11-23T12:00:30.000000Z ",
)


@st.composite
def odd_times(draw: st.DrawFn, base: str = GOOD_TIME) -> str:
    """Wire times and near misses: `base` with one character changed, or a known odd case."""
    if draw(st.booleans()):
        return draw(st.sampled_from(ODD_TIMES))
    text = list(base)
    position = draw(st.integers(0, len(text) - 1))
    text[position] = draw(st.sampled_from(TIME_CHARACTERS))
    return "".join(text)


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.sampled_from([MAX_AMOUNT_MICROS, MAX_AMOUNT_MICROS + 1, 0, 1.5]),
    st.text(max_size=8),
    st.sampled_from(["click", "Click", "conversion", "redemption", "call", "spend", "view", ""]),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.sampled_from(["gclid", "fbclid", "utm"]), st.one_of(st.text(), st.none())),
    odd_times(),
)


@st.composite
def near_miss_records(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid record, and it with a few keys set to odd values, removed or added."""
    events = draw(enriched())
    original = orjson.loads(draw(st.sampled_from(events)).to_wire()) if events else GOOD
    wire = dict(original)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*wire, *TIME_KEYS, "value_micros", "bot", "start", "surprise"]))
        action = draw(st.sampled_from(["time", "value", "remove"]))
        if action == "remove":
            wire.pop(key, None)
        else:
            base = original.get(key)
            if type(base) is not str or len(base) != len(GOOD_TIME):
                base = GOOD_TIME
            wire[key] = draw(odd_times(base) if action == "time" else ODD_VALUES)
    return orjson.dumps(original), orjson.dumps(wire)


def decode_carefully(record: bytes) -> tuple[list[str | int], list[Event], int, object]:
    """What the careful path makes of one record: rows, spend, bots, the error or None."""
    try:
        batch = decode_events([Event.from_wire(record)])
    except EventError as error:
        return [], [], 0, (error.field, error.reason)
    return batch.rows, batch.spend, batch.bots, None


@settings(max_examples=400, deadline=None)
@given(st.lists(near_miss_records(), min_size=1, max_size=3))
def test_near_misses_decode_as_the_careful_path_says(pairs: list[tuple[bytes, bytes]]) -> None:
    # Each near miss follows its original, whose checked times are then cached, and comes
    # twice: the second time its time is the last one seen (`decode_records`' memo).
    records = [record for original, miss in pairs for record in (original, miss, miss)]
    batch = decode_records(records)
    rows: list[str | int] = []
    spend: list[Event] = []
    bots = 0
    errors = []
    for position, record in enumerate(records):
        record_rows, record_spend, record_bots, error = decode_carefully(record)
        rows += record_rows
        spend += record_spend
        bots += record_bots
        if error is not None:
            errors.append((position, error))
    assert batch.rows == rows
    assert batch.spend == spend
    assert batch.bots == bots
    assert [(position, (e.field, e.reason)) for position, e in batch.rejected] == errors


@pytest.mark.parametrize("key", TIME_KEYS)
@pytest.mark.parametrize("text", ODD_TIMES)
def test_odd_times_are_judged_as_from_wire_judges_them(key: str, text: str) -> None:
    # The good record first, so that its time (the same second as most odd ones) is cached.
    # Twice: the second time, the odd time is the last one seen (`decode_records`' memo).
    record = orjson.dumps({**GOOD, key: text})
    batch = decode_records([orjson.dumps(GOOD), record, record])
    rows, _, _, error = decode_carefully(record)
    assert batch.rows[EVENT_FIELDS:] == rows * 2
    assert [(e.field, e.reason) for _, e in batch.rejected] == (
        [] if error is None else [error] * 2
    )


# Signed click ids (`adpulse.core.click_ids`): the row carries the id's attribution instead of
# the id, which the script would otherwise look up or register.
SEARCH_CLICK = mint(CLICK_KEYS.current, "paid_search", "spring", 29_430_000)
FORGED_CLICK = str(SEARCH_CLICK)[:-3] + "AAA"


def _row(
    click_id: str, kind: EventType = EventType.CONVERSION, **fields: object
) -> dict[str, object]:
    event = make_event("v1", kind, NOW, click_id=click_id, **fields)
    fast = decode_records([event.to_wire()], CLICK_KEYS)
    careful = decode_events([event], CLICK_KEYS)
    assert fast.rows == careful.rows
    assert fast.rejected_click_ids == careful.rejected_click_ids
    return {**dict(zip(ROW, fast.rows, strict=True)), "rejected": fast.rejected_click_ids}


@pytest.mark.parametrize("kind", [EventType.CONVERSION, EventType.LEAD])
def test_a_signed_click_id_fills_a_conversions_attribution(kind: EventType) -> None:
    row = _row(str(SEARCH_CLICK), kind)
    assert (row["channel"], row["campaign"], row["click_id"]) == ("paid_search", "spring", "")
    assert (row["carried_minute"], row["rejected"]) == (29_430_000, 0)
    # Its own campaign stays; its own channel wins over the click's, as with the registry.
    assert _row(str(SEARCH_CLICK), kind, campaign="own")["campaign"] == "own"
    own = _row(str(SEARCH_CLICK), kind, channel="email")
    assert (own["channel"], own["click_id"], own["carried_minute"]) == ("email", "", 0)


def test_a_click_with_a_signed_id_registers_nothing() -> None:
    row = _row(str(SEARCH_CLICK), EventType.CLICK, channel="paid_search", campaign="spring")
    assert (row["click_id"], row["carried_minute"], row["rejected"]) == ("", 0, 0)


@pytest.mark.parametrize("kind", [EventType.CONVERSION, EventType.LEAD])
def test_a_forged_click_id_attributes_nothing_and_is_counted(kind: EventType) -> None:
    row = _row(FORGED_CLICK, kind)
    assert (row["channel"], row["campaign"], row["click_id"]) == ("", "", "")
    assert (row["carried_minute"], row["rejected"]) == (REJECTED_CLICK_ID, 1)


@pytest.mark.parametrize(
    ("kind", "channel"),
    [(EventType.CLICK, ""), (EventType.CLICK, "email"), (EventType.CONVERSION, "email")],
)
def test_a_click_id_that_attributes_nothing_is_not_verified(kind: EventType, channel: str) -> None:
    """A click's id, or that of a conversion with a channel of its own, is not used: it is
    dropped from the row (never registered) without paying for its HMAC."""
    row = _row(FORGED_CLICK, kind, channel=channel or None)
    assert (row["channel"], row["click_id"], row["carried_minute"]) == (channel, "", 0)
    assert row["rejected"] == 0


def test_without_a_key_a_signed_id_counts_as_rejected() -> None:
    event = make_event("v1", EventType.CONVERSION, NOW, click_id=SEARCH_CLICK)
    batch = decode_records([event.to_wire()])
    assert batch.rejected_click_ids == 1
    assert dict(zip(ROW, batch.rows, strict=True))["channel"] == ""


def test_foreign_click_ids_are_left_to_the_registry() -> None:
    row = _row("EAIaIQobChMI-gclid")
    assert (row["click_id"], row["carried_minute"], row["rejected"]) == ("EAIaIQobChMI-gclid", 0, 0)


@pytest.mark.parametrize(
    "click_id",
    [
        "adp1.x",
        "adp1.",
        "adp.",
        "adpx.abc",
        "adp..x",
        "adp1",
        "adp",
        "adp.x",
        "adq1.x",
        "xdp1.x",
        "ADP1.x",
        "adp12.x",
    ],
)
@pytest.mark.parametrize("kind", [EventType.CLICK, EventType.CONVERSION])
def test_the_fast_paths_signed_id_check_is_is_signed(click_id: str, kind: EventType) -> None:
    row = _row(click_id, kind)
    assert (row["click_id"] == "") == is_signed(click_id)
