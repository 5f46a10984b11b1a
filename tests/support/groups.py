"""InstanceGroups in sandbox tests: create one, read its status, Ready nodes and Events,
change its template, and set the kwok provider's faults."""

from __future__ import annotations

from collections import Counter
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.cloud.kwok import FAULTS_CONFIGMAP, FAULTS_NAMESPACE
from molt.policy.cells import template_revision
from tests.support.builders import instance_group
from tests.support.kube_fleet import KWOK_TEMPLATE

ZONES = ["zone-a", "zone-b", "zone-c"]
HEALTH = {
    "readyTimeout": "8s",
    "failureThreshold": "50%",
    "window": "10m",
    "capacityCooldown": "20s",
}


async def create_group(kube: client.ApiClient, name: str, **spec: Any) -> None:
    """A kwok group (3 zones, KWOK_TEMPLATE, HEALTH unless ``spec`` says otherwise)."""
    spec.setdefault("zones", ZONES)
    spec.setdefault("template", KWOK_TEMPLATE)
    spec.setdefault("health", HEALTH)
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP, VERSION, "instancegroups", instance_group(name, minSize=0, maxSize=12, **spec)
    )


async def group_status(kube: client.ApiClient, name: str) -> dict[str, Any]:
    """The group's status as the API server has it."""
    found = await client.CustomObjectsApi(kube).get_cluster_custom_object_status(
        GROUP, VERSION, "instancegroups", name
    )
    return dict(found.get("status") or {})


async def ready_by(kube: client.ApiClient, group: str, label: str) -> Counter[str]:
    """The group's Ready nodes counted by the value of ``label``."""
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return Counter(
        (n.metadata.labels or {}).get(label, "")
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    )


async def group_events(kube: client.ApiClient, group: str) -> list[tuple[str, str]]:
    """(reason, message) of every Event about the group."""
    events = await client.CoreV1Api(kube).list_namespaced_event(
        "default", field_selector=f"involvedObject.kind=InstanceGroup,involvedObject.name={group}"
    )
    return [(e.reason, e.message) for e in events.items]


async def set_template(kube: client.ApiClient, group: str, template: dict[str, Any]) -> str:
    """Merge-patch the group's template; returns its revision."""
    await client.CustomObjectsApi(kube).patch_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        group,
        {"spec": {"template": template}},
        _content_type="application/merge-patch+json",
    )
    return template_revision(Template.model_validate(template))


async def faults(kube: client.ApiClient, data: dict[str, str] | None) -> None:
    """Replace the kwok fault settings with ``data`` (None: no faults)."""
    core = client.CoreV1Api(kube)
    try:
        await core.delete_namespaced_config_map(FAULTS_CONFIGMAP, FAULTS_NAMESPACE)
    except client.ApiException as error:
        if error.status != 404:
            raise
    if data is not None:
        await core.create_namespaced_config_map(
            FAULTS_NAMESPACE,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=FAULTS_CONFIGMAP), data=data),
        )
