"""Events sent in the background (``KubeWrites(background_events=True)``, what ``molt run``
uses) against the real API server: every recorded Event arrives, in the order recorded,
and none is sent once the fence says this replica no longer leads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from kubernetes_asyncio import client

from molt.kube.transport import RawApi
from molt.kube.writes import EVENT_NAMESPACE, KubeWrites
from molt.policy.snapshot import NodeView
from molt.ports import NotLeaderError


async def _events_about(kube: client.ApiClient, node: str) -> list[client.CoreV1Event]:
    found = await client.CoreV1Api(kube).list_namespaced_event(
        EVENT_NAMESPACE, field_selector=f"involvedObject.name={node}"
    )
    # In the order they were written (etcd's revision), whatever the listing's order.
    return sorted(found.items, key=lambda e: int(e.metadata.resource_version))


async def test_background_events_all_arrive_in_order(kube: client.ApiClient) -> None:
    writes = KubeWrites(RawApi(kube), check_fence=lambda: None, background_events=True)
    node = NodeView(name=f"events-{uuid.uuid4().hex[:6]}", created=datetime.now(UTC))
    reasons = [f"Step{i}" for i in range(5)]
    for reason in reasons:
        await writes.record_event(node, reason, f"{reason} happened")
    await writes.flush()
    events = await _events_about(kube, node.name)
    assert [e.reason for e in events] == reasons, "each arrives, after the one before it"


async def test_background_events_are_dropped_once_the_fence_is_lost(
    kube: client.ApiClient,
) -> None:
    leading = [True]

    def fence() -> None:
        if not leading[0]:
            raise NotLeaderError("lease lost")

    writes = KubeWrites(RawApi(kube), check_fence=fence, background_events=True)
    node = NodeView(name=f"fenced-{uuid.uuid4().hex[:6]}", created=datetime.now(UTC))
    # Recorded while leading; recording yields nothing to the loop, so none is sent yet.
    for reason in ("Cordoned", "Draining"):
        await writes.record_event(node, reason, "recorded while leading")
    leading[0] = False
    await writes.flush()
    assert await _events_about(kube, node.name) == []
