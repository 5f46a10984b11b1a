"""The simulator against the real control plane: the same fleet makes the same decisions
in the same order and rotates in about the same time, and the same evictions get the same
answers from the simulated eviction subresource as from the API server.

``molt simulate`` answers what-if questions only as well as ``molt.sim`` plays the
cluster; these tests hold it to the sandbox (kube-apiserver, kube-controller-manager's
disruption and ReplicaSet controllers, kube-scheduler, kwok).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api.durations import parse_duration
from molt.api.instancegroup import Template
from molt.api.labels import LAUNCHED_AT_ANNOTATION, REASON_ANNOTATION, STATE_LABEL
from molt.kube.transport import RawApi
from molt.kube.watch import Reflector
from molt.policy.age import parse_rfc3339
from molt.policy.cells import template_revision
from molt.policy.snapshot import NodeCondition, NodeView
from molt.ports import EvictionOutcome
from molt.sim.clock import EventHeap, VirtualClock
from molt.sim.cloud import CloudSettings
from molt.sim.cluster import SimCluster
from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario
from molt.sim.workloads import Budget, Deployment, SimPod
from tests.support.builders import deployment, kwok_node, pdb
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    GROUP_LABEL,
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
)
from tests.support.waiting import eventually

# ---------------------------------------------------------------------------------------
# A. Decisions and rotation time.

AGES_HOURS = [60, 59, 58, 57, 56, 55]
"""Distinct ages, so the oldest-first order is fully determined."""
PODS = 12
POD_CPU = "1500m"
"""Two such pods fit on a 4-CPU kwok node and three do not, so in both worlds the fleet
holds exactly two per node, and a drained node's pods can only go to its replacement."""
MAX_UNAVAILABLE = 2
"""As many as a node holds. kwok turns a replacement pod Ready within ~50 ms, about as
long as the drainer takes between two eviction calls; with 1, whether a node's second
pod meets a 429 (and a 5 s back-off) would be a race in the sandbox, while the simulator
always refuses it (a reconcile takes no virtual time)."""
BOOT_DELAY = 3
"""The template's kwok.bootDelay, in seconds: long enough that the rotation time is
mostly modelled delays, not the API server's latency."""
TEMPLATE: dict[str, Any] = {"instanceTypes": ["m5.large"], "kwok": {"bootDelay": f"{BOOT_DELAY}s"}}

SCENARIO = """\
name: fidelity
duration: 10m
# As the sandbox runs it: `molt run --resync=2s` (tests.support.controller.MoltProcess),
# and production timing for selection and groups (no floors).
controller: {{resync: 2s}}
cloud:
  # The kwok provider creates a replacement Node bootDelay after the size changes; the
  # simulated cloud launches converge_delay (1 s) after it changes, then waits launchDelay.
  launchDelay: {launch_delay}s
  launchJitter: 0s
  # kwok's stage makes a Node Ready at once; this is how long it took in the sandbox run.
  readyDelay: {ready_delay}
  instanceTypes:
    m5.large: {{cpu: "4", memory: 16Gi}}   # tests.support.builders.kwok_node's capacity
fleet:
  - name: {group}
    spec:
      provider: kwok
      minSize: 6
      maxSize: 7
      replicas: 6
      zones: [zone-a]
      maxNodeAge: 48h
      template: {{instanceTypes: [m5.large], kwok: {{bootDelay: {boot_delay}s}}}}
      strategy: {{type: RollingReplace, maxSurge: 1, maxUnavailable: 0}}
    ages: [{ages}]
workloads:
  - name: web
    replicas: {pods}
    requests: {{cpu: {cpu}, memory: 64Mi}}
    nodeSelector: {{molt.dev/instance-group: {group}}}
    # Pod creation to Ready in the sandbox run (kube-scheduler, then kwok's pod stage);
    # terminationGracePeriodSeconds is 0 and kwok deletes an evicted pod at once.
    startup: {startup}
    grace: 0s
    pdb: {{maxUnavailable: {max_unavailable}}}
policies:
  - name: {group}-48h
    spec:
      nodeSelector: {{matchLabels: {{molt.dev/instance-group: {group}}}}}
      rules: {{maxAge: 48h}}
      budgets: [{{maxInFlight: 1}}]
      drain: {{timeout: 10m}}
"""

_REASON = re.compile(r"^(?P<rule>[a-z-]+): (?P<age>\S+) > (?P<rest>.*)$")


@dataclass(frozen=True)
class Decision:
    """A node selected, named by its age rank among the nodes at the start (0: oldest)."""

    rank: int
    rule: str
    limit: str
    """The reason with the node's age left out: ``48h (past its deadline)``."""
    age: timedelta


def decision_of(rank: int, reason: str) -> Decision:
    match = _REASON.match(reason)
    assert match is not None, f"unexpected reason {reason!r}"
    return Decision(rank, match["rule"], match["rest"], parse_duration(match["age"]))


@dataclass
class SeenNode:
    """One node as a watcher saw it, in monotonic seconds."""

    launched: datetime | None
    seen: float
    ready: float | None = None
    selected: float | None = None
    reason: str | None = None
    gone: float | None = None


@dataclass
class SandboxWatch:
    """Watches a group's nodes and a namespace's pods, noting when each thing happened."""

    nodes: dict[str, SeenNode] = field(default_factory=dict)
    pods: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    selected_order: list[str] = field(default_factory=list)
    in_pipeline: set[str] = field(default_factory=set)
    max_in_pipeline: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def _node(self, key: str, old: Any, new: Any) -> None:
        now = time.monotonic()
        seen = self.nodes.get(key)
        if new is None:
            if seen is not None:
                seen.gone = now
            self.in_pipeline.discard(key)
            return
        if seen is None:
            launched = parse_rfc3339(new["launched"]) if new["launched"] else None
            seen = self.nodes[key] = SeenNode(launched, now)
        if new["ready"] and seen.ready is None:
            seen.ready = now
        if new["state"]:
            self.in_pipeline.add(key)
            self.max_in_pipeline = max(self.max_in_pipeline, len(self.in_pipeline))
            if seen.selected is None:
                seen.selected = now
                seen.reason = new["reason"]
                self.selected_order.append(key)
        else:
            self.in_pipeline.discard(key)

    def _pod(self, key: str, old: Any, new: Any) -> None:
        now = time.monotonic()
        if new is None:
            return
        seen, ready = self.pods.get(key, (now, None))
        if new["ready"] and ready is None:
            ready = now
        self.pods[key] = (seen, ready)

    async def start(self, kube: client.ApiClient, group: str, namespace: str) -> None:
        raw = RawApi(kube)
        nodes = Reflector(
            raw,
            "/api/v1/nodes",
            _node_facts,
            name="fidelity-nodes",
            label_selector=f"{GROUP_LABEL}={group}",
            on_change=self._node,
        )
        pods = Reflector(
            raw,
            f"/api/v1/namespaces/{namespace}/pods",
            lambda obj: {"ready": _condition(obj, "Ready")},
            name="fidelity-pods",
            on_change=self._pod,
        )
        for reflector in (nodes, pods):
            self.tasks.append(asyncio.create_task(reflector.run()))
        await asyncio.gather(nodes.synced.wait(), pods.synced.wait())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _condition(obj: dict[str, Any], kind: str) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _node_facts(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "ready": _condition(obj, "Ready"),
        "state": (meta.get("labels") or {}).get(STATE_LABEL),
        "reason": (meta.get("annotations") or {}).get(REASON_ANNOTATION),
        "launched": (meta.get("annotations") or {}).get(LAUNCHED_AT_ANNOTATION),
    }


async def _install_fleet(kube: client.ApiClient, group: str) -> list[str]:
    """The InstanceGroup and its six kwok nodes, aged AGES_HOURS; their names, oldest first."""
    return await install_old_fleet(
        kube,
        group,
        nodes=len(AGES_HOURS),
        age=[timedelta(hours=hours) for hours in AGES_HOURS],
        revision=template_revision(Template.model_validate(TEMPLATE)),
        template=TEMPLATE,
        maxNodeAge="48h",
    )


def _seconds(value: float) -> str:
    """A measured delay as a scenario duration, to the tenth of a second."""
    return f"{max(0, round(value * 10)) * 100}ms"


@dataclass(frozen=True)
class Rotation:
    decisions: list[Decision]
    seconds: float


NEW = -1
"""The rank of a node that was not there at the start (none should be selected)."""


def _sandbox_rotation(watch: SandboxWatch, old: list[str]) -> Rotation:
    by_launch = sorted(old, key=lambda name: watch.nodes[name].launched or datetime.max)
    rank = {name: index for index, name in enumerate(by_launch)}
    decisions = [
        decision_of(rank.get(name, NEW), watch.nodes[name].reason or "")
        for name in watch.selected_order
    ]
    first = min(watch.nodes[name].selected or 0.0 for name in old)
    last = max(watch.nodes[name].gone or 0.0 for name in old)
    return Rotation(decisions, last - first)


def _simulated_rotation(sim: Simulation) -> Rotation:
    initial = [life for life in sim.recorder.lifetimes.values() if life.initial]
    rank = {
        life.name: index for index, life in enumerate(sorted(initial, key=lambda x: x.launched))
    }
    decisions = [decision_of(rank.get(d.node, NEW), d.reason) for d in sim.recorder.decisions]
    first = min(d.at for d in sim.recorder.decisions)
    last = max(life.ended for life in initial if life.ended is not None)
    return Rotation(decisions, last - first)


async def test_the_simulator_makes_the_sandboxs_decisions_in_order_in_about_the_same_time(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"fid-{uuid.uuid4().hex[:5]}"
    watch = SandboxWatch()
    await watch.start(kube, group, namespace)
    try:
        old = await _install_fleet(kube, group)
        await eventually(
            lambda: has_ready_nodes(kube, group, len(old)), what="kwok to mark the nodes Ready"
        )
        await client.AppsV1Api(kube).create_namespaced_deployment(
            namespace,
            deployment("web", namespace, PODS, cpu=POD_CPU, node_selector={GROUP_LABEL: group}),
        )
        await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
            namespace, pdb("web", namespace, "web", max_unavailable=MAX_UNAVAILABLE)
        )
        await eventually(lambda: has_ready_replicas(kube, namespace, PODS), what="ready pods")
        await install_policy(
            kube,
            f"{group}-48h",
            group,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 1}],
            drain={"timeout": "10m"},
        )
        molt = run_molt()

        async def rotated() -> bool:
            return all(watch.nodes[name].gone is not None for name in old)

        await eventually(rotated, within=120, interval=0.5, what="every old node replaced")
        await eventually(lambda: has_ready_replicas(kube, namespace, PODS), what="ready again")
        assert molt.alive(), molt.log()
    finally:
        await watch.stop()
    sandbox = _sandbox_rotation(watch, old)
    assert watch.max_in_pipeline == 1

    # What kwok took in this run, for the simulated cloud and kubelets.
    started = min(watch.nodes[name].selected or 0.0 for name in old)
    node_ready = statistics.median(
        n.ready - n.seen for name, n in watch.nodes.items() if name not in old and n.ready
    )
    pod_ready = statistics.median(r - s for s, r in watch.pods.values() if s > started and r)
    scenario = parse_scenario(
        SCENARIO.format(
            group=group,
            ages=", ".join(f"{h}h" for h in AGES_HOURS),
            pods=PODS,
            cpu=POD_CPU,
            max_unavailable=MAX_UNAVAILABLE,
            boot_delay=BOOT_DELAY,
            launch_delay=BOOT_DELAY - CloudSettings().converge_delay,
            ready_delay=_seconds(node_ready),
            startup=_seconds(pod_ready),
        )
    )
    sim = Simulation(scenario)
    sim.run()
    report = build_report(sim)
    assert report["errorCount"] == 0, report["errors"]
    assert report["maxInPipeline"] == 1
    assert all(not p["violations"] for p in report["pdbs"]), report["pdbs"]
    simulated = _simulated_rotation(sim)

    def key(decisions: list[Decision]) -> list[tuple[int, str, str]]:
        return [(d.rank, d.rule, d.limit) for d in decisions]

    numbers = (
        f"sandbox {sandbox.seconds:.1f}s {key(sandbox.decisions)}; "
        f"simulated {simulated.seconds:.1f}s {key(simulated.decisions)}; "
        f"kwok node Ready in {node_ready:.2f}s, pod Ready in {pod_ready:.2f}s"
    )
    # The same nodes, oldest first, for the same reasons...
    assert key(sandbox.decisions) == key(simulated.decisions), numbers
    assert [d.rank for d in sandbox.decisions] == list(range(len(AGES_HOURS))), numbers
    assert {d.rule for d in sandbox.decisions} == {"max-age"}, numbers
    # ...at the same ages (give or take the minutes between the two starts),
    for real, simulated_decision in zip(sandbox.decisions, simulated.decisions, strict=True):
        assert abs(real.age - simulated_decision.age) <= timedelta(minutes=5), numbers
    # ...and the whole rotation takes about as long.
    assert abs(simulated.seconds - sandbox.seconds) <= 0.2 * sandbox.seconds, numbers


# ---------------------------------------------------------------------------------------
# B. The eviction subresource's answers.

REPLICAS = {"web": 4, "solo": 1}
"""``web`` has one PDB (maxUnavailable 1); ``solo``'s one pod is under two PDBs."""

STEPS: list[tuple[str, ...]] = [
    ("evict", "web", "ready"),  # 4 healthy, 3 needed: allowed
    ("evict", "web", "ready"),  # its replacement is Ready again: allowed
    ("cordon",),  # from here replacements stay Pending
    ("evict", "web", "ready"),  # allowed; 3 healthy left
    ("evict", "web", "ready"),  # 3 healthy, 3 needed: 429
    ("evict", "web", "pending"),  # a Pending pod is not guarded by its PDB: allowed
    ("evict", "solo", "ready"),  # two PDBs: 500
    ("delete", "solo", "ready"),
    ("evict", "solo", "pending"),  # Pending: no PDB is even looked at, allowed
    ("uncordon",),
    ("evict", "web", "ready"),  # 4 healthy again: allowed
    ("evict", "solo", "ready"),  # two PDBs: 500
]


class World(Protocol):
    """Pods, nodes and the eviction subresource, real or simulated."""

    async def settle(self) -> None: ...
    async def evict(self, app: str, state: str) -> str: ...
    async def delete(self, app: str, state: str) -> None: ...
    async def cordon(self, on: bool) -> None: ...


async def play(world: World) -> list[str]:
    """Run STEPS; each eviction's answer (``allowed``, ``429``, ``500``, ...), in order."""
    answers = []
    for verb, *target in STEPS:
        await world.settle()
        if verb in ("cordon", "uncordon"):
            await world.cordon(verb == "cordon")
        elif verb == "delete":
            await world.delete(*target)
        else:
            answers.append(f"{'/'.join(target)}: {await world.evict(*target)}")
    return answers


SIM_ANSWERS = {
    EvictionOutcome.EVICTED: "allowed",
    EvictionOutcome.PDB_BLOCKED: "429",
    EvictionOutcome.MULTIPLE_PDBS: "500",
    EvictionOutcome.GONE: "404",
}
START = datetime(2026, 1, 5, tzinfo=UTC)


class SimWorld:
    """The simulated cluster (``SimCluster``, the ClusterWrites port of ``molt simulate``)."""

    def __init__(self, namespace: str) -> None:
        self.cluster = SimCluster(EventHeap(VirtualClock(START)))
        for index in range(2):
            view = NodeView(
                name=f"n{index}", created=START, conditions=(NodeCondition("Ready", "True", START),)
            )
            self.cluster.add_node(view, cpu_millis=4000, memory_mib=16384)
        self.namespace = namespace
        for name, selector in (("web", {"app": "web"}), ("solo", {"app": "solo"})):
            self.cluster.add_budget(Budget(namespace, name, selector, max_unavailable=1))
        self.cluster.add_budget(Budget(namespace, "shared", {"tier": "shared"}, max_unavailable=1))
        labels = {"web": {"app": "web"}, "solo": {"app": "solo", "tier": "shared"}}
        for app, replicas in REPLICAS.items():
            self.cluster.add_deployment(
                Deployment(
                    namespace, app, replicas, memory_mib=64, labels=labels[app], grace_seconds=0
                )
            )

    def _pod(self, app: str, state: str) -> SimPod:
        pods = self.cluster.deployments[f"{self.namespace}/{app}"].pods.values()
        for pod in sorted(pods, key=lambda p: p.name):
            if not pod.deleting and (pod.ready if state == "ready" else not pod.running):
                return pod
        raise AssertionError(f"no {state} {app} pod in the simulation")

    async def settle(self) -> None:
        self.cluster.events.run_until(self.cluster.clock.seconds + 60)

    async def evict(self, app: str, state: str) -> str:
        result = await self.cluster.evict(self._pod(app, state).project())
        return SIM_ANSWERS.get(result.outcome, result.outcome.value)

    async def delete(self, app: str, state: str) -> None:
        await self.cluster.delete_pod(self._pod(app, state).project())

    async def cordon(self, on: bool) -> None:
        for node in self.cluster.nodes():
            await self.cluster.patch_node(node.name, unschedulable=on)


class SandboxWorld:
    """The same pods in the sandbox: the API server's eviction subresource, the disruption
    controller's PDB status, the ReplicaSet controller, kube-scheduler and kwok."""

    def __init__(self, kube: client.ApiClient, namespace: str, nodes: list[str]) -> None:
        self.core = client.CoreV1Api(kube)
        self.apps = client.AppsV1Api(kube)
        self.policy = client.PolicyV1Api(kube)
        self.namespace = namespace
        self.nodes = nodes
        self.cordoned = False
        self.unsettled: str | None = None

    async def install(self, node_label: dict[str, str]) -> None:
        for name in self.nodes:
            await self.core.create_node(kwok_node(name, labels=node_label))
        for app, replicas in REPLICAS.items():
            manifest = deployment(app, self.namespace, replicas, node_selector=node_label)
            if app == "solo":
                manifest["spec"]["template"]["metadata"]["labels"]["tier"] = "shared"
            await self.apps.create_namespaced_deployment(self.namespace, manifest)
        budgets = [
            pdb("web", self.namespace, "web", max_unavailable=1),
            pdb("solo", self.namespace, "solo", max_unavailable=1),
            pdb("shared", self.namespace, "solo", max_unavailable=1),
        ]
        budgets[2]["spec"]["selector"] = {"matchLabels": {"tier": "shared"}}
        for budget in budgets:
            await self.policy.create_namespaced_pod_disruption_budget(self.namespace, budget)

    async def _pods(self, app: str | None = None) -> list[client.V1Pod]:
        selector = f"app={app}" if app else None
        found = await self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        return sorted(found.items, key=lambda p: p.metadata.name)

    async def _unsettled(self) -> str | None:
        """What still moves, or None when nothing does: no pod terminating, every
        Deployment at its replicas, every bound pod Ready (unbound ones only while the
        nodes are cordoned), every PDB's status computed from exactly these pods."""
        pods = await self._pods()
        for pod in pods:
            if pod.metadata.deletion_timestamp:
                return f"{pod.metadata.name} is terminating"
            if not _pod_ready(pod) and (pod.spec.node_name or not self.cordoned):
                return f"{pod.metadata.name} is not Ready"
        for app, replicas in REPLICAS.items():
            have = sum(1 for p in pods if p.metadata.labels.get("app") == app)
            if have != replicas:
                return f"{app} has {have} of {replicas} pods"
        budgets = await self.policy.list_namespaced_pod_disruption_budget(self.namespace)
        covers = {
            budget.metadata.name: {
                p.metadata.name
                for p in pods
                if budget.spec.selector.match_labels.items() <= (p.metadata.labels or {}).items()
            }
            for budget in budgets.items
        }
        for budget in budgets.items:
            names = covers[budget.metadata.name]
            if any(names & other for key, other in covers.items() if key != budget.metadata.name):
                # The disruption controller updates one (arbitrary) PDB of a pod under
                # several, so the others' status may stay stale; the Eviction API answers
                # 500 for such a pod before it reads any status.
                continue
            covered = [p for p in pods if p.metadata.name in names]
            healthy = sum(1 for p in covered if _pod_ready(p))
            status = budget.status
            if (
                status is None
                or status.observed_generation != budget.metadata.generation
                or status.expected_pods != len(covered)
                or status.current_healthy != healthy
                or status.disrupted_pods
            ):
                return (
                    f"PDB {budget.metadata.name}: {status} (pods: {len(covered)}, {healthy} Ready)"
                )
        return None

    async def settle(self) -> None:
        async def settled() -> bool:
            self.unsettled = await self._unsettled()
            return self.unsettled is None

        try:
            await eventually(settled, within=30, interval=0.2, what="pods and PDBs to settle")
        except AssertionError as error:
            raise AssertionError(f"{error}: {self.unsettled}") from None

    async def _pod(self, app: str, state: str) -> client.V1Pod:
        for pod in await self._pods(app):
            if pod.metadata.deletion_timestamp:
                continue
            if _pod_ready(pod) if state == "ready" else pod.status.phase == "Pending":
                return pod
        raise AssertionError(f"no {state} {app} pod in the sandbox")

    async def evict(self, app: str, state: str) -> str:
        pod = await self._pod(app, state)
        eviction = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=self.namespace),
            delete_options=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=pod.metadata.uid)
            ),
        )
        try:
            await self.core.create_namespaced_pod_eviction(
                pod.metadata.name, self.namespace, eviction
            )
        except ApiException as error:
            body = error.body.decode() if isinstance(error.body, bytes) else str(error.body)
            if error.status == 500 and "more than one PodDisruptionBudget" not in body:
                return f"500 ({body})"  # some other failure, which the simulator never gives
            return str(error.status)
        return "allowed"

    async def delete(self, app: str, state: str) -> None:
        pod = await self._pod(app, state)
        await self.core.delete_namespaced_pod(pod.metadata.name, self.namespace)

    async def cordon(self, on: bool) -> None:
        for name in self.nodes:
            await self.core.patch_node(name, {"spec": {"unschedulable": on}})
        self.cordoned = on


def _pod_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


async def test_the_simulated_eviction_subresource_answers_as_the_api_server_does(
    kube: client.ApiClient, namespace: str, empty_cluster: None
) -> None:
    tag = uuid.uuid4().hex[:5]
    sandbox = SandboxWorld(kube, namespace, [f"pdb-{tag}-{index}" for index in range(2)])
    await sandbox.install({"fidelity": tag})
    real = await play(sandbox)
    simulated = await play(SimWorld(namespace))

    assert simulated == real, f"sandbox: {real}\nsimulated: {simulated}"
    # The sequence means something: every answer the drain acts on was given.
    assert {answer.split(": ")[1] for answer in real} == {"allowed", "429", "500"}, real
