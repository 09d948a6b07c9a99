"""Issue 13 with issue 12's customers: GET /v1/report?group_by=acquisition_channel and
`adpulse report --by acquisition_channel` through a real broker, `adpulse worker` and
redis-server, every figure worked out by hand.

January 2026: Ann is acquired by paid_search ($100, then $20 fifteen days later), Bob by email
($30). February 2026: Cy is acquired by paid_search ($60); Ann buys again through email ($40,
36 days after her first order: in her 90-day LTV, not her 30-day one, and paid_search's, her
acquisition channel); display converts someone unknown ($10, no customer). Spend: paid_search
$200 in January and $50 in February, email $20 in January, display $5 in February.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adpulse.core.customers import hash_customer
from adpulse.core.event import Event, EventType
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_period_report_api import get
from tests.integration.test_worker_pipeline import produce
from tests.kafka_helpers import wait_until
from tests.processes import Exporter, Worker
from tests.services import KafkaService

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
M = 1_000_000
KEY = b"acquisition-report-test-key-0001"
QUERY = "from=2026-02-03&to=2026-02-03&group_by=acquisition_channel&compare=previous_period"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def order(order_id: str, channel: str, ts: str, dollars: int, who: str | None) -> Event:
    return Event(
        event_id=f"{order_id}-{uuid.uuid4().hex[:6]}", type=EventType.CONVERSION, ts=at(ts),
        received_at=at(ts), channel=channel, order_id=f"{order_id}-{uuid.uuid4().hex[:6]}",
        value_micros=dollars * M, customer_id=hash_customer(who, KEY) if who else None,
    )  # fmt: skip


def spend(channel: str, dollars: int, start: str, end: str) -> Event:
    return Event(
        event_id=f"s-{channel}-{start}-{uuid.uuid4().hex[:6]}", type=EventType.SPEND,
        ts=at(start), received_at=at(start), channel=channel, cost_micros=dollars * M,
        start=at(start), end=at(end),
    )  # fmt: skip


FIRSTS = [
    order("A1", "paid_search", "2026-01-10T12:00:00+00:00", 100, "ann@example.com"),
    order("B1", "email", "2026-01-20T12:00:00+00:00", 30, "bob-crm-4711"),
    order("C1", "paid_search", "2026-02-05T12:00:00+00:00", 60, "cy@example.com"),
    order("D1", "display", "2026-02-07T12:00:00+00:00", 10, None),
    spend("paid_search", 200, "2026-01-05T10:00:00+00:00", "2026-01-05T11:00:00+00:00"),
    spend("paid_search", 50, "2026-02-04T10:00:00+00:00", "2026-02-04T11:00:00+00:00"),
    spend("email", 20, "2026-01-06T10:00:00+00:00", "2026-01-06T11:00:00+00:00"),
    spend("display", 5, "2026-02-06T10:00:00+00:00", "2026-02-06T11:00:00+00:00"),
]
# After Ann's acquisition is counted (another order may be in another partition).
REPEATS = [
    order("A2", "paid_search", "2026-01-25T12:00:00+00:00", 20, "ann@example.com"),
    order("A3", "email", "2026-02-15T12:00:00+00:00", 40, "Ann@Example.com "),
]


@pytest.fixture
def exporter(
    kafka: KafkaService, topic: str, redis_db: RedisDatabase, tmp_path: Path
) -> Iterator[Exporter]:
    worker = Worker(
        kafka=kafka.bootstrap, topic=topic, redis_url=redis_db.url, log=tmp_path / "worker.log",
        group=f"g-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    process = Exporter(redis_url=redis_db.url, log=tmp_path / "exporter.log")
    try:

        async def run() -> None:
            store = KpiStore.from_url(redis_db.url)
            try:
                for events, applied in ((FIRSTS, 4), (REPEATS, 6)):
                    await produce(kafka.bootstrap, topic, events)

                    async def counted(expected: int = applied) -> bool:
                        return (await store.stats()).get("applied", 0) == expected

                    await wait_until(counted, 60, 0.1, f"{applied} orders applied")
                await wait_until(lambda: _spent(store), 60, 0.1, "every spend record applied")
            finally:
                await store.close()

        asyncio.run(run())
        yield process
    finally:
        process.terminate()
        worker.terminate()


async def _spent(store: KpiStore) -> bool:
    january = await store.client.hgetall(store.keys.month(202601))
    february = await store.client.hgetall(store.keys.month(202602))
    return (january.get("paid_search:s"), january.get("email:s")) == (
        str(200 * M),
        str(20 * M),
    ) and (february.get("paid_search:s"), february.get("display:s")) == (str(50 * M), str(5 * M))


def values(row: dict[str, Any], part: str) -> dict[str, Any]:
    return {name: figure[part] for name, figure in row.items() if name != "channel"}


def test_rows_by_acquisition_channel_through_the_worker(
    exporter: Exporter, redis_db: RedisDatabase
) -> None:
    status, document = get(exporter, QUERY, token=None)
    assert status == 200, document
    # One day asked for: the whole February cohort is read, against January's.
    assert document["requested_period"] == {"from": "2026-02-03", "to": "2026-02-03"}
    assert document["period"] == {"from": "2026-02-01", "to": "2026-02-28"}
    assert document["cohorts"] == {
        "current": {"from": "2026-02", "to": "2026-02"},
        "previous_period": {"from": "2026-01", "to": "2026-01"},
    }
    rows = {row["channel"]: row for row in document["rows"]}
    assert [row["channel"] for row in document["rows"]] == ["paid_search", "display", "email"]
    none3 = dict.fromkeys(("ltv_30", "ltv_90", "ltv_365"))
    # February: Cy for $50 ($60 within 30 days); display spent $5 and acquired nobody.
    assert values(rows["paid_search"], "value") == {
        "new_customers": 1, "spend": 50.0, "cac": 50.0,
        "cohort_revenue_30": 60.0, "cohort_revenue_90": 60.0, "cohort_revenue_365": 60.0,
        "ltv_30": 60.0, "ltv_90": 60.0, "ltv_365": 60.0,
        "ltv_cac_30": 1.2, "ltv_cac_90": 1.2, "ltv_cac_365": 1.2,
    }  # fmt: skip
    # January: Ann for $200: $120 within 30 days, $160 (her email order too) within 90.
    assert values(rows["paid_search"], "previous_period") == {
        "new_customers": 1, "spend": 200.0, "cac": 200.0,
        "cohort_revenue_30": 120.0, "cohort_revenue_90": 160.0, "cohort_revenue_365": 160.0,
        "ltv_30": 120.0, "ltv_90": 160.0, "ltv_365": 160.0,
        "ltv_cac_30": 0.6, "ltv_cac_90": 0.8, "ltv_cac_365": 0.8,
    }  # fmt: skip
    changes = values(rows["paid_search"], "previous_period_change")
    assert (changes["cac"], changes["ltv_30"], changes["ltv_cac_30"]) == (-0.75, -0.5, 1.0)
    display = values(rows["display"], "value")
    assert (display["new_customers"], display["spend"], display["cac"]) == (0, 5.0, None)
    assert {name: display[name] for name in none3} == none3
    assert display["ltv_cac_30"] is None
    email = rows["email"]
    assert (email["new_customers"]["value"], email["spend"]["value"]) == (0, 0.0)
    assert values(email, "previous_period") == {
        "new_customers": 1, "spend": 20.0, "cac": 20.0,
        "cohort_revenue_30": 30.0, "cohort_revenue_90": 30.0, "cohort_revenue_365": 30.0,
        "ltv_30": 30.0, "ltv_90": 30.0, "ltv_365": 30.0,
        "ltv_cac_30": 1.5, "ltv_cac_90": 1.5, "ltv_cac_365": 1.5,
    }  # fmt: skip
    # Totals: ratios of the sums.
    totals = document["totals"]
    assert values(totals, "value") == {
        "new_customers": 1, "spend": 55.0, "cac": 55.0,
        "cohort_revenue_30": 60.0, "cohort_revenue_90": 60.0, "cohort_revenue_365": 60.0,
        "ltv_30": 60.0, "ltv_90": 60.0, "ltv_365": 60.0,
        "ltv_cac_30": 1.091, "ltv_cac_90": 1.091, "ltv_cac_365": 1.091,
    }  # fmt: skip
    assert values(totals, "previous_period") == {
        "new_customers": 2, "spend": 220.0, "cac": 110.0,
        "cohort_revenue_30": 150.0, "cohort_revenue_90": 190.0, "cohort_revenue_365": 190.0,
        "ltv_30": 75.0, "ltv_90": 95.0, "ltv_365": 95.0,
        "ltv_cac_30": 0.6818, "ltv_cac_90": 0.8636, "ltv_cac_365": 0.8636,
    }  # fmt: skip

    status, csv_text = get(exporter, f"{QUERY}&format=csv", token=None)
    assert status == 200
    lines = csv_text.splitlines()
    assert lines[0].startswith("acquisition_channel,new_customers,new_customers_previous_period,")
    assert lines[-1].startswith("total,1,2,-0.5,55.0,220.0,-0.75,55.0,110.0,-0.5,")
    status, refused = get(exporter, "window=1h&group_by=acquisition_channel", token=None)
    assert (status, refused["parameter"]) == (400, "group_by")
    spec = get_spec(exporter)
    assert "AcquisitionRow" in spec["components"]["schemas"]

    # The command line: the same document, and a table with its totals at 80 columns.
    args = ["--by", "acquisition_channel", "--from", "2026-02-03", "--to", "2026-02-03"]
    args += ["--compare", "previous_period", "--redis-url", redis_db.url]
    printed = cli("report", *args, "--json")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == document
    table = cli("report", *args, "--once", "--width", "80")
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert "Acquired via" in table.stdout
    assert table.stdout.count("total") == 1


def get_spec(exporter: Exporter) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{exporter.base}/openapi.json", timeout=10) as response:
        spec: dict[str, Any] = json.loads(response.read())
    return spec


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
