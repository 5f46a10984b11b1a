"""Remediation in the simulator: a dead kubelet is rebooted first (the simulated cloud's
``Rebooter``), a reboot brings it back with the scenario's ``rebootFixRate``, and the
node is kept when it does and replaced when it does not; the report counts each step."""

from __future__ import annotations

import pytest

from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import ScenarioError, parse_scenario

pytestmark = pytest.mark.unit

SCENARIO = """\
name: remediation
duration: 2h
seed: 5
cloud: {launchDelay: 2s, readyDelay: 1s, reboot: 2m, rebootFixRate: FIX}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 6
      maxSize: 7
      replicas: 6
      zones: [zone-a, zone-b]
      template: {instanceTypes: [m5.large]}
      strategy: {type: RollingReplace, maxSurge: 1, maxUnavailable: 0}
    ages: [1h, 1h, 1h, 1h, 1h, 1h]
policies:
  - name: heal
    spec:
      rules:
        conditions: [{type: Ready, status: Unknown, for: 20s}]
      budgets: [{maxInFlight: 1}]
      remediation:
        steps: [{reboot: {timeout: 5m}}, {replace: {}}]
        maxUnhealthy: {group: "50%", zone: "50%"}
workloads:
  - name: web
    replicas: 6
    requests: {cpu: 100m, memory: 128Mi}
    pdb: {maxUnavailable: 1}
timeline:
  - at: 10m
    kubeletDeath: {nodes: 1}
"""


def _run(fix_rate: str) -> tuple[Simulation, dict[str, int]]:
    sim = Simulation(parse_scenario(SCENARIO.replace("FIX", fix_rate)))
    sim.controller.enqueue_all()
    sim.events.run_until(90 * 60)
    return sim, build_report(sim)["remediation"]


def test_a_reboot_that_brings_the_kubelet_back_keeps_the_node() -> None:
    sim, counts = _run("1.0")
    assert counts["Rebooting"] == 1
    assert counts["rebootsThatFixed"] == 1
    assert counts["Remediated"] == 1
    assert counts["RemediationReplacing"] == 0
    assert not [e for e in sim.cluster.recorded if e.reason == "NodeDeleted"]
    assert sim.cluster.node_count() == 6
    assert all(n.ready for n in sim.cluster.nodes())
    assert all(not b.violations for b in sim.cluster.budgets.values())


def test_a_reboot_that_does_not_help_ends_in_a_replacement() -> None:
    sim, counts = _run("0.0")
    assert counts["Rebooting"] == 1
    assert counts["rebootsThatFixed"] == 0
    assert counts["Remediated"] == 0
    assert counts["RemediationReplacing"] == 1
    deleted = [e.node for e in sim.cluster.recorded if e.reason == "NodeDeleted"]
    assert len(deleted) == 1
    assert sim.cluster.node_count() == 6
    assert all(not b.violations for b in sim.cluster.budgets.values())


def test_a_fix_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ScenarioError, match="rebootFixRate"):
        parse_scenario(SCENARIO.replace("FIX", "1.5"))
