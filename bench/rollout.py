"""Rollout speed: a 30-node group rolled to a new template under RollingReplace with
maxSurge 3, against its lower bound.

Starts a sandbox and ``molt run``, lets the group come up at its first template, then
edits the template and times until all 30 Ready nodes carry the new revision and no old
node is left. No pod runs on the nodes, so a drain is a cordon and an eviction-free
pass; the lower bound is ceil(30 / 3) waves, each at least one launch (the template's
boot delay) long.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from bench.rollout_timeline import NodeTimeline, breakdown, following, waves
from bench.support import controller, create_molt_object, sandbox
from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.kube.reader import connect
from molt.policy.cells import template_revision

NODES = 30
SURGE = 3
BOOT_SECONDS = 3
FIRST: dict[str, Any] = {"instanceTypes": ["m5.large"], "kwok": {"bootDelay": f"{BOOT_SECONDS}s"}}
SECOND: dict[str, Any] = {**FIRST, "instanceTypes": ["m5.xlarge"]}


async def _ready_revisions(core: client.CoreV1Api) -> tuple[dict[str, int], int]:
    nodes = await core.list_node(label_selector="molt.dev/instance-group=roll")
    ready: dict[str, int] = {}
    for node in nodes.items:
        if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
            revision = node.metadata.labels.get("molt.dev/revision", "")
            ready[revision] = ready.get(revision, 0) + 1
    return ready, len(nodes.items)


async def _wait_for(core: client.CoreV1Api, revision: str, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        ready, total = await _ready_revisions(core)
        if ready.get(revision) == NODES and total == NODES:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the group did not reach {NODES} Ready nodes at {revision}")


async def _measure(kubeconfig: Path) -> tuple[float, float, list[str]]:
    async with await connect(str(kubeconfig)) as api:
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        await create_molt_object(
            custom,
            "InstanceGroup",
            "roll",
            {
                "provider": "kwok",
                "minSize": NODES,
                "maxSize": NODES + SURGE,
                "zones": ["zone-a", "zone-b", "zone-c"],
                "template": FIRST,
                "strategy": {"type": "RollingReplace", "maxSurge": SURGE},
            },
        )
        old = template_revision(Template.model_validate(FIRST))
        new = template_revision(Template.model_validate(SECOND))
        up = await _wait_for(core, old, 300)
        timeline: NodeTimeline
        async with following(core, "roll") as timeline:
            await asyncio.sleep(1.0)  # the watch has listed the group's nodes
            start = time.monotonic()
            await custom.patch_cluster_custom_object(
                GROUP,
                VERSION,
                "instancegroups",
                "roll",
                {"spec": {"template": SECOND}},
                _content_type="application/merge-patch+json",
            )
            rolled = await _wait_for(core, new, 900)
        return up, rolled, breakdown(waves(timeline, old, new, SURGE, start))


def run() -> None:
    with sandbox() as box, controller(box.kubeconfig, "--metrics-port=0"):
        up, rolled, lines = asyncio.run(_measure(box.kubeconfig))
    waves = math.ceil(NODES / SURGE)
    bound = waves * BOOT_SECONDS
    print(
        f"rollout of {NODES} nodes, RollingReplace maxSurge {SURGE}, boot {BOOT_SECONDS}s: "
        f"{rolled:.1f}s vs lower bound {bound}s ({waves} waves x {BOOT_SECONDS}s launch, "
        f"drains empty) = {rolled / bound:.2f}x (goal <= 1.15x); first bring-up of {NODES} nodes "
        f"{up:.1f}s"
    )
    for line in lines:
        print(line)


if __name__ == "__main__":
    run()
