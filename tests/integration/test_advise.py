"""`adpulse advise --json` as a subprocess against a real Redis holding a week of hour buckets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from stream.keys import CLICKS, CONVERSIONS, SPEND, KeySpace
from tests.conftest import RedisDatabase
from tests.metrics import scrape, value
from tests.processes import Exporter

ROOT = Path(__file__).resolve().parents[2]
M = 1_000_000


def fill(url: str, now_hour: int) -> None:
    """8 days of hours: paid_search at CPA 20; paid_social at 25 until a day ago, then 50;
    email with too few conversions for advice. Written as the worker's script writes them."""
    keys = KeySpace()
    with redis.Redis.from_url(url) as client, client.pipeline() as pipe:
        # One hour more than needed: if the hour turns while the test runs, the window moves.
        for hour in range(now_hour - 8 * 24, now_hour + 1):
            recent = hour >= now_hour - 24
            fields = {
                f"paid_search:{CLICKS}": 200,
                f"paid_search:{CONVERSIONS}": 5,
                f"paid_search:{SPEND}": 100 * M,
                f"paid_social:{CLICKS}": 250,
                f"paid_social:{CONVERSIONS}": 2 if recent else 4,
                f"paid_social:{SPEND}": 100 * M,
                f"email:{CLICKS}": 20,
                f"email:{CONVERSIONS}": hour % 2,
                f"email:{SPEND}": 1 * M,
            }
            pipe.hset(keys.hour(hour), mapping=fields)
        pipe.execute()


def test_advise_moves_budget_from_the_channel_whose_cpa_doubled(redis_db: RedisDatabase) -> None:
    now_hour = int(time.time()) // 3600
    fill(redis_db.url, now_hour)
    done = subprocess.run(
        [sys.executable, "-m", "adpulse", "advise", "--json", "--redis-url", redis_db.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    rows = {row["channel"]: row for row in document["channels"]}
    assert document["currency"] == "USD"
    social, search, email = rows["paid_social"], rows["paid_search"], rows["email"]
    assert social["action"] == "decrease"
    assert social["budget"] == 2400.0
    assert social["next_budget"] == 1920.0  # the 20 % guard rail
    assert social["baseline_ratio"] > 1.9
    assert "move 20 % (480.00) to paid_search" in social["reason"]
    assert search["action"] == "increase"
    assert search["next_budget"] == 2880.0
    assert email["action"] == "hold"
    assert email["next_budget"] == email["budget"] == 24.0
    assert sum(row["next_budget"] for row in rows.values()) == 2400.0 + 2400.0 + 24.0


def test_advise_says_when_redis_cannot_be_read() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "adpulse",
            "advise",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--timeout",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot read Redis at redis://127.0.0.1:1/0" in done.stderr


def test_exporter_serves_the_nowcast_and_advice_gauges(
    redis_db: RedisDatabase, tmp_path: Path
) -> None:
    fill(redis_db.url, int(time.time()) // 3600)
    process = Exporter(redis_url=redis_db.url, log=tmp_path / "exporter.log")
    try:
        samples = scrape(process.url)
    finally:
        code = process.terminate()
    assert code == 0, process.log()
    assert value(samples, "adpulse_conversions_nowcast", channel="paid_social", window="24h") == 48
    assert value(samples, "adpulse_cpa_nowcast", channel="paid_social", window="24h") == 50
    assert value(samples, "adpulse_advice_budget_share", channel="paid_social") == 1920 / 4824
    assert value(samples, "adpulse_advice_budget_share", channel="email") == 24 / 4824


def test_read_api_advice_is_the_document_of_advise_json(
    redis_db: RedisDatabase, tmp_path: Path
) -> None:
    """`GET /v1/advice` (bearer token, listed in /openapi.json) answers exactly what
    `adpulse advise --json` prints with the same settings; a CPA target shows in both."""
    fill(redis_db.url, int(time.time()) // 3600)
    settings = ["--target-cpa", "paid_search=15,30", "--advice-max-shift", "10%"]
    process = Exporter(
        redis_url=redis_db.url,
        log=tmp_path / "exporter.log",
        extra=settings,
        env={"ADPULSE_READ_TOKEN": "s3cret"},
    )
    try:
        with urllib.request.urlopen(f"{process.base}/openapi.json", timeout=10) as answer:
            assert "/v1/advice" in json.load(answer)["paths"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{process.base}/v1/advice", timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        request = urllib.request.Request(
            f"{process.base}/v1/advice", headers={"Authorization": "Bearer s3cret"}
        )
        for _ in range(2):  # again if the hour turned in between: the window moved
            hour = int(time.time()) // 3600
            with urllib.request.urlopen(request, timeout=30) as answer:
                served = json.load(answer)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "adpulse",
                    "advise",
                    "--json",
                    "--redis-url",
                    redis_db.url,
                    *settings,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            if int(time.time()) // 3600 == hour:
                break
    finally:
        code = process.terminate()
    assert code == 0, process.log()
    assert served == json.loads(done.stdout)
    rows = {row["channel"]: row for row in served["channels"]}
    search, social = rows["paid_search"], rows["paid_social"]
    assert search["target_cpa"] == 15.0
    assert search["above_target"] > 0.99  # CPA 20 for days against a target of 15
    assert "sure above its target 15.00" in search["reason"]
    assert social["target_cpa"] == 30.0
    assert social["next_budget"] == 2160.0  # the 10 % guard rail
