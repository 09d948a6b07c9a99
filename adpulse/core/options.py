"""Resolving a setting from its flag, then its ADPULSE_* variable, then its default.

Settings objects call these in one `from_args` function; nothing else reads the environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


class SettingError(ValueError):
    """A flag or ADPULSE_* variable has a value that cannot be used."""

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(f"{name}={value!r}: {reason}")
        self.name = name
        self.value = value
        self.reason = reason


def resolve(
    args: argparse.Namespace,
    env: Mapping[str, str],
    dest: str,
    variable: str,
    default: T,
    parse: Callable[[str], T],
) -> T:
    """The flag `dest` if it was given, else `variable` from `env`, else `default`.

    Flags are declared without argparse `type=` so that a flag and its variable go through the
    same `parse`, and a bad value is reported under the name the user typed.
    """
    flag = getattr(args, dest, None)
    if flag is not None and not isinstance(flag, str):
        return flag  # type: ignore[no-any-return]
    if flag is not None:
        source, raw = "--" + dest.replace("_", "-"), flag
    else:
        source, raw = variable, env.get(variable, "")
        if raw == "":
            return default
    try:
        return parse(raw)
    except ValueError as error:
        raise SettingError(source, raw, str(error)) from error


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_port(raw: str) -> int:
    port = parse_int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("a port is a number from 0 to 65535")
    return port


def parse_int(raw: str) -> int:
    try:
        return int(raw.strip().replace("_", ""))
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number") from None


def parse_positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return level
