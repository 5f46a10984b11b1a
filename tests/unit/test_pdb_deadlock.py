"""PDBs that can never allow a disruption are found before a node is cordoned: the node
waits uncordoned, its budget slot goes to the next candidate, and the policy counts it."""

from __future__ import annotations

import pytest

from molt.api.labels import SELECTED, STATE_LABEL
from molt.api.types import LabelSelector
from molt.controllers.termination.selection import DEADLOCK_RECHECK_SECONDS, SelectionReconciler
from molt.observe.metrics import Metrics
from molt.policy.pdbs import PdbView, find_deadlocks, never_allows, refusing_now
from tests.support.fake_ports import FakeClock, FakeCluster, pod
from tests.support.fleet import NOW, node, policy

pytestmark = pytest.mark.unit


def budget(
    name: str = "web",
    *,
    min_available: int | str | None = None,
    max_unavailable: int | str | None = None,
    expected: int | None = 3,
    allowed: int | None = 1,
    selector: dict[str, str] | None = None,
) -> PdbView:
    return PdbView(
        namespace="default",
        name=name,
        selector=LabelSelector(match_labels=selector if selector is not None else {"app": name}),
        min_available=min_available,
        max_unavailable=max_unavailable,
        expected_pods=expected,
        disruptions_allowed=allowed,
    )


@pytest.mark.parametrize(
    ("spec", "expected", "deadlocked"),
    [
        ({"max_unavailable": 0}, 3, True),
        ({"max_unavailable": "0%"}, 3, True),
        ({"max_unavailable": 1}, 3, False),
        ({"max_unavailable": "10%"}, 1, False),  # percentages of maxUnavailable round up
        ({"min_available": 3}, 3, True),
        ({"min_available": 1}, 1, True),  # a single replica under minAvailable 1
        ({"min_available": 2}, 3, False),
        ({"min_available": "100%"}, None, True),
        ({"min_available": "50%"}, 1, True),  # ceil(0.5) = 1 of 1
        ({"min_available": "50%"}, 4, False),
        ({"min_available": 2}, None, False),  # no status yet: not judged
    ],
)
def test_a_pdb_that_leaves_no_pod_to_spare_never_allows_a_disruption(
    spec: dict[str, int | str], expected: int | None, deadlocked: bool
) -> None:
    found = never_allows(budget(expected=expected, **spec))  # type: ignore[arg-type]
    assert (found is not None) is deadlocked, found


def test_only_pods_a_drain_evicts_and_the_pdbs_that_select_them_count() -> None:
    pdbs = [budget("db", max_unavailable=0), budget("web", max_unavailable=1)]
    pods = [
        pod("web-1", labels={"app": "web"}),
        pod("db-agent", labels={"app": "db"}, owner_kinds=("DaemonSet",)),
        pod("db-done", labels={"app": "db"}, phase="Succeeded"),
        pod("db-other-ns", labels={"app": "db"}, namespace="other"),
    ]
    assert find_deadlocks(pods, pdbs) == []
    pods.append(pod("db-0", labels={"app": "db"}))
    [deadlock] = find_deadlocks(pods, pdbs)
    assert deadlock.pod == "default/db-0"
    assert deadlock.pdb == "default/db"
    assert "maxUnavailable is 0" in deadlock.message


def test_a_null_selector_selects_nothing_and_an_empty_one_everything() -> None:
    everything = PdbView("default", "all", LabelSelector(), max_unavailable=0, expected_pods=2)
    nothing = PdbView("default", "none", None, max_unavailable=0, expected_pods=2)
    pods = [pod("x", labels={"app": "x"})]
    assert [d.pdb for d in find_deadlocks(pods, [nothing])] == []
    assert [d.pdb for d in find_deadlocks(pods, [everything])] == ["default/all"]


def test_a_pdb_at_zero_allowed_now_is_a_wait_not_a_deadlock() -> None:
    waiting = budget("web", max_unavailable=1, allowed=0)
    pods = [pod("web-1", labels={"app": "web"})]
    assert find_deadlocks(pods, [waiting]) == []
    assert [p.key for p in refusing_now(pods, [waiting])] == ["default/web"]


def _world(*, deadlocked_pdb: bool = True) -> tuple[FakeCluster, SelectionReconciler]:
    # Two aged nodes; the older one runs the single replica of a Deployment whose PDB
    # says maxUnavailable 0. The budget admits one node at a time.
    oldest = node("oldest", age_hours=70)
    older = node("older", age_hours=60)
    cluster = FakeCluster(
        nodes=[oldest, older],
        pods=[pod("db-0", node="oldest", labels={"app": "db"}), pod("web-0", node="older")],
        policies=[policy(budgets=[{"maxInFlight": 1}])],
    )
    limit = 0 if deadlocked_pdb else 1
    cluster.pdbs = [budget("db", max_unavailable=limit, expected=1, allowed=limit)]
    clock = FakeClock(NOW)
    return cluster, SelectionReconciler(cluster, cluster, clock, Metrics())


async def test_a_node_no_drain_can_empty_is_held_uncordoned_and_the_next_one_goes() -> None:
    cluster, selection = _world()
    await selection.reconcile()

    oldest, older = cluster.node_views["oldest"], cluster.node_views["older"]
    assert oldest.labels.get(STATE_LABEL) is None, "the deadlocked node entered the pipeline"
    assert not oldest.unschedulable
    assert older.labels.get(STATE_LABEL) == SELECTED, "its budget slot went unused"
    [event] = [e for e in cluster.events if e.reason == "PDBDeadlock"]
    assert event.node == "oldest"
    assert "default/db" in event.message
    assert "maxUnavailable is 0" in event.message
    [status] = [s for name, s in cluster.policy_status_patches if name == "rotate"][-1:]
    assert status["deadlocked"] == 1
    assert selection.last_plan is not None
    decision = selection.last_plan.decision_for("oldest")
    assert decision is not None
    assert decision.deadlock is not None


async def test_a_pdb_with_room_lets_the_oldest_node_go_first() -> None:
    cluster, selection = _world(deadlocked_pdb=False)
    await selection.reconcile()
    assert cluster.node_views["oldest"].labels.get(STATE_LABEL) == SELECTED
    assert not [e for e in cluster.events if e.reason == "PDBDeadlock"]


async def test_the_deadlock_is_reported_once_not_on_every_pass() -> None:
    cluster, selection = _world()
    await selection.reconcile()
    await selection.reconcile()
    selection.clock.advance(DEADLOCK_RECHECK_SECONDS + 1)  # type: ignore[attr-defined]
    await selection.reconcile()  # read again, found again, not reported again
    assert len([e for e in cluster.events if e.reason == "PDBDeadlock"]) == 1


async def test_a_fixed_pdb_ends_the_deadlock_at_the_next_recheck() -> None:
    cluster, selection = _world()
    await selection.reconcile()
    cluster.pdbs = [budget("db", max_unavailable=1, expected=1, allowed=1)]
    selection.clock.advance(DEADLOCK_RECHECK_SECONDS + 1)  # type: ignore[attr-defined]
    await selection.reconcile()
    assert selection.last_plan is not None
    decision = selection.last_plan.decision_for("oldest")
    assert decision is not None
    assert decision.deadlock is None
    assert decision.blocked_by is not None
    assert decision.blocked_by.startswith("budget full")  # "older" holds the one slot
