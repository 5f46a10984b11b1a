"""The alert rules and the dashboard the chart ships are well formed: every alert has a
severity, a summary, a description and a ``for``; every dashboard panel queries through
the dashboard's data-source variable, with unique ids; the chart templates are off by
default and read the files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "charts" / "molt"


def test_every_alert_says_what_and_why_and_waits_before_firing() -> None:
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 6
    for alert in alerts:
        assert alert["alert"].startswith("Molt"), alert
        assert re.fullmatch(r"\d+[smh]", alert["for"]), alert["alert"]
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert len(alert["annotations"]["description"]) > 40, alert["alert"]


def test_every_panel_queries_through_the_data_source_variable() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "group"} <= variables
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    queried = [p for p in panels if p["type"] != "row"]
    assert len(queried) >= 20
    for panel in queried:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_the_templates_are_off_by_default_and_read_existing_files() -> None:
    values = yaml.safe_load((CHART / "values-monitoring.yaml").read_text())["monitoring"]
    assert values["prometheusRule"]["enabled"] is False
    assert values["dashboard"]["enabled"] is False
    for template, flag in (
        ("prometheusrule.yaml", ".Values.monitoring.prometheusRule.enabled"),
        ("dashboard-configmap.yaml", ".Values.monitoring.dashboard.enabled"),
    ):
        text = (CHART / "templates" / template).read_text()
        assert f"if {flag}" in text
        for used in re.findall(r'\.Files\.Get "([^"]+)"', text):
            assert (CHART / used).is_file(), used
    assert (
        'grafana_dashboard: "1"' in (CHART / "templates" / "dashboard-configmap.yaml").read_text()
    )
