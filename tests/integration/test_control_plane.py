"""The sandbox is a real control plane: the scheduler places pods on kwok nodes, the
disruption controller computes PDB budgets that the Eviction API enforces, and the
ReplicaSet controller replaces deleted pods."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.builders import deployment, kwok_node, pdb
from tests.support.waiting import eventually


async def _make_nodes(kube: client.ApiClient, prefix: str, count: int) -> list[str]:
    core = client.CoreV1Api(kube)
    names = [f"{prefix}-node-{i}" for i in range(count)]
    for name in names:
        await core.create_node(kwok_node(name, labels={"test-group": prefix}))
    return names


async def _all_ready(kube: client.ApiClient, names: list[str]) -> bool:
    core = client.CoreV1Api(kube)
    for name in names:
        node = await core.read_node(name)
        conditions = node.status.conditions or []
        if not any(c.type == "Ready" and c.status == "True" for c in conditions):
            return False
    return True


async def _ready_pods(kube: client.ApiClient, namespace: str, app: str) -> list[Any]:
    pods = await client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"app={app}")
    return [
        p
        for p in pods.items
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


async def _deployment_ready(
    kube: client.ApiClient, namespace: str, name: str, replicas: int
) -> list[Any]:
    async def probe() -> list[Any]:
        pods = await _ready_pods(kube, namespace, name)
        return pods if len(pods) == replicas else []

    return await eventually(probe, within=90, what=f"{replicas} ready pods of {name}")


@pytest.fixture
async def three_nodes(kube: client.ApiClient, namespace: str) -> Any:
    names = await _make_nodes(kube, namespace, 3)
    await eventually(lambda: _all_ready(kube, names), what="kwok to make the nodes Ready")
    yield names
    core = client.CoreV1Api(kube)
    for name in names:
        await core.delete_node(name)


async def test_scheduler_places_six_replicas_on_three_kwok_nodes_and_they_become_ready(
    kube: client.ApiClient, namespace: str, three_nodes: list[str]
) -> None:
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace,
        deployment(
            "web", namespace, 6, node_selector={"test-group": namespace}, spread_over_nodes=True
        ),
    )

    pods = await _deployment_ready(kube, namespace, "web", 6)

    placement = Counter(p.spec.node_name for p in pods)
    # The hard spread constraint is only met if kube-scheduler really placed them: 2 each.
    assert placement == dict.fromkeys(three_nodes, 2)
    state = await apps.read_namespaced_deployment_status("web", namespace)
    assert state.status.ready_replicas == 6


async def test_eviction_api_honours_pdb_computed_by_the_disruption_controller(
    kube: client.ApiClient, namespace: str, three_nodes: list[str]
) -> None:
    core = client.CoreV1Api(kube)
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment("db", namespace, 6, node_selector={"test-group": namespace})
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("db", namespace, "db", min_available=5)
    )
    pods = await _deployment_ready(kube, namespace, "db", 6)

    async def one_disruption_allowed() -> bool:
        budget = await client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget_status(
            "db", namespace
        )
        status = budget.status
        return bool(status and status.current_healthy == 6 and status.disruptions_allowed == 1)

    await eventually(one_disruption_allowed, what="the PDB to allow exactly one disruption")
    # Cordon first, as a drain does, so the replacement pod stays Pending and the budget
    # cannot recover between the two evictions.
    for name in three_nodes:
        await core.patch_node(name, {"spec": {"unschedulable": True}})

    def eviction(pod: Any) -> client.V1Eviction:
        return client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=namespace),
            delete_options=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=pod.metadata.uid)
            ),
        )

    first, second = pods[0], pods[1]
    await core.create_namespaced_pod_eviction(first.metadata.name, namespace, eviction(first))
    with pytest.raises(ApiException) as refused:
        await core.create_namespaced_pod_eviction(second.metadata.name, namespace, eviction(second))

    assert refused.value.status == 429
    assert "disruption budget" in refused.value.body
    remaining = {p.metadata.name for p in await _ready_pods(kube, namespace, "db")}
    assert first.metadata.name not in remaining
    assert second.metadata.name in remaining


async def test_controller_manager_recreates_a_deleted_replicaset_pod(
    kube: client.ApiClient, namespace: str, three_nodes: list[str]
) -> None:
    core = client.CoreV1Api(kube)
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment("api", namespace, 6, node_selector={"test-group": namespace})
    )
    pods = await _deployment_ready(kube, namespace, "api", 6)
    victim = pods[0]
    assert victim.metadata.owner_references[0].kind == "ReplicaSet"

    await core.delete_namespaced_pod(victim.metadata.name, namespace)

    async def replaced() -> list[Any]:
        ready = await _ready_pods(kube, namespace, "api")
        uids = {p.metadata.uid for p in ready}
        return ready if len(ready) == 6 and victim.metadata.uid not in uids else []

    await eventually(replaced, within=60, what="the ReplicaSet to replace the deleted pod")
