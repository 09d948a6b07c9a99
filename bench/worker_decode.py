"""Per-record costs of the worker's decode path, with timeit over the benchmark's event mix.

    .venv/bin/python bench/worker_decode.py [--records 5000] [--repeat 5]

Prints the best of `--repeat` runs, in microseconds a record, for:
- `Event.from_wire`, the careful path every record took before `decode_records`;
- `decode_records`, the worker's msgspec fast path (stream/batch.py);
- aiokafka wrapping each fetched record into a ConsumerRecord, against handing on the record
  batch's own record (`hand_on_batch_records` in stream/framework.py).
No services needed.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker_throughput import build_events  # noqa: E402  (beside this script)

from adpulse.core.event import Event  # noqa: E402
from stream.batch import decode_records  # noqa: E402
from stream.framework import _batch_record  # noqa: E402


def fetched_records(values: list[bytes]) -> list[Any]:
    """The values as aiokafka's fetcher reads them from a record batch."""
    records: list[Any] = []
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 30)
    for offset, value in enumerate(values):
        builder.append(offset, None, None, value, [])
    memory = MemoryRecords(bytes(builder.build()))
    while (batch := memory.next_batch()) is not None:
        records.extend(batch)
    return records


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

    records = fetched_records(values)
    tp = TopicPartition("adpulse.events", 0)
    partition = SimpleNamespace(_key_deserializer=None, _value_deserializer=None)
    wrap = PartitionRecords._consumer_record

    def wrapped() -> None:
        for record in records:
            wrap(partition, tp, record)

    def handed_on() -> None:
        for record in records:
            _batch_record(partition, tp, record)

    for name, function in (
        ("Event.from_wire", careful),
        ("decode_records (msgspec)", lambda: decode_records(values)),
        ("ConsumerRecord per fetched record", wrapped),
        ("batch record handed on", handed_on),
    ):
        print(f"{name:36} {per_record(function, count, args.repeat):6.2f} us a record")


if __name__ == "__main__":
    main()
