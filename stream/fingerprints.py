"""Fixed-width fingerprints of the ids the apply-batch script remembers, and where each is kept.

Redis keeps an id the script remembers (an event id for the dedupe window, an order, lead or
caller id, a foreign click id) as a 64-bit fingerprint instead of the id itself: BLAKE2b with
an 8-byte digest of the id, personalised per kind of id (so an event id and an order id that
happen to be equal are different fingerprints), read as a signed 64-bit integer and sent to the
script in decimal. Redis stores such an integer in 8 bytes in a set's intset and in 9 in a
hash's listpack, where a UUID took 36 and a gclid 96 plus a pointer and a header each.

A false match (another id with the same fingerprint within the window) happens with
probability about n / 2^64 per look-up with n ids of that kind in the window: at the README's
1,000 events/s, 86.4 million event ids in 24 hours, 5e-12 per event; 2.1 billion click ids in 30
days, 1e-10 per conversion (`keys`, "Remembered ids").

Each generation of a kind of id is a linear hash of buckets (`bucket_of`), each bucket a set or
hash small enough for Redis's compact encodings; the Lua script (`stream.lua`) places ids the
same way. Pure: no Redis here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import compress
from struct import unpack
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from stream.batch import COMMON_COLUMNS, ROW, SCRIPT_ROW, SCRIPT_WIDTHS, script_rows

PERSONS: Final = {
    "event_id": b"adpulse-event",
    "order_id": b"adpulse-order",
    "lead_id": b"adpulse-lead",
    "caller": b"adpulse-caller",
    "click_id": b"adpulse-click",
    "customer_id": b"adpulse-customer",
}
"""The row fields replaced by their fingerprint, and the BLAKE2b personalisation of each."""

_HASHERS: Final = {
    name: hashlib.blake2b(digest_size=8, person=person) for name, person in PERSONS.items()
}
_WIDTH: Final = len(ROW)
PLACED: Final = tuple(name for name in SCRIPT_ROW if name in PERSONS)
"""The fingerprinted columns in `batch.SCRIPT_ROW`'s order: the order of `script_arguments`'
lists of placing numbers, and of the script's reading of them (`stream.lua`, the ``@PLACE_ROW@``
mark)."""
# Per column of PLACED: its `SCRIPT_ROW` and `ROW` positions, its hasher, and the kinds whose
# script row ends before it (`batch.SCRIPT_WIDTHS`; a kind not listed carries every column).
_PLACED_AT: Final = tuple(
    (
        SCRIPT_ROW.index(name),
        ROW.index(name),
        _HASHERS[name],
        frozenset(kind for kind, width in SCRIPT_WIDTHS.items() if width <= SCRIPT_ROW.index(name)),
    )
    for name in PLACED
)

PLACE_DIGITS: Final = 12
"""A fingerprint's bucket is read from its last 12 decimal characters (exact in a Lua double)."""
_PLACE_MODULUS: Final = 10**PLACE_DIGITS
_json_text: Final = msgspec.json.Encoder().encode
_SHORT_NEGATIVE: Final = -(10 ** (PLACE_DIGITS - 1))
_UNSIGNED_MODULUS: Final = np.uint64(_PLACE_MODULUS)


def fingerprint(name: str, text: str) -> str:
    """The fingerprint of `text` as the row field `name` (a key of `PERSONS`), in decimal.

    >>> fingerprint("event_id", "9f1c")
    '4350357806126258626'
    """
    hasher = _HASHERS[name].copy()
    hasher.update(text.encode())
    return str(int.from_bytes(hasher.digest(), "little", signed=True))


def script_arguments(rows: list[str | int]) -> tuple[list[list[str | int]], list[list[int]]]:
    """What the script receives of a batch's rows (`batch.ROW`, flat): their script rows
    (`batch.script_rows`) with each id replaced by its fingerprint (an absent id, "", stays
    absent; the batch itself is left as it is: it may be retried), and the `place_value` of
    each fingerprint sent, one list per column of `PLACED`, in the rows' order. The script
    reads its ids' buckets from these instead of parsing each id's digits in Lua; it walks its
    rows and takes each list's next number for each id it finds there, so the fingerprints are
    not sent a second time (each a string redis-server hashes and looks up again).

    In one pass: the ids of the common columns (event and click ids) are fingerprinted straight
    into the script's common part, the other ids only in the rows whose script row carries them
    (a redemption's order id, beyond its kind's width, is never sent, so never hashed).
    tests/unit/test_fingerprints.py holds it to a reference built from `fingerprint` and
    `place_value`, id by id."""
    # The rows with more than the common columns (few: conversions, redemptions, leads): their
    # kind, number and where their rest starts. No copy of a row is kept: a thousand lists
    # alive would set off the garbage collector, which walks them all.
    extras: list[tuple[str | int, int, int]] = []
    common, rest = script_rows(rows, extras)
    places: list[list[int]] = []
    for place, offset, base, beyond in _PLACED_AT:
        if place < COMMON_COLUMNS:
            column = common[place::COMMON_COLUMNS]
            # A column with no id absent (the event ids: every row has one) is hashed as it is.
            ids = list(compress(column, column)) if "" in column else column
            try:
                joined, texts = _fingerprints(base, ids)
            except TypeError:  # a row built by hand may hold a number (0 for none)
                ids = list(map(str, compress(column, column)))
                joined, texts = _fingerprints(base, ids)
            if not ids:
                places.append([])
                continue
            if len(texts) == len(column):
                common[place::COMMON_COLUMNS] = texts
            else:
                for number, text in zip(compress(range(len(column)), column), texts, strict=True):
                    column[number] = text
                common[place::COMMON_COLUMNS] = column
        else:
            shift = place - COMMON_COLUMNS
            found = [
                (value, rest_start + shift)
                for kind, number, rest_start in extras
                if kind not in beyond and (value := rows[number * _WIDTH + offset])
            ]
            if not found:
                places.append([])
                continue
            joined, texts = _fingerprints(base, [str(value) for value, _ in found])
            for (_, at), text in zip(found, texts, strict=True):
                rest[at] = text
        places.append(place_numbers(np.frombuffer(joined, "<i8")))
    return [common, rest], places


def _fingerprints(base: hashlib.blake2b, ids: Sequence[str | int]) -> tuple[bytes, list[str]]:
    """The fingerprints of `ids` with `base`'s personalisation: their 8-byte digests joined
    (for `place_numbers`) and their decimal texts. TypeError for an id that is not a text."""
    if not ids:
        return b"", []
    digests: list[bytes] = []
    append = digests.append
    for data in map(str.encode, ids):  # type: ignore[arg-type]
        hasher = base.copy()
        hasher.update(data)
        append(hasher.digest())
    joined = b"".join(digests)
    values = unpack(f"<{len(ids)}q", joined)
    # A JSON encoder writes the decimal texts of a column's integers in one call, cheaper
    # than a str() each; the same digits (tests/unit/test_fingerprints.py).
    return joined, _json_text(values)[1:-1].decode().split(",")


def places_of(rows: Sequence[str | int]) -> list[list[int]]:
    """`script_arguments`' placing numbers for rows whose ids are fingerprints already (cluster
    mode's customer facts)."""
    kinds = rows[::_WIDTH]
    places: list[list[int]] = []
    for _, offset, _, beyond in _PLACED_AT:
        column = rows[offset::_WIDTH]
        values = [
            int(column[number])
            for number in compress(range(len(column)), column)
            if kinds[number] not in beyond
        ]
        places.append(place_numbers(np.array(values, np.int64)))
    return places


def place_numbers(values: npt.NDArray[np.int64]) -> list[int]:
    """`place_value` of each fingerprint in `values`, from the integers, in numpy: CPython's `%`
    of a 64-bit integer by 10^12 (a two-digit divisor) cost about 1,380 instructions a value,
    numpy's over the column with the list of ints back about 160 (bench/README.md)."""
    # |value| as an unsigned number: numpy's absolute value wraps -2^63 to itself, whose bits
    # read unsigned are 2^63, its magnitude; so every magnitude is exact.
    magnitude = np.abs(values).view(np.uint64)
    last_digits = (magnitude % _UNSIGNED_MODULUS).view(np.int64)
    # A negative value of fewer than 12 digits: its text is shorter than PLACE_DIGITS with the
    # sign, all of it.
    short = (values < 0) & (values > _SHORT_NEGATIVE)
    placed: list[int] = np.where(short, values, last_digits).tolist()
    return placed


def place_value(fingerprint_text: str) -> int:
    """The number a fingerprint's bucket is taken from (its last `PLACE_DIGITS` characters)."""
    return int(fingerprint_text[-PLACE_DIGITS:])


def bucket_of(fingerprint_text: str, buckets: int, split: int) -> int:
    """The bucket of a fingerprint in a generation of `buckets` + `split` buckets.

    Linear hashing: a generation starts with as many buckets as the ids of the one before it
    need (one when there is none); whenever it holds more than its load (`keys.IdLayout`) times
    its buckets, bucket `split` is split in two (its ids whose value mod 2 x buckets is not
    `split` move to bucket `split` + `buckets`) and `split` moves on; when every bucket is
    split, `buckets` doubles and `split` is 0 again. So a bucket never holds more than about
    twice the load, at every volume, without a setting.

    >>> bucket_of("1000000000007", 4, 0), bucket_of("1000000000007", 4, 2)
    (3, 3)
    """
    value = place_value(fingerprint_text)
    bucket = value % buckets
    if bucket < split:
        bucket = value % (2 * buckets)
    return bucket
