"""The AWS provider against moto in server mode, behind the fault proxy.

Each cell is one Auto Scaling group pinned to its revision's launch template version and
tagged with its cell; observe reports instances with launch times and providerIDs;
terminating shrinks a cell by one; empty cells are deleted and their version pruned;
capacity errors become CapacityError for one zone only; throttling and outages slow
calls down without duplicating anything. The bridge test runs a kubelet stand-in that
turns moto's instances into kwok Nodes in the sandbox.

moto does not emulate scaling activities (always empty), so the fault proxy answers
DescribeScalingActivities in AWS's place where a test needs failures.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api.instancegroup import Template
from molt.cloud.aws import (
    AwsProvider,
    asg_name,
    aws_provider_from_environment,
    is_capacity_shortage,
    launch_template_name,
    provider_id,
)
from molt.cloud.provider import (
    CapacityError,
    CellObservation,
    CellRef,
    ProviderError,
    Rebooter,
)
from molt.policy.age import format_rfc3339
from molt.policy.snapshot import NodeView
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.fault_proxy import FaultProxy
from tests.support.waiting import eventually

REGION = "eu-west-1"
ZONES = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
REV1 = "7f3c9a"
REV2 = "b41d2e"
CREATED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@dataclass
class Aws:
    """A provider that talks to moto through the fault proxy, and a direct view of moto."""

    provider: AwsProvider
    proxy: FaultProxy
    group: str
    subnets: dict[str, str]
    ec2: Any
    autoscaling: Any
    fence_checks: list[int]

    def cell(self, zone: str, revision: str = REV1, capacity_type: str = "on-demand") -> CellRef:
        return CellRef(self.group, revision, zone, capacity_type)

    def template(self, *, user_data: str = "#!/bin/sh\necho one", types: int = 1) -> Template:
        return Template.model_validate(
            {
                "instanceTypes": ["m5.large", "m5a.large", "m6i.large"][:types],
                "image": "ami-12c6146b",
                "aws": {"subnets": self.subnets, "securityGroups": [], "userData": user_data},
            }
        )

    def asg(self, cell: CellRef) -> dict[str, Any] | None:
        found = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[asg_name(cell)]
        )
        groups = found["AutoScalingGroups"]
        return groups[0] if groups else None

    def group_asgs(self) -> list[str]:
        found = self.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
        return sorted(
            g["AutoScalingGroupName"]
            for g in found
            if g["AutoScalingGroupName"].startswith(f"molt-{self.group}-")
        )

    def templates(self) -> dict[str, tuple[str, int]]:
        """The group's launch templates: name -> (ID, number of versions)."""
        found = self.ec2.describe_launch_templates(MaxResults=200)["LaunchTemplates"]
        return {
            t["LaunchTemplateName"]: (t["LaunchTemplateId"], t["LatestVersionNumber"])
            for t in found
            if t["LaunchTemplateName"].startswith(f"molt-{self.group}-")
        }

    def version(self, revision: str) -> dict[str, Any]:
        """Version 1 of the revision's launch template: its description and data."""
        found = self.ec2.describe_launch_template_versions(
            LaunchTemplateName=launch_template_name(self.group, revision), Versions=["1"]
        )["LaunchTemplateVersions"]
        return dict(found[0])

    async def observed(self) -> dict[CellRef, CellObservation]:
        return {o.cell: o for o in await self.provider.observe(self.group)}


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint) as running:
        yield running
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.name == "fault-proxy" or "process_request_thread" in t.name
    ]
    assert leftover == [], "the fault proxy left threads running"


@pytest.fixture
def aws(moto_endpoint: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """A fresh group name and VPC with a subnet per zone; the provider built from the
    standard environment, pointed at the proxy."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    direct = {"region_name": REGION, "endpoint_url": moto_endpoint}
    ec2 = boto3.client("ec2", **direct)
    autoscaling = boto3.client("autoscaling", **direct)
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnets = {
        zone: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.30.{i}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for i, zone in enumerate(ZONES)
    }
    checks: list[int] = []
    provider = aws_provider_from_environment(lambda: checks.append(1))
    group = f"g{uuid.uuid4().hex[:8]}"
    return Aws(provider, proxy, group, subnets, ec2, autoscaling, checks)


def _distribution(described: dict[str, Any]) -> dict[str, Any]:
    return dict(described["MixedInstancesPolicy"]["InstancesDistribution"])


def _pinned(described: dict[str, Any]) -> tuple[str, str]:
    """(launch template ID, version) the group launches from."""
    spec = described["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    return str(spec["LaunchTemplateId"]), str(spec["Version"])


def _tags(described: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in described["Tags"]}


async def test_each_cell_is_an_asg_pinned_to_its_revisions_launch_template_version(
    aws: Aws,
) -> None:
    # The test itself spreads replicas 6 over three zones, 2/2/2.
    template = aws.template(types=2)
    for zone in ZONES:
        await aws.provider.scale(aws.cell(zone), template, 2)

    first = launch_template_name(aws.group, REV1)
    templates = aws.templates()
    assert templates == {first: (templates[first][0], 1)}
    assert aws.version(REV1)["VersionDescription"] == REV1
    data = aws.version(REV1)["LaunchTemplateData"]
    assert data["ImageId"] == "ami-12c6146b"
    assert data["InstanceType"] == "m5.large"
    assert base64.b64decode(data["UserData"]).decode() == "#!/bin/sh\necho one"
    assert aws.group_asgs() == sorted(asg_name(aws.cell(zone)) for zone in ZONES)
    for zone in ZONES:
        described = aws.asg(aws.cell(zone))
        assert described is not None
        # The revision's template at its version number, never $Latest.
        assert _pinned(described) == (templates[first][0], "1")
        overrides = described["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
        assert [o["InstanceType"] for o in overrides] == ["m5.large", "m5a.large"]
        assert _distribution(described)["OnDemandPercentageAboveBaseCapacity"] == 100
        assert described["VPCZoneIdentifier"] == aws.subnets[zone]
        assert described["NewInstancesProtectedFromScaleIn"] is True
        assert described["DesiredCapacity"] == 2
        assert [i["AvailabilityZone"] for i in described["Instances"]] == [zone, zone]
        assert _tags(described) == {
            "molt.dev/instance-group": (aws.group, True),
            "molt.dev/revision": (REV1, True),
            "topology.kubernetes.io/zone": (zone, True),
            "molt.dev/capacity-type": ("on-demand", True),
        }

    # Scaling to the size a cell already has writes nothing.
    sets = aws.proxy.count("SetDesiredCapacity")
    await aws.provider.scale(aws.cell(ZONES[0]), template, 2)
    assert aws.proxy.count("SetDesiredCapacity") == sets

    # A second revision is a new version of the same template and new, spot, groups.
    second = aws.template(user_data="#!/bin/sh\necho two", types=3)
    await aws.provider.scale(aws.cell(ZONES[0], REV2, "spot"), second, 1)
    await aws.provider.scale(aws.cell(ZONES[1], REV2, "spot"), second, 1)
    second_name = launch_template_name(aws.group, REV2)
    templates = aws.templates()
    assert sorted(templates) == sorted([first, second_name])
    assert aws.proxy.count("CreateLaunchTemplate") == 2
    assert templates[second_name][0] != templates[first][0]
    assert templates[second_name][1] == 1
    data = aws.version(REV2)["LaunchTemplateData"]
    assert base64.b64decode(data["UserData"]).decode() == "#!/bin/sh\necho two"
    spot = aws.asg(aws.cell(ZONES[0], REV2, "spot"))
    assert spot is not None
    assert _pinned(spot) == (templates[second_name][0], "1")
    assert _distribution(spot)["OnDemandPercentageAboveBaseCapacity"] == 0
    assert _tags(spot)["molt.dev/capacity-type"] == ("spot", True)
    assert _tags(spot)["molt.dev/revision"] == (REV2, True)
    old = aws.asg(aws.cell(ZONES[0]))
    assert old is not None
    assert _pinned(old) == (templates[first][0], "1")  # old cells keep their template
    assert len(aws.group_asgs()) == 5
    assert aws.fence_checks  # every write asked the fence first


async def test_observe_reports_cells_instances_launch_times_and_provider_ids(aws: Aws) -> None:
    before = datetime.now(UTC) - timedelta(minutes=1)
    await aws.provider.scale(aws.cell(ZONES[0]), aws.template(), 2)
    await aws.provider.scale(aws.cell(ZONES[2], REV2, "spot"), aws.template(), 1)

    observed = await aws.observed()

    assert set(observed) == {aws.cell(ZONES[0]), aws.cell(ZONES[2], REV2, "spot")}
    first = observed[aws.cell(ZONES[0])]
    assert first.desired == 2
    assert len(first.instances) == 2
    described = aws.asg(aws.cell(ZONES[0]))
    assert described is not None
    assert {i.instance_id for i in first.instances} == {
        i["InstanceId"] for i in described["Instances"]
    }
    for instance in first.instances:
        assert instance.provider_id == f"aws:///{ZONES[0]}/{instance.instance_id}"
        assert instance.node_name is None
        assert instance.launched_at is not None
        assert instance.launched_at.tzinfo is not None
        assert before <= instance.launched_at <= datetime.now(UTC) + timedelta(minutes=1)
    assert first.failures == ()
    assert observed[aws.cell(ZONES[2], REV2, "spot")].desired == 1
    assert await aws.provider.observe(f"other-{aws.group}") == []


async def test_describe_node_names_a_nodes_cell_and_a_burst_of_nodes_costs_one_listing(
    aws: Aws,
) -> None:
    await aws.provider.scale(aws.cell(ZONES[0]), aws.template(), 2)
    await aws.provider.scale(aws.cell(ZONES[1], REV2, "spot"), aws.template(user_data="two"), 1)
    observed = await aws.observed()
    cells = {i.instance_id: o.cell for o in observed.values() for i in o.instances}
    nodes = [
        NodeView(name=i.instance_id, created=CREATED, provider_id=i.provider_id)
        for o in observed.values()
        for i in o.instances
    ]
    stranger = NodeView(
        name="stranger", created=CREATED, provider_id=provider_id(ZONES[0], "i-0000000000000dead")
    )
    calls = ("DescribeAutoScalingGroups", "DescribeInstances")

    def spent(before: list[int]) -> list[int]:
        return [aws.proxy.count(c) - b for c, b in zip(calls, before, strict=True)]

    # The provider that observed the group answers from what it observed: no call at all.
    before = [aws.proxy.count(c) for c in calls]
    for node in nodes:
        origin = await aws.provider.describe_node(node)
        assert origin is not None
        assert origin.cell == cells[node.name]
        assert origin.instance.launched_at is not None
    assert spent(before) == [0, 0]

    # Providers that observed nothing: one node costs one listing of Molt's cells...
    single = aws_provider_from_environment(lambda: None)
    before = [aws.proxy.count(c) for c in calls]
    origin = await single.describe_node(nodes[0])
    assert origin is not None
    assert origin.cell == cells[nodes[0].name]
    one = spent(before)
    assert one[0] >= 1
    # ... and nodes joining together cost the same as one, however many they are.
    clock = [1000.0]
    burst = AwsProvider(monotonic=lambda: clock[0])
    before = [aws.proxy.count(c) for c in calls]
    origins = await asyncio.gather(*(burst.describe_node(n) for n in [*nodes, stranger]))
    assert [o.cell if o else None for o in origins] == [cells[n.name] for n in nodes] + [None]
    assert all(o.instance.launched_at is not None for o in origins if o is not None)
    assert spent(before) == one

    # A stranger found in no cell, asked about again and again (each heartbeat of its
    # Node), is not listed for again, nor is a node that is not an AWS instance.
    before = [aws.proxy.count(c) for c in calls]
    for _ in range(5):
        clock[0] += 10.0  # 50 s: past the listing interval, within the stranger's minute
        assert await burst.describe_node(stranger) is None
    kind = NodeView(name="kind", created=CREATED, provider_id="kind://docker/kind/kind-worker")
    assert await burst.describe_node(kind) is None
    assert await burst.describe_node(NodeView(name="bare", created=CREATED)) is None
    assert spent(before) == [0, 0]
    clock[0] += 15.0  # a minute on, the stranger is looked for once more (in vain)
    assert await burst.describe_node(stranger) is None
    assert spent(before)[0] == one[0]


async def test_terminate_shrinks_the_cell_by_one_and_is_harmless_twice(aws: Aws) -> None:
    cell = aws.cell(ZONES[1])
    await aws.provider.scale(cell, aws.template(), 3)
    instances = (await aws.observed())[cell].instances
    node = NodeView(name="n1", created=CREATED, provider_id=instances[0].provider_id)

    await aws.provider.terminate(node)
    after = (await aws.observed())[cell]
    assert after.desired == 2
    assert instances[0].instance_id not in {i.instance_id for i in after.instances}
    assert len(after.instances) == 2  # not replaced
    state = aws.ec2.describe_instances(InstanceIds=[instances[0].instance_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] in (
        "shutting-down",
        "terminated",
    )

    await aws.provider.terminate(node)  # already gone: success, nothing else changes
    assert (await aws.observed())[cell].desired == 2

    # An instance that never became a node goes the same way, checked against its cell.
    with pytest.raises(ProviderError, match="not in"):
        await aws.provider.terminate_instance(aws.cell(ZONES[0]), instances[1].instance_id)
    await aws.provider.terminate_instance(cell, instances[1].instance_id)
    assert (await aws.observed())[cell].desired == 1

    with pytest.raises(ProviderError, match="no AWS providerID"):
        await aws.provider.terminate(NodeView(name="bare", created=CREATED, provider_id=None))
    with pytest.raises(ProviderError, match="no AWS providerID"):
        await aws.provider.terminate(
            NodeView(name="kind", created=CREATED, provider_id="kind://docker/x/y")
        )


async def test_instance_exists_tells_a_ghost_from_a_sick_node(aws: Aws) -> None:
    cell = aws.cell(ZONES[0])
    await aws.provider.scale(cell, aws.template(), 2)
    instances = (await aws.observed())[cell].instances
    kept, killed = (
        NodeView(name=f"n{i}", created=CREATED, provider_id=instance.provider_id)
        for i, instance in enumerate(instances)
    )

    assert await aws.provider.instance_exists(kept) is True
    # Terminated behind Molt's back, straight through EC2.
    aws.ec2.terminate_instances(InstanceIds=[instances[1].instance_id])
    assert await aws.provider.instance_exists(killed) is False
    assert await aws.provider.instance_exists(kept) is True
    unknown = NodeView(
        name="x", created=CREATED, provider_id="aws:///eu-west-1a/i-0123456789abcdef0"
    )
    assert await aws.provider.instance_exists(unknown) is False
    foreign = NodeView(name="k", created=CREATED, provider_id="kwok://k")
    assert await aws.provider.instance_exists(foreign) is None


async def test_reboot_asks_ec2_to_restart_only_instances_of_molts_cells(aws: Aws) -> None:
    assert isinstance(aws.provider, Rebooter)
    cell = aws.cell(ZONES[2])
    await aws.provider.scale(cell, aws.template(), 1)
    instance = (await aws.observed())[cell].instances[0]
    node = NodeView(name="sick", created=CREATED, provider_id=instance.provider_id)

    await aws.provider.reboot(node)
    sent = aws.proxy.seen("RebootInstances")
    assert [entry.params.get("InstanceId.1") for entry in sent] == [instance.instance_id]
    assert (await aws.observed())[cell].desired == 1  # a reboot replaces nothing

    # An instance EC2 runs outside Molt's Auto Scaling groups is never rebooted.
    outsider = aws.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    outside_id = outsider["Instances"][0]["InstanceId"]
    stranger = NodeView(
        name="stranger", created=CREATED, provider_id=provider_id(ZONES[0], outside_id)
    )
    with pytest.raises(ProviderError, match="not in an Auto Scaling group"):
        await aws.provider.reboot(stranger)
    with pytest.raises(ProviderError, match="no AWS providerID"):
        await aws.provider.reboot(NodeView(name="k", created=CREATED, provider_id="kwok://k"))
    assert len(aws.proxy.seen("RebootInstances")) == 1


async def test_lowering_desired_never_removes_an_instance_only_terminate_does(aws: Aws) -> None:
    cell = aws.cell(ZONES[0])
    await aws.provider.scale(cell, aws.template(), 2)
    await aws.provider.scale(cell, aws.template(), 0)
    observed = (await aws.observed())[cell]
    assert observed.desired == 0
    assert len(observed.instances) == 2  # protected from scale-in: they leave via drain

    for instance in observed.instances:  # desired is at the minimum: no decrement, no relaunch
        await aws.provider.terminate_instance(cell, instance.instance_id)
    observed = (await aws.observed())[cell]
    assert (observed.desired, observed.instances) == (0, ())


async def test_delete_cell_refuses_a_non_empty_cell_and_removes_an_unused_template(
    aws: Aws,
) -> None:
    old, new_a, new_b = aws.cell(ZONES[0]), aws.cell(ZONES[0], REV2), aws.cell(ZONES[1], REV2)
    await aws.provider.scale(old, aws.template(), 1)
    await aws.provider.scale(new_a, aws.template(user_data="two"), 1)
    await aws.provider.scale(new_b, aws.template(user_data="two"), 0)

    with pytest.raises(ProviderError, match="not empty: 1 instances, desired 1"):
        await aws.provider.delete_cell(new_a)
    assert aws.asg(new_a) is not None

    instance = (await aws.observed())[new_a].instances[0]
    await aws.provider.terminate_instance(new_a, instance.instance_id)
    await aws.provider.delete_cell(new_a)
    assert aws.asg(new_a) is None
    second = launch_template_name(aws.group, REV2)
    assert second in aws.templates()  # new_b still launches from it
    assert aws.proxy.count("DeleteLaunchTemplate") == 0

    await aws.provider.delete_cell(new_b)
    assert aws.asg(new_b) is None
    assert list(aws.templates()) == [launch_template_name(aws.group, REV1)]
    assert aws.proxy.count("DeleteLaunchTemplate") == 1

    await aws.provider.delete_cell(new_b)  # gone: success
    assert set(await aws.observed()) == {old}


async def test_capacity_error_in_one_zone_raises_capacity_error_and_spares_the_others(
    aws: Aws,
) -> None:
    short = aws.proxy.fail(
        "SetDesiredCapacity",
        code="InsufficientInstanceCapacity",
        message="We currently do not have sufficient m5.large capacity in the "
        "Availability Zone you requested (eu-west-1b).",
        match=f"-{ZONES[1]}-",
        times=None,
    )
    outcomes: dict[str, str] = {}
    for zone in ZONES:
        try:
            await aws.provider.scale(aws.cell(zone), aws.template(), 2)
            outcomes[zone] = "scaled"
        except CapacityError as error:
            outcomes[zone] = str(error)
    assert outcomes[ZONES[0]] == outcomes[ZONES[2]] == "scaled"
    assert "InsufficientInstanceCapacity" in outcomes[ZONES[1]]
    assert short.hits == 1  # not retried: capacity errors are not transient to botocore

    observed = await aws.observed()
    assert [observed[aws.cell(z)].desired for z in ZONES] == [2, 0, 2]
    assert [len(observed[aws.cell(z)].instances) for z in ZONES] == [2, 0, 2]

    # Another refusal is a ProviderError but not a CapacityError.
    aws.proxy.remove(short)
    aws.proxy.fail("SetDesiredCapacity", code="ValidationError", message="bad", match=ZONES[1])
    with pytest.raises(ProviderError) as refused:
        await aws.provider.scale(aws.cell(ZONES[1]), aws.template(), 2)
    assert not isinstance(refused.value, CapacityError)

    await aws.provider.scale(aws.cell(ZONES[1]), aws.template(), 2)  # capacity is back
    assert len((await aws.observed())[aws.cell(ZONES[1])].instances) == 2


async def test_throttling_and_outages_slow_scaling_down_but_duplicate_nothing(aws: Aws) -> None:
    for action in ("CreateAutoScalingGroup", "SetDesiredCapacity"):
        aws.proxy.fail(action, code="Throttling", message="Rate exceeded", times=2)
        aws.proxy.fail(action, status=503, code="ServiceUnavailable", message="down", times=1)
    # And responses lost after AWS acted: the retried request must not make a second one.
    aws.proxy.fail(
        "CreateLaunchTemplate", status=503, code="ServiceUnavailable", forward_first=True
    )
    cell = aws.cell(ZONES[2])

    await aws.provider.scale(cell, aws.template(), 3)

    assert aws.proxy.count("CreateAutoScalingGroup") == 4
    assert aws.proxy.count("SetDesiredCapacity") == 4
    assert [s.status for s in aws.proxy.seen("SetDesiredCapacity")] == [400, 400, 503, 200]
    assert aws.group_asgs() == [asg_name(cell)]
    assert list(aws.templates()) == [launch_template_name(aws.group, REV1)]
    described = aws.asg(cell)
    assert described is not None
    assert described["DesiredCapacity"] == 3
    assert len(described["Instances"]) == 3

    # A SetDesiredCapacity whose answer is lost is retried: absolute sizes do not add up.
    aws.proxy.fail("SetDesiredCapacity", status=503, code="ServiceUnavailable", forward_first=True)
    await aws.provider.scale(cell, aws.template(), 4)
    described = aws.asg(cell)
    assert described is not None
    assert (described["DesiredCapacity"], len(described["Instances"])) == (4, 4)


def _activities(group: str, entries: list[tuple[datetime, str, str]]) -> str:
    members = "".join(
        "<member>"
        f"<ActivityId>{uuid.uuid4()}</ActivityId><AutoScalingGroupName>{group}"
        "</AutoScalingGroupName><Description>Launching a new EC2 instance</Description>"
        f"<Cause>desired capacity changed</Cause><StartTime>{format_rfc3339(at)}</StartTime>"
        f"<EndTime>{format_rfc3339(at)}</EndTime><StatusCode>{code}</StatusCode>"
        f"<StatusMessage>{message}</StatusMessage><Progress>100</Progress>"
        "</member>"
        for at, code, message in entries
    )
    return (
        '<DescribeScalingActivitiesResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
        f"<DescribeScalingActivitiesResult><Activities>{members}</Activities>"
        "</DescribeScalingActivitiesResult><ResponseMetadata><RequestId>fake</RequestId>"
        "</ResponseMetadata></DescribeScalingActivitiesResponse>"
    )


async def test_failed_scaling_activities_are_launch_failures_with_a_bounded_tail(
    aws: Aws,
) -> None:
    # moto records no scaling activities; the fake answers as AWS does, newest first.
    short, fine = aws.cell(ZONES[0], REV1, "spot"), aws.cell(ZONES[1])
    await aws.provider.scale(short, aws.template(), 0)
    await aws.provider.scale(fine, aws.template(), 0)
    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    entries = [(start + timedelta(minutes=i), "Failed", f"Spot bad {i}") for i in range(23)]
    entries += [
        (start + timedelta(hours=1), "Successful", "ok"),
        (
            start + timedelta(hours=2),
            "Failed",
            "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no "
            "Spot capacity available that matches your request. Launching EC2 instance failed.",
        ),
        (
            start + timedelta(hours=3),
            "Cancelled",
            "The image id '[ami-12c6146b]' does not exist. Launching EC2 instance failed.",
        ),
    ]
    entries.reverse()
    aws.proxy.respond(
        "DescribeScalingActivities", _activities(asg_name(short), entries), match=asg_name(short)
    )

    observed = await aws.observed()

    failures = observed[short].failures
    assert len(failures) == 20  # the tail: the 20 most recent failures, oldest first
    assert [f.at for f in failures] == sorted(f.at for f in failures)
    assert failures[-1].at == start + timedelta(hours=3)
    assert "does not exist" in failures[-1].message
    assert not failures[-1].capacity
    assert "InsufficientInstanceCapacity" in failures[-2].message
    assert failures[-2].capacity
    assert failures[0].message.startswith("Spot bad 5")
    assert observed[fine].failures == ()


@pytest.mark.parametrize(
    ("text", "capacity"),
    [
        ("InsufficientInstanceCapacity", True),
        ("There is no Spot capacity available that matches your request.", True),
        ("capacity-not-available", True),
        ("MaxSpotInstanceCountExceeded: Max spot instance count exceeded", True),
        (
            "Your Spot request price of 0.01 is lower than the minimum required (price-too-low)",
            True,
        ),
        ("SpotMaxPriceTooLow", True),
        ("We currently do not have sufficient m5.large capacity in zone eu-west-1a", True),
        ("The image id '[ami-1]' does not exist", False),
        ("You are not authorized to perform this operation.", False),
    ],
)
def test_capacity_shortages_are_told_from_other_failures(text: str, capacity: bool) -> None:
    assert is_capacity_shortage(text) is capacity


async def test_a_lost_lease_stops_writes_and_a_zone_without_subnet_is_refused(aws: Aws) -> None:
    def lost() -> None:
        raise RuntimeError("leadership lost")

    fenced = AwsProvider(check_fence=lost)
    with pytest.raises(RuntimeError, match="leadership lost"):
        await fenced.scale(aws.cell(ZONES[0]), aws.template(), 1)
    writes = ("CreateLaunchTemplate", "CreateAutoScalingGroup", "SetDesiredCapacity")
    assert [aws.proxy.count(w) for w in writes] == [0, 0, 0]

    template = aws.template()
    assert template.aws is not None
    template.aws.subnets.pop(ZONES[2])
    with pytest.raises(ProviderError, match="no subnet for zone eu-west-1c"):
        await aws.provider.scale(aws.cell(ZONES[2]), template, 1)
    assert aws.proxy.count("CreateAutoScalingGroup") == 0


@pytest.fixture
async def bridge_nodes(kube: client.ApiClient) -> AsyncIterator[list[str]]:
    """Names of Nodes a bridge test created; deleted afterwards."""
    names: list[str] = []
    yield names
    core = client.CoreV1Api(kube)
    for name in names:
        try:
            await core.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise


async def test_the_bridge_joins_instances_as_bare_kwok_nodes_and_can_hold_a_revision_back(
    aws: Aws, kube: client.ApiClient, bridge_nodes: list[str]
) -> None:
    joining, held = aws.cell(ZONES[0]), aws.cell(ZONES[1], REV2, "spot")
    await aws.provider.scale(joining, aws.template(), 2)
    await aws.provider.scale(held, aws.template(user_data="two"), 1)
    observed = await aws.observed()
    core = client.CoreV1Api(kube)

    async with AwsNodeBridge(kube, aws.group, interval=0.2, skip_revisions={REV2}) as bridge:

        async def joined() -> bool:
            bridge_nodes[:] = list(bridge.joined)
            return len(bridge.joined) == 2

        await eventually(joined, within=60, what="two Nodes for the joining cell")
        assert await bridge.poll() == []  # nothing more to join: REV2 is held back
        assert bridge.errors == []

    for instance in observed[joining].instances:
        node = await core.read_node(instance.instance_id)
        assert node.spec.provider_id == instance.provider_id
        # As a stock kubelet registers: its own labels only; Molt's come from registration.
        labels, annotations = node.metadata.labels, node.metadata.annotations
        assert labels["kubernetes.io/hostname"] == instance.instance_id
        assert [k for k in labels if k.startswith("molt.dev/")] == []
        assert "topology.kubernetes.io/zone" not in labels
        assert [k for k in annotations if k.startswith("molt.dev/")] == []
        assert annotations["kwok.x-k8s.io/node"] == "fake"
    for instance in observed[held].instances:
        with pytest.raises(ApiException) as missing:
            await core.read_node(instance.instance_id)
        assert missing.value.status == 404
