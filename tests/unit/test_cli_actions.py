"""Commands with actions (`adpulse coupons add|import|list|remove`): flags and help."""

from __future__ import annotations

import argparse

import pytest

from adpulse.cli.commands.coupons import added_message
from adpulse.cli.main import build_parser

Actions = dict[str, argparse.ArgumentParser]


def commands_with_actions() -> dict[str, tuple[argparse.ArgumentParser, Actions]]:
    found = {}
    for command, parser in subparsers(build_parser()).items():
        actions = subparsers(parser)
        if actions:
            found[command] = (parser, actions)
    return found


def subparsers(parser: argparse.ArgumentParser) -> Actions:
    for action in parser._actions:  # argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def shared_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [
        action.option_strings[-1]
        for action in parser._actions
        if action.option_strings and action.nargs != 0 and "-h" not in action.option_strings
    ]


COMMANDS = commands_with_actions()


def test_coupons_is_among_the_commands_with_actions() -> None:
    assert "coupons" in COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_action_has_a_description(command: str) -> None:
    _, actions = COMMANDS[command]
    for name, parser in actions.items():
        assert len(parser.description or "") > 20, f"{command} {name}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_shared_flags_work_before_and_after_the_action(command: str) -> None:
    parser, actions = COMMANDS[command]
    flags = shared_flags(parser)
    assert flags, command
    top = build_parser()
    for name, action_parser in actions.items():
        # One value per positional (the first of its choices, if it has some).
        positionals = [
            str(next(iter(a.choices))) if a.choices else "X"
            for a in action_parser._actions
            if not a.option_strings and a.nargs in (None, "+")
        ]
        for flag in flags:
            dest = flag.lstrip("-").replace("-", "_")
            after = top.parse_args([command, name, *positionals, flag, "after"])
            before = top.parse_args([command, flag, "before", name, *positionals])
            neither = top.parse_args([command, name, *positionals])
            assert getattr(after, dest) == "after", (command, name, flag)
            assert getattr(before, dest) == "before", (command, name, flag)
            assert getattr(neither, dest, None) is None, (command, name, flag)


def test_import_states_its_csv_header() -> None:
    _, actions = COMMANDS["coupons"]
    assert "code,channel" in (actions["import"].description or "")


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (None, "SUMMER10 -> email"),
        ("email", "SUMMER10 -> email (registered already, unchanged)"),
        ("paid_social", "SUMMER10 -> email (moved from paid_social to email)"),
    ],
)
def test_adding_a_known_code_says_where_it_moved_from(before: str | None, expected: str) -> None:
    assert added_message("SUMMER10", "email", before) == expected
