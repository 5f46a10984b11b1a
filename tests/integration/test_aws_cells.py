"""The AWS adapter against moto in server mode: one Auto Scaling group per cell with the
revision's launch template and tags, sized, mapped to providerIDs, and shrunk by
terminating one instance; creating the same cell twice makes one."""

from __future__ import annotations

import boto3
import pytest

from molt.api.instancegroup import Template
from molt.cloud.aws import AwsCells, cell_group_name, instance_of
from molt.cloud.provider import ProviderError
from molt.policy.cells import CellKey
from molt.policy.snapshot import NodeView
from tests.support.fleet import NOW

REGION = "eu-west-1"


@pytest.fixture
def cells(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[AwsCells, dict[str, str]]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = {}
    for index, zone in enumerate(("eu-west-1a", "eu-west-1b")):
        subnet = ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.20.{index}.0/24", AvailabilityZone=zone
        )
        subnets[zone] = subnet["Subnet"]["SubnetId"]
    return AwsCells(), subnets


def _template(subnets: dict[str, str], image: str = "ami-12c6146b") -> Template:
    return Template.model_validate(
        {
            "instanceTypes": ["m5.large"],
            "image": image,
            "aws": {"subnets": subnets, "securityGroups": [], "userData": "#!/bin/sh\necho hi"},
        }
    )


def test_a_cell_is_one_tagged_auto_scaling_group_sized_and_shrunk_by_termination(
    cells: tuple[AwsCells, dict[str, str]],
) -> None:
    adapter, subnets = cells
    template = _template(subnets)
    cell = CellKey("eu-west-1a", "on-demand")

    name = adapter.ensure_cell("workers", "rev1", cell, template)
    assert adapter.ensure_cell("workers", "rev1", cell, template) == name  # idempotent
    assert name == cell_group_name("workers", "rev1", cell)
    adapter.set_desired(name, 2)

    instances = adapter.instances(name)
    assert len(instances) == 2
    assert all(i.zone == "eu-west-1a" for i in instances)
    assert all(i.launched is not None for i in instances)
    described = adapter.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    tags = {t["Key"]: t["Value"] for t in described["AutoScalingGroups"][0]["Tags"]}
    assert tags["molt.dev/instance-group"] == "workers"
    assert tags["molt.dev/revision"] == "rev1"
    assert tags["molt.dev/capacity-type"] == "on-demand"

    node = NodeView(name="n", created=NOW, provider_id=instances[0].provider_id)
    assert instance_of(node) == ("eu-west-1a", instances[0].instance_id)
    assert adapter.terminate(instances[0].instance_id)
    assert adapter.desired(name) == 1
    assert not adapter.delete_cell_if_empty(name)


def test_each_revision_gets_its_own_launch_template(
    cells: tuple[AwsCells, dict[str, str]],
) -> None:
    adapter, subnets = cells
    first = adapter.ensure_launch_template("blue", "rev1", _template(subnets))
    second = adapter.ensure_launch_template("blue", "rev2", _template(subnets, image="ami-2"))
    assert first != second
    assert adapter.ensure_launch_template("blue", "rev1", _template(subnets)) == first


def test_a_zone_without_a_subnet_is_refused_with_a_clear_error(
    cells: tuple[AwsCells, dict[str, str]],
) -> None:
    adapter, subnets = cells
    with pytest.raises(ProviderError, match="no subnet for zone eu-west-1c"):
        adapter.ensure_cell(
            "workers", "rev1", CellKey("eu-west-1c", "on-demand"), _template(subnets)
        )
