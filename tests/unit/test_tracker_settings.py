"""The tracker's connection cap: from its flag or variable, and within the open-files limit."""

from __future__ import annotations

import argparse
import resource

import pytest

from adpulse.core.options import SettingError
from tracker.server import RESERVED_DESCRIPTORS, _connection_limit
from tracker.settings import add_arguments, settings_from


def settings(argv: list[str], env: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), env or {}).max_connections


def test_max_connections_from_the_flag_the_variable_or_the_default() -> None:
    assert settings([]) == 10_000
    assert settings([], {"ADPULSE_TRACKER_MAX_CONNECTIONS": "500"}) == 500
    assert settings(["--max-connections", "20"], {"ADPULSE_TRACKER_MAX_CONNECTIONS": "500"}) == 20


@pytest.mark.parametrize("value", ["0", "-1", "lots", "2000000"])
def test_a_bad_max_connections_is_refused_with_its_name(value: str) -> None:
    with pytest.raises(SettingError, match="ADPULSE_TRACKER_MAX_CONNECTIONS"):
        settings([], {"ADPULSE_TRACKER_MAX_CONNECTIONS": value})


def test_the_cap_stays_within_the_open_files_limit(caplog: pytest.LogCaptureFixture) -> None:
    assert _connection_limit(10) == 10
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Nothing caps open files here: any number of connections fits.
        assert _connection_limit(100_000) == 100_000
        return
    # The soft limit is raised as far as the hard one; past that, fewer connections.
    assert _connection_limit(hard) == hard - RESERVED_DESCRIPTORS
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    assert "ADPULSE_TRACKER_MAX_CONNECTIONS" in caplog.text


def per_address(argv: list[str], env: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), env or {}).max_connections_per_address


def test_connections_per_address_default_to_a_tenth_of_the_cap() -> None:
    assert per_address([]) == 1000
    assert per_address(["--max-connections", "200"]) == 20
    assert per_address(["--max-connections", "5"]) == 1
    env = {"ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS": "300"}
    assert per_address([], env) == 300
    assert per_address(["--max-connections-per-address", "7"], env) == 7


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_connections_per_address_is_refused_with_its_name(value: str) -> None:
    with pytest.raises(SettingError, match="ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS"):
        per_address([], {"ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS": value})
