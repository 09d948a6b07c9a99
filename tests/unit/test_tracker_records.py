"""The query-string fast path gives exactly what `parse_event` and `Event.to_wire` give.

`QueryRecords.record` may decline (None) anything; whatever it accepts, the full path must
accept too, with the same bytes, key and type. `QueryRecords.from_query`, which reads a query
string straight into values, must give what the parameters' dict gives. Through the app, a
pixel or a click answers and records the same with the fast paths as without them, rejections
included.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adpulse.core.event
from adpulse.core.channels import AD_CLICK_ID_KEYS, DEFAULT_CHANNEL_RULES
from adpulse.core.event import EventError, EventRules, EventType, parse_event, partition_key
from adpulse.core.fields import UTM_FIELDS
from tracker.app import PIXEL_IGNORED, TrackerApp
from tracker.endpoints import parse_query
from tracker.http import Request, Response
from tracker.publisher import EventPublisher, PublisherSettings, PublisherState, TopicSpec
from tracker.records import MAX_LAYOUTS, QUERY_FIELDS, QueryRecords
from tracker.redirect import RedirectPolicy
from tracker.settings import TrackerSettings
from tracker.spool import SpoolRecord
from tracker.wal import WriteAheadLog

NOW = datetime(2026, 11, 23, 21, 53, 0, 123456, tzinfo=UTC)
EVENT_ID = "0123456789abcdef0123456789abcdef"
RULES = EventRules(fx_rates={"EUR": Decimal("1.08")})
# Limits small enough that generated values cross them.
TIGHT = EventRules(
    max_id_length=8,
    max_campaign_length=12,
    max_utm_length=10,
    max_ad_click_id_length=9,
    max_wire_bytes=420,
    max_money=Decimal(1000),
)
# Only these channels are known: any other becomes "unlisted" on the full path.
KNOWN = EventRules(known_channels=frozenset({"email", "paid_search", "unlisted"}))
PIXEL = {
    "type": "click",
    "channel": "email",
    "campaign": "black_friday",
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "bf26",
}


@contextmanager
def generated_ids(*ids: str) -> Iterator[None]:
    """The next generated event ids are `ids`, for both paths."""
    saved = adpulse.core.event._random_ids
    adpulse.core.event._random_ids = iter(ids)
    try:
        yield
    finally:
        adpulse.core.event._random_ids = saved


def full_path(
    fields: dict[str, str], rules: EventRules, **enrichment: Any
) -> tuple[EventType, bytes, bytes] | EventError:
    with generated_ids(EVENT_ID):
        try:
            event = parse_event(fields, rules=rules, **enrichment)
        except EventError as error:
            return error
    return event.type, partition_key(event), event.to_wire()


def written_alike(
    write: Callable[[], tuple[EventType, bytes, bytes] | None],
) -> tuple[EventType, bytes, bytes] | None:
    """`write()`'s record, the same whether its layout is new or used a few times."""
    written = []
    for _ in range(3):
        with generated_ids(EVENT_ID):
            written.append(write())
    assert all(record == written[0] for record in written)
    return written[0]


def fast_path(
    fields: dict[str, str], rules: EventRules, **enrichment: Any
) -> tuple[EventType, bytes, bytes] | None:
    records = QueryRecords(rules)
    return written_alike(lambda: records.record(fields, **enrichment))


def test_a_usual_pixel_takes_the_fast_path_and_writes_the_same_bytes() -> None:
    enrichment = {"received_at": NOW, "grouped_channel": "email", "ip": "203.0.113.0"}
    fast = fast_path(PIXEL, RULES, **enrichment)
    assert fast is not None
    assert fast == full_path(PIXEL, RULES, **enrichment)
    assert fast[2].startswith(b'{"event_id":"0123456789abcdef0123456789abcdef","type":"click"')


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "click"},
        {**PIXEL, "event_id": "ev-1:a.b_c", "click_id": "clk-42", "utm_term": "shoes"},
        {**PIXEL, "channel": "Paid_Search", "utm_content": "ad-1"},
        {"gclid": "Cj0", "type": "conversion", "order_id": "A-1", "value": "49.90", "fbclid": "x"},
        {"type": "conversion", "order_id": "A-1", "value": "12", "currency": "usd"},
        {"type": "conversion", "click_id": "c-1", "order_id": "A-1", "value": "0.000001"},
        {"type": "redemption", "coupon": "bf-2026", "value": "5"},
        {"type": "click", "currency": "eur"},
    ],
)
@pytest.mark.parametrize("bot", [False, True])
def test_fast_path_cases(fields: dict[str, str], bot: bool) -> None:
    enrichment = {"received_at": NOW, "grouped_channel": None, "ip": "2001:db8:85a3::", "bot": bot}
    fast = fast_path(fields, RULES, **enrichment)
    assert fast is not None
    assert fast == full_path(fields, RULES, **enrichment)


@pytest.mark.parametrize(
    "fields",
    [
        {"channel": "email"},  # no type: refused by the full path
        {"type": "Click"},
        {"type": "spend", "channel": "x"},
        {"type": "click", "ts": "2026-11-23T21:00:00Z"},
        {"type": "click", "campaign": "Black Friday"},  # a space, once unquoted
        {"type": "click", "campaign": "über"},
        {"type": "click", "campaign": 'say "hi"'},
        {"type": "click", "campaign": "a\\b"},
        {"type": "click", "channel": "a-b"},
        {"type": "click", "channel": ""},
        {"type": "click", "event_id": "a/b"},
        {"type": "click", "value": "1"},
        {"type": "conversion", "value": "1", "currency": "EUR"},
        {"type": "conversion", "value": "-1"},
        {"type": "conversion", "currency": "XYZ"},
        {"type": "redemption"},
        {"type": "redemption", "coupon": "a.b"},
        {"type": "click", "cb": "1"},
    ],
)
def test_fast_path_declines(fields: dict[str, str]) -> None:
    assert fast_path(fields, RULES, received_at=NOW) is None


def test_declines_times_it_does_not_write_itself() -> None:
    other_zone = NOW.astimezone(timezone(timedelta(hours=1)))
    assert fast_path(PIXEL, RULES, received_at=other_zone) is None
    assert fast_path(PIXEL, RULES, received_at=NOW.replace(microsecond=0)) is None


def test_limits_are_those_of_the_rules() -> None:
    long_campaign = {"type": "click", "campaign": "x" * 13}
    assert fast_path(long_campaign, TIGHT, received_at=NOW) is None
    assert isinstance(full_path(long_campaign, TIGHT, received_at=NOW), EventError)
    # Together over the smallest limit, each within its own.
    within = {"type": "click", "campaign": "c" * 12, "utm_source": "s" * 10, "gclid": "g" * 9}
    fast = fast_path(within, TIGHT, received_at=NOW, ip="203.0.113.0")
    assert fast is not None
    assert fast == full_path(within, TIGHT, received_at=NOW, ip="203.0.113.0")


def test_layouts_are_remembered_within_bounds() -> None:
    records = QueryRecords(RULES)
    for index in range(MAX_LAYOUTS + 10):
        names = ["type", *(UTM_FIELDS[bit] for bit in range(5) if index >> bit & 1)]
        fields = {name: "x" for name in names} | {"type": "click", f"unknown{index}": "x"}
        assert records.record(fields, received_at=NOW) is None
    assert len(records._layouts) <= MAX_LAYOUTS


# --- arbitrary input ------------------------------------------------------------------------

plain = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=14,
)
odd = st.text(max_size=6) | st.sampled_from(["", " ", " a", "a b", '"', "\\", "\x00", "é", "Ä"])
# Mostly what a pixel sends, so that the fast path accepts often; now and then anything.
by_name: dict[str, st.SearchStrategy[str]] = {
    "type": st.sampled_from(["click", "conversion", "redemption", "spend", "CLICK", "x"]),
    "event_id": st.from_regex(r"[A-Za-z0-9._:\-]{1,12}", fullmatch=True),
    "channel": st.from_regex(r"[a-zA-Z0-9_]{1,10}", fullmatch=True)
    | st.sampled_from(["email", "Email", "paid_search", "unlisted", "web"]),
    "coupon": st.from_regex(r"[a-zA-Z0-9_\-]{1,10}", fullmatch=True),
    "value": st.from_regex(r"[0-9]{1,5}(\.[0-9]{1,7})?", fullmatch=True)
    | st.sampled_from(["1e3", "-1", ".5", "9999999999", "\u0661"]),
    "currency": st.sampled_from(["USD", "usd", "EUR", "JPY", "XYZ", "U SD"]),
    # Values the default channel rules group, so that grouping is exercised too.
    "utm_source": st.sampled_from(["google", "facebook", "newsletter", "bing", "Google"]) | plain,
    "utm_medium": st.sampled_from(["cpc", "email", "paid_social", "affiliate", "CPC"]) | plain,
}
known_names = st.sampled_from(sorted(QUERY_FIELDS))
names = known_names | st.sampled_from(
    ["ts", "cost", "start", "end", "cb", "received_at", "bot", "x" * 70, "utm_id"]
)


@st.composite
def query_fields(draw: st.DrawFn) -> dict[str, str]:
    """Four times in five what a pixel sends, so that the fast path often accepts."""
    usual = draw(st.integers(0, 4)) > 0
    fields: dict[str, str] = {}
    if usual or draw(st.booleans()):
        fields["type"] = draw(st.sampled_from(["click", "conversion", "redemption"]))
    for name in draw(st.lists(known_names if usual else names, max_size=8)):
        value = by_name.get(name, plain)
        fields[name] = draw(value if usual else value | plain | odd)
    return fields


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
# Whole seconds are declined (see above), so they are left out here.
times = moments.map(lambda moment: moment.replace(microsecond=moment.microsecond or 1))
edge_text = st.one_of(
    *[st.sampled_from([None, "email", "paid_search"])] * 4,
    st.sampled_from(["", 'a"b', "é", "a\\b"]),
)
addresses = st.one_of(*[st.ip_addresses().map(str)] * 4, st.sampled_from([None, "", '1"2', "\x01"]))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    query_fields(),
    times,
    edge_text,
    addresses,
    st.booleans(),
    st.sampled_from([RULES, TIGHT, KNOWN]),
)
def test_whatever_the_fast_path_accepts_the_full_path_writes_the_same(
    fields: dict[str, str],
    received_at: datetime,
    grouped_channel: str | None,
    ip: str | None,
    bot: bool,
    rules: EventRules,
) -> None:
    enrichment = {"received_at": received_at, "grouped_channel": grouped_channel, "ip": ip}
    fast = fast_path(fields, rules, bot=bot, **enrichment)
    if fast is not None:
        assert fast == full_path(fields, rules, bot=bot, **enrichment)


# --- through the app ------------------------------------------------------------------------


class FullPathOnly(QueryRecords):
    def record(self, *args: Any, **kwargs: Any) -> None:
        return None

    def from_query(self, *args: Any, **kwargs: Any) -> None:
        return None


class Clock:
    """Stands in for `datetime` in the tracker app's modules: `now` is always NOW."""

    @staticmethod
    def now(tz: Any = None) -> datetime:
        return NOW


def app(spool: Path, *, fast: bool) -> TrackerApp:
    settings = TrackerSettings(
        redirect_policy=RedirectPolicy(hosts=frozenset({"shop.example.com"})),
        event_rules=RULES,
    )
    publisher = EventPublisher(
        PublisherSettings("127.0.0.1:9", (TopicSpec("adpulse.events", 8),)),
        WriteAheadLog.open(spool, max_bytes=1 << 24),
    )
    publisher.state = PublisherState.UP
    # No event loop here: `answer` takes the turn's records itself.
    publisher.schedule_commit = lambda: None
    tracker = TrackerApp(settings, publisher)
    if not fast:
        tracker._records = FullPathOnly(RULES)
    return tracker


def answer(
    tracker: TrackerApp, path: str, query: bytes, user_agent: bytes | None
) -> tuple[Response, list[SpoolRecord]]:
    headers = {} if user_agent is None else {b"user-agent": user_agent}
    request = Request("GET", path, query, headers, b"", "203.0.113.77")
    with (
        generated_ids(EVENT_ID),
        mock.patch("tracker.app.datetime", Clock),
        mock.patch("tracker.click_route.datetime", Clock),
        mock.patch("tracker.endpoints.datetime", Clock),
        mock.patch("uuid.uuid4", return_value=uuid.UUID(int=42)),
    ):
        response = tracker(request)
    # The turn's records, taken before its end would write them to the log.
    records = list(tracker.publisher._turn)
    tracker.publisher._turn.clear()
    return response, records


def test_the_pixels_of_one_turn_share_its_time_and_the_next_turn_reads_the_clock() -> None:
    later = NOW + timedelta(seconds=1, microseconds=1)
    clock = mock.Mock(side_effect=[NOW, later])
    pixel = Request("GET", "/p.gif", b"type=click&channel=email", {}, b"", "203.0.113.77")
    with tempfile.TemporaryDirectory() as directory:
        tracker = app(Path(directory), fast=True)
        with mock.patch("tracker.app.datetime", mock.Mock(now=clock)):
            tracker(pixel)
            tracker(pixel)
            first = list(tracker.publisher._turn)
            tracker.publisher.commit()  # the end of the turn
            tracker(pixel)
            second = list(tracker.publisher._turn)
        tracker.publisher.spool.close()
    assert clock.call_count == 2
    stamps = [orjson.loads(record[2])["received_at"] for record in [*first, *second]]
    assert stamps == [
        "2026-11-23T21:53:00.123456Z",
        "2026-11-23T21:53:00.123456Z",
        "2026-11-23T21:53:01.123457Z",
    ]


@st.composite
def query_pairs(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A pixel's fields, now and then with cache busters and other names, repeats included."""
    pairs = list(draw(query_fields()).items())
    extra = st.tuples(names | st.sampled_from(["_", "cb", "to", "sig", "type"]), plain | odd)
    for pair in draw(st.lists(extra, max_size=2)):
        pairs.insert(draw(st.integers(0, len(pairs))), pair)
    return pairs


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["/p.gif", "/c"]),
    query_pairs(),
    st.booleans(),
    st.none() | st.sampled_from([b"Mozilla/5.0 (X11) Firefox/133.0", b"curl/8.5"]),
)
def test_the_app_answers_and_records_the_same_with_the_fast_path(
    path: str, pairs: list[tuple[str, str]], escape: bool, user_agent: bytes | None
) -> None:
    if path == "/c":
        pairs.insert(0, ("to", "https://shop.example.com/landing?utm_source=mail"))
    encode = quote if escape else str
    query = "&".join(f"{encode(key)}={encode(value)}" for key, value in pairs).encode()
    with tempfile.TemporaryDirectory() as directory:
        fast = answer(app(Path(directory, "a"), fast=True), path, query, user_agent)
        full = answer(app(Path(directory, "b"), fast=False), path, query, user_agent)
    assert fast == full


# --- a query string read straight into values -----------------------------------------------


def straight(
    query: bytes, rules: EventRules, **enrichment: Any
) -> tuple[EventType, bytes, bytes] | None:
    records = QueryRecords(rules, ignored=PIXEL_IGNORED, group=DEFAULT_CHANNEL_RULES.group)
    return written_alike(lambda: records.from_query(query, **enrichment))


def by_dict(query: bytes, rules: EventRules, **enrichment: Any) -> object:
    """What the pixel's parameters, as a dict, give through `parse_event`."""
    fields = parse_query(query)
    for name in PIXEL_IGNORED:
        fields.pop(name, None)
    grouped = DEFAULT_CHANNEL_RULES.group(
        fields.get("utm_source"),
        fields.get("utm_medium"),
        tuple(key for key in AD_CLICK_ID_KEYS if fields.get(key)),
    )
    return full_path(fields, rules, grouped_channel=grouped, **enrichment)


def test_a_usual_pixel_with_a_cache_buster_is_read_straight() -> None:
    query = b"type=click&channel=email&campaign=bf&utm_source=google&utm_medium=cpc&_=17"
    found = straight(query, RULES, received_at=NOW, ip="203.0.113.0", bot=False)
    assert found is not None
    assert found == by_dict(query, RULES, received_at=NOW, ip="203.0.113.0", bot=False)
    assert b'"grouped_channel":"paid_search"' in found[2]
    assert b'"_"' not in found[2]
    # Facebook adds fbclid to every outbound link, paid or not.
    query = b"type=click&utm_source=x&fbclid=F1&cb=2"
    with_click_id = straight(query, RULES, received_at=NOW)
    assert with_click_id is not None
    assert with_click_id == by_dict(query, RULES, received_at=NOW)
    assert b'"grouped_channel":"organic_social"' in with_click_id[2]
    assert b'"ad_click_ids":{"fbclid":"F1"}' in with_click_id[2]


@pytest.mark.parametrize(
    "query",
    [
        b"type=click&channel=email&channel=web",  # a repeated name: the first counts
        b"type=click&gclid=&channel=email",  # a blank value is absent
        b"type=click&utm_source=a%20b",  # escaped
        b"type=click&utm_source=a+b",
        b"type=click&campaign=caf\xc3\xa9",  # not ASCII
        b"type=click&unknown=1",
        b"channel=email",  # no type
        b"type=click&" + b"&".join(b"k%d=v" % i for i in range(70)),
    ],
)
def test_queries_the_dict_must_read(query: bytes) -> None:
    assert straight(query, RULES, received_at=NOW) is None


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    query_pairs(),
    st.booleans(),
    times,
    addresses,
    st.booleans(),
    st.sampled_from([RULES, TIGHT, KNOWN]),
)
def test_whatever_is_read_straight_is_what_the_dict_gives(
    pairs: list[tuple[str, str]],
    escape: bool,
    received_at: datetime,
    ip: str | None,
    bot: bool,
    rules: EventRules,
) -> None:
    encode = quote if escape else str
    query = "&".join(f"{encode(key)}={encode(value)}" for key, value in pairs).encode()
    enrichment = {"received_at": received_at, "ip": ip, "bot": bot}
    found = straight(query, rules, **enrichment)
    if found is not None:
        assert found == by_dict(query, rules, **enrichment)
