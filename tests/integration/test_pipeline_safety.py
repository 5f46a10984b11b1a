"""What the pipeline must never force, and what it must only report: do-not-disrupt pods
hold their node until its deadline, pods under two PDBs are reported rather than forced,
``--dry-run`` changes nothing, and a node with a malformed launch time is skipped."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.policy.age import parse_rfc3339
from tests.support.builders import deployment, pdb
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    has_ready_nodes,
    install_old_fleet,
    install_policy,
    node_annotation,
    node_events,
    node_gone,
)
from tests.support.waiting import eventually


async def _pods_on(kube: client.ApiClient, namespace: str, node: str) -> list[client.V1Pod]:
    pods = await client.CoreV1Api(kube).list_namespaced_pod(
        namespace, field_selector=f"spec.nodeName={node}"
    )
    return [p for p in pods.items if p.metadata.deletion_timestamp is None]


async def test_do_not_disrupt_holds_until_the_deadline_and_two_pdbs_are_reported_not_forced(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"safe-{uuid.uuid4().hex[:5]}"
    # maxAge 1h, drain lead 1m: nodes 59m10s old are selected now, deadline ~50 s away.
    # maxSurge 2: each node gets its replacement at once, so both reach their drain.
    held, doubled = await install_old_fleet(
        kube, group, nodes=2, age=timedelta(minutes=59, seconds=10), surge=2
    )
    await eventually(lambda: has_ready_nodes(kube, group, 2), what="two Ready nodes")
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace,
        deployment(
            "precious",
            namespace,
            1,
            node_selector={"kubernetes.io/hostname": held},
            pod_annotations={"molt.dev/do-not-disrupt": "true"},
        ),
    )
    await apps.create_namespaced_deployment(
        namespace,
        deployment("shared", namespace, 2, node_selector={"kubernetes.io/hostname": doubled}),
    )
    policy_api = client.PolicyV1Api(kube)
    for name in ("shared-a", "shared-b"):
        await policy_api.create_namespaced_pod_disruption_budget(
            namespace, pdb(name, namespace, "shared", max_unavailable=1)
        )
    await eventually(lambda: _running(kube, namespace, held, 1), what="the precious pod")
    await eventually(lambda: _running(kube, namespace, doubled, 2), what="the shared pods")
    await install_policy(
        kube,
        group,
        group,
        rules={"maxAge": "1h"},
        budgets=[{"maxInFlight": 2}],
        drain={"timeout": "1m", "deletePodsAfterDeadline": False},
    )
    run_molt()

    blocked_held = await eventually(
        lambda: node_annotation(kube, held, "molt.dev/blocked"), within=30, what="held reported"
    )
    assert "do-not-disrupt" in blocked_held
    assert "precious" in blocked_held
    blocked_doubled = await eventually(
        lambda: node_annotation(kube, doubled, "molt.dev/blocked"), within=30, what="two PDBs"
    )
    assert "more than one PodDisruptionBudget" in blocked_doubled
    assert ("DrainBlocked", blocked_doubled) in await node_events(kube, doubled)
    deadline_text = await node_annotation(kube, held, "molt.dev/deadline")
    assert deadline_text is not None
    deadline = parse_rfc3339(deadline_text).timestamp()
    assert deadline > time.time(), "the test needs the deadline still ahead"

    # Before the deadline the precious pod stays; after it, the node goes.
    while time.time() < deadline - 2:
        assert len(await _pods_on(kube, namespace, held)) == 1, "evicted before its deadline"
        await asyncio.sleep(1)
    await eventually(lambda: node_gone(kube, held), within=60, what="the held node to go")

    # Past its deadline too, the node under two PDBs keeps its pods: reported, never forced.
    await asyncio.sleep(max(0.0, deadline - time.time()) + 5)
    assert len(await _pods_on(kube, namespace, doubled)) == 2
    assert not await node_gone(kube, doubled)
    reasons = [reason for reason, _ in await node_events(kube, doubled)]
    assert "PodsDeleted" not in reasons
    assert "InstanceTerminated" not in reasons


async def test_dry_run_changes_nothing_and_a_malformed_launch_time_is_reported(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"dry-{uuid.uuid4().hex[:5]}"
    old = await install_old_fleet(kube, group, nodes=3, age=timedelta(hours=60))
    [garbled] = await install_old_fleet(
        kube,
        f"{group}-x",
        nodes=1,
        age=timedelta(hours=60),
        annotations={"molt.dev/launched-at": "last tuesday"},
    )
    await eventually(lambda: has_ready_nodes(kube, group, 3), what="three Ready nodes")
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment("web", namespace, 3, node_selector={"molt.dev/instance-group": group})
    )
    await eventually(lambda: _all_pods_ready(kube, namespace, 3), what="three ready pods")
    await install_policy(kube, f"{group}-48h", group, rules={"maxAge": "48h"})
    await install_policy(kube, f"{group}-x-48h", f"{group}-x", rules={"maxAge": "48h"})
    before = await eventually(lambda: _settled(kube, namespace), what="writes to settle")

    dry = run_molt("--dry-run", name="dry")
    await eventually(lambda: dry.logged("dry_run.would"), within=30, what="dry-run decisions")
    await asyncio.sleep(3)  # a few more selection passes (resync is 2 s in tests)
    assert dry.stop() == 0
    log = dry.log()
    # The default budget (one node or 10 %) admits one of the three: the dry run says so.
    assert f"patch node {old[0]}" in log
    assert f"patch node {old[1]}" not in log
    assert await _versions(kube, namespace) == before, "dry run changed an object"

    real = run_molt(name="real")
    events = await eventually(
        lambda: _reasons(kube, garbled), within=30, what="an Event on the garbled node"
    )
    assert "InvalidMetadata" in events
    message = next(m for r, m in await node_events(kube, garbled) if r == "InvalidMetadata")
    assert "last tuesday" in message
    assert await node_annotation(kube, garbled, "molt.dev/policy") is None
    assert real.alive()


async def _running(kube: client.ApiClient, namespace: str, node: str, count: int) -> bool:
    pods = await _pods_on(kube, namespace, node)
    return len(pods) == count and all(p.status.phase == "Running" for p in pods)


async def _all_pods_ready(kube: client.ApiClient, namespace: str, count: int) -> bool:
    pods = await client.CoreV1Api(kube).list_namespaced_pod(namespace)
    return sum(1 for p in pods.items if p.status.phase == "Running") >= count


async def _reasons(kube: client.ApiClient, node: str) -> list[str]:
    return [reason for reason, _ in await node_events(kube, node)]


async def _versions(kube: client.ApiClient, namespace: str) -> dict[str, str]:
    """resourceVersion of every object the controller could touch."""
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    found: dict[str, str] = {}
    for node in (await core.list_node()).items:
        found[f"node/{node.metadata.name}"] = node.metadata.resource_version
    for pod in (await core.list_namespaced_pod(namespace)).items:
        found[f"pod/{pod.metadata.name}"] = pod.metadata.resource_version
    # Events: Molt's own. The controller-manager keeps recording its own node events
    # (e.g. RemovingNode for an earlier test's nodes) on a schedule of its own.
    for event in (await core.list_namespaced_event("default")).items:
        if event.source and event.source.component == "molt":
            found[f"event/{event.metadata.name}"] = event.metadata.resource_version
    for plural in ("terminationpolicies", "instancegroups"):
        for item in (await custom.list_cluster_custom_object(GROUP, VERSION, plural))["items"]:
            found[f"{plural}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return found


async def _settled(kube: client.ApiClient, namespace: str) -> dict[str, str]:
    """Versions once they have held still for two seconds (kwok and the
    controller-manager finish their own writes to new objects first)."""
    first = await _versions(kube, namespace)
    await asyncio.sleep(2)
    return first if await _versions(kube, namespace) == first else {}
