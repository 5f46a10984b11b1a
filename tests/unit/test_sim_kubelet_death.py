"""A dead kubelet in the simulator, modelled as the API server shows it: the node turns
Ready=Unknown and its pods unready, a pod deleted there stays Terminating until the Node
is deleted. The controller replaces it first, then rotates the aged nodes: the same story
as the sandbox test in tests/integration/test_faults.py."""

from __future__ import annotations

import pytest

from molt.policy.age import node_age
from molt.sim.runner import Simulation
from molt.sim.scenario import ScenarioError, parse_scenario

pytestmark = pytest.mark.unit

SCENARIO = """\
name: dead-kubelet
duration: 2h
seed: 3
cloud: {launchDelay: 2s, readyDelay: 1s}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 4
      maxSize: 5
      replicas: 4
      zones: [zone-a]
      template: {instanceTypes: [m5.large]}
      strategy: {type: RollingReplace, maxSurge: 1, maxUnavailable: 0}
    ages: [10h, 46h58m, 46h55m, 46h52m]
policies:
  - name: rotate
    spec:
      rules:
        maxAge: 48h
        conditions: [{type: Ready, status: Unknown, for: 20s}]
      budgets: [{maxInFlight: 1}]
workloads:
  - name: web
    replicas: 8
    requests: {cpu: 100m, memory: 128Mi}
    pdb: {maxUnavailable: 1}
timeline:
  - at: 0s
    kubeletDeath: {nodes: 1}
"""


def test_a_dead_kubelet_is_replaced_first_its_pods_stuck_terminating_no_longer_hold_it() -> None:
    sim = Simulation(parse_scenario(SCENARIO))
    sim.controller.enqueue_all()
    now = sim.cluster.clock.now()
    by_age = sorted(sim.cluster.group_nodes("workers"), key=lambda n: node_age(n, now).age)
    youngest, aged = by_age[0].name, [n.name for n in reversed(by_age[1:])]
    sim.events.run_until(30 * 60)

    terminated = [e.node for e in sim.cluster.recorded if e.reason == "NodeDeleted"]
    assert len(terminated) == 4, terminated
    unreachable = [e for e in sim.cluster.recorded if e.reason == "NodeUnreachable"]
    assert unreachable, "the drain never saw the node as unreachable"
    assert {e.node for e in unreachable} == {youngest}
    # The dead node first (its kubelet died: the youngest), then the aged ones, oldest first.
    assert terminated == [youngest, *aged]
    # Nothing of the dead node's is left behind, and no budget was broken.
    assert not sim.cluster.pods_on(youngest)
    assert all(not b.violations for b in sim.cluster.budgets.values())


def test_kubelet_death_names_one_node_or_a_count_not_both() -> None:
    broken = SCENARIO.replace("kubeletDeath: {nodes: 1}", "kubeletDeath: {nodes: 1, node: x}")
    with pytest.raises(ScenarioError, match="exactly one of node or nodes"):
        parse_scenario(broken)
