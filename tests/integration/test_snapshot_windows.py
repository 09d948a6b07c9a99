"""A snapshot records the windows its generations were numbered by (`stream.snapshot`,
"Windows"): `adpulse snapshot import` and `adpulse rebuild --snapshot` refuse it under another
order window, naming the setting, and restore it exactly under its own, through a real
redis-server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from stream.keys import Retention
from stream.snapshot import WindowMismatch, check_windows, export_snapshot, load, restore, save
from stream.store import KpiStore
from tests.conftest import RedisDatabase
from tests.integration.test_order_restatements import folded
from tests.integration.test_order_states import conversion, counters
from tests.integration.test_store_redis import drop_keys, unique_keys

pytestmark = pytest.mark.integration

THIRTY_DAYS = Retention(order=timedelta(days=30))
"""The workers' retention in these tests: ADPULSE_ORDER_DAYS=30."""


def adpulse(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.fixture
async def store(redis_db: RedisDatabase) -> AsyncIterator[KpiStore]:
    kpi_store = KpiStore.from_url(redis_db.url, keys=unique_keys(), retention=THIRTY_DAYS)
    yield kpi_store
    await drop_keys(kpi_store.client, kpi_store.keys)
    await kpi_store.close()


async def test_a_snapshot_is_refused_under_another_order_window_and_exact_under_its_own(
    store: KpiStore, redis_db: RedisDatabase, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = [
        conversion("e1", now - timedelta(days=3), "cents", "ann", "pending", 25_000_000),
        conversion("e2", now - timedelta(days=2), "micros", "bob", None, 10_123_456),
    ]
    await store.apply_batch(first, now=now)
    # An export given other settings than the workers' is refused: the generations' expiry
    # tells the window they were written with.
    with pytest.raises(WindowMismatch, match=r"ADPULSE_ORDER_DAYS=30 \(--order-days 30\)"):
        await export_snapshot(
            store.single_client("snapshot export"), store.keys, {0: 2}, "adpulse.events", "w"
        )
    path = tmp_path / "snapshot.json"
    snapshot = await export_snapshot(
        store.single_client("snapshot export"),
        store.keys,
        {0: 2},
        "adpulse.events",
        "worker",
        THIRTY_DAYS,
    )
    await save(snapshot, path)
    assert orjson.loads(path.read_bytes())["windows"]["order"] == 30 * 86400

    # Both commands refuse it under the default 90-day order window before touching anything
    # (neither reaches Kafka), naming the setting and both values.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADPULSE_")}
    env["ADPULSE_REDIS_URL"] = redis_db.url
    for command in (("snapshot", "import", str(path)), ("rebuild", "--snapshot", str(path))):
        done = adpulse(*command, env=env)
        assert done.returncode == 1, done.stderr
        assert "ADPULSE_ORDER_DAYS" in done.stderr, done.stderr
        assert "order window is 30 days, this configuration's 90 days" in done.stderr
        assert "ADPULSE_ORDER_DAYS=30" in done.stderr, done.stderr
    with pytest.raises(WindowMismatch, match="ADPULSE_ORDER_DAYS"):
        check_windows(await load(path), Retention())

    # Under its own window it restores, and restatements decode at the orders' own minutes.
    loaded = await load(path)
    check_windows(loaded, THIRTY_DAYS)
    restored = KpiStore.from_url(redis_db.url, keys=unique_keys(), retention=THIRTY_DAYS)
    try:
        assert await restore(restored.single_client("snapshot import"), loaded, restored.keys)
        later = [
            conversion("e5", now, "cents", "ann", "refunded"),
            conversion("e6", now, "micros", "bob", "declined"),
        ]
        result = await restored.apply_batch(later, now=now)
        assert (result.applied, result.duplicates) == (2, 0)
        assert await counters(restored) == folded([first, later], now)
    finally:
        await drop_keys(restored.client, restored.keys)
        await restored.close()


async def test_a_snapshot_without_windows_is_restored_assuming_the_importers_with_a_warning(
    store: KpiStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await store.apply_batch([conversion("e1", now, "cents", "ann", None, 5_000_000)], now=now)
    snapshot = await export_snapshot(
        store.single_client("snapshot export"), store.keys, {}, "adpulse.events", "w", THIRTY_DAYS
    )
    document = snapshot.document()
    del document["windows"]  # as a snapshot exported before windows were recorded
    path = tmp_path / "old.json"
    path.write_bytes(orjson.dumps(document))
    with caplog.at_level(logging.WARNING, logger="stream.snapshot"):
        check_windows(await load(path), THIRTY_DAYS)
    assert "records no windows" in caplog.text
    assert "order 30 days" in caplog.text
    assert "ADPULSE_ORDER_DAYS" in caplog.text
