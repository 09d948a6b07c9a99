"""The served OpenAPI document against the code it describes: the fields `parse_event` reads,
and patterns no looser than the parsers (what the fuzz run's negative cases rely on)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adpulse.core.contract import CLIENT, CLIENT_FIELDS, Kind, client_parsers
from adpulse.core.event import EventError, EventRules, parse_event
from tracker.openapi import event_schema, openapi_document, redirect_target_schema
from tracker.redirect import RedirectPolicy, RedirectRefused
from tracker.settings import TrackerSettings

RULES = EventRules(max_id_length=40, max_campaign_length=50, max_utm_length=60)
SCHEMA = event_schema(RULES)
PARSERS = client_parsers(RULES)
PATTERNED = sorted(name for name, field in SCHEMA["properties"].items() if "pattern" in field)
# Values near the limits: short, around each length limit, with surrounding whitespace.
VALUES = st.one_of(
    st.text(max_size=8),
    st.text(alphabet="aZ09._:-_ \t", min_size=35, max_size=70),
    st.text(alphabet="aZ09", min_size=1, max_size=5).map(lambda text: f"  {text} "),
)


def test_the_event_schema_names_every_field_the_tracker_reads() -> None:
    assert set(SCHEMA["properties"]) == set(PARSERS) == CLIENT_FIELDS
    assert {"gclid", "fbclid", "msclkid", "ttclid", "li_fat_id"} <= set(SCHEMA["properties"])


# A character each kind of limited field accepts, to fill a value up to its limit.
FILLER = {Kind.ID: "a", Kind.TEXT: "a", Kind.TOKEN: "a", Kind.AD_CLICK_ID: "a", Kind.SLUG: "a"}
FILLER[Kind.COUPON] = "A"
FILLER[Kind.CUSTOMER] = "a"


@pytest.mark.parametrize("rules", [EventRules(), RULES], ids=["default", "tight"])
def test_the_served_document_has_every_accepted_field_with_its_limit(rules: EventRules) -> None:
    """The accepted fields come from the contract; each is in /openapi.json, in the body and as
    a pixel parameter, and a value of its limit's length matches while one longer does not,
    as the tracker's parser accepts and refuses them."""
    document = openapi_document(TrackerSettings(event_rules=rules))
    events = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    body = events["application/json"]["schema"]["oneOf"][0]["properties"]
    pixel = {p["name"]: p["schema"] for p in document["paths"]["/p.gif"]["get"]["parameters"]}
    # With a key, so that a customer id is hashed rather than refused.
    parsers = client_parsers(dataclasses.replace(rules, hash_key=b"openapi-test"))
    accepted = {field.name for field in CLIENT}
    assert set(body) == accepted
    assert set(pixel) == accepted
    limited = [field for field in CLIENT if field.limit is not None]
    assert {field.kind for field in limited} <= set(FILLER)
    for field in limited:
        limit = field.max_length(rules)
        assert limit is not None
        longest, too_long = FILLER[field.kind] * limit, FILLER[field.kind] * (limit + 1)
        parsers[field.name](longest)
        with pytest.raises(ValueError, match=f"longer than {limit}"):
            parsers[field.name](too_long)
        for schema in (body[field.name], pixel[field.name]):
            assert re.search(schema["pattern"], longest), field.name
            assert not re.search(schema["pattern"], too_long), field.name


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
