"""``molt run`` against the real control plane under the faults a fleet sees daily:
pods that land back on a cordoned node, a kubelet that dies, a PDB that refuses for good.

Each "never" is observed through watch streams (``tests.support.streams``), not by
polling: kwok acts within milliseconds.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.policy.age import format_rfc3339
from tests.conftest import RunningSandbox
from tests.support.builders import deployment, never_scheduled, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.kube_fleet import (
    GROUP_LABEL,
    LAUNCHED_AT,
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    node_events,
    node_gone,
    ready_nodes,
)
from tests.support.streams import PodNodeStreams
from tests.support.waiting import eventually

TOLERATE_EVERYTHING = [{"operator": "Exists"}]
DEAD_FOR_20S = {"type": "Ready", "status": "Unknown", "for": "20s"}


async def _rotated(kube: client.ApiClient, group: str, old: list[str], size: int) -> bool:
    ready = await ready_nodes(kube, group)
    return len(ready) == size and not set(ready) & set(old)


async def _fleet_with_pdb_workloads(
    kube: client.ApiClient, namespace: str, group: str, apps: dict[str, list[Any] | None]
) -> list[str]:
    """Four 60-hour-old nodes and, per app, 8 pods (with the given tolerations) under a
    ``maxUnavailable: 1`` PDB."""
    old = await install_old_fleet(kube, group, nodes=4, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, 4), what="four Ready nodes")
    on_group = {"molt.dev/instance-group": group}
    for app, tolerations in apps.items():
        await client.AppsV1Api(kube).create_namespaced_deployment(
            namespace,
            deployment(app, namespace, 8, node_selector=on_group, tolerations=tolerations),
        )
        await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
            namespace, pdb(app, namespace, app, max_unavailable=1)
        )
    for app in apps:
        await eventually(lambda a=app: has_ready_replicas(kube, namespace, 8, a), what=app)
    return old


async def test_no_live_pod_dies_with_its_node_across_a_kill_and_cordon_waits_for_the_replacement(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"live-{uuid.uuid4().hex[:5]}"
    streams = PodNodeStreams()
    await streams.start(kube)
    try:
        old = await _fleet_with_pdb_workloads(kube, namespace, group, {"web": None, "api": None})
        await install_policy(
            kube, f"{group}-48h", group, rules={"maxAge": "48h"}, budgets=[{"maxInFlight": 1}]
        )
        first = run_molt(name="first")
        # kill -9 in the middle of the rotation; a second controller finishes it.
        await eventually(lambda: node_gone(kube, old[1]), within=180, interval=0.5, what="two gone")
        first.kill(signal.SIGKILL)
        second = run_molt(name="second")
        await eventually(
            lambda: _rotated(kube, group, old, 4), within=300, interval=1, what="all rotated"
        )
        assert second.alive(), second.log()
    finally:
        await streams.stop()

    assert streams.died_with_their_node() == []
    for name in old:
        trace = streams.nodes[name]
        assert trace.deleted_rv is not None, f"{name} was not deleted"
        # Cordoned only once its replacement was Ready: the four, plus one.
        assert trace.ready_in_group_at_cordon is not None
        assert trace.ready_in_group_at_cordon >= 5, (name, trace)


async def test_pods_that_tolerate_the_cordon_hold_their_node_until_the_policy_lets_them_go(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"tol-{uuid.uuid4().hex[:5]}"
    streams = PodNodeStreams()
    await streams.start(kube)
    try:
        old = await _fleet_with_pdb_workloads(
            kube, namespace, group, {"agents": TOLERATE_EVERYTHING, "web": None}
        )
        policy = f"{group}-48h"
        await install_policy(
            kube,
            policy,
            group,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 1}],
            drain={"timeout": "1h", "blockedAfter": "20s"},
        )
        run_molt()

        async def returning() -> str | None:
            found = await client.CoreV1Api(kube).read_node(old[0])
            text = (found.metadata.annotations or {}).get("molt.dev/blocked") or ""
            return text if "tolerate the cordon keep landing back" in text else None

        message = await eventually(returning, within=120, interval=1, what="a report")
        assert f"{namespace}/agents-" in message
        # Held, not terminated: the scheduler keeps placing agents on the emptiest node.
        assert not await node_gone(kube, old[0])
        assert streams.died_with_their_node() == []

        # The opt-in: such pods go down with the node, as Karpenter does.
        await client.CustomObjectsApi(kube).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "terminationpolicies",
            policy,
            {"spec": {"drain": {"cordonTolerantPods": "LeaveWithNode"}}},
            _content_type="application/merge-patch+json",
        )
        await eventually(
            lambda: _rotated(kube, group, old, 4), within=300, interval=1, what="all rotated"
        )
    finally:
        await streams.stop()

    died = streams.died_with_their_node()
    assert died, "LeaveWithNode let no pod go down with its node: the test proves nothing"
    assert all(f"{namespace}/agents-" in pod for pod in died), died  # never a web pod


async def test_a_dead_kubelet_is_replaced_within_minutes_and_the_rotation_goes_on(
    kube: client.ApiClient,
    namespace: str,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"dead-{uuid.uuid4().hex[:5]}"
    # The aged nodes are due (past maxAge less the drain lead) but not yet past their
    # deadline, so the unhealthy node goes first, as Molt orders departures.
    due = timedelta(hours=47, minutes=30)
    ages = [due, due - timedelta(minutes=5), due - timedelta(minutes=10), due]
    nodes = await install_old_fleet(kube, group, nodes=4, age=ages)
    await eventually(lambda: has_ready_nodes(kube, group, 4), what="four Ready nodes")
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace,
        deployment(
            "web",
            namespace,
            8,
            node_selector={"molt.dev/instance-group": group},
        ),
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, 8), what="8 ready replicas")
    # The kubelet that dies is one the scheduler gave pods to (its spread is soft, so
    # not every node need have some); that node is made the young one, not yet due.
    placed = await client.CoreV1Api(kube).list_namespaced_pod(namespace)
    used = {pod.spec.node_name for pod in placed.items}
    dead = next(node for node in nodes if node in used)
    aged = [node for node in nodes if node != dead][:3]
    nodes = [dead, *aged]
    young = format_rfc3339(datetime.now(UTC) - timedelta(hours=10))
    await client.CoreV1Api(kube).patch_node(
        dead, {"metadata": {"annotations": {LAUNCHED_AT: young}}}
    )
    # The kubelet dies: kwok no longer selects the node, and a kwok started afresh leaves
    # it alone, so its Lease expires and the node-lifecycle controller takes over.
    await client.CoreV1Api(kube).patch_node(
        dead, {"metadata": {"annotations": {"kwok.x-k8s.io/node": "dead"}}}
    )
    await asyncio.to_thread(sandbox.sandbox.restart, "kwok", lambda _: None)

    async def unknown() -> bool:
        found = await client.CoreV1Api(kube).read_node(dead)
        return any(c.type == "Ready" and c.status == "Unknown" for c in found.status.conditions)

    await eventually(unknown, within=120, interval=1, what="the dead node to turn Unknown")
    await asyncio.sleep(22)  # Unknown for the policy's 20 s: it and the aged nodes are due
    await install_policy(
        kube,
        f"{group}-48h",
        group,
        rules={
            "maxAge": "48h",
            "conditions": [{"type": "Ready", "status": "Unknown", "for": "20s"}],
        },
        budgets=[{"maxInFlight": 1}],
    )
    streams = PodNodeStreams()
    await streams.start(kube)
    try:
        molt = run_molt()
        await eventually(
            lambda: node_gone(kube, dead), within=300, interval=1, what="dead node gone"
        )
        assert not any(streams.nodes[n].deleted_rv for n in aged), "an aged node went first"

        async def no_pod_left_on_it() -> bool:
            pods = await client.CoreV1Api(kube).list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={dead}"
            )
            return not pods.items

        await eventually(no_pod_left_on_it, within=120, interval=2, what="pod GC")
        try:
            await eventually(
                lambda: _rotated(kube, group, nodes, 4), within=240, interval=1, what="rotation"
            )
        except AssertionError:
            dump = sandbox.kubectl("get", "nodes,pods,pdb", "-A", "-o", "wide").stdout
            notes = sandbox.kubectl(
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.metadata.annotations}{'\\n'}{end}",
            ).stdout
            events = sandbox.kubectl("get", "events", "-A").stdout[-4000:]
            raise AssertionError(f"{dump}\n{notes}\n{events}") from None
        assert molt.alive(), molt.log()
    finally:
        await streams.stop()

    reasons = [reason for reason, _ in await node_events(kube, dead)]
    assert "NodeUnreachable" in reasons
    assert "NodeDeleted" in reasons
    order = sorted(nodes, key=lambda n: streams.nodes[n].deleted_rv or 0)
    assert order[0] == dead


async def test_a_pdb_that_refuses_for_good_is_named_on_the_node_and_counted_as_blocked(
    kube: client.ApiClient,
    namespace: str,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"blk-{uuid.uuid4().hex[:5]}"
    [stuck] = await install_old_fleet(kube, group, nodes=1, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, 1), what="a Ready node")
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace, deployment("db", namespace, 2, node_selector={"kubernetes.io/hostname": stuck})
    )
    # A third pod the PDB selects can never be scheduled: the PDB expects 3, has 2 healthy
    # and needs 2, so it refuses every eviction, though at full size it would allow one
    # (so this is a blocked drain, not a deadlock caught before cordoning).
    await apps.create_namespaced_deployment(namespace, never_scheduled("db-extra", namespace, "db"))
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("db-all", namespace, "db", min_available=2)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, 2, "db"), what="2 db pods")
    policy = f"{group}-48h"
    await install_policy(
        kube,
        policy,
        group,
        rules={"maxAge": "48h"},
        budgets=[{"maxInFlight": 1}],
        drain={"timeout": "1h", "blockedAfter": "15s"},
    )
    run_molt()

    async def blocked() -> str | None:
        found = await client.CoreV1Api(kube).read_node(stuck)
        return (found.metadata.annotations or {}).get("molt.dev/blocked")

    message = await eventually(blocked, within=90, interval=1, what="molt.dev/blocked")
    assert "PodDisruptionBudget db-all (allowed disruptions: 0)" in message
    assert f"{namespace}/db-" in message

    async def counted() -> bool:
        found = await client.CustomObjectsApi(kube).get_cluster_custom_object_status(
            GROUP, VERSION, "terminationpolicies", policy
        )
        return (found.get("status") or {}).get("blocked") == 1

    await eventually(counted, within=30, what="the policy to count it")
    listing = sandbox.kubectl("get", "tp", policy, "--no-headers")
    assert listing.stdout.split()[4] == "1", listing.stdout  # SELECTED IN-FLIGHT COMPLETED BLOCKED
    await asyncio.sleep(20)  # a few more refusals (each pod is retried within 5-20 s)
    events = [m for r, m in await node_events(kube, stuck) if r == "DrainBlocked"]
    assert len(events) == 1, events


async def test_an_eviction_admitted_but_never_carried_out_does_not_stall_the_drain(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    """A client that dies mid-eviction can leave the API server having charged the PDB for
    a pod (``status.disruptedPods``) without deleting it; every eviction under the PDB is
    then refused until the entry expires two minutes later. An eviction whose UID
    precondition fails leaves exactly that state, deterministically."""
    group = f"adm-{uuid.uuid4().hex[:5]}"
    [old] = await install_old_fleet(kube, group, nodes=1, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, 1), what="a Ready node")
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment("web", namespace, 3, node_selector={GROUP_LABEL: group})
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, 3), what="3 ready replicas")
    policies = client.PolicyV1Api(kube)

    async def allows_one() -> bool:
        found = await policies.read_namespaced_pod_disruption_budget("web", namespace)
        return bool(found.status and found.status.disruptions_allowed == 1)

    await eventually(allows_one, what="the PDB to allow one disruption")
    [*_, charged] = (await client.CoreV1Api(kube).list_namespaced_pod(namespace)).items
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": charged.metadata.name, "namespace": namespace},
        "deleteOptions": {"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}},
    }
    with pytest.raises(client.ApiException) as refused:
        await client.CoreV1Api(kube).create_namespaced_pod_eviction(
            charged.metadata.name, namespace, eviction
        )
    assert refused.value.status == 409, refused.value
    budget = await policies.read_namespaced_pod_disruption_budget("web", namespace)
    charged_at = budget.status.disrupted_pods[charged.metadata.name]
    assert budget.status.disruptions_allowed == 0

    watch = FleetWatch()
    await watch.start(kube, namespace, "web", 3, group)
    try:
        molt = run_molt()
        await eventually(lambda: node_gone(kube, old), within=150, interval=0.5, what="drained")
        gone_at = datetime.now(UTC)
    finally:
        await watch.stop()
    # Gone before the API server would have dropped its charge: Molt did not wait it out.
    # (kwok has the pod Ready within the second it was created, so the charge often bears
    # the pod's creation second: its generated name still makes the charge its own.)
    assert gone_at < charged_at + timedelta(minutes=2), (
        f"drained at {gone_at}, charged at {charged_at}, pod created at "
        f"{charged.metadata.creation_timestamp}; Molt's log:\n{molt.log()[-4000:]}"
    )
    assert "eviction.completed" in molt.log()
    assert charged.metadata.name in molt.log()
    assert watch.min_ready is not None
    assert watch.min_ready >= 2, "the PDB's one disruption was exceeded"
