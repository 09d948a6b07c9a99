"""CPA posterior, spike rule and budget advice (`stream.posterior`, `stream.advice`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.advice import AdviceRules, ChannelEvidence, advise
from stream.distributions import gamma_cdf
from stream.nowcast import RateEstimate
from stream.posterior import CpaPosterior, SpikeAlarm, SpikeRule


def window(conversions: int, clicks: float, cost: float, maturity: float = 1.0) -> RateEstimate:
    """A window's estimate with a vague prior, as `estimate_rate` makes it."""
    matured = clicks * maturity
    return RateEstimate(0.5 + conversions, 1e-9 + matured, conversions, clicks, matured, cost)


def test_cpa_posterior_probabilities() -> None:
    posterior = CpaPosterior.of(window(100, 5000, 2500))
    assert posterior is not None
    assert posterior.cpa == pytest.approx(25, rel=0.01)
    low, high = posterior.interval(0.9)
    assert low < 25 < high
    assert posterior.probability_above(low) == pytest.approx(0.95, abs=1e-6)
    assert posterior.probability_above(high) == pytest.approx(0.05, abs=1e-6)
    assert posterior.probability_above(25) == pytest.approx(
        gamma_cdf(0.5 / 25, posterior.shape, posterior.rate)
    )
    dearer = CpaPosterior.of(window(50, 5000, 2500))
    assert dearer is not None
    assert dearer.probability_above_other(posterior) > 0.999
    assert posterior.probability_above_other(dearer) < 0.001
    assert 0.2 < dearer.probability_above_other(posterior, 2.0) < 0.8
    assert CpaPosterior.of(window(0, 0, 0)) is None


def test_spike_rule_needs_sureness_for_a_while() -> None:
    rule = SpikeRule(factor=1.3, confidence=0.99, hold=2, min_spend=100)
    usual = window(700, 35000, 17500)
    assert rule.probability(window(40, 2000, 1000), usual) < 0.5
    doubled = window(15, 2000, 1000)
    assert rule.probability(doubled, usual) > 0.99
    assert rule.probability(window(2, 200, 99), usual) == 0.0  # below the minimum spend
    alarm = SpikeAlarm(rule)
    assert [alarm.update(p) for p in (0.995, 0.5, 0.995, 0.999, 0.999, 0.2)] == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="factor"):
        SpikeRule(factor=1.0)


def evidence(name: str, conversions: int, cost: float, maturity: float = 1.0) -> ChannelEvidence:
    clicks = 10_000.0
    return ChannelEvidence(
        name,
        window(conversions, clicks, cost, maturity),
        window(conversions * 7, clicks * 7, cost * 7),
    )


def test_advice_moves_at_most_the_max_shift_from_a_surely_dearer_channel() -> None:
    result = {
        rec.channel: rec
        for rec in advise(
            [
                evidence("paid_search", 200, 4000),  # CPA 20
                evidence("paid_social", 100, 5000),  # CPA 50
                evidence("display", 150, 3300),  # CPA 22
                evidence("email", 5, 100),  # too few conversions
            ]
        )
    }
    social, search = result["paid_social"], result["paid_search"]
    assert social.action == "decrease"
    assert social.next_budget == pytest.approx(4000)  # 20 % of 5,000
    assert search.action == "increase"
    assert search.next_budget - search.budget > result["display"].next_budget - 3300 >= 0
    assert result["email"].action == "hold"
    assert result["email"].next_budget == 100
    assert "advice needs 20" in result["email"].reason
    total = sum(rec.budget for rec in result.values())
    assert sum(rec.next_budget for rec in result.values()) == pytest.approx(total)
    assert social.reason.startswith(
        "paid_social: CPA 49.75, 1.0x its usual level; over 99 % sure it costs over 1.2x "
        "paid_search's CPA; move 20 % (1,000.00) to paid_search, display"
    )
    assert "move 20 % (1,000.00) to paid_search" in social.reason
    assert social.cpa is not None
    assert social.cpa_low is not None
    assert social.cpa_high is not None
    assert social.cpa_low < social.cpa < social.cpa_high
    assert social.cpa < 50  # less spend, lower CPA down the response curve


def test_no_advice_when_channels_do_not_surely_differ_or_data_are_young() -> None:
    close = advise([evidence("a", 200, 4000), evidence("b", 190, 4200)])
    assert {rec.action for rec in close} == {"keep"}
    assert all(rec.next_budget == rec.budget for rec in close)
    young = advise([evidence("a", 200, 4000), evidence("b", 100, 5000, maturity=0.3)])
    assert {rec.action for rec in young} == {"keep", "hold"}
    assert "70 % of the window's conversions are still to come" in young[-1].reason


def test_minimum_share_is_kept() -> None:
    rules = AdviceRules(max_shift=1.0, min_share=0.1)
    result = {
        rec.channel: rec
        for rec in advise([evidence("good", 600, 6000), evidence("bad", 40, 4000)], rules)
    }
    assert result["bad"].next_share == pytest.approx(0.1)
    assert result["good"].next_share == pytest.approx(0.9)


channel_figures = st.tuples(
    st.integers(0, 2000),  # conversions
    st.floats(1.0, 50_000.0),  # spend
    st.floats(0.05, 1.0),  # maturity
)


@given(st.lists(channel_figures, min_size=1, max_size=8), st.floats(0.05, 1.0))
def test_guard_rails_hold_for_any_figures(
    figures: list[tuple[int, float, float]], max_shift: float
) -> None:
    rules = AdviceRules(max_shift=max_shift, min_share=0.02)
    result = advise(
        [evidence(f"c{i}", n, cost, maturity) for i, (n, cost, maturity) in enumerate(figures)],
        rules,
    )
    total = sum(cost for _, cost, _ in figures)
    assert len(result) == len(figures)
    assert sum(rec.next_budget for rec in result) == pytest.approx(total, rel=1e-9)
    for rec in result:
        assert abs(rec.next_budget - rec.budget) <= max_shift * rec.budget * (1 + 1e-9)
        if rec.next_budget < rec.budget:
            assert rec.action == "decrease"
            assert rec.next_share >= min(rules.min_share, rec.share) - 1e-9
        if rec.action in ("hold", "keep"):
            assert rec.next_budget == rec.budget
        assert rec.reason.startswith(f"{rec.channel}: ")
