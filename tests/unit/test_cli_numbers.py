"""`adpulse numbers`: an entry's checks are the event contract's."""

from __future__ import annotations

import pytest

from adpulse.cli.commands.numbers import entry
from adpulse.core.event import EventRules
from adpulse.core.phone import STATIC


def test_a_numbers_campaign_has_an_events_length_limit() -> None:
    longest = "c" * EventRules().max_campaign_length
    assert entry("+14155550100", STATIC, "flyers", longest, None).campaign == longest
    with pytest.raises(ValueError, match="longer than"):
        entry("+14155550100", STATIC, "flyers", longest + "c", None)
