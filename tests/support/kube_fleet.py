"""Fleets installed in the sandbox for controller tests: groups of aged kwok nodes, and
the reads tests make of them (ready nodes, Events on a node)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.policy.cells import template_revision
from tests.support.builders import instance_group, kwok_node, termination_policy

GROUP_LABEL = "molt.dev/instance-group"
LAUNCHED_AT = "molt.dev/launched-at"
KWOK_TEMPLATE: dict[str, Any] = {"instanceTypes": ["m5.large"], "kwok": {"bootDelay": "1s"}}
KWOK_REVISION = template_revision(Template.model_validate(KWOK_TEMPLATE))
"""The revision of KWOK_TEMPLATE: a fleet at it is current, so only age moves it."""


async def install_old_fleet(
    kube: client.ApiClient,
    group: str,
    *,
    nodes: int,
    age: timedelta | list[timedelta],
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    revision: str = KWOK_REVISION,
    surge: int = 1,
    template: dict[str, Any] = KWOK_TEMPLATE,
    **group_spec: Any,
) -> list[str]:
    """An InstanceGroup (kwok, ``surge`` spare slots, RollingReplace with that maxSurge,
    ``group_spec`` on top) and ``nodes`` kwok nodes launched ``age`` ago (or each its own
    age, given a list), carrying ``labels`` besides the group's."""
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group,
            minSize=nodes,
            maxSize=nodes + surge,
            replicas=nodes,
            strategy={"type": "RollingReplace", "maxSurge": surge, "maxUnavailable": 0},
            zones=["zone-a"],
            template=template,
            **group_spec,
        ),
    )
    now = datetime.now(UTC)
    ages = age if isinstance(age, list) else [age] * nodes
    names = [f"{group}-old-{index}" for index in range(nodes)]
    for name, launched in zip(names, (now - a for a in ages), strict=True):
        await client.CoreV1Api(kube).create_node(
            kwok_node(
                name,
                labels={
                    GROUP_LABEL: group,
                    "molt.dev/revision": revision,
                    "topology.kubernetes.io/zone": "zone-a",
                    **(labels or {}),
                },
                annotations=annotations,
                # A launch time given in ``annotations`` (even a malformed one) wins.
                launched_at=None if LAUNCHED_AT in (annotations or {}) else launched,
            )
        )
    return names


async def install_policy(kube: client.ApiClient, name: str, group: str, **spec: Any) -> None:
    """A TerminationPolicy covering one group; ``spec`` replaces top-level spec fields."""
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "terminationpolicies",
        termination_policy(name, nodeSelector={"matchLabels": {GROUP_LABEL: group}}, **spec),
    )


async def ready_nodes(kube: client.ApiClient, group: str) -> list[str]:
    nodes = await client.CoreV1Api(kube).list_node(label_selector=f"{GROUP_LABEL}={group}")
    return [
        n.metadata.name
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]


async def has_ready_nodes(kube: client.ApiClient, group: str, count: int) -> bool:
    return len(await ready_nodes(kube, group)) >= count


async def has_ready_replicas(
    kube: client.ApiClient, namespace: str, replicas: int, name: str = "web"
) -> bool:
    found = await client.AppsV1Api(kube).read_namespaced_deployment_status(name, namespace)
    return (found.status.ready_replicas or 0) >= replicas


async def node_events(kube: client.ApiClient, node: str) -> list[tuple[str, str]]:
    """(reason, message) of every Event Molt recorded on the node, oldest first."""
    events = await client.CoreV1Api(kube).list_namespaced_event(
        "default", field_selector=f"involvedObject.kind=Node,involvedObject.name={node}"
    )
    mine = [e for e in events.items if e.source and e.source.component == "molt"]
    mine.sort(key=lambda e: e.first_timestamp or e.metadata.creation_timestamp)
    return [(e.reason, e.message) for e in mine]


async def node_gone(kube: client.ApiClient, node: str) -> bool:
    """Whether the Node object no longer exists."""
    try:
        await client.CoreV1Api(kube).read_node(node)
    except client.ApiException as error:
        return error.status == 404
    return False


async def node_annotation(kube: client.ApiClient, node: str, key: str) -> str | None:
    """One annotation of a node, or None when it (or the node) is absent."""
    try:
        found = await client.CoreV1Api(kube).read_node(node)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return (found.metadata.annotations or {}).get(key)
