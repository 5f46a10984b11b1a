"""``molt run`` remediating unhealthy kwok nodes against the real control plane: a node
whose kubelet stopped reporting Ready is rebooted first and kept when it comes back (same
Node, no replacement launched); a node whose reboot does not help is replaced through the
termination pipeline; three of four nodes of zone-b unhealthy at once pause remediation in
zone-b only, while a sick node of zone-a is still repaired, and the pause lifts when
zone-b recovers.

A node's kubelet "stops" the way kwok allows while it keeps running: its
``kwok.x-k8s.io/node`` annotation no longer says ``fake`` (kwok stops playing its stages,
though it still renews the node's Lease) and its Ready condition is set False, as a
kubelet that reports NotReady would. The kwok provider's reboot brings it back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.labels import KWOK_NODE_ANNOTATION, REMEDIATION_ANNOTATION
from molt.kube.transport import RawApi
from tests.support.builders import instance_group, kwok_node
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    GROUP_LABEL,
    KWOK_REVISION,
    KWOK_TEMPLATE,
    install_policy,
    node_events,
    node_gone,
)
from tests.support.streams import follow
from tests.support.waiting import eventually

SICK_TAINT = "example.com/sick"


@dataclass
class NodeStream:
    """Every node that appeared, went, or ever carried the remediation annotation (from a
    watch, so a brief record is not missed), and the uid each name had."""

    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    remediated: dict[str, float] = field(default_factory=dict)
    """Node -> when (monotonic) its remediation annotation was first seen."""
    uids: dict[str, set[str]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    async def start(self, kube: client.ApiClient) -> None:
        listed = asyncio.Event()
        self.task = asyncio.create_task(
            follow(RawApi(kube), "/api/v1/nodes", [], self._node, listed)
        )
        await asyncio.wait_for(listed.wait(), 30)
        self.added.clear()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _node(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name = meta["name"]
        self.uids.setdefault(name, set()).add(meta["uid"])
        if kind == "ADDED":
            self.added.append(name)
        elif kind == "DELETED":
            self.deleted.append(name)
        if REMEDIATION_ANNOTATION in (meta.get("annotations") or {}):
            self.remediated.setdefault(name, time.monotonic())


async def _fleet(kube: client.ApiClient, group: str, zones: dict[str, int]) -> list[str]:
    """A kwok InstanceGroup over ``zones`` (zone -> nodes) and its young nodes."""
    size = sum(zones.values())
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group,
            minSize=size,
            maxSize=size + 1,
            replicas=size,
            zones=sorted(zones),
            template=KWOK_TEMPLATE,
            strategy={"type": "RollingReplace", "maxSurge": 1, "maxUnavailable": 0},
        ),
    )
    launched = datetime.now(UTC) - timedelta(hours=1)
    names: list[str] = []
    for zone, count in sorted(zones.items()):
        for index in range(count):
            name = f"{group}-{zone[-1]}{index}"
            labels = {
                GROUP_LABEL: group,
                "molt.dev/revision": KWOK_REVISION,
                "topology.kubernetes.io/zone": zone,
            }
            await client.CoreV1Api(kube).create_node(
                kwok_node(name, labels=labels, launched_at=launched)
            )
            names.append(name)

    async def all_ready() -> bool:
        found = await client.CoreV1Api(kube).list_node(label_selector=f"{GROUP_LABEL}={group}")
        return sum(1 for n in found.items if _ready(n)) == size

    await eventually(all_ready, within=30, what=f"{size} Ready nodes")
    return names


def _ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


async def _kubelet_stops(kube: client.ApiClient, name: str) -> None:
    """kwok stops playing the node's stages, and its Ready condition turns False."""
    core = client.CoreV1Api(kube)
    await core.patch_node(name, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "dead"}}})
    now = datetime.now(UTC).isoformat()
    await core.patch_node_status(
        name,
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "KubeletNotReady",
                        "message": "the test stopped the kubelet",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ]
            }
        },
    )


async def _kubelet_back(kube: client.ApiClient, name: str) -> None:
    await client.CoreV1Api(kube).patch_node(
        name, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "fake"}}}
    )


def _remediating(policy: str, *, reboot: str = "30s", **extra: Any) -> dict[str, Any]:
    return {
        "rules": {
            "conditions": [{"type": "Ready", "status": "False", "for": "2s"}],
            "taints": [{"key": SICK_TAINT, "effect": "NoSchedule"}],
        },
        "budgets": [{"maxInFlight": 1}],
        "remediation": {"steps": [{"reboot": {"timeout": reboot}}, {"replace": {}}], **extra},
    }


async def _reasons(kube: client.ApiClient, node: str) -> list[str]:
    return [reason for reason, _ in await node_events(kube, node)]


async def _policy_condition(kube: client.ApiClient, name: str, kind: str) -> dict[str, Any] | None:
    found = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        GROUP, VERSION, "terminationpolicies", name
    )
    conditions = (found.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


async def _policy_events(kube: client.ApiClient, name: str) -> list[tuple[str, str]]:
    events = await client.CoreV1Api(kube).list_event_for_all_namespaces(
        field_selector=f"involvedObject.kind=TerminationPolicy,involvedObject.name={name}"
    )
    return [(e.reason, e.message) for e in events.items]


async def test_a_node_whose_kubelet_stopped_is_rebooted_and_kept(
    kube: client.ApiClient, empty_cluster: None, run_molt: Callable[..., MoltProcess]
) -> None:
    group = f"heal-{uuid.uuid4().hex[:5]}"
    nodes = await _fleet(kube, group, {"zone-a": 3})
    sick = nodes[0]
    uid = (await client.CoreV1Api(kube).read_node(sick)).metadata.uid
    await install_policy(kube, group, group, **_remediating(group))
    stream = NodeStream()
    await stream.start(kube)
    molt = run_molt()
    try:
        await _kubelet_stops(kube, sick)

        async def rebooted_and_kept() -> bool:
            return "Remediated" in await _reasons(kube, sick)

        await eventually(rebooted_and_kept, within=45, interval=0.5, what="Remediated")
        reasons = await _reasons(kube, sick)
        assert reasons.index("Rebooting") < reasons.index("Remediated"), reasons
        found = await client.CoreV1Api(kube).read_node(sick)
        assert found.metadata.uid == uid
        assert _ready(found)
        assert not found.spec.unschedulable  # cordoned for the reboot, uncordoned after
        assert REMEDIATION_ANNOTATION not in (found.metadata.annotations or {})
        assert found.metadata.annotations[KWOK_NODE_ANNOTATION] == "fake"
        await asyncio.sleep(2)  # anything launched for it would have been by now
        assert stream.added == [], f"a replacement was launched: {stream.added}"
        assert stream.deleted == []
        assert stream.uids[sick] == {uid}
        assert "Selected" not in await _reasons(kube, sick)
        assert molt.alive(), molt.log()
    finally:
        await stream.stop()


async def test_a_node_the_reboot_does_not_help_is_replaced_through_the_pipeline(
    kube: client.ApiClient, empty_cluster: None, run_molt: Callable[..., MoltProcess]
) -> None:
    group = f"heal-{uuid.uuid4().hex[:5]}"
    nodes = await _fleet(kube, group, {"zone-a": 3})
    sick = nodes[0]
    await install_policy(kube, group, group, **_remediating(group, reboot="8s"))
    molt = run_molt()
    # A taint the reboot does not clear (say, a volume that stays stuck), on a node whose
    # kubelet stopped: only a node that is not Ready is rebooted (a Ready one's pods still
    # serve), and the reboot brings the kubelet back but not the volume.
    await client.CoreV1Api(kube).patch_node(
        sick, {"spec": {"taints": [{"key": SICK_TAINT, "effect": "NoSchedule"}]}}
    )
    await _kubelet_stops(kube, sick)
    try:
        await eventually(
            lambda: node_gone(kube, sick), within=50, interval=0.5, what="sick node gone"
        )
    except AssertionError as error:
        seen = await node_events(kube, sick)
        raise AssertionError(f"{error}\n{seen}\n{molt.log()[-6000:]}") from None
    found = await client.CoreV1Api(kube).list_node(label_selector=f"{GROUP_LABEL}={group}")
    names = {n.metadata.name for n in found.items}
    assert sick not in names
    assert len(names - set(nodes)) == 1, names  # its replacement

    async def all_events() -> list[str]:
        events = await client.CoreV1Api(kube).list_namespaced_event(
            "default", field_selector=f"involvedObject.name={sick}"
        )
        mine = [e for e in events.items if e.source and e.source.component == "molt"]
        mine.sort(key=lambda e: e.first_timestamp or e.metadata.creation_timestamp)
        return [f"{e.reason}: {e.message}" for e in mine]

    seen = await all_events()
    reasons = {line.split(":")[0] for line in seen}
    # Events within one second are not ordered; the selection's reason says it came after
    # the reboot step failed.
    assert {"Rebooting", "RemediationStepFailed", "RemediationReplacing", "Selected"} <= reasons
    selected = next(line for line in seen if line.startswith("Selected"))
    assert "did not help within 8s" in selected, selected
    assert molt.alive(), molt.log()


async def test_three_of_four_down_in_zone_b_pause_zone_b_while_zone_a_is_repaired(
    kube: client.ApiClient, empty_cluster: None, run_molt: Callable[..., MoltProcess]
) -> None:
    group = f"zones-{uuid.uuid4().hex[:5]}"
    nodes = await _fleet(kube, group, {"zone-a": 4, "zone-b": 4, "zone-c": 4})
    in_a = [n for n in nodes if n.endswith(("a0", "a1", "a2", "a3"))]
    in_b = [n for n in nodes if n.endswith(("b0", "b1", "b2", "b3"))]
    await install_policy(kube, group, group, **_remediating(group))
    stream = NodeStream()
    await stream.start(kube)
    molt = run_molt()
    try:
        for name in [*in_b[:3], in_a[0]]:
            await _kubelet_stops(kube, name)

        async def paused() -> bool:
            condition = await _policy_condition(kube, group, "RemediationPaused")
            return condition is not None and condition["status"] == "True"

        await eventually(paused, within=20, interval=0.5, what="RemediationPaused")
        condition = await _policy_condition(kube, group, "RemediationPaused")
        assert condition is not None
        assert condition["reason"] == "ZoneUnhealthy"
        assert "3 of 4 nodes unhealthy in zone zone-b" in condition["message"], condition

        # zone-a's sick node is repaired meanwhile.
        async def a_repaired() -> bool:
            return "Remediated" in await _reasons(kube, in_a[0])

        await eventually(a_repaired, within=40, interval=0.5, what="zone-a's node repaired")
        assert all(n not in stream.remediated for n in in_b), stream.remediated
        assert await paused(), "zone-b's pause lifted while three of its nodes were down"

        # Two of zone-b's kubelets come back on their own: the pause lifts, and the
        # third node is repaired.
        lifted_at = time.monotonic()
        for name in in_b[:2]:
            await _kubelet_back(kube, name)

        async def lifted() -> bool:
            condition = await _policy_condition(kube, group, "RemediationPaused")
            return condition is not None and condition["status"] == "False"

        await eventually(lifted, within=20, interval=0.5, what="the pause lifted")

        async def b_repaired() -> bool:
            return "Remediated" in await _reasons(kube, in_b[2])

        await eventually(b_repaired, within=40, interval=0.5, what="zone-b's last node repaired")
        assert stream.remediated.get(in_b[2], 0.0) > lifted_at
        assert all(n not in stream.remediated for n in in_b[:2])
        reasons = [reason for reason, _ in await _policy_events(kube, group)]
        assert reasons.count("RemediationPaused") == 1, reasons
        assert reasons.count("RemediationResumed") == 1, reasons
        assert stream.added == [], f"a replacement was launched: {stream.added}"
        assert molt.alive(), molt.log()
    finally:
        await stream.stop()
