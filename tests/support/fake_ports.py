"""In-memory FAKES of Molt's ports, for unit tests only.

``FakeClock``, ``FakeCluster`` (both ``ClusterReads`` and ``ClusterWrites``) and
``FakeProvider`` (and ``FakeBalancedProvider``, a fake cloud with load balancers) let a
test drive the reconcilers directly, one call at a time, as the
work queue would, with no API server, no cloud and no real time. They hold real
``NodeView``/``PodView`` projections and real pydantic ``InstanceGroup`` and
``TerminationPolicy`` models, apply writes at once (as the production write path feeds
its responses straight into the node cache), and record every call so a test can assert
on what the reconciler did. None of this is used by production code.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from molt.api import InstanceGroup, Reaper, TerminationPolicy, Watchdog
from molt.api.durations import parse_duration
from molt.api.instancegroup import Template
from molt.api.labels import CAPACITY_TYPE_LABEL, GROUP_LABEL, REVISION_LABEL, ZONE_LABEL
from molt.api.resource import Resource
from molt.api.types import dump_manifest
from molt.cloud.provider import (
    CapacityError,
    CellObservation,
    CellRef,
    Instance,
    LaunchFailure,
    LoadBalancers,
    Provider,
    ProviderError,
)
from molt.policy.pdbs import PdbView
from molt.policy.registration import missing_taints
from molt.policy.snapshot import GroupView, NodeCondition, NodeTaint, NodeView, PodView
from molt.ports import (
    Clock,
    ClusterReads,
    ClusterWrites,
    EvictionOutcome,
    EvictionResult,
    ObjectRef,
    WatchEvent,
)

__all__ = [
    "FakeBalancedProvider",
    "FakeClock",
    "FakeCluster",
    "FakeProvider",
    "RecordedEvent",
    "pod",
]


def pod(
    name: str,
    *,
    node: str = "old",
    namespace: str = "default",
    phase: str = "Running",
    owner_kinds: tuple[str, ...] = ("ReplicaSet",),
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    deletion_due: datetime | None = None,
    ready: bool = True,
    tolerates_cordon: bool = False,
    labels: dict[str, str] | None = None,
    created: datetime | None = None,
    name_generated: bool = False,
) -> PodView:
    """A running, Ready ReplicaSet pod on ``node`` unless told otherwise; uid is
    ``uid-<name>``."""
    return PodView(
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        node=node,
        phase=phase,
        owner_kinds=owner_kinds,
        annotations=dict(annotations or {}),
        deleting=deleting or deletion_due is not None,
        deletion_timestamp=deletion_due,
        ready=ready,
        tolerates_cordon=tolerates_cordon,
        labels=dict(labels or {}),
        created=created,
        name_generated=name_generated,
    )


class FakeClock:
    """A clock that moves only when told: ``advance`` moves wall and monotonic time together."""

    def __init__(self, now: datetime, monotonic: float = 1000.0) -> None:
        self.wall = now
        self.mono = monotonic

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def set(self, *, now: datetime | None = None, monotonic: float | None = None) -> None:
        if now is not None:
            self.wall = now
        if monotonic is not None:
            self.mono = monotonic


class RecordedEvent(NamedTuple):
    """An Event the reconciler recorded on a node (compares equal to a plain tuple)."""

    node: str
    reason: str
    message: str
    warning: bool


_EVICTION_MESSAGES = {
    EvictionOutcome.EVICTED: "",
    EvictionOutcome.GONE: "pod not found",
    EvictionOutcome.PDB_BLOCKED: (
        "Cannot evict pod as it would violate the pod's disruption budget. "
        "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
    ),
    EvictionOutcome.MULTIPLE_PDBS: (
        "This pod has more than one PodDisruptionBudget, which the eviction subresource "
        "does not support."
    ),
    EvictionOutcome.NAMESPACE_TERMINATING: "namespace is being terminated",
    EvictionOutcome.FAILED: "Internal error occurred",
}


class FakeCluster:
    """An in-memory cluster: the ``ClusterReads`` and ``ClusterWrites`` ports in one object.

    State (mutate freely in a test): ``node_views`` by name, ``pods`` by node name,
    ``instance_groups`` and ``termination_policies`` by name. Scripting:
    ``eviction_answers`` maps a pod key (``namespace/name``) to the outcomes its next
    evictions get, front first; once a pod's list is empty (or absent) it is EVICTED.
    Records: ``evictions`` (pod keys, every call), ``deleted_pods``, ``deleted_nodes``
    (every call), ``events``, ``policy_status_patches``, ``node_patches``, ``released``.
    """

    def __init__(
        self,
        *,
        nodes: list[NodeView] | tuple[NodeView, ...] = (),
        pods: list[PodView] | tuple[PodView, ...] = (),
        groups: list[InstanceGroup] | tuple[InstanceGroup, ...] = (),
        policies: list[TerminationPolicy] | tuple[TerminationPolicy, ...] = (),
        reapers: list[Reaper] | tuple[Reaper, ...] = (),
        watchdogs: list[Watchdog] | tuple[Watchdog, ...] = (),
    ) -> None:
        self.reaper_objects: dict[str, Reaper] = {r.metadata.name: r for r in reapers}
        self.reaper_status_patches: list[tuple[str, dict[str, Any]]] = []
        self.watchdog_objects: dict[str, Watchdog] = {w.metadata.name: w for w in watchdogs}
        self.unusable_objects: dict[tuple[type[Resource], str], str] = {}
        self.watchdog_status_patches: list[tuple[str, dict[str, Any]]] = []
        self.finished_pods: list[PodView] = []
        """What ``list_finished_pods_now`` lists (filtered by phase), bound or not."""
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.force_deleted_pods: list[str] = []
        self.node_views: dict[str, NodeView] = {n.name: n for n in nodes}
        self.pods: dict[str, list[PodView]] = {}
        for one in pods:
            self.add_pod(one)
        self.instance_groups: dict[str, InstanceGroup] = {g.metadata.name: g for g in groups}
        self.group_status_patches: list[tuple[str, dict[str, Any]]] = []
        self.termination_policies: dict[str, TerminationPolicy] = {
            p.metadata.name: p for p in policies
        }
        self.pdbs: list[PdbView] = []
        self.objects: dict[ObjectRef, dict[str, Any]] = {}
        """Other objects (Secrets, ConfigMaps, Jobs, probe Pods) by reference."""
        self.deleted_objects: list[ObjectRef] = []
        self.applied: list[dict[str, Any]] = []
        self.job_endings: dict[tuple[str, str], tuple[str, str]] = {}
        """(namespace, name) -> (condition, message): how a Job ends once created."""
        self.object_version = 0
        """The last resourceVersion given to an object (created, changed or deleted here)."""
        self.object_changes: list[tuple[int, ObjectRef, WatchEvent]] = []
        """Every such change, in order: what ``watch_object`` delivers."""
        self.object_reads: list[ObjectRef] = []
        """Every ``read_object`` call."""
        self.watches: list[tuple[ObjectRef, str]] = []
        """Every ``watch_object`` opened: the object and the version it watched from."""
        self._changed = asyncio.Event()
        self._watch_round = 0
        self.is_synced = True
        self.pods_syncing: set[str] = set()
        """Nodes whose pod cache has not synced yet: ``pods_on`` answers None for them."""
        self.eviction_answers: dict[str, list[EvictionOutcome]] = {}

        self.evictions: list[str] = []
        self.deleted_pods: list[str] = []
        self.deleted_nodes: list[str] = []
        self.events: list[RecordedEvent] = []
        self.policy_status_patches: list[tuple[str, dict[str, Any]]] = []
        self.node_patches: list[tuple[str, dict[str, Any]]] = []
        self.registrations: list[
            tuple[str, dict[str, str], dict[str, str], tuple[NodeTaint, ...]]
        ] = []
        self.released: list[str] = []

    # Test helpers.

    def add_node(self, node: NodeView) -> None:
        self.node_views[node.name] = node

    def add_pod(self, one: PodView) -> None:
        assert one.node is not None, "a fake pod must be bound to a node"
        self.pods.setdefault(one.node, []).append(one)

    def pod_keys(self, node: str) -> list[str]:
        return sorted(p.key for p in self.pods.get(node, []))

    def event_reasons(self, node: str | None = None) -> list[str]:
        return [e.reason for e in self.events if node is None or e.node == node]

    def _remove_pod(self, target: PodView) -> bool:
        for name, listed in self.pods.items():
            kept = [p for p in listed if p.key != target.key]
            if len(kept) != len(listed):
                self.pods[name] = kept
                return True
        return False

    # ClusterReads.

    def synced(self) -> bool:
        return self.is_synced

    def nodes(self) -> list[NodeView]:
        return list(self.node_views.values())

    def node(self, name: str) -> NodeView | None:
        return self.node_views.get(name)

    def available_in_group(self, group: str) -> int:
        return sum(1 for n in self.node_views.values() if n.group == group and n.available)

    def group_nodes(self, group: str) -> tuple[NodeView, ...]:
        return tuple(n for n in self.node_views.values() if n.group == group)

    def groups(self) -> dict[str, GroupView]:
        views: dict[str, GroupView] = {}
        for name, group in self.instance_groups.items():
            max_age = group.spec.max_node_age
            views[name] = GroupView(
                name=name,
                current_revision=group.status.current_revision if group.status else None,
                max_node_age_seconds=parse_duration(max_age).total_seconds() if max_age else None,
            )
        return views

    def instance_group(self, name: str) -> InstanceGroup | None:
        return self.instance_groups.get(name)

    def policies(self) -> list[TerminationPolicy]:
        return list(self.termination_policies.values())

    def policy(self, name: str) -> TerminationPolicy | None:
        return self.termination_policies.get(name)

    def reapers(self) -> list[Reaper]:
        return list(self.reaper_objects.values())

    def watchdogs(self) -> list[Watchdog]:
        return list(self.watchdog_objects.values())

    def unusable(self) -> dict[tuple[type[Resource], str], str]:
        return dict(self.unusable_objects)

    def pods_on(self, node: str) -> list[PodView] | None:
        if node in self.pods_syncing:
            return None
        return list(self.pods.get(node, []))

    def release_pods(self, node: str) -> None:
        self.released.append(node)

    # ClusterWrites.

    async def patch_node(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        unschedulable: bool | None = None,
    ) -> bool:
        current = self.node_views.get(name)
        if current is None:
            return False
        self.node_patches.append(
            (name, {"labels": labels, "annotations": annotations, "unschedulable": unschedulable})
        )
        self.node_views[name] = current.patched(
            labels=labels, annotations=annotations, unschedulable=unschedulable
        )
        return True

    async def register_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        taints: Sequence[NodeTaint],
    ) -> bool:
        current = self.node_views.get(name)
        if current is None:
            return False
        self.registrations.append((name, dict(labels), dict(annotations), tuple(taints)))
        view = current.patched(labels=dict(labels), annotations=dict(annotations))
        added = missing_taints(((t.key, t.effect) for t in view.taints), taints)
        self.node_views[name] = dataclasses.replace(view, taints=(*view.taints, *added))
        return True

    async def evict(self, pod: PodView) -> EvictionResult:
        self.evictions.append(pod.key)
        script = self.eviction_answers.get(pod.key)
        outcome = script.pop(0) if script else EvictionOutcome.EVICTED
        if outcome in (EvictionOutcome.EVICTED, EvictionOutcome.GONE):
            self._remove_pod(pod)
        return EvictionResult(outcome, _EVICTION_MESSAGES[outcome])

    async def list_pods_now(self, node: str) -> list[PodView]:
        return self.pods_on(node) or []

    async def list_pdbs_now(self) -> list[PdbView]:
        return list(self.pdbs)

    async def read_pdb(self, namespace: str, name: str) -> PdbView | None:
        return next((p for p in self.pdbs if p.key == f"{namespace}/{name}"), None)

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """A Secret holding ``data`` (given decoded, stored base64 as the API does)."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.objects[ObjectRef("v1", "Secret", name, namespace)] = {"data": encoded}

    def put_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.objects[ObjectRef("v1", "ConfigMap", name, namespace)] = {"data": dict(data)}

    def jobs(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Jobs that exist, by (namespace, name)."""
        return {
            (ref.namespace or "", ref.name): body
            for ref, body in self.objects.items()
            if ref.kind == "Job"
        }

    def finish_job(self, namespace: str, name: str, condition: str, message: str = "") -> None:
        """The Job ends with ``condition`` (Complete or Failed); a failure's ``message``
        is its pod's termination message, as kube-controller-manager would leave it.
        Its watchers see the change."""
        if message:
            terminated = {"exitCode": 1, "message": message}
            self.objects[ObjectRef("v1", "Pod", f"{name}-pod", namespace)] = {
                "metadata": {"labels": {"batch.kubernetes.io/job-name": name}},
                "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
            }
        ref = ObjectRef("batch/v1", "Job", name, namespace)
        job = self.objects[ref]
        job["status"] = {"conditions": [{"type": condition, "status": "True"}]}
        self._object_changed(ref, "MODIFIED", job)

    def _object_changed(self, ref: ObjectRef, kind: str, body: dict[str, Any]) -> None:
        """A new resourceVersion for the object, and its watchers woken."""
        self.object_version += 1
        body.setdefault("metadata", {})["resourceVersion"] = str(self.object_version)
        self.object_changes.append(
            (self.object_version, ref, WatchEvent(kind, copy.deepcopy(body)))
        )
        self._changed.set()
        self._changed = asyncio.Event()

    def end_watches(self) -> None:
        """Every open watch ends (as the server ends one, or answers 410 Gone)."""
        self._watch_round += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def read_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        self.object_reads.append(ref)
        found = self.objects.get(ref)
        return copy.deepcopy(found) if found is not None else None

    async def watch_object(
        self, ref: ObjectRef, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncGenerator[WatchEvent, None]:
        """The object's changes after ``resource_version`` (from now when it is empty),
        until ``timeout_seconds`` pass or ``end_watches``."""
        self.watches.append((ref, resource_version))
        seen = int(resource_version) if resource_version else self.object_version
        round_ = self._watch_round
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while True:
            changed = self._changed
            for version, which, event in list(self.object_changes):
                if which == ref and version > seen:
                    seen = version
                    yield event
            remaining = deadline - asyncio.get_running_loop().time()
            if round_ != self._watch_round or remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in (label_selector or "").split(",") if part)
        return [
            body
            for ref, body in self.objects.items()
            if (ref.api_version, ref.kind) == (api_version, kind)
            and (namespace is None or ref.namespace == namespace)
            and wanted.items() <= ((body.get("metadata") or {}).get("labels") or {}).items()
        ]

    async def create_object(self, body: dict[str, Any]) -> bool:
        ref = ObjectRef.of(body)
        if ref in self.objects:
            return False
        self.objects[ref] = body
        self._object_changed(ref, "ADDED", body)
        ending = self.job_endings.get((ref.namespace or "", ref.name))
        if ref.kind == "Job" and ending is not None:
            self.finish_job(ref.namespace or "", ref.name, *ending)
        return True

    async def apply_object(self, body: dict[str, Any]) -> None:
        self.applied.append(body)
        self.objects[ObjectRef.of(body)] = body

    async def delete_object(self, ref: ObjectRef) -> bool:
        self.deleted_objects.append(ref)
        found = self.objects.pop(ref, None)
        if found is not None:
            self._object_changed(ref, "DELETED", found)
        return found is not None

    async def delete_pod(self, pod: PodView) -> None:
        self.deleted_pods.append(pod.key)
        self._remove_pod(pod)

    async def delete_node(self, name: str) -> bool:
        self.deleted_nodes.append(name)
        return self.node_views.pop(name, None) is not None

    async def force_delete_pod(self, pod: PodView) -> bool:
        self.force_deleted_pods.append(pod.key)
        return self._remove_pod(pod)

    async def list_finished_pods_now(self, phase: str) -> list[PodView]:
        return [p for p in self.finished_pods if p.phase == phase]

    async def namespace_labels_now(self) -> dict[str, dict[str, str]]:
        return dict(self.namespace_labels)

    async def record_pod_event(
        self, pod: PodView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.events.append(RecordedEvent(f"pod/{pod.key}", reason, message, warning))

    async def record_event(
        self, node: NodeView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.events.append(RecordedEvent(node.name, reason, message, warning))

    async def record_resource_event(
        self, kind: type[Resource], name: str, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Recorded on ``instancegroup/NAME``, ``reaper/NAME``, ``watchdog/NAME`` or
        ``policy/NAME``."""
        on = "policy" if kind is TerminationPolicy else kind.names.kind.lower()
        self.events.append(RecordedEvent(f"{on}/{name}", reason, message, warning))

    async def patch_status(self, kind: type[Resource], name: str, status: dict[str, Any]) -> None:
        """Record the patch, by kind; a policy's or group's is merged into the stored
        object (a missing one is ignored)."""
        if kind is Reaper:
            self.reaper_status_patches.append((name, status))
        elif kind is Watchdog:
            self.watchdog_status_patches.append((name, status))
        elif kind is TerminationPolicy:
            self._patch_policy_status(name, status)
        elif kind is InstanceGroup:
            self._patch_group_status(name, status)

    def _patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        self.policy_status_patches.append((name, status))
        current = self.termination_policies.get(name)
        if current is None:
            return
        manifest = dump_manifest(current)
        manifest["status"] = {**manifest.get("status", {}), **status}
        self.termination_policies[name] = TerminationPolicy.model_validate(manifest)

    def _patch_group_status(self, name: str, status: dict[str, Any]) -> None:
        self.group_status_patches.append((name, status))
        current = self.instance_groups.get(name)
        if current is None:
            return
        manifest = dump_manifest(current)
        manifest["status"] = {**manifest.get("status", {}), **status}
        self.instance_groups[name] = InstanceGroup.model_validate(manifest)


class FakeProvider:
    """A FAKE cloud of cells: instances appear the moment a cell is scaled up.

    ``scale`` creates instances named ``<group>-<revision>-<n>`` (n counting every
    instance ever launched, from 1). With ``join`` set (the default) each becomes a Ready
    Node in the ``FakeCluster`` at once, labelled with its group, revision, zone and
    capacity type; ``join=False`` leaves instances unjoined (a bad template), and
    ``join_ready=False`` makes them join NotReady. ``capacity_errors`` holds
    ``(zone, capacity type)`` cells that raise ``CapacityError``; ``scale_error`` and
    ``terminate_error`` make the next calls fail. ``terminate`` removes the instance and
    its Node and shrinks the cell, as the real providers do. Every call is recorded.
    """

    name = "kwok"

    def __init__(self, cluster: FakeCluster | None = None, now: datetime | None = None) -> None:
        self.cluster = cluster
        self.now = now or datetime(2026, 1, 1, tzinfo=UTC)
        self.desired: dict[CellRef, int] = {}
        self.instances: dict[CellRef, list[Instance]] = {}
        self.failures: dict[CellRef, list[LaunchFailure]] = {}
        self.launched = 0
        self.scales: list[tuple[CellRef, int]] = []
        self.terminations: list[str] = []
        self.deleted_cells: list[CellRef] = []
        self.capacity_errors: set[tuple[str, str]] = set()
        self.join = True
        self.join_ready = True
        self.scale_error: ProviderError | None = None
        self.terminate_error: ProviderError | None = None

    def adopt(self, node: NodeView) -> None:
        """Record an existing node as an instance of its cell (a fleet that predates us)."""
        cell = self._cell_of(node)
        self.instances.setdefault(cell, []).append(
            Instance(node.name, node.launched_at or node.created, node_name=node.name)
        )
        self.desired[cell] = len(self.instances[cell])

    @staticmethod
    def _cell_of(node: NodeView) -> CellRef:
        return CellRef(
            node.group or "",
            node.revision or "unknown",
            node.zone or "unknown",
            node.labels.get(CAPACITY_TYPE_LABEL, "on-demand"),
        )

    def nodes_in(self, revision: str) -> list[str]:
        return sorted(
            i.instance_id
            for c, found in self.instances.items()
            if c.revision == revision
            for i in found
        )

    async def observe(self, group: str) -> list[CellObservation]:
        return [
            CellObservation(
                cell,
                self.desired.get(cell, 0),
                tuple(self.instances.get(cell, [])),
                tuple(self.failures.get(cell, [])),
            )
            for cell in sorted(set(self.desired) | set(self.instances))
            if cell.group == group
        ]

    async def scale(self, cell: CellRef, template: Template, desired: int) -> None:
        self.scales.append((cell, desired))
        if self.scale_error is not None:
            raise self.scale_error
        have = self.instances.setdefault(cell, [])
        if desired > len(have) and (cell.zone, cell.capacity_type) in self.capacity_errors:
            self.failures.setdefault(cell, []).append(
                LaunchFailure(self.now, "InsufficientInstanceCapacity", capacity=True)
            )
            raise CapacityError(f"InsufficientInstanceCapacity in {cell.zone}")
        self.desired[cell] = desired
        while len(have) < desired:
            self.launched += 1
            name = f"{cell.group}-{cell.revision}-{self.launched}"
            have.append(Instance(name, self.now, node_name=name))
            if self.join and self.cluster is not None:
                self.cluster.add_node(
                    NodeView(
                        name=name,
                        created=self.now,
                        labels={
                            GROUP_LABEL: cell.group,
                            REVISION_LABEL: cell.revision,
                            ZONE_LABEL: cell.zone,
                            CAPACITY_TYPE_LABEL: cell.capacity_type,
                        },
                        conditions=(NodeCondition("Ready", "True", self.now),)
                        if self.join_ready
                        else (),
                        launched_at=self.now,
                    )
                )

    def _remove(self, instance_id: str) -> None:
        for cell, found in self.instances.items():
            kept = [i for i in found if i.instance_id != instance_id]
            if len(kept) != len(found):
                self.instances[cell] = kept
                self.desired[cell] = max(0, self.desired.get(cell, 0) - 1)
        if self.cluster is not None:
            self.cluster.node_views.pop(instance_id, None)

    def owns(self, node: NodeView) -> bool:
        return node.group is not None

    async def terminate(self, node: NodeView) -> None:
        if self.terminate_error is not None:
            raise self.terminate_error
        self.terminations.append(node.name)
        self._remove(node.name)

    async def terminate_instance(self, cell: CellRef, instance_id: str) -> None:
        self.terminations.append(instance_id)
        self._remove(instance_id)

    async def delete_cell(self, cell: CellRef) -> None:
        if self.instances.get(cell):
            raise ProviderError(f"cell {cell} is not empty")
        self.deleted_cells.append(cell)
        self.instances.pop(cell, None)
        self.desired.pop(cell, None)


class FakeBalancedProvider(FakeProvider):
    """A FAKE cloud with load balancers (the ``LoadBalancers`` capability), named ``aws``.

    ``registered`` maps a target (a target group ARN) to the node names it sends traffic
    to; ``draining`` to those it is draining; ``delays`` gives a target's deregistration
    delay in seconds (default 300). A deregistered node stays draining until the test
    calls ``drained`` (the fake keeps no clock). ``errors`` holds the exceptions the
    next ``deregister`` calls raise, front first. Every ``deregister`` call and every
    actual deregistration (``deregistrations``: (target, node)) is recorded.
    """

    name = "aws"

    def __init__(self, cluster: FakeCluster | None = None, now: datetime | None = None) -> None:
        super().__init__(cluster, now)
        self.registered: dict[str, set[str]] = {}
        self.draining: dict[str, set[str]] = {}
        self.delays: dict[str, float] = {}
        self.errors: list[ProviderError] = []
        self.deregister_calls: list[tuple[str, tuple[str, ...]]] = []
        self.deregistrations: list[tuple[str, str]] = []
        self.asked: list[str] = []

    def load_balancers_of(self, template: Template) -> tuple[str, ...]:
        return tuple(template.aws.target_groups or ()) if template.aws else ()

    async def deregister(self, node: NodeView, targets: Sequence[str]) -> float:
        self.deregister_calls.append((node.name, tuple(targets)))
        if self.errors:
            raise self.errors.pop(0)
        delay = 0.0
        for target in targets:
            if target not in self.registered:
                raise ProviderError(f"TargetGroupNotFound: {target}")
            if node.name in self.registered[target]:
                self.registered[target].discard(node.name)
                self.draining.setdefault(target, set()).add(node.name)
                self.deregistrations.append((target, node.name))
            if node.name in self.draining.get(target, set()):
                delay = max(delay, self.delays.get(target, 300.0))
        return delay

    async def deregistering(self, node: NodeView, targets: Sequence[str]) -> bool:
        self.asked.append(node.name)
        return any(
            node.name in self.draining.get(t, set()) or node.name in self.registered.get(t, set())
            for t in targets
        )

    def drained(self, node: str) -> None:
        """The load balancers finished draining ``node``."""
        for found in self.draining.values():
            found.discard(node)


if TYPE_CHECKING:

    def _fakes_implement_the_ports(
        clock: FakeClock,
        cluster: FakeCluster,
        provider: FakeProvider,
        balanced: FakeBalancedProvider,
    ) -> tuple[Clock, ClusterReads, ClusterWrites, Provider, LoadBalancers]:
        """Type-checked only: each fake must satisfy its port's protocol."""
        return clock, cluster, cluster, provider, balanced
