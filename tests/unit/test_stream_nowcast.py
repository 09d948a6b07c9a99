"""Conversion lag and nowcast (`stream.lag`, `stream.nowcast`) against simulated ground truth.

Simulated channel: 150 clicks an hour, 3 % of them convert, after a log-normal delay of median
3 hours (sigma 1.2); the model's prior says a median of 4 hours (sigma 1.5), so it has to learn.
Each seed is one check at the end of 15 simulated days; the model sees only what the store
would hold at that moment.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.lag import (
    Cohort,
    LagModel,
    delay_bin,
    empty_seen,
    learn_lag,
    lognormal_prior,
)
from stream.nowcast import baseline_prior, estimate_rate, nowcast
from tests.sim_marketing import ChannelPlan, Simulation

PLAN = ChannelPlan("paid_search", clicks_per_hour=150, cost_per_click=0.8, conversion_rate=0.03)
SEEDS = 120
NOW = 15 * 24
TRUE_MEDIAN = PLAN.lag_median_hours


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (-1.0, 0),
        (0.0, 0),
        (0.05, 0),
        (5 / 60, 1),
        (0.99, 3),
        (1.0, 4),
        (63.9, 9),
        (64, 10),
        (900, 10),
    ],
)
def test_delay_bins(hours: float, expected: int) -> None:
    assert delay_bin(hours) == expected


def test_prior_is_a_distribution_and_the_model_without_data_is_the_prior() -> None:
    prior = lognormal_prior()
    assert sum(prior) == pytest.approx(1.0)
    model = learn_lag([], now=1000.0)
    assert model.conversions == 0
    assert model.median() == pytest.approx(4.0, rel=0.02)
    cumulative = 0.0
    for j, probability in enumerate(prior[:-1]):
        cumulative += probability
        assert model.cdf_at_edges[j + 1] == pytest.approx(cumulative)


@given(st.floats(0, 300), st.floats(0, 300))
def test_maturity_is_the_mean_of_the_cdf_between_two_ages(first: float, second: float) -> None:
    model = learn_lag([], now=0.0)
    young, old = min(first, second), max(first, second)
    value = model.maturity(young, old)
    assert model.cdf(young) - 1e-12 <= value <= model.cdf(old) + 1e-12
    if old - young > 1e-3:
        points = 2000
        step = (old - young) / points
        mean = sum(model.cdf(young + (i + 0.5) * step) for i in range(points)) / points
        assert value == pytest.approx(mean, abs=1e-4)


def simulate(seed: int) -> tuple[Simulation, list[Cohort]]:
    sim = Simulation([PLAN], hours=NOW, seed=seed)
    return sim, sim.cohorts(PLAN.name, NOW, NOW - 14 * 24)


def test_delay_is_learned_despite_right_truncation() -> None:
    """Young cohorts have shown only their short delays; the model must not be fooled by that,
    nor stay at its prior (median 4 hours where the truth is 3)."""
    true_cdf = lognormal_prior(TRUE_MEDIAN, PLAN.lag_sigma)
    errors = []
    for seed in range(40):
        _, cohorts = simulate(seed)
        model = learn_lag(cohorts, NOW)
        expected = 0.0
        worst = 0.0
        for j in range(len(true_cdf) - 1):
            expected += true_cdf[j]
            worst = max(worst, abs(model.cdf_at_edges[j + 1] - expected))
        errors.append(worst)
    prior = learn_lag([], NOW)
    prior_error = max(
        abs(prior.cdf_at_edges[j + 1] - sum(true_cdf[: j + 1])) for j in range(len(true_cdf) - 1)
    )
    assert prior_error > 0.1
    assert max(errors) < 0.03, errors


@pytest.mark.parametrize("window", [1, 24])
def test_nowcast_covers_the_truth_and_the_naive_count_falls_short(window: int) -> None:
    """Measured at 90 % intervals over these 120 seeds: the last hour is covered in 120 checks
    (its range is wide: little of it has arrived) and the last 24 hours in 113 (94 %); the
    assertion allows 90 %, i.e. 108. The naive count (conversions seen so far) is never above
    the truth, and below it in 118 checks of the last hour and 120 of the last 24 hours."""
    covered = short = 0
    seen_total = expected_total = truth_total = 0.0
    for seed in range(SEEDS):
        sim, cohorts = simulate(seed)
        lag = learn_lag(cohorts, NOW)
        usual = estimate_rate(
            [c for c in cohorts if NOW - window - 168 <= c.hour < NOW - window], NOW, lag
        )
        result = nowcast(
            [c for c in cohorts if c.hour >= NOW - window], NOW, lag, baseline_prior(usual)
        )
        truth = sim.eventual(PLAN.name, NOW - window, NOW)
        assert result.seen <= truth
        covered += result.low <= truth <= result.high
        short += result.seen < truth
        seen_total += result.seen
        expected_total += result.expected
        truth_total += truth
    assert covered >= 0.9 * SEEDS
    assert short >= 0.95 * SEEDS
    # Unbiased where the naive count is not: for the last hour the naive count is 7 % of the
    # truth, the nowcast's expectation 96 % of it; for 24 hours 78 % and 101 % (summed).
    assert expected_total == pytest.approx(truth_total, rel=0.08)
    assert seen_total < (0.4 if window == 1 else 0.9) * truth_total


def test_mature_cohorts_need_no_nowcast_and_coupon_channels_no_lag() -> None:
    seen = (3, *empty_seen()[1:])
    old = [Cohort(hour=0, exposure=100.0, cost=50.0, seen=seen)]
    result = nowcast(old, now=1000.0, lag=learn_lag([], 1000.0))
    assert (result.seen, result.expected, result.low, result.high) == (3, 3.0, 3, 3)
    young = [Cohort(hour=999, exposure=100.0, cost=50.0, seen=seen)]
    assert nowcast(young, now=999.5, lag=LagModel.immediate()).expected == 3.0
    waiting = nowcast(young, now=999.5, lag=learn_lag([], 1000.0), prior=(1.0, 100.0))
    assert waiting.expected > 3.0
    assert waiting.low >= 3


def test_bad_levels_and_priors_are_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        nowcast([], now=1.0, lag=LagModel.immediate(), level=1.0)
    with pytest.raises(ValueError, match="positive"):
        estimate_rate([], now=1.0, lag=LagModel.immediate(), prior=(0.0, 1.0))
    with pytest.raises(ValueError, match="bins"):
        learn_lag([], now=1.0, prior=(1.0,))
