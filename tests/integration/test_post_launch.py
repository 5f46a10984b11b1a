"""Post-launch manifests in the sandbox: a stand-in CRD shaped like Calico's HostEndpoint
(a fake of Calico's API: the CRD only, nothing acts on it), a group whose every node gets
one naming its IP while it lives and none after it goes, across a full rotation and a
``kill -9`` of Molt in the middle."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    has_ready_nodes,
    install_old_fleet,
    install_policy,
    node_gone,
    ready_nodes,
)
from tests.support.waiting import eventually

CALICO = "crd.projectcalico.org"
HOST_ENDPOINT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"hostendpoints.{CALICO}"},
    "spec": {
        "group": CALICO,
        "scope": "Cluster",
        "names": {"kind": "HostEndpoint", "plural": "hostendpoints", "singular": "hostendpoint"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "node": {"type": "string"},
                                    "expectedIPs": {"type": "array", "items": {"type": "string"}},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}
HOST_ENDPOINT = {
    "apiVersion": f"{CALICO}/v1",
    "kind": "HostEndpoint",
    "metadata": {"name": "{{ .Node.Name }}"},
    "spec": {"node": "{{ .Node.Name }}", "expectedIPs": ["{{ .Node.InternalIP }}"]},
}


@pytest.fixture
async def host_endpoint_crd(kube: client.ApiClient) -> AsyncIterator[None]:
    extensions = client.ApiextensionsV1Api(kube)
    try:
        await extensions.create_custom_resource_definition(HOST_ENDPOINT_CRD)
    except client.ApiException as error:
        if error.status != 409:
            raise

    async def served() -> bool:
        try:
            await client.CustomObjectsApi(kube).list_cluster_custom_object(
                CALICO, "v1", "hostendpoints"
            )
        except client.ApiException:
            return False
        return True

    await eventually(served, what="the HostEndpoint CRD served")
    yield
    await client.CustomObjectsApi(kube).delete_collection_cluster_custom_object(
        CALICO, "v1", "hostendpoints"
    )


async def host_endpoints(kube: client.ApiClient, group: str) -> dict[str, dict[str, Any]]:
    found = await client.CustomObjectsApi(kube).list_cluster_custom_object(
        CALICO, "v1", "hostendpoints", label_selector=f"molt.dev/instance-group={group}"
    )
    return {item["metadata"]["name"]: item for item in found["items"]}


async def node_ips(kube: client.ApiClient, group: str) -> dict[str, str]:
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return {
        n.metadata.name: next(a.address for a in n.status.addresses if a.type == "InternalIP")
        for n in nodes.items
        if n.status.addresses
    }


async def one_per_node(kube: client.ApiClient, group: str) -> bool:
    """Exactly the group's nodes have a HostEndpoint, each naming the node's IP."""
    ips = await node_ips(kube, group)
    found = await host_endpoints(kube, group)
    return set(found) == set(ips) and all(
        found[name]["spec"] == {"node": name, "expectedIPs": [ip]} for name, ip in ips.items()
    )


async def test_every_node_has_its_host_endpoint_while_it_lives_across_a_rotation_and_a_kill(
    kube: client.ApiClient,
    host_endpoint_crd: None,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"hep-{uuid.uuid4().hex[:5]}"
    old = await install_old_fleet(
        kube,
        group,
        nodes=3,
        age=timedelta(hours=60),
        lifecycle={"postLaunch": [{"name": "host-endpoint", "manifest": HOST_ENDPOINT}]},
    )
    await eventually(lambda: has_ready_nodes(kube, group, 3), what="three Ready nodes")
    first = run_molt(name="first")
    await eventually(
        lambda: one_per_node(kube, group), within=60, what="a HostEndpoint for every node"
    )
    owner = (await host_endpoints(kube, group))[old[0]]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Node", old[0])

    await install_policy(
        kube, f"{group}-48h", group, rules={"maxAge": "48h"}, budgets=[{"maxInFlight": 1}]
    )
    await eventually(lambda: node_gone(kube, old[0]), within=180, interval=0.5, what="one gone")
    first.kill(signal.SIGKILL)
    # With no controller running, the next node goes by hand: its HostEndpoint is left to
    # garbage collection (owner reference) and to the next controller's sweep.
    await client.CoreV1Api(kube).delete_node(old[1])
    second = run_molt(name="second")

    async def rotated() -> bool:
        ready = await ready_nodes(kube, group)
        return len(ready) == 3 and not set(ready) & set(old)

    await eventually(rotated, within=300, interval=1, what="every node replaced")
    await eventually(
        lambda: one_per_node(kube, group), within=60, what="a HostEndpoint for every new node"
    )
    await asyncio.sleep(2)  # nothing of the old nodes comes back
    found = await host_endpoints(kube, group)
    assert not set(found) & set(old), found
    assert second.alive(), second.log()
