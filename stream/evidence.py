"""Each channel's evidence for the advice, from the hour buckets: cohorts, lag and nowcast.

Pure: the store reads the hour buckets (`KpiStore.lag_buckets`: the counters and the delay bins
of each hour), this turns them into cohorts and `advice.ChannelEvidence`.

A channel whose conversions come through click ids has delay bins (`stream.keys`, "Delays"):
each hour bucket counts the conversions *of its clicks* per delay bin. Its cohorts are those
hours, exposure their clicks and `seen` their bins; its lag is learned from the cohorts of the
last `lookback_hours` (`stream.lag.learn_lag`, 14 days by default, `ADPULSE_LAG_LOOKBACK`), and
the nowcast adds the conversions its young clicks will still bring. A channel without delay bins
(coupons, calls, conversions that name their channel) counts a conversion in the hour it
arrived: its cohorts carry them in bin 0, its lag is `LagModel.immediate()`, and its exposure is
its clicks when it has any, else its spend. Conversions of a click-tracked channel that carry no
click id are not in its delay bins, so its nowcast reads its click-tracked conversions only
(README, "Budget advice").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from stream.advice import ChannelEvidence, Recommendation, advise
from stream.advice_settings import AdviceOptions, Targets
from stream.kpi import MICROS, Counters
from stream.lag import DEFAULT_EDGES, DEFAULT_LOOKBACK_HOURS, Cohort, LagModel, learn_lag
from stream.nowcast import baseline_prior, estimate_rate

if TYPE_CHECKING:
    from stream.store import KpiStore

WINDOW_HOURS: Final = 24
BASELINE_HOURS: Final = 7 * 24


DelayBuckets = Mapping[int, Mapping[str, tuple[int, ...]]]
"""Unix hour -> channel -> its clicks' conversions per delay bin (`kpi.delays_by_channel`)."""


@dataclass(frozen=True, slots=True)
class HourReading:
    """What the advice reads from the store: the hour buckets, their delay bins, and when."""

    now: float
    """Unix hours, fractional: the hour still filling is `int(now)`."""
    hours: Mapping[int, Mapping[str, Counters]]
    delays: DelayBuckets = field(default_factory=dict)
    minutes: Mapping[int, Mapping[str, Counters]] = field(default_factory=dict)
    """Minute buckets (Unix minute -> channel -> Counters), for a spike rule read in minutes."""
    minute_delays: DelayBuckets = field(default_factory=dict)

    @property
    def now_hour(self) -> int:
        return int(self.now)


def reading_hours(lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> int:
    """How many whole hours before the current one the advice reads."""
    return max(WINDOW_HOURS + BASELINE_HOURS, lookback_hours)


async def read_reading(
    store: KpiStore,
    now_seconds: float,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    minutes: int = 0,
) -> HourReading:
    """The hour buckets the advice needs at `now_seconds`, and with `minutes` the minute
    buckets of that many whole minutes before the current one (a spike rule read in minutes)."""
    now = now_seconds / 3600
    end = int(now)
    bins = len(DEFAULT_EDGES) - 1
    hours, delays = await store.lag_buckets(end - reading_hours(lookback_hours), end, bins)
    by_minute: dict[int, dict[str, Counters]] = {}
    minute_delays: dict[int, dict[str, tuple[int, ...]]] = {}
    if minutes:
        end_minute = int(now_seconds // 60)
        by_minute, minute_delays = await store.lag_buckets(
            end_minute - minutes, end_minute, bins, tier="m"
        )
    return HourReading(now, hours, delays, by_minute, minute_delays)


def channel_cohorts(
    hours: Mapping[int, Mapping[str, Counters]],
    channel: str,
    delays: DelayBuckets | None = None,
    unit: float = 1.0,
) -> list[Cohort]:
    """One cohort per hour in which the channel counted anything, oldest first; with `unit`
    1/60, `hours` and `delays` are minute buckets and the cohorts minutes (`hour` in hours)."""
    bins = len(DEFAULT_EDGES) - 1
    tracked = {
        hour: by_channel[channel]
        for hour, by_channel in (delays or {}).items()
        if channel in by_channel and len(by_channel[channel]) == bins
    }
    found = [(hour, counters[channel]) for hour, counters in hours.items() if channel in counters]
    if tracked:
        none = (0,) * bins
        return [
            Cohort(
                hour=hour * unit,
                exposure=float(counters.clicks),
                cost=counters.spend_micros / MICROS,
                seen=tracked.get(hour, none),
                width=unit,
            )
            for hour, counters in sorted(found)
        ]
    by_clicks = any(counters.clicks > 0 for _, counters in found)
    rest = (0,) * (bins - 1)
    return [
        Cohort(
            hour=hour * unit,
            exposure=float(counters.clicks if by_clicks else counters.spend_micros / MICROS),
            cost=counters.spend_micros / MICROS,
            seen=(counters.conversions, *rest),
            width=unit,
        )
        for hour, counters in sorted(found)
    ]


def evidence_from_hours(
    hours: Mapping[int, Mapping[str, Counters]],
    now_hour: float,
    *,
    window_hours: int = WINDOW_HOURS,
    baseline_hours: int = BASELINE_HOURS,
    delays: DelayBuckets | None = None,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    target_cpa: Targets | None = None,
    target_roas: Targets | None = None,
) -> list[ChannelEvidence]:
    """The evidence of every channel seen in `hours` (Unix hour -> channel -> Counters).

    The window is the `window_hours` whole hours before the current hour `int(now_hour)` (the
    hour still filling is left out), the baseline the `baseline_hours` before the window.
    `now_hour` may be fractional (the time of the reading): the ages of the clicks, and so how
    many of their conversions are still to come, are measured from it.
    """
    current_hour = int(now_hour)
    channels = sorted({channel for counters in hours.values() for channel in counters})
    result = []
    for channel in channels:
        cohorts = channel_cohorts(hours, channel, delays)
        tracked = delays is not None and any(
            channel in by_channel for by_channel in delays.values()
        )
        lag = (
            learn_lag(cohorts, now_hour, lookback_hours=lookback_hours)
            if tracked
            else LagModel.immediate()
        )
        start = current_hour - window_hours
        window = [c for c in cohorts if start <= c.hour < current_hour]
        history = [c for c in cohorts if start - baseline_hours <= c.hour < start]
        usual = estimate_rate(history, now_hour, lag) if history else None
        current = estimate_rate(window, now_hour, lag, baseline_prior(usual))
        target = _target(hours, channel, range(start, current_hour), target_cpa, target_roas)
        result.append(ChannelEvidence(channel, current, usual, target))
    return result


def _target(
    hours: Mapping[int, Mapping[str, Counters]],
    channel: str,
    window: range,
    target_cpa: Targets | None,
    target_roas: Targets | None,
) -> float | None:
    """The channel's target CPA: its CPA target, or its window's AOV over its ROAS target
    (revenue = conversions x AOV, so ROAS >= r is CPA <= AOV / r), the lower of the two."""
    found = [] if target_cpa is None else [target_cpa.of(channel)]
    roas = None if target_roas is None else target_roas.of(channel)
    if roas is not None:
        sums = sum(
            (hours[hour][channel] for hour in window if channel in hours.get(hour, {})), Counters()
        )
        if sums.conversions > 0 and sums.revenue_micros > 0:
            found.append(sums.revenue_micros / MICROS / sums.conversions / roas)
    known = [value for value in found if value is not None]
    return min(known) if known else None


def minute_spike_evidence(
    reading: HourReading, window_minutes: int, baseline_minutes: int
) -> list[ChannelEvidence]:
    """Window and baseline evidence from the reading's minute buckets, for a spike rule read in
    minutes (the dev stack's, ADPULSE_SPIKE_WINDOW): the window is the `window_minutes` whole
    minutes before the current one, the baseline the `baseline_minutes` before it.

    Conversions count as they arrive (`LagModel.immediate()`), whether or not an hour has
    turned: read in minutes, the rule watches the simulator, whose conversions follow their
    clicks by seconds. A lag learned from the hour buckets is the prior's (4 hours median)
    until those hours are days old, and under it the spiked window's conversions looked many
    times too many: the alert never fired when the hour turned in a run's first 3 minutes
    (bench/README.md, "The dev stack's spike alert")."""
    now_minute = int(reading.now * 60)
    start = now_minute - window_minutes
    channels = sorted({channel for counters in reading.minutes.values() for channel in counters})
    lag = LagModel.immediate()
    result = []
    for channel in channels:
        window, history = [], []
        for cohort in channel_cohorts(reading.minutes, channel, reading.minute_delays, 1 / 60):
            minute = round(cohort.hour * 60)
            if start <= minute < now_minute:
                window.append(cohort)
            elif start - baseline_minutes <= minute < start:
                history.append(cohort)
        usual = estimate_rate(history, reading.now, lag) if history else None
        current = estimate_rate(window, reading.now, lag, baseline_prior(usual))
        result.append(ChannelEvidence(channel, current, usual))
    return result


def recommend(reading: HourReading, options: AdviceOptions) -> list[Recommendation]:
    """The advice at the time of `reading`: `adpulse advise`, `GET /v1/advice` and the gauge."""
    return advise(
        evidence_from_hours(
            reading.hours,
            reading.now,
            delays=reading.delays,
            lookback_hours=options.lookback_hours,
            target_cpa=options.target_cpa,
            target_roas=options.target_roas,
        ),
        options.rules,
    )
