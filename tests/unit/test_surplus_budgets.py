"""A group's own surplus removals (scale-down, a borrowed replica given back) are bounded by
the budgets of the policies that cover the node, across groups, as a policy's own
selections are (``molt.policy.budgets.SurplusBudgets`` and the scaling phase)."""

from __future__ import annotations

from typing import Any

import pytest

from molt.api import InstanceGroup, TerminationPolicy
from molt.api.labels import POLICY_ANNOTATION, SELECTED, STATE_LABEL
from molt.controllers.instancegroup.reconciler import CellReconciler
from molt.policy.budgets import SurplusBudgets
from tests.support.builders import instance_group, termination_policy
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider
from tests.support.fleet import NOW, node

pytestmark = pytest.mark.unit

HEALTH = {"readyTimeout": "1m", "window": "30m", "capacityCooldown": "3m"}


def _group(name: str, size: int) -> InstanceGroup:
    return InstanceGroup.model_validate(
        instance_group(
            name, minSize=0, maxSize=size + 2, replicas=size, zones=["zone-a"], health=HEALTH
        )
    )


def _policy(**spec: Any) -> TerminationPolicy:
    selector = {
        "matchExpressions": [
            {"key": "molt.dev/instance-group", "operator": "In", "values": ["a", "b"]}
        ]
    }
    return TerminationPolicy.model_validate(
        termination_policy("both", nodeSelector=selector, **spec)
    )


async def _two_groups_one_node_in_flight(
    policy: TerminationPolicy | None,
) -> tuple[FakeCluster, CellReconciler]:
    """Groups ``a`` and ``b`` of 2 Ready nodes; one of ``a``'s nodes selected by the policy;
    ``b`` then asked for 1 node, so one of its nodes is surplus."""
    cluster = FakeCluster(
        groups=[_group("a", 2), _group("b", 2)], policies=[policy] if policy else []
    )
    clock = FakeClock(NOW)
    provider = FakeProvider(cluster, now=NOW)
    cells = CellReconciler(cluster, cluster, clock, {"kwok": provider})
    for _ in range(5):
        provider.now = clock.now()
        for name in ("a", "b"):
            await cells.reconcile(name)
        clock.advance(10)
    assert sorted(n.group or "" for n in cluster.nodes() if n.ready) == ["a", "a", "b", "b"]
    leaving = next(n for n in cluster.nodes() if n.group == "a")
    await cluster.patch_node(
        leaving.name, labels={STATE_LABEL: SELECTED}, annotations={POLICY_ANNOTATION: "both"}
    )
    manifest = instance_group(
        "b", minSize=0, maxSize=4, replicas=1, zones=["zone-a"], health=HEALTH
    )
    status = cluster.instance_groups["b"].status
    cluster.instance_groups["b"] = InstanceGroup.model_validate(manifest).model_copy(
        update={"status": status}
    )
    return cluster, cells


def _in_flight(cluster: FakeCluster, group: str) -> list[str]:
    return [n.name for n in cluster.nodes() if n.group == group and n.in_pipeline]


async def test_a_scale_down_waits_while_a_covering_policys_budget_is_full() -> None:
    cluster, cells = await _two_groups_one_node_in_flight(_policy())
    await cells.reconcile("b")
    assert _in_flight(cluster, "b") == [], "maxInFlight 1 is used by group a's node"
    [leaving] = _in_flight(cluster, "a")
    await cluster.patch_node(leaving, labels={STATE_LABEL: None})
    await cells.reconcile("b")
    [surplus] = _in_flight(cluster, "b")
    picked = cluster.node(surplus)
    assert picked is not None
    assert picked.annotations["molt.dev/reason"].startswith("scale-down")


async def test_a_scale_down_goes_at_once_without_a_covering_policy() -> None:
    cluster, cells = await _two_groups_one_node_in_flight(None)
    await cells.reconcile("b")
    assert len(_in_flight(cluster, "b")) == 1


async def test_a_budget_limited_to_named_reasons_does_not_hold_a_scale_down() -> None:
    policy = _policy(budgets=[{"maxInFlight": 1, "reasons": ["MaxAge", "Drift"]}])
    cluster, cells = await _two_groups_one_node_in_flight(policy)
    await cells.reconcile("b")
    assert len(_in_flight(cluster, "b")) == 1


def test_surplus_budgets_count_what_they_admit_and_close_with_the_window() -> None:
    nodes = [node(f"n{i}", group="a") for i in range(4)]
    policy = _policy(budgets=[{"maxInFlight": 1}])
    budgets = SurplusBudgets([policy], nodes, NOW)
    assert budgets.admit(nodes[0], "scale-down") is None
    held = budgets.admit(nodes[1], "scale-down")
    assert held is not None
    assert "budget full: 1/1" in held
    assert "policy both" in held
    # A window that is closed now (a one-minute window once a year, on another day).
    closed = _policy(budgets=[{"maxInFlight": 4, "schedule": "0 0 1 1 *", "duration": "1m"}])
    assert "maintenance window" in (SurplusBudgets([closed], nodes, NOW).admit(nodes[0], "x") or "")


async def test_a_groups_own_selection_moves_one_control_plane_node_at_a_time() -> None:
    cluster, cells = await _two_groups_one_node_in_flight(None)
    for member in cluster.nodes():
        await cluster.patch_node(member.name, labels={"node-role.kubernetes.io/control-plane": ""})
    await cells.reconcile("b")
    assert _in_flight(cluster, "b") == [], "group a's control-plane node is still in flight"
    [leaving] = _in_flight(cluster, "a")
    await cluster.patch_node(leaving, labels={STATE_LABEL: None})
    await cells.reconcile("b")
    assert len(_in_flight(cluster, "b")) == 1
