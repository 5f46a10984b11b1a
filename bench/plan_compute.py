"""How long the policy core takes to plan a large fleet, PDB-deadlock pre-check included.

Builds 20,000 nodes in 3 zones and 4 groups at ages spread over 0-60 h, a policy with max
age, jitter, drift and condition rules and zone plus cluster budgets, and 600,000 pods
(30 a node: one DaemonSet pod, 29 of 2,000 Deployments in 40 namespaces, each Deployment
under its own PDB; 20 of those PDBs can never allow an eviction). Then it times planning
as Molt runs it, pods looked at, not skipped:

* ``molt plan``: the deadlock pre-check over every pod of the namespaces that have a PDB
  which can deadlock (the pods ``molt plan`` reads, served from memory), then
  ``compute_plan`` with the deadlocked nodes held: over the same node objects run after
  run, and over fresh copies with the parsing caches emptied, as a new ``molt plan``
  process starts;
* the controller's selection: ``compute_plan``, the pre-check over the pods of each node
  it would admit, and a plan again with those held (``SelectionReconciler``'s own loop,
  with pods and PDBs read from memory instead of the API server). Its first pass (a new
  controller: nothing remembered) and its later passes, 10 s apart, which skip the nodes
  no rule can select yet and reuse the deadlocks found for their minute.

Building the fixture takes a while; only the planning is timed, with the fixture frozen
out of the garbage collector's generations (as long-lived as a controller's caches).
The drain's sorting of every node's pods (``classify_pods``) is timed too, over a
5,000-node fleet.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import structlog

from molt.api.labels import GROUP_LABEL, LAUNCHED_AT_ANNOTATION, REVISION_LABEL, ZONE_LABEL
from molt.api.terminationpolicy import TerminationPolicy
from molt.api.types import LabelSelector, LabelSelectorRequirement
from molt.controllers.termination.selection import SelectionReconciler
from molt.observe.metrics import Metrics
from molt.policy.age import jitter_fraction, parse_rfc3339
from molt.policy.drain import classify_pods
from molt.policy.pdbs import DeadlockIndex, PdbView, deadlocks_by_node
from molt.policy.plan import Plan, compute_plan
from molt.policy.snapshot import GroupView, NodeCondition, NodeView, PodView, Snapshot

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GOAL_MS = 100.0
NAMESPACES = 40
DEPLOYMENTS = 2000
DEADLOCKED_EVERY = 100
"""Every 100th Deployment's PDB can never allow an eviction (20 of 2,000)."""


def fleet(size: int, seed: int = 7) -> Snapshot:
    rng = random.Random(seed)
    groups = [f"group-{i}" for i in range(4)]
    nodes = []
    for index in range(size):
        launched = NOW - timedelta(hours=rng.uniform(0, 60))
        group = groups[index % len(groups)]
        ready = "False" if rng.random() < 0.01 else "True"
        nodes.append(
            NodeView(
                name=f"node-{index:05d}",
                created=launched,
                labels={
                    GROUP_LABEL: group,
                    ZONE_LABEL: f"zone-{'abc'[index % 3]}",
                    REVISION_LABEL: "rev2" if rng.random() < 0.9 else "rev1",
                },
                annotations={LAUNCHED_AT_ANNOTATION: launched.strftime("%Y-%m-%dT%H:%M:%SZ")},
                conditions=(NodeCondition("Ready", ready, NOW - timedelta(minutes=30)),),
            )
        )
    return Snapshot(tuple(nodes), {g: GroupView(g, "rev2") for g in groups})


POLICY = TerminationPolicy.model_validate(
    {
        "kind": "TerminationPolicy",
        "metadata": {"name": "rotate"},
        "spec": {
            "rules": {
                "maxAge": "48h",
                "maxAgeJitter": "4h",
                "drift": True,
                "conditions": [{"type": "Ready", "status": "False", "for": "5m"}],
            },
            "budgets": [
                {"maxInFlight": "10%", "scope": "Cluster"},
                {"maxInFlight": 20, "scope": "Zone"},
            ],
        },
    }
)


def _deployment_namespace(deployment: int) -> str:
    return f"ns-{deployment % NAMESPACES}"


def workload_pods(snapshot: Snapshot, per_node: int = 30) -> list[PodView]:
    """Every pod of the cluster, as one LIST returns them: per node a DaemonSet pod and
    ``per_node - 1`` Deployment pods, the Deployments spread round-robin over the nodes."""
    pods: list[PodView] = []
    slot = 0
    for node in snapshot.nodes:
        pods.append(
            PodView(
                namespace="kube-system",
                name=f"exporter-{node.name}",
                uid=f"exporter-{node.name}",
                node=node.name,
                phase="Running",
                owner_kinds=("DaemonSet",),
                ready=True,
                labels={"app": "exporter"},
            )
        )
        for _ in range(per_node - 1):
            deployment = slot % DEPLOYMENTS
            slot += 1
            pods.append(
                PodView(
                    namespace=_deployment_namespace(deployment),
                    name=f"app-{deployment}-{slot}",
                    uid=f"uid-{slot}",
                    node=node.name,
                    phase="Running",
                    owner_kinds=("ReplicaSet",),
                    ready=True,
                    labels={"app": f"app-{deployment}", "pod-template-hash": "5d8f7c"},
                )
            )
    return pods


def budgets(pods_per_deployment: int) -> list[PdbView]:
    """One PDB per Deployment; every ``DEADLOCKED_EVERY``-th leaves no pod to spare
    (``maxUnavailable: 0`` or ``minAvailable: 100%`` in turn), a few select by
    expression, and one in kube-system covers the DaemonSet (which a drain skips)."""
    pdbs = [
        PdbView(
            "kube-system",
            "exporter",
            LabelSelector(match_labels={"app": "exporter"}),
            max_unavailable=0,
            expected_pods=pods_per_deployment,
        )
    ]
    for deployment in range(DEPLOYMENTS):
        name = f"app-{deployment}"
        if deployment % 250 == 7:
            selector = LabelSelector(
                match_expressions=[
                    LabelSelectorRequirement(key="app", operator="In", values=[name])
                ]
            )
        else:
            selector = LabelSelector(match_labels={"app": name})
        deadlocked = deployment % DEADLOCKED_EVERY == 0
        flavour = (deployment // DEADLOCKED_EVERY) % 2
        pdbs.append(
            PdbView(
                _deployment_namespace(deployment),
                name,
                selector,
                max_unavailable=(0 if flavour == 0 else None) if deadlocked else "10%",
                min_available="100%" if deadlocked and flavour == 1 else None,
                expected_pods=pods_per_deployment,
                current_healthy=pods_per_deployment,
                desired_healthy=pods_per_deployment - 1,
                disruptions_allowed=0 if deadlocked else 1,
            )
        )
    return pdbs


class InMemoryPods:
    """A fake of the two live reads selection makes before it admits a node (its pods,
    every PDB), served from memory so the bench times planning and not the API server."""

    def __init__(self, pods: list[PodView], pdbs: list[PdbView]) -> None:
        self.pdbs = pdbs
        self.by_node: dict[str, list[PodView]] = {}
        for pod in pods:
            if pod.node:
                self.by_node.setdefault(pod.node, []).append(pod)
        self.events = 0

    async def list_pdbs_now(self) -> list[PdbView]:
        return self.pdbs

    async def list_pods_now(self, node: str) -> list[PodView]:
        return self.by_node.get(node, [])

    async def record_event(
        self, node: NodeView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.events += 1


class _MonotonicClock:
    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return time.monotonic()


class _Timings:
    """Wall-clock and CPU time of each run: on a shared machine the CPU time says more."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._started = (0.0, 0.0)

    def start(self) -> None:
        self._started = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.wall.append(time.perf_counter() - self._started[0])
        self.cpu.append(time.process_time() - self._started[1])


def cli_plan(
    snapshot: Snapshot, pods_by_namespace: dict[str, list[PodView]], pdbs: list[PdbView]
) -> Plan:
    """What ``molt plan`` computes once it has read the PDBs and the nodes: the pods of
    the namespaces where a PDB can deadlock (one LIST each) are looked at, every one."""
    namespaces = sorted(DeadlockIndex(pdbs).namespaces)
    pods = [pod for namespace in namespaces for pod in pods_by_namespace.get(namespace, ())]
    deadlocked = deadlocks_by_node(pods, pdbs) if namespaces else {}
    return compute_plan(snapshot, [POLICY], NOW, deadlocked)


def fresh(snapshot: Snapshot) -> Snapshot:
    """The same nodes as new objects, and the parsing caches emptied: what a new
    ``molt plan`` process starts from."""
    parse_rfc3339.cache_clear()
    jitter_fraction.cache_clear()
    return Snapshot(tuple(replace(node) for node in snapshot.nodes), dict(snapshot.groups))


def cli_plans(
    snapshot: Snapshot,
    pods_by_namespace: dict[str, list[PodView]],
    pdbs: list[PdbView],
    repeats: int,
    *,
    new_process: bool,
) -> tuple[_Timings, Plan]:
    """``molt plan`` ``repeats`` times, over the same node objects (what a view computed
    once, and the parsing caches, carry over from run to run) or, ``new_process``, over
    fresh ones with the caches emptied, as each ``molt plan`` command starts."""
    timings = _Timings()
    plan = None
    for _ in range(repeats):
        copy = fresh(snapshot) if new_process else snapshot
        timings.start()
        plan = cli_plan(copy, pods_by_namespace, pdbs)
        timings.stop()
    assert plan is not None
    return timings, plan


async def controller_plans(
    snapshot: Snapshot, reads: InMemoryPods, repeats: int
) -> tuple[_Timings, Plan]:
    """Selection's first pass, ``repeats`` times: nothing known deadlocked yet, so every
    node it would admit has its pods checked (a later pass reuses what it found for a
    minute). Timed inside one event loop, around the planning alone."""
    nodes = {node.name: node for node in snapshot.nodes}
    timings = _Timings()
    plan = None
    for _ in range(repeats):
        # Only the pods and PDBs are read on this path: the fake stands for both ports.
        selection = SelectionReconciler(
            reads,  # type: ignore[arg-type]
            reads,  # type: ignore[arg-type]
            _MonotonicClock(),
            Metrics(),
        )
        timings.start()
        plan = await selection._plan_without_deadlocks(snapshot, [POLICY], NOW, nodes, {}, {})
        timings.stop()
    assert plan is not None
    return timings, plan


async def controller_steady_plans(
    snapshot: Snapshot, reads: InMemoryPods, repeats: int
) -> tuple[_Timings, Plan]:
    """One controller's passes 10 s apart after its first (untimed): what it remembered
    (when each node can first be selected, the deadlocks found this minute) is reused."""
    nodes = {node.name: node for node in snapshot.nodes}
    selection = SelectionReconciler(
        reads,  # type: ignore[arg-type]
        reads,  # type: ignore[arg-type]
        _MonotonicClock(),
        Metrics(),
    )
    await selection._plan_without_deadlocks(snapshot, [POLICY], NOW, nodes, {}, {})
    timings = _Timings()
    plan = None
    for step in range(1, repeats + 1):
        now = NOW + timedelta(seconds=10 * step)
        timings.start()
        plan = await selection._plan_without_deadlocks(snapshot, [POLICY], now, nodes, {}, {})
        timings.stop()
    assert plan is not None
    return timings, plan


def _figure(what: str, timings: _Timings, plan: Plan, repeats: int) -> str:
    held = sum(1 for d in plan.decisions if d.deadlock is not None)
    return (
        f"{what}: median {statistics.median(timings.wall) * 1000:.1f} ms (goal < "
        f"{GOAL_MS:.0f} ms; min {min(timings.wall) * 1000:.1f} ms; CPU median "
        f"{statistics.median(timings.cpu) * 1000:.1f} ms; {repeats} runs); "
        f"{len(plan.decisions)} selected, {len(plan.admitted)} admitted now, "
        f"{held} held by a PDB deadlock"
    )


def run(size: int = 20000, per_node: int = 30, repeats: int = 7) -> None:
    # Selection logs each deadlock it finds; the figures are what this prints.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    started = time.perf_counter()
    snapshot = fleet(size)
    pods = workload_pods(snapshot, per_node)
    pdbs = budgets(size * (per_node - 1) // DEPLOYMENTS)
    reads = InMemoryPods(pods, pdbs)
    built = time.perf_counter() - started
    # The fixture is long-lived, as the controller's caches (or molt plan's one LIST) are:
    # moved out of the collector's generations, so that a collection the planning's own
    # garbage triggers does not walk 600,000 pods (the controller's caches sit in the
    # oldest generation, which is collected only after it grew by a quarter).
    gc.collect()
    gc.freeze()
    print(
        f"planning fixture: {size} nodes, {len(pods)} pods, {len(pdbs)} PDBs "
        f"(built in {built:.1f} s, not timed)"
    )
    by_namespace: dict[str, list[PodView]] = {}
    for pod in pods:
        by_namespace.setdefault(pod.namespace, []).append(pod)
    what = f"molt plan over {size} nodes and {len(pods)} pods"
    timings, plan = cli_plans(snapshot, by_namespace, pdbs, repeats, new_process=False)
    print(_figure(f"{what}, node objects reused", timings, plan, repeats))
    timings, plan = cli_plans(snapshot, by_namespace, pdbs, repeats, new_process=True)
    print(_figure(f"{what}, fresh nodes and caches", timings, plan, repeats))
    timings, plan = asyncio.run(controller_plans(snapshot, reads, repeats))
    print(_figure(f"controller selection, first pass, {size} nodes", timings, plan, repeats))
    timings, plan = asyncio.run(controller_steady_plans(snapshot, reads, repeats))
    print(_figure(f"controller selection, later passes, {size} nodes", timings, plan, repeats))


def pods_per_node(snapshot: Snapshot, per_node: int = 30) -> dict[str, list[PodView]]:
    """30 pods a node: mostly ReplicaSet pods, one DaemonSet pod, a few do-not-disrupt."""
    pods: dict[str, list[PodView]] = {}
    for node in snapshot.nodes:
        pods[node.name] = [
            PodView(
                namespace=f"ns-{index % 7}",
                name=f"{node.name}-pod-{index}",
                uid=f"{node.name}-{index}",
                node=node.name,
                phase="Running",
                owner_kinds=("DaemonSet",) if index == 0 else ("ReplicaSet",),
                annotations={"molt.dev/do-not-disrupt": "true"} if index % 29 == 1 else {},
            )
            for index in range(per_node)
        ]
    return pods


def run_pods(size: int = 5000, repeats: int = 5) -> None:
    snapshot = fleet(size)
    pods = pods_per_node(snapshot)
    total = sum(len(p) for p in pods.values())
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for node in snapshot.nodes:
            classify_pods(pods[node.name], NOW, None)
        timings.append(time.perf_counter() - started)
    print(
        f"drain classification of {total} pods on {size} nodes: "
        f"median {statistics.median(timings) * 1000:.1f} ms over {repeats} runs"
    )


if __name__ == "__main__":
    run()
    run_pods()
