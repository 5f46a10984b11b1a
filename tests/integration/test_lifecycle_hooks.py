"""Lifecycle hooks against the real control plane and a real webhook on loopback: each
hook runs at its moment (group actions before policy actions), and a webhook that takes
30 s holds no other node, even with a single reconcile worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from kubernetes_asyncio import client

from tests.support.builders import deployment
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    node_gone,
)
from tests.support.waiting import eventually


@dataclass
class HookCall:
    """One webhook call and what the node looked like when it arrived."""

    action: str
    hook: str
    node: str
    cordoned: bool
    state: str | None
    pods_left: int
    started: float
    finished: float | None = None


async def test_hooks_run_at_their_moment_and_a_slow_one_holds_no_other_node(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    calls: list[HookCall] = []
    core = client.CoreV1Api(kube)
    slow_node: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        node = await core.read_node(body["node"])
        pods = await core.list_namespaced_pod(
            namespace, field_selector=f"spec.nodeName={body['node']}"
        )
        call = HookCall(
            action=body["action"],
            hook=body["event"],
            node=body["node"],
            cordoned=bool(node.spec.unschedulable),
            state=(node.metadata.labels or {}).get("molt.dev/state"),
            pods_left=sum(1 for p in pods.items if p.metadata.deletion_timestamp is None),
            started=time.monotonic(),
        )
        calls.append(call)
        if body["node"] in slow_node and body["event"] == "preDrain" and body["action"] == "notify":
            await asyncio.sleep(30)
        call.finished = time.monotonic()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        group = f"hook-{uuid.uuid4().hex[:5]}"
        slow, fast = await install_old_fleet(
            kube,
            group,
            nodes=2,
            age=[timedelta(hours=61), timedelta(hours=60)],
            surge=2,
            lifecycle={"preDrain": [{"name": "group-notify", "http": {"url": url}}]},
        )
        slow_node.append(slow)
        await eventually(lambda: has_ready_nodes(kube, group, 2), what="two Ready nodes")
        for index, name in enumerate((slow, fast)):  # pods on each node, to be drained
            await client.AppsV1Api(kube).create_namespaced_deployment(
                namespace,
                deployment(
                    f"web-{index}", namespace, 2, node_selector={"kubernetes.io/hostname": name}
                ),
            )
            await eventually(
                lambda i=index: has_ready_replicas(kube, namespace, 2, f"web-{i}"),  # type: ignore[misc]
                what=f"web-{index}",
            )
        hooks = {
            "preDrain": [{"name": "notify", "http": {"url": url}, "timeout": "60s"}],
            "preTerminate": [{"name": "deregister", "http": {"url": url}}],
        }
        await install_policy(
            kube,
            f"{group}-48h",
            group,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 2}],
            lifecycle=hooks,
        )
        molt = run_molt("--workers", "1")
        await eventually(
            lambda: node_gone(kube, fast), within=90, interval=0.5, what="fast node gone"
        )
        fast_gone_at = time.monotonic()
        await eventually(lambda: node_gone(kube, slow), within=120, interval=0.5, what="slow gone")
        assert molt.alive(), molt.log()
    finally:
        await runner.cleanup()

    for name in (slow, fast):
        mine = [c for c in calls if c.node == name]
        assert [(c.hook, c.action) for c in mine] == [
            ("preDrain", "group-notify"),
            ("preDrain", "notify"),
            ("preTerminate", "deregister"),
        ], mine
        for call in mine[:2]:  # after the replacement and the cordon, before any eviction
            assert call.cordoned, call
            assert call.state == "selected", call
            assert call.pods_left > 0, call
        # Drained, not yet terminating: the label turns once the preTerminate actions end.
        assert mine[2].state == "draining", mine[2]
        assert mine[2].pods_left == 0, mine[2]
    slow_hook = next(c for c in calls if c.node == slow and c.action == "notify")
    assert slow_hook.finished is not None
    assert fast_gone_at < slow_hook.finished, "the slow webhook held the other node"
