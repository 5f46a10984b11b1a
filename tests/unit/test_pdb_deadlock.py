"""PDBs that can never allow a disruption are found before a node is cordoned: the node
waits uncordoned, its budget slot goes to the next candidate, and the policy counts it."""

from __future__ import annotations

import itertools
import random

import pytest

from molt.api.labels import SELECTED, STATE_LABEL
from molt.api.types import LabelSelector, LabelSelectorRequirement
from molt.controllers.termination.selection import DEADLOCK_RECHECK_SECONDS, SelectionReconciler
from molt.observe.metrics import Metrics
from molt.policy.pdbs import (
    Deadlock,
    PdbView,
    covering,
    deadlocks_by_node,
    find_deadlocks,
    never_allows,
    refusing_now,
)
from molt.policy.snapshot import PodView
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


def _scan(pods: list[PodView], pdbs: list[PdbView]) -> list[Deadlock]:
    """The deadlocks by a plain scan of every PDB for every pod: what the index must find."""
    found = []
    for one in pods:
        if one.daemonset or one.mirror or one.finished or one.deleting:
            continue
        for pdb in covering(pdbs, one):
            why = never_allows(pdb)
            if why is not None:
                found.append(Deadlock(one.key, pdb.key, why))
                break
    return found


def test_the_index_finds_what_a_scan_of_every_pdb_finds() -> None:
    rng = random.Random(3)
    apps, tiers, spaces = ["web", "db", "cache", "queue"], ["a", "b"], ["default", "other"]
    pdbs: list[PdbView] = []
    for index in range(60):
        roll = rng.random()
        if roll < 0.1:
            selector: LabelSelector | None = None
        elif roll < 0.2:
            selector = LabelSelector()
        elif roll < 0.35:
            selector = LabelSelector(
                match_expressions=[
                    LabelSelectorRequirement(key="app", operator="In", values=[rng.choice(apps)])
                ]
            )
        else:
            labels = {"app": rng.choice(apps)}
            if rng.random() < 0.5:
                labels["tier"] = rng.choice(tiers)
            selector = LabelSelector(match_labels=labels)
        spec = rng.choice(
            [{"max_unavailable": 0}, {"min_available": "100%"}, {"max_unavailable": 1}]
        )
        pdbs.append(
            PdbView(rng.choice(spaces), f"pdb-{index}", selector, expected_pods=3, **spec)  # type: ignore[arg-type]
        )
    pods = [
        pod(
            f"pod-{index}",
            node=f"node-{index % 9}",
            namespace=rng.choice(spaces),
            labels={"app": rng.choice(apps), "tier": rng.choice(tiers)},
            owner_kinds=("DaemonSet",) if index % 11 == 0 else ("ReplicaSet",),
        )
        for index in range(400)
    ]
    expected = _scan(pods, pdbs)
    assert len({d.pdb for d in expected}) > 5  # several PDBs, first match in list order
    assert find_deadlocks(pods, pdbs) == expected
    by_node = deadlocks_by_node(pods, pdbs)
    for name in {f"node-{index}" for index in range(9)}:
        mine = _scan([p for p in pods if p.node == name], pdbs)
        assert (name in by_node) == bool(mine)
        if mine:
            assert by_node[name].startswith(mine[0].message)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_pod_several_deadlocking_pdbs_select_is_held_by_the_first_given(
    order: tuple[int, ...],
) -> None:
    by_app = budget("by-app", max_unavailable=0, selector={"app": "web"})
    by_tier = budget("by-tier", max_unavailable=0, selector={"tier": "front"})
    by_expression = PdbView(
        "default",
        "by-expression",
        LabelSelector(match_expressions=[LabelSelectorRequirement(key="app", operator="Exists")]),
        max_unavailable=0,
    )
    pdbs = [[by_app, by_tier, by_expression][index] for index in order]
    held = pod("web-1", labels={"app": "web", "tier": "front"})

    assert find_deadlocks([held], pdbs) == _scan([held], pdbs)
    assert [d.pdb for d in find_deadlocks([held], pdbs)] == [f"default/{pdbs[0].name}"]
    assert deadlocks_by_node([held], pdbs)["old"].startswith(_scan([held], pdbs)[0].message)
