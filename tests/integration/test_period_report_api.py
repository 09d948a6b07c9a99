"""Months, years and campaigns end to end: events through the real broker and `adpulse worker`
into a real redis-server, last year's history and a cost export through `adpulse import`, and
the exporter's GET /v1/report compared with figures worked out by hand.

The reporting time zone is America/New_York throughout. February 2026 is the reported month,
January 2026 its previous period, February 2025 (imported history) its previous year.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adpulse.core.event import Event, EventType
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_worker_pipeline import produce
from tests.kafka_helpers import wait_until
from tests.processes import Exporter, Worker
from tests.services import KafkaService

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ZONE = "America/New_York"
TOKEN = "s3cret-read-token"
M = 1_000_000

HISTORY = """date,channel,campaign,clicks,conversions,revenue,spend,leads
2025-02-03,search,brand,10,1,80.00,50.00,
2025-02-20,search,generic,5,0,0,10.00,
2025-02-14,email,,8,2,45.00,0,
2025-01-15,search,brand,99,9,900.00,90.00,
"""
# A Google Ads campaign report segmented by day: a title, the range, the header, a total row.
GOOGLE_ADS = """Campaign report
"January 1, 2026 - January 31, 2026"
Day,Campaign,Currency code,Cost,Clicks
2026-01-10,brand,USD,18.00,2
2026-01-11,brand,USD,12.00,0
Total: Account,,USD,30.00,2
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def event(number: int, kind: EventType, ts: str, **fields: Any) -> Event:
    moment = at(ts)
    return Event(
        event_id=f"p{number}-{uuid.uuid4().hex[:6]}", type=kind, ts=moment, received_at=moment,
        **fields,
    )  # fmt: skip


def spend(number: int, channel: str, campaign: str, cost: int, start: str, end: str) -> Event:
    return event(
        number, EventType.SPEND, start, channel=channel, campaign=campaign,
        cost_micros=cost, start=at(start), end=at(end),
    )  # fmt: skip


def traffic() -> list[Event]:
    click, conversion = EventType.CLICK, EventType.CONVERSION
    run = uuid.uuid4().hex[:6]
    k = [f"{run}-k{n}" for n in range(8)]
    return [
        # February 2026 (local): search/brand 4 clicks, 2 conversions via their clicks.
        event(1, click, "2026-02-03T10:00:00-05:00", channel="search", campaign="brand", click_id=k[0]),
        event(2, click, "2026-02-03T11:00:00-05:00", channel="search", campaign="brand", click_id=k[1]),
        event(3, click, "2026-02-10T09:00:00-05:00", channel="search", campaign="brand"),
        event(4, click, "2026-02-27T09:00:00-05:00", channel="search", campaign="brand"),
        event(5, conversion, "2026-02-03T12:00:00-05:00", click_id=k[0], order_id=f"{run}-o1", value_micros=100 * M),
        event(6, conversion, "2026-02-04T12:00:00-05:00", click_id=k[1], order_id=f"{run}-o2", value_micros=50_500_000),
        event(7, click, "2026-02-05T09:00:00-05:00", channel="search", campaign="generic"),
        event(8, click, "2026-02-06T09:00:00-05:00", channel="search", campaign="generic"),
        event(9, click, "2026-02-07T09:00:00-05:00", channel="email"),
        event(10, click, "2026-02-08T09:00:00-05:00", channel="email"),
        event(11, click, "2026-02-09T09:00:00-05:00", channel="email"),
        # 03:30 UTC on 1 March is 22:30 on 28 February in New York: a February click.
        event(12, click, "2026-03-01T03:30:00+00:00", channel="email"),
        event(13, conversion, "2026-02-12T09:00:00-05:00", channel="email", order_id=f"{run}-o3", value_micros=30 * M),
        event(14, conversion, "2026-02-13T09:00:00-05:00", coupon="PODCAST", order_id=f"{run}-o4", value_micros=20_100_000),
        spend(15, "search", "brand", 60 * M, "2026-02-10T00:00:00-05:00", "2026-02-11T00:00:00-05:00"),
        spend(16, "search", "generic", 15_200_000, "2026-02-20T00:00:00-05:00", "2026-02-22T00:00:00-05:00"),
        # January 2026: the previous period (its spend comes from the Google Ads file).
        event(17, click, "2026-01-10T09:00:00-05:00", channel="search", campaign="brand", click_id=k[2]),
        event(18, click, "2026-01-10T10:00:00-05:00", channel="search", campaign="brand"),
        event(19, conversion, "2026-01-11T09:00:00-05:00", click_id=k[2], order_id=f"{run}-o5", value_micros=40 * M),
        *[event(20 + n, click, f"2026-01-2{n}T09:00:00-05:00", channel="email") for n in range(5)],
        # March 2026, outside: 05:30 UTC on 1 March is local 1 March.
        event(30, click, "2026-03-01T05:30:00+00:00", channel="email"),
        # 8 March 2026: clocks go forward, a day of 23 hours.
        event(31, click, "2026-03-08T04:59:00+00:00", channel="display"),  # 7 March 23:59 EST
        event(32, click, "2026-03-08T05:00:00+00:00", channel="display"),  # 8 March 00:00 EST
        event(33, click, "2026-03-09T03:59:00+00:00", channel="display"),  # 8 March 23:59 EDT
        event(34, click, "2026-03-09T04:00:00+00:00", channel="display"),  # 9 March 00:00 EDT
        # The whole local day (23 hours) and two hours across its start: half in each day.
        spend(35, "display", "", 23 * M, "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
        spend(36, "display", "", 10 * M, "2026-03-08T04:00:00+00:00", "2026-03-08T06:00:00+00:00"),
        # 1 November 2026: clocks go back, a day of 25 hours.
        event(37, click, "2026-11-01T03:59:00+00:00", channel="display"),  # 31 October 23:59 EDT
        event(38, click, "2026-11-01T04:00:00+00:00", channel="display"),  # 1 November 00:00 EDT
        event(39, click, "2026-11-02T04:59:00+00:00", channel="display"),  # 1 November 23:59 EST
        event(40, click, "2026-11-02T05:00:00+00:00", channel="display"),  # 2 November 00:00 EST
        # The whole local day (25 hours) and two hours across its end: half in each day.
        spend(41, "display", "", 25 * M, "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"),
        spend(42, "display", "", 10 * M, "2026-11-02T04:00:00+00:00", "2026-11-02T06:00:00+00:00"),
    ]  # fmt: skip


def cli(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", *args, "--redis-url", redis_url, "--timezone", ZONE],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def get(exporter: Exporter, query: str, token: str | None = TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(f"{exporter.base}/v1/report?{query}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read().decode(), error.code
    return status, json.loads(body) if body.startswith(("{", "[")) else body


@pytest.fixture
def pipeline(
    kafka: KafkaService, topic: str, redis_db: RedisDatabase, tmp_path: Path
) -> Iterator[tuple[Exporter, list[Event]]]:
    """The scenario applied by a real worker, history and costs imported, an exporter."""
    import asyncio

    async def prepare() -> None:
        store = KpiStore.from_url(redis_db.url)
        try:
            await store.add_coupon("PODCAST", "podcast")
        finally:
            await store.close()

    asyncio.run(prepare())
    worker = Worker(
        kafka=kafka.bootstrap, topic=topic, redis_url=redis_db.url, log=tmp_path / "worker.log",
        group=f"g-{uuid.uuid4().hex[:8]}", extra=["--timezone", ZONE, "--max-campaigns", "3"],
    )  # fmt: skip
    exporter = Exporter(
        redis_url=redis_db.url, log=tmp_path / "exporter.log",
        extra=["--timezone", ZONE], env={"ADPULSE_READ_TOKEN": TOKEN},
    )  # fmt: skip
    events = traffic()
    try:

        async def run() -> None:
            await produce(kafka.bootstrap, topic, events)
            store = KpiStore.from_url(redis_db.url)
            try:
                counted = sum(1 for item in events if item.type is not EventType.SPEND)

                async def applied() -> bool:
                    return (await store.stats()).get("applied", 0) == counted

                await wait_until(applied, 60, 0.1, "the worker applied the scenario")
                # Spend (4 records) is applied with its batch; wait for its last figure too.
                await wait_until(
                    lambda: _spend_in(store), 60, 0.1, "the worker applied the spend records"
                )
            finally:
                await store.close()

        asyncio.run(run())
        (tmp_path / "history.csv").write_text(HISTORY)
        (tmp_path / "google.csv").write_text(GOOGLE_ADS)
        for args in (
            ("import", "history", str(tmp_path / "history.csv")),
            ("import", "costs", "--format", "google-ads", "--channel", "search",
             str(tmp_path / "google.csv")),
        ):  # fmt: skip
            result = cli(*args, redis_url=redis_db.url)
            assert result.returncode == 0, result.stderr
        yield exporter, events
    finally:
        exporter.terminate()
        worker.terminate()


async def _spend_in(store: KpiStore) -> bool:
    fields = await store.client.hgetall(store.keys.day(20260308))
    november = await store.client.hgetall(store.keys.month(202611))
    return fields.get("display:s") is not None and (await store.client.hgetall(
        store.keys.month(202602)
    )).get("search:s") == str(75_200_000) and november.get("display:s") == str(35 * M)  # fmt: skip


def figures(row: dict[str, Any], names: tuple[str, ...], part: str = "value") -> list[Any]:
    return [row[name][part] for name in names]


NAMES = (
    "clicks", "conversions", "revenue", "spend", "profit",
    "cpa", "cpc", "conversion_rate", "roas", "romi", "aov",
)  # fmt: skip


def test_months_campaigns_time_zone_and_imports_end_to_end(
    pipeline: tuple[Exporter, list[Event]],
    redis_db: RedisDatabase,
    tmp_path: Path,
    kafka: KafkaService,
    topic: str,
) -> None:
    """One scenario (it takes a worker and an exporter) checked from every side."""
    exporter, _ = pipeline
    check_a_month_by_channel_and_campaign(exporter)
    check_a_dst_day_has_23_hours_and_exact_totals(exporter)
    check_a_dst_day_has_25_hours_and_exact_totals(exporter)
    check_the_campaign_cap_through_the_worker(exporter, redis_db, kafka, topic)
    check_the_api_refuses_bad_parameters_and_strangers(exporter)
    check_the_command_line_report(exporter, redis_db)
    check_reimports_change_nothing_and_a_bad_row_imports_nothing(exporter, redis_db, tmp_path)


def check_a_month_by_channel_and_campaign(exporter: Exporter) -> None:
    query = "from=2026-02-01&to=2026-02-28&compare=previous_period,previous_year"
    status, document = get(exporter, query + "&group_by=channel")
    assert status == 200, document
    assert document["currency"] == "USD"
    assert document["timezone"] == ZONE
    assert document["compare"] == {
        "previous_period": {"from": "2026-01-01", "to": "2026-01-31"},
        "previous_year": {"from": "2025-02-01", "to": "2025-02-28"},
    }
    rows = {row["channel"]: row for row in document["rows"]}
    assert [row["channel"] for row in document["rows"]] == ["search", "email", "podcast"]
    # February 2026
    assert figures(rows["search"], NAMES) == [
        6, 2, 150.5, 75.2, 75.3, 37.6, 12.53, 0.3333, 2.001, 1.001, 75.25,
    ]  # fmt: skip
    assert figures(rows["email"], NAMES) == [
        4,
        1,
        30.0,
        0.0,
        30.0,
        None,
        None,
        0.25,
        None,
        None,
        30.0,
    ]
    assert figures(rows["podcast"], NAMES) == [
        0, 1, 20.1, 0.0, 20.1, None, None, None, None, None, 20.1,
    ]  # fmt: skip
    # January 2026: events and the imported Google Ads costs (30.00)
    assert figures(rows["search"], NAMES, "previous_period") == [
        2, 1, 40.0, 30.0, 10.0, 30.0, 15.0, 0.5, 1.333, 0.3333, 40.0,
    ]  # fmt: skip
    assert figures(rows["email"], NAMES, "previous_period")[:2] == [5, 0]
    # February 2025: the imported history
    assert figures(rows["search"], NAMES, "previous_year") == [
        15, 1, 80.0, 60.0, 20.0, 60.0, 4.0, 0.06667, 1.333, 0.3333, 80.0,
    ]  # fmt: skip
    assert figures(rows["email"], NAMES, "previous_year") == [
        8, 2, 45.0, 0.0, 45.0, None, None, 0.25, None, None, 22.5,
    ]  # fmt: skip
    assert rows["search"]["clicks"]["previous_period_change"] == 2.0
    assert rows["search"]["clicks"]["previous_year_change"] == -0.6
    assert rows["search"]["cpa"]["previous_period_change"] == 0.2533
    assert rows["search"]["cpa"]["previous_year_change"] == -0.3733
    totals = document["totals"]
    assert figures(totals, NAMES) == [
        10, 4, 200.6, 75.2, 125.4, 18.8, 7.52, 0.3, 2.668, 1.668, 50.15,
    ]  # fmt: skip
    assert figures(totals, NAMES, "previous_period") == [
        7, 1, 40.0, 30.0, 10.0, 30.0, 4.29, 0.1429, 1.333, 0.3333, 40.0,
    ]  # fmt: skip
    assert figures(totals, NAMES, "previous_year") == [
        23, 3, 125.0, 60.0, 65.0, 20.0, 2.61, 0.1304, 2.083, 1.083, 41.67,
    ]  # fmt: skip

    status, document = get(exporter, query + "&group_by=campaign")
    assert status == 200, document
    keyed = {(row["channel"], row["campaign"]): row for row in document["rows"]}
    assert [(row["channel"], row["campaign"]) for row in document["rows"]] == [
        ("search", "brand"), ("search", "generic"), ("email", None), ("podcast", None),
    ]  # fmt: skip
    assert figures(keyed["search", "brand"], NAMES) == [
        4, 2, 150.5, 60.0, 90.5, 30.0, 15.0, 0.5, 2.508, 1.508, 75.25,
    ]  # fmt: skip
    assert figures(keyed["search", "generic"], NAMES) == [
        2, 0, 0.0, 15.2, -15.2, None, 7.6, 0.0, 0.0, -1.0, None,
    ]  # fmt: skip
    assert figures(keyed["search", "brand"], NAMES, "previous_period")[:4] == [2, 1, 40.0, 30.0]
    assert figures(keyed["search", "brand"], NAMES, "previous_year")[:4] == [10, 1, 80.0, 50.0]
    assert figures(keyed["search", "generic"], NAMES, "previous_year")[:4] == [5, 0, 0.0, 10.0]
    assert figures(document["totals"], NAMES) == figures(totals, NAMES)


def check_the_command_line_report(exporter: Exporter, redis_db: RedisDatabase) -> None:
    flags = (
        "report", "--from", "2026-02-01", "--to", "2026-02-28", "--compare", "previous_period",
        "--compare", "previous_year", "--by", "campaign",
    )  # fmt: skip
    result = cli(*flags, "--json", redis_url=redis_db.url)
    assert result.returncode == 0, result.stderr
    query = "from=2026-02-01&to=2026-02-28&compare=previous_period,previous_year&group_by=campaign"
    assert json.loads(result.stdout) == get(exporter, query)[1]
    result = cli(*flags, "--once", "--width", "80", redis_url=redis_db.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in "".join(lines[3:-3])  # no figure cut short
    names = [
        line.split()[0]
        for line in lines
        if line.strip().startswith(("search", "email", "podcast", "total"))
    ]
    assert names == ["search", "search", "email", "podcast", "total"]
    total = next(line for line in lines if line.strip().startswith("total"))
    assert "75.20" in total
    assert "200.60" in total
    result = cli(*flags, "--once", "--width", "160", redis_url=redis_db.url)
    assert result.returncode == 0, result.stderr
    wide = result.stdout.splitlines()
    assert all(len(line) <= 160 for line in wide)
    assert "…" not in "".join(wide[3:-3])
    total = next(line for line in wide if line.strip().startswith("total"))
    assert "75.20" in total
    assert "200.60" in total
    # Wider, it shows at least every column the narrow table showed.
    assert len(wide[1].split()) >= len(lines[1].split())


def check_a_dst_day_has_23_hours_and_exact_totals(exporter: Exporter) -> None:
    status, day = get(exporter, "from=2026-03-08&to=2026-03-08")
    assert status == 200, day
    display = {row["channel"]: row for row in day["rows"]}["display"]
    assert display["clicks"]["value"] == 2
    assert display["spend"]["value"] == 28.0  # the 23 hours, and one of the two hours
    status, before = get(exporter, "from=2026-03-07&to=2026-03-07")
    assert {row["channel"]: row for row in before["rows"]}["display"]["spend"]["value"] == 5.0
    status, march = get(exporter, "from=2026-03-01&to=2026-03-31")
    march_rows = {row["channel"]: row for row in march["rows"]}
    assert march_rows["display"]["clicks"]["value"] == 4
    assert march_rows["display"]["spend"]["value"] == 33.0
    assert march_rows["email"]["clicks"]["value"] == 1  # 05:30 UTC on 1 March


def check_a_dst_day_has_25_hours_and_exact_totals(exporter: Exporter) -> None:
    def display(day: str) -> dict[str, Any]:
        status, document = get(exporter, f"from={day}&to={day}")
        assert status == 200, document
        rows: dict[str, dict[str, Any]] = {row["channel"]: row for row in document["rows"]}
        return rows["display"]

    day = display("2026-11-01")
    assert day["clicks"]["value"] == 2
    assert day["spend"]["value"] == 30.0  # the 25 hours, and one of the two hours
    assert display("2026-10-31")["clicks"]["value"] == 1
    after = display("2026-11-02")
    assert (after["clicks"]["value"], after["spend"]["value"]) == (1, 5.0)


def check_the_campaign_cap_through_the_worker(
    exporter: Exporter, redis_db: RedisDatabase, kafka: KafkaService, topic: str
) -> None:
    """The worker runs with --max-campaigns 3: a channel's fourth and later campaigns of a
    month are summed into "other", exactly, and forty more campaigns take no more memory."""
    import asyncio

    def clicks(first: int, last: int, per_campaign: Any) -> list[Event]:
        return [
            event(
                1000 + number * 100 + n,
                EventType.CLICK,
                f"2026-04-15T{n % 24:02d}:00:00-04:00",
                channel="affiliate",
                campaign=f"c{number}",
            )
            for number in range(first, last)
            for n in range(per_campaign(number))
        ]

    def april() -> dict[str | None, int]:
        status, document = get(exporter, "from=2026-04-01&to=2026-04-30&group_by=campaign")
        assert status == 200, document
        assert {row["channel"] for row in document["rows"]} == {"affiliate"}
        return {row["campaign"]: row["clicks"]["value"] for row in document["rows"]}

    async def apply(batch: list[Event]) -> int:
        store = KpiStore.from_url(redis_db.url)
        try:
            target = (await store.stats())["applied"] + len(batch)
            await produce(kafka.bootstrap, topic, batch)

            async def applied() -> bool:
                return (await store.stats()).get("applied", 0) == target

            await wait_until(applied, 60, 0.1, "the worker applied the campaigns")
            total = 0
            for key in (
                store.keys.day_campaigns(20260415),
                store.keys.month_campaigns(202604),
                store.keys.campaign_set(202604, "affiliate"),
            ):
                total += await store.client.memory_usage(key, samples=0) or 0
            return total
        finally:
            await store.close()

    first = asyncio.run(apply(clicks(0, 10, lambda number: number + 1)))  # 55 clicks
    assert first > 0
    counted = april()
    # Which three campaigns come first depends on the partitions; each counts whole.
    named = {campaign: count for campaign, count in counted.items() if campaign != "other"}
    assert len(named) == 3
    assert all(count == int(str(campaign)[1:]) + 1 for campaign, count in named.items())
    assert counted["other"] == 55 - sum(named.values())
    assert asyncio.run(apply(clicks(10, 50, lambda number: 1))) == first
    assert april() == {**counted, "other": counted["other"] + 40}


def check_reimports_change_nothing_and_a_bad_row_imports_nothing(
    exporter: Exporter, redis_db: RedisDatabase, tmp_path: Path
) -> None:
    query = "from=2025-01-01&to=2026-02-28&group_by=campaign"
    before = get(exporter, query)
    for args in (
        ("import", "history", str(tmp_path / "history.csv")),
        ("import", "costs", "--format", "google-ads", "--channel", "search",
         str(tmp_path / "google.csv")),
    ):  # fmt: skip
        assert cli(*args, redis_url=redis_db.url).returncode == 0
    assert get(exporter, query) == before
    # A cost file restates its days: a campaign it no longer has on a day goes back to zero.
    extra = tmp_path / "google-extra.csv"
    extra.write_text(GOOGLE_ADS.replace("Total:", "2026-01-10,generic,USD,5.00,1\nTotal:"))
    costs = ("import", "costs", "--format", "google-ads", "--channel", "search")
    assert cli(*costs, str(extra), redis_url=redis_db.url).returncode == 0
    january = get(exporter, "from=2026-01-01&to=2026-01-31")[1]
    assert january["totals"]["spend"]["value"] == 35.0
    assert cli(*costs, str(tmp_path / "google.csv"), redis_url=redis_db.url).returncode == 0
    assert get(exporter, query) == before
    bad = tmp_path / "bad.csv"
    bad.write_text(HISTORY.replace("2025-02-20,search,generic,5", "2025-02-20,search,generic,-5"))
    result = cli("import", "history", str(bad), redis_url=redis_db.url)
    assert result.returncode == 1
    assert "line 3: clicks" in result.stderr
    assert "nothing imported" in result.stderr
    assert get(exporter, query) == before


def check_the_api_refuses_bad_parameters_and_strangers(exporter: Exporter) -> None:
    assert get(exporter, "window=today", token=None)[0] == 401
    assert get(exporter, "window=today", token="wrong")[0] == 401
    status, body = get(exporter, "window=fortnight")
    assert (status, body["parameter"]) == (400, "window")
    status, body = get(exporter, "window=month&compare=last_week")
    assert (status, body["parameter"]) == (400, "compare")
    status, csv_text = get(exporter, "from=2026-02-01&to=2026-02-28&format=csv")
    assert status == 200
    assert csv_text.splitlines()[-1].startswith("total,10,0,4,200.6,75.2,125.4")
    with urllib.request.urlopen(f"{exporter.base}/openapi.json", timeout=10) as response:
        spec = json.loads(response.read())
    assert "/v1/report" in spec["paths"]
    with urllib.request.urlopen(exporter.url, timeout=10) as response:
        assert b"adpulse_exporter_redis_up 1.0" in response.read()
