"""Molt's alert rules are valid Prometheus rules, each alert fires on a synthetic series
that should fire it and stays quiet when healthy (``promtool test rules``), and every
dashboard query parses, with promtool built from its pinned Go module into Molt's cache
(``molt.sandbox.tools``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from molt.sandbox.tools import ensure_tool
from tests.support.promql import alert_expressions, dashboard_expressions

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "charts" / "molt" / "files" / "alerts.yaml"
ALERT_TESTS = ROOT / "tests" / "alerts" / "alerts_test.yaml"
DASHBOARD = ROOT / "charts" / "molt" / "files" / "dashboard.json"


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool, built on first use (several minutes on a cold machine)."""
    return ensure_tool("promtool")


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_the_alert_rules_pass_promtool_check(promtool: Path) -> None:
    result = _promtool(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = set(alert_expressions(ALERTS))
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert {"MoltNodePastMaxAge", "MoltDrainBlockedOverAnHour", "MoltRevisionDegraded"} <= alerts
    assert {"MoltRemediationPaused", "MoltHistoryDropping", "MoltDown"} <= alerts
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


def test_each_alert_fires_when_it_should_and_not_when_healthy(promtool: Path) -> None:
    result = _promtool(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_dashboard_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables filled in, parses as a recording rule."""
    queries = {
        place: expr
        for place, expr in dashboard_expressions(DASHBOARD).items()
        if place.startswith("panel ")
    }
    assert len(queries) >= 30
    filled = {
        place: expr.replace("$__rate_interval", "5m").replace("$group", ".*")
        for place, expr in queries.items()
    }
    rules = [
        {"record": f"molt:dashboard_query_{index}", "expr": expr}
        for index, expr in enumerate(filled.values())
    ]
    rule_file = tmp_path / "dashboard_rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool(promtool, "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
