"""A telephony webhook's call (`tracker.calls`): its id is an event id within the contract's."""

from __future__ import annotations

import re
from typing import Any

import pytest

from adpulse.core.event import EventRules
from tracker.calls import EVENT_ID_PREFIX, CallError, read_call


def payload(call_id: str) -> dict[str, object]:
    return {
        "call_id": call_id,
        "tracked_number": "+14155550101",
        "started_at": "2026-03-18T12:00:00Z",
        "duration_seconds": 30,
        "answered": True,
    }


def test_the_longest_call_id_makes_the_longest_event_id_the_contract_takes() -> None:
    longest = "c" * (EventRules().max_id_length - len(EVENT_ID_PREFIX))
    report = read_call(payload(longest), hash_key=None, region=None)
    assert len(report.event_id) == EventRules().max_id_length
    with pytest.raises(CallError, match="call_id"):
        read_call(payload(longest + "c"), hash_key=None, region=None)


def test_the_openapi_call_schema_has_the_webhooks_limits() -> None:
    from tracker.openapi import _CALL

    longest = "c" * (EventRules().max_id_length - len(EVENT_ID_PREFIX))
    properties: Any = _CALL["properties"]
    pattern = re.compile(properties["call_id"]["pattern"])
    assert pattern.fullmatch(longest)
    assert not pattern.fullmatch(longest + "c")
    longest_call = properties["duration_seconds"]["maximum"]
    assert read_call(payload("c") | {"duration_seconds": longest_call}, hash_key=None, region=None)
    with pytest.raises(CallError, match="duration_seconds"):
        read_call(payload("c") | {"duration_seconds": longest_call + 1}, hash_key=None, region=None)
