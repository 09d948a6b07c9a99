"""Tracked phone numbers: their normal form, the caller's hash, and their Redis layout.

The registry (written by `adpulse numbers`, read by the tracker) and the leases of dynamic
number insertion (written by the tracker's `GET /v1/number`, read by its `POST /v1/calls`) live
in Redis under one prefix, ``adpulse:`` by default. Declared here, once, because both the command
line and the tracker use them and neither may import the other:

==============================  =======  ===========================================  ==========
key                             type     content                                      expires
==============================  =======  ===========================================  ==========
``adpulse:numbers``             hash     E.164 number -> `NumberEntry`                never
``adpulse:static``              hash     ``{channel}\\t{campaign}`` -> static number    never
``adpulse:pool:{channel}``      zset     the channel's pooled numbers, scored by the  never
                                         end of their lease in ms (0: never leased)
``adpulse:lease:{number}``      hash     the number's last lease: ``visitor``,        lease and
                                         ``channel``, ``campaign``, ``since``,        a day
                                         ``until`` (ms)
``adpulse:visitor:{click_id}``  string   the number leased to that visitor (removed   lease
                                         when another visitor takes the number: at
                                         most one per leased number)
==============================  =======  ===========================================  ==========

On a Redis Cluster (``redis+cluster://``, `NumberKeys.in_cluster`) the same keys carry the hash
tag ``{numbers}`` after the prefix (``adpulse:{numbers}:numbers``, ``adpulse:{numbers}:pool:
{channel}`` ...): all in one slot, because the lease script reads the pool, the lease, the
visitor's key and the static slots in one call, the registry's writes are one MULTI/EXEC over
the registry, the static slots and the pools, and a call's attribution reads the lease and the
registry at once. One slot holds the whole registry and every lease: a lease is one short script
per visitor's page (not per pixel), which one master serves many thousands of times a second.

Numbers are E.164 (``+14155550123``), parsed by `phonenumbers` (Google's libphonenumber);
national input (``(415) 555-0123``) needs a default region (`PHONE_REGION`). A caller's number
never leaves the edge in clear: `caller_hash` is HMAC-SHA256 with `ADPULSE_HASH_KEY`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

import phonenumbers

from adpulse.core.options import Setting

MAX_NUMBER_LENGTH: Final = 64
"""The most characters of a phone number as sent (E.164 has at most 16)."""
LEASE_GRACE_MS: Final = 24 * 3600 * 1000
"""How long a lease's record outlives its end: a telephony webhook arrives after the call,
and the call counts for the lease held when it started."""
CLUSTER_TAG: Final = "{numbers}"
"""The hash tag of every key of the registry and the leases on a Redis Cluster (above)."""
STATIC: Final = "static"
POOL: Final = "pool"


class NumberError(ValueError):
    """A phone number that cannot be read; the message says why."""


def parse_region(text: str) -> str | None:
    """A two-letter region (ISO 3166-1 alpha-2) phonenumbers knows, or None for blank."""
    region = text.strip().upper()
    if not region:
        return None
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{region!r} is not a region code such as US, GB or DE")
    return region


PHONE_REGION: Setting[str | None] = Setting(
    "--phone-region",
    "ADPULSE_PHONE_REGION",
    None,
    parse_region,
    "region (ISO 3166-1 code such as US or DE) of phone numbers written without `+` and "
    "country code; without it such numbers are refused",
    name="phone_region",
)


def normalise_number(text: str, region: str | None = None) -> str:
    """`text` in E.164, or NumberError saying why not.

    >>> normalise_number("+1 (415) 555-0123"), normalise_number("030 1234567", "DE")
    ('+14155550123', '+49301234567')
    """
    if not isinstance(text, str):
        raise NumberError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_NUMBER_LENGTH:
        raise NumberError(f"longer than {MAX_NUMBER_LENGTH} characters")
    stripped = text.strip()
    if not stripped:
        raise NumberError("empty")
    if not stripped.startswith("+") and region is None:
        raise NumberError(
            f"{stripped!r} has no country code: write it as +<country code><number>, or set "
            "ADPULSE_PHONE_REGION (--phone-region) for national numbers"
        )
    try:
        parsed = phonenumbers.parse(stripped, region)
    except phonenumbers.NumberParseException as error:
        raise NumberError(f"{stripped!r} is not a phone number ({error._msg})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise NumberError(f"{stripped!r} has the wrong number of digits for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def display_number(number: str) -> str:
    """An E.164 number as people write it internationally: ``+1 415-555-0123``."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def caller_hash(key: str, number: str) -> str:
    """The keyed hash of a caller's E.164 number: what Kafka and Redis see instead of it."""
    return hmac.new(key.encode(), number.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class NumberEntry:
    """A registered number: `kind` is `STATIC` (one channel and campaign, always) or `POOL`
    (dynamic insertion for `channel`; campaign and click come from its lease)."""

    number: str
    kind: str
    channel: str
    campaign: str = ""

    def encode(self) -> str:
        return f"{self.kind}\t{self.channel}\t{self.campaign}"

    @classmethod
    def decode(cls, number: str, text: str) -> NumberEntry:
        kind, channel, campaign = [*text.split("\t"), "", ""][:3]
        return cls(number, kind, channel, campaign)


@dataclass(frozen=True, slots=True)
class NumberKeys:
    """The key names of the number registry and leases under one prefix."""

    prefix: str = "adpulse:"

    @classmethod
    def in_cluster(cls, prefix: str = "adpulse:") -> NumberKeys:
        """The layout on a Redis Cluster: every key under the hash tag `CLUSTER_TAG` (above)."""
        return cls(f"{prefix}{CLUSTER_TAG}:")

    @property
    def registry(self) -> str:
        return f"{self.prefix}numbers"

    @property
    def static(self) -> str:
        return f"{self.prefix}static"

    def pool(self, channel: str) -> str:
        return f"{self.prefix}pool:{channel}"

    def lease(self, number: str) -> str:
        return f"{self.prefix}lease:{number}"

    def visitor(self, click_id: str) -> str:
        return f"{self.prefix}visitor:{click_id}"

    @property
    def expression(self) -> str:
        """A regular expression (Python's and grep -E's) of this layout's keys, and of its
        cluster form's (`in_cluster`): the KPI key space's default prefix is the same, and its
        snapshots and clean-ups leave these out."""
        tag = re.escape(f"{CLUSTER_TAG}:")
        return f"^{re.escape(self.prefix)}({tag})?(numbers|static|pool:|lease:|visitor:)"

    def holds(self, key: str) -> bool:
        return re.match(self.expression, key) is not None


def static_field(channel: str, campaign: str = "") -> str:
    return f"{channel}\t{campaign}"


LEASE_SCRIPT: Final = r"""
-- A number of the channel's pool for a visitor (see adpulse/core/phone.py for the keys).
-- ARGV: prefix, channel, campaign, visitor (click id, may be ''), now ms, lease ms, grace ms.
-- Returns {number, how}: how is 'renewed' (the visitor's own), 'leased' (a free one),
-- 'reused' (the pool was exhausted: the lease ending soonest is taken over), 'static' (no
-- pool, or no visitor: the channel's static number), or {} when there is none.
local p, channel, campaign, visitor = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, lease, grace = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local pool = p .. 'pool:' .. channel
local function static()
  local number = redis.call('HGET', p .. 'static', channel .. '\t' .. campaign)
  if not number and campaign ~= '' then
    number = redis.call('HGET', p .. 'static', channel .. '\t')
  end
  if number then return {number, 'static'} end
  return {}
end
if visitor == '' or redis.call('EXISTS', pool) == 0 then return static() end
local function hold(number, since)
  local until_ = now + lease
  redis.call('ZADD', pool, until_, number)
  local key = p .. 'lease:' .. number
  -- The number's last visitor holds it no more: their key goes, so that a burst of visitors
  -- leaves at most one visitor key per leased number, not one per visitor until it expires.
  local before = redis.call('HGET', key, 'visitor')
  if before and before ~= visitor and redis.call('GET', p .. 'visitor:' .. before) == number then
    redis.call('DEL', p .. 'visitor:' .. before)
  end
  redis.call('HSET', key, 'visitor', visitor, 'channel', channel, 'campaign', campaign,
    'since', string.format('%d', since), 'until', string.format('%d', until_))
  redis.call('PEXPIRE', key, lease + grace)
  redis.call('SET', p .. 'visitor:' .. visitor, number, 'PX', lease)
end
local held = redis.call('GET', p .. 'visitor:' .. visitor)
if held and redis.call('ZSCORE', pool, held) then
  local owner = redis.call('HMGET', p .. 'lease:' .. held, 'visitor', 'since')
  if owner[1] == visitor then
    hold(held, tonumber(owner[2]))
    return {held, 'renewed'}
  end
end
local first = redis.call('ZRANGE', pool, 0, 0, 'WITHSCORES')
local number, ends = first[1], tonumber(first[2])
hold(number, now)
if ends > now then return {number, 'reused'} end
return {number, 'leased'}
"""
