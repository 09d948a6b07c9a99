"""The advice's settings, declared once: `adpulse exporter` and `adpulse advise` both declare them.

Targets, guard rails and the lag's lookback (README, "Budget advice"); `advice_options` turns a
settings object that declares them into what `stream.evidence.recommend` takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from adpulse.core.options import Setting
from stream.advice import DEFAULT_MAX_SHIFT, DEFAULT_MIN_CONVERSIONS, DEFAULT_MIN_SHARE, AdviceRules
from stream.keys import Retention
from stream.lag import DEFAULT_LOOKBACK_HOURS
from stream.posterior import DEFAULT_BASELINE_HOURS, DEFAULT_SPIKE_WINDOW_HOURS

MAX_TARGET_CHANNELS: Final = 200
"""Channels a target may name: the store keeps at most `keys.DEFAULT_MAX_CHANNELS`."""


@dataclass(frozen=True, slots=True)
class Targets:
    """A target for every channel (`default`) and/or per channel; None: no target."""

    default: float | None = None
    per_channel: Mapping[str, float] = field(default_factory=dict)

    def of(self, channel: str) -> float | None:
        return self.per_channel.get(channel, self.default)

    def __bool__(self) -> bool:
        return self.default is not None or bool(self.per_channel)

    def __str__(self) -> str:
        parts = [] if self.default is None else [f"{self.default:g}"]
        parts += [f"{name}={value:g}" for name, value in self.per_channel.items()]
        return ",".join(parts)


def parse_targets(text: str) -> Targets:
    """``40`` (every channel), ``paid_search=40,email=10``, or both (``40,email=10``)."""
    default: float | None = None
    per_channel: dict[str, float] = {}
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        name, equals, number = part.rpartition("=")
        name = name.strip()
        try:
            value = float(number)
        except ValueError:
            raise ValueError(
                f"{number.strip()!r} is not a number (e.g. 40 or paid_search=40)"
            ) from None
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{part!r}: a target must be a positive number")
        if not equals:
            if default is not None:
                raise ValueError("one target for every channel at most")
            default = value
        elif not name or any(char.isspace() or char in "\t:" for char in name):
            raise ValueError(f"{part!r}: CHANNEL=NUMBER, the channel without spaces or ':'")
        elif name in per_channel:
            raise ValueError(f"channel {name!r} is given twice")
        else:
            per_channel[name] = value
    if len(per_channel) > MAX_TARGET_CHANNELS:
        raise ValueError(f"at most {MAX_TARGET_CHANNELS} channels")
    return Targets(default, per_channel)


def parse_fraction(text: str) -> float:
    """``20%`` or ``0.2``: a share from 0 to 1."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not a share (e.g. 20% or 0.2)") from None
    if not 0 <= value <= 1:
        raise ValueError("a share from 0% to 100%")
    return value


def parse_shift(text: str) -> float:
    value = parse_fraction(text)
    if value == 0:
        raise ValueError("above 0% (the advice would never move anything)")
    return value


def parse_min_share(text: str) -> float:
    value = parse_fraction(text)
    if value > 0.5:
        raise ValueError("at most 50% (two channels could not both have it)")
    return value


def parse_count(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1e9:
        raise ValueError("from 0 to 1e9")
    return value


def parse_lookback(text: str) -> int:
    """Whole hours: ``14d``, ``336h`` or a number of days; at most what hour buckets keep."""
    raw = text.strip().lower()
    try:
        hours = int(raw[:-1]) if raw.endswith("h") else int(raw.removesuffix("d")) * 24
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (e.g. 14d or 72h)") from None
    most = Retention().hour_seconds // 3600 - 2 * 24
    if not 1 <= hours <= most:
        raise ValueError(f"from 1h to {most}h (the hour buckets' retention, less two days)")
    return hours


MAX_SPIKE_MINUTES: Final = 24 * 60
"""A spike rule read in minutes reads window + baseline minute buckets on every scrape."""


def parse_span(text: str) -> int:
    """Whole minutes: ``2m``, ``12h`` or ``7d``."""
    raw = text.strip().lower()
    units = {"m": 1, "h": 60, "d": 24 * 60}
    try:
        minutes = int(raw[:-1]) * units[raw[-1:]]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not a duration such as 2m, 12h or 7d") from None
    if not 1 <= minutes <= 30 * 24 * 60:
        raise ValueError("from 1m to 30d")
    return minutes


@dataclass(frozen=True, slots=True)
class SpikeSpan:
    """The CPA-spike rule's window and baseline, in minutes: whole hours are read from the hour
    buckets, anything else from the minute buckets (the dev stack's few minutes)."""

    window: int = DEFAULT_SPIKE_WINDOW_HOURS * 60
    baseline: int = DEFAULT_BASELINE_HOURS * 60

    def __post_init__(self) -> None:
        if not self.hourly and self.window + self.baseline > MAX_SPIKE_MINUTES:
            raise ValueError(
                "a spike window and baseline that are not whole hours are read from minute "
                f"buckets: at most {MAX_SPIKE_MINUTES} minutes together (ADPULSE_SPIKE_WINDOW, "
                "ADPULSE_SPIKE_BASELINE)"
            )

    @property
    def hourly(self) -> bool:
        return self.window % 60 == 0 and self.baseline % 60 == 0

    def describe(self) -> str:
        def words(minutes: int) -> str:
            for size, unit in ((24 * 60, "day"), (60, "hour"), (1, "minute")):
                if minutes % size == 0:
                    count = minutes // size
                    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
            return f"{minutes} minutes"  # unreachable: every count is whole minutes

        return f"the last {words(self.window)} > 1.3x the {words(self.baseline)} before"


def _percent(value: float) -> str:
    return f"{round(value * 100)}%"


LAG_LOOKBACK = Setting(
    "--lag-lookback",
    "ADPULSE_LAG_LOOKBACK",
    DEFAULT_LOOKBACK_HOURS,
    parse_lookback,
    "how far back click-to-conversion delays are learned from (e.g. 14d, 72h)",
    shown_default="14d",
    name="lag_lookback",
)
TARGET_CPA = Setting(
    "--target-cpa",
    "ADPULSE_TARGET_CPA",
    Targets(),
    parse_targets,
    "target CPA, one for every channel (`40`) and/or per channel (`paid_search=40,email=10`): "
    "the advice says how sure it is that a channel's CPA is above it",
    shown_default="none",
    metavar="TARGETS",
    name="target_cpa",
)
TARGET_ROAS = Setting(
    "--target-roas",
    "ADPULSE_TARGET_ROAS",
    Targets(),
    parse_targets,
    "target ROAS (revenue / spend), same form as the CPA target; read as the CPA target "
    "AOV / ROAS; where both are set the stricter wins",
    shown_default="none",
    metavar="TARGETS",
    name="target_roas",
)
SPIKE_WINDOW = Setting(
    "--spike-window",
    "ADPULSE_SPIKE_WINDOW",
    DEFAULT_SPIKE_WINDOW_HOURS * 60,
    parse_span,
    "the CPA-spike rule's window (`adpulse_cpa_spike_probability`): the clicks of this long "
    "before the current hour (or minute, when not whole hours: `adpulse dev` uses 2m; "
    "read in minutes, conversions count as they arrive, without the learned delay)",
    shown_default=f"{DEFAULT_SPIKE_WINDOW_HOURS}h",
    name="spike_window",
)
SPIKE_BASELINE = Setting(
    "--spike-baseline",
    "ADPULSE_SPIKE_BASELINE",
    DEFAULT_BASELINE_HOURS * 60,
    parse_span,
    "the CPA-spike rule's baseline: the channel's own CPA over this long before the window",
    shown_default=f"{DEFAULT_BASELINE_HOURS // 24}d",
    name="spike_baseline",
)
ADVICE_MAX_SHIFT = Setting(
    "--advice-max-shift",
    "ADPULSE_ADVICE_MAX_SHIFT",
    DEFAULT_MAX_SHIFT,
    parse_shift,
    "most of a channel's budget the advice moves in one step",
    shown_default=_percent(DEFAULT_MAX_SHIFT),
    name="advice_max_shift",
)
ADVICE_MIN_SHARE = Setting(
    "--advice-min-share",
    "ADPULSE_ADVICE_MIN_SHARE",
    DEFAULT_MIN_SHARE,
    parse_min_share,
    "no channel's share of the budget goes below this",
    shown_default=_percent(DEFAULT_MIN_SHARE),
    name="advice_min_share",
)
ADVICE_MIN_CONVERSIONS = Setting(
    "--advice-min-conversions",
    "ADPULSE_ADVICE_MIN_CONVERSIONS",
    DEFAULT_MIN_CONVERSIONS,
    parse_count,
    "conversions (nowcast) a channel needs in the last 24 hours before the advice moves its budget",
    shown_default=f"{DEFAULT_MIN_CONVERSIONS:g}",
    name="advice_min_conversions",
)


class DeclaresAdvice(Protocol):
    """A settings object that declares the settings above under their names."""

    @property
    def lag_lookback(self) -> int: ...
    @property
    def target_cpa(self) -> Targets: ...
    @property
    def target_roas(self) -> Targets: ...
    @property
    def advice_max_shift(self) -> float: ...
    @property
    def advice_min_share(self) -> float: ...
    @property
    def advice_min_conversions(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AdviceOptions:
    rules: AdviceRules = field(default_factory=AdviceRules)
    target_cpa: Targets = field(default_factory=Targets)
    target_roas: Targets = field(default_factory=Targets)
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS


def advice_options(settings: DeclaresAdvice) -> AdviceOptions:
    """The options of a settings object that declares the settings above."""
    return AdviceOptions(
        AdviceRules(
            max_shift=settings.advice_max_shift,
            min_share=settings.advice_min_share,
            min_conversions=settings.advice_min_conversions,
        ),
        settings.target_cpa,
        settings.target_roas,
        settings.lag_lookback,
    )
