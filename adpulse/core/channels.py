"""Channel names, and grouping UTM parameters and ad click ids into a channel.

A channel is a slug (`paid_search`, `newsletter_de`): it becomes the `channel` label in
Prometheus, so it is short and made of ``[a-z0-9_]`` only.

Grouping is the attribution fallback for events that name no channel themselves: the edge runs
`ChannelRules.group` on the event's `utm_source`, `utm_medium` and ad click ids, and the first
rule that matches names the channel. `DEFAULT_CHANNEL_RULES` follow the spirit of the GA4 default
channel grouping; operators replace or extend them with `ADPULSE_CHANNEL_RULES`, see
`parse_channel_rules`.

The set of channels is bounded by configuration, never by clients: a channel a client without
the API token names is counted only if it is known (`known_channels`: the grouping rules'
channels, `DEFAULT_CHANNELS` and the operator's ``ADPULSE_CHANNELS``); any other is counted
under `UNLISTED`. Every channel name becomes a field in Redis's counters and a series in
Prometheus, so random names would otherwise grow both without end.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Final

MAX_CHANNEL_LENGTH = 64
# Channels an operator may list in ADPULSE_CHANNELS: each is a Prometheus series per KPI.
MAX_LISTED_CHANNELS: Final = 1000
# The fixed buckets: an event with nothing to attribute it by, and one whose channel is not
# known (an unauthenticated client's, or one beyond the worker's cap on channels).
UNATTRIBUTED: Final = "unattributed"
UNLISTED: Final = "unlisted"
# GA4's default channel groups (as slugs) and the performance-marketing channels adpulse is
# built for, known without configuration; the grouping rules add their own.
DEFAULT_CHANNELS: Final = frozenset(
    {
        *("direct", "organic", "organic_search", "organic_social", "organic_video"),
        *("organic_shopping", "paid_search", "paid_social", "paid_video", "paid_shopping"),
        *("paid_other", "display", "cross_network", "email", "sms", "mobile_push", "audio"),
        *("referral", "affiliate", "marketplace", "native", "mobile", "remarketing"),
        *("influencer", "partners", "offline", UNATTRIBUTED, UNLISTED),
    }
)

# The ad networks' auto-tagging parameters that the edge keeps (Google, Meta, Microsoft,
# TikTok, LinkedIn). They arrive as top-level event fields and travel in `Event.ad_click_ids`.
AD_CLICK_ID_KEYS: frozenset[str] = frozenset({"gclid", "fbclid", "msclkid", "ttclid", "li_fat_id"})

_SEPARATORS = re.compile(r"[\s\-]+")
_SLUG = re.compile(r"[a-z0-9_]+")


def channel_slug(text: str) -> str:
    """The channel slug for `text`, or ValueError with the reason.

    Lower-cased and stripped; runs of spaces and dashes become one "_".

    >>> channel_slug(" Paid Search ")
    'paid_search'
    """
    slug = text.strip().lower()
    # Most channels arrive as slugs already: lower-case ASCII letters, digits and "_".
    if slug.isascii() and slug.replace("_", "").isalnum() and len(slug) <= MAX_CHANNEL_LENGTH:
        return slug
    slug = _SEPARATORS.sub("_", slug)
    if not slug:
        raise ValueError("must not be empty")
    if len(slug) > MAX_CHANNEL_LENGTH:
        raise ValueError(f"longer than {MAX_CHANNEL_LENGTH} characters")
    if _SLUG.fullmatch(slug) is None:
        raise ValueError("only letters, digits, spaces, '-' and '_' are allowed")
    return slug


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """Names `channel` when every condition it has holds.

    `medium` and `source` are matched in full and ignoring case against the lower-cased,
    stripped UTM value (an absent value never matches); `click_ids` holds when the event has any
    one of those ad click id keys.
    """

    channel: str
    medium: re.Pattern[str] | None = None
    source: re.Pattern[str] | None = None
    click_ids: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if channel_slug(self.channel) != self.channel:
            raise ValueError(f"channel {self.channel!r} is not a slug; use [a-z0-9_]")
        if self.medium is None and self.source is None and not self.click_ids:
            raise ValueError(f"rule for {self.channel!r} has no condition")
        unknown = self.click_ids - AD_CLICK_ID_KEYS
        if unknown:
            raise ValueError(
                f"unknown click id key {sorted(unknown)[0]!r}; "
                f"expected one of {', '.join(sorted(AD_CLICK_ID_KEYS))}"
            )

    def matches(self, source: str | None, medium: str | None, click_ids: Collection[str]) -> bool:
        if self.medium is not None and (medium is None or self.medium.fullmatch(medium) is None):
            return False
        if self.source is not None and (source is None or self.source.fullmatch(source) is None):
            return False
        return not self.click_ids or any(key in self.click_ids for key in click_ids)


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """An ordered list of `ChannelRule`; the first match wins."""

    rules: tuple[ChannelRule, ...]

    @property
    def channels(self) -> frozenset[str]:
        """Every channel these rules may name."""
        return frozenset(rule.channel for rule in self.rules)

    def group(
        self, utm_source: str | None, utm_medium: str | None, ad_click_ids: Collection[str]
    ) -> str | None:
        """The channel for these UTM values and click id keys, or None with nothing to go on.

        None lets the worker fall back to the click's or the coupon's channel, then to
        `unattributed`. "direct" is only named when utm_source says so.

        >>> DEFAULT_CHANNEL_RULES.group("google", "cpc", ())
        'paid_search'
        """
        source = _normalise(utm_source)
        medium = _normalise(utm_medium)
        if source is None and medium is None and not ad_click_ids:
            return None
        for rule in self.rules:
            if rule.matches(source, medium, ad_click_ids):
                return rule.channel
        return None


def known_channels(rules: ChannelRules, listed: Iterable[str] = ()) -> frozenset[str]:
    """The channels a client without the API token may name: `DEFAULT_CHANNELS`, the rules'
    channels and `listed` (``ADPULSE_CHANNELS``).

    >>> "newsletter_de" in known_channels(DEFAULT_CHANNEL_RULES, ["newsletter_de"])
    True
    """
    return DEFAULT_CHANNELS | rules.channels | frozenset(listed)


def parse_channel_list(text: str) -> tuple[str, ...]:
    """The ADPULSE_CHANNELS format: channel names separated by "," or new lines, as slugs.

    >>> parse_channel_list("Newsletter DE, podcasts")
    ('newsletter_de', 'podcasts')
    """
    names = []
    for item in text.replace("\n", ",").split(","):
        if item.strip():
            try:
                names.append(channel_slug(item))
            except ValueError as error:
                raise ValueError(f"channel {item.strip()!r}: {error}") from None
    if len(names) > MAX_LISTED_CHANNELS:
        raise ValueError(f"more than {MAX_LISTED_CHANNELS} channels listed")
    return tuple(dict.fromkeys(names))


def _normalise(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value or None


def _rule(
    channel: str, *, medium: str | None = None, source: str | None = None, click_ids: str = ""
) -> ChannelRule:
    return ChannelRule(
        channel=channel,
        medium=None if medium is None else re.compile(medium, re.IGNORECASE),
        source=None if source is None else re.compile(source, re.IGNORECASE),
        click_ids=frozenset(click_ids.split()),
    )


def _names(names: str) -> str:
    """A regex for any of `names` alone or as one word of a host or tag ("www.google.de")."""
    return rf"(?:.*[._\- ])?(?:{'|'.join(names.split())})(?:[._\- ].*)?"


_SEARCH_SOURCES = _names(
    "google adwords googleads bing yahoo baidu duckduckgo yandex ecosia naver seznam qwant "
    "startpage brave"
)
_SOCIAL_SOURCES = _names(
    "facebook fb instagram ig tiktok linkedin lnkd twitter x t\\.co pinterest snapchat reddit "
    "youtube threads meta"
)
_MARKETPLACE_SOURCES = _names(
    "amazon ebay etsy walmart aliexpress rakuten zalando mercadolibre allegro otto bol"
)
# GA4's "paid" mediums: anything with "cp" in it (cpc, cpm, cpv, cpa), ppc, retargeting, paid*.
_PAID_MEDIUMS = r".*cp.*|ppc|retargeting|paid.*"

DEFAULT_CHANNEL_RULES = ChannelRules(
    (
        _rule("direct", source=r"\(?direct\)?"),
        _rule("paid_search", source=_SEARCH_SOURCES, medium=_PAID_MEDIUMS),
        _rule("paid_search", medium=r"paid[_ -]?search|sem|sea"),
        _rule("paid_social", source=_SOCIAL_SOURCES, medium=_PAID_MEDIUMS),
        _rule("paid_social", medium=r"paid[_ -]?social|social[_ -]?(paid|ads?)"),
        _rule("marketplace", source=_MARKETPLACE_SOURCES),
        _rule("display", medium=r"display|banner|expandable|interstitial|cpm"),
        _rule("paid_other", medium=_PAID_MEDIUMS),
        _rule("email", medium=r".*(e[-_ ]?mail|newsletter).*"),
        _rule("email", source=r".*(e[-_ ]?mail|newsletter).*"),
        _rule("affiliate", medium=r"affiliates?|partners?"),
        _rule("organic_social", medium=r"social|social[-_ ]?(network|media)|sm|organic[_ ]social"),
        _rule("organic_social", source=_SOCIAL_SOURCES),
        _rule("organic", medium=r"organic"),
        _rule("referral", medium=r"referral|link|app"),
        # Auto-tagging ids come last: they are appended without the advertiser's say (Meta adds
        # fbclid to organic outbound links too), so explicit UTM values outrank them.
        _rule("paid_search", click_ids="gclid msclkid"),
        _rule("paid_social", click_ids="fbclid ttclid li_fat_id"),
    )
)

_CONDITION_KEYS = frozenset({"medium", "source", "click_id"})


def parse_channel_rules(text: str) -> ChannelRules:
    """Parse the ADPULSE_CHANNEL_RULES format into `ChannelRules`.

    One rule per line, or rules separated by ",": ``channel: condition; condition ...``.
    A condition is ``medium=REGEX``, ``source=REGEX`` (matched in full, ignoring case) or
    ``click_id=KEY|KEY`` (any of gclid, fbclid, msclkid, ttclid, li_fat_id). All conditions of
    a rule must hold; the first rule that matches wins. The word ``defaults`` alone stands for
    `DEFAULT_CHANNEL_RULES` at that position, so local rules can go before them. Blank lines
    and lines starting with "#" are skipped. A "," or ";" inside a regex is written ``\\x2c`` or
    ``\\x3b``.

    >>> rules = parse_channel_rules("partners: source=awin|cj; medium=affiliate, defaults")
    >>> rules.group("awin", "affiliate", ())
    'partners'
    """
    rules: list[ChannelRule] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "defaults":
                rules.extend(DEFAULT_CHANNEL_RULES.rules)
            else:
                rules.append(_parse_rule(item))
    if not rules:
        raise ValueError("no channel rules given")
    return ChannelRules(tuple(rules))


def _parse_rule(item: str) -> ChannelRule:
    channel, colon, conditions = item.partition(":")
    channel = channel.strip()
    if not colon:
        raise ValueError(f"rule {item!r}: expected 'channel: condition; ...'")
    found: dict[str, str] = {}
    for condition in conditions.split(";"):
        condition = condition.strip()
        if not condition:
            continue
        key, equals, value = condition.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or key not in _CONDITION_KEYS:
            raise ValueError(
                f"rule {item!r}: condition {condition!r} must be medium=, source= or click_id="
            )
        if key in found:
            raise ValueError(f"rule {item!r}: {key} is given twice")
        if not value:
            raise ValueError(f"rule {item!r}: {key} is empty")
        found[key] = value
    try:
        slug = channel_slug(channel)
    except ValueError as error:
        raise ValueError(f"rule {item!r}: channel {error}") from error
    try:
        return ChannelRule(
            channel=slug,
            medium=_compile(found.get("medium")),
            source=_compile(found.get("source")),
            click_ids=frozenset(_click_id_keys(found.get("click_id", ""))),
        )
    except (ValueError, re.error) as error:
        raise ValueError(f"rule {item!r}: {error}") from error


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return None if pattern is None else re.compile(pattern, re.IGNORECASE)


def _click_id_keys(text: str) -> Iterable[str]:
    return (key.strip().lower() for key in re.split(r"[|\s]+", text) if key.strip())
