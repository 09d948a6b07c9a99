"""Per-event costs of the paths derived from the event contract (adpulse/core/contract.py).

    .venv/bin/python bench/contract_paths.py [--number 20000] [--repeat 7]

Prints the best of `--repeat` timeit runs, in microseconds an event, for:
- `pixel`: `QueryRecords.from_query` of the benchmark's pixel query (tracker/records.py);
- `parse+to_wire`: `parse_event` and `Event.to_wire` of a JSON conversion (the general path);
- `from_wire`: `Event.from_wire` of that conversion's record (the worker's careful path);
- `decode`: `decode_records` over the worker benchmark's event mix, per record (stream/batch.py).
No services needed. To compare two trees in one run, run it alternately with
``PYTHONPATH=<other tree>`` (the editable install yields to PYTHONPATH).
"""

from __future__ import annotations

import argparse
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from worker_throughput import build_events  # noqa: E402  (beside this script)

from adpulse.core.channels import DEFAULT_CHANNEL_RULES  # noqa: E402
from adpulse.core.event import Event, EventRules, parse_event  # noqa: E402
from stream.batch import decode_records  # noqa: E402
from tracker.records import QueryRecords  # noqa: E402

PIXEL = (
    b"type=click&channel=email&campaign=black_friday"
    b"&utm_source=newsletter&utm_medium=email&utm_campaign=bf26&_=1732398780123"
)
CONVERSION = {
    "type": "conversion",
    "order_id": "A-1001",
    "value": "49.90",
    "currency": "USD",
    "click_id": "clk-0123456789",
    "utm_source": "google",
    "utm_medium": "cpc",
}
NOW = datetime(2026, 11, 23, 21, 53, 0, 123456, tzinfo=UTC)


def best(function: object, number: int, repeat: int, per: int = 1) -> float:
    times = timeit.repeat(function, number=number, repeat=repeat)  # type: ignore[arg-type]
    return min(times) / number / per * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rules = EventRules()
    records = QueryRecords(rules, ignored=frozenset({"_", "cb"}), group=DEFAULT_CHANNEL_RULES.group)
    if records.from_query(PIXEL, NOW, "203.0.113.0") is None:
        raise SystemExit("the pixel did not take the fast path")
    wire = parse_event(CONVERSION, rules=rules, received_at=NOW).to_wire()
    values = [event.to_wire() for event in build_events(2000)]
    figures = {
        "pixel": best(
            lambda: records.from_query(PIXEL, NOW, "203.0.113.0"), args.number, args.repeat
        ),
        "parse+to_wire": best(
            lambda: parse_event(CONVERSION, rules=rules, received_at=NOW).to_wire(),
            args.number,
            args.repeat,
        ),
        "from_wire": best(lambda: Event.from_wire(wire), args.number, args.repeat),
        "decode": best(
            lambda: decode_records(values), max(5, args.number // 1000), args.repeat, len(values)
        ),
    }
    print("  ".join(f"{name} {micros:.2f}" for name, micros in figures.items()), "(us an event)")


if __name__ == "__main__":
    main()
