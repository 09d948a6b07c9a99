"""The dashboard's period panels ask the read API what it answers.

Their queries go through Grafana's Infinity plugin (deploy/grafana/provisioning/datasources/
read-api.yml), so no PromQL check covers them: here each query, with the variables filled in as
Grafana would, must be a request `stream.report.parse_request` accepts, and every column it
reads must be a column of the CSV the API answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # types-PyYAML is not a dependency

from stream.kpi import Counters
from stream.report import build_report, parse_request, report_csv

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "adpulse.json"
READ_API = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "read-api.yml"
TODAY = date(2026, 3, 15)


def read_api_targets() -> Iterator[tuple[str, dict[str, Any]]]:
    (source,) = yaml.safe_load(READ_API.read_text())["datasources"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["uid"] == source["uid"]:
                yield panel["title"], target


def group_by_options() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "group_by"]
    return [option["value"] for option in variable["options"]]


def filled(value: str, group_by: str) -> str:
    """A query parameter as Grafana sends it for the last 7 days (the `date` format of
    __from/__to is what makes them local dates)."""
    return (
        value.replace("${__from:date:YYYY-MM-DD}", (TODAY - timedelta(days=6)).isoformat())
        .replace("${__to:date:YYYY-MM-DD}", TODAY.isoformat())
        .replace("$group_by", group_by)
    )


def test_the_dashboard_has_a_period_table_and_a_year_on_year_panel() -> None:
    titles = [title for title, _ in read_api_targets()]
    assert "Channels and campaigns over the time range (money in ${currency})" in titles
    assert "Year on year: revenue and spend per channel (money in ${currency})" in titles
    assert group_by_options() == ["channel", "campaign"]


@pytest.mark.parametrize("group_by", ["channel", "campaign"])
def test_read_api_queries_are_requests_the_api_accepts(group_by: str) -> None:
    (source,) = yaml.safe_load(READ_API.read_text())["datasources"]
    assert source["url"] == "http://exporter:9108"
    assert source["jsonData"]["allowedHosts"] == [source["url"]]
    for title, target in read_api_targets():
        assert target["url"] == "/v1/report", title
        assert target["type"] == "csv", title
        params = {
            item["key"]: filled(item["value"], group_by) for item in target["url_options"]["params"]
        }
        assert "$" not in "".join(params.values()), (title, params)
        request = parse_request(params, TODAY, 0)  # ReportError would name what is wrong
        assert request.format == "csv"
        assert request.period.first == TODAY - timedelta(days=6)
        assert request.period.last == TODAY
        rows = {("paid_search", "spring" if request.group_by == "campaign" else None): Counters()}
        sums = {"current": rows} | {name: rows for name in request.comparisons}
        document = build_report(request, sums, currency="USD", timezone="UTC")
        header = report_csv(document).splitlines()[0].split(",")
        columns = [column["selector"] for column in target["columns"]]
        missing = [
            name
            for name in columns
            # The campaign column is blank (absent) when rows are channels.
            if name not in header and not (name == "campaign" and request.group_by == "channel")
        ]
        assert not missing, (title, missing)
