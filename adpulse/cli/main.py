"""The `adpulse` command line: one console script, one subcommand per process."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from adpulse.core.options import SettingError

# Each module registers its own subcommand; imports are deferred to `run` so that
# `adpulse --help` does not pay for faust or aiokafka.
COMMAND_MODULES = (
    "adpulse.cli.commands.tracker",
    "adpulse.cli.commands.worker",
    "adpulse.cli.commands.coupons",
    "adpulse.cli.commands.numbers",
    "adpulse.cli.commands.exporter",
    "adpulse.cli.commands.dev",
    "adpulse.cli.commands.simulate",
    "adpulse.cli.commands.report",
    "adpulse.cli.commands.advise",
    "adpulse.cli.commands.importer",
    "adpulse.cli.commands.rebuild",
    "adpulse.cli.commands.snapshot",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adpulse",
        description=(
            "Streaming event tracking and real-time KPIs for performance marketing. "
            "Every setting can also come from an ADPULSE_* environment variable; "
            "a flag wins over the variable."
        ),
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args, os.environ)
    except SettingError as error:
        # A bad flag or ADPULSE_* value, found while a command resolves its settings.
        print(f"adpulse {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
