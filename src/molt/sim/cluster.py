"""The simulated cluster: the ``ClusterReads`` and ``ClusterWrites`` ports over memory.

It plays the API server and the controllers Molt relies on: nodes (joined by the
simulated cloud, Ready after a delay), the ReplicaSet controller (an evicted or orphaned
pod is replaced at once), the scheduler (requests, node selectors, taints and
tolerations; like kube-scheduler it looks at a bounded sample of feasible nodes from a
rotating start and binds to the least allocated), kubelets (a bound pod runs and turns
Ready after its start-up delay) and the eviction subresource with PDB semantics (see
``molt.sim.workloads``). Writes land at once, as the production write path feeds its
responses into the cache. Reads are cheap: the node list is built once per change.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from molt.api.durations import parse_duration
from molt.api.instancegroup import InstanceGroup, InstanceGroupStatus
from molt.api.labels import UNREACHABLE_TAINT
from molt.api.reaper import Reaper
from molt.api.resource import Resource
from molt.api.terminationpolicy import TerminationPolicy, TerminationPolicyStatus
from molt.api.watchdog import Watchdog, WatchdogStatus
from molt.policy.pdbs import PdbView
from molt.policy.registration import missing_taints
from molt.policy.snapshot import GroupView, NodeCondition, NodeTaint, NodeView, PodView
from molt.ports import EvictionOutcome, EvictionResult, ObjectRef, WatchEvent
from molt.sim.clock import EventHeap
from molt.sim.workloads import Budget, Deployment, SimPod

FEASIBLE_SAMPLE = 50
"""Feasible nodes the scheduler scores per pod (kube-scheduler samples, too)."""
NODE_MONITOR_GRACE_SECONDS = 40.0
"""kube-controller-manager's node-monitor grace period (as the sandbox runs it)."""
TAINT_EVICTION_SECONDS = 300.0
"""The default toleration of node.kubernetes.io/unreachable:NoExecute."""
SCHEDULE_DELAY = 0.2
"""From a pod appearing to the scheduler looking at it."""
NodeListener = Callable[[str, NodeView | None, NodeView | None], None]


@dataclass
class SimNode:
    """A node with its allocatable resources and the pods bound to it."""

    view: NodeView
    cpu_millis: int
    memory_mib: int
    used_cpu: int = 0
    used_memory: int = 0
    pods: dict[str, SimPod] = field(default_factory=dict)

    def fits(self, deployment: Deployment) -> bool:
        return (
            self.used_cpu + deployment.cpu_millis <= self.cpu_millis
            and self.used_memory + deployment.memory_mib <= self.memory_mib
        )

    def load(self) -> float:
        return max(self.used_cpu / max(self.cpu_millis, 1), self.used_memory / self.memory_mib)


@dataclass(frozen=True)
class RecordedEvent:
    """A Kubernetes Event Molt recorded, at a simulated second."""

    at: float
    node: str
    reason: str
    message: str
    warning: bool


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` applied to ``target`` as a JSON merge patch (RFC 7386), as the API server
    applies Molt's status patches: objects merge key by key, null removes a key. (A shallow
    merge would drop ``controlPlane.lastCompleted`` when selection writes the rest of
    ``controlPlane``, and with it the bake after each control-plane node.)"""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            before = merged.get(key)
            merged[key] = merge_patch(before if isinstance(before, dict) else {}, value)
        else:
            merged[key] = value
    return merged


def _group_view(group: InstanceGroup) -> GroupView:
    max_age = group.spec.max_node_age
    return GroupView(
        name=group.metadata.name,
        current_revision=group.status.current_revision if group.status else None,
        max_node_age_seconds=parse_duration(max_age).total_seconds() if max_age else None,
    )


class SimCluster:
    """Nodes, workloads, budgets, Molt's resources, and the controllers that move them."""

    def __init__(self, events: EventHeap) -> None:
        self.events = events
        self.clock = events.clock
        self._nodes: dict[str, SimNode] = {}
        self._node_list: list[NodeView] | None = None
        self._by_group: dict[str, dict[str, NodeView]] = {}
        self._group_tuples: dict[str, tuple[NodeView, ...]] = {}
        self._available: Counter[str] = Counter()
        self._groups: dict[str, InstanceGroup] = {}
        self._group_views: dict[str, GroupView] | None = None
        self._policies: dict[str, TerminationPolicy] = {}
        self._watchdogs: dict[str, Watchdog] = {}
        self._pods: dict[str, SimPod] = {}
        self._dead: set[str] = set()
        """Nodes whose kubelet died: nothing is confirmed there any more."""
        self.deployments: dict[str, Deployment] = {}
        self.budgets: dict[str, Budget] = {}
        self._pending: dict[str, SimPod] = {}
        self._feasible: dict[tuple[object, ...], tuple[Deployment, dict[str, None]]] = {}
        """Per placement key, the nodes its pods may land on: kept up to date node by node,
        since a node change only moves that one node in or out."""
        self._feasible_lists: dict[tuple[object, ...], list[str]] = {}
        self._rotation = 0
        self._uid = 0
        self.node_listeners: list[NodeListener] = []
        self.pod_listeners: list[Callable[[str], None]] = []
        self.group_listeners: list[Callable[[str, InstanceGroup], None]] = []
        self.watchdog_listeners: list[Callable[[str], None]] = []
        """Told a Watchdog's name when its status changes, as the watch cache tells."""
        self.recorded: list[RecordedEvent] = []
        self.evictions: dict[str, int] = {}
        self.pods_lost = 0
        """Pods that went with their node rather than through an eviction."""

    # Building the world.

    def add_group(self, group: InstanceGroup) -> None:
        self._groups[group.metadata.name] = group
        self._group_views = None
        for listener in self.group_listeners:
            listener(group.metadata.name, group)

    def add_policy(self, policy: TerminationPolicy) -> None:
        self._policies[policy.metadata.name] = policy

    def add_watchdog(self, watchdog: Watchdog) -> None:
        self._watchdogs[watchdog.metadata.name] = watchdog

    def add_deployment(self, deployment: Deployment) -> None:
        self.deployments[deployment.key] = deployment
        for budget in self.budgets.values():
            if budget.selects(deployment):
                budget.deployments.append(deployment)
                deployment.budgets.append(budget)
        for _ in range(deployment.replicas):
            self._new_pod(deployment)

    def add_budget(self, budget: Budget) -> None:
        self.budgets[budget.key] = budget
        for deployment in self.deployments.values():
            if budget.selects(deployment):
                budget.deployments.append(deployment)
                deployment.budgets.append(budget)

    def add_node(self, view: NodeView, *, cpu_millis: int, memory_mib: int) -> None:
        self._nodes[view.name] = SimNode(view, cpu_millis, memory_mib)
        self._node_changed(view.name, None, view, placement=True)

    def set_ready(self, name: str, ready: bool) -> None:
        node = self._nodes.get(name)
        if node is None or node.view.ready == ready:
            return
        condition = NodeCondition("Ready", "True" if ready else "False", self.clock.now())
        others = tuple(c for c in node.view.conditions if c.type != "Ready")
        self._replace_view(node, dataclasses.replace(node.view, conditions=(condition, *others)))

    def kill_kubelet(self, name: str) -> None:
        """The node's kubelet dies for good, as the API server then sees it: after the
        node-monitor grace period the node is Ready=Unknown and tainted unreachable and its
        pods unready; after their default toleration the taint manager deletes them, and
        nothing confirms a deletion there until the Node is deleted (pod GC)."""
        if name not in self._nodes or name in self._dead:
            return
        self._dead.add(name)

        def unknown() -> None:
            node = self._nodes.get(name)
            if node is None or name not in self._dead:
                return  # gone, or its kubelet came back first (a reboot fixed it)
            now = self.clock.now()
            condition = NodeCondition("Ready", "Unknown", now)
            others = tuple(c for c in node.view.conditions if c.type != "Ready")
            taints = (
                *node.view.taints,
                NodeTaint(UNREACHABLE_TAINT, "NoSchedule", None, now),
                NodeTaint(UNREACHABLE_TAINT, "NoExecute", None, now),
            )
            view = dataclasses.replace(node.view, conditions=(condition, *others), taints=taints)
            self._replace_view(node, view)
            for pod in list(node.pods.values()):
                self._set_ready(pod, False)
                pod.changed()
            self._pods_changed(name)
            self.events.after(TAINT_EVICTION_SECONDS, lambda: self._taint_manager(name))

        self.events.after(NODE_MONITOR_GRACE_SECONDS, unknown)

    def _taint_manager(self, name: str) -> None:
        node = self._nodes.get(name)
        if node is None or name not in self._dead:
            return
        for pod in list(node.pods.values()):
            if not pod.deleting:
                self._begin_deletion(pod)

    def kubelet_dead(self, name: str) -> bool:
        return name in self._dead

    def revive_kubelet(self, name: str) -> None:
        """A dead node's kubelet runs again (a reboot fixed it): the node turns Ready and
        loses the unreachable taints, its Terminating pods are confirmed gone, and the
        others turn Ready."""
        node = self._nodes.get(name)
        if node is None or name not in self._dead:
            return
        self._dead.discard(name)
        now = self.clock.now()
        condition = NodeCondition("Ready", "True", now)
        others = tuple(c for c in node.view.conditions if c.type != "Ready")
        taints = tuple(t for t in node.view.taints if t.key != UNREACHABLE_TAINT)
        view = dataclasses.replace(node.view, conditions=(condition, *others), taints=taints)
        self._replace_view(node, view)
        for pod in list(node.pods.values()):
            if pod.deleting:
                self._remove_pod(pod, replace=False)
            else:
                self._set_ready(pod, True)
                pod.changed()
        self._pods_changed(name)

    def remove_node(self, name: str) -> bool:
        """The node goes (its instance died or was deleted); its pods go with it."""
        node = self._nodes.pop(name, None)
        self._dead.discard(name)  # pod GC: its Terminating pods go with it
        if node is None:
            return False
        for pod in list(node.pods.values()):
            self.pods_lost += 0 if pod.deleting else 1
            self._remove_pod(pod, replace=not pod.deleting)
        self._node_changed(name, node.view, None, placement=True)
        return True

    def update_group(self, group: InstanceGroup) -> None:
        """A person edited the group (a timeline event)."""
        self.add_group(group)

    # Reads (ClusterReads).

    def synced(self) -> bool:
        return True

    def nodes(self) -> list[NodeView]:
        if self._node_list is None:
            self._node_list = [n.view for n in self._nodes.values()]
        return list(self._node_list)

    def node(self, name: str) -> NodeView | None:
        found = self._nodes.get(name)
        return found.view if found else None

    def group_nodes(self, group: str) -> tuple[NodeView, ...]:
        found = self._group_tuples.get(group)
        if found is None:
            found = self._group_tuples[group] = tuple(self._by_group.get(group, {}).values())
        return found

    def available_in_group(self, group: str) -> int:
        return self._available[group]

    def groups(self) -> dict[str, GroupView]:
        if self._group_views is None:
            self._group_views = {name: _group_view(g) for name, g in self._groups.items()}
        return dict(self._group_views)

    def instance_group(self, name: str) -> InstanceGroup | None:
        return self._groups.get(name)

    def policies(self) -> list[TerminationPolicy]:
        return list(self._policies.values())

    def policy(self, name: str) -> TerminationPolicy | None:
        return self._policies.get(name)

    def reapers(self) -> list[Reaper]:
        return []  # the simulator models no Reaper yet

    def watchdogs(self) -> list[Watchdog]:
        return list(self._watchdogs.values())

    def unusable(self) -> dict[tuple[type[Resource], str], str]:
        return {}  # a scenario's objects are validated when the scenario is loaded

    def watchdog(self, name: str) -> Watchdog | None:
        return self._watchdogs.get(name)

    def pods_on(self, node: str) -> list[PodView] | None:
        found = self._nodes.get(node)
        if found is None:
            return []
        return [pod.project() for pod in found.pods.values()]

    def release_pods(self, node: str) -> None:
        return None

    def node_count(self) -> int:
        return len(self._nodes)

    def sim_nodes(self) -> list[SimNode]:
        return list(self._nodes.values())

    # Writes (ClusterWrites).

    async def patch_node(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        unschedulable: bool | None = None,
    ) -> bool:
        node = self._nodes.get(name)
        if node is None:
            return False
        view = node.view.patched(
            labels=labels, annotations=annotations, unschedulable=unschedulable
        )
        self._replace_view(node, view)
        return True

    async def register_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        taints: Sequence[NodeTaint],
    ) -> bool:
        node = self._nodes.get(name)
        if node is None:
            return False
        view = node.view.patched(labels=dict(labels), annotations=dict(annotations))
        added = missing_taints(((t.key, t.effect) for t in view.taints), taints)
        self._replace_view(node, dataclasses.replace(view, taints=(*view.taints, *added)))
        return True

    async def evict(self, pod: PodView) -> EvictionResult:
        found = self._pods.get(pod.uid)
        if found is None or found.deleting:
            return self._count(EvictionResult(EvictionOutcome.GONE, "pod not found"))
        owner = found.deployment
        # A pod not running yet (Pending: unscheduled, or bound and starting) is deleted
        # without a look at its PDBs, however many there are, as the API server does.
        if owner.budgets and found.running:
            if len(owner.budgets) > 1:
                return self._count(
                    EvictionResult(
                        EvictionOutcome.MULTIPLE_PDBS,
                        "This pod has more than one PodDisruptionBudget, which the eviction "
                        "subresource does not support.",
                    )
                )
            budget = owner.budgets[0]
            # A Ready pod uses up a disruption; an unready one may go while the budget holds
            # (the default unhealthyPodEvictionPolicy, IfHealthyBudget).
            if found.ready and budget.disruptions_allowed <= 0:
                return self._count(self._refusal(budget))
            if not found.ready and budget.healthy < budget.desired_healthy:
                return self._count(self._refusal(budget))
        disrupts = found.ready  # only a Ready pod counts against its budgets
        self._begin_deletion(found)
        for budget in owner.budgets:
            if disrupts and budget.healthy < budget.desired_healthy:
                budget.violations.append(
                    f"{self.clock.seconds:.0f}s: eviction of {pod.key} left "
                    f"{budget.healthy} healthy < {budget.desired_healthy}"
                )
        return self._count(EvictionResult(EvictionOutcome.EVICTED))

    async def list_pods_now(self, node: str) -> list[PodView]:
        return self.pods_on(node) or []

    async def list_pdbs_now(self) -> list[PdbView]:
        return [budget.view() for budget in self.budgets.values()]

    async def read_pdb(self, namespace: str, name: str) -> PdbView | None:
        found = self.budgets.get(f"{namespace}/{name}")
        return found.view() if found is not None else None

    # A scenario carries no lifecycle actions or probes (molt.sim.scenario refuses them),
    # so nothing here is asked for other objects; the answers say "absent".

    async def read_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        return None

    async def watch_object(
        self, ref: ObjectRef, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncGenerator[WatchEvent, None]:
        return
        yield

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        return []

    async def create_object(self, body: dict[str, Any]) -> bool:
        raise NotImplementedError(f"the simulator makes no {ObjectRef.of(body)}")

    async def apply_object(self, body: dict[str, Any]) -> None:
        raise NotImplementedError(f"the simulator makes no {ObjectRef.of(body)}")

    async def delete_object(self, ref: ObjectRef) -> bool:
        return False

    async def delete_pod(self, pod: PodView) -> None:
        found = self._pods.get(pod.uid)
        if found is not None and not found.deleting:
            self._begin_deletion(found)

    async def delete_node(self, name: str) -> bool:
        return self.remove_node(name)

    async def force_delete_pod(self, pod: PodView) -> bool:
        found = self._pods.get(pod.uid)
        if found is None:
            return False
        self._remove_pod(found, replace=False)
        return True

    async def list_finished_pods_now(self, phase: str) -> list[PodView]:
        return []  # simulated pods never finish

    async def namespace_labels_now(self) -> dict[str, dict[str, str]]:
        return {}

    async def record_pod_event(
        self, pod: PodView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.recorded.append(RecordedEvent(self.clock.seconds, pod.key, reason, message, warning))

    async def record_event(
        self, node: NodeView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.recorded.append(RecordedEvent(self.clock.seconds, node.name, reason, message, warning))

    async def record_resource_event(
        self, kind: type[Resource], name: str, reason: str, message: str, *, warning: bool = False
    ) -> None:
        on = f"{kind.names.short_names[0]}/{name}"  # ig/workers, as the report reads them
        self.recorded.append(RecordedEvent(self.clock.seconds, on, reason, message, warning))

    async def patch_status(self, kind: type[Resource], name: str, status: dict[str, Any]) -> None:
        if kind is TerminationPolicy:
            self._patch_policy_status(name, status)
        elif kind is InstanceGroup:
            self._patch_group_status(name, status)
        elif kind is Watchdog:
            self._patch_watchdog_status(name, status)
        # A scenario has no Reapers: nothing else carries a status here.

    def _patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        current = self._policies.get(name)
        if current is None:
            return
        old = current.status.model_dump(by_alias=True, mode="json") if current.status else {}
        merged = TerminationPolicyStatus.model_validate(merge_patch(old, status))
        self._policies[name] = current.model_copy(update={"status": merged})

    def _patch_watchdog_status(self, name: str, status: dict[str, Any]) -> None:
        current = self._watchdogs.get(name)
        if current is None:
            return
        old = current.status.model_dump(by_alias=True, mode="json") if current.status else {}
        merged = WatchdogStatus.model_validate(merge_patch(old, status))
        self._watchdogs[name] = current.model_copy(update={"status": merged})
        for listener in self.watchdog_listeners:
            listener(name)

    def _patch_group_status(self, name: str, status: dict[str, Any]) -> None:
        current = self._groups.get(name)
        if current is None:
            return
        old = current.status.model_dump(by_alias=True, mode="json") if current.status else {}
        merged = InstanceGroupStatus.model_validate(merge_patch(old, status))
        updated = current.model_copy(update={"status": merged})
        self._groups[name] = updated
        self._group_views = None
        for listener in self.group_listeners:
            listener(name, updated)

    # The ReplicaSet controller, the scheduler and the kubelets.

    def _count(self, result: EvictionResult) -> EvictionResult:
        key = result.outcome.value
        self.evictions[key] = self.evictions.get(key, 0) + 1
        return result

    @staticmethod
    def _refusal(budget: Budget) -> EvictionResult:
        return EvictionResult(
            EvictionOutcome.PDB_BLOCKED,
            "Cannot evict pod as it would violate the pod's disruption budget. "
            f"The disruption budget {budget.name} needs {budget.desired_healthy} healthy "
            f"pods and has {budget.healthy}.",
        )

    def _new_pod(self, deployment: Deployment) -> SimPod:
        self._uid += 1
        deployment.serial += 1
        pod = SimPod(deployment, f"{deployment.name}-{deployment.serial:05d}", f"pod-{self._uid}")
        deployment.pods[pod.uid] = pod
        self._pods[pod.uid] = pod
        self._pending[pod.uid] = pod
        self.events.keyed("scheduler", SCHEDULE_DELAY, self.schedule_pending)
        return pod

    def _set_ready(self, pod: SimPod, ready: bool) -> None:
        if pod.ready == ready:
            return
        pod.ready = ready
        pod.deployment.ready += 1 if ready else -1
        for budget in pod.deployment.budgets:
            budget.observe(self.clock.seconds)

    def _begin_deletion(self, pod: SimPod) -> None:
        """Evicted or deleted: not healthy from now, gone after its grace period."""
        pod.deleting = True
        pod.deletion_due = self.clock.now() + timedelta(seconds=pod.deployment.grace_seconds)
        pod.changed()
        self._set_ready(pod, False)
        self._new_pod(pod.deployment)  # the ReplicaSet does not count terminating pods
        if pod.node is not None:
            self._pods_changed(pod.node)
        if pod.node in self._dead:
            return  # no kubelet confirms it: it stays Terminating until its Node goes
        self.events.after(
            pod.deployment.grace_seconds, lambda: self._remove_pod(pod, replace=False)
        )

    def _remove_pod(self, pod: SimPod, *, replace: bool) -> None:
        if self._pods.pop(pod.uid, None) is None:
            return
        self._pending.pop(pod.uid, None)
        pod.deployment.pods.pop(pod.uid, None)
        self._set_ready(pod, False)
        node = self._nodes.get(pod.node) if pod.node else None
        if node is not None and node.pods.pop(pod.uid, None) is not None:
            node.used_cpu -= pod.deployment.cpu_millis
            node.used_memory -= pod.deployment.memory_mib
            self._pods_changed(node.view.name)
            if self._pending:
                self.events.keyed("scheduler", SCHEDULE_DELAY, self.schedule_pending)
        if replace:
            self._new_pod(pod.deployment)

    def _schedulable(self, node: SimNode, deployment: Deployment) -> bool:
        view = node.view
        if view.unschedulable or not view.ready:
            return False
        for key, value in deployment.node_selector.items():
            if view.labels.get(key) != value:
                return False
        return all(
            deployment.tolerates(t.key, t.value, t.effect)
            for t in view.taints
            if t.effect in ("NoSchedule", "NoExecute")
        )

    def _candidates(self, deployment: Deployment) -> list[str]:
        key = deployment.placement_key()
        names = self._feasible_lists.get(key)
        if names is None:
            found = self._feasible.get(key)
            if found is None:
                feasible = {
                    n.view.name: None
                    for n in self._nodes.values()
                    if self._schedulable(n, deployment)
                }
                found = self._feasible[key] = (deployment, feasible)
            names = self._feasible_lists[key] = list(found[1])
        return names

    def _placement_changed(self, name: str) -> None:
        node = self._nodes.get(name)
        for key, (deployment, feasible) in self._feasible.items():
            fits = node is not None and self._schedulable(node, deployment)
            if fits != (name in feasible):
                if fits:
                    feasible[name] = None
                else:
                    del feasible[name]
                self._feasible_lists.pop(key, None)

    def schedule_pending(self) -> None:
        """Bind every pending pod that fits somewhere; the rest wait for a node change."""
        unplaceable: set[tuple[object, ...]] = set()
        for pod in list(self._pending.values()):
            owner = pod.deployment
            shape = (owner.placement_key(), owner.cpu_millis, owner.memory_mib)
            if shape in unplaceable:
                continue  # a pod just like it found no room in this pass: neither will it
            names = self._candidates(owner)
            if not names:
                continue
            best: SimNode | None = None
            best_load = 0.0
            seen = 0
            count = len(names)
            start = self._rotation % count
            offset = 0
            cpu, memory, nodes = owner.cpu_millis, owner.memory_mib, self._nodes
            for offset in range(count):
                node = nodes.get(names[(start + offset) % count])
                # SimNode.fits and SimNode.load, inlined: the simulator's hottest loop.
                if (
                    node is None
                    or node.used_cpu + cpu > node.cpu_millis
                    or node.used_memory + memory > node.memory_mib
                ):
                    continue
                load = max(
                    node.used_cpu / max(node.cpu_millis, 1), node.used_memory / node.memory_mib
                )
                if best is None or load < best_load:
                    best, best_load = node, load
                seen += 1
                if seen >= FEASIBLE_SAMPLE:
                    break
            # The next pod looks on from here, so full nodes are passed once per sweep
            # rather than once per pod (like the scheduler's percentageOfNodesToScore).
            self._rotation = start + offset + 1
            if best is None:
                if seen == 0:
                    unplaceable.add(shape)
                continue
            del self._pending[pod.uid]
            pod.node = best.view.name
            pod.changed()
            best.pods[pod.uid] = pod
            best.used_cpu += owner.cpu_millis
            best.used_memory += owner.memory_mib
            self.events.after(owner.startup_seconds, lambda p=pod: self._start(p))  # type: ignore[misc]

    def _start(self, pod: SimPod) -> None:
        if pod.uid not in self._pods or pod.deleting:
            return
        pod.running = True
        pod.changed()
        self._set_ready(pod, True)
        if pod.node is not None:
            self._pods_changed(pod.node)

    def _pods_changed(self, node: str) -> None:
        for listener in self.pod_listeners:
            listener(node)

    def _replace_view(self, node: SimNode, view: NodeView) -> None:
        old = node.view
        node.view = view
        placement = (
            old.unschedulable != view.unschedulable
            or old.ready != view.ready
            or old.taints != view.taints
        )
        self._node_changed(view.name, old, view, placement=placement)

    def _node_changed(
        self, name: str, old: NodeView | None, new: NodeView | None, *, placement: bool
    ) -> None:
        self._node_list = None
        # The group index and its count of available nodes (ClusterReads.group_nodes and
        # available_in_group), kept as each node changes.
        if old is not None and old.group is not None:
            if new is None or new.group != old.group:
                self._by_group[old.group].pop(name, None)
            self._group_tuples.pop(old.group, None)
            self._available[old.group] -= old.available
        if new is not None and new.group is not None:
            self._by_group.setdefault(new.group, {})[name] = new
            self._group_tuples.pop(new.group, None)
            self._available[new.group] += new.available
        if placement:
            self._placement_changed(name)
            if self._pending:
                self.events.keyed("scheduler", SCHEDULE_DELAY, self.schedule_pending)
        for listener in self.node_listeners:
            listener(name, old, new)
