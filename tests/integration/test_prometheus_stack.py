"""The whole pipeline under a real Prometheus with the project's deploy/ rules and dashboard.

Tracker -> broker -> worker -> Redis -> exporter, scraped every second by `prometheus` with
deploy/prometheus/rules/*.yml. A known scenario goes through the tracker's HTTP endpoints in two
equal halves; then, through Prometheus's HTTP API: the exported and the recorded CPA per channel
are the scenario's, every recording rule and every dashboard expression returns data, and every
alert expression evaluates.

The `offset 1d` / `offset 7d` baselines need history that old. Before the real Prometheus starts,
its storage is backfilled with the exporter's counters (same job and instance labels as the live
scrape) around a day and a week ago (`promtool tsdb create-blocks-from openmetrics`).

Why two halves: Prometheus starts only once the first half is in Redis, so every exporter
series starts at the first half's value in the same scrape. rate() then sees exactly the second
half, scaled by the same extrapolation factor in the numerator and the denominator, so the
recorded CPA equals the scenario's, as the exporter's (which counts both halves) does.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # types-PyYAML is not a dependency
from prometheus_client.parser import text_string_to_metric_families

from adpulse.cli.processes import BinaryNotFound
from stream.exporter import CURRENCY_INFO
from tests.conftest import RedisDatabase
from tests.integration.conftest import API_TOKEN
from tests.kafka_helpers import wait_until_sync
from tests.processes import Exporter, Tracker, Worker, exiting_cleanly
from tests.prometheus import (
    PrometheusApi,
    PrometheusServer,
    Sample,
    Series,
    backfill,
    binary,
)
from tests.services import KafkaService, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.dev.yml"
RECORDING_RULES = DEPLOY / "prometheus" / "rules" / "recording.yml"
ALERT_RULES = DEPLOY / "prometheus" / "rules" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "adpulse.json"

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
WAIT = 30.0

# Dashboard expressions that may have no data in this test, with the reason; they must still
# evaluate without error (the tracker exports its 503 counters at 0 per route, so not those).
ALLOWED_EMPTY: dict[str, str] = {
    'adpulse_cpl{channel=~".*",window="24h"}': "the scenario sends no leads: CPL has no value",
    'adpulse_cpl{channel=~".*",window="1h"}': "the scenario sends no leads: CPL has no value",
}


@dataclass(frozen=True)
class ChannelHalf:
    """What one half of the scenario sends for one channel."""

    clicks: int
    conversions: int
    order_value: Decimal
    cost: Decimal

    @property
    def revenue(self) -> Decimal:
        return self.order_value * self.conversions

    @property
    def cpa(self) -> float:
        return float(self.cost / self.conversions)


HALF = {
    "email": ChannelHalf(clicks=20, conversions=4, order_value=Decimal("25.50"), cost=Decimal(30)),
    "paid_search": ChannelHalf(
        clicks=50, conversions=5, order_value=Decimal(80), cost=Decimal(250)
    ),
    "paid_social": ChannelHalf(clicks=30, conversions=2, order_value=Decimal(40), cost=Decimal(45)),
}
EXPECTED_CPA = {channel: half.cpa for channel, half in HALF.items()}
assert len(set(EXPECTED_CPA.values())) == len(HALF), "distinct CPAs, so a mix-up shows"


# --- the scenario, through the tracker's HTTP endpoints --------------------------------------


def post(url: str, document: object, headers: Mapping[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json", "User-Agent": BROWSER, **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return json.load(response)


def send_half(tracker: Tracker, number: int) -> None:
    events: list[dict[str, str]] = []
    for channel, half in HALF.items():
        events += [{"type": "click", "channel": channel}] * half.clicks
        events += [
            {
                "type": "conversion",
                "channel": channel,
                "value": str(half.order_value),
                "order_id": f"{channel}-{number}-{n}",
            }
            for n in range(half.conversions)
        ]
    answer = post(f"{tracker.url}/v1/events", events)
    assert answer["accepted"] == len(events), answer
    send_bad_pixel(tracker)

    now = datetime.now(UTC)
    for channel, half in HALF.items():
        spend = {
            "event_id": f"spend-{channel}-{number}",
            "channel": channel,
            "cost": str(half.cost),
            "start": (now - timedelta(minutes=3)).isoformat(),
            "end": (now - timedelta(minutes=2)).isoformat(),
        }
        post(f"{tracker.url}/v1/spend", spend, {"Authorization": f"Bearer {API_TOKEN}"})


def send_bad_pixel(tracker: Tracker) -> None:
    """One invalid request, so that the rejection counters exist and move."""
    request = urllib.request.Request(
        f"{tracker.url}/p.gif?type=nonsense&channel=email", headers={"User-Agent": BROWSER}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    with refused.value as answer:
        assert answer.code == 400


def exporter_totals(exporter: Exporter) -> dict[tuple[str, str], float]:
    """(metric, channel) -> value of the exporter's counters, from a direct scrape."""
    with urllib.request.urlopen(exporter.url, timeout=10) as response:
        text = response.read().decode()
    totals = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            channel = sample.labels.get("channel")
            if channel and sample.name.endswith("_total"):
                name = sample.name + sample.labels.get("type", "")
                totals[name, channel] = sample.value
    return totals


def exported(exporter: Exporter, expected: Mapping[tuple[str, str], float]) -> bool:
    totals = exporter_totals(exporter)
    return all(totals.get(key) == value for key, value in expected.items())


def expected_totals(halves: int) -> dict[tuple[str, str], float]:
    expected = {}
    for channel, half in HALF.items():
        expected["adpulse_events_totalclick", channel] = float(half.clicks * halves)
        expected["adpulse_events_totalconversion", channel] = float(half.conversions * halves)
        expected["adpulse_spend_total", channel] = float(half.cost * halves)
        expected["adpulse_revenue_total", channel] = float(half.revenue * halves)
    return expected


# --- history a day and a week ago --------------------------------------------------------------


def history(exporter_instance: str, now: datetime) -> Iterator[Sample]:
    """The exporter's counters each minute over the two hours before now-7d and now-1d."""
    labels = {"job": "adpulse-exporter", "instance": exporter_instance}
    minutes = [
        now - offset - timedelta(minutes=m)
        for offset in (timedelta(days=7), timedelta(days=1))
        for m in range(120, 0, -1)
    ]
    for channel in HALF:
        for step, moment in enumerate(minutes, start=1):
            at = {**labels, "channel": channel}
            yield Sample("adpulse_events_total", {**at, "type": "click"}, 10.0 * step, moment)
            yield Sample("adpulse_events_total", {**at, "type": "conversion"}, 1.0 * step, moment)
            yield Sample("adpulse_spend_total", at, 20.0 * step, moment)
            yield Sample("adpulse_revenue_total", at, 50.0 * step, moment)


def backfill_history(data_dir: Path, tmp_path: Path, exporter: Exporter) -> None:
    backfill(history(f"127.0.0.1:{exporter.port}", datetime.now(UTC)), data_dir, tmp_path)


def prometheus_config(path: Path, targets: Mapping[str, str], own_port: int) -> None:
    """deploy/prometheus/prometheus.dev.yml with these targets, 1 s intervals, no Alertmanager."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RECORDING_RULES), str(ALERT_RULES)]
    config.pop("alerting", None)
    targets = {**targets, "prometheus": f"127.0.0.1:{own_port}"}
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(targets), f"deploy's jobs {jobs} are not the test's {set(targets)}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path.write_text(yaml.safe_dump(config))


# --- what to check -------------------------------------------------------------------------------


def rules_of(path: Path, kind: str) -> list[dict[str, Any]]:
    """The `record` or `alert` rules of a rule file, in order."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if kind in rule]


def dashboard_expressions() -> list[str]:
    """Every panel target's expr, with the variables as Grafana would fill them for "All"."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    expressions = []
    for panel in panels(json.loads(DASHBOARD.read_text())["panels"]):
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue  # the read API's panels (tests/unit/test_dashboard_read_api.py)
            expression = target["expr"].replace("$channel", ".*")
            for interval in ("$__rate_interval", "$__interval"):
                expression = expression.replace(interval, "1m")
            expressions.append(expression)
    return list(dict.fromkeys(expressions))


def by_channel(result: Series) -> dict[str, float]:
    return {series["metric"].get("channel", ""): float(series["value"][1]) for series in result}


def same_values(expected: Mapping[str, float]) -> Any:
    def condition(result: Series) -> bool:
        found = by_channel(result)
        return found.keys() == expected.keys() and all(
            math.isclose(found[key], value, rel_tol=1e-12) for key, value in expected.items()
        )

    return condition


def has_data(result: Series) -> bool:
    return len(result) > 0


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def prometheus_binaries() -> None:
    try:
        binary("prometheus")
        binary("promtool")
    except BinaryNotFound as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{error} (CI=true: fails instead of skipping)", pytrace=False)
        pytest.skip(str(error))


@pytest.fixture
def worker(
    kafka: KafkaService, topic: str, redis_db: RedisDatabase, tmp_path: Path
) -> Iterator[Worker]:
    process = Worker(
        kafka=kafka.bootstrap,
        topic=topic,
        redis_url=redis_db.url,
        log=tmp_path / "worker.log",
        group=f"{topic}.prometheus",
    )
    yield from exiting_cleanly(process)


# --- the test -------------------------------------------------------------------------------------


def test_prometheus_sees_the_scenario_through_the_deploy_rules_and_dashboard(
    prometheus_binaries: None,
    tracker: Tracker,
    worker: Worker,
    exporter: Exporter,
    tmp_path: Path,
) -> None:
    send_half(tracker, 1)
    wait_until_sync(
        lambda: exported(exporter, expected_totals(1)),
        timeout=WAIT,
        interval=0.1,
        message="the first half counted and exported",
    )

    data_dir = tmp_path / "prometheus"
    backfill_history(data_dir, tmp_path, exporter)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    prometheus_config(
        config,
        {
            "adpulse-tracker": f"127.0.0.1:{tracker.port}",
            "adpulse-worker": f"127.0.0.1:{worker.port}",
            "adpulse-exporter": f"127.0.0.1:{exporter.port}",
        },
        own_port=port,
    )
    with PrometheusServer(config, data_dir, tmp_path / "prometheus.log", port=port) as prometheus:
        api = prometheus.api
        api.wait_for("up == 1", lambda result: len(result) == 4, timeout=WAIT)
        half = {channel: float(h.cost) for channel, h in HALF.items()}
        api.wait_for("adpulse_spend_total", same_values(half), timeout=WAIT)

        send_half(tracker, 2)

        totals = {channel: float(h.conversions * 2) for channel, h in HALF.items()}
        api.wait_for(
            'sum by (channel) (adpulse_events_total{type="conversion"})',
            same_values(totals),
            timeout=WAIT,
        )
        check_cpa(api)
        check_recording_rules(api)
        check_dashboard(api)
        check_alerts(api)


def check_cpa(api: PrometheusApi) -> None:
    """(a) The exporter's 5-minute CPA and the recording rule's are the scenario's."""
    api.wait_for('adpulse_cpa{window="5m"}', same_values(EXPECTED_CPA), timeout=WAIT)
    api.wait_for("channel:adpulse_cpa:ratio_rate5m", same_values(EXPECTED_CPA), timeout=WAIT)


def check_recording_rules(api: PrometheusApi) -> None:
    """(b) Every recording rule's expression returns data, and Prometheus runs it cleanly."""
    rules = rules_of(RECORDING_RULES, "record")
    for rule in rules:
        api.wait_for(rule["expr"], has_data, timeout=WAIT)
        api.wait_for(rule["record"], has_data, timeout=WAIT)
    recorded = [rule for rule in wait_for_healthy_rules(api) if rule["type"] == "recording"]
    assert sorted(rule["name"] for rule in recorded) == sorted(rule["record"] for rule in rules)


def check_dashboard(api: PrometheusApi) -> None:
    """(c) Every dashboard expression returns data, but for the listed exceptions."""
    expressions = dashboard_expressions()
    assert set(ALLOWED_EMPTY) <= set(expressions), "an exception the dashboard no longer has"
    for expression in expressions:
        if expression in ALLOWED_EMPTY:
            api.query(expression)
        else:
            api.wait_for(expression, has_data, timeout=WAIT)
    # Each variable Prometheus fills (`label_values(metric, label)`) has values: the channels,
    # and the reporting currency the money panels name.
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    for variable in variables:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
        assert match is not None, variable["definition"]
        metric, label = match.groups()
        api.wait_for(f'{metric}{{{label}!=""}}', has_data, timeout=WAIT)
    currency = api.query(f"{CURRENCY_INFO}_info")
    assert [series["metric"]["currency"] for series in currency] == ["USD"]


def check_alerts(api: PrometheusApi) -> None:
    """(d) Every alert expression evaluates, and Prometheus evaluates every alert cleanly."""
    rules = rules_of(ALERT_RULES, "alert")
    for rule in rules:
        api.query(rule["expr"])
    alerting = [rule for rule in wait_for_healthy_rules(api) if rule["type"] == "alerting"]
    assert sorted(rule["name"] for rule in alerting) == sorted(rule["alert"] for rule in rules)


def wait_for_healthy_rules(api: PrometheusApi) -> list[dict[str, Any]]:
    """All the rules once each has been evaluated, with health "ok" and no error."""
    rules: list[dict[str, Any]] = []

    def healthy() -> bool:
        rules[:] = api.rules()
        return bool(rules) and all(rule["health"] != "unknown" for rule in rules)

    wait_until_sync(healthy, timeout=WAIT, interval=0.2, message="every rule evaluated")
    failing = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not failing, f"rules failing in Prometheus: {failing}"
    assert all(not rule.get("lastError") for rule in rules)
    return rules
