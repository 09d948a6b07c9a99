"""deploy/prometheus and deploy/grafana: configs, rules and dashboard checked by `promtool`.

`promtool test rules` runs the rule unit tests in deploy/prometheus/tests, which hold a firing
and a silent case for every alert. promtool comes with Debian's `prometheus` package, which
.ci/run installs; locally a missing promtool skips, under CI=true it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # types-PyYAML is not a dependency

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "adpulse.json"
DATASOURCE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROMTOOL_TIMEOUT = 100.0


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        _unavailable("promtool not found: apt-get install prometheus")
    return found


def run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT, check=False
    )


def assert_succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def alert_names() -> list[str]:
    text = (PROMETHEUS / "rules" / "alerts.yml").read_text()
    return re.findall(r"^\s*- alert: (\w+)\s*$", text, flags=re.MULTILINE)


def alert_blocks() -> dict[str, str]:
    text = (PROMETHEUS / "rules" / "alerts.yml").read_text()
    parts = re.split(r"^\s*- alert: (\w+)\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def alert_test_cases() -> list[tuple[str, bool]]:
    """(alert name, whether alerts are expected) for every alert_rule_test case."""
    cases = []
    for path in RULE_TESTS:
        for match in re.finditer(
            r"- alertname: (\w+)\n(?:\s+eval_time: \S+\n)\s+exp_alerts:(.*)\n", path.read_text()
        ):
            cases.append((match[1], match[2].strip() != "[]"))
    return cases


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.dev.yml"], ids=["compose", "dev"])
def test_prometheus_config_is_valid(promtool: str, config: str) -> None:
    # check config also loads and checks the rule files, relative to the config's directory.
    assert_succeeds(run([promtool, "check", "config", str(PROMETHEUS / config)]))


def test_rules_are_valid(promtool: str) -> None:
    assert RULES
    assert_succeeds(run([promtool, "check", "rules", *map(str, RULES)]))


@pytest.mark.parametrize("tests", RULE_TESTS, ids=[path.stem for path in RULE_TESTS])
def test_rule_unit_tests_pass(promtool: str, tests: Path) -> None:
    assert_succeeds(run([promtool, "test", "rules", tests.name], cwd=tests.parent))


def test_every_alert_has_a_firing_and_a_silent_test() -> None:
    names = alert_names()
    assert len(names) == len(set(names)), "an alert name is used twice"
    cases = alert_test_cases()
    missing = [
        (name, "firing" if firing else "silent")
        for name in names
        for firing in (True, False)
        if (name, firing) not in cases
    ]
    assert not missing, f"alerts without a unit test case: {missing}"
    assert {name for name, _ in cases} <= set(names), "a test names an alert that does not exist"


@pytest.mark.parametrize("name", alert_names())
def test_alert_tells_a_person_what_to_do(name: str) -> None:
    block = alert_blocks()[name]
    assert re.search(r"^\s+severity: (critical|warning)$", block, flags=re.MULTILINE)
    assert re.search(r"^\s+summary: .+", block, flags=re.MULTILINE)
    assert re.search(r"^\s+description: >-\n(\s+\S.*\n){2,}", block, flags=re.MULTILINE)
    assert re.search(r"^\s+for: \d+m$", block, flags=re.MULTILINE), "fires on a single sample"


def test_recording_rule_names_follow_level_metric_operation() -> None:
    text = (PROMETHEUS / "rules" / "recording.yml").read_text()
    names = re.findall(r"^\s*- record: (\S+)\s*$", text, flags=re.MULTILINE)
    assert names
    bad = [
        name for name in names if not re.fullmatch(r"[a-z_]+:adpulse_[a-z0-9_]+:[a-z0-9_]+", name)
    ]
    assert not bad


def test_dashboard_is_provisionable() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"]
    uid = re.search(r"^\s+uid: (\S+)$", DATASOURCE.read_text(), flags=re.MULTILINE)
    assert uid is not None
    (channel,) = [v for v in dashboard["templating"]["list"] if v["name"] == "channel"]
    assert channel["query"]["query"] == "label_values(adpulse_events_total, channel)"
    assert channel["includeAll"]
    assert channel["multi"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provisioned = provisioned_datasources()
    assert provisioned["adpulse-prometheus"] == "prometheus"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            source = target["datasource"]
            assert provisioned.get(source["uid"]) == source["type"], panel["title"]
            # PromQL goes to the Prometheus the compose file provisions, and only there.
            assert ("expr" in target) == (source["uid"] == uid[1]), panel["title"]


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every data source deploy/grafana provisions."""
    found = {}
    for path in DATASOURCE.parent.glob("*.yml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            found[source["uid"]] = source["type"]
    return found


def test_dashboard_shows_every_kpi_against_a_day_and_a_week_earlier() -> None:
    expressions = "\n".join(dashboard_expressions())
    for kpi in ("cpa", "conversion_rate", "roas", "aov"):
        for suffix in ("", "_offset1d", "_offset7d"):
            assert f"channel:adpulse_{kpi}:ratio_rate1h{suffix}{{" in expressions
    for money in ("spend", "revenue"):
        for offset in ("offset 1d", "offset 7d"):
            # From the raw counters, so the panels have data as soon as the history exists.
            assert (
                f'increase(adpulse_{money}_total{{channel=~"$channel"}}[1h] {offset})'
                in expressions
            )


def test_dashboard_expressions_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # JSON is YAML: one recording rule per expression lets promtool parse them all.
    rules = [
        {"record": f"dashboard:expression_{index}:check", "expr": expr.replace("$channel", ".*")}
        for index, expr in enumerate(dashboard_expressions())
    ]
    assert rules
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_succeeds(run([promtool, "check", "rules", str(path)]))
