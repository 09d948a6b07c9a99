"""`adpulse dev --simulate --prometheus --spike paid_search=3@60`: the CPA-spike alert fires.

The dev stack runs the exporter's spike rule on minutes (2 minutes against the hour before,
`adpulse.cli.devstack.DEV_SPIKE`) and AdpulseCpaSpike with a 30 s `for:`; the simulator triples
paid_search's cost per click from its 60th second. Read through Prometheus's alerts API, as the
README tells a user to watch it. The command is the issue's, with ports of the test's own: with
`--spike` the simulator runs `adpulse.cli.commands.dev.SPIKE_RATE` visits a second, so the
minute before the spike holds enough paid_search conversions to be 98 % sure (at 20 a second it
holds about 10; bench/dev_spike.py measures how often the alert fires at each rate).

The simulator's seed is fixed (`SEED`), so that nothing is left to chance: a seed fixes the
simulator's whole plan (its start hour is the simulator's default, not the clock, and the
stack gets no ADPULSE_* of the caller's); what still differs from run to run is where the plan
falls on the wall clock (its minute and hour buckets, the scrapes) and how late each event
arrives. `bench/dev_spike.py --rate 200 --seed 0 --starts 60` fires paid_search, and no other
channel, at all 60 start times it tries (every second of the minute, every minute of the hour),
96 to 154 s after the spike; still at all 60 with a 55 s `for:` instead of 30 s (the rule stays
sure for a minute or more) and with 10 s from a post to the counters instead of 1 s. (The 5 %
of runs that failed here were those started in the last 3 minutes of an hour, whatever the
seed: tests/unit/test_stream_minute_spike.py.) How often the rule is right over many seeds,
with stated error rates, is for the statistics' own tests and benches:
tests/unit/test_stream_detection.py (fixed seeds: a doubled CPA flagged in at least 7 of 8
simulated weeks, false alarms in at most 10 % of quiet channel-weeks) and, for the dev stack's
minutes, bench/dev_spike.py over random seeds. This test proves the wiring: simulator, tracker,
worker, exporter, the deploy/ rules and Prometheus's alerts API.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from adpulse.cli.processes import BinaryNotFound
from tests.integration.test_dev_stack import assert_all_gone, start_dev
from tests.kafka_helpers import wait_until_sync
from tests.prometheus import PrometheusApi, binary
from tests.services import free_port

pytestmark = pytest.mark.integration

SPIKE_AT = 60.0
SEED = "0"
"""Chosen with bench/dev_spike.py over start times (the module's docstring)."""
FIRES_WITHIN = 15 * 60.0


@pytest.mark.timeout(FIRES_WITHIN + 180)
def test_a_spike_fires_the_cpa_spike_alert_in_the_dev_stack(tmp_path: Path) -> None:
    try:
        binary("prometheus")
    except BinaryNotFound as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{error} (CI=true: fails instead of skipping)", pytrace=False)
        pytest.skip(str(error))
    prometheus_port = free_port()
    run = start_dev(
        tmp_path,
        "--simulate", "--prometheus", "--prometheus-port", str(prometheus_port),
        "--spike", f"paid_search=3@{SPIKE_AT:g}", "--seed", SEED,
    )  # fmt: skip
    api = PrometheusApi(f"http://127.0.0.1:{prometheus_port}")
    alerts: list[dict[str, Any]] = []
    try:
        wait_until_sync(
            lambda: f"prometheus  http://127.0.0.1:{prometheus_port}" in run.text(),
            timeout=120,
            interval=0.5,
            message="the dev stack's banner",
        )
        started = time.monotonic()

        def fired() -> bool:
            assert run.process.poll() is None, run.text()
            try:
                alerts[:] = api._get("/api/v1/alerts")["alerts"]
            except OSError:
                return False
            return any(
                alert["labels"].get("alertname") == "AdpulseCpaSpike" and alert["state"] == "firing"
                for alert in alerts
            )

        wait_until_sync(
            fired, timeout=SPIKE_AT + FIRES_WITHIN, interval=1.0, message="AdpulseCpaSpike firing"
        )
        took = time.monotonic() - started
    finally:
        code = run.stop()
    assert code == 0, run.text()
    assert_all_gone(run)
    spiking = {
        alert["labels"]["channel"]
        for alert in alerts
        if alert["labels"].get("alertname") == "AdpulseCpaSpike"
    }
    assert spiking == {"paid_search"}
    assert took < SPIKE_AT + FIRES_WITHIN
    (firing,) = [a for a in alerts if a["labels"].get("alertname") == "AdpulseCpaSpike"]
    assert "paid_search" in firing["annotations"]["summary"]
