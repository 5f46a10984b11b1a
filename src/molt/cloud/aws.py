"""The AWS provider: one Auto Scaling group per cell, each with its own launch template.

A cell (zone x capacity type x revision) is an ASG named
``molt-<group>-<revision>-<zone>-<capacity type>`` whose launch template
``molt-<group>-<revision>`` holds the revision's template; tags tie both to the group and
revision (moto, like AWS, propagates ASG tags to instances). Nodes map to instances
through the providerID ``aws:///<zone>/<instance-id>``; an instance's LaunchTime is the
node's age. Every mutating call carries a client token or is idempotent by name, and
boto3 retries throttling with its standard mode. Credentials, region and endpoint come
from the standard boto3 chain (``AWS_ENDPOINT_URL`` overrides the endpoint). The
instance-group controller that sets each cell's size is still to come; this module is
the adapter it will drive.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from molt.api.instancegroup import Template
from molt.cloud.provider import ProviderError
from molt.policy.cells import CellKey
from molt.policy.snapshot import CAPACITY_TYPE_LABEL, GROUP_LABEL, REVISION_LABEL, NodeView

PROVIDER_ID = re.compile(r"^aws:///(?P<zone>[^/]+)/(?P<instance>i-[0-9a-f]+)$")
RETRIES = Config(retries={"mode": "standard", "max_attempts": 8})
CELL_MAX_SIZE = 1000


def cell_group_name(group: str, revision: str, cell: CellKey) -> str:
    return f"molt-{group}-{revision}-{cell.zone}-{cell.capacity_type}"


def launch_template_name(group: str, revision: str) -> str:
    return f"molt-{group}-{revision}"


def instance_of(node: NodeView) -> tuple[str, str] | None:
    """(zone, instance id) from a node's ``aws:///zone/i-...`` providerID."""
    match = PROVIDER_ID.match(node.provider_id or "")
    return (match["zone"], match["instance"]) if match else None


def client_token(*parts: str) -> str:
    """An idempotency token: the same parts always give the same token (max 64 chars)."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:64]


@dataclass(frozen=True)
class Instance:
    """An instance in a cell, as Auto Scaling and EC2 report it."""

    instance_id: str
    zone: str
    lifecycle_state: str
    launched: datetime | None

    @property
    def provider_id(self) -> str:
        return f"aws:///{self.zone}/{self.instance_id}"


class AwsCells:
    """Auto Scaling groups per cell (synchronous boto3; ``AwsProvider`` wraps it)."""

    def __init__(self, session: boto3.session.Session | None = None) -> None:
        session = session or boto3.session.Session()
        self.ec2: Any = session.client("ec2", config=RETRIES)
        self.autoscaling: Any = session.client("autoscaling", config=RETRIES)

    def _tags(self, group: str, revision: str, cell: CellKey) -> dict[str, str]:
        return {
            GROUP_LABEL: group,
            REVISION_LABEL: revision,
            "topology.kubernetes.io/zone": cell.zone,
            CAPACITY_TYPE_LABEL: cell.capacity_type,
        }

    def ensure_launch_template(self, group: str, revision: str, template: Template) -> str:
        """The revision's launch template, created once; returns its ID."""
        name = launch_template_name(group, revision)
        try:
            found = self.ec2.describe_launch_templates(LaunchTemplateNames=[name])
            return str(found["LaunchTemplates"][0]["LaunchTemplateId"])
        except ClientError as error:
            if "NotFound" not in error.response["Error"]["Code"]:
                raise ProviderError(f"cannot read launch template {name}: {error}") from error
        aws = template.aws
        data: dict[str, Any] = {
            "ImageId": template.image,
            "InstanceType": template.instance_types[0],
        }
        if aws is not None:
            if aws.security_groups:
                data["SecurityGroupIds"] = list(aws.security_groups)
            if aws.user_data:
                data["UserData"] = base64.b64encode(aws.user_data.encode()).decode()
            if aws.iam_instance_profile:
                data["IamInstanceProfile"] = {"Name": aws.iam_instance_profile}
            if aws.key_name:
                data["KeyName"] = aws.key_name
        created = self.ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData=data,
            ClientToken=client_token("lt", group, revision),
            TagSpecifications=[
                {
                    "ResourceType": "launch-template",
                    "Tags": [
                        {"Key": GROUP_LABEL, "Value": group},
                        {"Key": REVISION_LABEL, "Value": revision},
                    ],
                }
            ],
        )
        return str(created["LaunchTemplate"]["LaunchTemplateId"])

    def ensure_cell(self, group: str, revision: str, cell: CellKey, template: Template) -> str:
        """The cell's Auto Scaling group, created empty once; returns its name."""
        name = cell_group_name(group, revision, cell)
        if self._describe(name) is not None:
            return name
        subnet = (template.aws.subnets if template.aws else {}).get(cell.zone)
        if subnet is None:
            raise ProviderError(f"template.aws.subnets has no subnet for zone {cell.zone}")
        template_id = self.ensure_launch_template(group, revision, template)
        try:
            self.autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate={"LaunchTemplateId": template_id, "Version": "$Latest"},
                MinSize=0,
                MaxSize=CELL_MAX_SIZE,
                DesiredCapacity=0,
                VPCZoneIdentifier=subnet,
                Tags=[
                    {"Key": key, "Value": value, "PropagateAtLaunch": True}
                    for key, value in self._tags(group, revision, cell).items()
                ],
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "AlreadyExists":
                raise ProviderError(f"cannot create {name}: {error}") from error
        return name

    def _describe(self, name: str) -> dict[str, Any] | None:
        found = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        groups = found.get("AutoScalingGroups") or []
        return groups[0] if groups else None

    def desired(self, name: str) -> int:
        described = self._describe(name)
        return int(described["DesiredCapacity"]) if described else 0

    def set_desired(self, name: str, count: int) -> None:
        """Idempotent: setting the same capacity twice is one outcome."""
        self.autoscaling.set_desired_capacity(
            AutoScalingGroupName=name, DesiredCapacity=count, HonorCooldown=False
        )

    def instances(self, name: str) -> list[Instance]:
        described = self._describe(name)
        if described is None:
            return []
        members = described.get("Instances") or []
        ids = [m["InstanceId"] for m in members]
        launched: dict[str, datetime] = {}
        if ids:
            reservations = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
            for reservation in reservations:
                for instance in reservation["Instances"]:
                    launched[instance["InstanceId"]] = instance.get("LaunchTime")
        return [
            Instance(
                m["InstanceId"],
                m["AvailabilityZone"],
                m["LifecycleState"],
                launched.get(m["InstanceId"]),
            )
            for m in members
        ]

    def terminate(self, instance_id: str) -> bool:
        """Terminate one instance and shrink its group by one; False if it was gone."""
        try:
            self.autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
            )
        except ClientError as error:
            message = str(error)
            if "not found" in message.lower() or "ValidationError" in message:
                return False
            raise ProviderError(f"cannot terminate {instance_id}: {error}") from error
        return True

    def delete_cell_if_empty(self, name: str) -> bool:
        described = self._describe(name)
        if described is None:
            return True
        if described.get("Instances") or described["DesiredCapacity"]:
            return False
        self.autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=False)
        return True
