"""A marketing simulator with known truth, for the statistics tests and bench/detection.py.

Each channel gets Poisson clicks per hour at a cost per click, converts each click with a known
probability, and each conversion arrives after a log-normal delay. The clock is the simulator's
(hour 0 onward), never wall time. From it: the cohorts the store would hold at any moment
(clicks, spend and conversions seen so far by delay bin, `stream.lag.Cohort`), the eventual
truth of every cohort, and the conversions per hour of arrival (what today's counters hold,
for the old threshold rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from stream.advice import AdviceRules, ChannelEvidence, advise
from stream.lag import DEFAULT_EDGES, Cohort, LagModel, learn_lag
from stream.nowcast import baseline_prior, estimate_rate
from stream.posterior import SpikeAlarm, SpikeRule

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    name: str
    clicks_per_hour: float
    cost_per_click: float
    conversion_rate: float
    lag_median_hours: float = 3.0
    lag_sigma: float = 1.2
    change_hour: int | None = None
    """From this hour on the CPA is multiplied by `cpa_factor` (the conversion rate divided)."""
    cpa_factor: float = 2.0

    @property
    def cpa(self) -> float:
        return self.cost_per_click / self.conversion_rate


@dataclass(frozen=True, slots=True)
class SimulatedChannel:
    plan: ChannelPlan
    clicks: Ints
    """Clicks per hour of the simulation."""
    cohort: Ints
    """Per conversion: the hour of its click."""
    delay: Floats
    arrival: Floats
    """Per conversion: its time (hours since the start)."""


class Simulation:
    """`hours` of traffic for `plans`, drawn from `seed`."""

    def __init__(self, plans: Sequence[ChannelPlan], hours: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.hours = hours
        self.edges = np.asarray(DEFAULT_EDGES)
        self.channels: dict[str, SimulatedChannel] = {}
        for plan in plans:
            clicks = rng.poisson(plan.clicks_per_hour, hours).astype(np.int64)
            rate = np.full(hours, plan.conversion_rate)
            if plan.change_hour is not None:
                rate[plan.change_hour :] /= plan.cpa_factor
            per_hour = rng.binomial(clicks, rate)
            cohort = np.repeat(np.arange(hours, dtype=np.int64), per_hour)
            delay = rng.lognormal(np.log(plan.lag_median_hours), plan.lag_sigma, cohort.size)
            arrival = cohort + rng.random(cohort.size) + delay
            self.channels[plan.name] = SimulatedChannel(plan, clicks, cohort, delay, arrival)

    def cohorts(self, name: str, now: int, first_hour: int) -> list[Cohort]:
        """The store's view at hour `now` (a whole hour) of the cohorts first_hour .. now - 1."""
        channel = self.channels[name]
        first_hour = max(0, first_hour)
        count = now - first_hour
        if count <= 0:
            return []
        bins = len(self.edges) - 1
        seen = (channel.arrival <= now) & (channel.cohort >= first_hour) & (channel.cohort < now)
        which = np.clip(
            np.searchsorted(self.edges, channel.delay[seen], side="right") - 1, 0, bins - 1
        )
        flat = (channel.cohort[seen] - first_hour) * bins + which
        counts = np.bincount(flat, minlength=count * bins).reshape(count, bins)
        cost_per_click = channel.plan.cost_per_click
        clicks = channel.clicks[first_hour:now].tolist()
        return [
            Cohort(first_hour + i, float(n), n * cost_per_click, tuple(row))
            for i, (n, row) in enumerate(zip(clicks, counts.tolist(), strict=True))
        ]

    def view(self, name: str) -> StoreView:
        return StoreView(self, name)

    def eventual(self, name: str, first_hour: int, end_hour: int) -> int:
        """Every conversion the clicks of hours first_hour .. end_hour - 1 will ever bring."""
        cohort = self.channels[name].cohort
        return int(np.count_nonzero((cohort >= first_hour) & (cohort < end_hour)))

    def arrivals_per_hour(self, name: str) -> Ints:
        """Conversions counted per hour of their arrival: today's hour buckets."""
        arrival = self.channels[name].arrival
        inside = arrival[arrival < self.hours]
        return np.bincount(inside.astype(np.int64), minlength=self.hours).astype(np.int64)

    def spend_per_hour(self, name: str) -> Floats:
        channel = self.channels[name]
        return channel.clicks.astype(np.float64) * channel.plan.cost_per_click


class StoreView:
    """`Simulation.cohorts` for a clock that only moves forward, updated by the new arrivals
    only (a week evaluated hourly would otherwise rebuild every cohort every hour)."""

    def __init__(self, sim: Simulation, name: str) -> None:
        channel = sim.channels[name]
        order = np.argsort(channel.arrival, kind="stable")
        bins = len(sim.edges) - 1
        self._arrival = channel.arrival[order]
        self._cohort = channel.cohort[order]
        self._bin = np.clip(
            np.searchsorted(sim.edges, channel.delay[order], side="right") - 1, 0, bins - 1
        )
        self._counts = np.zeros((sim.hours, bins), dtype=np.int64)
        self._clicks = channel.clicks.tolist()
        self._cost_per_click = channel.plan.cost_per_click
        self._done = 0
        self._now = 0
        self._cache: dict[int, Cohort] = {}

    def cohorts(self, now: int, first_hour: int) -> list[Cohort]:
        if now < self._now:
            raise ValueError("a store view only moves forward")
        self._now = now
        end = int(np.searchsorted(self._arrival, now, side="right"))
        for i in range(self._done, end):
            cohort = int(self._cohort[i])
            self._counts[cohort, self._bin[i]] += 1
            self._cache.pop(cohort, None)
        self._done = end
        result = []
        for hour in range(max(0, first_hour), now):
            found = self._cache.get(hour)
            if found is None:
                clicks = self._clicks[hour]
                found = Cohort(
                    hour,
                    float(clicks),
                    clicks * self._cost_per_click,
                    tuple(self._counts[hour].tolist()),
                )
                self._cache[hour] = found
            result.append(found)
        return result


WEEK: Final = 7 * 24

STEADY: Final = (
    ChannelPlan("paid_search", clicks_per_hour=200, cost_per_click=0.45, conversion_rate=0.02),
    ChannelPlan("paid_social", clicks_per_hour=250, cost_per_click=0.36, conversion_rate=0.015),
    ChannelPlan("display", clicks_per_hour=300, cost_per_click=0.192, conversion_rate=0.008),
    ChannelPlan("email", clicks_per_hour=100, cost_per_click=0.115, conversion_rate=0.005),
)
"""CPAs 22.50, 24.00, 24.00 and 23.00: within 7 % of each other, so no advice is due; 4, 3.75,
2.4 and 0.5 conversions an hour (email too few for advice)."""


def scenario(
    change_hour: int | None, volume: float = 1.0, channel: str = "paid_social"
) -> tuple[ChannelPlan, ...]:
    """`STEADY` with `volume` x the clicks, and `channel`'s CPA doubling at `change_hour`."""
    return tuple(
        replace(
            plan,
            clicks_per_hour=plan.clicks_per_hour * volume,
            change_hour=change_hour if plan.name == channel else None,
        )
        for plan in STEADY
    )


@dataclass(slots=True)
class WeekOutcome:
    """Per channel, the hours (of the evaluated week, from 0) at which each signal fired."""

    spike: dict[str, list[int]] = field(default_factory=dict)
    threshold: dict[str, list[int]] = field(default_factory=dict)
    advice: dict[str, list[int]] = field(default_factory=dict)
    """Hours at which the advice took budget from the channel."""
    gains: dict[str, list[int]] = field(default_factory=dict)
    """Hours at which the advice gave the channel budget."""
    shifted: dict[str, float] = field(default_factory=dict)
    """Per channel, the sum over the hours of the budget the advice would add (or take)."""


def old_threshold_fires(sim: Simulation, name: str, hour: int) -> bool:
    """The old rule at the end of `hour`, on the counters per hour of arrival: CPA over the
    hour above twice the same hour a day earlier, with at least 10 conversions in the hour."""
    arrivals = sim.arrivals_per_hour(name)
    spend = sim.spend_per_hour(name)
    now, before = int(arrivals[hour]), int(arrivals[hour - 24])
    if now < 10 or before == 0:
        return False
    return bool(spend[hour] / now > 2 * spend[hour - 24] / before)


def run_week(
    sim: Simulation,
    rule: SpikeRule,
    rules: AdviceRules,
    *,
    advice_every: int = 1,
    hours: int = WEEK,
) -> WeekOutcome:
    """Evaluate every hour of the simulation's last week (the week before is history), or of
    its first `hours`."""
    outcome = WeekOutcome()
    start = sim.hours - WEEK
    window = rule.window_hours
    lags: dict[str, LagModel] = {}
    alarms = {name: SpikeAlarm(rule) for name in sim.channels}
    views = {name: sim.view(name) for name in sim.channels}
    for name in sim.channels:
        for series in (outcome.spike, outcome.threshold, outcome.advice, outcome.gains):
            series[name] = []
    for now in range(start + 1, start + hours + 1):
        evidence = []
        for name in sim.channels:
            first = now - rule.baseline_hours - max(window, 24)
            cohorts = views[name].cohorts(now, first)
            if name not in lags or now % 24 == 0:
                lags[name] = learn_lag(cohorts, now)
            lag = lags[name]
            baseline = estimate_rate(
                [
                    c
                    for c in cohorts
                    if c.hour < now - window and c.hour >= now - window - rule.baseline_hours
                ],
                now,
                lag,
            )
            recent = estimate_rate(
                [c for c in cohorts if c.hour >= now - window], now, lag, baseline_prior(baseline)
            )
            if alarms[name].update(rule.probability(recent, baseline)):
                outcome.spike[name].append(now - start - 1)
            if old_threshold_fires(sim, name, now - 1):
                outcome.threshold[name].append(now - start - 1)
            if (now - start) % advice_every == 0:
                day = [c for c in cohorts if c.hour >= now - 24]
                history = [
                    c for c in cohorts if now - 24 - rule.baseline_hours <= c.hour < now - 24
                ]
                usual = estimate_rate(history, now, lag)
                evidence.append(
                    ChannelEvidence(
                        name, estimate_rate(day, now, lag, baseline_prior(usual)), usual
                    )
                )
        for advice in advise(evidence, rules):
            outcome.shifted[advice.channel] = (
                outcome.shifted.get(advice.channel, 0.0) + advice.next_budget - advice.budget
            )
            if advice.action == "decrease":
                outcome.advice[advice.channel].append(now - start - 1)
            elif advice.action == "increase":
                outcome.gains[advice.channel].append(now - start - 1)
    return outcome
