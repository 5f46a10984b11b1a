"""The controller's shared pod cache against the real API server: several nodes draining
at once read their pods through one cluster-wide pod watch (and one LIST), each sees only
its own node's pods, and a pod deleted from a draining node reaches its drain within
seconds; pod changes on nodes no drain asked about wake no drain."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio import client

from molt.cloud.kwok_nodes import kwok_node
from molt.kube.pods import PODS
from molt.kube.state import KubeClusterState
from molt.kube.transport import Json, RawApi
from tests.support.waiting import eventually

PROMPT_SECONDS = 5.0
"""A watch event takes milliseconds on loopback; anything near this is a missed event."""


class CountingRawApi(RawApi):
    """The real transport, remembering which collections it listed and watched."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.watched: list[str] = []
        self.listed: list[str] = []

    async def list_page(self, path: str, query: list[tuple[str, str]]) -> Json:
        self.listed.append(path)
        return await super().list_page(path, query)

    async def watch(
        self, path: str, query: list[tuple[str, str]], timeout_seconds: int
    ) -> AsyncIterator[Json]:
        self.watched.append(path)
        async for event in super().watch(path, query, timeout_seconds):
            yield event


def _pod(name: str, namespace: str, node: str) -> dict[str, Any]:
    """A pod bound straight to ``node`` (kwok runs it; no scheduler involved)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "shared"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "registry.invalid/none:1"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }


async def test_many_draining_nodes_share_one_pod_watch_and_see_deletions_promptly(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    suffix = uuid.uuid4().hex[:5]
    nodes = [f"shared-{suffix}-{i}" for i in range(4)]
    draining, quiet = nodes[:3], nodes[3]
    for node in nodes:
        await core.create_node(kwok_node(node))
    for node in nodes:
        for i in range(2):
            await core.create_namespaced_pod(namespace, _pod(f"{node}-{i}", namespace, node))
    raw = CountingRawApi(kube)
    woken: list[tuple[float, str]] = []
    state = KubeClusterState(
        raw, on_pod=lambda node: woken.append((time.monotonic(), node)), shared_pods=True
    )
    await state.start()
    try:
        await asyncio.wait_for(state.wait_synced(), 60)

        async def all_seen() -> bool:
            found = [state.pods_on(node) for node in draining]
            return all(pods is not None and len(pods) == 2 for pods in found)

        await eventually(all_seen, within=30, what="each draining node's two pods")
        for node in draining:
            assert {p.name for p in state.pods_on(node) or []} == {f"{node}-0", f"{node}-1"}
        assert raw.watched.count(PODS) == 1, raw.watched
        assert raw.listed.count(PODS) == 1, raw.listed

        # A deletion on a draining node wakes its drain, and its read no longer has the pod.
        gone = f"{draining[1]}-0"
        woken.clear()
        asked = time.monotonic()
        await core.delete_namespaced_pod(gone, namespace, grace_period_seconds=0)

        async def drain_saw_it() -> bool:
            names = {p.name for p in state.pods_on(draining[1]) or []}
            return gone not in names and any(node == draining[1] for _, node in woken)

        await eventually(drain_saw_it, within=PROMPT_SECONDS, interval=0.05, what=gone)
        first = min(at for at, node in woken if node == draining[1])
        assert first - asked < PROMPT_SECONDS

        # A pod change on a node no drain asked about is cached but wakes nothing; nor does
        # one on a node whose drain released it.
        state.release_pods(draining[2])
        for node in (quiet, draining[2]):
            await core.delete_namespaced_pod(f"{node}-0", namespace, grace_period_seconds=0)
        assert state.shared_pods is not None

        async def cached_both() -> bool:
            cache = state.shared_pods.cache if state.shared_pods else None
            return cache is not None and all(
                f"{node}-0" not in {p.name for p in cache.by_index(node)}
                for node in (quiet, draining[2])
            )

        await eventually(cached_both, within=PROMPT_SECONDS, interval=0.05, what="deletions")
        assert not [node for _, node in woken if node in (quiet, draining[2])], woken
        assert raw.watched.count(PODS) == 1, raw.watched
    finally:
        await state.stop()
        for node in nodes:
            await core.delete_node(node)
