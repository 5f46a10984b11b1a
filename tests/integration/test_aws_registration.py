"""Registration on AWS: ``molt run --provider aws`` against moto in server mode labels the
Nodes that moto's instances join as, and nothing else.

The kubelet stand-in (the bridge) registers each instance as a bare kwok Node, only its
``spec.providerID`` and a kubelet's own labels, as a stock bootstrap would. Molt maps the
providerID to the instance's cell and gives the Node its group, revision, zone and
capacity-type labels, the revision template's labels and taints, its launch time and an
Event. A Node whose providerID names an instance in no Molt cell is watched for the
whole test and never touched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.cloud.kwok_nodes import kwok_node
from molt.kube.transport import RawApi
from molt.kube.watch import Reflector
from molt.kube.writes import KubeWrites
from molt.policy.age import format_rfc3339
from molt.policy.cells import template_revision
from molt.policy.snapshot import NodeTaint
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.builders import instance_group
from tests.support.controller import MoltProcess
from tests.support.waiting import eventually

REGION = "eu-west-1"
ZONES = ["eu-west-1a", "eu-west-1b"]
STRANGER = "stranger"
STRANGER_PROVIDER_ID = "aws:///eu-west-1a/i-0000000000000dead"


@dataclass
class Moto:
    subnets: dict[str, str]
    ec2: Any


@pytest.fixture
def moto(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """A VPC with a subnet per zone; ``molt run`` talks to moto directly."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnets = {
        zone: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.50.{i}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for i, zone in enumerate(ZONES)
    }
    return Moto(subnets, ec2)


def _facts(raw: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    meta = raw.get("metadata") or {}
    taints = [f"{t['key']}:{t['effect']}" for t in (raw.get("spec") or {}).get("taints") or []]
    return dict(meta.get("labels") or {}), taints


@dataclass
class NodeHistory:
    """Every version of one Node the watch delivered, from its creation on."""

    versions: list[tuple[dict[str, str], list[str]]] = field(default_factory=list)

    def record(self, key: str, old: Any, new: Any) -> None:
        if new is not None:
            self.versions.append(new)


async def test_bare_aws_nodes_get_their_cell_and_template_from_molt_and_strangers_nothing(
    moto: Moto,
    kube: client.ApiClient,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    core = client.CoreV1Api(kube)
    history = NodeHistory()
    watch = Reflector(
        RawApi(kube),
        "/api/v1/nodes",
        _facts,
        name="watch-stranger",
        field_selector=f"metadata.name={STRANGER}",
        on_change=history.record,
    )
    watching = asyncio.create_task(watch.run())
    await watch.synced.wait()
    # A kwok Node (so it heartbeats, and every heartbeat is a change Molt sees) whose
    # providerID is well-formed but names an instance in none of Molt's cells.
    stranger = kwok_node(STRANGER)
    stranger["spec"]["providerID"] = STRANGER_PROVIDER_ID
    await core.create_node(stranger)  # type: ignore[arg-type]

    group = f"reg{uuid.uuid4().hex[:6]}"
    template = {
        "instanceTypes": ["m5.large"],
        "image": "ami-44444444",
        "labels": {"team": "data"},
        "taints": [{"key": "dedicated", "value": "data", "effect": "NoSchedule"}],
        "aws": {"subnets": moto.subnets},
    }
    revision = template_revision(Template.model_validate(template))
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group, provider="aws", minSize=0, maxSize=4, replicas=2, zones=ZONES, template=template
        ),
    )
    try:
        async with AwsNodeBridge(kube, group, interval=0.3) as bridge:
            molt = run_molt("--provider", "aws")

            async def registered() -> list[Any]:
                nodes = await core.list_node(label_selector=f"molt.dev/instance-group={group}")
                return nodes.items if len(nodes.items) == 2 else []

            nodes = await eventually(registered, within=90, what="2 registered nodes")
            assert sorted(bridge.joined) == sorted(n.metadata.name for n in nodes)
            assert bridge.errors == []
            # Long enough for several heartbeats and resyncs of the stranger to be seen.
            await asyncio.sleep(6)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)

    for node in nodes:
        name = node.metadata.name
        found = moto.ec2.describe_instances(InstanceIds=[name])["Reservations"][0]
        instance = found["Instances"][0]
        zone = instance["Placement"]["AvailabilityZone"]
        labels = node.metadata.labels
        assert labels["molt.dev/instance-group"] == group
        assert labels["molt.dev/revision"] == revision
        assert labels["topology.kubernetes.io/zone"] == zone
        assert labels["molt.dev/capacity-type"] == "on-demand"
        assert labels["team"] == "data"
        assert labels["kubernetes.io/hostname"] == name  # the kubelet's labels stay
        dedicated = [t for t in node.spec.taints or [] if t.key == "dedicated"]
        assert [(t.value, t.effect) for t in dedicated] == [("data", "NoSchedule")]
        launched = format_rfc3339(instance["LaunchTime"])
        assert node.metadata.annotations["molt.dev/launched-at"] == launched
        events = await core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name},reason=Registered"
        )
        assert len(events.items) == 1
        assert f"{group}/{revision}/{zone}/on-demand" in events.items[0].message
    assert sorted({n.metadata.labels["topology.kubernetes.io/zone"] for n in nodes}) == ZONES

    # The stranger: seen in many versions, none with anything of Molt's.
    assert len(history.versions) >= 2, history.versions
    for labels, taints in history.versions:
        assert [k for k in labels if k.startswith("molt.dev/")] == []
        assert "topology.kubernetes.io/zone" not in labels
        assert "team" not in labels
        assert "dedicated:NoSchedule" not in taints
    unknown = [
        line
        for line in molt.log().splitlines()
        if "registration.unknown_node" in line and STRANGER in line
    ]
    assert len(unknown) == 1, unknown


async def test_registration_merges_taints_with_the_nodes_own_and_never_doubles_them(
    kube: client.ApiClient, empty_cluster: None
) -> None:
    core = client.CoreV1Api(kube)
    own = [
        {"key": "dedicated", "value": "mine", "effect": "NoSchedule"},
        {"key": "example.com/booting", "effect": "NoExecute"},
    ]
    await core.create_node(kwok_node("joining", taints=own))  # type: ignore[arg-type]
    writes = KubeWrites(RawApi(kube), check_fence=lambda: None)
    wanted = [NodeTaint("dedicated", "NoSchedule", "data"), NodeTaint("gpu", "NoSchedule", "yes")]

    for _ in range(2):  # a repeat (a retried reconcile) changes nothing
        assert await writes.register_node(
            "joining",
            labels={"molt.dev/instance-group": "workers", "team": "data"},
            annotations={"molt.dev/launched-at": "2026-11-23T12:00:00Z"},
            taints=wanted,
        )

    node = await core.read_node("joining")
    # The node controller may add its own not-ready taints meanwhile; they are not ours.
    taints = [
        (t.key, t.value, t.effect)
        for t in node.spec.taints
        if not t.key.startswith("node.kubernetes.io/")
    ]
    assert taints == [
        ("dedicated", "mine", "NoSchedule"),  # the node's own, kept as it was
        ("example.com/booting", None, "NoExecute"),
        ("gpu", "yes", "NoSchedule"),
    ]
    assert node.metadata.labels["molt.dev/instance-group"] == "workers"
    assert node.metadata.labels["team"] == "data"
    assert node.metadata.labels["kubernetes.io/hostname"] == "joining"
    assert node.metadata.annotations["molt.dev/launched-at"] == "2026-11-23T12:00:00Z"
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    assert not await writes.register_node("gone", labels={}, annotations={}, taints=wanted)
