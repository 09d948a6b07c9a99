"""The simulated channels, their coupon codes, and `--spike` and duration parsing. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from adpulse.core.channels import channel_slug


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    """How one channel behaves in the simulation.

    `share`: of the visits (clicks, or coupon redemptions for a coupon channel).
    `conversion_rate`: of a visit becoming an order. `unit_cost`: what the channel charges per
    counted click (per redemption for a coupon channel), reporting currency.
    `order_value`: the mean order; orders vary from half to one and a half times it.
    `redirect_share`: of clicks through the `/c` redirect, the rest are pixel clicks.
    `coupons`: non-empty for a coupon channel, whose visits are redemptions without a click.
    `lead_rate`: of a (human) click becoming a lead (a form sent), besides any order.
    """

    channel: str
    share: float
    conversion_rate: float
    unit_cost: Decimal
    order_value: Decimal
    redirect_share: float = 1.0
    coupons: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ("always_on",)
    lead_rate: float = 0.0


CHANNELS: Final[tuple[ChannelProfile, ...]] = (
    ChannelProfile(
        "paid_search",
        0.24,
        0.040,
        Decimal("1.20"),
        Decimal("85.00"),
        0.5,
        (),
        ("brand", "generic"),
        lead_rate=0.08,
    ),
    ChannelProfile(
        "paid_social",
        0.18,
        0.018,
        Decimal("0.85"),
        Decimal("62.00"),
        1.0,
        (),
        ("prospecting",),
        lead_rate=0.05,
    ),
    ChannelProfile(
        "email",
        0.12,
        0.055,
        Decimal("0.05"),
        Decimal("70.00"),
        1.0,
        (),
        ("newsletter", "winback"),
        lead_rate=0.10,
    ),
    ChannelProfile("affiliate", 0.10, 0.035, Decimal("0.40"), Decimal("95.00"), 1.0),
    ChannelProfile("marketplace", 0.10, 0.050, Decimal("0.55"), Decimal("48.00"), 0.0),
    ChannelProfile("native", 0.08, 0.010, Decimal("0.30"), Decimal("55.00"), 1.0, lead_rate=0.03),
    ChannelProfile(
        "remarketing", 0.10, 0.065, Decimal("0.70"), Decimal("78.00"), 0.3, (), ("cart",)
    ),
    ChannelProfile(
        "influencer",
        0.08,
        0.60,
        Decimal("4.00"),
        Decimal("66.00"),
        coupons=("ANNA10", "LUCA15", "MIRA20", "JONAS10"),
        campaigns=("creators",),
    ),
)

CHANNEL_NAMES: Final = tuple(profile.channel for profile in CHANNELS)


def coupon_rows(channels: tuple[ChannelProfile, ...] = CHANNELS) -> list[tuple[str, str]]:
    """(code, channel) of every coupon the simulator redeems, for `KpiStore.import_coupons`.

    Without them registered, redemptions and coupon conversions count as "unattributed".
    """
    return [(code, profile.channel) for profile in channels for code in profile.coupons]


# The shop's tracked phone numbers (issue 14): a pool shown to paid_search visitors (dynamic
# number insertion) and a static number printed in the influencer channel's posts. Register
# them with `adpulse numbers import` (`adpulse simulate --numbers-out FILE`).
NUMBER_POOLS: Final[dict[str, tuple[str, ...]]] = {
    "paid_search": tuple(f"+1415555{number:04d}" for number in range(1000, 1020)),
}
STATIC_NUMBERS: Final[dict[str, str]] = {"influencer": "+18005550142"}
# A small set of callers, so that some call again (one lead a day each).
CALLERS: Final = tuple(f"+1212555{number:04d}" for number in range(3000, 3060))


def number_rows() -> list[tuple[str, str, str, str]]:
    """(number, channel, campaign, kind) of every number the simulator calls, the CSV of
    `adpulse numbers import`."""
    rows = [
        (number, channel, "", "pool")
        for channel, numbers in NUMBER_POOLS.items()
        for number in numbers
    ]
    rows += [(number, channel, "", "static") for channel, number in STATIC_NUMBERS.items()]
    return rows


@dataclass(frozen=True, slots=True)
class Spike:
    """From `offset` seconds into the run, `channel`'s unit cost is multiplied by `factor`."""

    channel: str
    factor: Decimal
    offset: float


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from "90", "30s", "5m", "1.5h" or "250ms"; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h")
    return float(match[1]) * _UNITS[match[2]]


def parse_spike(text: str, channels: tuple[str, ...] = CHANNEL_NAMES) -> Spike:
    """A `--spike` value, CHANNEL=FACTOR@OFFSET (``paid_search=3@2m``); ValueError otherwise."""
    channel_text, equals, rest = text.partition("=")
    factor_text, at, offset_text = rest.partition("@")
    if not equals or not at:
        raise ValueError(f"{text!r}: expected CHANNEL=FACTOR@OFFSET, e.g. paid_search=3@2m")
    channel = channel_slug(channel_text)
    if channel not in channels:
        raise ValueError(f"unknown channel {channel!r}; one of {', '.join(channels)}")
    try:
        factor = Decimal(factor_text.strip())
    except InvalidOperation:
        raise ValueError(f"factor {factor_text!r} is not a number") from None
    if not factor.is_finite() or factor <= 0 or factor > 1000:
        raise ValueError(f"factor {factor_text!r} must be above 0 and at most 1000")
    return Spike(channel, factor, parse_duration(offset_text))
