"""Cluster mode's routing (`stream.cluster`): a batch cut into parts by routing key, each part's
rows in order with the offsets of their partitions, and the parts' hash tags spread."""

from __future__ import annotations

import argparse
import hashlib

import pytest
from hypothesis import given
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from adpulse.core.event import Event, EventType, partition_key
from adpulse.core.options import (
    REDIS_URL,
    SettingError,
    cluster_node_url,
    parse_store_url,
    resolve,
)
from stream.batch import EVENT_FIELDS, decode_events, make_row
from stream.cluster import coupon_codes, fact_calls, read_fact, row_key, split_batch
from stream.keys import CLUSTER_PARTS, KeySpace, part_of
from stream.lua import APPLY_BATCH
from stream.store import KpiStore
from tests.unit.test_stream_aggregate import NOW, event_streams, make_event


def test_a_row_routes_by_the_id_its_kafka_record_is_keyed_by() -> None:
    click, conversion = EventType.CLICK, EventType.CONVERSION
    events = [
        make_event("e1", click, NOW, channel="search", click_id="k1"),
        make_event("e2", conversion, NOW, click_id="k1", order_id="o1"),
        make_event("e3", conversion, NOW, order_id="o1"),
        make_event("e4", EventType.LEAD, NOW, lead_id="l1"),
        make_event("e5", EventType.REDEMPTION, NOW, coupon="SAVE10"),
    ]
    batch = decode_events(events)
    rows = [batch.rows[i : i + EVENT_FIELDS] for i in range(0, len(batch.rows), EVENT_FIELDS)]
    assert [row_key(row) for row in rows] == [partition_key(e).decode() for e in events]
    assert coupon_codes(batch) == ["SAVE10"]


def _rows(flat: list[str | int]) -> list[tuple[str | int, ...]]:
    return [tuple(flat[i : i + EVENT_FIELDS]) for i in range(0, len(flat), EVENT_FIELDS)]


@given(event_streams())
def test_parts_keep_every_row_in_order_with_its_offsets(events: list[Event]) -> None:
    batch = decode_events(events)
    original = _rows(batch.rows)
    # Two partitions' rows, the second's offsets from 100 on.
    half = len(original) // 2
    batch.sources = [
        ("t:0", 0, list(range(half))),
        ("t:1", half, list(range(100, 100 + len(original) - half))),
    ]
    expected = {
        (name, offset, original[first + position])
        for name, first, offsets in batch.sources
        for position, offset in enumerate(offsets)
    }
    parts = split_batch(batch)
    found = set()
    for number, part in parts.items():
        rows = _rows(part.rows)
        assert rows == [row for row in original if part_of(row_key(row)) == number]
        assert all(part_of(event.event_id) == number for event in part.spend)
        for name, first, offsets in part.sources:
            assert offsets == sorted(offsets)
            found |= {(name, o, rows[first + p]) for p, o in enumerate(offsets)}
    assert found == expected
    assert sorted(e.event_id for p in parts.values() for e in p.spend) == sorted(
        e.event_id for e in batch.spend
    )


def test_the_parts_tags_lie_in_equal_slot_ranges() -> None:
    width = REDIS_CLUSTER_HASH_SLOTS // CLUSTER_PARTS
    keys = KeySpace()
    for number in range(CLUSTER_PARTS):
        part = keys.part(number)
        assert part.prefix.startswith("adpulse:{")
        slots = {key_slot(name.encode()) for name in (part.stats, part.minute(1), part.totals)}
        assert len(slots) == 1
        assert slots.pop() // width == number
        assert keys.in_part(keys.day(20260101), number) == part.day(20260101)


def test_the_store_url_takes_one_instance_or_a_cluster() -> None:
    assert parse_store_url("redis+cluster://10.0.0.5:6379") == "redis+cluster://10.0.0.5:6379"
    assert parse_store_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    with pytest.raises(ValueError, match="redis\\+cluster://host:port"):
        parse_store_url("redis+cluster://")
    with pytest.raises(ValueError, match="rediss\\+cluster:// \\(a Redis Cluster\\)"):
        parse_store_url("http://localhost:6379")


def test_a_cluster_url_over_tls_is_kept_and_a_database_other_than_0_refused() -> None:
    assert parse_store_url("rediss+cluster://h:6379") == "rediss+cluster://h:6379"
    assert cluster_node_url("rediss+cluster://u:p@h:6379/0") == "rediss://u:p@h:6379/0"
    assert cluster_node_url("redis+cluster://h:6379") == "redis://h:6379"
    assert cluster_node_url("redis://h:6379/3") is None
    assert parse_store_url("redis+cluster://h:6379/0") == "redis+cluster://h:6379/0"
    for url in ("redis+cluster://h:6379/3", "rediss+cluster://h:6379?db=2"):
        with pytest.raises(SettingError, match=r"ADPULSE_REDIS_URL.*database 0 only"):
            resolve(argparse.Namespace(), {"ADPULSE_REDIS_URL": url}, REDIS_URL)
    with pytest.raises(SettingError, match=r"ADPULSE_REDIS_URL.*rediss\+cluster:// \(TLS\)"):
        resolve(argparse.Namespace(), {"ADPULSE_REDIS_URL": "unix+cluster://h:1"}, REDIS_URL)
    with pytest.raises(ValueError, match="database 0 only"):
        KpiStore.from_url("redis+cluster://h:6379/3")


def test_customer_facts_are_read_and_sent_in_their_batches_order() -> None:
    """Facts from two source parts for one customer part: in (stamp, row) order, whatever the
    order they were read in, each with its source part and number."""
    late = read_fact(3, 7, "2\t200\tn\t-42\t1000\tsearch\tspring\tpending\t5000000\t9\t4")
    early = read_fact(5, 7, "1\t100\tx\t-42\t990\t\t\t\t-250000\t8\t12")
    other = read_fact(3, 2, "1\t200\tn\t77\t1001\temail\t\t\t0\t10\t1")
    calls = fact_calls([late, other, early])
    assert sorted(calls) == [2, 7]
    rows, sources = calls[7]
    assert sources == [[5, 1], [3, 2]]
    first, second = (rows.rows[i * EVENT_FIELDS : (i + 1) * EVENT_FIELDS] for i in range(2))
    assert first == make_row(kind="x", event_id="8", minute=990, customer_id="-42",
                             value_micros=-250_000)  # fmt: skip
    assert second == make_row(kind="n", event_id="9", minute=1000, channel="search",
                              campaign="spring", customer_id="-42", status="pending",
                              value_micros=5_000_000)  # fmt: skip
    assert calls[2][1] == [[3, 1]]


def test_the_script_picks_customer_parts_among_the_parts_python_reads() -> None:
    """The script's customer part is scaled to `CLUSTER_PARTS` (filled in, not written twice);
    with 16 parts it is the SHA1's first hex digit, where customers already are."""
    assert f"math.floor(high * {CLUSTER_PARTS} / 4294967296)" in APPLY_BATCH
    for customer in ("cust-a", "-42", "77", ""):
        digest = hashlib.sha1(customer.encode()).hexdigest()
        part = int(digest[:8], 16) * CLUSTER_PARTS // 2**32
        assert 0 <= part < CLUSTER_PARTS
        if CLUSTER_PARTS == 16:
            assert part == int(digest[0], 16)
