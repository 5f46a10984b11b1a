"""An upgrade is a replacement: editing an InstanceGroup's template makes a new revision,
and a policy with ``drift: true`` replaces every node of the old one, within the PDB."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.policy.cells import template_revision
from tests.support.builders import deployment, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.kube_fleet import KWOK_TEMPLATE, install_old_fleet, install_policy
from tests.support.waiting import eventually


async def _group_status(kube: client.ApiClient, name: str) -> dict[str, object]:
    found = await client.CustomObjectsApi(kube).get_cluster_custom_object_status(
        GROUP, VERSION, "instancegroups", name
    )
    return dict(found.get("status") or {})


async def _revisions(kube: client.ApiClient, group: str) -> dict[str, str]:
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return {
        n.metadata.name: n.metadata.labels.get("molt.dev/revision")
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }


async def test_a_template_change_replaces_every_node_with_the_new_revision(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"up-{uuid.uuid4().hex[:5]}"
    first = template_revision(Template.model_validate(KWOK_TEMPLATE))
    old = await install_old_fleet(kube, group, nodes=3, age=timedelta(hours=1), revision=first)
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace, deployment("web", namespace, 6, node_selector={"molt.dev/instance-group": group})
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    watch = FleetWatch()
    await watch.start(kube, namespace, "web", 6, group)
    try:
        await install_policy(
            kube, group, group, rules={"drift": True}, budgets=[{"maxInFlight": 1}]
        )
        run_molt()

        async def current_is_first() -> bool:
            status = await _group_status(kube, group)
            return status.get("currentRevision") == first and status.get("state") == "Ready"

        await eventually(current_is_first, within=30, what="the group's first revision")
        await asyncio.sleep(3)
        assert not watch.ever_in_pipeline, "nodes of the current revision were disrupted"

        new_template = {**KWOK_TEMPLATE, "instanceTypes": ["m5.xlarge"]}
        second = template_revision(Template.model_validate(new_template))
        await client.CustomObjectsApi(kube).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "instancegroups",
            group,
            {"spec": {"template": new_template}},
            _content_type="application/merge-patch+json",
        )

        async def upgraded() -> bool:
            revisions = await _revisions(kube, group)
            return len(revisions) == 3 and set(revisions.values()) == {second}

        await eventually(upgraded, within=180, interval=1, what="every node at the new revision")
        await eventually(current_is_second(kube, group, second), within=30, what="Ready status")
    finally:
        await watch.stop()

    assert set(old) <= watch.ever_in_pipeline
    assert watch.max_in_pipeline == 1
    assert watch.min_ready is not None
    assert watch.min_ready >= 5


def current_is_second(kube: client.ApiClient, group: str, second: str) -> Callable[[], object]:
    async def probe() -> bool:
        status = await _group_status(kube, group)
        return (
            status.get("currentRevision") == second
            and status.get("state") == "Ready"
            and status.get("updatedReplicas") == 3
        )

    return probe
