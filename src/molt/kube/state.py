"""The controller's view of the cluster, served from watch caches.

Implements the ``ClusterReads`` port: nodes, InstanceGroups, TerminationPolicies,
Reapers and Watchdogs are cached cluster-wide. Pods come either from one cluster-wide
watch of bound pods indexed by node (``shared_pods``: the controller, whose drains may
run by the hundred; see ``pods``), or, for a command that drains one node, from a watch
narrowed by ``spec.nodeName`` that starts when the drain first asks and stops when it
releases the node. Every change is reported through ``on_change`` so the controller can
enqueue work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from molt.api import GROUP, VERSION, InstanceGroup, Reaper, TerminationPolicy, Watchdog
from molt.api.resource import Resource
from molt.kube.pods import PODS, SharedPodCache
from molt.kube.projections import group_view, node_view, pod_view
from molt.kube.transport import Json, RawApi
from molt.kube.watch import Reflector
from molt.policy.snapshot import GroupView, NodeView, PodView

log = structlog.get_logger(__name__)

NODES = "/api/v1/nodes"
PDBS = "/apis/policy/v1/poddisruptionbudgets"
GROUPS = f"/apis/{GROUP}/{VERSION}/instancegroups"
POLICIES = f"/apis/{GROUP}/{VERSION}/terminationpolicies"
WATCHDOGS = f"/apis/{GROUP}/{VERSION}/watchdogs"
REAPERS = f"/apis/{GROUP}/{VERSION}/reapers"


def _group(raw: Json) -> tuple[GroupView, InstanceGroup]:
    # An invalid object raises ValidationError (a ValueError): the reflector reports it
    # once and leaves it out of the cache.
    return group_view(raw), InstanceGroup.model_validate(raw)


class KubeClusterState:
    """Watch-cached reads of the cluster (the ``ClusterReads`` port)."""

    def __init__(
        self,
        raw: RawApi,
        *,
        on_node: Callable[[str, NodeView | None, NodeView | None], None] | None = None,
        on_pod: Callable[[str], None] | None = None,
        on_policy_or_group: Callable[[], None] | None = None,
        on_reaper: Callable[[str], None] | None = None,
        on_watchdog: Callable[[str], None] | None = None,
        on_unusable: Callable[[], None] | None = None,
        shared_pods: bool = False,
    ) -> None:
        """``shared_pods``: cache every bound pod through one watch, started with the other
        caches, instead of one watch per node a drain asks about."""
        self.raw = raw
        self._on_pod = on_pod
        self.shared_pods: SharedPodCache | None = (
            SharedPodCache(raw, on_pod) if shared_pods else None
        )
        self.nodes_cache: Reflector[NodeView] = Reflector(
            raw,
            NODES,
            node_view,
            name="nodes",
            index=lambda node: node.group,
            counted=lambda node: node.available,
            on_change=(lambda key, old, new: on_node(key, old, new)) if on_node else None,
        )
        notify: Any = (lambda *_: on_policy_or_group()) if on_policy_or_group else None
        unusable: Any = (lambda _key: on_unusable()) if on_unusable else None
        self.groups_cache: Reflector[tuple[GroupView, InstanceGroup]] = Reflector(
            raw, GROUPS, _group, name="instancegroups", on_change=notify, on_skip=unusable
        )
        self.policies_cache: Reflector[TerminationPolicy] = Reflector(
            raw,
            POLICIES,
            TerminationPolicy.model_validate,
            name="terminationpolicies",
            on_change=notify,
            on_skip=unusable,
        )
        self.reapers_cache: Reflector[Reaper] = Reflector(
            raw,
            REAPERS,
            Reaper.model_validate,
            name="reapers",
            on_change=(lambda key, *_: on_reaper(key)) if on_reaper else None,
            on_skip=unusable,
        )
        self.watchdogs_cache: Reflector[Watchdog] = Reflector(
            raw,
            WATCHDOGS,
            Watchdog.model_validate,
            name="watchdogs",
            on_change=(lambda key, *_: on_watchdog(key)) if on_watchdog else None,
            on_skip=unusable,
        )
        self._pods: dict[str, tuple[Reflector[PodView], asyncio.Task[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the cluster-wide caches (they run until ``stop``)."""
        for cache in self._caches():
            self._tasks.append(asyncio.create_task(cache.run(), name=f"cache-{cache.name}"))
        if self.shared_pods is not None:
            # Not one of the core caches: nothing but a drain waits for it, and a drain
            # asking before it has synced is told to come back (``pods_on`` is None).
            self._tasks.append(asyncio.create_task(self.shared_pods.run(), name="cache-pods"))

    def _caches(self) -> tuple[Reflector[Any], ...]:
        return (*self._core(), self.reapers_cache, self.watchdogs_cache)

    def _core(self) -> tuple[Reflector[Any], ...]:
        """The caches nothing may act without. The others (Reapers, Watchdogs) only ever add work:
        until theirs syncs there is simply none, so a release whose newer CRD has not been
        applied yet still rotates its nodes instead of waiting for ever."""
        return (self.nodes_cache, self.groups_cache, self.policies_cache)

    async def wait_synced(self) -> None:
        await asyncio.gather(*(cache.synced.wait() for cache in self._core()))

    async def stop(self) -> None:
        tasks = self._tasks + [task for _, task in self._pods.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._pods.clear()

    def digest(self) -> dict[str, dict[str, Any]]:
        """Every cache's contents as names and resourceVersions (``molt.runtime.debug``
        serves it): per cache, its path and selector, whether it has synced, and
        ``namespace/name -> resourceVersion`` (and the keys of objects it could not
        project, which it leaves out). Taken in one step on the event loop, so it
        is one consistent moment of each cache."""
        caches = [*self._caches(), *(cache for cache, _ in self._pods.values())]
        if self.shared_pods is not None:
            caches.append(self.shared_pods.cache)
        return {
            cache.name: {
                "path": cache.path,
                "fieldSelector": cache.field_selector,
                "labelSelector": cache.label_selector,
                "synced": cache.synced.is_set(),
                "relists": cache.relists,
                "objects": cache.versions(),
                "skipped": sorted(cache.skipped),
            }
            for cache in caches
        }

    # The ClusterReads port.

    def synced(self) -> bool:
        return all(c.synced.is_set() for c in self._core())

    def nodes(self) -> list[NodeView]:
        return self.nodes_cache.values()

    def node(self, name: str) -> NodeView | None:
        return self.nodes_cache.get(name)

    def group_nodes(self, group: str) -> tuple[NodeView, ...]:
        return self.nodes_cache.by_index(group)

    def available_in_group(self, group: str) -> int:
        return self.nodes_cache.count(group)

    def groups(self) -> dict[str, GroupView]:
        return {view.name: view for view, _ in self.groups_cache.values()}

    def instance_group(self, name: str) -> InstanceGroup | None:
        found = self.groups_cache.get(name)
        return found[1] if found else None

    def policies(self) -> list[TerminationPolicy]:
        return self.policies_cache.values()

    def policy(self, name: str) -> TerminationPolicy | None:
        return self.policies_cache.get(name)

    def reapers(self) -> list[Reaper]:
        return self.reapers_cache.values()

    def unusable(self) -> dict[tuple[type[Resource], str], str]:
        kinds: tuple[tuple[type[Resource], Reflector[Any]], ...] = (
            (InstanceGroup, self.groups_cache),
            (TerminationPolicy, self.policies_cache),
            (Reaper, self.reapers_cache),
            (Watchdog, self.watchdogs_cache),
        )
        return {(kind, name): why for kind, cache in kinds for name, why in cache.skipped.items()}

    def watchdogs(self) -> list[Watchdog]:
        return self.watchdogs_cache.values()

    def pods_on(self, node: str) -> list[PodView] | None:
        if self.shared_pods is not None:
            return self.shared_pods.pods_on(node)
        watched = self._pods.get(node)
        if watched is None:
            notify = self._on_pod
            cache: Reflector[PodView] = Reflector(
                self.raw,
                PODS,
                pod_view,
                name=f"pods@{node}",
                field_selector=f"spec.nodeName={node}",
                on_change=(lambda *_: notify(node)) if notify else None,
            )
            task = asyncio.create_task(
                self._run_pods(cache, node, notify), name=f"cache-pods-{node}"
            )
            self._pods[node] = (cache, task)
            return None
        cache = watched[0]
        return cache.values() if cache.synced.is_set() else None

    @staticmethod
    async def _run_pods(
        cache: Reflector[PodView], node: str, notify: Callable[[str], None] | None
    ) -> None:
        """Run a node's pod cache, and say so once it has synced: an empty node's LIST
        brings no change event, and the drain waiting for it should not sleep on."""

        async def synced() -> None:
            await cache.synced.wait()
            if notify is not None:
                notify(node)

        announce = asyncio.create_task(synced())
        try:
            await cache.run()
        finally:
            announce.cancel()

    def release_pods(self, node: str) -> None:
        if self.shared_pods is not None:
            self.shared_pods.release_pods(node)
            return
        watched = self._pods.pop(node, None)
        if watched is not None:
            watched[1].cancel()
