"""``molt run`` rotates a three-node control-plane group one node at a time with a bake in
between, and a health check failing during a bake halts the rotation until the gate has
passed again for a whole bakeTime."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.kube.transport import RawApi
from molt.policy.cells import template_revision
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    KWOK_TEMPLATE,
    has_ready_nodes,
    install_old_fleet,
    install_policy,
)
from tests.support.streams import follow
from tests.support.waiting import eventually

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
BAKE = 15.0
SLACK = 0.5
"""Watch events reach the test a little after they happen; a deletion seen late can make
the gap to the next selection look this much shorter than it was."""


@dataclass
class ControlPlaneStream:
    """Follows control-plane Nodes: when (monotonic, as seen) each entered Molt's pipeline
    and was deleted, and the most in the pipeline at once."""

    selected_at: dict[str, float] = field(default_factory=dict)
    deleted_at: dict[str, float] = field(default_factory=dict)
    in_pipeline: set[str] = field(default_factory=set)
    max_in_pipeline: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, kube: client.ApiClient) -> None:
        listed = asyncio.Event()
        query = [("labelSelector", CONTROL_PLANE)]
        raw = RawApi(kube)
        self.tasks = [asyncio.create_task(follow(raw, "/api/v1/nodes", query, self._node, listed))]
        await listed.wait()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _node(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        now = time.monotonic()
        if kind == "DELETED":
            self.deleted_at.setdefault(name, now)
            self.in_pipeline.discard(name)
            return
        if "molt.dev/state" in (obj["metadata"].get("labels") or {}):
            self.selected_at.setdefault(name, now)
            self.in_pipeline.add(name)
        else:
            self.in_pipeline.discard(name)
        self.max_in_pipeline = max(self.max_in_pipeline, len(self.in_pipeline))


class HealthEndpoint:
    """A loopback health URL the test flips between 200 and 500."""

    def __init__(self) -> None:
        self.status = 200
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def healthz(_: web.Request) -> web.Response:
            return web.Response(status=self.status, text="ok" if self.status == 200 else "down")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/healthz"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _policy(kube: client.ApiClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        GROUP, VERSION, "terminationpolicies", name
    )
    return found


def _condition(policy: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (policy.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


async def _policy_events(kube: client.ApiClient, name: str) -> list[tuple[str, str]]:
    events = await client.CoreV1Api(kube).list_namespaced_event(
        "default",
        field_selector=f"involvedObject.kind=TerminationPolicy,involvedObject.name={name}",
    )
    return [(e.reason, e.message) for e in events.items]


async def test_control_plane_rotates_one_at_a_time_with_a_bake_and_halts_on_a_failing_gate(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"cp-{uuid.uuid4().hex[:5]}"
    template = {**KWOK_TEMPLATE, "labels": {CONTROL_PLANE: ""}}
    old = await install_old_fleet(
        kube,
        group,
        nodes=3,
        age=timedelta(hours=60),
        labels={CONTROL_PLANE: ""},
        template=template,
        revision=template_revision(Template.model_validate(template)),
    )
    await eventually(lambda: has_ready_nodes(kube, group, 3), what="three Ready nodes")
    health = HealthEndpoint()
    await health.start()
    stream = ControlPlaneStream()
    await stream.start(kube)
    policy = f"{group}-cp"
    try:
        await install_policy(
            kube,
            policy,
            group,
            includeControlPlane=True,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 3}],
            drain={"timeout": "10m"},
            controlPlane={"bakeTime": f"{int(BAKE)}s", "healthChecks": [health.url]},
        )
        molt = run_molt()

        def gone(count: int) -> list[str]:
            done = sorted((stream.deleted_at[n], n) for n in old if n in stream.deleted_at)
            return [n for _, n in done] if len(done) >= count else []

        first, second = (
            await eventually(lambda: _ready(gone(2)), within=120, what="two old nodes gone")
        )[:2]
        # The second bake starts now: its gate fails.
        health.status = 500
        failed_at = time.monotonic()
        assert stream.selected_at[second] - stream.deleted_at[first] >= BAKE - SLACK

        async def halted() -> dict[str, Any]:
            found = _condition(await _policy(kube, policy), "Halted")
            return found if found and found["status"] == "True" else {}

        condition = await eventually(halted, within=BAKE, interval=0.5, what="Halted=True")
        assert condition["reason"] == "HealthGateFailed"
        assert health.url in condition["message"]
        assert "answered 500" in condition["message"]
        # Past the end of the bake the halt, not the bake, holds the last old node.
        await asyncio.sleep(max(0.0, failed_at + BAKE + 5 - time.monotonic()))
        third = next(n for n in old if n not in (first, second))
        assert third not in stream.selected_at, "a node was selected while halted"
        halts = [e for e in await _policy_events(kube, policy) if e[0] == "ControlPlaneHalted"]
        assert len(halts) == 1, halts
        assert health.url in halts[0][1]

        health.status = 200
        recovered_at = time.monotonic()
        await eventually(
            lambda: _ready(third in stream.deleted_at), within=120, what="the last old node gone"
        )
        # The halt ends only once the gate has passed for a whole bakeTime.
        assert stream.selected_at[third] - recovered_at >= BAKE - SLACK
        resumed = _condition(await _policy(kube, policy), "Halted")
        assert resumed is not None
        assert resumed["status"] == "False"
        assert molt.alive(), molt.log()
    finally:
        await stream.stop()
        await health.stop()

    assert stream.max_in_pipeline == 1, f"{stream.max_in_pipeline} control-plane nodes at once"
    assert set(old) <= set(stream.selected_at)


async def _ready(value: Any) -> Any:
    return value
