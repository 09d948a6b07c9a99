"""`adpulse coupons` against a real redis-server, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisDatabase
from tests.services import KafkaService

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def registry(kafka: KafkaService, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Changes go to a registry topic of this test's own on the real broker (`stream.registry`)."""
    name = f"adpulse.registry.t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ADPULSE_KAFKA", kafka.bootstrap)
    monkeypatch.setenv("ADPULSE_REGISTRY_TOPIC", name)
    yield name
    kafka.forget_topic(name)


def coupons(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adpulse", "coupons", "--redis-url", redis_url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_add_import_list_remove(redis_db: RedisDatabase, tmp_path: Path) -> None:
    added = coupons(redis_db.url, "add", "summer10", "Email")
    assert (added.returncode, added.stdout) == (0, "SUMMER10 -> email\n")
    csv_file = tmp_path / "coupons.csv"
    csv_file.write_text("code,channel\nPODCAST,podcast\nSUMMER10,paid_social\n")
    imported = coupons(redis_db.url, "import", str(csv_file))
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 coupon codes" in imported.stdout
    listed = coupons(redis_db.url, "list")
    assert listed.stdout.split("\n") == ["PODCAST   podcast", "SUMMER10  paid_social", ""]
    assert coupons(redis_db.url, "remove", "podcast").returncode == 0
    missing = coupons(redis_db.url, "remove", "podcast")
    assert missing.returncode == 1
    assert "PODCAST is not registered" in missing.stderr


async def test_changes_are_kept_in_the_registry_topic(
    redis_db: RedisDatabase, kafka: KafkaService, registry: str
) -> None:
    from stream.registry import read_state

    assert coupons(redis_db.url, "add", "summer10", "email").returncode == 0
    assert coupons(redis_db.url, "add", "winter5", "podcast").returncode == 0
    assert coupons(redis_db.url, "remove", "winter5").returncode == 0
    state = await read_state(kafka.bootstrap, registry)
    assert {(e.kind, e.key, e.value) for e in state.entries.values()} == {
        ("coupon", "SUMMER10", "email")
    }
    assert state.records == 3


def test_kafka_unreachable_changes_nothing(redis_db: RedisDatabase) -> None:
    down = coupons(redis_db.url, "add", "summer10", "email", "--kafka", "127.0.0.1:1")
    assert down.returncode == 1
    assert "--kafka / ADPULSE_KAFKA" in down.stderr
    assert "nothing changed" in down.stderr
    assert coupons(redis_db.url, "list").stdout == ""


def test_a_bad_file_changes_nothing(redis_db: RedisDatabase, tmp_path: Path) -> None:
    csv_file = tmp_path / "coupons.csv"
    csv_file.write_text("code,channel\nGOOD,email\nBAD CODE!,email\n")
    result = coupons(redis_db.url, "import", str(csv_file))
    assert result.returncode == 1
    assert "line 3" in result.stderr
    assert coupons(redis_db.url, "list").stdout == ""


def test_bad_code_and_unreachable_redis(redis_db: RedisDatabase) -> None:
    bad = coupons(redis_db.url, "add", "no spaces", "email")
    assert bad.returncode == 1
    assert "coupon 'no spaces'" in bad.stderr
    down = coupons("redis://127.0.0.1:1/0", "list")
    assert down.returncode == 1
    assert "Redis unavailable" in down.stderr
