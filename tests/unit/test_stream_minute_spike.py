"""The CPA-spike rule read in minutes (the dev stack's) is as sure after the hour turns."""

from __future__ import annotations

from stream.evidence import HourReading, minute_spike_evidence
from stream.kpi import MICROS, Counters
from stream.lag import DEFAULT_EDGES
from stream.posterior import SpikeRule

BINS = len(DEFAULT_EDGES) - 1
HOUR = 490_000
"""The hour that has just turned: the window is its first two minutes."""


def reading(*, hour_buckets: bool) -> HourReading:
    """An hour of paid_search at 10 a click and 20 conversions a minute, then two minutes at
    three times the cost; conversions come within seconds (bin 0), as the simulator's do.
    `hour_buckets`: the store also holds the hour before as a whole hour, as it does once the
    hour has turned."""
    minutes: dict[int, dict[str, Counters]] = {}
    delays: dict[int, dict[str, tuple[int, ...]]] = {}
    for minute in range(HOUR * 60 - 60, HOUR * 60 + 2):
        cost = 30 if minute >= HOUR * 60 else 10
        minutes[minute] = {
            "paid_search": Counters(clicks=100, conversions=20, spend_micros=100 * cost * MICROS)
        }
        delays[minute] = {"paid_search": (20,) + (0,) * (BINS - 1)}
    hours: dict[int, dict[str, Counters]] = {}
    hour_delays: dict[int, dict[str, tuple[int, ...]]] = {}
    if hour_buckets:
        hours[HOUR - 1] = {
            "paid_search": Counters(clicks=6000, conversions=1200, spend_micros=60_000 * MICROS)
        }
        hour_delays[HOUR - 1] = {"paid_search": (1200,) + (0,) * (BINS - 1)}
    now = HOUR + 2.5 / 60
    return HourReading(now, hours, hour_delays, minutes, delays)


def test_a_tripled_cpa_is_as_sure_whether_or_not_an_hour_has_turned() -> None:
    """The lag the hour buckets teach in their first days is the prior's (hours); read in
    minutes, it made the window's conversions look many times too many, and the dev stack's
    alert never fired when the hour turned in a run's first minutes."""
    rule = SpikeRule()
    sureness = []
    for hour_buckets in (False, True):
        (item,) = minute_spike_evidence(reading(hour_buckets=hour_buckets), 2, 60)
        assert item.channel == "paid_search"
        assert item.baseline is not None
        sureness.append(rule.probability(item.window, item.baseline))
    assert sureness[0] > rule.confidence
    assert sureness[1] == sureness[0]
