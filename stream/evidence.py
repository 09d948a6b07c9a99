"""Each channel's evidence for the advice, from the hour buckets the store keeps today.

Pure: the store reads the hour buckets (`KpiStore.hour_buckets`), this turns them into cohorts
and `advice.ChannelEvidence`. Today's buckets count a conversion in the hour it arrived, not in
the hour of its click, and keep no delay: until the worker records both (per click hour, the
conversions by delay bin of `stream.lag`), the cohorts here carry the conversions of the hour
in bin 0 and the lag is `LagModel.immediate()`, so the figures are those counted, with no
nowcast of the late ones. What the worker would record for the real nowcast: the click's
minute beside its channel in the click registry, and for each conversion with a click id a
count in the hour bucket of its click, per delay bin (`stream.lag.delay_bin`, e.g. a field
``{channel}:d{bin}``); then `channel_cohorts` fills `seen` from those fields and
`stream.lag.learn_lag` learns each channel's delay from them. Exposure is clicks for a channel
that has any, else its spend (coupon and call channels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from stream.advice import ChannelEvidence
from stream.kpi import MICROS, Counters
from stream.lag import DEFAULT_EDGES, Cohort, LagModel
from stream.nowcast import baseline_prior, estimate_rate

WINDOW_HOURS: Final = 24
BASELINE_HOURS: Final = 7 * 24


def channel_cohorts(hours: Mapping[int, Mapping[str, Counters]], channel: str) -> list[Cohort]:
    """One cohort per hour in which the channel counted anything, oldest first."""
    found = [(hour, counters[channel]) for hour, counters in hours.items() if channel in counters]
    by_clicks = any(counters.clicks > 0 for _, counters in found)
    rest = (0,) * (len(DEFAULT_EDGES) - 2)
    return [
        Cohort(
            hour=hour,
            exposure=float(counters.clicks if by_clicks else counters.spend_micros / MICROS),
            cost=counters.spend_micros / MICROS,
            seen=(counters.conversions, *rest),
        )
        for hour, counters in sorted(found)
    ]


def evidence_from_hours(
    hours: Mapping[int, Mapping[str, Counters]],
    now_hour: int,
    *,
    window_hours: int = WINDOW_HOURS,
    baseline_hours: int = BASELINE_HOURS,
) -> list[ChannelEvidence]:
    """The evidence of every channel seen in `hours` (Unix hour -> channel -> Counters).

    The window is the `window_hours` whole hours before `now_hour` (the hour still filling is
    left out), the baseline the `baseline_hours` before the window.
    """
    lag = LagModel.immediate()
    channels = sorted({channel for counters in hours.values() for channel in counters})
    result = []
    for channel in channels:
        cohorts = channel_cohorts(hours, channel)
        start = now_hour - window_hours
        window = [c for c in cohorts if start <= c.hour < now_hour]
        history = [c for c in cohorts if start - baseline_hours <= c.hour < start]
        usual = estimate_rate(history, now_hour, lag) if history else None
        current = estimate_rate(window, now_hour, lag, baseline_prior(usual))
        result.append(ChannelEvidence(channel, current, usual))
    return result
