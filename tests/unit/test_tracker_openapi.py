"""The served OpenAPI document against the code it describes: the fields `parse_event` reads,
and patterns no looser than the parsers (what the fuzz run's negative cases rely on)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adpulse.core.event import EventError, EventRules, parse_event
from adpulse.core.fields import field_parsers
from tracker.openapi import event_schema, openapi_document, redirect_target_schema
from tracker.redirect import RedirectPolicy, RedirectRefused
from tracker.settings import TrackerSettings

RULES = EventRules(max_id_length=40, max_campaign_length=50, max_utm_length=60)
SCHEMA = event_schema(RULES)
PARSERS = field_parsers(
    max_id_length=RULES.max_id_length,
    max_campaign_length=RULES.max_campaign_length,
    max_utm_length=RULES.max_utm_length,
    max_ad_click_id_length=RULES.max_ad_click_id_length,
    max_money=RULES.max_money,
)
PATTERNED = sorted(name for name, field in SCHEMA["properties"].items() if "pattern" in field)
# Values near the limits: short, around each length limit, with surrounding whitespace.
VALUES = st.one_of(
    st.text(max_size=8),
    st.text(alphabet="aZ09._:-_ \t", min_size=35, max_size=70),
    st.text(alphabet="aZ09", min_size=1, max_size=5).map(lambda text: f"  {text} "),
)


def test_the_event_schema_names_every_field_the_tracker_reads() -> None:
    assert set(SCHEMA["properties"]) == set(PARSERS)
    assert {"gclid", "fbclid", "msclkid", "ttclid", "li_fat_id"} <= set(SCHEMA["properties"])


def test_query_parameters_are_the_event_fields() -> None:
    document = openapi_document(TrackerSettings())
    pixel = {p["name"] for p in document["paths"]["/p.gif"]["get"]["parameters"]}
    click = {p["name"] for p in document["paths"]["/c"]["get"]["parameters"]}
    assert pixel == set(PARSERS)
    assert click == (set(PARSERS) - {"click_id"}) | {"to", "sig"}


def accepted(name: str, value: str) -> bool:
    try:
        if name == "type":
            parse_event({"type": value}, rules=RULES, received_at=datetime.now(UTC))
        else:
            PARSERS[name](value)
    except (EventError, ValueError):
        return False
    return True


@pytest.mark.parametrize("name", PATTERNED)
@settings(max_examples=300, deadline=None)
@given(value=VALUES)
def test_a_value_the_tracker_accepts_matches_the_pattern(name: str, value: str) -> None:
    field: dict[str, Any] = SCHEMA["properties"][name]
    if accepted(name, value):
        assert re.search(field["pattern"], value), (name, value)


@pytest.mark.parametrize(
    ("name", "value", "matches"),
    [
        ("campaign", " " * 80, True),  # blank once stripped: absent
        ("campaign", "x" * 51, False),
        ("campaign", f"  {'x' * 50}  ", True),
        ("event_id", "a b", False),
        ("currency", " eur ", True),
        ("type", "Click", True),
        ("type", "pageview", False),
    ],
)
def test_patterns_follow_the_parsers_on_the_edges(name: str, value: str, matches: bool) -> None:
    assert bool(re.search(SCHEMA["properties"][name]["pattern"], value)) is matches
    assert accepted(name, value) is matches


@settings(max_examples=300, deadline=None)
@given(
    target=st.one_of(
        st.text(alphabet="htps:/.@?#\\ aSHOPexamplecomrg0", max_size=40),
        st.sampled_from(["https://", "http://", "HTTPS://"]).flatmap(
            lambda scheme: st.text(alphabet="shop.examplecomrgX-:/?#@", max_size=30).map(
                lambda rest: scheme + rest
            )
        ),
    )
)
@example(target="https://shop.example.com/sale?x=1#top")
@example(target="HTTPS://a.b.Example.org:8443")
@example(target="https://shop.example.com./")
def test_a_redirect_target_the_tracker_allows_matches_the_pattern(target: str) -> None:
    policy = RedirectPolicy(hosts=frozenset({"shop.example.com", "*.example.org"}))
    pattern = redirect_target_schema(policy)["pattern"]
    try:
        policy.check(target)
    except RedirectRefused:
        return
    assert re.search(pattern, target), target
