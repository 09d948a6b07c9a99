"""The settings of `adpulse rebuild` and `adpulse snapshot`, each declared once.

What decides how events are counted (attribution window, channel and campaign caps, time zone)
is the worker's own declaration, so a rebuild counts as the workers do from the same flags and
ADPULSE_* variables.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from adpulse.core.click_ids import ClickKeys
from adpulse.core.options import (
    CLICK_KEY,
    CLICK_KEY_PREVIOUS,
    KAFKA,
    LOG_LEVEL,
    REDIS_URL,
    REGISTRY_TOPIC,
    TIMEZONE,
    TOPIC,
    Secret,
    Setting,
    click_keys,
    declarations,
    declare,
    declared,
    option,
    resolve_all,
    switch,
)
from adpulse.core.options import add_arguments as add_setting_arguments
from stream.keys import Retention
from stream.worker_settings import WorkerSettings, parse_batch_size


def parse_snapshot(text: str) -> Path | None:
    return Path(text) if text.strip() else None


@dataclass(frozen=True, slots=True)
class RebuildSettings:
    kafka: str = declare(KAFKA)
    redis_url: str = declare(REDIS_URL)
    topic: str = declare(TOPIC)
    registry_topic: str = declare(REGISTRY_TOPIC)
    group: str = declare(declared(WorkerSettings, "group"))
    snapshot: Path | None = option(
        "--snapshot",
        None,
        None,
        parse_snapshot,
        "a file of `adpulse snapshot export` to start from: its counters, then the events from "
        "the offsets it covers",
        metavar="FILE",
    )
    batch_size: int = option(
        "--batch-size",
        "ADPULSE_REBUILD_BATCH_SIZE",
        5000,
        parse_batch_size,
        "most events replayed in one script call",
    )
    no_switch: bool = switch(
        "--no-switch", "rebuild, but leave readers on the key space they use now"
    )
    attribution_days: int = declare(declared(WorkerSettings, "attribution_days"))
    order_days: int = declare(declared(WorkerSettings, "order_days"))
    max_channels: int = declare(declared(WorkerSettings, "max_channels"))
    max_campaigns: int = declare(declared(WorkerSettings, "max_campaigns"))
    timezone: str = declare(TIMEZONE)
    click_key: Secret | None = declare(CLICK_KEY)
    click_key_previous: Secret | None = declare(CLICK_KEY_PREVIOUS)
    log_level: str = declare(LOG_LEVEL)

    @property
    def click_keys(self) -> ClickKeys | None:
        return click_keys(self.click_key, self.click_key_previous)

    @property
    def retention(self) -> Retention:
        return Retention(
            attribution=timedelta(days=self.attribution_days),
            order=timedelta(days=self.order_days),
        )


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    kafka: str = declare(KAFKA)
    redis_url: str = declare(REDIS_URL)
    topic: str = declare(TOPIC)
    registry_topic: str = declare(REGISTRY_TOPIC)
    group: str = declare(declared(WorkerSettings, "group"))
    # The windows the workers number their generations by: a snapshot records them at export
    # and an import refuses other ones (`stream.snapshot.check_windows`).
    attribution_days: int = declare(declared(WorkerSettings, "attribution_days"))
    order_days: int = declare(declared(WorkerSettings, "order_days"))
    log_level: str = declare(LOG_LEVEL)

    @property
    def retention(self) -> Retention:
        return Retention(
            attribution=timedelta(days=self.attribution_days),
            order=timedelta(days=self.order_days),
        )


REBUILD_SETTINGS: tuple[Setting[Any], ...] = declarations(RebuildSettings)
SNAPSHOT_SETTINGS: tuple[Setting[Any], ...] = declarations(SnapshotSettings)


def add_rebuild_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_arguments(parser, REBUILD_SETTINGS)


def rebuild_settings(args: argparse.Namespace, env: Mapping[str, str]) -> RebuildSettings:
    return RebuildSettings(**resolve_all(args, env, REBUILD_SETTINGS))


def snapshot_settings(args: argparse.Namespace, env: Mapping[str, str]) -> SnapshotSettings:
    return SnapshotSettings(**resolve_all(args, env, SNAPSHOT_SETTINGS))
