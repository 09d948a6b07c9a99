"""Click-to-conversion delay per channel, learned from the conversions that carry a click id.

The model: a histogram of delays over log-spaced bins (5 minutes to 7 days; a later conversion
counts in the last bin) with a Dirichlet prior. Why this and not a log-normal or Weibull fit:

- Real delay distributions are lumpy (same-session buyers within minutes, a second peak the
  next evening, a long tail of people who come back after payday); a histogram follows what the
  data say where a two-parameter curve would average the peaks away.
- Recent clicks have had time to show only their short delays (right truncation). Under a
  Dirichlet the *reverse hazards* g_j = P(delay in bin j | delay < end of bin j) are independent
  Beta variables, and a cohort of clicks whose youngest click is older than the end of bin j
  observes bin j and all before it completely. So the posterior is exact and closed-form:
  g_j ~ Beta(s p_j + n_j, s P_j + N_j), with p_j the prior bin probabilities, P_j their sum
  below bin j, s the prior strength (in conversions), n_j the conversions in bin j and N_j those
  below it, counted over the cohorts old enough to have completed bin j. This is the Bayesian
  form of the chain-ladder estimate that insurers and epidemiologists use for the same problem.
- With no data the prior alone gives a sensible curve (median 4 hours); each bin moves to the
  data as soon as some tens of conversions have completed it.

Time is in hours, as floats. Cohorts are whole Unix hours of clicks (the hour buckets).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

DEFAULT_EDGES: Final[tuple[float, ...]] = (
    0.0,
    5 / 60,
    15 / 60,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
    64.0,
    168.0,
)
"""Bin edges in hours; bin j holds delays in [edges[j], edges[j+1]), the last one everything
from 64 hours on (the longest delay the nowcast waits for is the last edge, 7 days)."""
DELAY_EDGE_MINUTES: Final[tuple[int, ...]] = tuple(round(edge * 60) for edge in DEFAULT_EDGES)
"""The same edges in whole minutes: the worker measures a delay between two minute buckets, and
the apply-batch script (`stream.lua`) and the reference fold bin it with these."""
DEFAULT_LOOKBACK_HOURS: Final = 14 * 24
DEFAULT_PRIOR_MEDIAN_HOURS: Final = 4.0
DEFAULT_PRIOR_SIGMA: Final = 1.5
DEFAULT_PRIOR_STRENGTH: Final = 10.0


@dataclass(frozen=True, slots=True)
class Cohort:
    """The clicks of one channel in one hour, and their conversions seen so far.

    `exposure`: what conversions come from, clicks (or, for a channel whose conversions carry no
    click id, its spend: then `seen` holds everything in bin 0 and the lag is `immediate`).
    `cost`: the spend of the hour, in the reporting currency. `seen[j]`: conversions of these
    clicks counted so far with a delay in bin j.
    """

    hour: float
    exposure: float
    cost: float
    seen: tuple[int, ...]
    width: float = 1.0
    """Hours the cohort's clicks span from `hour` on (1/60: a minute bucket's clicks)."""
    conversions: int = field(init=False, repr=False, compare=False)
    """The sum of `seen`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conversions", sum(self.seen))


def empty_seen(edges: Sequence[float] = DEFAULT_EDGES) -> tuple[int, ...]:
    return (0,) * (len(edges) - 1)


def delay_bin(hours: float, edges: Sequence[float] = DEFAULT_EDGES) -> int:
    """The bin of a delay; negative delays (clock skew) in the first, long ones in the last."""
    for index in range(len(edges) - 2, 0, -1):
        if hours >= edges[index]:
            return index
    return 0


def delay_bin_minutes(minutes: int, edges: Sequence[int] = DELAY_EDGE_MINUTES) -> int:
    """The bin of a delay in whole minutes, as `delay_bin` (the worker's integer twin of it).

    >>> delay_bin_minutes(4), delay_bin_minutes(5), delay_bin_minutes(-3), delay_bin_minutes(10**6)
    (0, 1, 0, 10)
    """
    for index in range(len(edges) - 2, 0, -1):
        if minutes >= edges[index]:
            return index
    return 0


def lognormal_prior(
    median_hours: float = DEFAULT_PRIOR_MEDIAN_HOURS,
    sigma: float = DEFAULT_PRIOR_SIGMA,
    edges: Sequence[float] = DEFAULT_EDGES,
) -> tuple[float, ...]:
    """Bin probabilities of a log-normal delay (the mass past the last edge in the last bin)."""
    if median_hours <= 0 or sigma <= 0:
        raise ValueError("prior median and sigma must be positive")

    def cdf(hours: float) -> float:
        if hours <= 0:
            return 0.0
        return 0.5 * math.erfc(-math.log(hours / median_hours) / (sigma * math.sqrt(2)))

    bins = len(edges) - 1
    return tuple((1.0 if j == bins - 1 else cdf(edges[j + 1])) - cdf(edges[j]) for j in range(bins))


@dataclass(frozen=True, slots=True)
class LagModel:
    """The delay distribution as its CDF at the bin edges (0 at 0, 1 at the last edge)."""

    edges: tuple[float, ...]
    cdf_at_edges: tuple[float, ...]
    conversions: int
    """Conversions the data part was learned from (completed bins only)."""
    _integrals: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _maturities: dict[tuple[float, float], float] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    @classmethod
    def immediate(cls, edges: Sequence[float] = DEFAULT_EDGES) -> LagModel:
        """Every conversion counted when it happens: channels without click ids (coupons)."""
        return cls(tuple(edges), (0.0,) + (1.0,) * (len(edges) - 1), 0)

    def cdf(self, hours: float) -> float:
        """P(delay <= hours): linear in the first bin, linear in log(hours) in the others."""
        edges, values = self.edges, self.cdf_at_edges
        if values[1] >= 1.0 or hours >= edges[-1]:
            return 1.0
        if hours <= 0:
            return 0.0
        if hours < edges[1]:
            return values[1] * hours / edges[1]
        j = 1
        while hours >= edges[j + 1]:
            j += 1
        fraction = math.log(hours / edges[j]) / math.log(edges[j + 1] / edges[j])
        return values[j] + (values[j + 1] - values[j]) * fraction

    def maturity(self, youngest_age: float, oldest_age: float) -> float:
        """Mean P(delay <= age) over clicks spread evenly between the two ages (hours)."""
        key = (youngest_age, oldest_age)
        found = self._maturities.get(key)
        if found is not None:
            return found
        if oldest_age - youngest_age <= 1e-9:
            value = self.cdf(youngest_age)
        else:
            value = (self.integral(oldest_age) - self.integral(youngest_age)) / (
                oldest_age - youngest_age
            )
        # Snapshots at whole hours ask for the same ages again and again; bounded all the same.
        if len(self._maturities) < 4096:
            self._maturities[key] = value
        return value

    def integral(self, hours: float) -> float:
        """The integral of the CDF from 0 to `hours`, exact for the interpolation of `cdf`."""
        edges, values = self.edges, self.cdf_at_edges
        if hours <= 0:
            return 0.0
        if values[1] >= 1.0:
            return hours
        if hours >= edges[-1]:
            return self._integrals[-1] + hours - edges[-1]
        if hours < edges[1]:
            return values[1] * hours * hours / (2 * edges[1])
        j = bisect.bisect_right(edges, hours) - 1
        return self._integrals[j] + self._bin_integral(j, hours)

    def _bin_integral(self, j: int, end: float) -> float:
        """The CDF's integral from edges[j] to `end` inside bin j >= 1 (linear in log time)."""
        start, values = self.edges[j], self.cdf_at_edges
        slope = (values[j + 1] - values[j]) / math.log(self.edges[j + 1] / start)
        return values[j] * (end - start) + slope * (end * math.log(end / start) - end + start)

    def __post_init__(self) -> None:
        edges = self.edges
        if len(self.cdf_at_edges) != len(edges) or len(edges) < 3:
            raise ValueError("a lag model needs at least 3 edges and the CDF at each")
        integrals = [0.0, self.cdf_at_edges[1] * edges[1] / 2]
        for j in range(1, len(edges) - 1):
            integrals.append(integrals[-1] + self._bin_integral(j, edges[j + 1]))
        object.__setattr__(self, "_integrals", tuple(integrals))

    def median(self) -> float:
        low, high = 0.0, self.edges[-1]
        for _ in range(60):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if self.cdf(middle) < 0.5 else (low, middle)
        return 0.5 * (low + high)


def cohort_ages(cohort_hour: int, now: float) -> tuple[float, float]:
    """Youngest and oldest age (hours) of a cohort's clicks at `now` (Unix hours, fractional)."""
    return max(0.0, now - (cohort_hour + 1)), max(0.0, now - cohort_hour)


def learn_lag(
    cohorts: Iterable[Cohort],
    now: float,
    *,
    prior: Sequence[float] | None = None,
    strength: float = DEFAULT_PRIOR_STRENGTH,
    lookback_hours: float = DEFAULT_LOOKBACK_HOURS,
    edges: Sequence[float] = DEFAULT_EDGES,
) -> LagModel:
    """The posterior-mean delay distribution from the cohorts of the last `lookback_hours`.

    A cohort contributes to bin j only once its youngest click is older than the bin's end, so
    young cohorts (which have shown only their short delays) do not bias the curve toward
    short delays.

    >>> round(learn_lag([], now=0.0).median(), 3)  # the prior alone
    4.0
    """
    if strength <= 0:
        raise ValueError("prior strength must be positive")
    bins = len(edges) - 1
    probabilities = tuple(prior) if prior is not None else lognormal_prior(edges=edges)
    if len(probabilities) != bins:
        raise ValueError(f"prior has {len(probabilities)} bins, the edges make {bins}")
    in_bin = [0.0] * bins
    below = [0.0] * bins
    used = 0
    for cohort in cohorts:
        youngest = max(0.0, now - (cohort.hour + cohort.width))
        if now - cohort.hour > lookback_hours or len(cohort.seen) != bins:
            continue
        cumulative = 0
        for j in range(bins):
            if edges[j + 1] > youngest:
                break
            in_bin[j] += cohort.seen[j]
            below[j] += cumulative
            cumulative += cohort.seen[j]
        used += cumulative
    prior_below = 0.0
    cdf = [0.0] * (bins + 1)
    cdf[bins] = 1.0
    hazards = [1.0] * bins
    for j in range(bins):
        if j > 0:
            alpha = strength * probabilities[j] + in_bin[j]
            beta = strength * prior_below + below[j]
            hazards[j] = alpha / (alpha + beta) if alpha + beta > 0 else 0.0
        prior_below += probabilities[j]
    for j in range(bins - 1, 0, -1):
        cdf[j] = cdf[j + 1] * (1.0 - hazards[j])
    return LagModel(tuple(edges), tuple(cdf), used)
