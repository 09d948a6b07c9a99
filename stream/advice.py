"""Budget advice: next period's share of the budget per channel, and why, in one sentence.

Response curve: conversions = a x spend^b per channel, with one elasticity b < 1 for all
(`AdviceRules.elasticity`, 0.7 by default) assumed rather than fitted. A curve's b can only be
estimated from spend that moved, which live data rarely has; the marketing-mix tools that fit
it (Meridian, Robyn) do so offline over months. With a common b, a channel's marginal cost of a
conversion is its CPA / b at its current spend, so equal marginal costs mean spend_i proportional
to spend_i / CPA_i^(1/(1-b)): cheaper channels get more, with diminishing returns.

Moves happen only where the data are sure: a channel gives budget only when
P(its CPA > (1 + margin) x the cheapest channel's CPA) >= confidence, so two channels whose
CPAs differ by noise or by less than the margin are left alone (the A/A test measures how often
advice fires when nothing differs). Guard rails: at most `max_shift` of a channel's budget moves
per step, no channel below `min_share`, no advice for a channel with fewer than
`min_conversions` expected conversions in the window, and a hold while less than
`min_maturity` of its window's conversions had time to arrive. Deterministic rather than
Thompson sampling: the same figures give the same advice, which a marketer can check and act on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from stream.nowcast import RateEstimate
from stream.posterior import CpaPosterior

DEFAULT_MAX_SHIFT: Final = 0.2
DEFAULT_MIN_SHARE: Final = 0.05
DEFAULT_MIN_CONVERSIONS: Final = 20.0
DEFAULT_MIN_MATURITY: Final = 0.5
DEFAULT_ELASTICITY: Final = 0.7
DEFAULT_CONFIDENCE: Final = 0.99
DEFAULT_MARGIN: Final = 0.2


@dataclass(frozen=True, slots=True)
class AdviceRules:
    """The guard rails and the sureness asked before moving money (module docstring).

    False positives (budget taken from a channel no dearer than the margin), evaluated hourly:
    held under 10 % of quiet channel-weeks by the tests, measured by bench/detection.py at about
    9 % with 3.75 conversions an hour and under 1 % at ten times that volume.
    """

    max_shift: float = DEFAULT_MAX_SHIFT
    min_share: float = DEFAULT_MIN_SHARE
    min_conversions: float = DEFAULT_MIN_CONVERSIONS
    min_maturity: float = DEFAULT_MIN_MATURITY
    elasticity: float = DEFAULT_ELASTICITY
    confidence: float = DEFAULT_CONFIDENCE
    margin: float = DEFAULT_MARGIN
    level: float = 0.9
    """Of the expected CPA's interval."""

    def __post_init__(self) -> None:
        if not 0 < self.max_shift <= 1:
            raise ValueError("max shift must be in (0, 1]")
        if not 0 <= self.min_share < 1:
            raise ValueError("minimum share must be in [0, 1)")
        if not 0 < self.elasticity < 1:
            raise ValueError("elasticity must be strictly between 0 and 1")
        if not 0.5 < self.confidence < 1 or self.margin < 0 or self.min_conversions < 0:
            raise ValueError("confidence in (0.5, 1), margin and minimum conversions >= 0")


@dataclass(frozen=True, slots=True)
class ChannelEvidence:
    """One channel's window (its budget is the window's spend) and, if any, its baseline."""

    channel: str
    window: RateEstimate
    baseline: RateEstimate | None = None
    target_cpa: float | None = None
    """The CPA the channel should stay under (`ADPULSE_TARGET_CPA`, or AOV / ROAS target)."""

    @property
    def budget(self) -> float:
        return self.window.cost

    @property
    def expected_conversions(self) -> float:
        """The window's nowcast: seen plus those still expected."""
        return self.window.seen + self.window.mean * (
            self.window.exposure - self.window.matured_exposure
        )


@dataclass(frozen=True, slots=True)
class Recommendation:
    channel: str
    action: str
    """"decrease", "increase", "keep" or "hold" (not enough or too young data)."""
    budget: float
    next_budget: float
    share: float
    next_share: float
    cpa: float | None
    cpa_low: float | None
    cpa_high: float | None
    """The expected CPA at the next budget, with its interval (None where held)."""
    baseline_ratio: float | None
    sure_worse: float | None
    """P(CPA > (1 + margin) x the cheapest channel's CPA), for the channels compared."""
    reason: str
    target_cpa: float | None = None
    above_target: float | None = None
    """P(CPA > target_cpa) at the current budget, where the channel has a target."""


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _percent(value: float) -> str:
    return f"{round(100 * value)} %"


def _sureness(probability: float) -> str:
    """A probability as a marketer reads it; never "100 %", which no data can make certain."""
    return "over 99 %" if probability > 0.99 else _percent(probability)


def _hold_reason(item: ChannelEvidence, rules: AdviceRules) -> str | None:
    expected = item.expected_conversions
    if expected < rules.min_conversions:
        return (
            f"hold: {expected:.0f} conversions expected in the window, advice needs "
            f"{rules.min_conversions:.0f}"
        )
    if item.window.maturity < rules.min_maturity:
        waiting = _percent(1 - item.window.maturity)
        return f"hold: {waiting} of the window's conversions are still to come"
    return None


def _reallocate(
    judged: Sequence[ChannelEvidence],
    donors: Sequence[ChannelEvidence],
    cpas: dict[str, float],
    total: float,
    rules: AdviceRules,
) -> tuple[dict[str, float], list[str]]:
    """Budget changes (channel -> amount, negative for the donors) and the channels receiving.

    The optimum of the response curve spends on each judged channel in proportion to
    budget / CPA^(1/(1-b)); donors move toward it by at most `max_shift` of their budget and
    not below `min_share` of the total, receivers (non-donors below their optimum) by at most
    `max_shift` of theirs. What receivers cannot take stays with the donors.
    """
    exponent = 1 / (1 - rules.elasticity)
    weights = {item.channel: item.budget / cpas[item.channel] ** exponent for item in judged}
    scale = sum(item.budget for item in judged) / sum(weights.values())
    optimum = {name: weight * scale for name, weight in weights.items()}
    floor = rules.min_share * total
    give = {
        item.channel: item.budget
        - max(
            optimum[item.channel],
            item.budget * (1 - rules.max_shift),
            min(floor, item.budget),
        )
        for item in donors
    }
    give = {name: amount for name, amount in give.items() if amount > 0}
    room = {
        item.channel: min(optimum[item.channel] - item.budget, item.budget * rules.max_shift)
        for item in judged
        if item not in donors and optimum[item.channel] > item.budget
    }
    freed, absorbable = sum(give.values()), sum(room.values())
    moved = min(freed, absorbable)
    if moved <= 0:
        return {}, []
    changes = {name: -amount * moved / freed for name, amount in give.items()}
    changes.update({name: amount * moved / absorbable for name, amount in room.items()})
    return changes, sorted(room, key=lambda name: -room[name])


def advise(
    evidence: Sequence[ChannelEvidence], rules: AdviceRules | None = None
) -> list[Recommendation]:
    """A recommendation for every channel with spend in its window, cheapest CPA first.

    >>> advise([])
    []
    """
    rules = rules or AdviceRules()
    spending = [item for item in evidence if item.budget > 0]
    total = sum(item.budget for item in spending)
    held = {
        item.channel: reason
        for item in spending
        if (reason := _hold_reason(item, rules)) is not None
    }
    posteriors: dict[str, CpaPosterior] = {}
    for item in spending:
        posterior = CpaPosterior.of(item.window)
        if posterior is not None and item.channel not in held:
            posteriors[item.channel] = posterior
    judged = [item for item in spending if item.channel in posteriors]
    cpas = {name: posterior.cpa for name, posterior in posteriors.items()}
    cheapest = min(judged, key=lambda item: cpas[item.channel], default=None)
    sure_worse = {
        item.channel: posteriors[item.channel].probability_above_other(
            posteriors[cheapest.channel], 1 + rules.margin
        )
        for item in judged
        if cheapest is not None and item is not cheapest
    }
    donors = [item for item in judged if sure_worse.get(item.channel, 0.0) >= rules.confidence]
    changes, receivers = _reallocate(judged, donors, cpas, total, rules) if donors else ({}, [])
    recommendations = []
    for item in spending:
        name, budget = item.channel, item.budget
        new = budget + changes.get(name, 0.0)
        posterior = posteriors.get(name)
        cpa = low = high = ratio = None
        if posterior is not None:
            # Along the curve, the CPA at a new spend S' is CPA x (S' / S)^(1 - b).
            factor = (new / budget) ** (1 - rules.elasticity)
            low_now, high_now = posterior.interval(rules.level)
            cpa, low, high = posterior.cpa * factor, low_now * factor, high_now * factor
            usual = CpaPosterior.of(item.baseline) if item.baseline is not None else None
            if usual is not None and item.baseline is not None and item.baseline.seen > 0:
                ratio = posterior.cpa / usual.cpa
        change = new / budget - 1
        if name in held:
            action, reason = "hold", held[name]
        elif posterior is None or cheapest is None:
            action, reason = "keep", "keep"
        elif change < -1e-9 or sure_worse.get(name, 0.0) >= rules.confidence:
            action = "decrease" if change < -1e-9 else "keep"
            reason = (
                f"{_sureness(sure_worse[name])} sure it costs over {1 + rules.margin:g}x "
                f"{cheapest.channel}'s CPA; "
                + (
                    f"move {_percent(-change)} ({_money(budget - new)}) to {', '.join(receivers)}"
                    if action == "decrease"
                    else "keep: no channel can take more budget this step"
                )
            )
        elif change > 1e-9:
            action = "increase"
            reason = f"among the cheapest; add {_percent(change)} ({_money(new - budget)})"
        elif name == cheapest.channel:
            action, reason = "keep", "keep: the cheapest"
        else:
            action = "keep"
            reason = f"keep: not surely dearer than {cheapest.channel} by {_percent(rules.margin)}"
        above_target = None
        if posterior is not None:
            head = f"{name}: CPA {_money(posterior.cpa)}"
            if ratio is not None:
                head += f", {ratio:.1f}x its usual level"
            if item.target_cpa is not None:
                above_target = posterior.probability_above(item.target_cpa)
                head += (
                    f", {_sureness(above_target)} sure above its target {_money(item.target_cpa)}"
                    if above_target >= 0.5
                    else f", {_sureness(1 - above_target)} sure within its target "
                    f"{_money(item.target_cpa)}"
                )
            sentence = f"{head}; {reason}"
        else:
            sentence = f"{name}: {reason}"
        recommendations.append(
            Recommendation(
                channel=name,
                action=action,
                budget=budget,
                next_budget=new,
                share=budget / total,
                next_share=new / total,
                cpa=cpa,
                cpa_low=low,
                cpa_high=None if high is None or math.isinf(high) else high,
                baseline_ratio=ratio,
                sure_worse=sure_worse.get(name),
                reason=sentence,
                target_cpa=item.target_cpa,
                above_target=above_target,
            )
        )
    recommendations.sort(key=lambda rec: (rec.cpa is None, rec.cpa or 0.0))
    return recommendations


def advice_document(recommendations: Sequence[Recommendation], currency: str) -> dict[str, Any]:
    """The recommendations as JSON numbers, money to cents, shares and probabilities to 4
    digits: `adpulse advise --json` and `GET /v1/advice` answer this document."""

    def money(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    def share(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "currency": currency,
        "channels": [
            {
                "channel": rec.channel,
                "action": rec.action,
                "budget": money(rec.budget),
                "next_budget": money(rec.next_budget),
                "share": share(rec.share),
                "next_share": share(rec.next_share),
                "cpa": money(rec.cpa),
                "cpa_low": money(rec.cpa_low),
                "cpa_high": money(rec.cpa_high),
                "baseline_ratio": share(rec.baseline_ratio),
                "target_cpa": money(rec.target_cpa),
                "above_target": share(rec.above_target),
                "reason": rec.reason,
            }
            for rec in recommendations
        ],
    }
