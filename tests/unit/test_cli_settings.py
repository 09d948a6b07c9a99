"""A bad flag or ADPULSE_* value: every command names itself and the setting, and exits 2."""

from __future__ import annotations

import pytest

from adpulse.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tracker", "--log-level", "LOUD"], "adpulse tracker: "),
        (["worker", "--batch-size", "0"], "adpulse worker: "),
        (["exporter", "--log-level", "LOUD"], "adpulse exporter: "),
        (["report", "--timeout", "-1"], "adpulse report: "),
        (["dev", "--log-level", "LOUD"], "adpulse dev: "),
    ],
)
def test_bad_settings_exit_2_with_the_command_and_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(message)
    assert len(error.strip()) > len(message)
