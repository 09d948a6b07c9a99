"""Settings declared once: the README's tables, --help, resolution and secrets all follow them."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from adpulse.cli import configuration
from adpulse.cli.commands import dev
from adpulse.cli.commands.report import ReportSettings
from adpulse.cli.commands.simulate import SimulateSettings
from adpulse.cli.devstack import DevSettings
from adpulse.cli.main import build_parser
from adpulse.core.options import (
    MASK,
    SHARED,
    Secret,
    Setting,
    SettingError,
    add_arguments,
    declarations,
    resolve,
    resolve_all,
)
from stream.exporter_settings import ExporterSettings
from stream.worker_settings import WorkerSettings
from tracker import settings as tracker_settings
from tracker.settings import TrackerSettings

README = Path(__file__).resolve().parents[2] / "README.md"

# Fields a settings object derives from several declarations rather than reads from one.
DERIVED_FIELDS = {
    TrackerSettings: {"event_rules", "redirect_policy"},
    DevSettings: {"simulate_args", "environment"},
}
SETTINGS_CLASSES = (
    TrackerSettings,
    WorkerSettings,
    ExporterSettings,
    SimulateSettings,
    ReportSettings,
    DevSettings,
)


def test_the_readme_tables_are_the_declarations() -> None:
    text = README.read_text(encoding="utf-8")
    assert configuration.render(text) == text, (
        "README.md's configuration tables differ from the settings declarations; run "
        "`.venv/bin/python -m adpulse.cli.configuration README.md`"
    )


def test_a_readme_row_that_disagrees_is_found() -> None:
    text = README.read_text(encoding="utf-8")
    row = "| `ADPULSE_TRACKER_PORT` | `--port` | `8080` |"
    assert row in text
    assert configuration.render(text.replace(row, row.replace("8080", "8081"))) == text
    extra = "| `ADPULSE_NOTHING` | `--nothing` | `1` | declared nowhere |\n<!-- end of settings -->"
    assert configuration.render(text.replace("<!-- end of settings -->", extra, 1)) == text


def test_a_missing_or_unknown_readme_table_is_refused() -> None:
    text = README.read_text(encoding="utf-8")
    begin = configuration.BEGIN.format(name="worker")
    with pytest.raises(ValueError, match="no settings table for worker"):
        configuration.render(text.replace(begin, "<!-- was the worker's table -->"))
    with pytest.raises(ValueError, match="'nothing' that nothing declares"):
        configuration.render(text.replace(begin, configuration.BEGIN.format(name="nothing")))


def test_every_readme_variable_and_flag_is_declared() -> None:
    declared = {
        (setting.env, setting.flag)
        for settings in configuration.command_settings().values()
        for setting in settings
    }
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `ADPULSE_")]
    assert len(rows) > 40
    for row in rows:
        cells = [cell.strip().strip("`") for cell in row.strip("|").split("|")]
        flag = None if cells[1] == "(environment only)" else cells[1]
        assert (cells[0], flag) in declared, row


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_every_field_is_declared_or_derived(cls: type[Any]) -> None:
    declared = {setting.name for setting in declarations(cls)}
    fields = {field.name for field in dataclasses.fields(cls)}
    assert fields - declared == DERIVED_FIELDS.get(cls, set())
    for setting in declarations(cls):
        # The object's default is the declaration's, so `Settings()` is what no flag gives.
        assert getattr(cls(), setting.name) == setting.default


def subcommand_help(command: str) -> str:
    parser = build_parser()
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    return " ".join(subparsers.choices[command].format_help().split())


@pytest.mark.parametrize("command", sorted(configuration.command_settings()))
def test_help_shows_each_variable_and_default_but_no_secret_default(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # argparse would wrap `adpulse-worker` at its hyphen
    text = subcommand_help(command)
    for setting in configuration.command_settings()[command]:
        for name in (setting.flag, setting.env):
            if name is not None:
                assert name in text, (command, name)
        default = setting.default_text
        if default is not None:
            assert f"default {' '.join(default.split())}" in text, (command, setting.name)
        if setting.secret:
            assert default is None
            assert f"{setting.env} (default" not in text


def test_a_flag_wins_over_its_variable_which_wins_over_the_default() -> None:
    def timeout(argv: list[str], env: dict[str, str]) -> float:
        parser = argparse.ArgumentParser()
        add_arguments(parser, declarations(ExporterSettings))
        values = resolve_all(parser.parse_args(argv), env, declarations(ExporterSettings))
        return ExporterSettings(**values).scrape_timeout

    variable = "ADPULSE_EXPORTER_SCRAPE_TIMEOUT"
    assert timeout([], {}) == 5.0
    assert timeout([], {variable: ""}) == 5.0
    assert timeout([], {variable: "2"}) == 2.0
    assert timeout(["--scrape-timeout", "1.5"], {variable: "2"}) == 1.5
    with pytest.raises(SettingError, match="--scrape-timeout='-1': must be greater than 0"):
        timeout(["--scrape-timeout", "-1"], {variable: "2"})
    with pytest.raises(SettingError, match="ADPULSE_EXPORTER_SCRAPE_TIMEOUT='x'"):
        timeout([], {variable: "x"})


def tracker(env: dict[str, str]) -> TrackerSettings:
    parser = argparse.ArgumentParser()
    tracker_settings.add_arguments(parser)
    return tracker_settings.settings_from(parser.parse_args([]), env)


def test_secrets_never_show_in_a_repr_or_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    settings = tracker({"ADPULSE_API_TOKEN": "token-1234", "ADPULSE_REDIRECT_SECRET": "key-5678"})
    assert settings.api_token is not None
    assert settings.api_token.reveal() == "token-1234"
    assert settings.redirect_policy.secret == b"key-5678"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s %r", settings, settings.api_token)
    for shown in (repr(settings), str(settings), f"{settings.api_token}", caplog.text):
        assert "token-1234" not in shown
        assert "key-5678" not in shown
    assert MASK in caplog.text
    stack = dev.settings_from(argparse.Namespace(), {"ADPULSE_API_TOKEN": "token-1234"})
    assert stack.token == "token-1234"
    assert "token-1234" not in repr(stack)


def test_a_bad_secret_is_refused_without_its_value() -> None:
    def refuse(text: str) -> Secret:
        raise ValueError("at least 16 characters")

    setting: Setting[Secret | None] = Setting(
        None, "ADPULSE_X_KEY", None, refuse, "a key", secret=True, name="key"
    )
    with pytest.raises(SettingError) as raised:
        resolve(argparse.Namespace(), {"ADPULSE_X_KEY": "short-key"}, setting)
    assert "short-key" not in str(raised.value)
    assert raised.value.name == "ADPULSE_X_KEY"


def test_a_secret_has_no_flag_and_no_default() -> None:
    with pytest.raises(ValueError, match="environment only"):
        Setting("--key", "ADPULSE_X_KEY", None, Secret, "a key", secret=True)
    with pytest.raises(ValueError, match="environment only"):
        Setting(None, "ADPULSE_X_KEY", Secret("x"), Secret, "a key", secret=True)


def test_secrets_compare_by_value_and_unset_is_none() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert tracker({"ADPULSE_API_TOKEN": ""}).api_token is None


def test_shared_settings_are_one_declaration_each() -> None:
    names = [setting.env for setting in SHARED]
    assert len(names) == len(set(names))
    tables = configuration.tables()
    for setting in SHARED:
        assert f"`{setting.env}`" in tables["shared"]
    # A command's own table repeats no shared declaration.
    for name, table in tables.items():
        if name != "shared":
            assert "`ADPULSE_LOG_LEVEL`" not in table


def test_dev_passes_its_simulator_flags_on_as_given() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["dev", "--rate", "5", "--spike", "email=2@1m", "--spike", "affiliate=3@2m"]
    )
    settings = dev.settings_from(args, {"ADPULSE_SIMULATE_SEED": "7", "ADPULSE_KAFKA": "k:1"})
    assert settings.simulate_args == (
        "--rate", "5", "--spike", "email=2@1m", "--spike", "affiliate=3@2m"
    )  # fmt: skip
    assert settings.kafka == "k:1"
    assert settings.environment == {"ADPULSE_SIMULATE_SEED": "7"}
    assert settings.tracker_port == 8080
    assert settings.data_dir == Path(".adpulse/dev")
    assert len(settings.token) >= 16  # generated when ADPULSE_API_TOKEN is unset
