"""A real 410: with the API server's watch cache off, a watch resumed from a revision etcd
has compacted away expires (an ERROR event with code 410 from the real API server, not a
scripted one); the node cache relists and goes on: a node deleted and another created
afterwards reach it, and it ends equal to a fresh LIST.

A sandbox of its own, since the shared one keeps its watch cache (as production does)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from molt.kube.transport import RawApi
from molt.kube.watch import Reflector
from molt.sandbox.binaries import ensure_binaries
from molt.sandbox.cluster import Sandbox
from tests.support.builders import kwok_node
from tests.support.waiting import eventually

LABEL = "molt.dev/expiry-test"
UNRUN = {"kwok.x-k8s.io/node": "unrun"}
"""Nodes no kwok runs: nothing updates them behind the test's back."""


def etcd(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One call to etcd's JSON gateway."""
    request = urllib.request.Request(
        f"{url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        found: dict[str, Any] = json.loads(answer.read())
        return found


@pytest.fixture
async def uncached(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, client.ApiClient]]:
    box = Sandbox(tmp_path / "uncached", apiserver_flags=("--watch-cache=false",))
    await asyncio.to_thread(box.up, lambda _: None, ensure_binaries())
    try:
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(box.kubeconfig), client_configuration=configuration
        )
        async with client.ApiClient(configuration) as api:
            yield box, api
    finally:
        await asyncio.to_thread(box.down, lambda _: None)


async def test_a_watch_from_a_compacted_revision_expires_and_the_cache_relists(
    uncached: tuple[Sandbox, client.ApiClient],
) -> None:
    box, api = uncached
    core = client.CoreV1Api(api)
    changes: list[tuple[str, bool]] = []
    nodes = Reflector(
        RawApi(api),
        "/api/v1/nodes",
        lambda obj: obj["metadata"]["name"],
        name="expiry",
        label_selector=f"{LABEL}=yes",
        watch_timeout=(2, 2),  # the server ends each watch after 2 s: it resumes often
        on_change=lambda key, old, new: changes.append((key, new is not None)),
    )
    task = asyncio.create_task(nodes.run())
    try:
        await core.create_node(kwok_node("first", labels={LABEL: "yes"}, annotations=UNRUN))
        await eventually(lambda: _has(nodes, {"first"}), what="the first node cached")
        await asyncio.sleep(3)  # the controller-manager's first touches of a new Node
        seen_at = nodes.resource_version
        # Other objects move etcd's revision on; nothing the cache selects does (no kwok
        # runs these nodes), so its resourceVersion stays behind. Compact up to now.
        for step in range(5):
            await core.patch_namespaced_config_map(
                "kube-root-ca.crt", "default", {"metadata": {"labels": {"step": str(step)}}}
            )
        revision = int(etcd(box.etcd_url, "/v3/kv/range", {"key": "Lw=="})["header"]["revision"])
        assert revision > int(seen_at)
        etcd(box.etcd_url, "/v3/kv/compaction", {"revision": revision, "physical": True})
        # The open watch ends within 2 s; the next one starts from the compacted revision.
        await eventually(lambda: _relisted(nodes), within=30, what="a relist after 410 Gone")
        assert nodes.resource_version != seen_at
        await core.delete_node("first")
        await core.create_node(kwok_node("second", labels={LABEL: "yes"}, annotations=UNRUN))
        await eventually(lambda: _has(nodes, {"second"}), within=30, what="the cache correct")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    listed = await core.list_node(label_selector=f"{LABEL}=yes")
    assert set(nodes.store) == {n.metadata.name for n in listed.items}, "same as a fresh LIST"
    assert ("first", False) in changes, "the deletion reached the cache's handler"
    assert ("second", True) in changes


async def _has(nodes: Reflector[str], names: set[str]) -> bool:
    return nodes.synced.is_set() and set(nodes.store) == names


async def _relisted(nodes: Reflector[str]) -> bool:
    return nodes.relists >= 1
