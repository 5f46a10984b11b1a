"""The ports the reconcilers run through: reads from caches, writes, a clock.

Production binds them to the watch caches and the API server (``molt.kube``); the
simulator binds them to its in-memory cluster. Reconcilers see only these protocols.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from molt.api.instancegroup import InstanceGroup
from molt.api.reaper import Reaper
from molt.api.resource import Resource
from molt.api.terminationpolicy import TerminationPolicy
from molt.api.watchdog import Watchdog
from molt.policy.pdbs import PdbView
from molt.policy.snapshot import GroupView, NodeTaint, NodeView, PodView


class NotLeaderError(Exception):
    """This replica does not hold a valid lease; it must not act."""


class Clock(Protocol):
    """Wall time for ages and deadlines; monotonic time for backoffs."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class EvictionOutcome(StrEnum):
    """How the Eviction API answered, in the terms a drain acts on."""

    EVICTED = "evicted"
    GONE = "gone"
    PDB_BLOCKED = "pdb-blocked"
    MULTIPLE_PDBS = "multiple-pdbs"
    NAMESPACE_TERMINATING = "namespace-terminating"
    FAILED = "failed"


@dataclass(frozen=True)
class EvictionResult:
    outcome: EvictionOutcome
    message: str = ""


@dataclass(frozen=True)
class ObjectRef:
    """Any API object by kind and name: a Job, a Secret, a probe Pod, a manifest's object."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None
    """None for a cluster-scoped object."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        """The object a manifest describes; ValueError when it lacks its kind or name."""
        meta = body.get("metadata") or {}
        api_version, kind, name = body.get("apiVersion"), body.get("kind"), meta.get("name")
        if not (isinstance(api_version, str) and isinstance(kind, str) and isinstance(name, str)):
            raise ValueError("an object needs apiVersion, kind and metadata.name")
        namespace = meta.get("namespace")
        return cls(api_version, kind, name, namespace if isinstance(namespace, str) else None)

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind.lower()} {where}"


@dataclass(frozen=True)
class WatchEvent:
    """One change of a watched object, as the API server's watch reports it."""

    type: str
    """``ADDED``, ``MODIFIED`` or ``DELETED``."""
    object: dict[str, Any]
    """The object as of the change (for ``DELETED``, its last state)."""


class ClusterReads(Protocol):
    """Cached reads; never a network call."""

    def synced(self) -> bool: ...

    def nodes(self) -> list[NodeView]: ...

    def node(self, name: str) -> NodeView | None: ...

    def group_nodes(self, group: str) -> Sequence[NodeView]:
        """The nodes labelled as members of instance group ``group``.

        The same object comes back until one of them changes, so a caller may keep what
        it derived from the members for as long as ``group_nodes`` returns that object.
        """
        ...

    def groups(self) -> dict[str, GroupView]: ...

    def available_in_group(self, group: str) -> int:
        """How many of ``group``'s nodes are ``available`` (Ready, not past the drain gate).

        Kept as the cache changes, so the drain gate costs the same for any group size.
        """
        ...

    def instance_group(self, name: str) -> InstanceGroup | None: ...

    def policies(self) -> list[TerminationPolicy]: ...

    def policy(self, name: str) -> TerminationPolicy | None: ...

    def reapers(self) -> list[Reaper]:
        """Every Reaper (none: nothing is reaped)."""
        ...

    def watchdogs(self) -> list[Watchdog]:
        """Every Watchdog (none: nothing is checked and no policy is paused)."""
        ...

    def unusable(self) -> dict[tuple[type[Resource], str], str]:
        """Molt's objects the API server holds but Molt cannot read (its schema let
        through what only Molt can check, such as a cron expression), by kind and name,
        with what is wrong: left out of every other read."""
        ...

    def pods_on(self, node: str) -> list[PodView] | None:
        """The node's pods, or None until its pod cache has synced (it starts on demand)."""
        ...

    def release_pods(self, node: str) -> None:
        """Stop caching the node's pods."""
        ...


class ClusterWrites(Protocol):
    """Mutations; each is fenced by leadership and idempotent where the API allows."""

    async def patch_node(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        unschedulable: bool | None = None,
    ) -> bool:
        """Merge-patch a node; False when the node no longer exists."""
        ...

    async def register_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        taints: Sequence[NodeTaint],
    ) -> bool:
        """Add labels, annotations and taints to a node that just joined.

        Taints are merged with the node's own by (key, effect), against its latest
        version, never duplicated; False when the node no longer exists.
        """
        ...

    async def evict(self, pod: PodView) -> EvictionResult: ...

    async def list_pods_now(self, node: str) -> list[PodView]:
        """The node's pods read straight from the API server (a quorum LIST, not a cache),
        right before an irreversible step: the cache may lag a pod that just landed."""
        ...

    async def list_pdbs_now(self) -> list[PdbView]:
        """Every PodDisruptionBudget, read straight from the API server: asked only when a
        node is about to be selected, to catch a PDB that can never allow its drain."""
        ...

    async def read_pdb(self, namespace: str, name: str) -> PdbView | None:
        """One PodDisruptionBudget, read straight from the API server (None: gone)."""
        ...

    async def delete_pod(self, pod: PodView) -> None: ...

    async def delete_node(self, name: str) -> bool:
        """Delete a node; False when it was already gone."""
        ...

    async def force_delete_pod(self, pod: PodView) -> bool:
        """Delete a pod with ``gracePeriodSeconds: 0`` under a uid precondition (a pod of
        the same name created since is never touched); False when it was gone."""
        ...

    async def list_finished_pods_now(self, phase: str) -> list[PodView]:
        """Every pod in ``phase`` (Succeeded or Failed), cluster-wide, read straight from
        the API server in pages (a field-selected LIST, not a watch)."""
        ...

    async def namespace_labels_now(self) -> dict[str, dict[str, str]]:
        """Every namespace's labels, read straight from the API server (for a Reaper's
        namespace selector)."""
        ...

    async def record_pod_event(
        self, pod: PodView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """An Event on a pod, in its namespace."""
        ...

    async def record_event(
        self, node: NodeView, reason: str, message: str, *, warning: bool = False
    ) -> None: ...

    async def record_resource_event(
        self, kind: type[Resource], name: str, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """An Event on one of Molt's objects (an InstanceGroup's rollback, a Reaper's pass,
        a Watchdog firing, a policy's halt)."""
        ...

    async def patch_status(self, kind: type[Resource], name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource of one of Molt's objects (any kind: an
        InstanceGroup, a TerminationPolicy, a Reaper, a Watchdog); a gone one is fine."""
        ...

    async def read_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        """One object, read straight from the API server (never cached, never logged:
        it may be a Secret); None when it is absent."""
        ...

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of one kind (in one namespace, or cluster-wide for None), read straight
        from the API server in pages."""
        ...

    def watch_object(
        self, ref: ObjectRef, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncGenerator[WatchEvent, None]:
        """The changes of one object after ``resource_version`` (a WATCH of its collection
        narrowed to its name), until the watch ends: after ``timeout_seconds``, when the
        server closes it, when ``resource_version`` is too old (410 Gone) or the stream
        breaks. An ended watch is no answer: the caller reads the object again and
        watches from the version it read (client-go's ``UntilWithSync``). A watch the
        server refuses (a 403) raises."""
        ...

    async def create_object(self, body: dict[str, Any]) -> bool:
        """Create an object; False when one of that name already exists (a restarted
        controller finds the one it created)."""
        ...

    async def apply_object(self, body: dict[str, Any]) -> None:
        """Server-side apply, as field manager ``molt`` (conflicts forced): creates the
        object or brings Molt's fields of it to ``body``."""
        ...

    async def delete_object(self, ref: ObjectRef) -> bool:
        """Delete an object, its dependents in the background; False when it was gone."""
        ...


class HealthProbe(Protocol):
    """The I/O half of the control-plane health gate."""

    async def failures(self, urls: Sequence[str]) -> list[str]:
        """The checks failing now, in words: the API server's ``/readyz``, then each URL
        (each must answer 2xx within a short timeout); empty when all pass."""
        ...
