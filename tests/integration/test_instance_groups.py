"""InstanceGroups in the sandbox, end to end through ``molt run`` and the kwok provider:
cells spread over zones, a template that never becomes Ready rolled back by itself, and a
zone out of capacity routed around and given its share back after the cool-down."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.policy.cells import template_revision
from tests.conftest import RunningSandbox
from tests.support.controller import MoltProcess
from tests.support.groups import (
    ZONES,
    create_group,
    faults,
    group_events,
    group_status,
    ready_by,
    set_template,
)
from tests.support.kube_fleet import KWOK_TEMPLATE
from tests.support.waiting import eventually


async def test_a_group_is_launched_spread_over_its_zones_and_reports_its_cells(
    kube: client.ApiClient,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"ig-{uuid.uuid4().hex[:5]}"
    await create_group(kube, group, replicas=6)
    run_molt()

    async def spread() -> bool:
        return await ready_by(kube, group, "topology.kubernetes.io/zone") == Counter(
            {zone: 2 for zone in ZONES}
        )

    await eventually(spread, within=60, what="2 Ready nodes in each of 3 zones")

    async def reported() -> dict[str, Any] | None:
        status = await group_status(kube, group)
        return status if status.get("state") == "Ready" else None

    status = await eventually(reported, within=30, what="a Ready group status")
    revision = template_revision(Template.model_validate(KWOK_TEMPLATE))
    assert status["currentRevision"] == revision
    assert sorted((c["zone"], c["desired"], c["ready"]) for c in status["cells"]) == [
        (zone, 2, 2) for zone in ZONES
    ]
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    for node in nodes.items:
        labels = node.metadata.labels
        assert labels["molt.dev/revision"] == revision
        assert labels["molt.dev/capacity-type"] == "on-demand"
    # Launch to Ready (kwok's boot delay, 1 s, and its Ready stage): p50 and p90 of six.
    host_init = status["hostInit"]
    assert host_init["samples"] == 6
    assert 1 <= host_init["p50Seconds"] <= host_init["p90Seconds"] <= 30
    wide = sandbox.kubectl("get", "ig", group, "-o", "wide")
    header, row = wide.stdout.splitlines()[:2]
    assert "INIT-P50" in header.split()
    assert row.split()[header.split().index("INIT-P50")] == str(host_init["p50Seconds"])


async def test_kubectl_scale_sizes_a_group_and_molt_follows_it(
    kube: client.ApiClient,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"sc-{uuid.uuid4().hex[:5]}"
    await create_group(kube, group, replicas=2, zones=ZONES[:2])
    run_molt()

    async def ready_nodes(count: int) -> bool:
        return sum((await ready_by(kube, group, "topology.kubernetes.io/zone")).values()) == count

    await eventually(lambda: ready_nodes(2), within=60, what="2 Ready nodes")
    scaled = sandbox.kubectl("scale", f"ig/{group}", "--replicas=4")
    assert scaled.returncode == 0, scaled.stderr
    await eventually(lambda: ready_nodes(4), within=60, what="4 Ready nodes after scaling up")
    scale = sandbox.kubectl("get", "--raw", f"/apis/{GROUP}/{VERSION}/instancegroups/{group}/scale")
    assert scale.returncode == 0, scale.stderr
    answer = json.loads(scale.stdout)
    assert answer["spec"]["replicas"] == 4
    assert answer["status"]["selector"] == f"molt.dev/instance-group={group}"

    # Outside minSize..maxSize the API server refuses, in words a person understands.
    refused = sandbox.kubectl("scale", f"ig/{group}", "--replicas=13")
    assert refused.returncode != 0
    assert "replicas must lie between minSize and maxSize" in refused.stderr

    assert sandbox.kubectl("scale", f"ig/{group}", "--replicas=1").returncode == 0
    await eventually(lambda: ready_nodes(1), within=90, what="1 Ready node after scaling down")


async def test_a_template_whose_nodes_never_become_ready_is_rolled_back(
    kube: client.ApiClient, empty_cluster: None, run_molt: Callable[..., MoltProcess]
) -> None:
    group = f"rb-{uuid.uuid4().hex[:5]}"
    await create_group(kube, group, replicas=3, zones=["zone-a"])
    good = template_revision(Template.model_validate(KWOK_TEMPLATE))
    run_molt()

    async def three_good() -> bool:
        return await ready_by(kube, group, "molt.dev/revision") == Counter({good: 3})

    await eventually(three_good, within=60, what="3 Ready nodes at the first revision")

    bad_template = {**KWOK_TEMPLATE, "kwok": {"bootDelay": "1s", "neverReady": True}}
    bad = await set_template(kube, group, bad_template)

    async def rolled_back() -> dict[str, Any] | None:
        status = await group_status(kube, group)
        degraded = [c for c in status.get("conditions", []) if c["type"] == "Degraded"]
        if degraded and degraded[0]["status"] == "True":
            return status
        return None

    status = await eventually(rolled_back, within=120, interval=1, what="a Degraded group")
    assert status["currentRevision"] == good
    [degraded] = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert degraded["reason"] == "RolledBack"
    assert f"revision {bad} is degraded" in degraded["message"]
    [bad_entry] = [r for r in status["revisions"] if r["name"] == bad]
    assert bad_entry["state"] == "Degraded"
    assert bad_entry["launchFailures"] >= 2
    events = await group_events(kube, group)
    assert any(
        reason == "RevisionDegraded" and f"rolling back to revision {good}" in message
        for reason, message in events
    ), events

    async def bad_scaled_down() -> bool:
        nodes = await client.CoreV1Api(kube).list_node(
            label_selector=f"molt.dev/instance-group={group},molt.dev/revision={bad}"
        )
        return not nodes.items

    await eventually(bad_scaled_down, within=30, what="no node of the bad revision")
    assert await ready_by(kube, group, "molt.dev/revision") == Counter({good: 3})

    # A merge patch keeps fields it does not name: unset neverReady explicitly.
    fixed = await set_template(
        kube,
        group,
        {
            **KWOK_TEMPLATE,
            "instanceTypes": ["m5.xlarge"],
            "kwok": {"bootDelay": "1s", "neverReady": False},
        },
    )

    async def rolled_forward() -> bool:
        status = await group_status(kube, group)
        return (
            status.get("currentRevision") == fixed
            and status.get("state") == "Ready"
            and await ready_by(kube, group, "molt.dev/revision") == Counter({fixed: 3})
        )

    await eventually(rolled_forward, within=120, interval=1, what="the fixed template rolled out")


async def test_a_zone_out_of_capacity_has_its_share_moved_and_back_after_the_cooldown(
    kube: client.ApiClient, empty_cluster: None, run_molt: Callable[..., MoltProcess]
) -> None:
    group = f"cap-{uuid.uuid4().hex[:5]}"
    await faults(kube, {"capacityErrors": "zone-b/*"})
    try:
        await create_group(kube, group, replicas=6)
        run_molt()

        async def routed() -> bool:
            return await ready_by(kube, group, "topology.kubernetes.io/zone") == Counter(
                {"zone-a": 3, "zone-c": 3}
            )

        await eventually(routed, within=60, what="zone-b's share in zone-a and zone-c")
        events = await group_events(kube, group)
        assert any(reason == "CellUnavailable" and "zone-b" in msg for reason, msg in events)
        status = await group_status(kube, group)
        [zone_b] = [c for c in status["cells"] if c["zone"] == "zone-b"]
        assert zone_b["available"] is False
        assert zone_b["unavailableUntil"]

        await faults(kube, None)

        async def back() -> bool:
            return await ready_by(kube, group, "topology.kubernetes.io/zone") == Counter(
                {zone: 2 for zone in ZONES}
            )

        await eventually(back, within=120, interval=1, what="zone-b given its share back")
    finally:
        await faults(kube, None)
