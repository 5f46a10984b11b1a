"""A small sample fleet for the demo and for trying Molt by hand: nine kwok nodes in
three zones at assorted ages, one InstanceGroup, one TerminationPolicy.

The current nodes carry the revision of the group's template (its hash); two carry the
revision of an earlier template, so they have drifted. The group's status is written here
too, so ``molt plan`` sees the current revision before any controller has run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.api.labels import CAPACITY_TYPE_LABEL, GROUP_LABEL, REVISION_LABEL, ZONE_LABEL
from molt.cloud.kwok_nodes import kwok_node
from molt.policy.age import format_rfc3339
from molt.policy.cells import template_revision

GROUP_NAME = "workers"
TEMPLATE: dict[str, Any] = {"instanceTypes": ["m5.large"], "kwok": {"bootDelay": "5s"}}
PREVIOUS_TEMPLATE: dict[str, Any] = {"instanceTypes": ["m4.large"], "kwok": {"bootDelay": "5s"}}
CURRENT_REVISION = template_revision(Template.model_validate(TEMPLATE))
PREVIOUS_REVISION = template_revision(Template.model_validate(PREVIOUS_TEMPLATE))
STUCK_TAINT = "example.com/volume-attach-stuck"

# (zone, hours since launch, revision, stuck taint added this many minutes ago)
FLEET: tuple[tuple[str, float, str, int | None], ...] = (
    ("zone-a", 61.0, CURRENT_REVISION, None),
    ("zone-a", 30.0, PREVIOUS_REVISION, None),
    ("zone-a", 6.0, CURRENT_REVISION, None),
    ("zone-b", 52.5, CURRENT_REVISION, None),
    ("zone-b", 47.6, CURRENT_REVISION, None),
    ("zone-b", 12.0, CURRENT_REVISION, 25),
    ("zone-c", 40.0, PREVIOUS_REVISION, None),
    ("zone-c", 20.0, CURRENT_REVISION, None),
    ("zone-c", 1.0, CURRENT_REVISION, None),
)


def sample_nodes(now: datetime) -> list[dict[str, Any]]:
    """The fleet's Node manifests (kwok-managed)."""
    nodes = []
    for index, (zone, hours, revision, taint_minutes) in enumerate(FLEET):
        name = f"{GROUP_NAME}-{zone}-{index}"
        taints = None
        if taint_minutes is not None:
            added = format_rfc3339(now - timedelta(minutes=taint_minutes))
            taints = [{"key": STUCK_TAINT, "effect": "NoExecute", "timeAdded": added}]
        labels = {
            "node.kubernetes.io/instance-type": "m5.large",
            GROUP_LABEL: GROUP_NAME,
            REVISION_LABEL: revision,
            ZONE_LABEL: zone,
            CAPACITY_TYPE_LABEL: "on-demand",
        }
        launched = now - timedelta(hours=hours)
        nodes.append(
            kwok_node(
                name, labels=labels, launched_at=launched, taints=taints, cpu="2", memory="8Gi"
            )
        )
    return nodes


INSTANCE_GROUP: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "InstanceGroup",
    "metadata": {"name": GROUP_NAME},
    "spec": {
        "provider": "kwok",
        "minSize": 6,
        "maxSize": 12,
        "replicas": 9,
        "zones": ["zone-a", "zone-b", "zone-c"],
        "template": TEMPLATE,
        "maxNodeAge": "48h",
        "strategy": {"type": "RollingReplace", "maxSurge": 1, "maxUnavailable": 0},
    },
}

TERMINATION_POLICY: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "TerminationPolicy",
    "metadata": {"name": "rotate-48h"},
    "spec": {
        "nodeSelector": {"matchLabels": {GROUP_LABEL: GROUP_NAME}},
        "rules": {
            "maxAge": "48h",
            "maxAgeJitter": "4h",
            "drift": True,
            "taints": [{"key": STUCK_TAINT, "for": "10m"}],
        },
        "budgets": [
            {"maxInFlight": 2, "scope": "Cluster"},
            {"maxInFlight": 1, "scope": "Zone"},
        ],
        "drain": {"timeout": "1h"},
    },
}


async def install_sample_fleet(api: client.ApiClient, now: datetime) -> None:
    """Create the fleet's nodes, group (with its current revision) and policy."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    for node in sample_nodes(now):
        # The generated client accepts plain dicts at runtime; its hints say model objects.
        await core.create_node(node)  # type: ignore[arg-type]
    await custom.create_cluster_custom_object(GROUP, VERSION, "instancegroups", INSTANCE_GROUP)
    await custom.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        "instancegroups",
        GROUP_NAME,
        {"status": {"currentRevision": CURRENT_REVISION, "replicas": len(FLEET)}},
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
    )
    await custom.create_cluster_custom_object(
        GROUP, VERSION, "terminationpolicies", TERMINATION_POLICY
    )
