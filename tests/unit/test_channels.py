import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.core.channels import (
    AD_CLICK_ID_KEYS,
    DEFAULT_CHANNEL_RULES,
    ChannelRule,
    channel_slug,
    parse_channel_rules,
)


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("email", "email"),
        (" Paid Search ", "paid_search"),
        ("paid-social", "paid_social"),
        ("paid - \t social", "paid_social"),
        ("Newsletter_DE", "newsletter_de"),
        ("a" * 64, "a" * 64),
    ],
)
def test_channel_slug(text: str, slug: str) -> None:
    assert channel_slug(text) == slug


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a" * 65, "longer than 64"),
        ("google.com", "only letters"),
        ("café", "only letters"),
        ("paid/search", "only letters"),
    ],
)
def test_channel_slug_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        channel_slug(text)


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_channel_slug_is_a_slug_and_idempotent(text: str) -> None:
    try:
        slug = channel_slug(text)
    except ValueError:
        return
    assert re.fullmatch(r"[a-z0-9_]{1,64}", slug)
    assert channel_slug(slug) == slug


@pytest.mark.parametrize(
    ("source", "medium", "click_ids", "channel"),
    [
        (None, None, (), None),
        ("", "  ", (), None),
        ("some_site", None, (), None),
        ("(direct)", "(none)", (), "direct"),
        ("direct", None, (), "direct"),
        ("google", "cpc", (), "paid_search"),
        ("www.google.de", "CPC", (), "paid_search"),
        ("bing", "ppc", (), "paid_search"),
        ("whatever", "paid_search", (), "paid_search"),
        ("facebook", "paid", (), "paid_social"),
        ("instagram", "cpm", (), "paid_social"),
        ("linkedin", "paid-social", (), "paid_social"),
        ("partner_x", "paid_social", (), "paid_social"),
        ("amazon", "referral", (), "marketplace"),
        ("ebay.de", None, (), "marketplace"),
        ("adnetwork", "display", (), "display"),
        ("adnetwork", "banner", (), "display"),
        ("adnetwork", "cpm", (), "display"),
        ("basketshop", "cpc", (), "paid_other"),
        ("newsletter", "email", (), "email"),
        ("mailchimp", "e-mail", (), "email"),
        ("newsletter_2026_11", None, (), "email"),
        ("awin", "affiliate", (), "affiliate"),
        ("facebook", "social", (), "organic_social"),
        ("t.co", None, (), "organic_social"),
        ("google", "organic", (), "organic"),
        ("blog.example.com", "referral", (), "referral"),
        (None, None, ("gclid",), "paid_search"),
        (None, None, ("msclkid",), "paid_search"),
        (None, None, ("fbclid",), "paid_social"),
        (None, None, ("ttclid", "li_fat_id"), "paid_social"),
        # Explicit UTM values outrank auto-tagging (Meta adds fbclid to organic links too).
        ("newsletter", "email", ("fbclid",), "email"),
    ],
)
def test_default_grouping(
    source: str | None, medium: str | None, click_ids: tuple[str, ...], channel: str | None
) -> None:
    assert DEFAULT_CHANNEL_RULES.group(source, medium, click_ids) == channel


@settings(max_examples=200)
@given(
    st.none() | st.text(max_size=30),
    st.none() | st.text(max_size=30),
    st.sets(st.sampled_from(sorted(AD_CLICK_ID_KEYS))),
)
def test_grouping_names_a_default_channel_or_none(
    source: str | None, medium: str | None, click_ids: set[str]
) -> None:
    channel = DEFAULT_CHANNEL_RULES.group(source, medium, click_ids)
    assert channel is None or channel in {rule.channel for rule in DEFAULT_CHANNEL_RULES.rules}
    if click_ids:
        assert channel is not None


def test_parse_channel_rules() -> None:
    rules = parse_channel_rules(
        """
        # local partners first, then the defaults
        partners: source=awin|cj; medium=affiliate
        Brand Search: medium=cpc; source=google; click_id=gclid
        tiktok_ads: click_id=ttclid
        defaults
        """
    )
    assert rules.group("cj", "affiliate", ()) == "partners"
    assert rules.group("cj", "email", ()) == "email"
    assert rules.group("google", "cpc", ()) == "paid_search"
    assert rules.group("google", "cpc", ("gclid",)) == "brand_search"
    assert rules.group(None, None, ("ttclid",)) == "tiktok_ads"
    assert rules.rules[3:] == DEFAULT_CHANNEL_RULES.rules


def test_parse_channel_rules_comma_separated() -> None:
    rules = parse_channel_rules("a: medium=x, b: source=y\\x2cz")
    assert [rule.channel for rule in rules.rules] == ["a", "b"]
    assert rules.group("y,z", None, ()) == "b"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no channel rules"),
        ("# only a comment", "no channel rules"),
        ("paid_search", "expected 'channel: condition"),
        ("paid_search:", "no condition"),
        (": medium=cpc", "channel must not be empty"),
        ("bad.name: medium=cpc", "channel only letters"),
        ("x: colour=red", "must be medium=, source= or click_id="),
        ("x: medium", "must be medium=, source= or click_id="),
        ("x: medium=", "medium is empty"),
        ("x: medium=a; medium=b", "medium is given twice"),
        ("x: medium=(unclosed", "missing \\)"),
        ("x: click_id=utm_id", "unknown click id key 'utm_id'"),
    ],
)
def test_parse_channel_rules_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_channel_rules(text)


def test_rule_channel_must_be_a_slug() -> None:
    with pytest.raises(ValueError, match="not a slug"):
        ChannelRule(channel="Paid Search", medium=re.compile("cpc"))


def _slug_by_regex(text: str) -> str | None:
    # channel_slug as it was before its fast path for text that is a slug already.
    slug = re.sub(r"[\s\-]+", "_", text.strip().lower())
    if not slug or len(slug) > 64 or re.fullmatch(r"[a-z0-9_]+", slug) is None:
        return None
    return slug


@settings(max_examples=500)
@given(st.from_regex(r"[a-zA-Z0-9_ \-.Kİ]{0,70}", fullmatch=True) | st.text(max_size=70))
def test_channel_slug_fast_path_agrees(text: str) -> None:
    try:
        slug: str | None = channel_slug(text)
    except ValueError:
        slug = None
    assert slug == _slug_by_regex(text)
