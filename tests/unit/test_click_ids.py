"""The signed click-id format (`adpulse.core.click_ids`): round trip, tampering, keys, length."""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import string
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpulse.core.channels import DEFAULT_CHANNELS, UNATTRIBUTED
from adpulse.core.click_ids import (
    CHANNEL_CODES,
    MAX_CARRIED_BYTES,
    MAX_LENGTH,
    CarriedClick,
    ClickKeys,
    is_signed,
    mint,
    verify,
)
from adpulse.core.click_ids import _decoded as _decoded
from adpulse.core.click_ids import _tag as _tag
from adpulse.core.event import EventRules
from adpulse.core.fields import parse_token

KEY = b"k" * 32
OTHER = b"o" * 32
KEYS = ClickKeys(KEY)
MINUTE = 29_430_000
URL_SAFE = frozenset(string.ascii_letters + string.digits + "-_.")
BASE64URL = string.ascii_letters + string.digits + "-_"

channels = st.one_of(
    st.just(""),
    st.sampled_from(CHANNEL_CODES),
    st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=1, max_size=32),
)
campaigns = st.text(max_size=16).filter(lambda text: "\x00" not in text)


def signed(channel: str = "paid_search", campaign: str = "spring", key: bytes = KEY) -> str:
    click_id = mint(key, channel, campaign, MINUTE)
    assert click_id is not None
    return click_id


@given(channel=channels, campaign=campaigns, minute=st.integers(0, 2**32 - 1))
def test_an_id_reads_back_what_it_was_minted_with(channel: str, campaign: str, minute: int) -> None:
    click_id = mint(KEY, channel, campaign, minute)
    assert click_id is not None
    assert is_signed(click_id)
    assert set(click_id) <= URL_SAFE
    assert len(click_id) <= MAX_LENGTH
    assert verify(KEYS, click_id) == CarriedClick(channel, campaign, minute)


def test_lengths_are_as_the_readme_says() -> None:
    assert len(signed("paid_search", "")) == 37
    assert len(signed("paid_search", "spring_sale_2026")) == 59
    # The longest an id gets: channel slug and campaign together at the limit.
    longest = mint(KEY, "x" * 32, "y" * (MAX_CARRIED_BYTES - 32), MINUTE)
    assert longest is not None
    assert len(longest) == MAX_LENGTH == 124
    # Within the contract's limit for a click id, so a conversion can name it.
    assert EventRules().max_id_length >= MAX_LENGTH
    assert parse_token(longest, EventRules().max_id_length) == longest


def test_ids_of_one_click_minute_differ() -> None:
    assert len({signed() for _ in range(100)}) == 100


def test_a_click_whose_channel_and_campaign_are_too_long_gets_no_signed_id() -> None:
    assert mint(KEY, "paid_search", "c" * MAX_CARRIED_BYTES, MINUTE) is not None
    assert mint(KEY, "paid_search", "c" * (MAX_CARRIED_BYTES + 1), MINUTE) is None
    assert mint(KEY, "own_channel", "c" * (MAX_CARRIED_BYTES - 10), MINUTE) is None
    assert mint(KEY, "paid_search", "é" * (MAX_CARRIED_BYTES // 2 + 1), MINUTE) is None


@pytest.mark.parametrize("channel", ["paid_search", "own_channel", ""])
def test_any_changed_character_is_refused(channel: str) -> None:
    """Tampering with any part: prefix, version, minute, random, channel, campaign or tag."""
    click_id = signed(channel, "spring")
    for position, character in enumerate(click_id):
        for replacement in {BASE64URL[(BASE64URL.find(character) + 1) % 64], "2", "."}:
            if replacement == character:
                continue
            tampered = click_id[:position] + replacement + click_id[position + 1 :]
            assert verify(KEYS, tampered) is None, (position, tampered)


def test_truncated_extended_and_reversioned_ids_are_refused() -> None:
    click_id = signed()
    for length in range(len(click_id)):
        assert verify(KEYS, click_id[:length]) is None
    assert verify(KEYS, click_id + "A") is None
    assert verify(KEYS, click_id + "AAAA") is None
    assert verify(KEYS, "adp2." + click_id[5:]) is None
    assert is_signed("adp2." + click_id[5:])


def test_another_key_is_refused_and_the_previous_one_accepted() -> None:
    old = signed(key=OTHER)
    assert verify(KEYS, old) is None
    assert verify(ClickKeys(KEY, previous=OTHER), old) == CarriedClick(
        "paid_search", "spring", MINUTE
    )
    assert verify(ClickKeys(KEY, previous=OTHER), signed()) is not None


def test_a_channel_code_beyond_the_table_is_refused_even_when_signed() -> None:
    """A layout `mint` never writes reads as forged, even under the right key."""
    import hashlib

    body = MINUTE.to_bytes(4, "big") + b"\0" * 6 + bytes((len(CHANNEL_CODES) + 1, 0))
    tag = hmac.digest(KEY, b"adp1." + body, hashlib.sha256)[:12]
    click_id = "adp1." + base64.urlsafe_b64encode(body + tag).rstrip(b"=").decode()
    assert verify(KEYS, click_id) is None


@pytest.mark.parametrize(
    "click_id",
    [
        uuid.uuid4().hex,  # the tracker's ids before the signed format
        "Cj0KCQiA-adp1.xyz",
        "adp1",
        "adpX",
        "EAIaIQobChMI",
        "E.C.P.abc",
    ],
)
def test_foreign_ids_are_not_taken_for_signed_ones(click_id: str) -> None:
    assert not is_signed(click_id)


def test_keys_never_show_in_a_repr() -> None:
    assert "k" * 8 not in repr(ClickKeys(KEY, OTHER))


def test_built_in_channel_codes_are_the_default_channels() -> None:
    """Codes are in ids for the attribution window: a new built-in channel is appended, none
    is ever removed or moved (this list is the one of version 1)."""
    assert len(set(CHANNEL_CODES)) == len(CHANNEL_CODES)
    assert set(CHANNEL_CODES) == DEFAULT_CHANNELS - {UNATTRIBUTED}
    assert CHANNEL_CODES[:3] == ("affiliate", "audio", "cross_network")
    assert CHANNEL_CODES[18] == "paid_search"


def decoded_as_first_written(encoded: str) -> bytes | None:
    """`verify`'s decoding as first written: lenient base64, then only what encodes back."""
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == encoded else None


# Base64url, what the decoder reads of the standard alphabet and its padding, what it skips,
# and what is not ASCII.
STRAY = BASE64URL + "+/=*.! \n\x00é€"


def test_decoding_of_every_text_of_up_to_three_characters_is_the_first_decodings() -> None:
    texts = (text for size in range(4) for text in itertools.product(STRAY, repeat=size))
    for encoded in map("".join, texts):
        assert _decoded(encoded) == decoded_as_first_written(encoded), encoded


@settings(max_examples=1000)
@given(st.text(alphabet=STRAY, max_size=40))
def test_decoding_refuses_what_the_first_decoding_refused(encoded: str) -> None:
    assert _decoded(encoded) == decoded_as_first_written(encoded)


@settings(max_examples=500)
@given(st.binary(max_size=40), st.integers(0, 40), st.sampled_from(STRAY))
def test_decoding_of_altered_canonical_text_is_the_first_decodings(
    raw: bytes, at: int, character: str
) -> None:
    """A canonical text with a character replaced, inserted or removed, and each possible last
    character (stray bits): the same bytes, or None, as the first decoding gives."""
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert _decoded(encoded) == raw
    at = min(at, len(encoded))
    for altered in (
        encoded[:at] + character + encoded[at + 1 :],
        encoded[:at] + character + encoded[at:],
        encoded[:at] + encoded[at + 1 :],
        *(encoded[:-1] + last for last in STRAY),
    ):
        assert _decoded(altered) == decoded_as_first_written(altered), altered


@settings(max_examples=300)
@given(key=st.binary(max_size=150), body=st.binary(max_size=100))
def test_the_tag_is_hmac_sha256_of_the_head_and_body(key: bytes, body: bytes) -> None:
    """Keys shorter and longer than SHA-256's block (64 bytes), which HMAC hashes first."""
    assert _tag(key, body) == hmac.digest(key, b"adp1." + body, "sha256")[:12]


@pytest.mark.parametrize(
    ("key", "channel", "campaign", "click_id"),
    [
        (b"k" * 32, "paid_search", "spring", "adp1.AcEQ8AABAgMEBRMGc3ByaW5nqQlymAhSPXvD6JY_"),
        (
            b"k" * 100,
            "own_channel",
            "été",
            "adp1.AcEQ8AABAgMEBf8Lb3duX2NoYW5uZWwFw6l0w6kJ62bgCG9GBXWO8W8",
        ),
    ],
)
def test_ids_minted_before_read_the_same(
    key: bytes, channel: str, campaign: str, click_id: str
) -> None:
    """Ids minted by the first version of this module (a fixed random part): minted the same,
    and read back, whatever the code that tags them."""
    assert mint(key, channel, campaign, MINUTE, random=lambda size: bytes(range(size))) == click_id
    assert verify(ClickKeys(key), click_id) == CarriedClick(channel, campaign, MINUTE)
