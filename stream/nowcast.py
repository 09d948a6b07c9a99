"""Nowcast: a window's conversions, those seen plus those its clicks will still bring.

Model (per channel): each cohort c of clicks (one hour) converts at an unknown rate theta per
unit of exposure (per click), and a conversion arrives after a delay with CDF F (`stream.lag`).
Conversions seen so far from cohort c are Poisson(theta * exposure_c * M_c), M_c the cohort's
maturity (mean F over its clicks' ages), and those still to come Poisson(theta * exposure_c *
(1 - M_c)), independent of them. With theta ~ Gamma(a, b) a priori:

- theta | seen ~ Gamma(a + seen, b + sum exposure_c * M_c)  (matured exposure),
- late | seen ~ NegativeBinomial(size a + seen, p = (b + E) / (b + E + L)), L the exposure still
  to mature; the expected late conversions are sum_c E[theta] exposure_c (1 - M_c): the
  cohort's expected eventual conversions times P(delay > its age).

The prior comes from the channel's own baseline (`baseline_prior`): young cohorts are read at
the channel's usual rate until their own conversions speak. The interval is the predictive one:
it holds the unknown count of conversions still to come with probability `level`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from stream.distributions import negative_binomial_quantile
from stream.lag import Cohort, LagModel

DEFAULT_LEVEL: Final = 0.9
DEFAULT_PRIOR_WEIGHT: Final = 1.0
"""Pseudo-conversions of the baseline a window's rate is shrunk toward (see `baseline_prior`)."""
VAGUE_PRIOR: Final = (0.5, 1e-9)
"""Gamma(shape, rate) when a channel has no history: the nowcast is then uninformative."""


@dataclass(frozen=True, slots=True)
class RateEstimate:
    """Gamma(shape, rate) posterior of conversions per unit of exposure, with its data."""

    shape: float
    rate: float
    seen: int
    exposure: float
    matured_exposure: float
    cost: float

    @property
    def mean(self) -> float:
        return self.shape / self.rate

    @property
    def maturity(self) -> float:
        """The share of the window's eventual conversions that had time to arrive."""
        return self.matured_exposure / self.exposure if self.exposure > 0 else 1.0


@dataclass(frozen=True, slots=True)
class Nowcast:
    """A window's conversions: `seen`, `expected` in all, and the predictive interval."""

    seen: int
    expected: float
    low: int
    high: int
    level: float
    estimate: RateEstimate

    @property
    def late(self) -> float:
        return self.expected - self.seen


def estimate_rate(
    cohorts: Iterable[Cohort],
    now: float,
    lag: LagModel,
    prior: tuple[float, float] = VAGUE_PRIOR,
) -> RateEstimate:
    """The posterior of a channel's rate from `cohorts` (its window or its baseline)."""
    shape, rate = prior
    if shape <= 0 or rate <= 0:
        raise ValueError("prior shape and rate must be positive")
    seen = 0
    exposure = matured = cost = 0.0
    maturity = lag.maturity
    for cohort in cohorts:
        oldest = now - cohort.hour  # inline `cohort_ages`: this loop runs per hour and channel
        if oldest < 0:
            oldest = 0.0
        youngest = oldest - cohort.width if oldest > cohort.width else 0.0
        seen += cohort.conversions
        exposure += cohort.exposure
        matured += cohort.exposure * maturity(youngest, oldest)
        cost += cohort.cost
    return RateEstimate(shape + seen, rate + matured, seen, exposure, matured, cost)


def baseline_prior(
    baseline: RateEstimate | None, weight: float = DEFAULT_PRIOR_WEIGHT
) -> tuple[float, float]:
    """Gamma(shape, rate) with the baseline's mean rate and the weight of `weight` conversions.

    A light prior: it fills the window's young cohorts with the usual rate but is outweighed by
    a few of the window's own conversions, so a change shows within hours.
    """
    if baseline is None or baseline.seen == 0 or baseline.matured_exposure <= 0:
        return VAGUE_PRIOR
    return weight, weight / baseline.mean


def nowcast(
    cohorts: Iterable[Cohort],
    now: float,
    lag: LagModel,
    prior: tuple[float, float] = VAGUE_PRIOR,
    level: float = DEFAULT_LEVEL,
) -> Nowcast:
    """The nowcast of the conversions of `cohorts` (the window's hours of clicks) at `now`.

    >>> from stream.lag import learn_lag
    >>> window = [Cohort(hour=100, exposure=1000.0, cost=500.0, seen=(2,) + (0,) * 10)]
    >>> result = nowcast(window, now=101.0, lag=learn_lag([], 101.0), prior=(1.0, 1 / 0.03))
    >>> result.seen, result.low <= round(result.expected) <= result.high
    (2, True)
    """
    if not 0.0 < level < 1.0:
        raise ValueError("level must be strictly between 0 and 1")
    estimate = estimate_rate(cohorts, now, lag, prior)
    waiting = estimate.exposure - estimate.matured_exposure
    if waiting <= 0:
        return Nowcast(
            estimate.seen, float(estimate.seen), estimate.seen, estimate.seen, level, estimate
        )
    probability = estimate.rate / (estimate.rate + waiting)
    tail = (1.0 - level) / 2.0
    low = negative_binomial_quantile(tail, estimate.shape, probability)
    high = negative_binomial_quantile(1.0 - tail, estimate.shape, probability)
    expected = estimate.seen + estimate.mean * waiting
    return Nowcast(
        estimate.seen, expected, estimate.seen + low, estimate.seen + high, level, estimate
    )


USUAL_LOW_LEVEL: Final = 0.01


def usual_low(
    baseline: RateEstimate | None, window: RateEstimate, level: float = USUAL_LOW_LEVEL
) -> int | None:
    """The fewest conversions the window's clicks would have brought *by now* at the channel's
    usual rate, but with probability `level`: the lag-aware "conversions stopped" threshold.

    What had time to arrive is the window's matured exposure (its clicks weighted by the share
    of their conversions the lag lets arrive by now); at the baseline's posterior rate the count
    is negative binomial. None without a baseline that saw a conversion.

    >>> usual = RateEstimate(100.5, 1000.0, 100, 1000.0, 1000.0, 0.0)
    >>> usual_low(usual, RateEstimate(0.5, 100.0, 0, 100.0, 100.0, 0.0))  # 10 expected
    3
    """
    if not 0.0 < level < 1.0:
        raise ValueError("level must be strictly between 0 and 1")
    if baseline is None or baseline.seen == 0 or window.matured_exposure <= 0:
        return None
    probability = baseline.rate / (baseline.rate + window.matured_exposure)
    return negative_binomial_quantile(level, baseline.shape, probability)
