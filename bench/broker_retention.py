"""Can the embedded Tansu broker drop old records? Retention configs and DeleteRecords, measured.

    .venv/bin/python bench/broker_retention.py [--rounds 8] [--records 20000]

Three fresh brokers (memory storage, as `adpulse dev` and the tests run it), one per way of
dropping records, each fed `--rounds` rounds of `--records` 300-byte records into a
2-partition topic, one round a second; after each round the broker's RSS and the partitions'
first offsets are printed:

- `plain`: a topic with no configs (the baseline);
- `retention`: a topic created with retention.ms=2000 and retention.bytes=1000000;
- `delete`: after each round, DeleteRecords up to the end of each partition.

Each record costs the broker about 0.4 KB in every mode if none of them drops anything.

Then `--batches` one-record batches (what a tracker at a low rate produces), timing after each
5,000 a fetch of the newest record (what a caught-up worker does): Tansu's fetch slows with
the number of batches a partition holds, long before its memory is large.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adpulse.cli.broker_recycling import resident_memory  # noqa: E402
from adpulse.cli.processes import tansu_binary  # noqa: E402
from tests.services import KafkaBroker  # noqa: E402

TOPIC = "retention-probe"
RETENTION = {"retention.ms": "2000", "retention.bytes": "1000000"}


async def first_offsets(bootstrap: str, partitions: list[TopicPartition]) -> str:
    """The partitions' first offsets (ListOffsets earliest): above 0 once anything is dropped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        first = await consumer.beginning_offsets(partitions)
        return f"first offsets {[first[tp] for tp in partitions]}"
    finally:
        await consumer.stop()


async def feed(mode: str, broker: KafkaBroker, rounds: int, records: int) -> None:
    pid = broker._process.process.pid if broker._process.process else 0
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, acks=1)
    await producer.start()
    partitions = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    sent = [0, 0]
    try:
        configs = RETENTION if mode == "retention" else {}
        await admin.create_topics([NewTopic(TOPIC, 2, 1, topic_configs=configs)])
        for number in range(rounds):
            pending = [
                await producer.send(TOPIC, b"x" * 300, partition=index % 2)
                for index in range(records)
            ]
            await asyncio.gather(*pending)
            sent = [sent[0] + records // 2, sent[1] + records - records // 2]
            note = ""
            if mode == "delete":
                wanted = {tp: RecordsToDelete(sent[tp.partition]) for tp in partitions}
                try:
                    await asyncio.wait_for(admin.delete_records(wanted, timeout_ms=3000), 5)
                    note = "; DeleteRecords answered"
                except (KafkaError, TimeoutError, OSError) as error:
                    note = f"; DeleteRecords failed: {type(error).__name__}"
            rss = (resident_memory(pid) or 0) / 1e6
            offsets = await first_offsets(broker.bootstrap, partitions)
            print(f"  {mode:<9} round {number}: {sum(sent):>7} records, RSS {rss:6.1f} MB, "
                  f"{offsets}{note}", flush=True)  # fmt: skip
            await asyncio.sleep(1)
    finally:
        await producer.stop()
        await admin.close()


async def time_fetches(broker: KafkaBroker, batches: int) -> None:
    pid = broker._process.process.pid if broker._process.process else 0
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, acks=1)
    await producer.start()
    tp = TopicPartition(TOPIC, 0)
    try:
        for sent in range(1, batches + 1):
            batch = producer.create_batch()
            batch.append(key=None, value=b"x" * 400, timestamp=None)
            await (await producer.send_batch(batch, TOPIC, partition=0))
            if sent % 5000:
                continue
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=50)
            await consumer.start()
            try:
                consumer.assign([tp])
                consumer.seek(tp, sent - 1)
                began = time.perf_counter()
                fetched = await consumer.getmany(timeout_ms=3000)
                took = time.perf_counter() - began
            finally:
                await consumer.stop()
            rss = (resident_memory(pid) or 0) / 1e6
            answer = f"{took * 1000:.0f} ms" if fetched else f"nothing within {took:.1f} s"
            print(f"  {sent:>6} batches, RSS {rss:5.1f} MB: newest record fetched in {answer}",
                  flush=True)  # fmt: skip
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=30_000)
    args = parser.parse_args()
    print(f"broker: {tansu_binary()}")
    for mode in ("plain", "retention", "delete"):
        broker = KafkaBroker()
        broker.start()
        began = time.monotonic()
        try:
            asyncio.run(feed(mode, broker, args.rounds, args.records))
        finally:
            lines = broker.log_path.read_text(errors="replace").splitlines()
            broker.close()
        panics = [n for n, line in enumerate(lines) if "panicked at" in line]
        print(f"  {mode}: {time.monotonic() - began:.0f} s; {len(panics)} panics in the broker log")
        if panics:
            first = panics[0]
            print(f"    first: {' '.join(lines[first : first + 2]).strip()}")
    broker = KafkaBroker()
    broker.start()
    try:
        asyncio.run(time_fetches(broker, args.batches))
    finally:
        broker.close()


if __name__ == "__main__":
    main()
