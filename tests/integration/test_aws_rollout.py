"""``molt run --provider aws`` against moto in server mode, behind the fault proxy, with a
kubelet stand-in (the bridge) registering a kwok Node for every instance moto launches.

An InstanceGroup across three zones becomes one Auto Scaling group per cell pinned to its
revision's launch template; a template change rolls every node to the new revision under
RollingReplace and under BlueGreen while a PDB-guarded Deployment never loses more than
its budget; throttling slows the controller but launches nothing twice and orphans
nothing; interruption notices arriving on an SQS queue (moto's) drain their nodes in time,
and an Auto Scaling lifecycle hook is held while its node drains (the fault proxy answers
and records the two lifecycle calls moto does not emulate, a fake of that part of AWS).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.cloud.aws import launch_template_name
from molt.policy.cells import template_revision
from tests.conftest import RunningSandbox
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.builders import deployment, instance_group, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_fleet import has_ready_replicas, node_events, node_gone
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


LIFECYCLE_ANSWER = (
    '<{0}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><{0}Result/>'
    "<ResponseMetadata><RequestId>7c6e177f-f082-11e1-ac58-3714bEXAMPLE</RequestId>"
    "</ResponseMetadata></{0}Response>"
)


def _spot_warning(instance: str, at: datetime) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": f"spot-{instance}",
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "account": "123456789012",
            "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance}"],
            "detail": {"instance-id": instance, "instance-action": "terminate"},
        }
    )


def _terminating(instance: str, asg: str, at: datetime) -> str:
    return json.dumps(
        {
            "Origin": "AutoScalingGroup",
            "Destination": "EC2",
            "Service": "AWS Auto Scaling",
            "Time": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "AccountId": "123456789012",
            "RequestId": f"request-{instance}",
            "AutoScalingGroupName": asg,
            "LifecycleHookName": "molt-drain",
            "LifecycleActionToken": str(uuid.uuid5(uuid.NAMESPACE_OID, instance)),
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "EC2InstanceId": instance,
        }
    )


async def test_interruption_notices_drain_their_nodes_in_time_and_hold_the_lifecycle_hook(
    cloud: Cloud,
    moto_endpoint: str,
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"int{uuid.uuid4().hex[:6]}"
    template = cloud.template("ami-44444444")
    revision = template_revision(Template.model_validate(template))
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_endpoint)
    queue = sqs.create_queue(QueueName=f"molt-{group}")["QueueUrl"]
    left_at_completion: list[tuple[str, list[str]]] = []

    def look_at_the_node(params: dict[str, str]) -> None:
        instance = params["InstanceId"]
        pods = sandbox.kubectl(
            "get", "pods", "-A", "--field-selector", f"spec.nodeName={instance}", "-o", "name"
        )
        left_at_completion.append((instance, pods.stdout.split()))

    answer = LIFECYCLE_ANSWER.format
    cloud.proxy.respond(
        "CompleteLifecycleAction", answer("CompleteLifecycleAction"), on_answer=look_at_the_node
    )
    cloud.proxy.respond("RecordLifecycleActionHeartbeat", answer("RecordLifecycleActionHeartbeat"))
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group, provider="aws", minSize=0, maxSize=6, replicas=3, zones=ZONES, template=template
        ),
    )
    spread = Counter({(revision, zone): 1 for zone in ZONES})
    async with AwsNodeBridge(kube, group):
        run_molt("--provider", "aws", "--interruption-queue", queue, "--lifecycle-heartbeat", "1s")
        await eventually(lambda: _ready_is(kube, group, spread), within=90, what="3 nodes")
        nodes = sorted(
            n.metadata.name
            for n in (
                await client.CoreV1Api(kube).list_node(
                    label_selector=f"molt.dev/instance-group={group}"
                )
            ).items
        )
        spot_node, hook_node = nodes[0], nodes[1]
        # A pod on the hook's node whose PDB refuses until the test lifts it.
        await client.AppsV1Api(kube).create_namespaced_deployment(
            namespace,
            deployment("hold", namespace, 1, node_selector={"kubernetes.io/hostname": hook_node}),
        )
        await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
            namespace, pdb("hold", namespace, "hold", min_available=1)
        )
        await eventually(
            lambda: has_ready_replicas(kube, namespace, 1, "hold"), what="the held pod"
        )

        noticed = datetime.now(UTC).replace(microsecond=0)
        for _ in range(2):  # delivered twice, as SQS may
            sqs.send_message(QueueUrl=queue, MessageBody=_spot_warning(spot_node, noticed))
        await eventually(lambda: node_gone(kube, spot_node), within=115, interval=0.5, what="gone")
        assert datetime.now(UTC) < noticed + timedelta(minutes=2), "drained after the reclaim"

        asg = cloud.autoscaling.describe_auto_scaling_instances(InstanceIds=[hook_node])[
            "AutoScalingInstances"
        ][0]["AutoScalingGroupName"]
        sqs.send_message(QueueUrl=queue, MessageBody=_terminating(hook_node, asg, noticed))

        async def heartbeats(count: int) -> bool:
            return len(cloud.proxy.seen("RecordLifecycleActionHeartbeat")) >= count

        await eventually(lambda: heartbeats(2), within=60, what="two lifecycle heartbeats")
        assert not cloud.proxy.seen("CompleteLifecycleAction"), "completed while pods remain"
        await client.PolicyV1Api(kube).delete_namespaced_pod_disruption_budget("hold", namespace)
        await eventually(lambda: node_gone(kube, hook_node), within=90, interval=0.5, what="gone")

        async def replaced() -> bool:
            ready = await _ready(kube, group)
            names = {
                n.metadata.name
                for n in (
                    await client.CoreV1Api(kube).list_node(
                        label_selector=f"molt.dev/instance-group={group}"
                    )
                ).items
            }
            return sum(ready.values()) == 3 and not names & {spot_node, hook_node}

        await eventually(replaced, within=120, interval=1, what="both nodes replaced")

    assert left_at_completion == [(hook_node, [])], "completed only once the node was empty"
    log = [entry.action for entry in cloud.proxy.log]
    completed = log.index("CompleteLifecycleAction")
    assert "RecordLifecycleActionHeartbeat" not in log[completed:], "no heartbeat after it"
    reasons = [reason for reason, _ in await node_events(kube, spot_node)]
    assert reasons.count("Interrupted") == 1, "a duplicated message does nothing twice"
    hook_reasons = [reason for reason, _ in await node_events(kube, hook_node)]
    assert "LifecycleHookCompleted" in hook_reasons
