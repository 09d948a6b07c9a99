"""How sure: the posterior of a channel's CPA in a window, and the CPA-spike rule built on it.

A window's conversions per unit of exposure theta ~ Gamma(shape, rate) (`stream.nowcast`), and
the window's cost per unit of exposure c is known, so its CPA is c / theta: an inverse gamma.
Then P(CPA > target) = P(theta < c / target) is a gamma CDF, and comparing with the channel's
own baseline (another Gamma, from the hours before the window) is a beta CDF:
P(CPA_w > k CPA_b) = P(theta_w / theta_b < c_w / (k c_b)).

Figures here are estimates, not accounts: floats in units of the reporting currency (the
counters they come from stay exact integer micros).

The CPA meant here is the cost of the conversions the window's clicks will bring, not spend
over the conversions that happened to arrive in the window: that one reads high for every young
window and reacts to a change only once the conversions of the old clicks stop arriving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from stream.distributions import gamma_cdf, gamma_quantile, gamma_ratio_below
from stream.nowcast import RateEstimate

DEFAULT_SPIKE_FACTOR: Final = 1.3
DEFAULT_SPIKE_CONFIDENCE: Final = 0.98
DEFAULT_SPIKE_WINDOW_HOURS: Final = 12
DEFAULT_SPIKE_HOLD: Final = 2
DEFAULT_BASELINE_HOURS: Final = 7 * 24


@dataclass(frozen=True, slots=True)
class CpaPosterior:
    """CPA = cost_per_unit / theta, theta ~ Gamma(shape, rate)."""

    shape: float
    rate: float
    cost_per_unit: float

    @classmethod
    def of(cls, estimate: RateEstimate) -> CpaPosterior | None:
        """None when the window had no exposure (nothing bought, nothing to judge)."""
        if estimate.exposure <= 0:
            return None
        return cls(estimate.shape, estimate.rate, estimate.cost / estimate.exposure)

    @property
    def cpa(self) -> float:
        """The CPA at the posterior mean rate: spend over the expected eventual conversions."""
        return self.cost_per_unit * self.rate / self.shape

    def interval(self, level: float = 0.9) -> tuple[float, float]:
        tail = (1.0 - level) / 2.0
        high_rate = gamma_quantile(1.0 - tail, self.shape, self.rate)
        low_rate = gamma_quantile(tail, self.shape, self.rate)
        return self.cost_per_unit / high_rate, (
            self.cost_per_unit / low_rate if low_rate > 0 else math.inf
        )

    def probability_above(self, target: float) -> float:
        """P(CPA > target)."""
        if target <= 0:
            raise ValueError("target CPA must be positive")
        return gamma_cdf(self.cost_per_unit / target, self.shape, self.rate)

    def probability_above_other(self, other: CpaPosterior, factor: float = 1.0) -> float:
        """P(this CPA > factor x the other's CPA), the two independent."""
        if factor <= 0:
            raise ValueError("factor must be positive")
        if self.cost_per_unit <= 0:
            return 0.0
        ratio = self.cost_per_unit / (factor * other.cost_per_unit) if other.cost_per_unit else 0.0
        return gamma_ratio_below(ratio, (self.shape, self.rate), (other.shape, other.rate))


@dataclass(frozen=True, slots=True)
class SpikeRule:
    """Fire when P(CPA of the last `window_hours` > `factor` x its baseline) >= `confidence`
    at `hold` evaluations in a row, with at least `min_spend` spent in the window.

    The false-positive rate the defaults are held to: under 10 % of quiet channel-weeks,
    evaluated hourly (tests/unit/test_stream_detection.py). Measured by bench/detection.py:
    about 6 % at 3.75 conversions an hour, under 1 % at ten times that volume.
    """

    factor: float = DEFAULT_SPIKE_FACTOR
    confidence: float = DEFAULT_SPIKE_CONFIDENCE
    window_hours: int = DEFAULT_SPIKE_WINDOW_HOURS
    baseline_hours: int = DEFAULT_BASELINE_HOURS
    hold: int = DEFAULT_SPIKE_HOLD
    min_spend: float = 0.0

    def __post_init__(self) -> None:
        if self.factor <= 1.0:
            raise ValueError("spike factor must be above 1")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("spike confidence must be between 0.5 and 1")
        if self.window_hours < 1 or self.baseline_hours < 1 or self.hold < 1:
            raise ValueError("spike window, baseline and hold must be at least 1")

    def probability(self, window: RateEstimate, baseline: RateEstimate) -> float:
        """P(spike) for one evaluation; 0 below the minimum spend or without a baseline."""
        current, usual = CpaPosterior.of(window), CpaPosterior.of(baseline)
        if current is None or usual is None or window.cost < max(self.min_spend, 1e-12):
            return 0.0
        if baseline.seen == 0:
            return 0.0
        return current.probability_above_other(usual, self.factor)


@dataclass(slots=True)
class SpikeAlarm:
    """The 'for a while' of the rule: counts evaluations in a row over the confidence."""

    rule: SpikeRule
    in_a_row: int = 0

    def update(self, probability: float) -> bool:
        """Feed one evaluation; True while the alarm fires."""
        self.in_a_row = self.in_a_row + 1 if probability >= self.rule.confidence else 0
        return self.in_a_row >= self.rule.hold
