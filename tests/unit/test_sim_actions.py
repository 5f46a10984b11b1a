"""Lifecycle actions in the simulator: timed, seeded steps that call nothing, so a what-if
includes them; unknown action names and post-launch manifests are refused with the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIO = """\
name: actions
duration: {duration}
seed: 7
cloud: {{launchDelay: 60s, readyDelay: 20s}}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 6
      maxSize: 8
      replicas: 6
      zones: [zone-a, zone-b]
      template: {{instanceTypes: [m5.xlarge]}}
      lifecycle:
        preTerminate: [{{name: backup, retries: 5, http: {{url: "https://backup.example/run"}}}}]
    ages: {{youngest: 50h, oldest: 60h}}
policies:
  - name: rotate
    spec:
      nodeSelector: {{matchLabels: {{molt.dev/instance-group: workers}}}}
      rules: {{maxAge: 48h}}
      budgets: [{{maxInFlight: 1}}]
{actions}
"""


def run(actions: str, duration: str = "12h") -> dict:  # type: ignore[type-arg]
    sim = Simulation(parse_scenario(SCENARIO.format(actions=actions, duration=duration)))
    sim.run()
    return build_report(sim)


def test_an_action_takes_its_time_and_fails_at_its_rate_yet_the_rotation_completes() -> None:
    quick = run("")
    slow = run("actions: {backup: {duration: 20m, failureRate: 0.3}}")
    for report in (quick, slow):
        assert report["errorCount"] == 0, report["errors"]
        assert report["fullRotationHours"] is not None
    assert quick["actions"] == {"backup": {"attempts": 6, "failed": 0}}
    backup = slow["actions"]["backup"]
    assert backup["attempts"] == 6 + backup["failed"], "each failure is retried once more"
    assert backup["failed"] >= 1, "a 30 % failure rate over six nodes (seed 7) fails some"
    # One node at a time, each holding the budget for its 20-minute backup (and retries).
    assert slow["fullRotationHours"] >= quick["fullRotationHours"] + 6 * 20 / 60


def test_an_action_that_always_fails_holds_its_nodes() -> None:
    report = run("actions: {backup: {failureRate: 1.0}}", duration="3h")
    assert report["errorCount"] == 0, report["errors"]
    assert report["initialNodesRemaining"] == 6, "no node goes while its backup fails"
    assert report["actions"]["backup"]["failed"] == report["actions"]["backup"]["attempts"]


def test_an_unknown_action_name_and_post_launch_manifests_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(actions="actions: {restore: {duration: 1m}}", duration="1h"))
    with pytest.raises(ScenarioError, match="'restore' is no lifecycle action"):
        load_scenario(path)
    manifests = SCENARIO.replace(
        "        preTerminate:",
        "        postLaunch: [{{name: hep, manifest: {{apiVersion: v1, kind: ConfigMap, "
        "metadata: {{name: x}}}}}}]\n        preTerminate:",
    )
    path.write_text(manifests.format(actions="", duration="1h"))
    with pytest.raises(ScenarioError, match=r"scenario.yaml:\d+: .*postLaunch .*not simulated"):
        load_scenario(path)
