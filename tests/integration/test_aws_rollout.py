"""``molt run --provider aws`` against moto in server mode, behind the fault proxy, with a
kubelet stand-in (the bridge) registering a kwok Node for every instance moto launches.

An InstanceGroup across three zones becomes one Auto Scaling group per cell pinned to its
revision's launch template; a template change rolls every node to the new revision under
RollingReplace and under BlueGreen while a PDB-guarded Deployment never loses more than
its budget; throttling slows the controller but launches nothing twice and orphans
nothing; a spot interruption warning delivered by moto's EventBridge to moto's SQS
gets its node's replacement launched in another cell and the node drained before the
deadline without breaching a PDB, and an Auto Scaling lifecycle hook is held while its
node drains (the fault proxy answers and records the two lifecycle calls moto does not
emulate, a fake of that part of AWS).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.api.labels import GROUP_LABEL
from molt.cloud.aws import launch_template_name
from molt.policy.cells import template_revision
from molt.policy.interruptions import SPOT_DETAIL, Notice, parse_message
from tests.conftest import RunningSandbox
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.builders import deployment, instance_group, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_fleet import has_ready_replicas, node_events, node_gone
from tests.support.streams import PodNodeStreams
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
        molt = run_molt("--provider", "aws")
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
    story = [
        line
        for line in molt.log().splitlines()
        if any(word in line for word in ("selected", "terminat", "launch", "scale", "health"))
    ]
    assert cloud.instances(group) == Counter({"running": 5, "terminated": 1}), story[-40:]
    assert sum(g["DesiredCapacity"] for g in cloud.asgs(group).values()) == 5


LIFECYCLE_ANSWER = (
    '<{0}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><{0}Result/>'
    "<ResponseMetadata><RequestId>7c6e177f-f082-11e1-ac58-3714bEXAMPLE</RequestId>"
    "</ResponseMetadata></{0}Response>"
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


SPOT_PATTERN = {"source": ["aws.ec2"], "detail-type": [SPOT_DETAIL]}
"""The rule aws-node-termination-handler documents for spot interruption warnings."""


async def _pods_by_node(kube: client.ApiClient, namespace: str, app: str) -> Counter[str]:
    pods = await client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"app={app}")
    return Counter(p.spec.node_name for p in pods.items if p.spec.node_name)


async def _group_nodes(kube: client.ApiClient, group: str) -> dict[str, dict[str, str]]:
    """The group's Ready nodes, with their labels."""
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return {
        n.metadata.name: n.metadata.labels
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }


def _cell(labels: dict[str, str]) -> tuple[str, str]:
    return labels["topology.kubernetes.io/zone"], labels["molt.dev/capacity-type"]


async def test_a_spot_interruption_through_eventbridge_is_replaced_in_another_cell_in_time(
    cloud: Cloud,
    moto_endpoint: str,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    """A spot group, one node per zone, carrying a PDB-guarded Deployment. The warning
    goes through moto's EventBridge as AWS delivers it (a rule with the documented
    pattern, its SQS target, ``PutEvents``; moto takes the ``aws.ec2`` source that AWS
    keeps for itself), and the message EventBridge delivered is delivered again, as SQS
    may. Before the notice's deadline the replacement is launched (moto's LaunchTime)
    and joined in another cell (the interrupted spot cell rests), and the node is
    drained and gone; no pod of the Deployment died with its node and it never had
    fewer Ready pods than its PDB allows."""
    group = f"spot{uuid.uuid4().hex[:6]}"
    template = cloud.template("ami-55555555")
    revision = template_revision(Template.model_validate(template))
    direct = {"region_name": REGION, "endpoint_url": moto_endpoint}
    sqs, events = boto3.client("sqs", **direct), boto3.client("events", **direct)
    queue, tap = (sqs.create_queue(QueueName=f"molt-{group}-{n}")["QueueUrl"] for n in "qt")
    arns = [
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        for url in (queue, tap)
    ]
    rule = f"molt-{group}-spot"
    events.put_rule(Name=rule, EventPattern=json.dumps(SPOT_PATTERN), State="ENABLED")
    events.put_targets(
        Rule=rule, Targets=[{"Id": "molt", "Arn": arns[0]}, {"Id": "tap", "Arn": arns[1]}]
    )
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group,
            provider="aws",
            minSize=0,
            maxSize=6,
            replicas=3,
            zones=ZONES,
            template=template,
            capacity={"types": ["spot"]},
        ),
    )
    spread = Counter({(revision, zone): 1 for zone in ZONES})
    watch, streams = FleetWatch(), PodNodeStreams()
    async with AwsNodeBridge(kube, group):
        run_molt("--provider", "aws", "--interruption-queue", queue)
        await eventually(lambda: _ready_is(kube, group, spread), within=60, what="3 nodes")
        before = await _group_nodes(kube, group)
        assert {_cell(labels)[1] for labels in before.values()} == {"spot"}
        await client.AppsV1Api(kube).create_namespaced_deployment(
            namespace, deployment("web", namespace, 6, node_selector={GROUP_LABEL: group})
        )
        await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
            namespace, pdb("web", namespace, "web", max_unavailable=1)
        )
        await eventually(lambda: _web_ready(kube, namespace), within=30, what="6 web pods")
        await watch.start(kube, namespace, "web", 6, group)
        await streams.start(kube)
        try:
            spot_node, carried = (await _pods_by_node(kube, namespace, "web")).most_common(1)[0]
            assert carried >= 2, "the interrupted node carries a few pods"
            noticed = datetime.now(UTC).replace(microsecond=0)
            deadline = noticed + timedelta(minutes=2)
            put = events.put_events(
                Entries=[
                    {
                        "Source": "aws.ec2",
                        "DetailType": SPOT_DETAIL,
                        "Detail": json.dumps(
                            {"instance-id": spot_node, "instance-action": "terminate"}
                        ),
                        "Resources": [f"arn:aws:ec2:{REGION}:123456789012:instance/{spot_node}"],
                        "Time": noticed,
                    }
                ]
            )
            assert put["FailedEntryCount"] == 0, put
            # What EventBridge put on the queue: the event itself as the body (moto adds
            # an "ingestion-time"), with EventBridge's own id. Molt reads it as it is.
            tapped = sqs.receive_message(QueueUrl=tap, WaitTimeSeconds=5)["Messages"]
            body = tapped[0]["Body"]
            envelope = json.loads(body)
            assert envelope["id"] == put["Entries"][0]["EventId"]
            assert envelope["detail"] == {"instance-id": spot_node, "instance-action": "terminate"}
            assert parse_message(body) == Notice(
                "spot-interruption", spot_node, noticed, envelope["id"]
            )
            sqs.send_message(QueueUrl=queue, MessageBody=body)  # delivered twice

            async def replacement() -> dict[str, dict[str, str]]:
                nodes = await _group_nodes(kube, group)
                return {n: labels for n, labels in nodes.items() if n not in before}

            await eventually(
                lambda: _has_any(replacement()), within=100, interval=0.5, what="a replacement"
            )
            joined = datetime.now(UTC)
            new = await replacement()
            await eventually(
                lambda: node_gone(kube, spot_node), within=100, interval=0.5, what="gone"
            )
            gone = datetime.now(UTC)
            await eventually(lambda: _web_ready(kube, namespace), within=30, what="6 web pods")
        finally:
            await watch.stop()
            await streams.stop()

    assert joined < deadline, f"the replacement joined {joined - deadline} after the reclaim"
    assert gone < deadline, f"drained {gone - deadline} after the reclaim"
    launched = cloud.ec2.describe_instances(InstanceIds=list(new))["Reservations"]
    for instance in (i for r in launched for i in r["Instances"]):
        assert instance["LaunchTime"] < deadline, instance["LaunchTime"]
    # The spot pool of the interrupted cell is being reclaimed: its replacement went to
    # another cell (the other zones' spot cells here).
    interrupted = _cell(before[spot_node])
    assert all(_cell(labels) != interrupted for labels in new.values()), new
    assert watch.min_ready_pods is not None
    assert watch.min_ready_pods >= 5, watch.min_ready_pods
    assert streams.died_with_their_node() == []
    reasons = [reason for reason, _ in await node_events(kube, spot_node)]
    assert reasons.count("Interrupted") == 1, "a message delivered twice does nothing twice"


async def _has_any(found: Awaitable[dict[str, Any]]) -> bool:
    return bool(await found)


async def test_an_auto_scaling_interruption_holds_the_lifecycle_hook_while_its_node_drains(
    cloud: Cloud,
    moto_endpoint: str,
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    """Auto Scaling's own lifecycle notification, sent to the queue as Auto Scaling
    sends it (no EventBridge in between), twice."""
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
        await eventually(lambda: _ready_is(kube, group, spread), within=60, what="3 nodes")
        hook_node = sorted(await _group_nodes(kube, group))[0]
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
        asg = cloud.autoscaling.describe_auto_scaling_instances(InstanceIds=[hook_node])[
            "AutoScalingInstances"
        ][0]["AutoScalingGroupName"]
        for _ in range(2):  # delivered twice, as SQS may
            sqs.send_message(QueueUrl=queue, MessageBody=_terminating(hook_node, asg, noticed))

        async def heartbeats(count: int) -> bool:
            return len(cloud.proxy.seen("RecordLifecycleActionHeartbeat")) >= count

        await eventually(lambda: heartbeats(2), within=30, what="two lifecycle heartbeats")
        assert not cloud.proxy.seen("CompleteLifecycleAction"), "completed while pods remain"
        await client.PolicyV1Api(kube).delete_namespaced_pod_disruption_budget("hold", namespace)
        await eventually(lambda: node_gone(kube, hook_node), within=60, interval=0.5, what="gone")

        async def replaced() -> bool:
            nodes = await _group_nodes(kube, group)
            return len(nodes) == 3 and hook_node not in nodes

        await eventually(replaced, within=60, interval=1, what="the node replaced")

    assert left_at_completion == [(hook_node, [])], "completed only once the node was empty"
    log = [entry.action for entry in cloud.proxy.log]
    completed = log.index("CompleteLifecycleAction")
    assert "RecordLifecycleActionHeartbeat" not in log[completed:], "no heartbeat after it"
    hook_reasons = [reason for reason, _ in await node_events(kube, hook_node)]
    assert hook_reasons.count("Interrupted") == 1, "a message delivered twice does nothing twice"
    assert "LifecycleHookCompleted" in hook_reasons
