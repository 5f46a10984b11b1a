"""``maxAgeSpread`` in the simulator, with the production controller: a cliff of nodes
launched together is replaced at a steady rate, and none outlives its max age."""

from __future__ import annotations

from typing import Any

from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

CLIFF = """\
name: cliff
duration: 12h
seed: 3
controller: {{resync: 30s}}
cloud: {{launchDelay: 60s, launchJitter: 10s, readyDelay: 20s}}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 12
      maxSize: 15
      replicas: 12
      zones: [zone-a, zone-b, zone-c]
      template: {{instanceTypes: [m5.xlarge]}}
    ages: {{youngest: 1h, oldest: 1h}}
workloads:
  - name: web
    replicas: 24
    requests: {{cpu: 500m, memory: 1Gi}}
    pdb: {{maxUnavailable: 2}}
policies:
  - name: rotate
    spec:
      rules: {rules}
      budgets: [{{maxInFlight: 3}}]
      drain: {{timeout: 10m}}
"""


def _run(rules: str) -> dict[str, Any]:
    sim = Simulation(parse_scenario(CLIFF.format(rules=rules)))
    sim.run()
    report = build_report(sim)
    assert report["errorCount"] == 0, report["errors"]
    assert all(not p["violations"] for p in report["pdbs"])
    return report


def test_a_cliff_under_a_spread_is_replaced_a_few_an_hour_and_never_past_max_age() -> None:
    # 12 nodes 1 h old, max age 11 h: without a spread they all go as fast as the budget
    # (3 in flight) lets them, half of them in one hour.
    cliff = _run("{maxAge: 11h}")
    leveled = _run("{maxAge: 11h, maxAgeSpread: 8h}")

    assert cliff["replacementRate"]["maxAge"]["perHourPeak"] >= 5
    # Planned 8 h / 12 = 40 min apart over [3 h, 11 h] of age: at most 2 in any hour.
    rate = leveled["replacementRate"]["maxAge"]
    assert rate["perHourPeak"] <= 2, rate
    assert leveled["replacedByReason"].get("max-age") == 12
    assert leveled["maxNodeAgeHours"] <= 11
