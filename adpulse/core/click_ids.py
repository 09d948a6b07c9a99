"""Signed click ids: the ids the tracker issues (`/c`, the site snippet) carry their attribution.

A signed id names its click's channel, campaign and minute and is signed with HMAC-SHA256 under
the server's click key (``ADPULSE_CLICK_KEY``), so that the worker attributes a conversion that
names one from the id itself: no registry entry per click, and nothing lost when the registry
is. The registry keeps only ids adpulse did not issue (gclid and the like, ids from before this
format, and a click whose channel and campaign are too long to carry, see `MAX_CARRIED_BYTES`).

Format, version 1: ``adp1.`` then the URL-safe base64 (no padding) of

    minute    4 bytes, big-endian: the click's minute since the Unix epoch (UTC)
    random    6 bytes: two clicks of one minute, channel and campaign still differ (for
              uniqueness only, the tag is what cannot be guessed: no syscall per id)
    channel   1 byte: 0 none, 1..len(CHANNEL_CODES) a built-in channel, 255 a slug that
              follows as 1 byte of length and its ASCII bytes
    campaign  1 byte of length, then the campaign's UTF-8 bytes (0: none)
    tag       12 bytes: HMAC-SHA256(key, "adp1." + the bytes above), truncated

So 37 characters for a built-in channel and no campaign, about 4/3 of a character more per byte
of campaign, at most 124 (below the contract's 128 for an id). A 96-bit tag cannot be guessed:
a forger would need about 2^95 tries per id, each one an event the worker counts as rejected.

A forged or altered id, an unknown version, or an id signed with neither the current nor the
previous key (``ADPULSE_CLICK_KEY_PREVIOUS``, kept while a rotation's ids are still within the
attribution window) reads as None: the worker attributes it to nothing and counts it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import random as _random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

PREFIX: Final = "adp"
"""What every adpulse-signed id starts with; the worker verifies only ids that do."""
VERSION: Final = "1"
_HEAD: Final = f"{PREFIX}{VERSION}."
_HEAD_BYTES: Final = _HEAD.encode()
TAG_BYTES: Final = 12
RANDOM_BYTES: Final = 6
_INLINE: Final = 255
MAX_CARRIED_BYTES: Final = 64
"""The most bytes of channel slug (when not built in) and campaign one id carries, which keeps
an id within 124 characters; a click with more gets an id from the registry instead."""
MAX_LENGTH: Final = len(_HEAD) + -(-(4 + RANDOM_BYTES + 3 + MAX_CARRIED_BYTES + TAG_BYTES) * 4 // 3)
"""The longest id `mint` writes: 124 characters."""

CHANNEL_CODES: Final[tuple[str, ...]] = (
    "affiliate", "audio", "cross_network", "direct", "display", "email", "influencer",
    "marketplace", "mobile", "mobile_push", "native", "offline", "organic", "organic_search",
    "organic_shopping", "organic_social", "organic_video", "paid_other", "paid_search",
    "paid_shopping", "paid_social", "paid_video", "partners", "referral", "remarketing", "sms",
    "unlisted",
)  # fmt: skip
"""Built-in channels carried as one byte: code i + 1. Ids live for the attribution window, so
this list only ever grows at its end; a test holds it to `channels.DEFAULT_CHANNELS`."""
_CHANNEL_CODE: Final = {name: code for code, name in enumerate(CHANNEL_CODES, start=1)}


@dataclass(frozen=True, slots=True)
class ClickKeys:
    """The key new ids are signed with, and the previous one, still accepted while a rotation's
    older ids may come back. Never in a repr."""

    current: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)


class CarriedClick(NamedTuple):
    """What a signed id says of its click: channel ("" for none), campaign ("" for none), and
    the click's minute since the Unix epoch. A named tuple, not a frozen dataclass: a worker
    makes one per conversion or lead naming a signed id, and the dataclass's construction was
    a large part of `verify` (bench/README.md, "Signed click ids")."""

    channel: str
    campaign: str
    minute: int


def is_signed(click_id: str) -> bool:
    """Whether `click_id` claims to be adpulse-signed (any version): only these are verified."""
    return click_id.startswith(PREFIX) and click_id[4:5] == "."


_BLOCK: Final = 64
"""SHA-256's block: HMAC pads (or first hashes) the key to it."""


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256 (RFC 2104) as its two hashes: the inner after the key's inner pad and the
    head, the outer after the key's outer pad. A copy of each tags a body without the key's
    set-up per id, and with neither `hmac.HMAC`'s Python methods nor OpenSSL's HMAC copy,
    which cost more than the hashing (a worker verifies one per conversion); `hmac`'s own
    pure-Python path does the same, and a test holds `_tag` to `hmac.digest`."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key) + _HEAD_BYTES)
    return inner, hashlib.sha256(bytes(byte ^ 0x5C for byte in key))


def _tag(key: bytes, body: bytes) -> bytes:
    """HMAC-SHA256(key, head + body), truncated."""
    inner, outer = _keyed(key)
    inner = inner.copy()
    inner.update(body)
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.digest()[:TAG_BYTES]


def mint(
    key: bytes,
    channel: str,
    campaign: str,
    minute: int,
    *,
    random: Callable[[int], bytes] = _random.randbytes,
) -> str | None:
    """A signed id for a click of `channel` and `campaign` ("" for none) in `minute`; None when
    the two are too long to carry (`MAX_CARRIED_BYTES`), for a registry id instead.

    >>> click_id = mint(b"k" * 32, "paid_search", "spring", 29_000_000)
    >>> verify(ClickKeys(b"k" * 32), click_id)
    CarriedClick(channel='paid_search', campaign='spring', minute=29000000)
    """
    code = _CHANNEL_CODE.get(channel, 0 if not channel else _INLINE)
    slug = channel.encode() if code == _INLINE else b""
    text = campaign.encode()
    if len(slug) + len(text) > MAX_CARRIED_BYTES:
        return None
    if not 0 <= minute < 2**32:
        raise ValueError(f"minute {minute} is outside the id's 32 bits")
    body = b"".join(
        (
            minute.to_bytes(4, "big"),
            random(RANDOM_BYTES),
            bytes((code,)),
            bytes((len(slug),)) + slug if code == _INLINE else b"",
            bytes((len(text),)),
            text,
        )
    )
    return _HEAD + base64.urlsafe_b64encode(body + _tag(key, body)).rstrip(b"=").decode()


def verify(keys: ClickKeys, click_id: str) -> CarriedClick | None:
    """What a signed id carries; None for anything not signed by one of `keys` in a known
    version, or not in its layout (a forged, altered or truncated id)."""
    if not click_id.startswith(_HEAD) or len(click_id) > MAX_LENGTH:
        return None
    raw = _decoded(click_id[len(_HEAD) :])
    if raw is None or len(raw) < 4 + RANDOM_BYTES + 2 + TAG_BYTES:
        return None
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(_tag(keys.current, body), tag) and (
        keys.previous is None or not hmac.compare_digest(_tag(keys.previous, body), tag)
    ):
        return None
    return _read_body(body)


_PADDING: Final = (b"", b"===", b"==", b"=")
"""The padding of an unpadded base64 text, by its length modulo 4 (1: never canonical)."""
_STANDARD: Final = bytes.maketrans(b"-_+/=", b"+/***")
"""URL-safe base64 to the standard alphabet `binascii` reads, and "+", "/" and "=" (not in an
id) to a character it skips and never writes: an id with any of them never encodes back to
the same text, as `verify` requires (a padded or standard-alphabet id is not canonical)."""


def _decoded(encoded: str) -> bytes | None:
    """The bytes of unpadded URL-safe base64 in the canonical form `mint` writes; None for
    anything else. Base64 that decodes is not always canonical (stray bits, characters the
    decoder skips): only the canonical form encodes back to what was read."""
    try:
        standard = encoded.encode("ascii").translate(_STANDARD) + _PADDING[len(encoded) % 4]
        raw = binascii.a2b_base64(standard)
    except ValueError:  # not ASCII (UnicodeEncodeError), or binascii.Error
        return None
    return raw if binascii.b2a_base64(raw, newline=False) == standard else None


_START: Final = struct.Struct(f">I{RANDOM_BYTES}xB")
"""The body's minute, random part (skipped) and channel code."""


def _read_body(body: bytes) -> CarriedClick | None:
    """The signed body's fields; None for a layout `mint` never writes (a key that signed
    something else)."""
    minute, code = _START.unpack_from(body)
    at = _START.size
    if code == _INLINE:
        length = body[at]
        slug = body[at + 1 : at + 1 + length]
        at += 1 + length
        if len(slug) != length or not slug.isascii():
            return None
        channel = slug.decode()
    elif code == 0:
        channel = ""
    elif code <= len(CHANNEL_CODES):
        channel = CHANNEL_CODES[code - 1]
    else:
        return None
    if at >= len(body):
        return None
    length = body[at]
    text = body[at + 1 :]
    if len(text) != length:
        return None
    try:
        campaign = text.decode()
    except UnicodeDecodeError:
        return None
    return CarriedClick(channel, campaign, minute)
