"""``molt run --provider aws`` against moto in server mode, behind the fault proxy, with a
kubelet stand-in (the bridge) registering a kwok Node for every instance moto launches.

An InstanceGroup across three zones becomes one Auto Scaling group per cell pinned to its
revision's launch template; a template change rolls every node to the new revision under
RollingReplace and under BlueGreen while a PDB-guarded Deployment never loses more than
its budget; throttling slows the controller but launches nothing twice and orphans
nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.cloud.aws import launch_template_name
from molt.policy.cells import template_revision
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.builders import deployment, instance_group, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.waiting import eventually

REGION = "eu-west-1"
ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]


@dataclass
class Cloud:
    proxy: FaultProxy
    subnets: dict[str, str]
    autoscaling: Any
    ec2: Any

    def template(self, image: str) -> dict[str, Any]:
        return {"instanceTypes": ["m5.large"], "image": image, "aws": {"subnets": self.subnets}}

    def asgs(self, group: str) -> dict[str, dict[str, Any]]:
        found = self.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
        return {
            g["AutoScalingGroupName"]: g
            for g in found
            if g["AutoScalingGroupName"].startswith(f"molt-{group}-")
        }

    def instances(self, group: str) -> Counter[str]:
        """Every instance ever launched for the group, by state."""
        found = self.ec2.describe_instances(
            Filters=[{"Name": "tag:molt.dev/instance-group", "Values": [group]}]
        )["Reservations"]
        return Counter(i["State"]["Name"] for r in found for i in r["Instances"])


@pytest.fixture
def cloud(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    """A VPC with a subnet per zone in moto, and the fault proxy ``molt run`` talks to."""
    with FaultProxy(moto_endpoint) as proxy:
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        direct = {"region_name": REGION, "endpoint_url": moto_endpoint}
        ec2 = boto3.client("ec2", **direct)
        vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
        subnets = {
            zone: ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"10.40.{index}.0/24", AvailabilityZone=zone
            )["Subnet"]["SubnetId"]
            for index, zone in enumerate(ZONES)
        }
        yield Cloud(proxy, subnets, boto3.client("autoscaling", **direct), ec2)


async def _ready(kube: client.ApiClient, group: str) -> Counter[tuple[str, str]]:
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return Counter(
        (n.metadata.labels["molt.dev/revision"], n.metadata.labels["topology.kubernetes.io/zone"])
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    )


async def _all_nodes(kube: client.ApiClient, group: str) -> int:
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return len(nodes.items)


def _spread(revision: str) -> Counter[tuple[str, str]]:
    return Counter({(revision, zone): 2 for zone in ZONES})


@pytest.mark.parametrize("strategy", ["RollingReplace", "BlueGreen"])
async def test_a_template_change_rolls_every_node_on_aws_within_the_pdb(
    strategy: str,
    cloud: Cloud,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"aws{uuid.uuid4().hex[:6]}"
    first = cloud.template("ami-11111111")
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group,
            provider="aws",
            minSize=0,
            maxSize=12,
            replicas=6,
            zones=ZONES,
            template=first,
            strategy={"type": strategy, "maxSurge": 1, "maxUnavailable": 0},
        ),
    )
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace, deployment("web", namespace, 6, node_selector={"molt.dev/instance-group": group})
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    rev1 = template_revision(Template.model_validate(first))
    async with AwsNodeBridge(kube, group):
        run_molt("--provider", "aws")
        await eventually(
            lambda: _ready_is(kube, group, _spread(rev1)), within=90, what="6 nodes, 2 per zone"
        )
        asgs = cloud.asgs(group)
        assert len(asgs) == 3
        for described in asgs.values():
            spec = described["MixedInstancesPolicy"]["LaunchTemplate"][
                "LaunchTemplateSpecification"
            ]
            assert spec["LaunchTemplateName"] == launch_template_name(group, rev1)
            assert spec["Version"] == "1"
            assert described["DesiredCapacity"] == 2

        watch = FleetWatch()
        await watch.start(kube, namespace, "web", 6, group)
        try:
            await eventually(lambda: _web_ready(kube, namespace), within=60, what="6 web pods")
            second = cloud.template("ami-22222222")
            rev2 = template_revision(Template.model_validate(second))
            await client.CustomObjectsApi(kube).patch_cluster_custom_object(
                GROUP,
                VERSION,
                "instancegroups",
                group,
                {"spec": {"template": second}},
                _content_type="application/merge-patch+json",
            )

            async def rolled() -> bool:
                return (
                    await _ready(kube, group) == _spread(rev2)
                    and await _all_nodes(kube, group) == 6
                    and len(cloud.asgs(group)) == 3
                )

            await eventually(rolled, within=240, interval=1, what="every node at the new revision")
            await eventually(lambda: _web_ready(kube, namespace), within=60, what="6 web pods")
        finally:
            await watch.stop()

    assert watch.min_ready is not None
    assert watch.min_ready >= 5, watch.min_ready
    for described in cloud.asgs(group).values():
        assert launch_template_name(group, rev2) in str(described["MixedInstancesPolicy"])
    # Nothing orphaned, nothing launched twice: 6 old instances gone, 6 new running.
    assert cloud.instances(group) == Counter({"running": 6, "terminated": 6})


async def _ready_is(kube: client.ApiClient, group: str, wanted: Counter[tuple[str, str]]) -> bool:
    return await _ready(kube, group) == wanted


async def _web_ready(kube: client.ApiClient, namespace: str) -> bool:
    found = await client.AppsV1Api(kube).read_namespaced_deployment_status("web", namespace)
    return (found.status.ready_replicas or 0) == 6


async def test_throttling_slows_the_controller_but_launches_nothing_twice(
    cloud: Cloud,
    kube: client.ApiClient,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"thr{uuid.uuid4().hex[:6]}"
    template = cloud.template("ami-33333333")
    revision = template_revision(Template.model_validate(template))
    cloud.proxy.fail("CreateAutoScalingGroup", code="Throttling", times=4)
    cloud.proxy.fail("SetDesiredCapacity", status=503, code="ServiceUnavailable", times=3)
    cloud.proxy.fail("DescribeAutoScalingGroups", code="Throttling", times=5)
    cloud.proxy.fail("TerminateInstanceInAutoScalingGroup", code="Throttling", times=2)
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group, provider="aws", minSize=0, maxSize=12, replicas=6, zones=ZONES, template=template
        ),
    )
    async with AwsNodeBridge(kube, group):
        run_molt("--provider", "aws")
        await eventually(
            lambda: _ready_is(kube, group, _spread(revision)), within=120, what="6 nodes"
        )
        # Scale down by one through the pipeline while terminations are throttled.
        await client.CustomObjectsApi(kube).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "instancegroups",
            group,
            {"spec": {"replicas": 5}},
            _content_type="application/merge-patch+json",
        )

        async def five() -> bool:
            return (
                sum((await _ready(kube, group)).values()) == 5
                and await _all_nodes(kube, group) == 5
            )

        await eventually(five, within=120, interval=1, what="5 nodes after a scale-down")

    assert cloud.proxy.count("CreateAutoScalingGroup") >= 4
    assert len(cloud.asgs(group)) == 3
    assert cloud.instances(group) == Counter({"running": 5, "terminated": 1})
    assert sum(g["DesiredCapacity"] for g in cloud.asgs(group).values()) == 5
