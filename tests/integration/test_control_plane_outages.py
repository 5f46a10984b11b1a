"""The control plane goes away mid-drain and Molt keeps its promises.

kube-apiserver stopped for 30 s, or etcd stopped for 30 s (the API server up but unable
to answer), while a node drains under a PDB: Molt rides it out without crashing, acts on
nothing it could not read, and finishes the rotation once the component is back.

kube-controller-manager stopped while a node drains: no ReplicaSet replaces an evicted
pod and the disruption controller stops recounting the PDB. The API server lowers the
PDB's ``disruptionsAllowed`` itself on each eviction it grants, and nothing raises it
again, so the status goes stale in the safe direction: every later eviction is refused
(quoting a healthy count that is no longer true). Molt evicts no more than the PDB
allowed, reports the drain as blocked (``molt.dev/blocked``, a DrainBlocked Event, the
policy's Blocked condition) and finishes once the controller manager is back. The report
comes after ``drain.blockedAfter`` of refusals (5 minutes by default, 5 s here): that
wait, not a missing report, is why an earlier version of this test saw none in 60 s.

After each outage, and again at the end, every watch cache Molt holds is compared with a
fresh LIST (keys and resourceVersions, through ``molt run --debug-port``'s
``/debug/caches``): a watch that resumed past a missed event would show there.

Watches (not polls) follow the pods and Molt's node states, so a second node in flight,
a cordon without a reason or a pod still running when its node went is seen even if it
lasted a moment; with the controller manager down, so is any dip below the PDB. (With
the API server away, nodes and pods blink NotReady afterwards whatever Molt does, so pod
readiness is not judged there.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.conftest import RunningSandbox
from tests.support.builders import deployment, pdb
from tests.support.caches import caches_agree, debug_port
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.kube_fleet import (
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    node_events,
    ready_nodes,
)
from tests.support.streams import RELISTS, PodNodeStreams
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

DOWN_SECONDS = 30.0
REPLICAS = 8
CONTROLLER_MANAGER = "kube-controller-manager"
RECONNECT_WITHIN = 60.0
"""A reflector's reconnect backoff reaches 16-30 s during a 30 s outage."""


async def _draining(kube: client.ApiClient, group: str) -> list[str]:
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group},molt.dev/state=draining"
    )
    return [n.metadata.name for n in nodes.items]


async def _rotated(kube: client.ApiClient, group: str, old: list[str]) -> bool:
    ready = await ready_nodes(kube, group)
    return len(ready) == len(old) and not set(ready) & set(old)


async def _blocked(kube: client.ApiClient, group: str) -> tuple[str, str] | None:
    """(node, its molt.dev/blocked report) for the first reported node of the group."""
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    for node in nodes.items:
        message = (node.metadata.annotations or {}).get("molt.dev/blocked")
        if message:
            return node.metadata.name, str(message)
    return None


async def _blocked_condition(kube: client.ApiClient, policy: str) -> str | None:
    found: dict[str, Any] = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        "molt.dev", "v1alpha1", "terminationpolicies", policy
    )
    for condition in (found.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Blocked" and condition["status"] == "True":
            return str(condition["message"])
    return None


async def _controller_manager_down_until_reported(
    kube: client.ApiClient, sandbox: RunningSandbox, molt: MoltProcess, group: str
) -> str:
    """Stop the controller manager, wait for the drain's blocked report, start it again;
    the report."""
    await asyncio.to_thread(sandbox.sandbox.stop, CONTROLLER_MANAGER, lambda _: None)
    try:
        node, message = await eventually(
            lambda: _blocked(kube, group), within=60, interval=0.5, what="a blocked report"
        )
        assert "refused by PodDisruptionBudget web" in message, message
        condition = await eventually(
            lambda: _blocked_condition(kube, group), within=20, what="the Blocked condition"
        )
        assert node in condition, condition
        events = [m for r, m in await node_events(kube, node) if r == "DrainBlocked"]
        assert events, f"no DrainBlocked Event on {node}"
        assert molt.alive(), molt.log()
        return message
    finally:
        await asyncio.to_thread(sandbox.sandbox.start, CONTROLLER_MANAGER, lambda _: None)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd", CONTROLLER_MANAGER])
async def test_a_control_plane_component_down_mid_drain_breaks_no_promise(
    component: str,
    kube: client.ApiClient,
    namespace: str,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"cp{component[5:9]}-{uuid.uuid4().hex[:5]}"
    old = await install_old_fleet(kube, group, nodes=3, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, 3), what="three Ready nodes")
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace,
        deployment("web", namespace, REPLICAS, node_selector={"molt.dev/instance-group": group}),
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, REPLICAS), what="web ready")
    watch = FleetWatch()
    await watch.start(kube, namespace, "web", REPLICAS, group)
    streams = PodNodeStreams()
    await streams.start(kube)
    report = ""
    try:
        await install_policy(
            kube,
            group,
            group,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 1}],
            drain={"timeout": "1h", "blockedAfter": "5s"},
        )
        molt = run_molt("--debug-port=0")
        port = await debug_port(molt)
        await eventually(
            lambda: _draining(kube, group), within=60, interval=0.05, what="a draining node"
        )
        if component == CONTROLLER_MANAGER:
            report = await _controller_manager_down_until_reported(kube, sandbox, molt, group)
        else:
            await asyncio.to_thread(
                sandbox.sandbox.restart, component, lambda _: None, DOWN_SECONDS
            )
        compared = await caches_agree(kube, port, within=RECONNECT_WITHIN)
        pod_caches = [name for name in compared if name.split("@")[0] == "pods"]
        try:
            await eventually(
                lambda: _rotated(kube, group, old), within=300, interval=1, what="rotation"
            )
        except AssertionError:
            state = sandbox.kubectl("get", "nodes,pods,pdb", "-A", "-o", "wide").stdout
            raise AssertionError(f"{state}\n{molt.log()[-4000:]}") from None
        await eventually(lambda: has_ready_replicas(kube, namespace, REPLICAS), what="web ready")
        assert molt.alive(), molt.log()
        await caches_agree(kube, port)
    finally:
        await streams.stop()
        await watch.stop()

    print(
        f"{component}: node blinks {watch.node_blinks}, relists {dict(RELISTS)}, "
        f"fewest ready pods {watch.min_ready_pods}, pod caches compared {pod_caches}, "
        f"report {report!r}"
    )
    if component == CONTROLLER_MANAGER:
        # Nothing blinks without the controller manager and no evicted pod is replaced:
        # every dip is an eviction, so one below the PDB would be Molt's (or the API
        # server's) doing.
        assert watch.node_blinks == 0
        assert watch.min_ready_pods is not None
        assert watch.min_ready_pods >= REPLICAS - 1, f"PDB breached: {watch.min_ready_pods}"
    # With no API server for 30 s, no Lease is renewed: once back, the node-lifecycle
    # controller marks nodes and their pods NotReady for tens of seconds, Molt or not, so
    # pod readiness says nothing about Molt there (the API server still refuses every
    # eviction a PDB does not allow). What Molt alone decides is asserted for all three.
    assert watch.max_in_pipeline == 1, watch.peak
    assert watch.cordoned_without_reason == set()
    assert streams.died_with_their_node() == []
