"""The control plane goes away mid-drain and Molt keeps its promises.

kube-apiserver stopped for 30 s, or etcd stopped for 30 s (the API server up but unable
to answer), while a node drains under a PDB: Molt rides it out without crashing, acts on
nothing it could not read, and finishes the rotation once the component is back.
(The controller manager stopped mid-drain, its PDB status going stale, is not tested
here: in a first try the drain's blocked report did not come within 60 s, and why is
still open.)

Watches (not polls) follow the pods and Molt's node states, so a second node in flight,
a cordon without a reason or a pod still running when its node went is seen even if it
lasted a moment. (With the API server away, nodes and pods blink NotReady afterwards
whatever Molt does, so pod readiness is not judged there.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from kubernetes_asyncio import client

from tests.conftest import RunningSandbox
from tests.support.builders import deployment, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.kube_fleet import (
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    ready_nodes,
)
from tests.support.streams import RELISTS, PodNodeStreams
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

DOWN_SECONDS = 30.0
REPLICAS = 8


async def _draining(kube: client.ApiClient, group: str) -> list[str]:
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group},molt.dev/state=draining"
    )
    return [n.metadata.name for n in nodes.items]


async def _rotated(kube: client.ApiClient, group: str, old: list[str]) -> bool:
    ready = await ready_nodes(kube, group)
    return len(ready) == len(old) and not set(ready) & set(old)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
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
    try:
        await install_policy(
            kube, group, group, rules={"maxAge": "48h"}, budgets=[{"maxInFlight": 1}]
        )
        molt = run_molt()
        await eventually(
            lambda: _draining(kube, group), within=60, interval=0.05, what="a draining node"
        )
        await asyncio.to_thread(sandbox.sandbox.restart, component, lambda _: None, DOWN_SECONDS)
        try:
            await eventually(
                lambda: _rotated(kube, group, old), within=300, interval=1, what="rotation"
            )
        except AssertionError:
            state = sandbox.kubectl("get", "nodes,pods,pdb", "-A", "-o", "wide").stdout
            raise AssertionError(f"{state}\n{molt.log()[-4000:]}") from None
        await eventually(lambda: has_ready_replicas(kube, namespace, REPLICAS), what="web ready")
        assert molt.alive(), molt.log()
    finally:
        await streams.stop()
        await watch.stop()

    print(
        f"{component}: node blinks {watch.node_blinks}, relists {dict(RELISTS)}, "
        f"fewest ready pods {watch.min_ready_pods}"
    )
    # With no API server for 30 s, no Lease is renewed: once back, the node-lifecycle
    # controller marks nodes and their pods NotReady for tens of seconds, Molt or not, so
    # pod readiness says nothing about Molt there (the API server still refuses every
    # eviction a PDB does not allow). What Molt alone decides is asserted.
    assert watch.max_in_pipeline == 1, watch.peak
    assert watch.cordoned_without_reason == set()
    assert streams.died_with_their_node() == []
