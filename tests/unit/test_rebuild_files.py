"""The registry topic's records and the snapshot file, without services (issue 16, Rebuild)."""

from __future__ import annotations

import math
import subprocess

import orjson
import pytest

from adpulse.cli.commands.rebuild import delete_command
from adpulse.core.phone import NumberEntry, NumberKeys
from stream.keys import CLUSTER_PARTS, CLUSTER_TAGS, KeySpace, Retention, part_of
from stream.registry import RegistryEntry
from stream.snapshot import (
    CLUSTER_FORMAT,
    FORMAT,
    Snapshot,
    SnapshotError,
    _shifted,
    check_outboxes,
    customer_part,
    into_parts,
)


@pytest.mark.parametrize(
    "entry",
    [
        RegistryEntry("coupon", "SUMMER10", "email"),
        RegistryEntry("coupon", "SUMMER10", None),
        RegistryEntry("number", "+4930123456", NumberEntry("+4930123456", "pool", "ads").encode()),
        RegistryEntry(
            "number", "+4930123457", NumberEntry("+4930123457", "static", "tv", "x").encode()
        ),
    ],
)
def test_a_registry_entry_reads_back_from_its_record(entry: RegistryEntry) -> None:
    assert RegistryEntry.from_record(entry.record_key, entry.record_value()) == entry


def test_a_removed_entry_is_a_tombstone_under_the_same_key() -> None:
    removed = RegistryEntry("coupon", "SUMMER10", None)
    assert removed.record_value() is None
    assert removed.record_key == RegistryEntry("coupon", "SUMMER10", "email").record_key


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{}", "without a key"),
        (b"SUMMER10", b"{}", "not kind:key"),
        (b"coupon:SUMMER10", b'{"value": 3}', "no string value"),
    ],
)
def test_a_record_that_is_no_registry_entry_says_why(
    key: bytes | None, value: bytes, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        RegistryEntry.from_record(key, value)


def snapshot(exported_at_seconds: int) -> Snapshot:
    return Snapshot(
        prefix="adpulse:",
        exported_at=exported_at_seconds * 1000,
        topic="adpulse.events",
        group="adpulse-worker",
        offsets={0: 12, 3: 7},
        dedupe_seconds=int(Retention().dedupe.total_seconds()),
    )


def test_the_document_reads_back() -> None:
    taken = snapshot(1_765_000_000)
    document = orjson.loads(orjson.dumps(taken.document()))
    assert Snapshot.from_document(document, "f") == taken


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"format": "other"}, "not an adpulse snapshot"),
        ([], "not an adpulse snapshot"),
        ({"format": FORMAT, "prefix": "adpulse:"}, "damaged snapshot"),
    ],
)
def test_a_foreign_or_damaged_file_is_refused(document: object, reason: str) -> None:
    with pytest.raises(SnapshotError, match=reason):
        Snapshot.from_document(document, "f")


def test_event_id_generations_move_forward_by_the_snapshots_age() -> None:
    taken = snapshot(1_765_000_000)
    period = math.ceil(taken.dedupe_seconds / 4)
    newest = 1_765_000_000 // period
    # Restored within the same period: unchanged.
    assert _shifted(f"ids:{newest}", taken, 1_765_000_000 + 1) == (f"ids:{newest}", None)
    # Three days later: the newest generation of the snapshot is the newest generation now, and
    # expires as the script expires its own ((generation + 2) periods + the window).
    later = 1_765_000_000 + 3 * 86_400
    moved = later // period
    assert _shifted(f"ids:{newest}", taken, later) == (
        f"ids:{moved}",
        (moved + 2) * period + taken.dedupe_seconds,
    )
    assert _shifted(f"ids:{newest - 1}", taken, later)[0] == f"ids:{moved - 1}"
    # A generation's buckets and layout move together.
    assert _shifted(f"ids:{newest}:17", taken, later)[0] == f"ids:{moved}:17"
    assert _shifted(f"ids:{newest - 1}:m", taken, later)[0] == f"ids:{moved - 1}:m"


def test_a_snapshot_older_than_the_retained_log_or_beyond_its_end_is_refused() -> None:
    from stream.rebuild import RebuildError, RebuildResult, _starts
    from stream.topic_reads import Span

    whole = Span("adpulse.events", {0: 100, 3: 0}, {0: 500, 3: 40})
    result = RebuildResult("new:", "old:", switched=False)
    with pytest.raises(RebuildError, match=r"partition 0 up to offset 12.*from offset 100"):
        _starts(whole, snapshot(1), result)
    beyond = Span("adpulse.events", {0: 0, 3: 0}, {0: 5, 3: 40})
    with pytest.raises(RebuildError, match="beyond its end 5"):
        _starts(beyond, snapshot(1), result)
    fine = Span("adpulse.events", {0: 0, 3: 0}, {0: 500, 3: 40})
    assert _starts(fine, snapshot(1), result).starts == {0: 12, 3: 7}
    # Without a snapshot: from the first retained offset, and the loss is reported.
    assert _starts(whole, None, result) is whole
    assert result.lost_before == {0: 100}


NUMBER_KEYS = NumberKeys()
NUMBERS = [
    key
    for keys in (NUMBER_KEYS, NumberKeys.in_cluster())
    for key in (keys.registry, keys.static, keys.pool("paid_search"), keys.lease("+14155550101"),
                keys.visitor("click-1"))
]  # fmt: skip
KPI = [KeySpace().totals, KeySpace().stats, KeySpace().coupons, KeySpace().spend("e-1"),
       KeySpace().minute(1), KeySpace().generation("ids", 3), KeySpace().part(5).totals,
       KeySpace().part(0).coupons]  # fmt: skip


def test_the_numbers_keys_are_told_from_the_kpi_keys_that_share_their_prefix() -> None:
    assert [NUMBER_KEYS.holds(key) for key in NUMBERS] == [True] * len(NUMBERS)
    assert [NUMBER_KEYS.holds(key) for key in KPI] == [False] * len(KPI)
    assert not NUMBER_KEYS.holds("adpulse-r20261206T101010.000:numbers")


def test_deleting_the_old_key_space_keeps_the_tracked_numbers() -> None:
    """The command a rebuild prints: its grep keeps what `NumberKeys.holds`, no more, no less."""
    assert delete_command("adpulse-r1:") == (
        "redis-cli --scan --pattern 'adpulse-r1:*' | xargs -r redis-cli unlink"
    )
    assert delete_command("adpulse-r1:", cluster=True) == (
        "on every master, redis-cli -h MASTER -p PORT --scan --pattern 'adpulse-r1:*' | "
        "xargs -r -n1 redis-cli -h MASTER -p PORT unlink"
    )
    # On a cluster too: the numbers' keys there carry their hash tag after the same prefix.
    assert (
        delete_command("adpulse:", cluster=True).split(" | ")[1]
        == (delete_command(KeySpace().prefix).split(" | ")[1])
    )
    command = delete_command(KeySpace().prefix)
    grep = command.split(" | ")[1]
    kept = subprocess.run(
        ["grep", "-Ev", NUMBER_KEYS.expression],
        input="\n".join(NUMBERS + KPI) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert grep == f"grep -Ev '{NUMBER_KEYS.expression}'"
    assert kept.stdout.split() == KPI


def test_a_cluster_snapshot_reads_back_and_one_instances_keeps_its_format() -> None:
    taken = snapshot(1_765_000_000)
    assert taken.document()["format"] == FORMAT
    assert "parts" not in taken.document()
    taken.parts = CLUSTER_PARTS
    document = orjson.loads(orjson.dumps(taken.document()))
    assert (document["format"], document["parts"]) == (CLUSTER_FORMAT, CLUSTER_PARTS)
    assert Snapshot.from_document(document, "f") == taken
    del document["parts"]
    with pytest.raises(SnapshotError, match="damaged snapshot"):
        Snapshot.from_document(document, "f")


def _entry(key: str, kind: str = "hash") -> dict[str, object]:
    return {"key": key, "type": kind, "expire_at": None, "value": {"a": "1"}}


def test_a_one_instance_snapshot_goes_into_the_parts_that_read_each_key() -> None:
    taken = snapshot(1_765_000_000)
    taken.keys = [_entry(name) for name in ("t", "m:29000000", "stats", "ltv:202612", "coupons",
                  "ids:7:0", "ord:1:names", "cust:2:m", "offsets", "s:spend-1")]  # fmt: skip
    taken.keys.append(_entry("channels", "set"))
    taken.keys.append(_entry("ci:shop:20261201"))
    taken.keys.append({"key": "hist:20261201", "type": "hash", "expire_at": None,
                       "value": {"email\tnews": "3", "email\t": "1", "search\t": "2"}})  # fmt: skip
    placed: dict[str, list[int | None]] = {}
    by_key = {str(entry["key"]): entry["value"] for entry in into_parts(taken)}
    for entry in into_parts(taken):
        tag, _, name = str(entry["key"]).rpartition("}:")
        number = CLUSTER_TAGS.index(tag.lstrip("{")) if tag else None
        placed.setdefault(name, []).append(number)
    every = list(range(CLUSTER_PARTS))
    assert placed == {
        # Summed by the readers: once, in part 0.
        "t": [0], "m:29000000": [0], "stats": [0], "ltv:202612": [0],
        # The registry, once outside the parts; its channel set in every part too.
        "coupons": [None], "channels": [None, *every],
        # What a row's part reads: every part (a fingerprint does not tell the row's part).
        "ids:7:0": every, "ord:1:names": every, "cust:2:m": every, "offsets": every,
        # A spend record in its event id's part, as the worker routes it.
        "s:spend-1": [part_of("spend-1")],
        # Imports' records where imports on a cluster look: a cost source's day outside the
        # parts, a history row in its channel's part.
        "ci:shop:20261201": [None],
        "hist:20261201": sorted({part_of("email"), part_of("search")}),
    }  # fmt: skip
    email, search = (f"{{{CLUSTER_TAGS[part_of(c)]}}}:hist:20261201" for c in ("email", "search"))
    assert by_key[email] == {"email\tnews": "3", "email\t": "1"}
    assert by_key[search] == {"search\t": "2"}


def test_parts_disagreeing_on_a_customer_fact_are_read_again() -> None:
    source, destination = KeySpace().part(2).prefix, KeySpace().part(5).prefix
    prefix = KeySpace().prefix

    def read(last: int, waiting: int, applied: int) -> list[dict[str, object]]:
        return [
            {"key": source[len(prefix) :] + "outbox", "value": {"5": str(last)}},
            {"key": source[len(prefix) :] + "outbox:5", "value": ["fact"] * waiting},
            {"key": destination[len(prefix) :] + "offsets", "value": {"outbox:2": str(applied)}},
        ]

    assert check_outboxes(read(last=4, waiting=1, applied=3)) is None  # one on its way
    assert check_outboxes(read(last=4, waiting=0, applied=4)) is None  # all applied
    # Trimmed in part 2 after part 5 was read: fact 3 in neither.
    assert "applied customer fact 2 of part 2" in str(check_outboxes(read(4, 1, 2)))
    # Part 5 read after it applied a fact part 2's reading does not hold yet.
    assert check_outboxes(read(last=4, waiting=1, applied=5)) is not None


def test_remembered_customers_go_to_their_customer_parts_only() -> None:
    customers = {str(fingerprint): "1" for fingerprint in range(-20, 20)}
    taken = snapshot(1_765_000_000)
    taken.keys = [
        {"key": "cust:3:0", "type": "hash", "expire_at": 7, "value": customers},
        {"key": "cust:3:names", "type": "hash", "expire_at": 7, "value": {"1": "email\t202612"}},
        {"key": "cust:3:m", "type": "hash", "expire_at": 7,
         "value": {"n": "1", "s": "0", "c": "40", "x": "0"}},
    ]  # fmt: skip
    placed = {str(entry["key"]): entry["value"] for entry in into_parts(taken)}
    # These 40 customers fall in some parts but not all, so both branches below are taken.
    parts = {customer_part(customer) for customer in customers}
    for number, tag in enumerate(CLUSTER_TAGS):
        bucket = placed.get(f"{{{tag}}}:cust:3:0")
        layout = placed[f"{{{tag}}}:cust:3:m"]
        assert placed[f"{{{tag}}}:cust:3:names"] == {"1": "email\t202612"}
        if number in parts:
            assert bucket
            assert {customer_part(customer) for customer in bucket} == {number}
            assert (layout["c"], layout["x"]) == (str(len(bucket)), "0")
        else:
            # No key for the bucket: the part's first write there must set its expiry.
            assert bucket is None
            assert (layout["c"], layout["x"]) == ("0", "1")
    assert sum(int(placed[f"{{{tag}}}:cust:3:m"]["c"]) for tag in CLUSTER_TAGS) == 40
