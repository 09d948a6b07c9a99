"""The click ids the tracker issues, for `/c` and for a click posted without one (the site
snippet's): signed ids that carry their attribution (`adpulse.core.click_ids`) when the tracker
has a click key, else random ids the worker registers, as before the signed format.

Only minting costs an HMAC; the pixel, which never mints, does not come here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Final

from adpulse.core.channels import UNATTRIBUTED
from adpulse.core.click_ids import mint
from adpulse.core.event import Event

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE: Final = timedelta(minutes=1)


def issue_click_id(event: Event, key: bytes | None) -> Event:
    """`event`, a click without a click id just built by `parse_event` and held by no one
    else, given one in place: signed with `key` and carrying the
    channel the worker will count the click under (its own, else its grouping; none for a
    bot's click, which attributes nothing), its campaign and minute. A random registry id
    without a key, or when channel and campaign are too long to carry."""
    click_id = None
    if key is not None:
        channel = "" if event.bot else (event.channel or event.grouped_channel or "")
        if channel == UNATTRIBUTED:
            channel = ""
        minute = (event.ts - _EPOCH) // _MINUTE
        click_id = mint(key, channel, event.campaign or "", minute)
    if click_id is None:
        click_id = uuid.uuid4().hex
    # Set as the frozen dataclass's own __init__ sets its fields: `dataclasses.replace`
    # copied every field through that __init__ to change one (bench/README.md, "Tracker").
    object.__setattr__(event, "click_id", click_id)
    return event
