"""`adpulse report --once [--json]` as a subprocess against a real Redis filled by the store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adpulse.core.event import Event, EventType
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
M = 1_000_000


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", "report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def event(number: int, kind: EventType, ts: datetime, **fields: Any) -> Event:
    return Event(event_id=f"e{number}", type=kind, ts=ts, received_at=ts, **fields)


def traffic(now: datetime) -> list[Event]:
    yesterday = now - timedelta(days=1)
    click, conversion = EventType.CLICK, EventType.CONVERSION
    return [
        event(1, click, now, channel="paid_search", click_id="k1"),
        event(2, click, now, channel="paid_search", click_id="k2"),
        event(3, click, now, channel="email", click_id="k3"),
        event(4, click, now, channel="email", bot=True),  # counted apart, not as a click
        event(5, conversion, now, click_id="k1", order_id="o1", value_micros=85_500_000),
        event(6, conversion, now, click_id="k1", order_id="o1", value_micros=85_500_000),
        event(7, conversion, now, click_id="k3", order_id="o2", value_micros=40 * M),
        event(8, EventType.REDEMPTION, now, coupon="ANNA10", value_micros=9 * M),
        event(9, conversion, now, coupon="ANNA10", order_id="o3", value_micros=60 * M),
        event(
            10,
            EventType.SPEND,
            now,
            channel="paid_search",
            cost_micros=3 * M,
            start=now - timedelta(minutes=3),
            end=now - timedelta(minutes=1),
        ),
        event(11, click, yesterday, channel="paid_search", click_id="y1"),
        event(12, conversion, yesterday, click_id="y1", order_id="y-o1", value_micros=20 * M),
    ]


async def fill(url: str) -> datetime:
    store = KpiStore.from_url(url)
    try:
        await store.add_coupon("ANNA10", "influencer")
        now = datetime.now(UTC)
        await store.apply_batch(traffic(now))
    finally:
        await store.close()
    return now


async def test_json_returns_exactly_the_counted_numbers(redis_db: RedisDatabase) -> None:
    now = await fill(redis_db.url)
    first = (now - timedelta(days=1)).date().isoformat()
    result = report(
        "--once", "--json", "--from", first, "--to", now.date().isoformat(),
        "--redis-url", redis_db.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["currency"] == "USD"
    rows = {row["channel"]: row for row in document["rows"]}
    assert list(rows) == ["paid_search", "influencer", "email"]  # by spend, then revenue
    search = {
        name: figure["value"] for name, figure in rows["paid_search"].items() if name != "channel"
    }
    assert search == {
        "clicks": 3, "redemptions": 0, "conversions": 2, "revenue": 105.5, "spend": 3.0,
        "profit": 102.5, "cpa": 1.5, "cpc": 1.0, "conversion_rate": 0.6667, "roas": 35.17,
        "romi": 34.17, "aov": 52.75,
        # every order approved as first reported: gross is net
        "gross_conversions": 2, "gross_revenue": 105.5, "gross_roas": 35.17,
        "pending_orders": 0, "declined_orders": 0, "refunded_orders": 0, "refunded_revenue": 0.0,
        "new_customers": 0, "cac": None, "repeat_sales": 0, "repeat_revenue": 0.0,
        "leads": 0, "cpl": None, "lead_rate": 0.0, "lead_to_sale_rate": None, "bot_clicks": 0,
        "bot_share": 0.0,
    }  # fmt: skip
    email = rows["email"]
    assert (email["clicks"]["value"], email["bot_clicks"]["value"]) == (1, 1)
    assert email["bot_share"]["value"] == 0.5
    influencer = rows["influencer"]
    assert (influencer["redemptions"]["value"], influencer["conversions"]["value"]) == (1, 1)
    assert influencer["revenue"]["value"] == 60.0  # the redemption's value is not revenue
    assert influencer["cpa"]["value"] is None  # no spend: missing, not 0.00
    totals = document["totals"]
    assert totals["clicks"]["value"] == 4
    assert totals["conversions"]["value"] == 4
    # Over the rows with clicks only: 3 conversions of 4 clicks, not 4 of 4.
    assert totals["conversion_rate"]["value"] == 0.75


async def test_once_prints_a_table_with_every_channel(redis_db: RedisDatabase) -> None:
    await fill(redis_db.url)
    result = report("--once", "--period", "5m", "--redis-url", redis_db.url)
    assert result.returncode == 0, result.stderr
    for name in ("paid_search", "email", "influencer", "total", "CPA", "5m"):
        assert name in result.stdout


def test_unreachable_redis_is_one_clear_line_and_exit_code_1() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for flags in (["--once", "--json"], ["--once"]):
        result = report(*flags, "--redis-url", url, "--timeout", "2")
        assert result.returncode == 1
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("adpulse report: cannot read Redis at")
