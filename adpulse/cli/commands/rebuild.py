"""`adpulse rebuild`: the counters again from what Kafka retains, into a fresh key space."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any


def register(subcommands: Any) -> None:
    from stream.rebuild_settings import add_rebuild_arguments

    parser: argparse.ArgumentParser = subcommands.add_parser(
        "rebuild",
        help="replay the events Kafka retains into a fresh key space and switch readers to it",
        description=(
            "Recover from a lost or damaged Redis: stop every worker first; then this replays "
            "every event the events topic still retains (from a snapshot's offsets with "
            "--snapshot, after restoring its counters) into a fresh key space "
            "adpulse-r<UTC time>:, with the worker's decoding, script and dedupe, restores the "
            "registries (coupons, tracked phone numbers) from the registry topic, and switches "
            "readers to it (Redis key adpulse-active-prefix). Start the workers afterwards: "
            "what they read again is skipped as duplicates. Commits nothing to Kafka. Exit code "
            "1 when it cannot rebuild (the reason is printed; readers are not switched)."
        ),
    )
    add_rebuild_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from adpulse.core import logs
    from stream.rebuild_settings import rebuild_settings

    settings = rebuild_settings(args, env)
    logs.configure(settings.log_level, "rebuild")
    return asyncio.run(_rebuild(settings))


async def _rebuild(settings: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from adpulse.core.options import REDIS_CLUSTER_SCHEME as CLUSTER
    from stream.errors import StreamError
    from stream.rebuild import rebuild

    console = Console(stderr=True)
    columns = (*Progress.get_default_columns()[:2], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("replaying events", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            result = await rebuild(settings, advance)
        except (StreamError, ValueError) as error:
            progress.stop()
            print(f"adpulse rebuild: {error}", file=sys.stderr)
            return 1
    print(
        f"rebuilt {settings.topic} into {result.prefix!r} in {result.seconds:.1f} s: "
        f"{result.records} records, {result.applied} counted, {result.duplicates} duplicates, "
        f"{result.rejected} rejected, {result.bots} bots"
    )
    if result.snapshot_keys:
        print(f"started from {settings.snapshot}: {result.snapshot_keys} keys")
    registry = ", ".join(f"{count} {kind}" for kind, count in result.registry.items())
    print(f"registries restored from {settings.registry_topic}: {registry or 'none'}")
    for partition, first in sorted(result.lost_before.items()):
        print(
            f"partition {partition} is retained from offset {first} only: the counters of the "
            f"events before it are not in the rebuild (use --snapshot to keep them)"
        )
    if result.switched:
        print(
            f"readers switched from {result.old_prefix!r} to {result.prefix!r}: start the "
            f"workers now; the exporter follows within a scrape, restart `adpulse report` live "
            f"views. Delete the old key space once satisfied: "
            f"{delete_command(result.old_prefix, cluster=settings.redis_url.startswith(CLUSTER))}"
        )
    else:
        print(
            f"readers not switched (--no-switch); to switch: redis-cli set "
            f"adpulse-active-prefix '{result.prefix}'"
        )
    return 0


def delete_command(prefix: str, *, cluster: bool = False) -> str:
    """The shell command that deletes the key space `prefix`, but the tracker's numbers and
    leases, which share the default prefix whatever key space is live (on a cluster under their
    hash tag, `NumberKeys.in_cluster`). In cluster mode, run on every master, a key per UNLINK
    (the parts' keys are in different slots)."""
    from adpulse.core.phone import NumberKeys

    numbers = NumberKeys()
    kept = f" | grep -Ev '{numbers.expression}'" if prefix == numbers.prefix else ""
    if cluster:
        return (
            f"on every master, redis-cli -h MASTER -p PORT --scan --pattern '{prefix}*'{kept} | "
            f"xargs -r -n1 redis-cli -h MASTER -p PORT unlink"
        )
    return f"redis-cli --scan --pattern '{prefix}*'{kept} | xargs -r redis-cli unlink"
