"""How often `adpulse dev --simulate --prometheus --spike paid_search=3@60` fires AdpulseCpaSpike.

    .venv/bin/python bench/dev_spike.py --seeds 100 --rate 20 --rate 60

No services: the simulator's own traffic plan (`adpulse.cli.simulate.plan`) is folded into the
minute and hour buckets the worker would write (clicks and their conversions' delay bins by the
click's minute, conversions without a click by their own minute, each spend post split pro rata
over the minutes of its period and counted when it is posted), and the exporter's dev-stack rule
(`stream.evidence.minute_spike_evidence`, `SpikeRule`, `adpulse.cli.devstack.DEV_SPIKE`) is read
every 5 seconds as Prometheus scrapes it, with the dev alert's `for:` and its minimum spend.
Each seed starts at a random second of a random hour. Per rate: the share of seeds in which
paid_search fired within 15 minutes of the spike, the median delay, and the seeds in which any
other channel fired (a false alarm). Counts, not timings: the same on any machine.

    .venv/bin/python bench/dev_spike.py --rate 200 --seed 3 --starts 60

With `--seed`, each seed given runs at `--starts` start times instead, 61 s apart (60 of them
try every second of the minute and every minute of the hour once), the scrapes' offset spread
over their 5 s: a seed fixes the simulator's plan (its start hour is the simulator's default,
not the clock), and what still differs from run to run is where that plan falls on the wall
clock (its minute and hour buckets, the scrapes). `--latency`: seconds from a post to the
worker's counters (1). This is how tests/integration/test_dev_spike_alert.py's seed was chosen.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adpulse.cli.devstack import DEV_SPIKE, DEV_SPIKE_FOR  # noqa: E402
from adpulse.cli.simulate.plan import (  # noqa: E402
    Action,
    Click,
    Conversion,
    PlanSettings,
    Redemption,
    Spend,
    TrafficPlan,
)
from adpulse.cli.simulate.profiles import parse_spike  # noqa: E402
from stream.advice_settings import parse_span  # noqa: E402
from stream.evidence import HourReading, minute_spike_evidence  # noqa: E402
from stream.kpi import MICROS, Counters  # noqa: E402
from stream.lag import DEFAULT_EDGES, DELAY_EDGE_MINUTES  # noqa: E402
from stream.posterior import SpikeRule  # noqa: E402

SPIKE_AT = 60.0
WITHIN = 15 * 60.0
SCRAPE = 5.0
LATENCY = 1.0
"""Seconds from the simulator's post to the worker's counters."""
GOLDEN = (5**0.5 - 1) / 2
MIN_SPEND = 100.0
"""deploy/prometheus/rules/alerts.yml: AdpulseCpaSpike needs this much spend."""
BINS = len(DEFAULT_EDGES) - 1


def delay_bin(minutes: int) -> int:
    return max(j for j in range(BINS) if DELAY_EDGE_MINUTES[j] <= minutes)


def plan_actions(seed: int, rate: float) -> list[Action]:
    """The simulator's actions with `--seed seed --rate rate --spike paid_search=3@60`, as
    `adpulse dev` runs it (its start hour is the simulator's default, not the wall clock)."""
    spike = parse_spike(f"paid_search=3@{SPIKE_AT:g}")
    plan = TrafficPlan(
        PlanSettings(seed=seed, rate=rate, duration=SPIKE_AT + WITHIN, spikes=(spike,))
    )
    return list(plan.actions())


def drawn_start(seed: int) -> tuple[float, float]:
    """A random second of a random hour to start at, and the first scrape's offset after it."""
    draw = random.Random(seed)
    start = (490_000 + draw.randrange(1000)) * 3600 + draw.uniform(0, 3600)
    return start, draw.uniform(0, SCRAPE)


def swept_start(index: int) -> tuple[float, float]:
    """The `index`th start of a sweep: 61 s apart, so that 60 of them try every second of the
    minute and every minute of the hour once; the scrape's offset spread over its 5 s."""
    return 490_000 * 3600 + (index * 61) % 3600, (index * GOLDEN) % 1 * SCRAPE


def run(
    actions: list[Action],
    start: float,
    scrape_offset: float,
    window: int,
    baseline: int,
    hold: float,
    latency: float = LATENCY,
) -> tuple[float | None, set[str]]:
    """Seconds from the spike to paid_search firing (None: not within 15 minutes), and the
    other channels that fired, for a run of `actions` started at wall second `start`."""
    # (arrival second, minute or hour tier, bucket, channel, field, amount or delay bin)
    arrivals: list[tuple[float, str, int, str, str, float]] = []
    click_minute: dict[int, tuple[str, int]] = {}
    orders: set[str] = set()
    for action in actions:
        wall = start + action.at + latency
        match action:
            case Click(bot=False):
                minute = int((start + action.at) // 60)
                click_minute[action.key] = (action.channel, minute)
                arrivals.append((wall, "m", minute, action.channel, "clicks", 1))
            case Redemption():
                minute = int((start + action.at) // 60)
                arrivals.append((wall, "m", minute, action.channel, "redemptions", 1))
            case Conversion() if not action.duplicate and action.order_id not in orders:
                orders.add(action.order_id)
                minute = int((start + action.at) // 60)
                if action.click_key is None:
                    arrivals.append((wall, "m", minute, action.channel, "conversions", 1))
                else:
                    channel, clicked = click_minute[action.click_key]
                    arrivals.append(
                        (wall, "m", clicked, channel, "delay", delay_bin(minute - clicked))
                    )
            case Spend():
                first, last = start + action.start, start + action.end
                minute = int(first // 60)
                while minute * 60 < last:
                    overlap = min(last, (minute + 1) * 60) - max(first, minute * 60)
                    share = float(action.cost) * overlap / (last - first)
                    arrivals.append((wall, "m", minute, action.channel, "spend", share))
                    minute += 1
    arrivals.sort()
    rule = SpikeRule()
    counts: dict[int, dict[str, dict[str, float]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(float))
    )
    bins: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * BINS))
    spent: dict[str, float] = defaultdict(float)
    since: dict[str, float] = {}
    fired: dict[str, float] = {}
    index = 0
    scrape = start + scrape_offset
    while scrape < start + SPIKE_AT + WITHIN:
        while index < len(arrivals) and arrivals[index][0] <= scrape:
            _, _, bucket, channel, name, amount = arrivals[index]
            if name == "delay":
                bins[bucket][channel][int(amount)] += 1
            else:
                counts[bucket][channel][name] += amount
                if name == "spend":
                    spent[channel] += amount
            index += 1
        reading = reading_at(scrape, counts, bins, window + baseline)
        for item in minute_spike_evidence(reading, window, baseline):
            if item.baseline is None:
                continue
            probability = rule.probability(item.window, item.baseline)
            if probability > rule.confidence and spent[item.channel] >= MIN_SPEND:
                since.setdefault(item.channel, scrape)
                if scrape - since[item.channel] >= hold and item.channel not in fired:
                    fired[item.channel] = scrape - (start + SPIKE_AT)
            else:
                since.pop(item.channel, None)
        scrape += SCRAPE
    took = fired.pop("paid_search", None)
    return (took if took is not None and took <= WITHIN else None), set(fired)


def parse_span_seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def reading_at(
    now: float,
    counts: dict[int, dict[str, dict[str, float]]],
    bins: dict[int, dict[str, list[int]]],
    minutes: int,
) -> HourReading:
    """The reading `read_reading` returns at `now`: whole hours (none in a 16-minute run
    unless it crosses an hour) and the minute buckets of `minutes` whole minutes before."""
    end = int(now // 60)
    by_minute: dict[int, dict[str, Counters]] = {}
    delays: dict[int, dict[str, tuple[int, ...]]] = {}
    hours: dict[int, dict[str, Counters]] = {}
    hour_delays: dict[int, dict[str, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0] * BINS)
    )
    for minute, by_channel in counts.items():
        for channel, fields in by_channel.items():
            counters = Counters(
                clicks=int(fields["clicks"]),
                redemptions=int(fields["redemptions"]),
                conversions=int(fields["conversions"]) + sum(bins[minute][channel]),
                spend_micros=round(fields["spend"] * MICROS),
            )
            if end - minutes <= minute < end:
                by_minute.setdefault(minute, {})[channel] = counters
                if channel in bins.get(minute, {}):
                    delays.setdefault(minute, {})[channel] = tuple(bins[minute][channel])
            hour = minute // 60
            if hour < int(now // 3600):
                old = hours.setdefault(hour, {}).get(channel, Counters())
                hours[hour][channel] = replace(
                    old,
                    clicks=old.clicks + counters.clicks,
                    redemptions=old.redemptions + counters.redemptions,
                    conversions=old.conversions + counters.conversions,
                    spend_micros=old.spend_micros + counters.spend_micros,
                )
                if channel in bins.get(minute, {}):
                    summed = hour_delays[hour][channel]
                    for j, count in enumerate(bins[minute][channel]):
                        summed[j] += count
    return HourReading(
        now / 3600,
        hours,
        {hour: {c: tuple(v) for c, v in by.items()} for hour, by in hour_delays.items()},
        by_minute,
        delays,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds 0 to N-1, each once")
    parser.add_argument("--rate", type=float, action="append")
    parser.add_argument(
        "--seed", type=int, action="append", help="instead: this seed at --starts start times"
    )
    parser.add_argument("--starts", type=int, default=60)
    parser.add_argument("--latency", type=float, default=LATENCY)
    parser.add_argument("--window", type=parse_span, default=DEV_SPIKE["ADPULSE_SPIKE_WINDOW"])
    parser.add_argument("--baseline", type=parse_span, default=DEV_SPIKE["ADPULSE_SPIKE_BASELINE"])
    parser.add_argument("--hold", type=parse_span_seconds, default=DEV_SPIKE_FOR)
    args = parser.parse_args()
    if args.seed:
        groups = [
            (
                f"seed {seed}, {args.starts} starts",
                [(seed, swept_start(i)) for i in range(args.starts)],
            )
            for seed in args.seed
        ]
    else:
        groups = [
            (f"seeds 0-{args.seeds - 1}", [(seed, drawn_start(seed)) for seed in range(args.seeds)])
        ]
    print("| runs | visits/s | fired within 15 min | delay (min, median, max) | others fired |")
    print("|---|---:|---:|---:|---:|")
    for rate in args.rate or [20.0]:
        for name, runs in groups:
            delays: list[float] = []
            false = 0
            actions: dict[int, list[Action]] = {}
            for seed, (start, offset) in runs:
                if seed not in actions:
                    actions = {seed: plan_actions(seed, rate)}
                took, others = run(
                    actions[seed],
                    start,
                    offset,
                    args.window,
                    args.baseline,
                    args.hold,
                    args.latency,
                )
                if took is not None:
                    delays.append(took)
                false += bool(others)
            spread = (
                f"{min(delays):.0f}, {statistics.median(delays):.0f}, {max(delays):.0f} s"
                if delays
                else "-"
            )
            print(
                f"| {name} | {rate:g} | {len(delays)}/{len(runs)} | {spread} "
                f"| {false}/{len(runs)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
