import contextlib
import dataclasses
import os
import pickle
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.core.channels import AD_CLICK_ID_KEYS
from adpulse.core.contract import WEBHOOK_TYPES
from adpulse.core.currencies import (
    CURRENCY_CODES,
    parse_amount,
    parse_fx_rates,
    parse_micros,
    to_micros,
)
from adpulse.core.event import (
    _WIRE_KEYS,
    EVENT_TYPES,
    Event,
    EventError,
    EventRules,
    EventType,
    new_event_id,
    parse_event,
    partition_key,
)

NOW = datetime(2026, 11, 23, 21, 53, 0, 123456, tzinfo=UTC)
RULES = EventRules(fx_rates={"EUR": Decimal("1.08"), "JPY": Decimal("0.0067")})
SPEND = {
    "type": "spend",
    "channel": "paid_search",
    "cost": "100.50",
    "start": "2026-11-23T00:00:00Z",
    "end": "2026-11-24T00:00:00Z",
}


def parse(raw: Mapping[str, object], **kwargs: object) -> Event:
    return parse_event(raw, rules=RULES, received_at=NOW, **kwargs)  # type: ignore[arg-type]


def rejection(raw: object) -> tuple[str, str]:
    with pytest.raises(EventError) as caught:
        parse(raw)  # type: ignore[arg-type]
    return caught.value.field, caught.value.reason


# --- accepted input -------------------------------------------------------------------------


def test_minimal_click_gets_defaults() -> None:
    event = parse({"type": "click"})
    assert event.type is EventType.CLICK
    assert len(event.event_id) == 32
    assert event.ts == NOW
    assert event.received_at == NOW
    assert event.channel is None
    assert event.ad_click_ids == {}
    assert event.value_micros is None
    assert event.currency is None
    assert not event.bot


def test_full_conversion() -> None:
    event = parse(
        {
            "event_id": "ev-1:a.b_c",
            "type": "Conversion",
            "ts": "2026-11-23T22:50:00+01:00",
            "channel": " Paid Search ",
            "campaign": "  Black Friday 🎉 ",
            "click_id": "clk-42",
            "coupon": " bf-2026 ",
            "order_id": "A-1001",
            "value": "49.90",
            "currency": "eur",
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "bf",
            "utm_term": "shoes",
            "utm_content": "ad 1",
            "gclid": "Cj0KCQiA",
            "fbclid": "",
        },
        grouped_channel="paid_search",
        ip="203.0.113.0",
        bot=True,
    )
    assert event.event_id == "ev-1:a.b_c"
    assert event.type == "conversion"
    assert event.ts == datetime(2026, 11, 23, 21, 50, tzinfo=UTC)
    assert event.ts.tzinfo is UTC
    assert event.channel == "paid_search"
    assert event.campaign == "Black Friday 🎉"
    assert event.coupon == "BF-2026"
    assert event.value_micros == 53_892_000
    assert event.currency == "USD"
    assert event.source_currency == "EUR"
    assert event.source_amount_micros == 49_900_000
    assert event.ad_click_ids == {"gclid": "Cj0KCQiA"}
    # The bot flag marks clicks only (see test_only_clicks_keep_the_bot_flag).
    assert (event.grouped_channel, event.ip, event.bot) == ("paid_search", "203.0.113.0", False)
    assert event.utm_content == "ad 1"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-23T21:00:00Z", datetime(2026, 11, 23, 21, tzinfo=UTC)),
        ("2026-11-23T21:00:00.5+00:00", datetime(2026, 11, 23, 21, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-23T16:00:00-05:00", datetime(2026, 11, 23, 21, tzinfo=UTC)),
        ("2026-11-23 21:00:00Z", datetime(2026, 11, 23, 21, tzinfo=UTC)),
        (1795467600, datetime(2026, 11, 23, 21, tzinfo=UTC)),
        ("1795467600", datetime(2026, 11, 23, 21, tzinfo=UTC)),
        (1795467600.25, datetime(2026, 11, 23, 21, 0, 0, 250000, tzinfo=UTC)),
        ("1795467600.000001", datetime(2026, 11, 23, 21, 0, 0, 1, tzinfo=UTC)),
        (1795467600123, datetime(2026, 11, 23, 21, 0, 0, 123000, tzinfo=UTC)),
        ("1795467600123", datetime(2026, 11, 23, 21, 0, 0, 123000, tzinfo=UTC)),
        ("", NOW),
        (None, NOW),
    ],
)
def test_timestamps(ts: object, expected: datetime) -> None:
    assert parse({"type": "click", "ts": ts}).ts == expected


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("12.34", 12_340_000),
        (" 0 ", 0),
        ("0.000001", 1),
        ("1000000000", 1_000_000_000_000_000),
        ("12.3400000", 12_340_000),
        (12, 12_000_000),
        (0.1, 100_000),
        (19.99, 19_990_000),
        (1e-6, 1),
        ("", None),
    ],
)
def test_money_is_exact(value: object, micros: int | None) -> None:
    event = parse({"type": "conversion", "value": value})
    assert event.value_micros == micros
    assert event.currency == (None if micros is None else "USD")


def test_currency_conversion_rounds_half_even() -> None:
    # 0.5 JPY * 0.0067 = 0.00335 USD = 3350 micros exactly; 1.000001 JPY gives 6700.0067 -> 6700.
    assert parse({"type": "conversion", "value": "0.5", "currency": "JPY"}).value_micros == 3350
    event = parse({"type": "conversion", "value": "1.000001", "currency": "JPY"})
    assert event.value_micros == 6700
    rules = EventRules(fx_rates={"EUR": Decimal("0.5")})
    half = parse_event(
        {"type": "conversion", "value": "0.000001", "currency": "EUR"},
        rules=rules,
        received_at=NOW,
    )
    assert half.value_micros == 0  # 0.5 micros rounds to the even 0
    three_halves = parse_event(
        {"type": "conversion", "value": "0.000003", "currency": "EUR"},
        rules=rules,
        received_at=NOW,
    )
    assert three_halves.value_micros == 2  # 1.5 micros rounds to the even 2


def test_reporting_currency_needs_no_rate() -> None:
    rules = EventRules(reporting_currency="eur")
    event = parse_event(
        {"type": "conversion", "value": "5", "currency": "EUR"}, rules=rules, received_at=NOW
    )
    assert (event.currency, event.value_micros, event.source_currency) == ("EUR", 5_000_000, None)


def test_currency_without_amount_is_checked_then_dropped() -> None:
    assert parse({"type": "click", "currency": "GBP"}).currency is None
    assert rejection({"type": "click", "currency": "ABC"})[0] == "currency"


def test_spend() -> None:
    event = parse({**SPEND, "campaign": "brand", "event_id": "spend-2026-11-23"})
    assert event.type is EventType.SPEND
    assert event.cost_micros == 100_500_000
    assert event.start == datetime(2026, 11, 23, tzinfo=UTC)
    assert event.end == datetime(2026, 11, 24, tzinfo=UTC)
    assert event.ts == NOW


def test_spend_range_may_end_in_the_future() -> None:
    event = parse({**SPEND, "start": "2026-11-23T00:00:00Z", "end": "2026-12-01T00:00:00Z"})
    assert event.end is not None
    assert event.end > NOW


def test_query_string_input() -> None:
    event = parse(
        {"type": "redemption", "coupon": "save10", "value": "20", "ts": "1795467600", "channel": ""}
    )
    assert (event.coupon, event.value_micros, event.channel) == ("SAVE10", 20_000_000, None)


# --- refused input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ([], "event", "expected a JSON object, got array"),
        ({}, "type", "required"),
        ({"type": ""}, "type", "required"),
        ({"type": "view"}, "type", "unknown event type 'view'"),
        ({"type": 1}, "type", "expected a string, got integer"),
        ({"type": "click", "colour": "red"}, "colour", "unknown field"),
        ({"type": "click", "utm_id": "x"}, "utm_id", "unknown field"),
        ({"type": "click", "received_at": "x"}, "received_at", "unknown field"),
        ({"type": "click", "ip": "1.2.3.4"}, "ip", "unknown field"),
        ({"type": "click", "bot": False}, "bot", "unknown field"),
        ({"type": "click", "grouped_channel": "x"}, "grouped_channel", "unknown field"),
        ({"type": "conversion", "value_micros": 1}, "value_micros", "unknown field"),
        ({"type": "conversion", "source_currency": "EUR"}, "source_currency", "unknown field"),
        ({"type": "click", "event_id": "a b"}, "event_id", "only letters"),
        ({"type": "click", "event_id": "x" * 129}, "event_id", "longer than 128"),
        ({"type": "click", "event_id": 7}, "event_id", "expected a string, got integer"),
        ({"type": "click", "ts": "2026-11-23T21:00:00"}, "ts", "timestamp needs a UTC offset"),
        ({"type": "click", "ts": "2026-11-23"}, "ts", "timestamp needs a UTC offset"),
        ({"type": "click", "ts": "yesterday"}, "ts", "expected an ISO-8601 time"),
        ({"type": "click", "ts": True}, "ts", "got boolean"),
        ({"type": "click", "ts": [1]}, "ts", "got array"),
        ({"type": "click", "ts": "2026-11-23T21:58:01Z"}, "ts", "more than 5 minutes in the"),
        ({"type": "click", "ts": "2025-10-18T00:00:00Z"}, "ts", "older than 400 days"),
        ({"type": "click", "ts": -5}, "ts", "before 1970"),
        ({"type": "click", "ts": float("nan")}, "ts", "not a finite number"),
        ({"type": "click", "ts": 10**30}, "ts", "out of range"),
        ({"type": "click", "ts": "0001-01-01T00:00:00+01:00"}, "ts", "out of range"),
        ({"type": "click", "channel": "a.b"}, "channel", "only letters"),
        ({"type": "click", "channel": 5}, "channel", "expected a string"),
        ({"type": "click", "campaign": "a\nb"}, "campaign", "control characters"),
        ({"type": "click", "campaign": "a\x00"}, "campaign", "control characters"),
        ({"type": "click", "campaign": "\ud800"}, "campaign", "control characters"),
        ({"type": "click", "campaign": "c" * 257}, "campaign", "longer than 256"),
        ({"type": "click", "utm_source": "s" * 257}, "utm_source", "longer than 256"),
        ({"type": "click", "utm_term": "\x7f"}, "utm_term", "control characters"),
        ({"type": "click", "click_id": "a b"}, "click_id", "without whitespace"),
        ({"type": "click", "click_id": "a\u200bb"}, "click_id", "printable"),
        ({"type": "conversion", "order_id": "o" * 129}, "order_id", "longer than 128"),
        ({"type": "click", "gclid": "a b"}, "gclid", "without whitespace"),
        ({"type": "click", "gclid": 123}, "gclid", "expected a string"),
        ({"type": "redemption"}, "coupon", "required for redemption"),
        ({"type": "redemption", "coupon": "10%OFF"}, "coupon", "only letters"),
        ({"type": "redemption", "coupon": "C" * 65}, "coupon", "longer than 64"),
        ({"type": "click", "value": "1"}, "value", "not allowed on click"),
        ({"type": "click", "cost": "1"}, "cost", "only allowed on spend"),
        ({"type": "conversion", "cost": "1"}, "cost", "only allowed on spend"),
        ({"type": "conversion", "value": "-1"}, "value", "must not be negative"),
        ({"type": "conversion", "value": -1}, "value", "must not be negative"),
        ({"type": "conversion", "value": -0.5}, "value", "must not be negative"),
        ({"type": "conversion", "value": "NaN"}, "value", "not a decimal number"),
        ({"type": "conversion", "value": "Infinity"}, "value", "not a decimal number"),
        ({"type": "conversion", "value": float("inf")}, "value", "not a finite number"),
        ({"type": "conversion", "value": float("nan")}, "value", "not a finite number"),
        ({"type": "conversion", "value": "1e3"}, "value", "not a decimal number"),
        ({"type": "conversion", "value": "1,5"}, "value", "not a decimal number"),
        ({"type": "conversion", "value": "1_000"}, "value", "not a decimal number"),
        ({"type": "conversion", "value": "0.0000001"}, "value", "more than 6 decimal places"),
        ({"type": "conversion", "value": 1e-7}, "value", "more than 6 decimal places"),
        ({"type": "conversion", "value": True}, "value", "got boolean"),
        ({"type": "conversion", "value": {"amount": 1}}, "value", "got object"),
        ({"type": "conversion", "value": "1000000000.01"}, "value", "more than the maximum"),
        ({"type": "conversion", "value": 10**20}, "value", "more than the maximum"),
        (
            {"type": "conversion", "value": "1", "currency": "XXX"},
            "currency",
            "unknown ISO-4217 currency code 'XXX'",
        ),
        ({"type": "conversion", "value": "1", "currency": 978}, "currency", "expected a string"),
        (
            {"type": "conversion", "value": "1", "currency": "GBP"},
            "currency",
            "no exchange rate configured for GBP; set ADPULSE_FX_RATES",
        ),
        (
            {"type": "conversion", "value": "999999999", "currency": "EUR"},
            "value",
            "more than the maximum of 1000000000 USD",
        ),
        ({**SPEND, "cost": None}, "cost", "required for spend"),
        ({**SPEND, "channel": ""}, "channel", "required for spend"),
        ({**SPEND, "start": None}, "start", "required for spend"),
        ({**SPEND, "end": ""}, "end", "required for spend"),
        ({**SPEND, "value": "1"}, "value", "not allowed on spend"),
        ({**SPEND, "end": SPEND["start"]}, "end", "must be after start"),
        ({**SPEND, "end": "2026-12-29T00:00:01Z"}, "end", "longer than 35 days"),
        ({**SPEND, "start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z"}, "start", ""),
        ({**SPEND, "start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z"}, "start", ""),
        ({**SPEND, "start": "2026-11-23T00:00:00"}, "start", "timestamp needs a UTC offset"),
        ({"type": "click", "start": "2026-11-23T00:00:00Z"}, "start", "only allowed on spend"),
        ({"type": "conversion", "end": "2026-11-23T00:00:00Z"}, "end", "only allowed on spend"),
    ],
)
def test_rejected(raw: object, field: str, reason: str) -> None:
    assert rejection(raw)[0] == field
    assert reason in rejection(raw)[1]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"ts": False}, "type"),
        ({"type": "view", "campaign": 5}, "type"),
        ({"type": "click", "ts": "x", "channel": 5, "colour": "red"}, "colour"),
        ({"type": "click", "utm_term": 5, "gclid": 5}, "gclid"),
        ({"type": "click", "event_id": "a b", "ts": "x", "campaign": 5}, "event_id"),
        ({"type": "conversion", "order_id": 5, "currency": "XXX", "value": "x"}, "value"),
    ],
)
def test_reported_field_does_not_depend_on_the_order(raw: dict[str, object], field: str) -> None:
    assert rejection(raw)[0] == field
    assert rejection(dict(reversed(raw.items())))[0] == field


def test_unknown_field_name_is_shortened() -> None:
    field, _ = rejection({"type": "click", "k" * 1000: 1})
    assert len(field) < 100


def test_encoded_size_limit() -> None:
    rules = EventRules(max_wire_bytes=2048)
    big = {
        "type": "click",
        **{f"utm_{name}": "\U0001f389" * 200 for name in ("source", "medium", "term")},
    }
    with pytest.raises(EventError, match="bytes once encoded; the limit is 2048") as caught:
        parse_event(big, rules=rules, received_at=NOW)
    assert caught.value.field == "event"
    # The largest event the default limits allow still fits the default wire limit.
    worst = {
        "type": "conversion",
        "event_id": "i" * 128,
        "click_id": "c" * 128,
        "order_id": "o" * 128,
        "coupon": "C" * 64,
        "channel": "c" * 64,
        "campaign": "\U0001f389" * 256,
        "value": "999999999.999999",
        **{f"utm_{name}": "\U0001f389" * 256 for name in ("source", "medium", "campaign", "term")},
        "utm_content": "\U0001f389" * 256,
        **{key: "k" * 256 for key in AD_CLICK_ID_KEYS},
    }
    with pytest.raises(EventError, match="bytes once encoded"):
        parse(worst)
    del worst["utm_campaign"], worst["utm_term"]
    assert len(parse(worst).to_wire()) <= RULES.max_wire_bytes


def test_received_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_event({"type": "click"}, rules=RULES, received_at=datetime(2026, 1, 1))


def test_received_at_is_converted_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    event = parse_event({"type": "click"}, rules=RULES, received_at=NOW.astimezone(cet))
    assert event.received_at == NOW
    assert event.received_at.tzinfo is UTC


def test_parsed_event_is_a_frozen_event() -> None:
    # parse_event and from_wire fill a builder and turn it into an Event; it must be a real one.
    event = parse({"type": "click", "channel": "email", "utm_source": "newsletter"})
    assert type(event) is Event
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.channel = "x"  # type: ignore[misc]
    same = dataclasses.replace(event)
    assert same == event
    assert hash(same) == hash(event)
    assert repr(same) == repr(event)
    for field in dataclasses.fields(Event):
        getattr(event, field.name)  # every slot is set
    assert type(Event.from_wire(event.to_wire())) is Event


def test_generated_event_ids_are_random_hex() -> None:
    # Ids are drawn from a pool refilled every 256: cross a few refills.
    ids = {parse({"type": "click"}).event_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(event_id) == 32 and int(event_id, 16) >= 0 for event_id in ids)
    assert all(event_id == event_id.lower() for event_id in ids)


def test_new_event_ids_are_those_parse_event_generates() -> None:
    ids = [new_event_id() for _ in range(300)] + [parse({"type": "click"}).event_id]
    assert len(set(ids)) == len(ids)
    assert all(len(event_id) == 32 and int(event_id, 16) >= 0 for event_id in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_reuse_its_parents_event_ids() -> None:
    parse({"type": "click"})  # the pool holds ids now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave without running pytest's exit
        os.close(read_end)
        ids = " ".join(parse({"type": "click"}).event_id for _ in range(10))
        os.write(write_end, ids.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent_ids = {parse({"type": "click"}).event_id for _ in range(10)}
    assert len(child_ids) == 10
    assert not child_ids & parent_ids


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        # Beyond ASCII, where the fast checks hand over to the full ones.
        ({"type": "click", "campaign": "a\x85b"}, "campaign", "control characters"),
        ({"type": "click", "campaign": "a\u2028b"}, "campaign", "control characters"),
        ({"type": "click", "click_id": "a\u00a0b"}, "click_id", "without whitespace"),
        ({"type": "click", "click_id": "a\u3000b"}, "click_id", "without whitespace"),
        ({"type": "click", "click_id": "a\tb"}, "click_id", "without whitespace"),
        ({"type": "click", "fbclid": "a\x1fb"}, "fbclid", "without whitespace"),
        ({"type": "click", "channel": "Ünter"}, "channel", "only letters"),
        ({"type": "conversion", "value": "1.0000001"}, "value", "more than 6 decimal places"),
        ({"type": "conversion", "value": "12."}, "value", "not a decimal number"),
        ({"type": "conversion", "value": ".5"}, "value", "not a decimal number"),
        ({"type": "conversion", "value": "²"}, "value", "not a decimal number"),
        ({"type": "conversion", "value": 1000000000.5}, "value", "more than the maximum"),
        ({"type": "click", "ts": 100_000_000_000.5}, "ts", "older than"),
    ],
)
def test_rejected_beyond_the_fast_paths(raw: object, field: str, reason: str) -> None:
    assert rejection(raw)[0] == field
    assert reason in rejection(raw)[1]


def test_accepted_beyond_the_fast_paths() -> None:
    event = parse(
        {"type": "CLICK", "campaign": "Über 🎉", "click_id": "klick-ä", "channel": "\u212a - X"}
    )
    assert (event.campaign, event.click_id, event.channel) == ("Über 🎉", "klick-ä", "k_x")
    conversion = parse({"type": "conversion", "value": "1.5000000", "ts": "1795467600.1234567"})
    assert conversion.value_micros == 1_500_000
    assert conversion.ts == datetime(2026, 11, 23, 21, 0, 0, 123457, tzinfo=UTC)


amounts = st.one_of(
    st.decimals(min_value=-1, max_value=10**10, places=7).map(str),
    st.from_regex(r"[0-9٣²_.e-]{0,14}", fullmatch=True),
    st.floats(min_value=-1, max_value=1e10) | st.just(float("nan")),
    st.integers(min_value=-1, max_value=10**10),
    st.text(max_size=12),
)


@settings(max_examples=500)
@given(amounts)
def test_parse_micros_agrees_with_parse_amount(value: str | int | float) -> None:
    maximum = Decimal(1_000_000_000)

    def reference() -> int | None:
        amount = parse_amount(value, maximum)
        return None if amount is None else to_micros(amount)

    assert _outcome(lambda: parse_micros(value, maximum)) == _outcome(reference)


def _outcome(parse: Callable[[], int | None]) -> tuple[str, object]:
    try:
        return ("ok", parse())
    except ValueError as error:
        return ("error", str(error))


# --- the error, the rules -------------------------------------------------------------------


def test_event_error() -> None:
    error = EventError("currency", "unknown ISO-4217 currency code 'XXX'")
    assert str(error) == "currency: unknown ISO-4217 currency code 'XXX'"
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.reason) == (error.field, error.reason)


def test_event_rules_normalise() -> None:
    rules = EventRules(reporting_currency=" eur ", fx_rates={"usd": Decimal("0.92")})
    assert rules.reporting_currency == "EUR"
    assert rules.fx_rates == {"USD": Decimal("0.92")}
    assert isinstance(rules.fx_rates, MappingProxyType)
    assert hash(rules) == hash(EventRules(reporting_currency="EUR"))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"reporting_currency": "EURO"}, "not an ISO 4217 code"),
        ({"fx_rates": {"ABC": Decimal(1)}}, "not an ISO 4217 code"),
        ({"fx_rates": {"EUR": Decimal(0)}}, "positive"),
        ({"fx_rates": {"EUR": Decimal(-1)}}, "positive"),
        ({"fx_rates": {"EUR": Decimal("NaN")}}, "positive"),
        ({"fx_rates": {"EUR": 1.08}}, "positive Decimal"),
        ({"fx_rates": {"USD": Decimal(2)}}, "must be 1"),
        ({"max_age": timedelta(0)}, "max_age must be positive"),
        ({"max_wire_bytes": 0}, "max_wire_bytes must be positive"),
        ({"max_money": Decimal(0)}, "max_money must be positive"),
    ],
)
def test_event_rules_reject(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        EventRules(**kwargs)  # type: ignore[arg-type]


def test_currency_table() -> None:
    assert {"USD", "EUR", "JPY", "GBP", "CHF", "XOF", "XCD"} <= CURRENCY_CODES
    assert not {"XXX", "XTS", "XAU", "HRK", "usd", "EURO"} & CURRENCY_CODES


def test_parse_fx_rates() -> None:
    assert parse_fx_rates(" eur=1.08, GBP = 1.27 ,") == {
        "EUR": Decimal("1.08"),
        "GBP": Decimal("1.27"),
    }
    assert parse_fx_rates("") == {}
    for bad in ("EUR", "EURO=1", "EUR=abc", "EUR=0", "EUR=-1", "EUR=inf"):
        with pytest.raises(ValueError, match="EUR"):
            parse_fx_rates(bad)


# --- wire format ----------------------------------------------------------------------------


def test_wire_format() -> None:
    event = parse(
        {"type": "conversion", "value": "1.5", "ts": "2026-11-23T21:00:00Z", "gclid": "g"},
        ip="203.0.113.0",
    )
    wire = orjson.loads(event.to_wire())
    assert wire == {
        "event_id": event.event_id,
        "type": "conversion",
        "ts": "2026-11-23T21:00:00.000000Z",
        "received_at": "2026-11-23T21:53:00.123456Z",
        "value_micros": 1_500_000,
        "currency": "USD",
        "ip": "203.0.113.0",
        "ad_click_ids": {"gclid": "g"},
    }
    assert Event.from_wire(event.to_wire()) == event


def test_wire_converts_other_time_zones() -> None:
    cet = timezone(timedelta(hours=1))
    event = Event(event_id="e", type=EventType.CLICK, ts=NOW.astimezone(cet), received_at=NOW)
    assert orjson.loads(event.to_wire())["ts"] == "2026-11-23T21:53:00.123456Z"
    naive = Event(event_id="e", type=EventType.CLICK, ts=NOW.replace(tzinfo=None), received_at=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.to_wire()


GOOD_WIRE = {
    "event_id": "e1",
    "type": "click",
    "ts": "2026-11-23T21:53:00.123456Z",
    "received_at": "2026-11-23T21:53:00.123456Z",
}


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (b"", "event", "not a JSON document"),
        (b"{", "event", "not a JSON document"),
        (b"[]", "event", "expected a JSON object, got array"),
        (b"null", "event", "got null"),
        (orjson.dumps({**GOOD_WIRE, "extra": 1}), "extra", "unknown field"),
        (orjson.dumps({**GOOD_WIRE, "value": "1"}), "value", "unknown field"),
        (orjson.dumps({k: v for k, v in GOOD_WIRE.items() if k != "event_id"}), "event_id", ""),
        (orjson.dumps({k: v for k, v in GOOD_WIRE.items() if k != "ts"}), "ts", "required"),
        (orjson.dumps({k: v for k, v in GOOD_WIRE.items() if k != "type"}), "type", ""),
        (orjson.dumps({**GOOD_WIRE, "event_id": 1}), "event_id", "expected string"),
        (orjson.dumps({**GOOD_WIRE, "type": "view"}), "type", "expected one of"),
        (orjson.dumps({**GOOD_WIRE, "type": ["click"]}), "type", "expected one of"),
        (orjson.dumps({**GOOD_WIRE, "ts": "2026-11-23T21:53:00Z"}), "ts", "UTC time like"),
        (orjson.dumps({**GOOD_WIRE, "ts": "2026-11-23T21:53:00.123456+0000"}), "ts", "UTC"),
        (orjson.dumps({**GOOD_WIRE, "ts": "2026-13-23T21:53:00.123456Z"}), "ts", "UTC"),
        (orjson.dumps({**GOOD_WIRE, "ts": 1795467600}), "ts", "UTC time like"),
        (orjson.dumps({**GOOD_WIRE, "start": "x"}), "start", "UTC time like"),
        (orjson.dumps({**GOOD_WIRE, "value_micros": "5"}), "value_micros", "expected integer"),
        (orjson.dumps({**GOOD_WIRE, "value_micros": 1.5}), "value_micros", "got number"),
        (orjson.dumps({**GOOD_WIRE, "cost_micros": True}), "cost_micros", "got boolean"),
        (orjson.dumps({**GOOD_WIRE, "channel": 5}), "channel", "expected string"),
        (orjson.dumps({**GOOD_WIRE, "bot": 1}), "bot", "expected boolean"),
        (orjson.dumps({**GOOD_WIRE, "ad_click_ids": []}), "ad_click_ids", "expected object"),
        (orjson.dumps({**GOOD_WIRE, "ad_click_ids": {"x": "1"}}), "ad_click_ids", "unknown"),
        (orjson.dumps({**GOOD_WIRE, "ad_click_ids": {"gclid": 1}}), "ad_click_ids", "string"),
    ],
)
def test_from_wire_rejects(data: bytes, field: str, reason: str) -> None:
    with pytest.raises(EventError) as caught:
        Event.from_wire(data)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_from_wire_minimal() -> None:
    event = Event.from_wire(orjson.dumps(GOOD_WIRE))
    assert event == Event(event_id="e1", type=EventType.CLICK, ts=NOW, received_at=NOW)
    assert event.ts.tzinfo is UTC
    assert hash(event) == hash(Event(event_id="e1", type=EventType.CLICK, ts=NOW, received_at=NOW))


# --- partition key --------------------------------------------------------------------------


def test_partition_key() -> None:
    click = parse({"type": "click", "click_id": "clk-1", "event_id": "e1"})
    conversion = parse({"type": "conversion", "click_id": "clk-1", "order_id": "o1"})
    assert partition_key(click) == partition_key(conversion) == b"clk-1"
    assert partition_key(parse({"type": "conversion", "order_id": "ö1"})) == "ö1".encode()
    assert partition_key(parse({"type": "click", "order_id": "o1", "event_id": "e2"})) == b"e2"
    assert partition_key(parse({**SPEND, "event_id": "s1"})) == b"s1"


# --- properties -----------------------------------------------------------------------------

printable = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40
).filter(lambda text: text.strip() == text and text != "")
token = st.text(
    st.characters(whitelist_categories=("L", "N", "P", "S")), min_size=1, max_size=40
).filter(lambda text: text.isprintable())
slug = st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True)
moment = st.datetimes(
    min_value=datetime(2025, 11, 1),
    max_value=datetime(2026, 11, 23, 21, 53),
    timezones=st.just(UTC),
)
micros = st.integers(min_value=0, max_value=10**15)
maybe = st.none


@st.composite
def events(draw: st.DrawFn) -> Event:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    is_spend = event_type is EventType.SPEND
    start = draw(moment) if is_spend else None
    return Event(
        event_id=draw(st.from_regex(r"[A-Za-z0-9._:\-]{1,40}", fullmatch=True)),
        type=event_type,
        ts=draw(moment),
        received_at=draw(moment),
        channel=draw(maybe() | slug),
        campaign=draw(maybe() | printable),
        grouped_channel=draw(maybe() | slug),
        click_id=draw(maybe() | token),
        coupon=draw(maybe() | st.from_regex(r"[A-Z0-9_\-]{1,10}", fullmatch=True)),
        order_id=draw(maybe() | token),
        value_micros=None if is_spend else draw(maybe() | micros),
        cost_micros=draw(micros) if is_spend else None,
        currency=draw(maybe() | st.just("USD")),
        source_currency=draw(maybe() | st.sampled_from(["EUR", "JPY"])),
        source_amount_micros=draw(maybe() | micros),
        start=start,
        end=None if start is None else start + draw(st.timedeltas(timedelta(0), timedelta(35))),
        utm_source=draw(maybe() | printable),
        utm_medium=draw(maybe() | printable),
        utm_campaign=draw(maybe() | printable),
        utm_term=draw(maybe() | printable),
        utm_content=draw(maybe() | printable),
        ad_click_ids=draw(st.dictionaries(st.sampled_from(sorted(AD_CLICK_ID_KEYS)), token)),
        ip=draw(maybe() | st.ip_addresses().map(str)),
        bot=draw(st.booleans()),
    )


@settings(max_examples=200)
@given(events())
def test_wire_round_trip(event: Event) -> None:
    data = event.to_wire()
    assert Event.from_wire(data) == event
    assert Event.from_wire(data).to_wire() == data


# The types a client may send (a call comes through the tracker's webhook only).
CLIENT_TYPES = tuple(t for t in EVENT_TYPES if t not in WEBHOOK_TYPES)


def _decimal_text(amount_micros: int) -> str:
    return str(Decimal(amount_micros).scaleb(-6))


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, object]:
    event_type = draw(st.sampled_from(CLIENT_TYPES))
    raw: dict[str, object] = {"type": event_type.value, "ts": draw(moment).isoformat()}
    for key, strategy in (
        ("channel", slug),
        ("campaign", printable),
        ("click_id", token),
        ("order_id", token),
        ("utm_source", printable),
        ("utm_medium", printable),
        ("gclid", token),
    ):
        if draw(st.booleans()):
            raw[key] = draw(strategy)
    if event_type is EventType.REDEMPTION or draw(st.booleans()):
        raw["coupon"] = draw(st.from_regex(r"[a-zA-Z0-9_\-]{1,10}", fullmatch=True))
    if event_type in (EventType.CONVERSION, EventType.REDEMPTION) and draw(st.booleans()):
        raw["value"] = _decimal_text(draw(st.integers(0, 10**12)))
        raw["currency"] = draw(st.sampled_from(["USD", "EUR", "jpy"]))
    if event_type is EventType.SPEND:
        start = draw(moment)
        raw.update(
            channel=draw(slug),
            cost=_decimal_text(draw(st.integers(0, 10**12))),
            start=start.isoformat(),
            end=(start + draw(st.timedeltas(timedelta(seconds=1), timedelta(35)))).isoformat(),
        )
    return raw


@settings(max_examples=200)
@given(payloads())
def test_valid_payloads_parse_and_round_trip(raw: dict[str, object]) -> None:
    event = parse(raw)
    assert event.type == raw["type"]
    assert Event.from_wire(event.to_wire()) == event
    if "value" in raw and raw["currency"] == "USD":
        assert event.value_micros == int(Decimal(str(raw["value"])) * 10**6)
    if "cost" in raw:
        assert event.cost_micros == int(Decimal(str(raw["cost"])) * 10**6)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=5,
)
wire_text = st.text(st.characters(codec="utf-8"), max_size=30)
wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | wire_text,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(sorted(_WIRE_KEYS)) | wire_text, children)
    ),
    max_leaves=8,
)
field_names = st.sampled_from(
    [
        "type",
        "ts",
        "value",
        "cost",
        "currency",
        "channel",
        "coupon",
        "start",
        "end",
        "click_id",
        "campaign",
        "gclid",
        "event_id",
        "utm_term",
    ]
)


@settings(max_examples=200)
@given(st.dictionaries(field_names, json_values | st.text(max_size=20)))
def test_anything_is_an_event_or_an_event_error(raw: dict[str, object]) -> None:
    try:
        event = parse(raw)
    except EventError:
        return
    assert Event.from_wire(event.to_wire()) == event


@settings(max_examples=200)
@given(st.binary(max_size=200) | wire_values.map(orjson.dumps))
def test_from_wire_refuses_garbage_with_event_error(data: bytes) -> None:
    with contextlib.suppress(EventError):
        Event.from_wire(data)


@pytest.mark.parametrize(
    ("raw", "flagged"),
    [
        ({"type": "click"}, True),
        ({"type": "conversion", "order_id": "A-1", "value": "10"}, False),
        ({"type": "redemption", "coupon": "SAVE10"}, False),
    ],
)
def test_only_clicks_keep_the_bot_flag(raw: dict[str, object], flagged: bool) -> None:
    # A shop's postback comes from an HTTP library, which the edge's user-agent check calls a
    # bot; its conversion must still count.
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert parse_event(raw, rules=EventRules(), received_at=now, bot=True).bot is flagged


def test_a_client_cannot_send_a_call() -> None:
    with pytest.raises(EventError, match="type: call events come through the tracker's webhook"):
        parse_event({"type": "call", "channel": "email"}, rules=EventRules(), received_at=NOW)
