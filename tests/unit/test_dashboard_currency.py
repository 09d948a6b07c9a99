"""The dashboard names the reporting currency (ADPULSE_CURRENCY) wherever it shows money.

Grafana's units cannot follow a setting, so money panels have a currency-neutral unit and a
hidden `currency` variable, read from the exporter's info metric, in their titles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream.exporter import CURRENCY_INFO

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "adpulse.json"
# The metrics and read API answers in money, reporting currency.
MONEY = re.compile(r"adpulse_(spend|revenue|net_revenue|cpa|cpc|cpl|cac|aov|ltv|order)|/v1/report")


def panels() -> Iterator[dict[str, Any]]:
    def walk(found: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in found:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(DASHBOARD.read_text())["panels"])


def units(panel: dict[str, Any]) -> list[str]:
    config = panel.get("fieldConfig", {})
    found = [config.get("defaults", {}).get("unit")]
    for override in config.get("overrides", []):
        found += [p["value"] for p in override["properties"] if p["id"] == "unit"]
    return [unit for unit in found if unit]


def test_the_currency_variable_is_the_exporters_reporting_currency() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "currency"]
    query = f"label_values({CURRENCY_INFO}_info, currency)"
    assert variable["query"]["query"] == variable["definition"] == query
    assert variable["datasource"]["uid"] == "adpulse-prometheus"
    assert not variable["multi"]
    assert not variable["includeAll"]


def test_every_money_panel_names_the_currency_and_none_says_dollars() -> None:
    money = [panel for panel in panels() if MONEY.search(json.dumps(panel.get("targets", [])))]
    assert len(money) >= 10
    for panel in money:
        assert "${currency}" in panel["title"], panel["title"]
    for panel in panels():
        assert not [unit for unit in units(panel) if unit.startswith("currency")], panel["title"]
        assert "$" not in panel["title"].replace("${currency}", ""), panel["title"]
