"""Filling a produce batch: `tracker.framework.fill_batch` against aiokafka's public append.

    .venv/bin/python bench/tracker_batch_fill.py [--records 2000] [--repeat 5]

No services. Microseconds per record, best of `--repeat` runs, for records shaped like the
tracker's (a 10-byte key, a JSON value of about 80 bytes) written into one batch large enough
for all of them. The public `BatchBuilder.append` is what `fill_batch` would be without the
private names; tracker/framework.py's docstring says why the difference keeps them.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from aiokafka.producer.message_accumulator import BatchBuilder

from tracker.framework import fill_batch
from tracker.spool import SpoolRecord

NOW_MS = 1_700_000_000_000
HEADERS: list[tuple[str, bytes]] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    records = [
        SpoolRecord(
            "adpulse.events",
            b"k%09d" % number,
            b'{"event_id":"%032d","type":"click","channel":"email","campaign":"bf"}' % number,
        )
        for number in range(args.records)
    ]
    indices = list(range(len(records)))

    def direct() -> None:
        fill_batch(BatchBuilder(1 << 24, 0), records, indices, 0, NOW_MS)

    def public() -> None:
        append = BatchBuilder(1 << 24, 0).append
        for index in indices:
            record = records[index]
            if append(timestamp=NOW_MS, key=record[1], value=record[2], headers=HEADERS) is None:
                break

    cases: list[tuple[str, Callable[[], None]]] = [
        ("fill_batch (C builder, private names)", direct),
        ("BatchBuilder.append (public)", public),
    ]
    for name, case in cases:
        best = min(timeit.repeat(case, number=10, repeat=args.repeat)) / 10
        print(f"{name:40} {best / len(records) * 1e6:6.3f} µs a record")


if __name__ == "__main__":
    main()
