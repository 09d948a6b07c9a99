"""Kafka's default partitioner (murmur2 of the key), fast enough for the tracker's hot path.

aiokafka's `murmur2` handles one byte at a time in Python, a large share of the tracker's budget
per pixel. `murmur2` here reads whole 32-bit words with struct; `murmur2_many` hashes a produce
batch's keys together, all keys of one length as the 64-bit lanes of a single Python int, so
that each step of the hash is one big-integer operation in C for the whole batch (figures in
bench/README.md, "Tracker"). `tests/unit/test_partitioner.py` checks both against aiokafka's
for arbitrary keys.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from functools import lru_cache

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
# Below this many keys of one length, one Python int per key is quicker than lanes.
_MIN_LANES = 4
# The lanes are built from native 32-bit words and read back as native 64-bit ones.
_LANES_WORK = sys.byteorder == "little" and array("I").itemsize == 4


@lru_cache(maxsize=64)
def _words(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


def murmur2(data: bytes) -> int:
    """The same 32-bit hash as the Java client's `Utils.murmur2`, as an unsigned int."""
    length = len(data)
    h = _SEED ^ length
    whole = length & ~3
    if whole:
        for k in _words(whole // 4).unpack_from(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra >= 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """`murmur2` of each key, in order."""
    if not _LANES_WORK or len(keys) < _MIN_LANES:
        return [murmur2(key) for key in keys]
    lengths = set(map(len, keys))
    if len(lengths) == 1:
        return _murmur2_lanes(keys, lengths.pop())
    # Keys of different lengths (client-chosen order or click ids): hash each length apart.
    by_length: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(index)
    hashes = [0] * len(keys)
    for length, indices in by_length.items():
        group = [keys[index] for index in indices]
        if len(group) < _MIN_LANES:
            found = [murmur2(key) for key in group]
        else:
            found = _murmur2_lanes(group, length)
        for index, hashed in zip(indices, found, strict=True):
            hashes[index] = hashed
    return hashes


def _murmur2_lanes(keys: Sequence[bytes], length: int) -> list[int]:
    """`murmur2` of keys that all have `length` bytes, key i in bits 64i to 64i+31 of one int.

    A lane is 64 bits wide so that a 32-bit value times `_M` never reaches the next lane;
    `mask` keeps the low 32 bits of every lane, as `_MASK` does for one key.
    """
    count = len(keys)
    mask = int.from_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" * count, "little")
    h = int.from_bytes(((_SEED ^ length).to_bytes(4, "little") + bytes(4)) * count, "little")
    whole = length & ~3
    joined = b"".join(keys)
    step = whole // 4
    if step:
        words = array("I", joined if whole == length else b"".join(key[:whole] for key in keys))
        lanes = array("I", bytes(8 * count))
        for word in range(step):
            lanes[::2] = words[word::step]
            k = (int.from_bytes(lanes, "little") * _M) & mask
            k = ((k ^ (k >> 24)) & mask) * _M
            h = ((h * _M) ^ k) & mask
    extra = length & 3
    if extra:
        tail = bytearray(8 * count)
        for offset in range(extra):
            tail[offset::8] = joined[whole + offset :: length]
        h = ((h ^ int.from_bytes(tail, "little")) * _M) & mask
    h ^= (h >> 13) & mask
    h = (h * _M) & mask
    h = (h ^ (h >> 15)) & mask
    return array("Q", h.to_bytes(8 * count, "little")).tolist()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` among `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partition_of(hashed: int, partitions: int) -> int:
    """`partition_for` of a key whose `murmur2` is `hashed`."""
    return (hashed & 0x7FFFFFFF) % partitions
