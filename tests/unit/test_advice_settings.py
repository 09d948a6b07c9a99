"""The advice's settings (`stream.advice_settings`) and the targets in the advice."""

from __future__ import annotations

import pytest

from stream.advice import ChannelEvidence, advice_document, advise
from stream.advice_settings import (
    Targets,
    parse_lookback,
    parse_min_share,
    parse_shift,
    parse_targets,
)
from stream.nowcast import RateEstimate


def test_targets_for_every_channel_and_per_channel() -> None:
    targets = parse_targets(" 30 , paid_search=40,email=10.5")
    assert (targets.of("paid_search"), targets.of("email"), targets.of("tv")) == (40, 10.5, 30)
    assert str(targets) == "30,paid_search=40,email=10.5"
    assert parse_targets("paid_search=40").of("tv") is None
    assert not parse_targets("")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("forty", "is not a number"),
        ("0", "positive"),
        ("paid_search=-1", "positive"),
        ("30,40", "one target for every channel"),
        ("a=1,a=2", "given twice"),
        ("paid search=1", "without spaces"),
        ("=4", "CHANNEL=NUMBER"),
    ],
)
def test_bad_targets_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_targets(text)


def test_shares_and_lookback() -> None:
    assert parse_shift("20%") == pytest.approx(0.2)
    assert parse_shift("0.35") == pytest.approx(0.35)
    with pytest.raises(ValueError, match="above 0%"):
        parse_shift("0%")
    with pytest.raises(ValueError, match="at most 50%"):
        parse_min_share("60%")
    assert parse_lookback("14d") == parse_lookback("336h") == parse_lookback("14") == 336
    with pytest.raises(ValueError, match="retention"):
        parse_lookback("60d")


def estimate(conversions: int, clicks: float, cost: float) -> RateEstimate:
    return RateEstimate(0.5 + conversions, 1e-9 + clicks, conversions, clicks, clicks, cost)


def test_the_advice_says_how_sure_a_channel_is_above_its_target() -> None:
    evidence = [
        ChannelEvidence("search", estimate(100, 5000, 2000), target_cpa=15.0),
        ChannelEvidence("social", estimate(100, 5000, 2000), target_cpa=40.0),
        ChannelEvidence("email", estimate(100, 5000, 2000)),
    ]
    rows = {row["channel"]: row for row in advice_document(advise(evidence), "EUR")["channels"]}
    assert rows["search"]["above_target"] > 0.99
    assert "over 99 % sure above its target 15.00" in rows["search"]["reason"]
    assert rows["social"]["above_target"] < 0.01
    assert "sure within its target 40.00" in rows["social"]["reason"]
    assert rows["email"]["target_cpa"] is None
    assert rows["email"]["above_target"] is None
    assert Targets(30.0).of("email") == 30.0
