"""A group's own maxNodeAge (48 h by default) rotates the nodes no TerminationPolicy
covers, one node or 10 % of the group at a time; nodes a policy covers are left to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from molt.api.instancegroup import InstanceGroupSpec
from molt.api.labels import STATE_LABEL
from molt.policy.group_age import aged_out, group_age_budget
from molt.policy.snapshot import NodeView
from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, tzinfo=UTC)
MAX_AGE = timedelta(hours=48)


def node(name: str, hours: float, *, selected: bool = False) -> NodeView:
    labels = {STATE_LABEL: "selected"} if selected else {}
    return NodeView(name, NOW - timedelta(hours=hours), labels=labels)


def test_the_group_max_age_defaults_to_48h() -> None:
    spec = InstanceGroupSpec.model_validate(
        {
            "provider": "kwok",
            "minSize": 1,
            "maxSize": 1,
            "zones": ["a"],
            "template": {"instanceTypes": ["m5.large"]},
        }
    )
    assert spec.max_node_age == "48h"


def test_nodes_past_the_age_less_the_drain_lead_go_oldest_first_one_at_a_time() -> None:
    members = [node("young", 10), node("old", 47.5), node("older", 50)]
    picked = aged_out(members, MAX_AGE, covered=(), now=NOW)
    assert [p.node.name for p in picked] == ["older"]
    assert "group maxNodeAge 48h" in picked[0].reason


def test_a_node_a_policy_covers_is_left_to_the_policy() -> None:
    members = [node("old", 50)]
    assert aged_out(members, MAX_AGE, covered={"old"}, now=NOW) == []


def test_a_control_plane_node_no_policy_opts_into_is_never_aged_out_by_its_group() -> None:
    control_plane = NodeView(
        "cp-1",
        NOW - timedelta(hours=50),
        labels={"node-role.kubernetes.io/control-plane": ""},
    )
    assert control_plane.is_control_plane
    picked = aged_out([control_plane, node("worker", 49)], MAX_AGE, covered=(), now=NOW)
    assert [p.node.name for p in picked] == ["worker"]


def test_nodes_in_the_pipeline_use_up_the_budget() -> None:
    members = [node("leaving", 49, selected=True), node("old", 50)]
    assert aged_out(members, MAX_AGE, covered=(), now=NOW) == []
    assert group_age_budget(9) == 1
    assert group_age_budget(40) == 4


UNCOVERED = """\
name: uncovered
duration: 12h
seed: 3
controller: {resync: 30s}
cloud: {launchDelay: 60s, launchJitter: 10s, readyDelay: 20s}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 9
      maxSize: 12
      replicas: 9
      zones: [zone-a, zone-b, zone-c]
      template: {instanceTypes: [m5.xlarge]}
    ages: {youngest: 40h, oldest: 46h}
workloads:
  - name: web
    replicas: 18
    requests: {cpu: 500m, memory: 1Gi}
    pdb: {maxUnavailable: 2}
"""


def test_a_group_no_policy_names_still_has_its_nodes_rotated_by_48h() -> None:
    sim = Simulation(parse_scenario(UNCOVERED))
    sim.run()
    report = build_report(sim)
    assert report["errorCount"] == 0, report["errors"]
    assert report["fullRotationHours"] is not None  # every starting node was replaced
    assert report["maxNodeAgeHours"] <= 48
    assert report["maxInPipeline"] == 1  # the default budget: one node of nine
    # Launch to Ready is the cloud's launch delay (60 s, +-10 s) plus its ready delay (20 s).
    init = report["hostInit"]["workers"]
    assert init["samples"] >= 9
    assert 70 <= init["p50Seconds"] <= init["p90Seconds"] <= 90
    assert all(not p["violations"] for p in report["pdbs"])
