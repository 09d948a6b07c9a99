"""Per-record costs of the worker's decode path, with timeit over the benchmark's event mix.

    .venv/bin/python bench/worker_decode.py [--records 5000] [--repeat 5]

Prints the best of `--repeat` runs, in microseconds a record, for:
- `Event.from_wire`, the careful path every record took before `decode_records`;
- `decode_records`, the worker's msgspec fast path (stream/batch.py);
- aiokafka's `FetchResult.getall` over a fetched partition (a ConsumerRecord per record, a
  Python call chain per record), against the worker's (`hand_on_batch_records` in
  stream/framework.py: the record batch's own records, drained in C).
No services needed.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker_throughput import build_events  # noqa: E402  (beside this script)

from adpulse.core.event import Event  # noqa: E402
from stream.batch import decode_records  # noqa: E402
from stream.framework import _GETALL, _UNPACK_RECORDS, _batch_records, _getall  # noqa: E402

RECORDS_A_BATCH = 500
"""Records in one record batch, about what the tracker's producer writes (its linger)."""


def fetched_answer(values: list[bytes]) -> bytes:
    """The values as a fetch answer holds them: record batches of `RECORDS_A_BATCH`."""
    answer = b""
    for start in range(0, len(values), RECORDS_A_BATCH):
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 30)
        for delta, value in enumerate(values[start : start + RECORDS_A_BATCH]):
            builder.append(delta, None, None, value, [])
        built = builder.build()
        built[:8] = start.to_bytes(8, "big")  # the batch's base offset, outside its CRC
        answer += bytes(built)
    return answer


class _Position:
    paused = False
    position = 0

    def consumed_to(self, position: int) -> None:
        self.position = position


class _Assignment:
    active = True

    def __init__(self) -> None:
        self.state = _Position()

    def state_value(self, tp: TopicPartition) -> _Position:
        return self.state


def take_all(answer: bytes, unpack: Any, getall: Any) -> int:
    """Records taken from one fetched partition by `getall`, batches of `unpack`."""
    tp = TopicPartition("adpulse.events", 0)
    records_type = type("Records", (PartitionRecords,), {"_unpack_records": unpack})
    result_type = type("Result", (FetchResult,), {"getall": getall})
    records = records_type(tp, MemoryRecords(answer), [], 0, None, None, True, 0)
    result = result_type(tp, assignment=_Assignment(), partition_records=records, backoff=0)
    return len(result.getall(None))


def per_record(function: Any, count: int, repeat: int) -> float:
    return min(timeit.repeat(function, number=1, repeat=repeat)) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    values = [event.to_wire() for event in build_events(args.records)]
    count = len(values)

    def careful() -> None:
        for value in values:
            Event.from_wire(value)

    answer = fetched_answer(values)
    assert take_all(answer, _UNPACK_RECORDS, _GETALL) == take_all(answer, _batch_records, _getall)

    for name, function in (
        ("Event.from_wire", careful),
        ("decode_records (msgspec)", lambda: decode_records(values)),
        ("aiokafka's getall", lambda: take_all(answer, _UNPACK_RECORDS, _GETALL)),
        ("the worker's getall", lambda: take_all(answer, _batch_records, _getall)),
    ):
        print(f"{name:36} {per_record(function, count, args.repeat):6.2f} us a record")


if __name__ == "__main__":
    main()
