"""`POST /v1/calls`: one telephony webhook payload, checked field by field.

``{call_id, tracked_number, caller?, started_at, duration_seconds, answered}``; the caller's
number is hashed here (`adpulse.core.phone.caller_hash`) and never kept in clear, not even on
the rejected topic (`redacted`). The call's event id is ``call:{call_id}``, so a webhook sent
twice is counted once (the worker's event-id dedupe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from adpulse.core.event import EventRules
from adpulse.core.fields import json_kind, parse_event_id, parse_time
from adpulse.core.phone import NumberError, caller_hash, normalise_number

CALL_FIELDS: Final = (
    "call_id",
    "tracked_number",
    "caller",
    "started_at",
    "duration_seconds",
    "answered",
)
EVENT_ID_PREFIX: Final = "call:"
# A call id is an event id once prefixed, within the event id's limit.
MAX_CALL_ID_LENGTH: Final = EventRules().max_id_length - len(EVENT_ID_PREFIX)
MAX_CALL_SECONDS: Final = 24 * 3600
REDACTED: Final = "(redacted)"
_ASK_FOR_KEY: Final = (
    "cannot be hashed: ADPULSE_HASH_KEY is not set on the tracker (make one with "
    "`openssl rand -hex 32`); a caller's number is never stored in clear"
)


class CallError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CallReport:
    """One call as the webhook reported it, the caller already hashed."""

    call_id: str
    tracked_number: str
    caller: str | None
    started_at: datetime
    duration_seconds: int
    answered: bool

    @property
    def event_id(self) -> str:
        return EVENT_ID_PREFIX + self.call_id

    def qualified(self, min_seconds: int) -> bool:
        """A lead: answered and at least `min_seconds` long."""
        return self.answered and self.duration_seconds >= min_seconds


def read_call(
    payload: Mapping[str, Any], *, hash_key: str | None, region: str | None
) -> CallReport:
    """The `CallReport` of one payload, or CallError naming the first bad field."""
    for key in payload:
        if key not in CALL_FIELDS:
            raise CallError(str(key)[:64], f"unknown field; expected {', '.join(CALL_FIELDS)}")
    try:
        call_id = parse_event_id(payload.get("call_id"), MAX_CALL_ID_LENGTH)
    except ValueError as error:
        raise CallError("call_id", str(error)) from None
    if call_id is None:
        raise CallError("call_id", "required")
    tracked = payload.get("tracked_number")
    if tracked is None:
        raise CallError("tracked_number", "required")
    try:
        tracked_number = normalise_number(tracked, region)
    except NumberError as error:
        raise CallError("tracked_number", str(error)) from None
    caller = None
    raw_caller = payload.get("caller")
    if raw_caller is not None and raw_caller != "":
        try:
            number = normalise_number(raw_caller, region)
        except NumberError:
            # The reason would quote the number; a caller's is not repeated back.
            raise CallError(
                "caller", "not a phone number (E.164, or national with ADPULSE_PHONE_REGION)"
            ) from None
        if hash_key is None:
            raise CallError("caller", _ASK_FOR_KEY)
        caller = caller_hash(hash_key, number)
    started = payload.get("started_at")
    if started is None:
        raise CallError("started_at", "required")
    try:
        started_at = parse_time(started)
    except ValueError as error:
        raise CallError("started_at", str(error)) from None
    if started_at is None:
        raise CallError("started_at", "required")
    duration = payload.get("duration_seconds", 0)
    if type(duration) is not int or not 0 <= duration <= MAX_CALL_SECONDS:
        raise CallError(
            "duration_seconds",
            f"a whole number from 0 to {MAX_CALL_SECONDS}, got {json_kind(duration)}",
        )
    answered = payload.get("answered")
    if type(answered) is not bool:
        raise CallError("answered", f"required, true or false, got {json_kind(answered)}")
    return CallReport(call_id, tracked_number, caller, started_at, duration, answered)


def redacted(body: bytes) -> bytes:
    """A refused body as the rejected topic may keep it: every caller's number replaced, or
    nothing when the body cannot be read (it might hold one)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return b""
    items = document if isinstance(document, list) else [document]
    for item in items:
        if isinstance(item, dict) and item.get("caller") is not None:
            item["caller"] = REDACTED
    return orjson.dumps(document)
