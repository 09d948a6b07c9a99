"""Detection delay against false alarms: the lag-aware CPA-spike rule against the old threshold.

    .venv/bin/python bench/detection.py --seeds 100

Simulated weeks (simulator clock, `tests/sim_marketing.py`): four channels with CPAs within 7 %
of each other and a week of history; in the "spike" runs paid_social's CPA doubles (its
conversion rate halves) 30 hours into the evaluated week, in the "A/A" runs nothing changes.
Every rule is evaluated at the end of every simulated hour on the same counters:

- old threshold: the CPA of the hour (spend / conversions counted in the hour) above twice the
  same hour a day earlier, with at least 10 conversions in the hour (the former `AdpulseCpaSpike`,
  without its week-earlier term);
- spike rule: `stream.posterior.SpikeRule` on the nowcast of the last hours' clicks;
- advice: `stream.advice.advise` on the last 24 hours, counted when it takes budget from a
  channel.

Per volume (x the clicks of every channel): the share of spike runs in which each signal named
paid_social within 24 and 72 hours of the change, the median delay of those that did, and the
share of A/A channel-weeks in which it fired at all (a false alarm). No timing: the figures are
counts, the same on any machine for the same seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.advice import AdviceRules  # noqa: E402
from stream.posterior import SpikeRule  # noqa: E402
from tests.sim_marketing import WEEK, Simulation, WeekOutcome, run_week, scenario  # noqa: E402

CHANGE_HOUR = 30
SIGNALS = ("threshold", "spike", "advice")
LABELS = {
    "threshold": "old threshold (2x day earlier, >= 10 conv.)",
    "spike": "spike rule (lag-aware, posterior)",
    "advice": "budget advice (takes budget away)",
}


def fired(outcome: WeekOutcome, signal: str) -> dict[str, list[int]]:
    return getattr(outcome, signal)  # type: ignore[no-any-return]


def measure(volume: float, seeds: int, rule: SpikeRule, rules: AdviceRules) -> list[str]:
    delays: dict[str, list[int | None]] = {signal: [] for signal in SIGNALS}
    false: dict[str, int] = dict.fromkeys(SIGNALS, 0)
    channel_weeks = 0
    for seed in range(seeds):
        spike = run_week(
            Simulation(scenario(WEEK + CHANGE_HOUR, volume), 2 * WEEK, seed), rule, rules
        )
        quiet = run_week(Simulation(scenario(None, volume), 2 * WEEK, 10_000 + seed), rule, rules)
        for signal in SIGNALS:
            after = [
                h - CHANGE_HOUR for h in fired(spike, signal)["paid_social"] if h >= CHANGE_HOUR
            ]
            delays[signal].append(min(after, default=None))
            false[signal] += sum(bool(hours) for hours in fired(quiet, signal).values())
        channel_weeks += len(quiet.spike)
    rows = []
    for signal in SIGNALS:
        found = [d for d in delays[signal] if d is not None]
        within = [sum(d is not None and d < limit for d in delays[signal]) for limit in (24, 72)]
        median = f"{statistics.median(found):.0f} h" if found else "never"
        rows.append(
            f"| x{volume:g} | {LABELS[signal]} | {within[0] / seeds:.0%} | {within[1] / seeds:.0%}"
            f" | {median} | {false[signal] / channel_weeks:.1%} ({false[signal]}/{channel_weeks}) |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--volumes", default="1,10", help="comma-separated click multipliers")
    args = parser.parse_args()
    rule, rules = SpikeRule(), AdviceRules()
    print(f"spike rule: {rule}\nadvice: {rules}\nseeds: {args.seeds} per volume\n")
    print(
        "| volume | signal | found < 24 h | found < 72 h | median delay | A/A channel-weeks fired |"
    )
    print("|---|---|---|---|---|---|")
    for volume in (float(v) for v in args.volumes.split(",")):
        for row in measure(volume, args.seeds, rule, rules):
            print(row, flush=True)


if __name__ == "__main__":
    main()
