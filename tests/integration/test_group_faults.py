"""InstanceGroup health under faults that are not the template's, in the sandbox: a zone
that goes down during a template change rests and gives its share to the other zones,
and the rotation finishes once it is back, with nothing rolled back; every node of a
group going NotReady at once (kwok down) is counted against nothing, and the next
template change rolls out. (A template that fails in every cell is still rolled back:
``test_instance_groups.test_a_template_whose_nodes_never_become_ready_is_rolled_back``.)

Each "never" is observed through watch streams (``tests.support.streams.GroupStreams``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client

from molt.api.labels import KWOK_NODE_ANNOTATION
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
from tests.support.kube_fleet import GROUP_LABEL, KWOK_REVISION, KWOK_TEMPLATE
from tests.support.streams import GroupStreams
from tests.support.waiting import eventually

ZONE = "topology.kubernetes.io/zone"
REVISION = "molt.dev/revision"
HEALTH = {
    "readyTimeout": "10s",
    "notReadyFor": "20s",
    "failureThreshold": "50%",
    "window": "10m",
    "capacityCooldown": "20s",
}
NEXT_TEMPLATE = {**KWOK_TEMPLATE, "instanceTypes": ["m5.xlarge"]}
KWOK_DOWN_FOR = 80.0
"""Past the node-monitor grace period (40 s) by more than ``notReadyFor``: every node's
Lease expires and the node-lifecycle controller marks them all Unknown, long enough for
the group's health to judge them."""


async def _group_nodes(kube: client.ApiClient, group: str) -> list[client.V1Node]:
    found = await client.CoreV1Api(kube).list_node(label_selector=f"{GROUP_LABEL}={group}")
    return list(found.items)


async def _spread_at(kube: client.ApiClient, group: str, revision: str, want: Counter[str]) -> bool:
    """Exactly ``want`` nodes per zone, all Ready and at ``revision``."""
    nodes = await _group_nodes(kube, group)
    at_revision = all((n.metadata.labels or {}).get(REVISION) == revision for n in nodes)
    return at_revision and len(nodes) == want.total() and await ready_by(kube, group, ZONE) == want


def _not_ready_status() -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "KubeletDown",
        "message": "the kubelet stopped posting node status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return {"status": {"conditions": [ready]}}


async def _settled(kube: client.ApiClient, group: str, revision: str) -> dict[str, Any] | None:
    status = await group_status(kube, group)
    if status.get("state") == "Ready" and status.get("currentRevision") == revision:
        return status
    return None


async def _two_per_zone(
    kube: client.ApiClient, run_molt: Callable[..., MoltProcess], prefix: str
) -> tuple[str, MoltProcess]:
    """A new 6-node group and Molt running, once the group has 2 Ready nodes per zone at
    its first revision."""
    group = f"{prefix}-{uuid.uuid4().hex[:5]}"
    everywhere = Counter(dict.fromkeys(ZONES, 2))
    await create_group(kube, group, replicas=6, health=HEALTH)
    molt = run_molt()
    await eventually(
        lambda: _spread_at(kube, group, KWOK_REVISION, everywhere),
        within=60,
        what="2 Ready nodes per zone at the first revision",
    )
    return group, molt


async def test_a_zone_down_during_a_template_change_rests_and_rolls_back_nothing(
    kube: client.ApiClient,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group, molt = await _two_per_zone(kube, run_molt, "zo")
    everywhere = Counter(dict.fromkeys(ZONES, 2))
    streams = GroupStreams(group)
    await streams.start(kube)
    try:
        # zone-b goes down as the template changes: what launches there never becomes
        # Ready, and the kubelets of its nodes die (kwok started afresh no longer runs
        # them; their Leases expire).
        await faults(kube, {"notReady": "zone-b/*"})
        core = client.CoreV1Api(kube)
        lost = [
            n.metadata.name
            for n in await _group_nodes(kube, group)
            if n.metadata.labels.get(ZONE) == "zone-b"
        ]
        assert len(lost) == 2, lost
        for name in lost:
            await core.patch_node(
                name, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "dead"}}}
            )
        await asyncio.to_thread(sandbox.sandbox.restart, "kwok", lambda _: None)
        # What the node-lifecycle controller would say once their Leases expire (40 s on),
        # said at once, so they are NotReady while the rollout is under way; no kwok runs
        # them any more to say otherwise.
        for name in lost:
            await core.patch_node_status(name, _not_ready_status())
        new = await set_template(kube, group, NEXT_TEMPLATE)

        # zone-b's share moves: the new revision runs in full in the other two zones.
        routed = Counter({"zone-a": 3, "zone-c": 3})
        try:
            await eventually(
                lambda: _spread_at(kube, group, new, routed),
                within=240,
                interval=1,
                what="zone-b's share in zone-a and zone-c, at the new revision",
            )
        except AssertionError as error:
            raise AssertionError(await _explain(kube, group, molt, streams)) from error
        assert set(lost) <= streams.fell, "zone-b's nodes were never seen NotReady"
        assert not set(lost) & streams.members, "zone-b's dead nodes are still in the group"
        assert set(lost) <= set(streams.gone)
        during = await group_status(kube, group)
        cells = {c["zone"]: c for c in during["cells"] if c["revision"] == new}
        events = await group_events(kube, group)
        assert any(r == "CellUnhealthy" and "zone-b" in m for r, m in events), events
        failed = [m for r, m in events if r in ("InstanceNotReady", "NodeNotReady")]
        assert failed, events
        assert all("zone-b" in m for m in failed), failed

        # zone-b is back: its share returns, and the rotation finishes.
        await faults(kube, None)
        try:
            await eventually(
                lambda: _spread_at(kube, group, new, everywhere),
                within=180,
                interval=1,
                what="2 Ready nodes per zone at the new revision",
            )
        except AssertionError as error:
            raise AssertionError(await _explain(kube, group, molt, streams)) from error
        await eventually(lambda: _settled(kube, group, new), within=60, what="a Ready group")
    finally:
        await streams.stop()
        await faults(kube, None)

    assert streams.degraded == {}, streams.degraded
    assert streams.degraded_conditions == []
    assert streams.current == [KWOK_REVISION, new], "rolled back at some point"
    assert cells["zone-b"]["desired"] == 0, cells
    assert cells["zone-a"]["desired"] + cells["zone-c"]["desired"] == 6, cells
    reasons = [r for r, _ in await group_events(kube, group)]
    assert "RevisionDegraded" not in reasons
    assert molt.alive(), molt.log()


async def test_every_node_of_a_group_not_ready_at_once_fails_nothing_and_the_next_change_rolls_out(
    kube: client.ApiClient,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group, molt = await _two_per_zone(kube, run_molt, "bl")
    everywhere = Counter(dict.fromkeys(ZONES, 2))
    await eventually(lambda: _settled(kube, group, KWOK_REVISION), within=30, what="Ready")
    streams = GroupStreams(group)
    await streams.start(kube)
    try:
        # kwok down, then back: every node (each launched a minute ago, so each one young)
        # goes NotReady with the others, and Ready again once kwok runs it.
        await asyncio.to_thread(sandbox.sandbox.restart, "kwok", lambda _: None, KWOK_DOWN_FOR)
        assert streams.whole_group_not_ready == 6, (streams.most_not_ready, streams.members)
        try:
            await eventually(
                lambda: _spread_at(kube, group, KWOK_REVISION, everywhere),
                within=60,
                what="every node Ready again",
            )
        except AssertionError as error:
            raise AssertionError(await _explain(kube, group, molt, streams)) from error
        # The group's health saw them NotReady past notReadyFor, and excused them.
        events = await eventually(
            lambda: _reported(kube, group, "NodesNotReady"), within=30, what="NodesNotReady"
        )
        await asyncio.sleep(10)  # a few more reconciles, in which nothing may go
        assert streams.gone == [], streams.gone
        assert streams.joined == [], streams.joined
        after = await group_status(kube, group)
        assert after["replicas"] == 6, after
        assert all(r.get("launchFailures", 0) == 0 for r in after["revisions"]), after

        new = await set_template(kube, group, NEXT_TEMPLATE)
        await eventually(
            lambda: _spread_at(kube, group, new, everywhere),
            within=150,
            interval=1,
            what="the next template rolled out",
        )
        await eventually(lambda: _settled(kube, group, new), within=60, what="a Ready group")
    finally:
        await streams.stop()

    assert streams.degraded == {}, streams.degraded
    assert streams.degraded_conditions == []
    assert streams.current == [KWOK_REVISION, new]
    reasons = [r for r, _ in await group_events(kube, group)]
    assert "RevisionDegraded" not in reasons
    for failure in ("NodeNotReady", "CellUnhealthy", "InstanceNotReady"):
        assert failure not in reasons, events
    assert molt.alive(), molt.log()


async def _reported(kube: client.ApiClient, group: str, reason: str) -> list[tuple[str, str]]:
    events = await group_events(kube, group)
    return events if any(r == reason for r, _ in events) else []


async def _explain(
    kube: client.ApiClient, group: str, molt: MoltProcess, streams: GroupStreams
) -> str:
    """What the group looked like when a wait ran out: its nodes, Events and streams."""
    nodes = [
        (
            n.metadata.name,
            (n.metadata.labels or {}).get(ZONE),
            (n.metadata.labels or {}).get(REVISION),
            [(c.type, c.status) for c in n.status.conditions or [] if c.type == "Ready"],
            (n.metadata.annotations or {}).get(KWOK_NODE_ANNOTATION),
        )
        for n in await _group_nodes(kube, group)
    ]
    events = await group_events(kube, group)
    return (
        f"nodes: {nodes}\nevents: {events}\njoined: {streams.joined} gone: {streams.gone}\n"
        f"log: {molt.log()[-6000:]}"
    )
