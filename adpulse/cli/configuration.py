"""The README's configuration tables, rendered from the settings declarations.

Each table sits between a `<!-- settings: NAME ... -->` line and `<!-- end of settings -->`;
`python -m adpulse.cli.configuration README.md` rewrites them from the declarations, and
tests/unit/test_settings_declarations.py fails while the README says anything else.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adpulse.core.options import SHARED, Setting, markdown_table

BEGIN = "<!-- settings: {name} (generated: python -m adpulse.cli.configuration README.md) -->"
END = "<!-- end of settings -->"
BLOCK = re.compile(r"<!-- settings: (?P<name>[a-z]+) [^\n]*-->\n.*?<!-- end of settings -->", re.S)


def command_settings() -> dict[str, tuple[Setting[Any], ...]]:
    """Every command's settings, as its --help lists them."""
    from adpulse.cli.commands import advise, coupons, dev, numbers, report, simulate
    from adpulse.core.options import REDIS_URL, TIMEZONE
    from stream import exporter_settings, rebuild_settings, worker_settings
    from tracker import settings as tracker_settings

    return {
        "tracker": tracker_settings.SETTINGS,
        "worker": worker_settings.SETTINGS,
        "exporter": exporter_settings.SETTINGS,
        "coupons": coupons.COMMAND.settings,
        "numbers": numbers.SETTINGS,
        "import": (REDIS_URL, TIMEZONE),
        "simulate": simulate.SETTINGS,
        "report": report.SETTINGS,
        "advise": advise.SETTINGS,
        "dev": dev.settings(),
        "rebuild": rebuild_settings.REBUILD_SETTINGS,
        "snapshot": rebuild_settings.SNAPSHOT_SETTINGS,
    }


def tables() -> dict[str, str]:
    """The README's tables by name: `shared` (the settings several commands declare alike, each
    with the commands that take it), then one per command with the rest of its settings."""
    commands = command_settings()
    shared = []
    for setting in SHARED:
        users = [name for name, settings in commands.items() if setting in settings]
        shared.append(dataclasses.replace(setting, help=f"{setting.help} ({', '.join(users)})"))
    rendered = {"shared": markdown_table(shared)}
    for name, settings in commands.items():
        own = [setting for setting in settings if setting not in SHARED]
        if own:
            rendered[name] = markdown_table(own)
    return rendered


def block(name: str, table: str) -> str:
    return f"{BEGIN.format(name=name)}\n{table}{END}"


def render(readme: str) -> str:
    """`readme` with every settings table rewritten from the declarations.

    ValueError when a table is missing from the README or names no known table.
    """
    rendered = tables()
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in rendered:
            raise ValueError(f"the README has a settings table {name!r} that nothing declares")
        found.append(name)
        return block(name, rendered[name])

    text = BLOCK.sub(replace, readme)
    missing = sorted(set(rendered) - set(found))
    if missing:
        raise ValueError(
            f"the README has no settings table for {', '.join(missing)}: add the lines "
            + " and ".join(repr(BEGIN.format(name=name)) for name in missing)
            + f" each followed by {END!r}"
        )
    return text


def main(argv: Sequence[str] = ()) -> int:
    path = Path(argv[0] if argv else "README.md")
    before = path.read_text(encoding="utf-8")
    after = render(before)
    if after != before:
        path.write_text(after, encoding="utf-8")
        print(f"{path}: settings tables rewritten")
    else:
        print(f"{path}: settings tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
