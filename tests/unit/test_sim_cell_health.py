"""Health is judged per cell, shown end to end in the simulator: a zone that goes down
during a good rollout rests and gives its share to the other zones, and the rollout
finishes once it returns, with nothing rolled back; a template that fails in every cell is
still rolled back; and a blink every node sees at once is no failure at all, however the
nodes come back."""

from __future__ import annotations

from collections import Counter

import pytest

from molt.api.instancegroup import InstanceGroupStatus, Template
from molt.policy.cells import template_revision
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

pytestmark = pytest.mark.unit

FLEET = """\
name: {name}
duration: {duration}
seed: 7
controller: {{resync: 30s}}
cloud: {{launchDelay: 60s, launchJitter: 10s, readyDelay: 20s, badImages: [ami-broken]}}
fleet:
  - name: workers
    spec:
      provider: aws
      minSize: 9
      maxSize: 13
      replicas: 9
      zones: [zone-a, zone-b, zone-c]
      template:
        instanceTypes: [m5.xlarge]
        image: ami-v1
        aws: {{subnets: {{zone-a: subnet-a, zone-b: subnet-b, zone-c: subnet-c}}}}
      strategy: {{type: RollingReplace, maxSurge: 1, maxUnavailable: 0}}
      health: {{readyTimeout: 5m, notReadyFor: 2m, failureThreshold: 50%, window: 30m,
               capacityCooldown: 3m}}
    ages: {{youngest: {youngest}, oldest: {oldest}}}
workloads:
  - name: web
    replicas: 18
    requests: {{cpu: 500m, memory: 1Gi}}
    startup: 10s
    pdb: {{maxUnavailable: 2}}
timeline:
{timeline}
"""


def simulation(name: str, duration: str, timeline: str, ages: tuple[str, str]) -> Simulation:
    text = FLEET.format(
        name=name, duration=duration, timeline=timeline, youngest=ages[0], oldest=ages[1]
    )
    sim = Simulation(parse_scenario(text))
    sim.controller.enqueue_all()
    return sim


def status(sim: Simulation) -> InstanceGroupStatus:
    group = sim.cluster.instance_group("workers")
    assert group is not None
    assert group.status is not None
    return group.status


def revisions(sim: Simulation) -> Counter[str]:
    return Counter(n.revision or "" for n in sim.cluster.group_nodes("workers"))


def ready_by_zone(sim: Simulation, revision: str) -> Counter[str]:
    return Counter(
        n.zone or ""
        for n in sim.cluster.group_nodes("workers")
        if n.ready and n.revision == revision
    )


def reasons(sim: Simulation) -> list[str]:
    return [e.reason for e in sim.cluster.recorded if e.node == "ig/workers"]


def revision_of(image: str) -> str:
    """The revision of the scenario's template with ``image``."""
    subnets = {"zone-a": "subnet-a", "zone-b": "subnet-b", "zone-c": "subnet-c"}
    return template_revision(
        Template.model_validate(
            {"instanceTypes": ["m5.xlarge"], "image": image, "aws": {"subnets": subnets}}
        )
    )


def test_a_zone_outage_during_a_good_rollout_rests_the_zone_and_rolls_back_nothing() -> None:
    sim = simulation(
        "zone-outage-rollout",
        "4h",
        "  - at: 10m\n"
        "    templateChange: {group: workers, template: {image: ami-v2}}\n"
        "  - at: 16m\n"
        "    zoneOutage: {zone: zone-b, until: 2h, nodesNotReady: true}\n",
        ("2h", "6h"),
    )
    old, new = revision_of("ami-v1"), revision_of("ami-v2")

    sim.events.run_until(90 * 60)  # an hour and a quarter into the outage
    during = status(sim)
    assert during.current_revision == new
    assert all(r.state != "Degraded" for r in during.revisions), during.revisions
    # zone-b's share is carried by the other zones, at the new revision.
    served = ready_by_zone(sim, new)
    assert served["zone-b"] == 0
    assert served["zone-a"] + served["zone-c"] >= 9, served
    desired = {c.zone: c.desired for c in during.cells}
    assert desired["zone-b"] == 0, desired
    assert desired["zone-a"] + desired["zone-c"] == 9, desired
    assert "CellUnavailable" in reasons(sim)
    # Its young node that went NotReady with the zone counted against zone-b only.
    [failed] = [e for e in sim.cluster.recorded if e.reason == "NodeNotReady"]
    assert "zone-b" in failed.message

    sim.events.run_until(4 * 3600)
    after = status(sim)
    assert after.current_revision == new
    assert all(r.state != "Degraded" for r in after.revisions)
    assert "RevisionDegraded" not in reasons(sim)
    assert revisions(sim) == Counter({new: 9})
    assert all(n.ready for n in sim.cluster.group_nodes("workers"))
    assert old not in {r.name for r in after.revisions if r.replicas}
    # Back in balance once zone-b could launch again.
    assert ready_by_zone(sim, new) == Counter({"zone-a": 3, "zone-b": 3, "zone-c": 3})


def test_a_template_that_fails_in_every_cell_is_still_rolled_back() -> None:
    sim = simulation(
        "broken-everywhere",
        "2h",
        "  - at: 10m\n    templateChange: {group: workers, template: {image: ami-broken}}\n",
        ("2h", "6h"),
    )
    old, bad = revision_of("ami-v1"), revision_of("ami-broken")
    sim.events.run_until(40 * 60)

    final = status(sim)
    assert final.current_revision == old
    [bad_entry] = [r for r in final.revisions if r.name == bad]
    assert bad_entry.state == "Degraded"
    assert "RevisionDegraded" in reasons(sim)
    assert revisions(sim) == Counter({old: 9})
    assert sum(1 for n in sim.cluster.group_nodes("workers") if n.ready) == 9

    # Degraded is not forever: after the window it is tried again, fails again, and is
    # rolled back again, now for twice as long.
    sim.events.run_until(100 * 60)
    assert reasons(sim).count("RevisionRetried") == 1
    assert reasons(sim).count("RevisionDegraded") == 2
    again = status(sim)
    assert again.current_revision == old
    assert revisions(sim) == Counter({old: 9})


def test_a_blink_every_young_node_sees_at_once_is_no_failure() -> None:
    sim = simulation(
        "blink",
        "3h",
        "  - at: 20m\n    notReadyBlink: {group: workers, duration: 1s}\n"
        "  - at: 40m\n    templateChange: {group: workers, template: {image: ami-v2}}\n",
        ("5m", "15m"),  # every node young: the group's health is watching them all
    )
    first, second = revision_of("ami-v1"), revision_of("ami-v2")
    sim.events.run_until(20 * 60 + 30)
    assert ("blink", "9 node(s) NotReady for 1.0s") in [(k, m) for _, k, m in sim.cloud.log]
    assert sum(1 for n in sim.cluster.group_nodes("workers") if n.ready) == 9
    assert all(r.state != "Degraded" for r in status(sim).revisions)
    assert status(sim).revisions[0].launch_failures == 0
    assert status(sim).current_revision == first

    sim.events.run_until(3 * 3600)
    final = status(sim)
    assert "RevisionDegraded" not in reasons(sim)
    assert all(r.state != "Degraded" for r in final.revisions)
    assert final.current_revision == second
    assert revisions(sim) == Counter({second: 9})


def test_nodes_back_one_by_one_after_a_group_wide_outage_count_against_nothing() -> None:
    # Every node NotReady at once for 4 minutes (past notReadyFor); five come back after a
    # minute, the other four only at the end: those four are still the event's, not failures.
    sim = simulation(
        "staggered-recovery",
        "1h",
        "  - at: 20m\n    notReadyBlink: {group: workers, duration: 4m}\n",
        ("5m", "15m"),
    )
    sim.events.run_until(20 * 60 + 1)
    down = sorted(n.name for n in sim.cluster.group_nodes("workers") if not n.ready)
    assert len(down) == 9
    sim.events.run_until(21 * 60)
    for name in down[:5]:
        sim.cluster.set_ready(name, True)
    sim.events.run_until(60 * 60)
    final = status(sim)
    assert all(r.state != "Degraded" for r in final.revisions), final.revisions
    assert final.revisions[0].launch_failures == 0
    assert "NodeNotReady" not in reasons(sim)
    assert "NodesNotReady" in reasons(sim)
    assert sorted(n.name for n in sim.cluster.group_nodes("workers")) == down
