"""``molt run`` against the real control plane: every node past its max age is replaced,
one at a time, after its pre-terminate webhook, without a PodDisruptionBudget ever
being broken."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from aiohttp import web
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from tests.support.builders import deployment, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.kube_fleet import (
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    ready_nodes,
)
from tests.support.waiting import eventually


async def test_every_node_past_max_age_is_replaced_one_at_a_time_within_the_pdb(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"rot-{uuid.uuid4().hex[:5]}"
    old = await install_old_fleet(kube, group, nodes=6, age=timedelta(hours=60))
    await eventually(
        lambda: has_ready_nodes(kube, group, 6), what="kwok to mark the six nodes Ready"
    )
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace,
        deployment("web", namespace, 12, node_selector={"molt.dev/instance-group": group}),
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    hooked: list[str] = []
    hook_url, hook_runner = await _webhook(hooked)
    watch = FleetWatch()
    await watch.start(kube, namespace, "web", 12, group)
    try:
        await eventually(lambda: has_ready_replicas(kube, namespace, 12), what="12 ready replicas")
        await install_policy(
            kube,
            f"{group}-48h",
            group,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 1}],
            drain={"timeout": "10m"},
            lifecycle={
                "preTerminate": [{"name": "notify", "http": {"url": hook_url}, "timeout": "5s"}]
            },
        )
        molt = run_molt()

        async def rotated() -> bool:
            ready = await ready_nodes(kube, group)
            return len(ready) == 6 and not set(ready) & set(old)

        await eventually(rotated, within=240, interval=1, what="every old node replaced")
        await eventually(lambda: has_ready_replicas(kube, namespace, 12), what="12 ready again")
        assert molt.alive(), molt.log()
    finally:
        await watch.stop()
        await hook_runner.cleanup()

    assert watch.min_ready is not None
    assert watch.min_ready >= 11, f"ready replicas fell to {watch.min_ready}"
    assert watch.max_in_pipeline == 1, f"{watch.max_in_pipeline} nodes in flight at once"
    assert set(old) <= watch.ever_in_pipeline
    assert not watch.cordoned_without_reason
    # The pre-termination webhook was called once for every node, before it went.
    assert sorted(hooked) == sorted(old)

    # The policy's status catches up on the next selection pass (within a second or two).
    async def status_settled() -> dict[str, int] | None:
        policy = await client.CustomObjectsApi(kube).get_cluster_custom_object_status(
            GROUP, VERSION, "terminationpolicies", f"{group}-48h"
        )
        status = policy.get("status") or {}
        return status if status.get("inFlight") == 0 else None

    status = await eventually(status_settled, within=15, what="inFlight back to 0")
    assert status["completed"] == 6


async def _webhook(received: list[str]) -> tuple[str, web.AppRunner]:
    """A pre-termination webhook on loopback that records the nodes it is told about."""

    async def handle(request: web.Request) -> web.Response:
        received.append((await request.json())["node"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/pre-stop", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}/pre-stop", runner
