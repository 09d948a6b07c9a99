"""`adpulse simulate` against a real tracker: the topic holds exactly what it reports sending."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adpulse.cli.simulate.profiles import CHANNEL_NAMES, coupon_rows, number_rows
from tests.conftest import RedisDatabase
from tests.integration.conftest import API_TOKEN, serve_tracker
from tests.kafka_helpers import TopicReader
from tests.processes import Tracker
from tests.services import KafkaService

ROOT = Path(__file__).resolve().parents[2]
M = 1_000_000


def run_simulator(tracker_url: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "ADPULSE_API_TOKEN": API_TOKEN}
    result = subprocess.run(
        [sys.executable, "-m", "adpulse", "simulate", "--tracker", tracker_url, "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def net(status: str, value: int) -> int:
    return value if status in ("approved", "pending") else 0


def count_order(figures: Counter[str], status: str, value: int, sign: int) -> None:
    figures["net_conversions"] += sign * (status in ("approved", "pending"))
    figures["net_revenue_micros"] += sign * net(status, value)
    if status != "approved":
        figures[status] += sign
        figures[f"{status}_micros"] += sign * value


def counted(events: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Count the topic's events as the store does: bots apart, one conversion per order."""
    coupons = dict(coupon_rows())
    click_channel = {e["click_id"]: e["channel"] for e in events if e["type"] == "click"}
    figures = {channel: Counter[str]() for channel in CHANNEL_NAMES}
    seen_events: set[str] = set()
    # order id -> (channel, status, value, acquisition channel); customer -> acquisition channel
    orders: dict[str, tuple[str, str, int, str | None]] = {}
    customers: dict[str, str] = {}
    leads: set[str] = set()
    spend: dict[str, tuple[str, int]] = {}
    callers: set[str] = set()
    # In the order received: a customer's orders may sit in different partitions, seconds apart.
    for event in sorted(events, key=lambda event: str(event["received_at"])):
        kind = event["type"]
        if event.get("bot"):
            figures[event["channel"]]["bot_clicks"] += 1
            continue
        if event["event_id"] in seen_events:
            figures[click_channel.get(event.get("click_id", ""), "influencer")]["duplicates"] += 1
            continue
        seen_events.add(event["event_id"])
        if kind == "click":
            figures[event["channel"]]["clicks"] += 1
        elif kind == "redemption":
            figures[coupons[event["coupon"]]]["redemptions"] += 1
        elif kind == "lead":
            channel = click_channel[event["click_id"]]
            if event["lead_id"] in leads:
                figures[channel]["duplicates"] += 1
            else:
                leads.add(event["lead_id"])
                figures[channel]["leads"] += 1
        elif kind == "conversion":
            channel = (
                click_channel[event["click_id"]]
                if "click_id" in event
                else coupons[event["coupon"]]
            )
            status, value = event.get("status", "approved"), event["value_micros"]
            known = orders.get(event["order_id"])
            if known is not None and known[1:3] == (status, value):
                figures[channel]["duplicates"] += 1
                continue
            if known is not None:
                # A restatement: the order's counters move by the difference.
                channel, was, was_value, acquirer = known
                figures[channel]["restatements"] += 1
                count_order(figures[channel], was, was_value, -1)
                if acquirer is not None:
                    figures[acquirer]["ltv_revenue_micros"] -= net(was, was_value)
            else:
                acquirer = None
                figures[channel]["conversions"] += 1
                figures[channel]["revenue_micros"] += value
                customer = event.get("customer_id")
                if customer is not None:
                    acquirer = customers.get(customer)
                    if acquirer is None:
                        acquirer = customers[customer] = channel
                        figures[channel]["new_customers"] += 1
                    else:
                        figures[channel]["repeat_sales"] += 1
                        figures[channel]["repeat_revenue_micros"] += value
            count_order(figures[channel], status, value, 1)
            if acquirer is not None:
                figures[acquirer]["ltv_revenue_micros"] += net(status, value)
            orders[event["order_id"]] = (channel, status, value, acquirer)
        elif kind == "spend":
            spend[event["event_id"]] = (event["channel"], event["cost_micros"])
        elif kind == "call":
            figures[event["channel"]]["calls"] += 1
            figures[event["channel"]]["answered_calls"] += bool(event.get("answered"))
            if event.get("qualified") and event["caller"] not in callers:
                callers.add(event["caller"])
                figures[event["channel"]]["leads"] += 1
    for channel, cost in spend.values():
        figures[channel]["spend_micros"] += cost
    return figures


@pytest.fixture
def tracker(
    kafka: KafkaService, topic: str, tmp_path: Path, redis_db: RedisDatabase, registry_env: str
) -> Iterator[Tracker]:
    """A tracker with the simulator's phone numbers registered, so that its calls count."""
    numbers = tmp_path / "numbers.csv"
    with numbers.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "channel", "campaign", "kind"])
        writer.writerows(number_rows())
    registered = subprocess.run(
        [sys.executable, "-m", "adpulse", "numbers", "--redis-url", redis_db.url, "import",
         str(numbers)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    yield from serve_tracker(
        kafka,
        topic,
        tmp_path,
        env={"ADPULSE_HASH_KEY": "s" * 40},
        extra=["--redis-url", redis_db.url],
    )


async def test_the_topic_holds_what_the_simulator_reports(
    tracker: Tracker, kafka: KafkaService, topic: str
) -> None:
    report = run_simulator(
        tracker.url,
        # Seed 36's twelve seconds hold orders in every status and customers coming back.
        *("--duration", "12", "--rate", "80", "--seed", "36", "--spend-interval", "2"),
        "--customers",
    )
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["skipped_conversions"] == 0
    totals = report["totals"]
    assert totals["clicks"] > 0
    assert totals["bot_clicks"] > 0
    assert totals["leads"] > 0
    assert totals["spend_micros"] > 0
    assert totals["calls"] > 0
    assert report["skipped_calls"] == 0
    # Orders in every status, restated, and customers who came back.
    for name in ("restatements", "pending", "declined", "refunded", "repeat_sales"):
        assert totals[name] > 0, name
    assert totals["net_revenue_micros"] < totals["revenue_micros"]

    async with TopicReader(kafka.bootstrap, topic) as reader:
        records = await reader.wait_for_count(report["requests"], timeout=30)
        events = [record.json() for record in records]
    assert len(events) == report["requests"]
    figures = counted(events)
    for channel, sent in report["channels"].items():
        for name in (
            "clicks",
            "bot_clicks",
            "leads",
            "conversions",
            "revenue_micros",
            "spend_micros",
            "redemptions",
            "duplicates",
            "calls",
            "answered_calls",
            "net_conversions",
            "net_revenue_micros",
            "pending",
            "pending_micros",
            "declined",
            "declined_micros",
            "refunded",
            "refunded_micros",
            "restatements",
            "new_customers",
            "repeat_sales",
            "repeat_revenue_micros",
            "ltv_revenue_micros",
        ):
            assert figures[channel][name] == sent[name], (channel, name)
    # Clicks a server forwarded carry the visitor's address (truncated), not the server's, and
    # count by the visitor's user agent.
    forwarded = [e for e in events if e["type"] == "click" and e.get("ip") == "198.51.100.0"]
    assert forwarded
    assert any(not e.get("bot") for e in forwarded)
    # Customers travel as their keyed hash, never in clear.
    customers = {e["customer_id"] for e in events if "customer_id" in e}
    assert len(customers) == sum(sent["new_customers"] for sent in report["channels"].values())
    assert all(len(customer) == 32 and "@" not in customer for customer in customers)
    # Conversions after redirects carry the click id the tracker put in the Location.
    assigned = {e["click_id"] for e in events if e["type"] == "click" and "-k" not in e["click_id"]}
    assert any(e.get("click_id") in assigned for e in events if e["type"] == "conversion")
