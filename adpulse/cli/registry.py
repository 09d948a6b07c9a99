"""What the registry commands share (`adpulse coupons`, `adpulse numbers`).

A change goes to the registry topic in Kafka first (`stream.registry.Registrar`, so that `adpulse
rebuild` restores it after Redis is lost), then to Redis; Kafka unreachable: no change. Each
command says what its entries are and how it prints them (a `RegistryCommand`); the flags, the
actions' flow, the CSV checks and the errors are the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from adpulse.core.options import KAFKA, REDIS_URL, REGISTRY_TOPIC, Setting, add_arguments, resolve

if TYPE_CHECKING:
    from stream.registry import RegistryEntry

REGISTRY_SETTINGS: tuple[Setting[Any], ...] = (REDIS_URL, KAFKA, REGISTRY_TOPIC)
REDIS_TIMEOUT = 5.0
"""Seconds a registry command waits for each Redis answer before it says Redis does not answer."""


class RegistryFileError(ValueError):
    """A registry CSV that cannot be imported; nothing of it was written."""


class Actions:
    """A registry command's parser and its actions (add, import, list, remove, ...), each taking
    the command's flags before or after the action."""

    def __init__(
        self, subcommands: Any, command: RegistryCommand, help: str, description: str
    ) -> None:
        # SUPPRESS keeps an action's parser from overwriting a value given before the action
        # with its own default.
        self.shared = argparse.ArgumentParser(add_help=False)
        add_arguments(self.shared, command.settings, default=argparse.SUPPRESS)
        self.parser: argparse.ArgumentParser = subcommands.add_parser(
            command.name, parents=[self.shared], help=help, description=description
        )
        self.parser.set_defaults(run=command.run)
        self.actions = self.parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(self, name: str, help: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.actions.add_parser(
            name, parents=[self.shared], help=help, description=description
        )
        return parser

    def add_import(self, header: str, description: str) -> None:
        """`import FILE`: a CSV whose first line is `header`."""
        load = self.add("import", f"register every row of a CSV file (header {header})",
                        f"{description} Every row is checked before anything is written: one "
                        f"bad row, no change.")  # fmt: skip
        load.add_argument("file", type=Path, help=f"the CSV file, header {header}")

    def add_list_and_remove(self, listing: str, key: str, what: str, forgotten: str) -> None:
        """`list` (printing `listing`) and `remove KEY` (KEY: a `what`; `forgotten` says what
        becomes of it)."""
        self.add("list", f"print {listing}", f"Print {listing}.")
        remove = self.add("remove", f"forget a {key}",
                          f"Forget a {what}: {forgotten}. Exit code 1 when it was not "
                          f"registered.")  # fmt: skip
        remove.add_argument(key, help=f"the {what} to forget")


class RegistryCommand:
    """One registry's command: `entries` checks what an action names before anything is
    written (a remove: the entry with no value), `changed` and `listed` say what is printed."""

    name: ClassVar[str]
    kind: ClassVar[str]
    settings: ClassVar[tuple[Setting[Any], ...]] = REGISTRY_SETTINGS

    def entries(self, args: argparse.Namespace, env: Mapping[str, str]) -> list[RegistryEntry]:
        raise NotImplementedError

    def changed(
        self, args: argparse.Namespace, entries: list[RegistryEntry], before: list[str | None]
    ) -> list[str]:
        raise NotImplementedError

    def listed(self, registered: dict[str, str]) -> list[str]:
        raise NotImplementedError

    def missing(self, key: str) -> str:
        return f"{key} is not registered"

    def run(self, args: argparse.Namespace, env: Mapping[str, str]) -> int:
        url = resolve(args, env, REDIS_URL)
        kafka, topic = resolve(args, env, KAFKA), resolve(args, env, REGISTRY_TOPIC)
        try:
            entries = [] if args.action == "list" else self.entries(args, env)
        except ValueError as error:
            return self.fail(str(error))
        return asyncio.run(self._run(args, url, kafka, topic, entries))

    async def _run(self, args: argparse.Namespace, url: str, kafka: str, topic: str,
                   entries: list[RegistryEntry]) -> int:  # fmt: skip
        # Imported here: `adpulse --help` imports every command's module.
        from stream.errors import StoreUnavailable
        from stream.registry import Registrar, RegistryUnavailable
        from stream.store import KpiStore

        try:
            store = KpiStore.from_url(url, timeout=REDIS_TIMEOUT)
        except ValueError as error:
            return self.fail(f"--redis-url / ADPULSE_REDIS_URL: {error}")
        registrar = Registrar(kafka, topic, store)
        try:
            await store.follow_active_prefix()
            if args.action == "list":
                lines = self.listed(await registrar.entries(self.kind))
            elif args.action == "remove":
                (gone,) = entries
                if not await registrar.remove(gone.kind, gone.key):
                    return self.fail(self.missing(gone.key))
                lines = [f"removed {gone.key}"]
            else:
                lines = self.changed(args, entries, await registrar.register(entries))
        except ValueError as error:
            return self.fail(str(error))
        except StoreUnavailable as error:
            return self.fail(f"{error} (Redis at {url}: --redis-url / ADPULSE_REDIS_URL)")
        except RegistryUnavailable as error:
            return self.fail(f"{error}; nothing changed")
        finally:
            await store.close()
        for line in lines:
            print(line)
        return 0

    def fail(self, message: str) -> int:
        print(f"adpulse {self.name}: {message}", file=sys.stderr)
        return 1


def read_csv(
    path: Path,
    columns: tuple[str, ...],
    required: int,
    row: Callable[[dict[str, str]], RegistryEntry],
    noun: str,
    describe: Callable[[RegistryEntry], str],
    error: type[RegistryFileError] = RegistryFileError,
) -> list[RegistryEntry]:
    """The entries of a CSV (UTF-8) whose header is the first `required` of `columns` and
    optionally more of them in order, each row made by `row` (ValueError: the reason), all
    checked before anything is written.

    `error` names the file, the line and the reason of the first problem: a bad row, a wrong
    column count, or a key given twice with different values (`describe`d).
    """
    optional = columns[required:]
    wanted = (
        ",".join(columns[:required]) + "".join(f"[,{c}" for c in optional) + "]" * len(optional)
    )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as failure:
        raise error(f"cannot read {path}: {failure}") from failure
    reader = csv.reader(text.splitlines())
    header = tuple(cell.strip().lower() for cell in next(reader, None) or ())
    if len(header) < required or header != columns[: len(header)]:
        raise error(f"{path}: the first line must be the header {wanted}")
    entries: list[RegistryEntry] = []
    seen: dict[str, RegistryEntry] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise error(f"{path} line {line}: expected {len(header)} columns, got {len(cells)}")
        try:
            new = row(dict(zip(header, cells, strict=True)))
        except ValueError as failure:
            raise error(f"{path} line {line}: {failure}") from failure
        first = seen.setdefault(new.key, new)
        if first != new:
            raise error(
                f"{path} line {line}: {new.key} is given twice, for {describe(first)} and "
                f"{describe(new)}"
            )
        entries.append(new)
    if not entries:
        raise error(f"{path}: no {noun} rows after the header")
    return entries
