"""The drain under the faults a fleet sees daily: unreachable nodes, pods refused for long,
pods that land back on a cordoned node. Pure plan first, then the pipeline over fakes."""

from __future__ import annotations

from datetime import timedelta

from molt.api import TerminationPolicy
from molt.controllers.termination.pipeline import DRAIN_SETTLE_SECONDS, PipelineReconciler
from molt.observe.metrics import Metrics
from molt.policy.drain import (
    BudgetRefusal,
    DrainFindings,
    DrainRules,
    blocked_message,
    classify_pods,
    unreachable_since,
)
from molt.policy.snapshot import NodeCondition, NodeTaint
from molt.ports import EvictionOutcome
from tests.support.fake_ports import pod
from tests.support.fleet import NOW, node, policy
from tests.unit.test_pipeline import NEW, READY, replacement_node, selected_node, world

DEADLINE = NOW + timedelta(hours=1)
RULES = DrainRules()
KUBE_429 = (
    "Cannot evict pod as it would violate the pod's disruption budget. "
    "The disruption budget web-pdb needs 4 healthy pods and has 4 currently"
)


def _keys(pods) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.key for p in pods]


# The pure plan.


def test_a_node_is_unreachable_from_its_ready_transition_or_its_unreachable_taint() -> None:
    lost = NOW - timedelta(minutes=3)
    tainted = NOW - timedelta(minutes=2)
    assert unreachable_since(node("a", conditions=READY)) is None
    assert (
        unreachable_since(node("b", conditions=(NodeCondition("Ready", "Unknown", lost),))) == lost
    )
    by_taint = node(
        "c", taints=(NodeTaint("node.kubernetes.io/unreachable", "NoExecute", None, tainted),)
    )
    assert unreachable_since(by_taint) == tainted


def test_on_an_unreachable_node_unready_pods_are_deleted_and_ready_ones_evicted() -> None:
    pods = [pod("unready", ready=False), pod("ready")]

    view = classify_pods(pods, NOW, DEADLINE, unreachable=True)

    assert _keys(view.delete) == ["default/unready"]
    assert _keys(view.evict) == ["default/ready"]


def test_a_reachable_node_never_deletes_pods_even_unready_ones() -> None:
    view = classify_pods([pod("unready", ready=False)], NOW, DEADLINE, unreachable=False)

    assert view.delete == ()
    assert _keys(view.evict) == ["default/unready"]


def test_a_pod_deleting_past_the_grace_period_on_an_unreachable_node_holds_nothing() -> None:
    stuck = pod("stuck", deletion_due=NOW - timedelta(minutes=2))
    recent = pod("recent", deletion_due=NOW - timedelta(seconds=10))

    view = classify_pods([stuck, recent], NOW, DEADLINE, unreachable=True)

    assert _keys(view.abandoned) == ["default/stuck"]
    assert _keys(view.leaving) == ["default/recent"]
    assert view.done is False


def test_a_reachable_node_waits_for_every_deleting_pod_however_long() -> None:
    stuck = pod("stuck", deletion_due=NOW - timedelta(hours=2))

    view = classify_pods([stuck], NOW, DEADLINE, unreachable=False)

    assert _keys(view.leaving) == ["default/stuck"]
    assert view.done is False


def test_cordon_tolerant_pods_are_drained_unless_the_policy_lets_them_go_with_the_node() -> None:
    agent = pod("agent", tolerates_cordon=True)

    default = classify_pods([agent], NOW, DEADLINE)
    opted_in = classify_pods([agent], NOW, DEADLINE, rules=DrainRules(leave_cordon_tolerant=True))

    assert _keys(default.evict) == ["default/agent"]
    assert _keys(opted_in.left_with_node) == ["default/agent"]
    assert opted_in.done is True


def test_a_refusal_names_the_pdb_and_its_allowed_disruptions_as_the_api_server_words_it() -> None:
    refusal = BudgetRefusal("ns/web-1", NOW - timedelta(minutes=6), KUBE_429)

    assert refusal.budget == "web-pdb"
    assert refusal.allowed_disruptions == 0


def test_a_refusal_quoting_more_healthy_pods_than_needed_says_the_status_is_not_recounted() -> None:
    # The controller manager is down: the API server lowered disruptionsAllowed at the last
    # eviction, nothing counted again, and its refusals keep quoting the old healthy count.
    stale = KUBE_429.replace("has 4 currently", "has 5 currently")
    refusal = BudgetRefusal("ns/web-1", NOW - timedelta(minutes=6), stale)

    assert refusal.allowed_disruptions == 0, "a refusal is never a permission"
    assert refusal.not_recounted
    assert "(allowed disruptions: 0; its status has not been recounted" in refusal.describe()
    assert "kube-controller-manager" in refusal.describe()
    assert not BudgetRefusal("ns/web-1", NOW, KUBE_429).not_recounted


def test_a_pod_refused_past_blocked_after_is_reported_and_a_younger_refusal_is_not() -> None:
    web = pod("web")
    view = classify_pods([web], NOW, DEADLINE)
    old = DrainFindings({web.key: BudgetRefusal(web.key, NOW - timedelta(minutes=5), KUBE_429)})
    young = DrainFindings({web.key: BudgetRefusal(web.key, NOW - timedelta(minutes=4), KUBE_429)})

    message = blocked_message(view, old, DEADLINE, NOW, RULES)

    assert message is not None
    assert "default/web" in message
    assert "PodDisruptionBudget web-pdb (allowed disruptions: 0)" in message
    assert blocked_message(view, young, DEADLINE, NOW, RULES) is None


def test_the_blocked_report_does_not_change_while_the_same_pod_stays_refused() -> None:
    web = pod("web")
    view = classify_pods([web], NOW, DEADLINE)
    findings = DrainFindings(
        {web.key: BudgetRefusal(web.key, NOW - timedelta(minutes=6), KUBE_429)}
    )

    first = blocked_message(view, findings, DEADLINE, NOW, RULES)
    later = blocked_message(view, findings, DEADLINE, NOW + timedelta(minutes=7), RULES)

    assert first == later  # so the node is patched, and an Event recorded, once


# The pipeline over fakes.


def _unreachable(minutes: float) -> tuple[NodeCondition, ...]:
    return (NodeCondition("Ready", "Unknown", NOW - timedelta(minutes=minutes)),)


async def test_a_dead_node_has_its_unready_pods_deleted_and_is_terminated() -> None:
    dead = selected_node(replacement=NEW, conditions=_unreachable(2))
    fleet = world(
        dead,
        replacement_node(),
        pods=(
            pod("unready", ready=False),
            pod("terminating", deletion_due=NOW - timedelta(minutes=3)),
        ),
    )
    fleet.cluster.eviction_answers["default/unready"] = [EvictionOutcome.PDB_BLOCKED] * 10

    for _ in range(6):
        await fleet.reconcile()

    assert fleet.cluster.deleted_pods == ["default/unready"]
    assert fleet.cluster.evictions == []
    assert fleet.provider.terminations == ["old"]
    reasons = fleet.cluster.event_reasons("old")
    assert "NodeUnreachable" in reasons


async def test_a_node_unreachable_for_less_than_the_grace_period_is_drained_by_eviction() -> None:
    flaky = selected_node(replacement=NEW, conditions=_unreachable(0.5))
    fleet = world(flaky, replacement_node(), pods=(pod("unready", ready=False),))

    after = await fleet.reconcile()

    assert fleet.cluster.deleted_pods == []
    assert fleet.cluster.evictions == ["default/unready"]
    assert after is not None


async def test_a_pdb_refusal_past_blocked_after_is_reported_once_on_the_node_and_policy() -> None:
    fleet = world(selected_node(replacement=NEW), replacement_node(), pods=(pod("web"),))
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED] * 1000

    for _ in range(40):  # 40 retries over 20 minutes
        await fleet.reconcile()
        fleet.clock.advance(30)

    blocked = fleet.node().annotations.get("molt.dev/blocked")
    assert blocked is not None
    assert "default/web" in blocked
    assert "web-pdb" in blocked
    assert fleet.cluster.event_reasons("old").count("DrainBlocked") == 1
    await fleet.selection().reconcile()
    status = fleet.cluster.policy("rotate").status  # type: ignore[union-attr]
    assert status is not None
    assert status.blocked == 1


async def test_a_rollout_selected_node_takes_the_covering_policy_and_its_drain_settings() -> None:
    # A node the group selected (no molt.dev/policy) under a policy that lets
    # cordon-tolerant pods go with the node: that setting must apply to it.
    rollout = dict(selected_node(replacement=NEW).annotations)
    del rollout["molt.dev/policy"]
    picked = node("old", age_hours=1, state="selected", annotations=rollout, conditions=READY)
    leave = TerminationPolicy.model_validate(
        policy("rotate", drain={"cordonTolerantPods": "LeaveWithNode"}).model_dump(by_alias=True)
    )
    fleet = world(
        picked, replacement_node(), pods=(pod("agent", tolerates_cordon=True),), rotate=leave
    )

    for _ in range(4):
        await fleet.reconcile()

    assert fleet.cluster.evictions == []
    assert fleet.provider.terminations == ["old"]


async def test_a_pod_landing_back_during_the_settle_period_is_drained_before_termination() -> None:
    fleet = world(selected_node(replacement=NEW), replacement_node(), pods=(pod("agent-1"),))
    fleet.pipeline = PipelineReconciler(
        fleet.cluster, fleet.cluster, fleet.clock, Metrics(), providers={"kwok": fleet.provider}
    )
    first = await fleet.reconcile()  # evicts agent-1; the node looks empty
    assert fleet.cluster.evictions == ["default/agent-1"]
    settle = await fleet.reconcile()
    assert settle is not None
    assert settle > 0
    assert fleet.provider.terminations == []

    # The scheduler binds agent-1's replacement back onto the cordoned node.
    fleet.cluster.add_pod(pod("agent-2", tolerates_cordon=True))
    fleet.clock.advance(1)
    await fleet.reconcile()
    assert fleet.provider.terminations == []
    for _ in range(4):
        fleet.clock.advance(DRAIN_SETTLE_SECONDS)
        await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/agent-1", "default/agent-2"]
    assert fleet.provider.terminations == ["old"]
    assert first is not None


async def test_a_node_this_process_drained_without_evicting_anything_needs_no_settle() -> None:
    fleet = world(
        selected_node(replacement=NEW),
        replacement_node(),
        pods=(pod("agent", owner_kinds=("DaemonSet",)),),
    )
    fleet.pipeline = PipelineReconciler(
        fleet.cluster, fleet.cluster, fleet.clock, Metrics(), providers={"kwok": fleet.provider}
    )

    await fleet.reconcile()

    assert fleet.provider.terminations == ["old"]


async def test_a_restarted_controller_lets_an_empty_draining_node_settle_first() -> None:
    draining = selected_node(replacement=NEW, state="draining")
    fleet = world(draining, replacement_node())
    fleet.pipeline = PipelineReconciler(
        fleet.cluster, fleet.cluster, fleet.clock, Metrics(), providers={"kwok": fleet.provider}
    )

    after = await fleet.reconcile()

    # It cannot know whether the last process evicted a pod a moment ago.
    assert fleet.provider.terminations == []
    assert after == DRAIN_SETTLE_SECONDS
    fleet.clock.advance(DRAIN_SETTLE_SECONDS)
    await fleet.reconcile()
    assert fleet.provider.terminations == ["old"]
