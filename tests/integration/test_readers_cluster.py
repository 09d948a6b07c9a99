"""The readers in cluster mode, as processes: the exporter's /metrics and read API, `adpulse
report` and `adpulse coupons` read a Redis Cluster (`redis+cluster://`) and answer what they
answer for one redis-server holding the same events (`keys`, "Redis Cluster")."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adpulse.core.event import Event, EventType
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_report_json import ROOT, M, traffic
from tests.kafka_helpers import wait_until
from tests.processes import Exporter
from tests.services import RedisCluster

pytestmark = pytest.mark.integration


def earlier_hours(now: datetime) -> list[Event]:
    """Spend and conversions of two channels three hours ago: what the advice reads."""
    start = now - timedelta(hours=3)
    events: list[Event] = []
    for channel, conversions in (("paid_search", 6), ("email", 3)):
        events.append(
            Event(event_id=f"a-{channel}-spend", type=EventType.SPEND, ts=start, received_at=start,
                  channel=channel, cost_micros=60 * M, start=start,
                  end=start + timedelta(minutes=30))
        )  # fmt: skip
        events += [
            Event(event_id=f"a-{channel}-{n}", type=EventType.CONVERSION, ts=start,
                  received_at=start, channel=channel, value_micros=30 * M)
            for n in range(conversions)
        ]  # fmt: skip
    return events


async def fill(url: str, now: datetime) -> None:
    store = KpiStore.from_url(url)
    try:
        await store.add_coupon("ANNA10", "influencer")
        await store.apply_batch(traffic(now))
        await store.apply_batch(earlier_hours(now))
    finally:
        await store.close()


def adpulse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


def business_lines(metrics: str) -> list[str]:
    """The exporter's figures from Redis (the channels' counters and KPIs), not its own nor
    the nowcasts (which move with the clock between two scrapes)."""
    return sorted(
        line
        for line in metrics.splitlines()
        if line.startswith("adpulse_") and "{channel=" in line and "nowcast" not in line
    )


async def test_exporter_report_and_coupons_read_a_cluster_as_one_instance(
    cluster_redis: RedisCluster, redis_db: RedisDatabase, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    for url in (cluster_redis.url, redis_db.url):
        await fill(url, now)

    first = (now - timedelta(days=1)).date().isoformat()
    period = ("--from", first, "--to", now.date().isoformat(), "--compare", "previous_period")
    reports = [adpulse("report", "--once", "--json", *period, "--redis-url", url)
               for url in (cluster_redis.url, redis_db.url)]  # fmt: skip
    assert [done.returncode for done in reports] == [0, 0], reports[0].stderr
    clustered, single = (json.loads(done.stdout) for done in reports)
    assert clustered["rows"]
    assert clustered == single

    exporters = [
        Exporter(redis_url=url, log=tmp_path / f"exporter-{name}.log")
        for name, url in (("cluster", cluster_redis.url), ("single", redis_db.url))
    ]
    try:
        metrics = [business_lines(get(exporter.url)) for exporter in exporters]
        assert any('channel="paid_search"' in line for line in metrics[0])

        def same_metrics() -> bool:
            # Scraped again if a minute turned between the two scrapes (the windows moved).
            scraped = [business_lines(get(exporter.url)) for exporter in exporters]
            return scraped[0] == scraped[1]

        try:
            await wait_until(same_metrics, timeout=15, interval=0.2, message="the same /metrics")
        except TimeoutError:
            cluster, single = (business_lines(get(exporter.url)) for exporter in exporters)
            assert cluster == single  # says what differs
            raise
        query = f"/v1/report?from={first}&to={now.date().isoformat()}&group_by=campaign"
        answers = [json.loads(get(exporter.base + query)) for exporter in exporters]
        assert answers[0]["rows"]
        assert answers[0] == answers[1]
    finally:
        for exporter in exporters:
            exporter.terminate()

    advice = [adpulse("advise", "--json", "--advice-min-conversions", "1", "--redis-url", url)
              for url in (cluster_redis.url, redis_db.url)]  # fmt: skip
    assert [done.returncode for done in advice] == [0, 0], advice[0].stderr
    advised = [json.loads(done.stdout) for done in advice]
    assert advised[0]["channels"]
    assert [c["channel"] for c in advised[0]["channels"]] == [
        c["channel"] for c in advised[1]["channels"]
    ]

    listed = adpulse("coupons", "--redis-url", cluster_redis.url, "list")
    assert listed.returncode == 0, listed.stderr
    assert "ANNA10" in listed.stdout
    assert "influencer" in listed.stdout

    # Numbers and imports work on a cluster too (test_numbers_cluster, test_import_cluster).
    numbers = adpulse("numbers", "--redis-url", cluster_redis.url, "list")
    assert (numbers.returncode, numbers.stdout) == (0, ""), numbers.stderr
    history = tmp_path / "history.csv"
    history.write_text("date,channel,campaign,clicks,conversions,revenue,spend\n")
    imported = adpulse("import", "history", str(history), "--redis-url", cluster_redis.url)
    assert imported.returncode == 0, imported.stderr
    assert "imported 0 rows" in imported.stdout
