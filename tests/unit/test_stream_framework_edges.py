"""The worker's hand-over of fetched records (`stream.framework`) against aiokafka's own on the
edges of a fetch answer: control batches (skipped, CRC checked), a truncated last batch (the
broker cuts an answer at its size limit), a batch whose last records were compacted away (its
next offset past its last record), and CRCs of 2**31 or more (read unsigned)."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from typing import Any, Final

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from stream.framework import FetchedRecords
from tests.unit.test_stream_framework import (
    _AiokafkaRecords,
    _AiokafkaResult,
    _drained,
    _WorkerRecords,
    _WorkerResult,
)

_ATTRIBUTES_AT: Final = 21
_CRC_AT: Final = 17
_LAST_OFFSET_DELTA_AT: Final = 23
_CONTROL: Final = 0x20


def _resigned(built: bytearray) -> bytes:
    """The batch with its CRC-32C recomputed over what it covers (attributes to the end)."""
    struct.pack_into(">I", built, _CRC_AT, calc_crc32c(bytes(built[_ATTRIBUTES_AT:])))
    return bytes(built)


def _batch(base: int, deltas: Iterable[int], control: bool = False) -> bytes:
    """A v2 record batch at offset `base` of records at `deltas`, each valued its offset."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for delta in deltas:
        builder.append(delta, 0, None, str(base + delta).encode(), [])
    built = builder.build()
    struct.pack_into(">q", built, 0, base)  # the broker's offset; outside the CRC
    if control:
        attributes = struct.unpack_from(">h", built, _ATTRIBUTES_AT)[0] | _CONTROL
        struct.pack_into(">h", built, _ATTRIBUTES_AT, attributes)
        return _resigned(built)
    return bytes(built)


def _tail_compacted(base: int, deltas: Iterable[int], last_delta: int) -> bytes:
    """A batch whose records after `deltas` up to `last_delta` were compacted away."""
    built = bytearray(_batch(base, deltas))
    struct.pack_into(">i", built, _LAST_OFFSET_DELTA_AT, last_delta)  # under the CRC
    return _resigned(built)


ANSWERS: Final = {
    "control first": _batch(0, [0], True) + _batch(1, range(5)),
    "control in the middle": _batch(0, range(5)) + _batch(5, [0], True) + _batch(6, range(3)),
    "control last": _batch(0, range(5)) + _batch(5, [0], True),
    "control only": _batch(0, [0], True),
    "truncated last batch": _batch(0, range(5)) + _batch(5, range(4))[:-7],
    "truncated within the header": _batch(0, range(5)) + _batch(5, range(4))[:9],
    "compacted tail, then a batch": _tail_compacted(0, [0, 1, 2], 6) + _batch(7, range(3)),
    "compacted tail last": _batch(0, range(3)) + _tail_compacted(3, [0, 1], 5),
}


@pytest.mark.parametrize("answer_type", [FetchedRecords, MemoryRecords])
@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
@pytest.mark.parametrize("seed", range(20))
def test_the_edges_of_an_answer_are_taken_as_aiokafka_takes_them(
    answer: bytes, seed: int, answer_type: type[Any]
) -> None:
    """Same records and the same position after every take (past a compacted tail and a
    control batch, not past a truncated batch), wherever the fetch started."""
    draw = random.Random(seed)
    fetch_offset = draw.choice([0, 1, 2, 3, 5, 6])
    takes = [draw.choice([None, 1, 2, 3, 4, 5, 7, 100, "one"]) for _ in range(30)]
    worker = _drained(_WorkerResult, _WorkerRecords, answer, fetch_offset, takes, answer_type)
    aiokafka = _drained(
        _AiokafkaResult, _AiokafkaRecords, answer, fetch_offset, takes, MemoryRecords
    )
    assert worker == aiokafka


def test_a_compacted_tail_moves_the_position_past_it() -> None:
    answer = _batch(0, range(3)) + _tail_compacted(3, [0, 1], 5)
    steps = _drained(_WorkerResult, _WorkerRecords, answer, 0, [None], FetchedRecords)
    assert steps == [([(offset, str(offset).encode()) for offset in range(5)], 9, False)]


def test_crcs_of_2_to_the_31_or_more_pass() -> None:
    """The CRC is read unsigned: about half of all batches have the top bit set."""
    high = 0
    for base in range(200):
        answer = _batch(base, range(3))
        high += struct.unpack_from(">I", answer, _CRC_AT)[0] >= 2**31
        steps = _drained(_WorkerResult, _WorkerRecords, answer, base, [None], FetchedRecords)
        assert [offset for offset, _ in steps[0][0]] == [base, base + 1, base + 2]
    assert high > 50
