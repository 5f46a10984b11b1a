"""``pauseWhen``: while a named Watchdog fails, its policy selects no new node, says which
watchdog holds it, and ``molt why`` names the watchdog; it resumes when it recovers."""

from __future__ import annotations

from molt.api.labels import DRAINING, STATE_LABEL
from molt.api.watchdog import Watchdog
from molt.controllers.termination.selection import SelectionReconciler
from molt.observe.metrics import Metrics
from molt.policy.plan import compute_plan
from molt.policy.snapshot import Snapshot
from molt.policy.watchdog import holding_watchdog, paused_policies
from molt.policy.why import WhyInputs, explain
from tests.support.fake_ports import FakeClock, FakeCluster
from tests.support.fleet import NOW, node, policy


def _watchdog(name: str, state: str | None) -> Watchdog:
    return Watchdog.model_validate(
        {
            "apiVersion": "molt.dev/v1alpha1",
            "kind": "Watchdog",
            "metadata": {"name": name},
            "spec": {"check": {"apiLatency": {}}},
            "status": {"state": state} if state else None,
        }
    )


def test_only_a_failing_or_snoozed_watchdog_holds_a_policy() -> None:
    states: dict[str, str | None] = {
        "warm": "WarmingUp",
        "ok": "Healthy",
        "down": "Failing",
        "quiet": "Snoozed",
        "new": None,
    }
    assert holding_watchdog(["warm", "ok", "new", "absent"], states) is None
    assert holding_watchdog(["ok", "down"], states) == "down"
    assert holding_watchdog(["quiet"], states) == "quiet"


def test_a_paused_policy_admits_no_node_even_past_its_deadline_and_why_names_the_watchdog() -> None:
    held = policy("held", pauseWhen=[{"watchdog": "can-schedule"}])
    free = policy("free", nodeSelector={"matchLabels": {"pool": "free"}})
    nodes = (node("old", age_hours=60), node("other", age_hours=60, labels={"pool": "free"}))
    snapshot = Snapshot(nodes, {})
    held_only = [held]
    paused = paused_policies(held_only, {"can-schedule": "Failing"})
    assert paused == {"held": "can-schedule"}

    plan = compute_plan(snapshot, held_only, NOW, None, paused)
    assert plan.admitted == ()
    decision = plan.decision_for("old")
    assert decision is not None
    assert decision.paused_by == "can-schedule"

    answer = explain(WhyInputs(nodes[0], snapshot, held_only, plan, NOW))
    assert answer.blocker == "PausedByWatchdog"
    assert answer.details == {"watchdog": "can-schedule"}
    assert "can-schedule" in answer.message

    resumed = compute_plan(snapshot, held_only, NOW, None, paused_policies(held_only, {}))
    assert [d.node for d in resumed.admitted] == ["old"]
    # A policy without pauseWhen is never held by another's watchdog.
    assert paused_policies([free], {"can-schedule": "Failing"}) == {}


async def test_selection_holds_new_nodes_reports_the_watchdog_and_resumes() -> None:
    in_flight = node(
        "moving", age_hours=60, labels={STATE_LABEL: DRAINING}, annotations={}, state=DRAINING
    )
    cluster = FakeCluster(
        nodes=[node("old", age_hours=60), in_flight],
        policies=[
            policy(
                "rotate",
                pauseWhen=[{"watchdog": "can-schedule"}],
                budgets=[{"maxInFlight": 2}],
            )
        ],
        watchdogs=[_watchdog("can-schedule", "Failing")],
    )
    selection = SelectionReconciler(cluster, cluster, FakeClock(NOW), Metrics())

    await selection.reconcile()

    assert not any(name == "old" for name, _ in cluster.node_patches), "selected while paused"
    _, status = cluster.policy_status_patches[-1]
    paused = next(c for c in status["conditions"] if c["type"] == "Paused")
    assert paused["status"] == "True"
    assert paused["reason"] == "PausedByWatchdog"
    assert "can-schedule" in paused["message"]

    cluster.watchdog_objects["can-schedule"] = _watchdog("can-schedule", "Healthy")
    await selection.reconcile()

    assert any(name == "old" for name, _ in cluster.node_patches), "not resumed"
    _, status = cluster.policy_status_patches[-1]
    resumed = next(c for c in status["conditions"] if c["type"] == "Paused")
    assert resumed["status"] == "False"
