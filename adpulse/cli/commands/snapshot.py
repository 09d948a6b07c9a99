"""`adpulse snapshot export|import FILE`: the counters to a file and back."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def register(subcommands: Any) -> None:
    from adpulse.core.options import add_arguments
    from stream.rebuild_settings import SNAPSHOT_SETTINGS
    from stream.snapshot import PAUSE_LIMIT_SECONDS

    shared = argparse.ArgumentParser(add_help=False)
    add_arguments(shared, SNAPSHOT_SETTINGS, default=argparse.SUPPRESS)
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "snapshot",
        parents=[shared],
        help="save the counters to a file, or restore them from one",
        description=(
            "Keep the counters beyond Kafka's retention: `export` writes every key of the live "
            "key space (counters, channel and campaign sets, spend records, coupons, remembered "
            "ids) and the worker group's committed offsets to a file; `adpulse rebuild "
            "--snapshot FILE` starts from it and replays the events after those offsets."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        parents=[shared],
        help="write the live key space and the offsets it covers to FILE",
        description=(
            "Write every key of the live key space, read at one moment, with the worker "
            "group's committed offsets read just before, to FILE (JSON). Workers may run. On "
            "a Redis Cluster the parts are read while workers write; only if customer facts "
            "moved between parts meanwhile, they are read again with writes paused on every "
            f"master (CLIENT PAUSE WRITE) for at most {PAUSE_LIMIT_SECONDS:g} s: the "
            "workers' writes wait, and so do the tracker's number leases (GET /v1/number "
            "answers 204 after its 1 s timeout)."
        ),
    )
    export.add_argument("file", type=Path, help="the snapshot file to write")
    restore = actions.add_parser(
        "import",
        parents=[shared],
        help="restore FILE into a fresh key space and switch readers to it",
        description=(
            "Restore the counters of FILE, as they were at export, into a fresh key space, "
            "and the registries (coupons, tracked phone numbers) from the registry topic, and "
            "switch readers to it; events after the snapshot are not counted: `adpulse "
            "rebuild --snapshot FILE` counts them too. A snapshot of one instance restores "
            "into a Redis Cluster too, not the reverse. Stop the workers first."
        ),
    )
    restore.add_argument("file", type=Path, help="a file of `adpulse snapshot export`")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from adpulse.core import logs
    from stream.rebuild_settings import snapshot_settings

    settings = snapshot_settings(args, env)
    logs.configure(settings.log_level, "snapshot")
    action = _export if args.action == "export" else _import
    return asyncio.run(action(settings, args.file))


async def _export(settings: Any, path: Path) -> int:
    from stream.errors import StreamError
    from stream.snapshot import export_snapshot, save
    from stream.store import KpiStore
    from stream.topic_reads import committed_offsets

    store = KpiStore.from_url(settings.redis_url)
    try:
        keys = await store.follow_active_prefix()
        offsets = await committed_offsets(settings.kafka, settings.topic, settings.group)
        snapshot = await export_snapshot(
            store.client,
            keys,
            offsets,
            settings.topic,
            settings.group,
            settings.retention,
        )
        size = await save(snapshot, path)
    except StreamError as error:
        return _fail(str(error))
    finally:
        await store.close()
    covered = ", ".join(f"{p}:{o}" for p, o in sorted(offsets.items())) or "none"
    print(
        f"wrote {len(snapshot.keys)} keys of {keys.prefix!r} to {path} ({size} bytes), "
        f"covering {settings.topic} up to the offsets {covered} (partition:offset)"
    )
    return 0


async def _import(settings: Any, path: Path) -> int:
    from stream.errors import StreamError
    from stream.rebuild import ensure_empty, fresh_keys, idle_group, switch
    from stream.registry import apply_state, read_state
    from stream.snapshot import check_target, check_windows, load, restore
    from stream.store import KpiStore

    keys = fresh_keys()
    store = KpiStore.from_url(settings.redis_url, keys=keys)
    try:
        snapshot = await load(path)
        check_windows(snapshot, settings.retention)
        check_target(snapshot, store.cluster)
        await idle_group(settings.kafka, settings.topic, settings.group)
        await ensure_empty(store, keys)
        written = await restore(store.client, snapshot, keys)
        # The registries as `rebuild` restores them: the numbers are not in a snapshot.
        state = await read_state(settings.kafka, settings.registry_topic)
        registry = await apply_state(store, state)
        await switch(store, keys)
    except StreamError as error:
        return _fail(str(error))
    finally:
        await store.close()
    print(
        f"restored {written} keys of {path} into {keys.prefix!r} and switched readers to it; "
        f"registries restored from {settings.registry_topic}: {_counts(registry)}; "
        f"events after the snapshot are not counted (`adpulse rebuild --snapshot {path}` "
        f"counts them too)"
    )
    return 0


def _counts(registry: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in registry.items()) or "none"


def _fail(message: str) -> int:
    print(f"adpulse snapshot: {message}", file=sys.stderr)
    return 1
