"""Load-balancer deregistration on AWS: ``molt run --provider aws`` against moto in server
mode (ELBv2 included), behind the fault proxy, with the kubelet stand-in (the bridge).

An InstanceGroup whose template names an ELBv2 target group is rolled to a new template.
Asserted from independent observers (watch streams of nodes and pods, the proxy's record
of every AWS call, moto's own ``DescribeTargetHealth``): every old instance leaves the
target group before the first of its node's pods is evicted, exactly once; every
node-update event with ``spec.unschedulable`` true carries
``node.kubernetes.io/exclude-from-external-load-balancers: "true"``; the Auto Scaling
group (not Molt) registers the replacements. A deregistration AWS refuses
(``AccessDenied``, injected by the proxy) holds the node, reported on it, until a retry
succeeds. The provider alone, against moto: only the instance's own entries leave (port
overrides included), a repeat deregisters nothing, the delay is that of the target
groups that listed it, a missing target group is a ``ProviderError``.

moto drops a deregistered target at once (it emulates no ``draining`` state), so on moto
the wait after deregistration ends at Molt's first check; the wait itself is covered by
the unit tests (tests/unit/test_load_balancers.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.cloud.aws import AwsProvider
from molt.cloud.provider import ProviderError
from molt.policy.snapshot import NodeView
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.builders import deployment, instance_group, pdb
from tests.support.controller import MoltProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.streams import PodNodeStreams
from tests.support.waiting import eventually

REGION = "eu-west-1"
ZONE = "eu-west-1a"
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"
DEREGISTERED_AT = "molt.dev/deregistered-at"


@dataclass
class Cloud:
    proxy: FaultProxy
    subnet: str
    target_group: str
    elbv2: Any

    def targets(self) -> set[str]:
        """The instances the target group lists, in any state (moto's own answer)."""
        found = self.elbv2.describe_target_health(TargetGroupArn=self.target_group)
        return {d["Target"]["Id"] for d in found["TargetHealthDescriptions"]}

    def deregistered(self) -> dict[str, list[float]]:
        """Instance -> when each DeregisterTargets that named it was answered (moto acted)."""
        calls: dict[str, list[float]] = {}
        for seen in self.proxy.seen("DeregisterTargets"):
            if seen.status != 200:
                continue
            for key, value in seen.params.items():
                if key.startswith("Targets.member.") and key.endswith(".Id"):
                    calls.setdefault(value, []).append(seen.at)
        return calls


@pytest.fixture
def cloud(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    """A subnet and an HTTP target group (deregistration delay 5 s) in moto; ``molt run``
    and the bridge talk to it through the fault proxy."""
    with FaultProxy(moto_endpoint) as proxy:
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        direct = {"region_name": REGION, "endpoint_url": moto_endpoint}
        ec2 = boto3.client("ec2", **direct)
        vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.0.0/24", AvailabilityZone=ZONE)
        elbv2 = boto3.client("elbv2", **direct)
        arn = elbv2.create_target_group(
            Name=f"web-{uuid.uuid4().hex[:8]}",
            Protocol="HTTP",
            Port=80,
            VpcId=vpc,
            TargetType="instance",
        )["TargetGroups"][0]["TargetGroupArn"]
        elbv2.modify_target_group_attributes(
            TargetGroupArn=arn,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "5"}],
        )
        yield Cloud(proxy, subnet["Subnet"]["SubnetId"], arn, elbv2)


@dataclass
class LbStreams(PodNodeStreams):
    """Also records, per node, whether every cordoned version carried the exclusion
    label, when its deregistration annotation first appeared (etcd revision), and the
    wall time at which the first deletion of one of its pods was seen."""

    unlabelled_while_cordoned: list[str] = field(default_factory=list)
    annotated_rv: dict[str, int] = field(default_factory=dict)
    first_eviction_at: dict[str, float] = field(default_factory=dict)
    first_eviction_rv: dict[str, int] = field(default_factory=dict)

    def _node(self, kind: str, obj: dict[str, Any]) -> None:
        super()._node(kind, obj)
        meta = obj["metadata"]
        cordoned = kind != "DELETED" and (obj.get("spec") or {}).get("unschedulable")
        if cordoned and (meta.get("labels") or {}).get(EXCLUDE) != "true":
            self.unlabelled_while_cordoned.append(f"{meta['name']}@{meta['resourceVersion']}")
        if DEREGISTERED_AT in (meta.get("annotations") or {}):
            self.annotated_rv.setdefault(meta["name"], int(meta["resourceVersion"]))

    def _pod(self, kind: str, obj: dict[str, Any]) -> None:
        before = self.pods.get(obj["metadata"]["uid"])
        was_deleting = before is not None and before.deletion_rv is not None
        super()._pod(kind, obj)
        trace = self.pods[obj["metadata"]["uid"]]
        if trace.deletion_rv is not None and not was_deleting and trace.node:
            self.first_eviction_at.setdefault(trace.node, time.time())
            self.first_eviction_rv.setdefault(trace.node, trace.deletion_rv)


async def _ready_nodes(kube: client.ApiClient, group: str) -> dict[str, str]:
    """Ready group nodes -> their revision."""
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return {
        n.metadata.name: n.metadata.labels["molt.dev/revision"]
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }


def _template(cloud: Cloud, image: str) -> dict[str, Any]:
    return {
        "instanceTypes": ["m5.large"],
        "image": image,
        "aws": {"subnets": {ZONE: cloud.subnet}, "targetGroups": [cloud.target_group]},
    }


async def test_instances_leave_their_target_group_before_their_pods_are_evicted(
    cloud: Cloud,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"lb{uuid.uuid4().hex[:6]}"
    custom = client.CustomObjectsApi(kube)
    await custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group,
            provider="aws",
            minSize=0,
            maxSize=6,
            replicas=2,
            zones=[ZONE],
            template=_template(cloud, "ami-11111111"),
        ),
    )
    selector = {"molt.dev/instance-group": group}
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace,
        deployment("web", namespace, 2, node_selector=selector, spread_over_nodes=True),
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    # AccessDenied for the first two deregistrations: the node must be held, not drained.
    cloud.proxy.fail("DeregisterTargets", status=400, code="AccessDenied", times=2)
    streams = LbStreams()
    async with AwsNodeBridge(kube, group):
        molt = run_molt("--provider", "aws")

        async def two_ready() -> bool:
            return len(await _ready_nodes(kube, group)) == 2

        await eventually(two_ready, within=90, what="2 Ready nodes")
        old = set(await _ready_nodes(kube, group))
        # The cell's Auto Scaling group registered its instances (Molt registers none).
        await eventually(
            lambda: _is(cloud.targets, old), within=30, what="both instances in the target group"
        )
        assert cloud.deregistered() == {}

        async def web_ready() -> bool:
            found = await client.AppsV1Api(kube).read_namespaced_deployment_status("web", namespace)
            return (found.status.ready_replicas or 0) == 2

        await eventually(web_ready, within=60, what="2 web pods")
        await streams.start(kube)
        try:
            await custom.patch_cluster_custom_object(
                GROUP,
                VERSION,
                "instancegroups",
                group,
                {"spec": {"template": _template(cloud, "ami-22222222")}},
                _content_type="application/merge-patch+json",
            )

            async def held_and_reported() -> bool:
                events = await client.CoreV1Api(kube).list_namespaced_event(
                    "default", field_selector="reason=DeregistrationFailed"
                )
                return any(e.involved_object.name in old for e in events.items)

            await eventually(held_and_reported, within=90, what="a DeregistrationFailed Event")
            assert not streams.first_eviction_at, "a pod was evicted before its deregistration"

            async def rolled() -> bool:
                ready = await _ready_nodes(kube, group)
                return len(ready) == 2 and not (set(ready) & old) and set(ready) == cloud.targets()

            await eventually(rolled, within=150, interval=1, what="both nodes replaced")
            await eventually(web_ready, within=60, what="2 web pods")
        finally:
            await streams.stop()
    assert not molt.log().count("Traceback"), molt.log()[-3000:]

    assert cloud.proxy.count("DeregisterTargets") >= 3  # two refused, then the retries
    calls = cloud.deregistered()
    assert set(calls) == old, calls
    assert all(len(at) == 1 for at in calls.values()), f"deregistered twice: {calls}"
    evicted = [name for name in old if name in streams.first_eviction_at]
    assert evicted, "no old node had a pod to evict: the ordering was not tested"
    for name in evicted:
        assert calls[name][0] < streams.first_eviction_at[name], (name, calls[name])
        assert streams.annotated_rv[name] < streams.first_eviction_rv[name], name
    assert streams.unlabelled_while_cordoned == []
    assert all(streams.nodes[name].cordoned_rv is not None for name in old)
    assert streams.died_with_their_node() == []


async def _is(read: Callable[[], set[str]], wanted: set[str]) -> bool:
    return read() == wanted


async def test_the_provider_deregisters_only_the_instance_once_and_reads_the_delay(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = {"region_name": REGION, "endpoint_url": moto_endpoint}
    ec2 = boto3.client("ec2", **direct)
    elbv2 = boto3.client("elbv2", **direct)
    vpc = ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.61.0.0/24", AvailabilityZone=ZONE)
    launched = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=2,
        MaxCount=2,
        SubnetId=subnet["Subnet"]["SubnetId"],
    )["Instances"]
    mine, other = (i["InstanceId"] for i in launched)
    arns = []
    for delay in ("7", "30"):
        arn = elbv2.create_target_group(
            Name=f"tg-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=vpc
        )["TargetGroups"][0]["TargetGroupArn"]
        elbv2.modify_target_group_attributes(
            TargetGroupArn=arn,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": delay}],
        )
        arns.append(arn)
    with_me, without_me = arns
    elbv2.register_targets(
        TargetGroupArn=with_me, Targets=[{"Id": mine, "Port": 8080}, {"Id": other}]
    )
    elbv2.register_targets(TargetGroupArn=without_me, Targets=[{"Id": other}])
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    provider = AwsProvider(boto3.session.Session(region_name=REGION))
    node = NodeView(name=mine, created=datetime.now(UTC), provider_id=f"aws:///{ZONE}/{mine}")

    def listed(arn: str) -> set[tuple[str, int]]:
        found = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        return {(d["Target"]["Id"], d["Target"]["Port"]) for d in found}

    assert await provider.deregister(node, arns) == 7.0  # only the group that listed it
    assert listed(with_me) == {(other, 80)}
    assert listed(without_me) == {(other, 80)}
    assert not await provider.deregistering(node, arns)
    assert await provider.deregister(node, arns) == 0.0  # a repeat: nothing listed, no call

    missing = with_me.rsplit("/", 1)[0] + "/0000000000000000"
    with pytest.raises(ProviderError, match="TargetGroupNotFound"):
        await provider.deregister(node, [missing])
    stranger = NodeView(name="stranger", created=datetime.now(UTC), provider_id=None)
    with pytest.raises(ProviderError, match="no AWS providerID"):
        await provider.deregister(stranger, arns)
