"""schemathesis against the running tracker's own /openapi.json (issue 10, "Fuzzing, kept").

The real tracker, on the real broker, with an API token and redirect hosts (the `tracker`
fixture). schemathesis's command line runs every operation of the served document (but the
document's own path, which it leaves out), once without the token and once with it, a bounded
number of derandomised examples each (settings in
`schemathesis.toml` beside this file), and fails on a 5xx, a request unanswered within the
request timeout (a hang), or an answer the document does not allow: a status, a content type,
a header or a body it does not declare, a schema-violating request accepted, a missing or
wrong token not refused. The figures of each run end up in pytest's terminal summary.

The command line rather than schemathesis's pytest integration: its lazy, fixture-loaded
schema does not run under pytest 9.2 (it sets a private attribute of pytest's items), and a
separate process keeps schemathesis's own warnings out of this suite's `filterwarnings = error`.

There is no stateful phase: no operation returns a resource that another one reads back
(schemathesis reports it "not applicable").
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import API_TOKEN
from tests.integration.fuzz.conftest import record_figures
from tests.processes import Tracker

SETTINGS = Path(__file__).with_name("schemathesis.toml")
RUN_TIMEOUT = 240.0
# schemathesis's output names each failure and how to reproduce it; its request bodies can be
# long, so each line is cut.
LINE_SHOWN = 400


def run_schemathesis(url: str, report_dir: Path, headers: list[str]) -> tuple[dict[str, Any], str]:
    """The JSON run report and the console output of one `schemathesis run`."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(SETTINGS), "--no-color",
        "run", f"{url}/openapi.json",
        "--report", "json", "--report-dir", str(report_dir),
        "--output-truncate", "true",
        *[argument for header in headers for argument in ("--header", header)],
    ]  # fmt: skip
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    reports = sorted(report_dir.glob("*.json"))
    assert reports, f"schemathesis wrote no report:\n{finished.stdout}\n{finished.stderr}"
    report: dict[str, Any] = json.loads(reports[-1].read_text())
    output = finished.stdout + finished.stderr
    return report, "\n".join(line[:LINE_SHOWN] for line in output.splitlines())


def figures(name: str, report: dict[str, Any]) -> str:
    operations = report["operations"]
    cases = report["test_cases"]
    return (
        f"{name}: {operations['tested']} of {operations['total']} operations, "
        f"{cases['generated']} cases, {cases['with_failures']} failing "
        f"({cases['unique_failures']} unique), {cases['errored']} errored, "
        f"{len(report['errors'])} errors, stopped: {report['stop_reason']}"
    )


@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize(
    ("name", "headers", "refused"),
    [
        pytest.param("without the token", [], ["POST /v1/calls", "POST /v1/spend"], id="anonymous"),
        pytest.param("with the token", [f"Authorization: Bearer {API_TOKEN}"], [], id="token"),
    ],
)
def test_the_tracker_answers_every_generated_request_as_its_spec_says(
    tracker: Tracker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    name: str,
    headers: list[str],
    refused: list[str],
) -> None:
    report, output = run_schemathesis(tracker.url, tmp_path, headers)
    record_figures(request.config, figures(name, report))

    failed = (
        report["exit_code"] != 0
        or report["failures"]
        or report["errors"]
        or report["test_cases"]["errored"]
        or report["stop_reason"] != "completed"
    )
    assert not failed, f"{figures(name, report)}\n{output}"
    # Every operation the tracker serves was exercised, each with more than a token effort;
    # schemathesis leaves out the document's own path.
    with urllib.request.urlopen(f"{tracker.url}/openapi.json", timeout=5) as response:
        document = json.load(response)
    served = [(method, path) for path, item in document["paths"].items() for method in item]
    assert len(served) >= 8
    assert report["operations"]["tested"] == report["operations"]["total"] == len(served) - 1
    assert report["test_cases"]["generated"] >= 10 * len(served)
    # The operations that answered nothing but 401: the token's, exactly when it is missing.
    assert report["warnings"]["missing_auth"] == refused
