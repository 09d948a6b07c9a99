"""The campaign series cap: the busiest campaigns named, the rest of each channel summed."""

from __future__ import annotations

import pytest

from stream.campaign_series import cap_campaigns
from stream.kpi import Counters


def test_within_the_cap_every_campaign_is_named() -> None:
    campaigns = {("email", "spring"): Counters(3), ("email", ""): Counters(1)}
    assert cap_campaigns(campaigns, 2) == (campaigns, 0)


def test_beyond_the_cap_the_quietest_are_summed_into_their_channel_s_other() -> None:
    campaigns = {
        ("email", "a"): Counters(10, 0, 1, 5_000_000, 2_000_000),
        ("email", "b"): Counters(1, 0, 0, 0, 7_000_000),
        ("email", "other"): Counters(2, 0, 0, 0, 1_000_000),  # the worker's own "other"
        ("search", "c"): Counters(5),
        ("search", "d"): Counters(0, 0, 0, 0, 3_000_000),
    }
    kept, folded = cap_campaigns(campaigns, 2)
    assert kept == {
        ("email", "a"): Counters(10, 0, 1, 5_000_000, 2_000_000),
        ("search", "c"): Counters(5),
        ("email", "other"): Counters(3, 0, 0, 0, 8_000_000),
        ("search", "other"): Counters(0, 0, 0, 0, 3_000_000),
    }
    assert folded == 2  # b and d; the worker's "other" was never a named campaign
    total = sum(campaigns.values(), Counters())
    assert sum(kept.values(), Counters()) == total


def test_the_cap_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cap_campaigns({}, 0)
