"""The controller's pods, cached through one cluster-wide watch, indexed by node.

One informer for every draining node, as client-go's shared informers do it, instead of a
watch per draining node: a rotation of 200 nodes at once costs the API server one pod
watch, not 200, and a drain that starts finds its node's pods already cached. Only bound
pods are cached (``spec.nodeName!=``: a pending pod is on no node to drain), each
projected to what a drain reads (``cached_pod_view``), and the LIST that fills the cache
is taken page by page, so 20,000 pods cost tens of MB.

Change events reach the controller only for the nodes a drain has asked about
(``pods_on``) and not yet released: the rest of the cluster's pod churn is cached
silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from molt.kube.projections import cached_pod_view
from molt.kube.transport import RawApi
from molt.kube.watch import Reflector
from molt.policy.snapshot import PodView

PODS = "/api/v1/pods"
BOUND = "spec.nodeName!="
"""Every pod the scheduler has placed (a pod's node never changes once it is set)."""


class SharedPodCache:
    """Every bound pod of the cluster, by node; the drains' ``pods_on`` reads it."""

    def __init__(self, raw: RawApi, on_pod: Callable[[str], None] | None = None) -> None:
        self._notify = on_pod
        self.wanted: set[str] = set()
        """Nodes whose drain asked for their pods and has not released them."""
        self.cache: Reflector[PodView] = Reflector(
            raw,
            PODS,
            cached_pod_view,
            name="pods",
            field_selector=BOUND,
            index=lambda pod: pod.node,
            on_change=self._changed,
        )

    def _changed(self, _key: str, old: PodView | None, new: PodView | None) -> None:
        if self._notify is None:
            return
        for node in {pod.node for pod in (old, new) if pod is not None and pod.node}:
            if node in self.wanted:
                self._notify(node)

    async def run(self) -> None:
        """Fill and follow the cache until cancelled; once it has synced, wake every drain
        that asked while it was filling (an empty node's LIST brings them no change)."""
        announce = asyncio.create_task(self._announce_sync())
        try:
            await self.cache.run()
        finally:
            announce.cancel()

    async def _announce_sync(self) -> None:
        await self.cache.synced.wait()
        if self._notify is not None:
            for node in sorted(self.wanted):
                self._notify(node)

    def pods_on(self, node: str) -> list[PodView] | None:
        """The node's pods (O(pods on the node)), or None until the cache has synced; from
        now on a change to one of them is reported."""
        self.wanted.add(node)
        if not self.cache.synced.is_set():
            return None
        return list(self.cache.by_index(node))

    def release_pods(self, node: str) -> None:
        """Stop reporting the node's pod changes (its pods stay cached with the rest)."""
        self.wanted.discard(node)

    def __len__(self) -> int:
        return len(self.cache.store)
