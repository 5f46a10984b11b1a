"""`molt why`'s pure answer: the first thing that holds a node, and its ETA."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from molt.api.types import LabelSelector
from molt.policy.pdbs import PdbView, describe, find_deadlocks
from molt.policy.plan import compute_plan
from molt.policy.snapshot import Snapshot
from molt.policy.why import ActionFacts, WhyInputs, explain
from tests.support.fake_ports import pod
from tests.support.fleet import NOW, node, policy

pytestmark = pytest.mark.unit


def _inputs(nodes: list, policies: list, name: str, **extra: object) -> WhyInputs:
    snapshot = Snapshot(tuple(nodes))
    deadlocked = extra.pop("deadlocked", None)
    plan = compute_plan(snapshot, policies, NOW, deadlocked)  # type: ignore[arg-type]
    target = next(n for n in nodes if n.name == name)
    return WhyInputs(target, snapshot, policies, plan, NOW, **extra)  # type: ignore[arg-type]


def test_a_young_node_is_due_at_max_age_less_the_drain_lead() -> None:
    answer = explain(_inputs([node("young", age_hours=10)], [policy()], "young"))
    assert answer.blocker == "TooYoung"
    assert answer.eta == NOW + timedelta(hours=37)  # 48 h less a 1 h lead, 10 h old


def test_a_node_no_policy_covers_says_so() -> None:
    only_b = policy(nodeSelector={"matchLabels": {"molt.dev/instance-group": "b"}})
    answer = explain(_inputs([node("free", age_hours=100)], [only_b], "free"))
    assert answer.blocker == "NoPolicy"
    assert answer.eta is None


def test_a_full_budget_counts_waves_of_the_median_rotation() -> None:
    nodes = [
        node("flying", age_hours=70, state="draining"),
        node("first", age_hours=60),
        node("second", age_hours=55),
        node("third", age_hours=50),
    ]
    rules = policy(budgets=[{"maxInFlight": 1}])
    answer = explain(_inputs(nodes, [rules], "third", rotation_median=timedelta(minutes=4)))
    assert answer.blocker == "BudgetFull"
    assert answer.details["nodesInFlight"] == ["flying"]
    assert answer.details["ahead"] == 2
    assert answer.eta == NOW + timedelta(minutes=12)  # 3 waves of one


def test_a_pdb_deadlock_holds_a_node_but_not_past_its_deadline_when_pods_are_deleted() -> None:
    locked = node("locked", age_hours=60)  # past its 48 h deadline
    pods = [pod("db-0", node="locked", labels={"app": "db"})]
    pdbs = [PdbView("default", "db", LabelSelector(match_labels={"app": "db"}), max_unavailable=0)]
    deadlocked = {"locked": describe(find_deadlocks(pods, pdbs))}

    held = explain(
        _inputs([locked], [policy()], "locked", pods=pods, pdbs=pdbs, deadlocked=deadlocked)
    )
    assert held.blocker == "PdbDeadlock"
    assert held.details["pdbs"] == ["default/db"]

    forcing = policy(drain={"timeout": "1h", "deletePodsAfterDeadline": True})
    goes = explain(
        _inputs([locked], [forcing], "locked", pods=pods, pdbs=pdbs, deadlocked=deadlocked)
    )
    assert goes.blocker == "Admitted"
    assert goes.warnings, "the deadlock is still worth a warning"


def test_a_held_action_names_what_it_waits_for() -> None:
    message = "preTerminate action etcd held: etcd member old not removed: 2 healthy member(s)"
    leaving = node(
        "old", age_hours=60, state="terminating", annotations={"molt.dev/blocked": message}
    )
    inputs = _inputs([leaving], [policy()], "old")
    inputs.actions.append(ActionFacts("preTerminate/tp/etcd", "held", 0))
    answer = explain(inputs)
    assert answer.blocker == "ActionHeld"
    assert message in answer.message


def test_a_young_node_under_a_spread_is_due_at_its_planned_expiry_and_says_so() -> None:
    cliff = [node(f"n{i}", age_hours=10) for i in range(4)]
    spread = policy(rules={"maxAge": "48h", "maxAgeSpread": "8h"})

    answer = explain(_inputs(cliff, [spread], "n3"))

    assert answer.blocker == "TooYoung"
    assert "maxAgeSpread 8h leveling" in answer.message
    # The last of four born together: planned 6 h early (3 gaps of 2 h), less a 1 h lead.
    assert answer.eta == NOW + timedelta(hours=31)


def test_a_pdb_allowing_zero_while_counting_spare_healthy_pods_is_called_not_recounted() -> None:
    # The API server lowered disruptionsAllowed at an eviction; only the disruption
    # controller (kube-controller-manager) counts again, and it has not.
    draining = node("old", age_hours=60, state="draining")
    pods = [pod("web-1", node="old", labels={"app": "web"})]
    web = LabelSelector(match_labels={"app": "web"})
    stale = PdbView("default", "web", web, current_healthy=8, desired_healthy=7)
    fresh = PdbView("default", "web", web, current_healthy=7, desired_healthy=7)

    for pdb, says in ((stale, True), (fresh, False)):
        allows_zero = dataclasses.replace(pdb, disruptions_allowed=0)
        answer = explain(_inputs([draining], [policy()], "old", pods=pods, pdbs=[allows_zero]))
        assert answer.blocker == "PdbAllowsZero"
        assert ("not recounted since an eviction" in answer.message) is says, answer.message
