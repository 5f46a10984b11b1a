"""The AWS provider: one Auto Scaling group per cell, pinned to its revision's template.

Each revision of an InstanceGroup is one launch template ``molt-<group>-<revision>``
(its version 1 holds the revision's template, so "the revision's version" is always
that template's ``1``). A cell (zone x capacity type x revision) is an Auto Scaling
group ``molt-<group>-<revision>-<zone>-<capacity type>`` in the zone's subnet, pinned to
that template and version number (never ``$Latest``), with a mixed instances policy that
lists the template's instance types and buys the cell's capacity type (spot cells ask
for 0 % on-demand). Tags on the group (propagated to its instances) and on the launch
template tie them to the InstanceGroup and revision. A launch template per revision,
rather than one template with a version per revision, keeps a revision's launch
configuration immutable and removable as a whole (and is what moto emulates faithfully:
it launches from versions after the first with their UserData undecoded, and crashes).

New instances are protected from scale-in, so lowering a cell's desired size never
terminates one: instances leave only through ``terminate``/``terminate_instance``, after
the pipeline drained their node, and each of those takes one off the cell's desired size.

Nodes map to instances through the providerID ``aws:///<zone>/<instance-id>``; an
instance's LaunchTime is the node's age. As a ``Registrar`` the provider answers which
cell a new Node's instance belongs to from the instances its observations listed; a
miss lists every Molt cell once (found by the tags Molt puts on its groups) rather than
describing one instance per node, and an instance found in no cell is not looked up
again for a while. Failed scaling activities are the cell's launch
failures; those that name a capacity shortage are marked as such.

As ``LoadBalancers`` it takes a node's instance out of the ELBv2 target groups of
``template.aws.targetGroups`` (a cell's Auto Scaling group is created with them, so AWS
registers its new instances; Molt never registers one). Each target group's targets are
listed first (``DescribeTargetHealth``) and only the instance's entries that are not yet
draining are deregistered, with their ports, so a retry deregisters nothing twice; the
wait is the longest ``deregistration_delay.timeout_seconds`` among the target groups
that list the instance. IAM: ``elasticloadbalancing:DescribeTargetHealth``,
``DeregisterTargets`` and ``DescribeTargetGroupAttributes``.

boto3 is synchronous: every call runs in a worker thread (``asyncio.to_thread``). Clients
use botocore's standard retry mode (throttling and transient 5xx are retried with
backoff); credentials, region and endpoint come from the standard chain
(``AWS_ENDPOINT_URL`` overrides the endpoint). Creations are idempotent by name and
sizes are absolute, so a retried request never makes a second group or template.
``check_fence`` runs before every mutating call, so a controller that lost its Lease
writes nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from molt.api.instancegroup import Template
from molt.api.labels import CAPACITY_TYPE_LABEL, GROUP_LABEL, REVISION_LABEL, ZONE_LABEL
from molt.cloud.provider import (
    CapacityError,
    CellObservation,
    CellRef,
    Instance,
    LaunchFailure,
    LifecycleHooks,
    LoadBalancers,
    NodeOrigin,
    Provider,
    ProviderError,
    Registrar,
)
from molt.policy.interruptions import LifecycleHook
from molt.policy.snapshot import NodeView

log = structlog.get_logger(__name__)
T = TypeVar("T")

PROVIDER_ID = re.compile(r"^aws:///(?P<zone>[^/]+)/(?P<instance>i-[0-9a-zA-Z]+)$")
RETRIES = Config(retries={"mode": "standard", "max_attempts": 8})
CELL_MAX_SIZE = 1000
FAILURE_TAIL = 20
"""How many recent failed launches ``observe`` reports per cell."""
DESCRIBE_CHUNK = 100
ORIGIN_REFRESH_SECONDS = 5.0
"""A node unknown to the observations lists every Molt cell at most this often."""
UNKNOWN_TTL_SECONDS = 60.0
"""An instance that no Molt cell held at a listing is not looked up again for this long."""

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
        "InsufficientFreeAddressesInSubnet",
    }
)
CAPACITY_MESSAGE = re.compile(
    "|".join(
        [
            *sorted(CAPACITY_CODES),
            r"capacity[- ]not[- ]available",
            r"capacity-oversubscribed",
            r"price[- ]too[- ]low",
            r"no spot capacity",
            r"insufficient capacity",
            r"do(?:es)? not have sufficient [\w.-]* ?capacity",
            r"spot (?:instance )?(?:request )?count exceeded",
        ]
    ),
    re.IGNORECASE,
)
GONE_INSTANCE_STATES = frozenset({"shutting-down", "terminated"})
LEAVING_LIFECYCLE = ("Terminating", "Terminated", "Detaching", "Detached")
DRAINING = "draining"
DEREGISTRATION_DELAY = "deregistration_delay.timeout_seconds"
DEFAULT_DEREGISTRATION_DELAY = 300.0
"""ELBv2's default, used when a target group does not report the attribute."""


def is_capacity_shortage(text: str) -> bool:
    """Whether an AWS error code or activity message says capacity ran out."""
    return bool(CAPACITY_MESSAGE.search(text))


def asg_name(cell: CellRef) -> str:
    """The Auto Scaling group that backs ``cell``."""
    return f"molt-{cell.group}-{cell.revision}-{cell.zone}-{cell.capacity_type}"


def launch_template_name(group: str, revision: str) -> str:
    """The launch template of one revision of an InstanceGroup."""
    return f"molt-{group}-{revision}"


def cell_tags(cell: CellRef) -> dict[str, str]:
    """The tags that tie a cell's Auto Scaling group (and its instances) to the cell."""
    return {
        GROUP_LABEL: cell.group,
        REVISION_LABEL: cell.revision,
        ZONE_LABEL: cell.zone,
        CAPACITY_TYPE_LABEL: cell.capacity_type,
    }


def provider_id(zone: str, instance_id: str) -> str:
    return f"aws:///{zone}/{instance_id}"


def parse_provider_id(value: str | None) -> tuple[str, str] | None:
    """(zone, instance id) from an ``aws:///zone/i-...`` providerID; None for any other."""
    match = PROVIDER_ID.match(value or "")
    return (match["zone"], match["instance"]) if match else None


def instance_of(node: NodeView) -> tuple[str, str] | None:
    """(zone, instance id) from a node's ``aws:///zone/i-...`` providerID."""
    return parse_provider_id(node.provider_id)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))


def _is_capacity_error(error: ClientError) -> bool:
    return _code(error) in CAPACITY_CODES or is_capacity_shortage(_message(error))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _tags(described: dict[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in described.get("Tags") or []}


def _launch_template_of(described: dict[str, Any]) -> str | None:
    """The launch template (ID) an Auto Scaling group launches from."""
    spec = described.get("LaunchTemplate")
    if spec is None:
        policy = described.get("MixedInstancesPolicy") or {}
        spec = (policy.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification")
    found = (spec or {}).get("LaunchTemplateId")
    return str(found) if found is not None else None


def _cell_of(described: dict[str, Any]) -> CellRef | None:
    tags = _tags(described)
    try:
        return CellRef(
            tags[GROUP_LABEL], tags[REVISION_LABEL], tags[ZONE_LABEL], tags[CAPACITY_TYPE_LABEL]
        )
    except KeyError:
        return None


def _failure(activity: dict[str, Any]) -> LaunchFailure:
    parts = [activity.get("StatusMessage"), activity.get("Description"), activity.get("Cause")]
    message = " | ".join(str(p) for p in parts if p)
    at = _utc(activity.get("EndTime")) or _utc(activity.get("StartTime")) or datetime.now(UTC)
    return LaunchFailure(
        at=at,
        message=message or str(activity.get("StatusCode")),
        capacity=is_capacity_shortage(message),
    )


class AwsProvider:
    """Cells as Auto Scaling groups (the ``Provider`` protocol over boto3)."""

    name = "aws"

    def __init__(
        self,
        session: boto3.session.Session | None = None,
        *,
        check_fence: Callable[[], None] = lambda: None,
        failure_tail: int = FAILURE_TAIL,
        delete_launch_templates: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        session = session or boto3.session.Session()
        self.ec2: Any = session.client("ec2", config=RETRIES)
        self.autoscaling: Any = session.client("autoscaling", config=RETRIES)
        self.elbv2: Any = session.client("elbv2", config=RETRIES)
        self.check_fence = check_fence
        self.failure_tail = failure_tail
        self.delete_launch_templates = delete_launch_templates
        self.monotonic = monotonic
        self._origins: dict[str, NodeOrigin] = {}
        """Instance id -> its cell, from the latest observations and listings."""
        self._unknown: dict[str, float] = {}
        """Instance id -> when a listing of every Molt cell did not hold it."""
        self._listed_at: float | None = None
        self._listing = asyncio.Lock()

    # -- reads -------------------------------------------------------------------------

    async def observe(self, group: str) -> list[CellObservation]:
        observations = await self._run(f"observe group {group}", self._observe, group)
        self._remember(group, observations)
        return observations

    def _remember(self, group: str, observations: list[CellObservation]) -> None:
        """Keep the instance -> cell map that registration reads current for ``group``."""
        for gone in [i for i, o in self._origins.items() if o.cell.group == group]:
            del self._origins[gone]
        for observation in observations:
            for instance in observation.instances:
                self._origins[instance.instance_id] = NodeOrigin(observation.cell, instance)
                self._unknown.pop(instance.instance_id, None)

    # -- registration ------------------------------------------------------------------

    async def describe_node(self, node: NodeView) -> NodeOrigin | None:
        found = instance_of(node)
        if found is None:
            return None
        instance_id = found[1]
        known = self._origins.get(instance_id)
        if known is not None or self._recently_unknown(instance_id):
            return known
        # One listing at a time: nodes that join together wait for the same one.
        async with self._listing:
            known = self._origins.get(instance_id)
            if known is not None or self._recently_unknown(instance_id):
                return known
            if (
                self._listed_at is not None
                and self.monotonic() - self._listed_at < ORIGIN_REFRESH_SECONDS
            ):
                # Listed a moment ago (perhaps for a node that joined with this one) and
                # it was not there. Its group's next observe clears this if it appears.
                self._unknown[instance_id] = self.monotonic()
                return None
            listed = await self._run("list Molt's cells", self._list_origins, dict(self._origins))
            now = self._listed_at = self.monotonic()
            # A listing of every Molt cell is the whole truth about Molt's instances.
            self._origins = listed
            self._unknown = {
                i: at for i, at in self._unknown.items() if now - at < UNKNOWN_TTL_SECONDS
            }
            known = self._origins.get(instance_id)
            if known is None:
                self._unknown[instance_id] = now
            log.info("aws.cells_listed", instances=len(listed), wanted=instance_id)
            return known

    def _recently_unknown(self, instance_id: str) -> bool:
        at = self._unknown.get(instance_id)
        return at is not None and self.monotonic() - at < UNKNOWN_TTL_SECONDS

    def _list_origins(self, known: dict[str, NodeOrigin]) -> dict[str, NodeOrigin]:
        """Every instance of every Molt cell; launch times are looked up only for new ones."""
        pages = self.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
            Filters=[{"Name": "tag-key", "Values": [GROUP_LABEL]}]
        )
        members: list[tuple[CellRef, dict[str, Any]]] = []
        for page in pages:
            for asg in page.get("AutoScalingGroups") or []:
                cell = _cell_of(asg)  # only groups carrying all of Molt's cell tags
                if cell is None:
                    continue
                members.extend(
                    (cell, member)
                    for member in asg.get("Instances") or []
                    if not str(member.get("LifecycleState", "")).startswith(LEAVING_LIFECYCLE)
                )
        fresh = [m["InstanceId"] for _, m in members if m["InstanceId"] not in known]
        launched = self._launch_times(fresh) if fresh else {}
        origins = {}
        for cell, member in members:
            instance_id = member["InstanceId"]
            previous = known.get(instance_id)
            instance = Instance(
                instance_id=instance_id,
                launched_at=previous.instance.launched_at
                if previous is not None
                else launched.get(instance_id),
                provider_id=provider_id(member["AvailabilityZone"], instance_id),
            )
            origins[instance_id] = NodeOrigin(cell, instance)
        return origins

    def _observe(self, group: str) -> list[CellObservation]:
        observations = []
        described = self._group_asgs(group)
        launched = self._launch_times(
            [
                member["InstanceId"]
                for asg in described
                for member in asg.get("Instances") or []
                if not str(member.get("LifecycleState", "")).startswith(LEAVING_LIFECYCLE)
            ]
        )
        for asg in described:
            cell = _cell_of(asg)
            if cell is None:
                continue
            instances = tuple(
                Instance(
                    instance_id=member["InstanceId"],
                    launched_at=launched.get(member["InstanceId"]),
                    provider_id=provider_id(member["AvailabilityZone"], member["InstanceId"]),
                )
                for member in asg.get("Instances") or []
                if not str(member.get("LifecycleState", "")).startswith(LEAVING_LIFECYCLE)
            )
            observations.append(
                CellObservation(
                    cell=cell,
                    desired=int(asg.get("DesiredCapacity", 0)),
                    instances=instances,
                    failures=self._failures(asg["AutoScalingGroupName"]),
                )
            )
        return sorted(observations, key=lambda o: o.cell)

    def _group_asgs(self, group: str) -> list[dict[str, Any]]:
        pages = self.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
            Filters=[{"Name": f"tag:{GROUP_LABEL}", "Values": [group]}]
        )
        found = [asg for page in pages for asg in page.get("AutoScalingGroups") or []]
        # Filter again: an endpoint that ignores Filters must not hand us other groups.
        return [asg for asg in found if _tags(asg).get(GROUP_LABEL) == group]

    def _describe_asg(self, name: str) -> dict[str, Any] | None:
        found = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        groups = found.get("AutoScalingGroups") or []
        return groups[0] if groups else None

    def _describe_instances(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """EC2's view of instances; an unknown id is left out rather than an error."""
        found: list[dict[str, Any]] = []
        for chunk in _chunks(sorted(set(ids)), DESCRIBE_CHUNK):
            pages = self.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-id", "Values": chunk}]
            )
            for page in pages:
                for reservation in page.get("Reservations") or []:
                    found.extend(reservation.get("Instances") or [])
        return found

    def _launch_times(self, ids: list[str]) -> dict[str, datetime | None]:
        return {i["InstanceId"]: _utc(i.get("LaunchTime")) for i in self._describe_instances(ids)}

    def _failures(self, name: str) -> tuple[LaunchFailure, ...]:
        activities = (
            self.autoscaling.describe_scaling_activities(
                AutoScalingGroupName=name, MaxRecords=100
            ).get("Activities")
            or []
        )
        failed = [_failure(a) for a in activities if a.get("StatusCode") in ("Failed", "Cancelled")]
        failed.sort(key=lambda f: f.at)
        return tuple(failed[-self.failure_tail :]) if self.failure_tail else ()

    # -- scale -------------------------------------------------------------------------

    async def scale(self, cell: CellRef, template: Template, desired: int) -> None:
        if desired < 0:
            raise ProviderError(f"cannot scale {cell} to {desired}")
        name = asg_name(cell)
        described = await self._run(f"describe {name}", self._describe_asg, name)
        if described is None:
            await self._create_cell(cell, template)
        elif int(described.get("DesiredCapacity", 0)) == desired:
            return
        self.check_fence()
        await self._run(
            f"scale {name} to {desired}",
            lambda: self.autoscaling.set_desired_capacity(
                AutoScalingGroupName=name, DesiredCapacity=desired, HonorCooldown=False
            ),
        )
        log.info("aws.scaled", cell=str(cell), asg=name, desired=desired)

    async def _create_cell(self, cell: CellRef, template: Template) -> None:
        subnets = template.aws.subnets if template.aws else {}
        subnet = subnets.get(cell.zone)
        if subnet is None:
            raise ProviderError(
                f"cell {cell}: template.aws.subnets has no subnet for zone {cell.zone}"
            )
        if not template.image:
            raise ProviderError(f"cell {cell}: an aws template needs an image (AMI ID)")
        template_id, version = await self._ensure_template(cell.group, cell.revision, template)
        name = asg_name(cell)
        arguments = {
            "AutoScalingGroupName": name,
            "MixedInstancesPolicy": self._mixed_instances_policy(
                cell, template, template_id, version
            ),
            "MinSize": 0,
            "MaxSize": CELL_MAX_SIZE,
            "DesiredCapacity": 0,
            "VPCZoneIdentifier": subnet,
            "NewInstancesProtectedFromScaleIn": True,
            "Tags": [
                {"Key": key, "Value": value, "PropagateAtLaunch": True}
                for key, value in cell_tags(cell).items()
            ],
        }
        if template.aws and template.aws.target_groups:
            # AWS registers the cell's new instances; the pipeline deregisters them.
            arguments["TargetGroupARNs"] = list(template.aws.target_groups)
        self.check_fence()
        try:
            await asyncio.to_thread(lambda: self.autoscaling.create_auto_scaling_group(**arguments))
        except ClientError as error:
            # AlreadyExists: an earlier attempt (or a retried request) made it: the same name
            # is the same cell.
            if _code(error) != "AlreadyExists":
                raise self._error(f"create {name}", error) from error
        except BotoCoreError as error:
            raise ProviderError(f"cannot create {name}: {error}") from error
        log.info("aws.cell_created", cell=str(cell), asg=name, launch_template_version=version)

    @staticmethod
    def _mixed_instances_policy(
        cell: CellRef, template: Template, template_id: str, version: int
    ) -> dict[str, Any]:
        if cell.capacity_type == "spot":
            distribution: dict[str, Any] = {
                "OnDemandBaseCapacity": 0,
                "OnDemandPercentageAboveBaseCapacity": 0,
                "SpotAllocationStrategy": "price-capacity-optimized",
            }
        else:
            distribution = {
                "OnDemandAllocationStrategy": "prioritized",
                "OnDemandBaseCapacity": 0,
                "OnDemandPercentageAboveBaseCapacity": 100,
            }
        return {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": template_id,
                    "Version": str(version),
                },
                "Overrides": [{"InstanceType": t} for t in template.instance_types],
            },
            "InstancesDistribution": distribution,
        }

    @staticmethod
    def _launch_template_data(template: Template) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ImageId": template.image,
            "InstanceType": template.instance_types[0],
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        }
        aws = template.aws
        if aws is not None:
            if aws.security_groups:
                data["SecurityGroupIds"] = list(aws.security_groups)
            if aws.user_data:
                data["UserData"] = base64.b64encode(aws.user_data.encode()).decode()
            if aws.iam_instance_profile:
                key = "Arn" if aws.iam_instance_profile.startswith("arn:") else "Name"
                data["IamInstanceProfile"] = {key: aws.iam_instance_profile}
            if aws.key_name:
                data["KeyName"] = aws.key_name
        return data

    async def _ensure_template(
        self, group: str, revision: str, template: Template
    ) -> tuple[str, int]:
        """The revision's launch template (created once) and the version that holds it."""
        name = launch_template_name(group, revision)
        existing = await self._run(f"describe {name}", self._describe_template, name)
        if existing is None:
            data = self._launch_template_data(template)
            tags = [
                {"Key": GROUP_LABEL, "Value": group},
                {"Key": REVISION_LABEL, "Value": revision},
            ]
            self.check_fence()
            try:
                created = await asyncio.to_thread(
                    lambda: self.ec2.create_launch_template(
                        LaunchTemplateName=name,
                        VersionDescription=revision,
                        LaunchTemplateData=data,
                        TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}],
                    )
                )
                return str(created["LaunchTemplate"]["LaunchTemplateId"]), 1
            except ClientError as error:
                # Idempotent by name: an earlier attempt (or a retried request) made it.
                if "AlreadyExists" not in _code(error):
                    raise self._error(f"create launch template {name}", error) from error
            except BotoCoreError as error:
                raise ProviderError(f"cannot create launch template {name}: {error}") from error
            existing = await self._run(f"describe {name}", self._describe_template, name)
            if existing is None:
                raise ProviderError(f"launch template {name} exists but cannot be read")
        return str(existing["LaunchTemplateId"]), 1

    def _describe_template(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.ec2.describe_launch_templates(LaunchTemplateNames=[name])
        except ClientError as error:
            if "NotFound" in _code(error):
                return None
            raise
        templates = found.get("LaunchTemplates") or []
        return templates[0] if templates else None

    # -- terminate ---------------------------------------------------------------------

    def owns(self, node: NodeView) -> bool:
        return instance_of(node) is not None

    async def terminate(self, node: NodeView) -> None:
        found = instance_of(node)
        if found is None:
            raise ProviderError(
                f"node {node.name} has no AWS providerID (aws:///<zone>/<instance-id>): "
                f"{node.provider_id!r}"
            )
        await self._terminate(found[1], expected_asg=None)

    async def terminate_instance(self, cell: CellRef, instance_id: str) -> None:
        await self._terminate(instance_id, expected_asg=asg_name(cell))

    async def _terminate(self, instance_id: str, *, expected_asg: str | None) -> None:
        membership = await self._run(
            f"find the group of {instance_id}",
            lambda: self.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id]),
        )
        members = membership.get("AutoScalingInstances") or []
        if not members:
            await self._require_gone(instance_id)
            return
        member = members[0]
        group = str(member["AutoScalingGroupName"])
        if expected_asg is not None and group != expected_asg:
            raise ProviderError(f"instance {instance_id} is in {group}, not in {expected_asg}")
        if str(member.get("LifecycleState", "")).startswith(LEAVING_LIFECYCLE):
            return  # already on its way out
        described = await self._run(f"describe {group}", self._describe_asg, group)
        # Decrement unless that would go below the group's minimum (AWS refuses it); an
        # instance that is not replaced because desired <= what remains is as good.
        decrement = described is not None and int(described.get("DesiredCapacity", 0)) > int(
            described.get("MinSize", 0)
        )
        self.check_fence()
        try:
            await asyncio.to_thread(
                lambda: self.autoscaling.terminate_instance_in_auto_scaling_group(
                    InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
                )
            )
        except ClientError as error:
            message = _message(error).lower()
            if "not found" in message or "no managed instance" in message:
                await self._require_gone(instance_id)
                return
            raise self._error(f"terminate {instance_id}", error) from error
        except BotoCoreError as error:
            raise ProviderError(f"cannot terminate {instance_id}: {error}") from error
        log.info("aws.terminated", instance=instance_id, asg=group, decremented=decrement)

    async def _require_gone(self, instance_id: str) -> None:
        """Succeed if the instance is gone; refuse one that runs outside any group."""
        found = await self._run(f"describe {instance_id}", self._describe_instances, [instance_id])
        states = {str((i.get("State") or {}).get("Name")) for i in found}
        if states - GONE_INSTANCE_STATES:
            raise ProviderError(
                f"instance {instance_id} is not in an Auto Scaling group; Molt only "
                "terminates instances of its cells"
            )

    async def instance_exists(self, node: NodeView) -> bool | None:
        """``DescribeInstances`` for the providerID's instance: terminated, shutting down
        or not found is gone; None for a node without an AWS providerID or when EC2
        cannot be asked now."""
        found = instance_of(node)
        if found is None:
            return None
        try:
            described = await self._run(
                f"describe {found[1]}", self._describe_instances, [found[1]]
            )
        except ProviderError as error:
            log.warning("aws.instance_unknown", node=node.name, error=str(error))
            return None
        states = {str((i.get("State") or {}).get("Name")) for i in described}
        return bool(states - GONE_INSTANCE_STATES)

    # -- lifecycle hooks ---------------------------------------------------------------

    async def heartbeat(self, hook: LifecycleHook, instance_id: str) -> None:
        self.check_fence()
        await self._run(
            f"extend lifecycle hook {hook.name} of {hook.group}",
            lambda: self.autoscaling.record_lifecycle_action_heartbeat(
                AutoScalingGroupName=hook.group,
                LifecycleHookName=hook.name,
                LifecycleActionToken=hook.token,
                InstanceId=instance_id,
            ),
        )

    async def complete(self, hook: LifecycleHook, instance_id: str) -> bool:
        self.check_fence()
        try:
            await asyncio.to_thread(
                lambda: self.autoscaling.complete_lifecycle_action(
                    AutoScalingGroupName=hook.group,
                    LifecycleHookName=hook.name,
                    LifecycleActionToken=hook.token,
                    LifecycleActionResult="CONTINUE",
                    InstanceId=instance_id,
                )
            )
        except ClientError as error:
            if "no active lifecycle action" in _message(error).lower():
                return False  # completed before (a restart) or timed out: nothing waits
            what = f"complete lifecycle hook {hook.name} of {hook.group}"
            raise self._error(what, error) from error
        except BotoCoreError as error:
            raise ProviderError(f"cannot complete lifecycle hook {hook.name}: {error}") from error
        log.info("aws.lifecycle_completed", instance=instance_id, asg=hook.group, hook=hook.name)
        return True

    # -- reboot ------------------------------------------------------------------------

    async def reboot(self, node: NodeView) -> None:
        """``RebootInstances`` for the node's instance; only instances of Molt's cells."""
        instance_id = self._instance_id(node)
        membership = await self._run(
            f"find the group of {instance_id}",
            lambda: self.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id]),
        )
        if not membership.get("AutoScalingInstances"):
            raise ProviderError(
                f"instance {instance_id} is not in an Auto Scaling group; Molt only reboots "
                "instances of its cells"
            )
        self.check_fence()
        await self._run(
            f"reboot {instance_id}", lambda: self.ec2.reboot_instances(InstanceIds=[instance_id])
        )
        log.info("aws.rebooted", instance=instance_id, node=node.name)

    # -- load balancers ----------------------------------------------------------------

    def load_balancers_of(self, template: Template) -> tuple[str, ...]:
        return tuple(template.aws.target_groups or ()) if template.aws else ()

    async def deregister(self, node: NodeView, targets: Sequence[str]) -> float:
        instance_id = self._instance_id(node)
        delay = 0.0
        for arn in targets:
            listed = await self._run(
                f"describe the targets of {arn}", self._targets_of, arn, instance_id
            )
            if not listed:
                continue
            delay = max(delay, await self._run(f"read {arn}'s attributes", self._delay_of, arn))
            serving = [
                t["Target"] for t in listed if t.get("TargetHealth", {}).get("State") != DRAINING
            ]
            if not serving:
                continue  # deregistered before (a retry, or a restart): nothing to repeat
            self.check_fence()
            await self._run(
                f"deregister {instance_id} from {arn}",
                lambda arn=arn, serving=serving: self.elbv2.deregister_targets(
                    TargetGroupArn=arn,
                    Targets=[
                        {"Id": t["Id"], **({"Port": t["Port"]} if "Port" in t else {})}
                        for t in serving
                    ],
                ),
            )
            log.info("aws.deregistered", instance=instance_id, target_group=arn)
        return delay

    async def deregistering(self, node: NodeView, targets: Sequence[str]) -> bool:
        instance_id = self._instance_id(node)
        for arn in targets:
            listed = await self._run(
                f"describe the targets of {arn}", self._targets_of, arn, instance_id
            )
            if listed:
                return True
        return False

    def _instance_id(self, node: NodeView) -> str:
        found = instance_of(node)
        if found is None:
            raise ProviderError(
                f"node {node.name} has no AWS providerID (aws:///<zone>/<instance-id>): "
                f"{node.provider_id!r}"
            )
        return found[1]

    def _targets_of(self, arn: str, instance_id: str) -> list[dict[str, Any]]:
        """The target group's entries for the instance (one per registered port), in any
        state. Listed without naming targets: a port override would need the port."""
        described = self.elbv2.describe_target_health(TargetGroupArn=arn)
        return [
            d
            for d in described.get("TargetHealthDescriptions") or []
            if (d.get("Target") or {}).get("Id") == instance_id
        ]

    def _delay_of(self, arn: str) -> float:
        found = self.elbv2.describe_target_group_attributes(TargetGroupArn=arn)
        for attribute in found.get("Attributes") or []:
            if attribute.get("Key") == DEREGISTRATION_DELAY:
                try:
                    return float(attribute.get("Value"))
                except (TypeError, ValueError):
                    break
        return DEFAULT_DEREGISTRATION_DELAY

    # -- delete ------------------------------------------------------------------------

    async def delete_cell(self, cell: CellRef) -> None:
        name = asg_name(cell)
        described = await self._run(f"describe {name}", self._describe_asg, name)
        if described is not None:
            members = described.get("Instances") or []
            desired = int(described.get("DesiredCapacity", 0))
            if members or desired:
                raise ProviderError(
                    f"cell {cell} is not empty: {len(members)} instances, desired {desired}"
                )
            if described.get("Status") != "Delete in progress":
                self.check_fence()
                try:
                    await asyncio.to_thread(
                        lambda: self.autoscaling.delete_auto_scaling_group(
                            AutoScalingGroupName=name, ForceDelete=False
                        )
                    )
                except ClientError as error:
                    if "not found" not in _message(error).lower():
                        raise self._error(f"delete {name}", error) from error
                except BotoCoreError as error:
                    raise ProviderError(f"cannot delete {name}: {error}") from error
                log.info("aws.cell_deleted", cell=str(cell), asg=name)
        if self.delete_launch_templates:
            await self._delete_template(cell, exclude=name)

    async def _delete_template(self, cell: CellRef, *, exclude: str) -> None:
        """Delete the revision's launch template once no other cell launches from it.

        Best effort: a template left behind costs nothing but clutter, so failures are
        logged, not raised (the next ``delete_cell`` of the revision tries again).
        """
        name = launch_template_name(cell.group, cell.revision)
        try:
            existing = await asyncio.to_thread(self._describe_template, name)
            if existing is None:
                return
            template_id = str(existing["LaunchTemplateId"])
            others = await asyncio.to_thread(self._group_asgs, cell.group)
            if any(
                asg["AutoScalingGroupName"] != exclude
                and asg.get("Status") != "Delete in progress"
                and (
                    _launch_template_of(asg) == template_id
                    or _tags(asg).get(REVISION_LABEL) == cell.revision
                )
                for asg in others
            ):
                return
            self.check_fence()
            await asyncio.to_thread(
                lambda: self.ec2.delete_launch_template(LaunchTemplateId=template_id)
            )
            log.info("aws.launch_template_deleted", launch_template=name)
        except (ClientError, BotoCoreError) as error:
            log.warning("aws.launch_template_delete_failed", launch_template=name, error=str(error))

    # -- plumbing ----------------------------------------------------------------------

    async def _run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """Run a boto3 call in a worker thread; AWS errors become ProviderError."""
        try:
            return await asyncio.to_thread(call, *args)
        except ClientError as error:
            raise self._error(what, error) from error
        except BotoCoreError as error:
            raise ProviderError(f"cannot {what}: {error}") from error

    @staticmethod
    def _error(what: str, error: ClientError) -> ProviderError:
        kind = CapacityError if _is_capacity_error(error) else ProviderError
        return kind(f"cannot {what}: {_code(error)}: {_message(error)}")


def aws_provider_from_environment(check_fence: Callable[[], None]) -> AwsProvider:
    """An AwsProvider with credentials, region and endpoint from the standard boto3 chain
    (environment, shared config, instance role; ``AWS_ENDPOINT_URL`` for the endpoint)."""
    return AwsProvider(boto3.session.Session(), check_fence=check_fence)


if TYPE_CHECKING:
    _conforms: Provider = AwsProvider()  # mypy: AwsProvider implements the Provider protocol
    _registers: Registrar = AwsProvider()  # and the Registrar protocol
    _balances: LoadBalancers = AwsProvider()  # and the LoadBalancers protocol
    _hooks: LifecycleHooks = AwsProvider()  # and the LifecycleHooks protocol
