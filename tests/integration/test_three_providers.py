"""Three providers in one cluster: a kwok group, an AWS group (moto, behind the fault
proxy) and a bare-metal group (sushy-tools' Redfish emulator) under one policy and one
budget, and the bare-metal group overflowing to the AWS group when it runs out of hosts.

The bridges stand in for the machines' operating systems (a kwok Node joins for each
InService instance, and for each host powered on with the OS image). A watch on every
node of the three groups follows Molt's state label, so a second node in flight is seen
even if it lasted a moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.cloud.baremetal.inventory import Claim
from molt.cloud.baremetal.store import CLAIMS_CONFIGMAP
from tests.integration.test_aws_rollout import Cloud, cloud  # noqa: F401 (fixture)
from tests.integration.test_baremetal import (  # noqa: F401 (fixtures)
    SECRET,
    Lab,
    controller_namespace,
    lab,
)
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.builders import instance_group, termination_policy
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.kube_fleet import install_old_fleet, ready_nodes
from tests.support.redfish_bridge import RedfishNodeBridge
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


async def _uids(kube: client.ApiClient, groups: list[str]) -> set[str]:
    selector = f"molt.dev/instance-group in ({','.join(groups)})"
    nodes = await client.CoreV1Api(kube).list_node(label_selector=selector)
    return {n.metadata.uid for n in nodes.items}


async def _group_status(kube: client.ApiClient, name: str) -> dict[str, object]:
    found = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        GROUP, VERSION, "instancegroups", name
    )
    return dict(found.get("status") or {})


async def _set_replicas(kube: client.ApiClient, name: str, replicas: int) -> None:
    await client.CustomObjectsApi(kube).patch_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        name,
        {"spec": {"replicas": replicas}},
        _content_type="application/merge-patch+json",
    )


async def test_three_providers_rotate_under_one_budget_and_bare_metal_overflows_to_aws(
    cloud: Cloud,  # noqa: F811
    lab: Lab,  # noqa: F811
    kube: client.ApiClient,
    controller_namespace: str,  # noqa: F811
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    suffix = uuid.uuid4().hex[:5]
    kw, aw, bm = f"kw{suffix}", f"aw{suffix}", f"bm{suffix}"
    api = client.CustomObjectsApi(kube)
    await install_old_fleet(kube, kw, nodes=2, age=timedelta(hours=1))
    await api.create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            aw,
            provider="aws",
            minSize=0,
            maxSize=4,
            replicas=2,
            zones=["eu-west-1a"],
            template=cloud.template("ami-11111111"),
            strategy={"type": "RollingReplace", "maxSurge": 1, "maxUnavailable": 0},
        ),
    )
    rack = [s for s in lab.systems if s.name.startswith("r1")][:3]
    await api.create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            bm,
            provider="baremetal",
            minSize=0,
            maxSize=4,
            replicas=2,
            zones=["rack-1"],
            template={
                "instanceTypes": ["metal"],
                "image": lab.os_image,
                "baremetal": {
                    "credentialsSecret": SECRET,
                    "hosts": [lab.host(s, "rack-1") for s in rack],
                    "bmcTimeout": "5s",
                    "reprovision": {"image": lab.wipe_image, "timeout": "2m"},
                },
            },
            strategy={"type": "RollingReplace", "maxSurge": 1, "maxUnavailable": 0},
            health={"capacityCooldown": "10s"},
            overflow={"group": aw},
        ),
    )
    groups = [kw, aw, bm]
    watch = FleetWatch()
    await watch.start(
        kube,
        controller_namespace,
        "none",
        0,
        kw,
        node_selector=f"molt.dev/instance-group in ({','.join(groups)})",
    )
    try:
        async with (
            AwsNodeBridge(kube, aw) as aws_bridge,
            RedfishNodeBridge(
                kube, lab.emulator.url, lab.systems, lab.os_image, lab.wipe_image
            ) as metal_bridge,
        ):
            molt = run_molt("--provider", "kwok", "--provider", "aws", "--provider", "baremetal")

            async def all_up() -> bool:
                counts = [len(await ready_nodes(kube, g)) for g in groups]
                return counts == [2, 2, 2]

            await eventually(all_up, within=120, interval=1, what="2 Ready nodes in each group")
            first = await _uids(kube, groups)

            # One policy over the three groups, one node in flight at a time.
            selector = {
                "matchExpressions": [
                    {"key": "molt.dev/instance-group", "operator": "In", "values": groups}
                ]
            }
            await api.create_cluster_custom_object(
                GROUP,
                VERSION,
                "terminationpolicies",
                termination_policy(
                    f"all-{suffix}",
                    nodeSelector=selector,
                    rules={"maxAge": "45s"},
                    budgets=[{"maxInFlight": 1}],
                ),
            )

            async def rotated() -> bool:
                counts = [len(await ready_nodes(kube, g)) for g in groups]
                return not (await _uids(kube, groups)) & first and min(counts) >= 2

            await eventually(rotated, within=420, interval=2, what="every first node replaced")
            await api.delete_cluster_custom_object(
                GROUP, VERSION, "terminationpolicies", f"all-{suffix}"
            )
            assert watch.max_in_pipeline == 1, watch.peak
            assert watch.cordoned_without_reason == set()
            assert len(watch.ever_in_pipeline) >= 6, watch.ever_in_pipeline

            # Bare metal runs out of hosts: the third one's wipe failed (a claim says so,
            # as the provider writes it), and the group is asked for a third node.
            core = client.CoreV1Api(kube)

            async def two_running_one_free() -> bool:
                found = await core.read_namespaced_config_map(
                    CLAIMS_CONFIGMAP, controller_namespace
                )
                claims = [Claim.from_json(t) for t in (found.data or {}).values()]
                return len(claims) == 2 and all(c.state == "running" for c in claims)

            await eventually(two_running_one_free, within=120, interval=1, what="a free host")
            found = await core.read_namespaced_config_map(CLAIMS_CONFIGMAP, controller_namespace)
            taken = {Claim.from_json(t).host for t in (found.data or {}).values()}
            [spare] = [s for s in rack if s.name not in taken]
            failed = Claim(
                host=spare.name,
                group=bm,
                revision="wiped",
                zone="rack-1",
                capacity_type="on-demand",
                state="wipe-failed",
                address=lab.emulator.url,
                system_id=spare.system_id,
                secret=SECRET,
                claimed_at=datetime.now(UTC),
            )
            await core.patch_namespaced_config_map(
                CLAIMS_CONFIGMAP, controller_namespace, {"data": {spare.name: failed.to_json()}}
            )
            await _set_replicas(kube, bm, 3)

            async def overflowing() -> bool:
                status = await _group_status(kube, bm)
                asked = status.get("overflow") or {}
                borrowed = (await _group_status(kube, aw)).get("borrowed")
                aws_ready = len(await ready_nodes(kube, aw))
                return (asked.get("group"), asked.get("replicas"), borrowed, aws_ready) == (
                    aw,
                    1,
                    1,
                    3,
                )

            await eventually(
                overflowing, within=120, interval=1, what="aws runs bare metal's third"
            )

            # A person releases the host: bare metal launches its third node, and the AWS
            # group hands its borrowed one back through the pipeline.
            await core.patch_namespaced_config_map(
                CLAIMS_CONFIGMAP, controller_namespace, {"data": {spare.name: None}}
            )

            async def handed_back() -> bool:
                status = await _group_status(kube, bm)
                metal = len(await ready_nodes(kube, bm))
                nodes = await core.list_node(label_selector=f"molt.dev/instance-group={aw}")
                return "overflow" not in status and metal == 3 and len(nodes.items) == 2

            await eventually(handed_back, within=180, interval=1, what="the replica handed back")
            assert molt.alive(), molt.log()
            assert not aws_bridge.errors, aws_bridge.errors[-3:]
            assert not metal_bridge.errors, metal_bridge.errors[-3:]
    finally:
        await watch.stop()

    events = await client.CoreV1Api(kube).list_event_for_all_namespaces(
        field_selector=f"involvedObject.kind=InstanceGroup,involvedObject.name={bm}"
    )
    reasons = [e.reason for e in events.items]
    assert "Overflowing" in reasons
    assert "OverflowReturned" in reasons
