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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream.lag import DEFAULT_EDGES, Cohort

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
        which = np.clip(np.searchsorted(self.edges, channel.delay[seen], side="right") - 1, 0, bins - 1)
        flat = (channel.cohort[seen] - first_hour) * bins + which
        counts = np.bincount(flat, minlength=count * bins).reshape(count, bins)
        cost_per_click = channel.plan.cost_per_click
        return [
            Cohort(
                hour=first_hour + i,
                exposure=float(channel.clicks[first_hour + i]),
                cost=float(channel.clicks[first_hour + i]) * cost_per_click,
                seen=tuple(int(n) for n in counts[i]),
            )
            for i in range(count)
        ]

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
