"""The simulated cluster: PDB semantics of the eviction subresource, the ReplicaSet
controller, the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from molt.policy.snapshot import NodeCondition, NodeTaint, NodeView
from molt.ports import EvictionOutcome
from molt.sim.clock import EventHeap, VirtualClock
from molt.sim.cluster import SimCluster, merge_patch
from molt.sim.drive import complete
from molt.sim.workloads import Budget, Deployment, Toleration

pytestmark = pytest.mark.unit

START = datetime(2026, 1, 5, tzinfo=UTC)


def ready_node(name: str, *, taints: tuple[NodeTaint, ...] = ()) -> NodeView:
    return NodeView(
        name=name,
        created=START,
        conditions=(NodeCondition("Ready", "True", START),),
        taints=taints,
    )


def cluster_with(replicas: int, budget: Budget | None, *, nodes: int = 3) -> SimCluster:
    heap = EventHeap(VirtualClock(START))
    cluster = SimCluster(heap)
    for index in range(nodes):
        cluster.add_node(ready_node(f"n{index}"), cpu_millis=4000, memory_mib=16000)
    if budget is not None:
        cluster.add_budget(budget)
    cluster.add_deployment(
        Deployment("default", "web", replicas, labels={"app": "web"}, startup_seconds=10)
    )
    heap.run_until(60)
    return cluster


def pods(cluster: SimCluster) -> list:  # type: ignore[type-arg]
    found = []
    for node in cluster.sim_nodes():
        found.extend(p.project() for p in node.pods.values() if not p.deleting)
    return sorted(found, key=lambda p: p.name)


def test_pods_are_scheduled_and_become_ready_after_their_startup() -> None:
    cluster = cluster_with(6, None)
    assert cluster.deployments["default/web"].ready == 6
    assert all(p.phase == "Running" for p in pods(cluster))


def test_evictions_beyond_max_unavailable_get_429() -> None:
    cluster = cluster_with(4, Budget("default", "web", {"app": "web"}, max_unavailable=1))
    first, second = pods(cluster)[:2]
    assert complete(cluster.evict(first)).outcome == EvictionOutcome.EVICTED
    assert complete(cluster.evict(second)).outcome == EvictionOutcome.PDB_BLOCKED


def test_the_replacement_counts_only_once_it_is_ready() -> None:
    cluster = cluster_with(4, Budget("default", "web", {"app": "web"}, min_available=3))
    first, second = pods(cluster)[:2]
    complete(cluster.evict(first))
    cluster.events.run_until(cluster.clock.seconds + 5)  # replacement bound, still starting
    assert complete(cluster.evict(second)).outcome == EvictionOutcome.PDB_BLOCKED
    cluster.events.run_until(cluster.clock.seconds + 30)
    assert complete(cluster.evict(second)).outcome == EvictionOutcome.EVICTED


def test_a_pod_under_two_budgets_gets_the_multiple_pdbs_answer() -> None:
    heap = EventHeap(VirtualClock(START))
    cluster = SimCluster(heap)
    cluster.add_node(ready_node("n0"), cpu_millis=4000, memory_mib=16000)
    cluster.add_budget(Budget("default", "a", {"app": "web"}, max_unavailable=1))
    cluster.add_budget(Budget("default", "b", {"app": "web"}, max_unavailable=1))
    cluster.add_deployment(Deployment("default", "web", 2, labels={"app": "web"}))
    heap.run_until(60)
    assert complete(cluster.evict(pods(cluster)[0])).outcome == EvictionOutcome.MULTIPLE_PDBS


def test_a_pending_pod_is_evicted_without_a_look_at_its_budgets() -> None:
    heap = EventHeap(VirtualClock(START))
    cluster = SimCluster(heap)
    cluster.add_budget(Budget("default", "a", {"app": "web"}, min_available=1))
    cluster.add_budget(Budget("default", "b", {"app": "web"}, min_available=1))
    cluster.add_deployment(Deployment("default", "web", 1, labels={"app": "web"}))
    heap.run_until(60)  # no node: the pod stays Pending
    (pending,) = [p.project() for p in cluster.deployments["default/web"].pods.values()]
    assert complete(cluster.evict(pending)).outcome == EvictionOutcome.EVICTED
    assert all(not b.violations for b in cluster.budgets.values())


def test_percentages_round_up_as_the_api_server_does() -> None:
    budget = Budget("default", "web", {"app": "web"}, max_unavailable="10%")
    cluster_with(15, budget)
    assert budget.desired_healthy == 13  # 15 - ceil(1.5)
    assert budget.disruptions_allowed == 2


def test_the_scheduler_honours_taints_and_requests() -> None:
    heap = EventHeap(VirtualClock(START))
    cluster = SimCluster(heap)
    taint = (NodeTaint("dedicated", "NoSchedule", "system"),)
    cluster.add_node(ready_node("tainted", taints=taint), cpu_millis=4000, memory_mib=16000)
    cluster.add_node(ready_node("small"), cpu_millis=1000, memory_mib=16000)
    cluster.add_deployment(Deployment("default", "web", 3, cpu_millis=500, labels={"app": "w"}))
    cluster.add_deployment(
        Deployment(
            "default",
            "dns",
            1,
            cpu_millis=500,
            labels={"app": "dns"},
            tolerations=(Toleration("dedicated", "Equal", "system", "NoSchedule"),),
        )
    )
    heap.run_until(60)
    placed = {p.name: p.node for p in pods(cluster)}
    assert [n for name, n in placed.items() if name.startswith("web")] == ["small", "small"]
    assert cluster.deployments["default/web"].ready == 2  # the third does not fit anywhere
    assert placed["dns-00001"] in ("tainted", "small")


def test_pods_on_a_deleted_node_are_recreated_elsewhere() -> None:
    cluster = cluster_with(6, None)
    complete(cluster.delete_node("n0"))
    cluster.events.run_until(cluster.clock.seconds + 60)
    assert cluster.deployments["default/web"].ready == 6
    assert all(p.node != "n0" for p in pods(cluster))


def test_group_nodes_and_their_available_count_follow_every_change() -> None:
    heap = EventHeap(VirtualClock(START))
    cluster = SimCluster(heap)
    for name, group in (("a", "workers"), ("b", "workers"), ("c", "batch")):
        view = ready_node(name)
        view = view.patched(labels={"molt.dev/instance-group": group})
        cluster.add_node(view, cpu_millis=4000, memory_mib=16000)
    workers = cluster.group_nodes("workers")
    assert [n.name for n in workers] == ["a", "b"]
    assert cluster.group_nodes("workers") is workers

    complete(cluster.patch_node("b", labels={"molt.dev/state": "selected"}))
    changed = cluster.group_nodes("workers")
    assert changed is not workers
    assert [n.state for n in changed] == [None, "selected"]

    assert cluster.available_in_group("workers") == 2
    complete(cluster.patch_node("b", annotations={"molt.dev/replacement": "group capacity: 1"}))
    assert cluster.available_in_group("workers") == 1  # past the drain gate
    cluster.set_ready("a", False)
    assert cluster.available_in_group("workers") == 0

    cluster.remove_node("a")
    assert [n.name for n in cluster.group_nodes("workers")] == ["b"]
    assert [n.name for n in cluster.group_nodes("batch")] == ["c"]
    assert (cluster.available_in_group("workers"), cluster.available_in_group("batch")) == (0, 1)


def test_a_status_patch_merges_nested_objects_as_the_api_server_does() -> None:
    """Selection writes ``controlPlane.halted`` and ``healthySince``; the pipeline's
    ``lastCompleted`` (which starts the bake) must survive it, as under a merge patch."""
    old = {"inFlight": 1, "controlPlane": {"lastCompleted": "t1", "halted": "x"}}
    patch = {"inFlight": 0, "controlPlane": {"halted": None, "healthySince": "t2"}}
    assert merge_patch(old, patch) == {
        "inFlight": 0,
        "controlPlane": {"lastCompleted": "t1", "healthySince": "t2"},
    }
    assert old["controlPlane"] == {"lastCompleted": "t1", "halted": "x"}
