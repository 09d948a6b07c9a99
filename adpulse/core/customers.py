"""Customer ids: an e-mail address or a CRM id becomes a keyed hash at the edge, never kept in
clear (not in Kafka, not in Redis).

HMAC-SHA256 with ``ADPULSE_HASH_KEY``, the first 128 bits in hex: the same customer gives the
same hash on every tracker with the same key, and without the key nobody can test a guessed
address against it. An e-mail address is compared without case and surrounding space.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from adpulse.core.fields import parse_text

MAX_CUSTOMER_ID_LENGTH: Final = 256
HASH_HEX_DIGITS: Final = 32
MAKE_A_KEY: Final = "python -c 'import secrets;print(secrets.token_hex(32))'"
NO_KEY: Final = (
    "the tracker has no ADPULSE_HASH_KEY to hash customer ids with; set one (make it with "
    f"`{MAKE_A_KEY}`) and keep it: another key makes every customer new"
)


def hash_customer(customer_id: str, key: bytes) -> str:
    """The keyed hash of a customer id, 32 hex digits.

    >>> hash_customer(" Ann@Example.com", b"k") == hash_customer("ann@example.com", b"k")
    True
    """
    text = customer_id.strip()
    if "@" in text:
        text = text.lower()
    digest = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return digest[:HASH_HEX_DIGITS]


def parse_customer(value: object, key: bytes | None) -> str | None:
    """A client's customer id, hashed; ValueError naming ADPULSE_HASH_KEY when there is none."""
    text = parse_text(value, MAX_CUSTOMER_ID_LENGTH)
    if text is None:
        return None
    if key is None:
        raise ValueError(NO_KEY)
    return hash_customer(text, key)
