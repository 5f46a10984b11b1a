"""A change to the controller's inputs shows up in simulation as the arithmetic predicts:
a budget of one node in flight rotates twelve nodes three times slower than a budget of
three (each replacement takes about the same time, and budgets bound how many overlap)."""

from __future__ import annotations

import pytest

from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

pytestmark = pytest.mark.unit

SCENARIO = """\
name: budget-{budget}
duration: 6h
seed: 4
controller: {{resync: 30s}}
cloud: {{launchDelay: 90s, launchJitter: 0s, readyDelay: 20s}}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 12
      maxSize: 16
      replicas: 12
      zones: [zone-a, zone-b, zone-c]
      template: {{instanceTypes: [m5.xlarge]}}
      strategy: {{type: RollingReplace, maxSurge: 3, maxUnavailable: 0}}
    ages: {{youngest: 40h, oldest: 40h}}
workloads:
  - name: web
    replicas: 24
    requests: {{cpu: 500m, memory: 1Gi}}
    startup: 15s
    pdb: {{maxUnavailable: 3}}
policies:
  - name: rotate
    spec:
      rules: {{maxAge: 48h}}
      budgets: [{{maxInFlight: {budget}}}]
      drain: {{timeout: 12h}}
"""


def rotation_hours(budget: int) -> float:
    sim = Simulation(parse_scenario(SCENARIO.format(budget=budget)))
    sim.run()
    report = build_report(sim)
    assert report["errorCount"] == 0, report["errors"]
    assert all(not p["violations"] for p in report["pdbs"])
    assert report["maxInPipeline"] == budget
    rotation = report["fullRotationHours"]
    assert rotation is not None
    return float(rotation)


def test_a_smaller_budget_makes_the_rotation_longer_by_the_expected_factor() -> None:
    one, three = rotation_hours(1), rotation_hours(3)
    assert 3 * 0.8 <= one / three <= 3 * 1.2, (one, three)
