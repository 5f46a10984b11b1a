"""``InstanceGroup``: a fleet declared as an immutable template, zones and sizes.

Molt splits a group into cells (zone x capacity type x template revision), each backed by
one provider group. Behaviour arrives with the instance-group controller; this module is
the contract the API server enforces.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from molt.api.lifecycle import Lifecycle
from molt.api.manifests import PostLaunchList
from molt.api.resource import PrinterColumn, Resource, ResourceNames, ScaleSubresource
from molt.api.types import (
    CEL_RULES,
    ApiModel,
    Conditions,
    CountOrPercent,
    Duration,
    Name,
    ObjectName,
    Taint,
    cel,
)

Provider = Literal["kwok", "aws", "baremetal"]
CapacityType = Literal["on-demand", "spot"]
Zone = Annotated[str, Field(min_length=1, max_length=63)]
TARGET_GROUP_ARN = (
    r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:"
    r"targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$"
)
"""An ELBv2 target group ARN."""
DEFAULT_MAX_NODE_AGE = "48h"
"""No node lives longer than this unless its group says otherwise (DESIGN.md)."""


class AwsTemplate(ApiModel):
    """AWS specifics of a template: where and how instances launch."""

    subnets: dict[str, str] = Field(
        default_factory=dict, description="Subnet ID per zone; every zone of the group needs one."
    )
    security_groups: list[Annotated[str, Field(max_length=255)]] = Field(
        default_factory=list, max_length=16
    )
    user_data: Annotated[str, Field(max_length=65536)] | None = None
    iam_instance_profile: Annotated[str, Field(max_length=2048)] | None = None
    key_name: Annotated[str, Field(max_length=255)] | None = None
    target_groups: list[Annotated[str, Field(max_length=2048, pattern=TARGET_GROUP_ARN)]] | None = (
        Field(
            default=None,
            max_length=50,
            json_schema_extra={"x-kubernetes-list-type": "set"},
            description="ELBv2 target group ARNs. Each cell's Auto Scaling group registers its "
            "instances in them; before a node's first eviction Molt deregisters its instance "
            "and waits out the deregistration delay.",
        )
    )


class KwokTemplate(ApiModel):
    """kwok specifics: simulated nodes in a local cluster."""

    boot_delay: Duration = Field(default="0s", description="Time from launch to the Node object.")
    never_ready: bool = Field(
        default=False,
        description="Fault injection for tests and demos: nodes join but never become Ready.",
    )


HOST_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""A host's name: a DNS label (it becomes the Node's name and its providerID)."""
MAC_ADDRESS = r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$"


class RedfishEndpoint(ApiModel):
    """Where a host's BMC answers Redfish, and which system it is there."""

    address: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^/\s]+/?$")] = Field(
        description="The BMC's base URL (scheme and authority), e.g. https://10.1.0.11."
    )
    system_id: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="The ComputerSystem's id under /redfish/v1/Systems/."
    )
    insecure_skip_verify: bool = Field(
        default=False,
        description="Accept the BMC's TLS certificate unchecked (BMCs often ship self-signed).",
    )


class BareMetalHost(ApiModel):
    """One machine of the pool: its rack (zone), its BMC, and how its Node is found."""

    name: Annotated[str, Field(max_length=63, pattern=HOST_NAME)]
    zone: Zone = Field(description="The host's rack; one of the group's zones.")
    redfish: RedfishEndpoint
    mac: Annotated[str, Field(pattern=MAC_ADDRESS)] | None = Field(
        default=None,
        description="The boot NIC's MAC address: a Node that joins without a baremetal:// "
        "providerID but with the label (or annotation) baremetal.molt.dev/mac is matched "
        "to the host by it.",
    )
    ip: Annotated[str, Field(min_length=1, max_length=45)] | None = Field(
        default=None,
        description="The address its Node reports as InternalIP: a Node that joins without "
        "a baremetal:// providerID is matched to the host by it.",
    )


class Reprovision(ApiModel):
    """The wipe step of a terminate: a cleaning image booted once after power-off."""

    image: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="Inserted as virtual media and booted once; it wipes the disks and "
        "powers the host off when done."
    )
    timeout: Duration = Field(
        default="30m",
        description="A wipe still running after this is stopped and the host is held back "
        "from the pool (state wipe-failed) for a person to look at.",
    )


class BareMetalTemplate(ApiModel):
    """Bare-metal specifics: a pool of hosts driven through their BMCs over Redfish."""

    credentials_secret: ObjectName = Field(
        description="A Secret with keys username and password for the BMCs, in the "
        "controller's namespace."
    )
    hosts: list[BareMetalHost] = Field(
        min_length=1,
        max_length=256,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
        description="The pool. A host is claimed at launch and released after its wipe.",
    )
    boot: Literal["VirtualMedia", "PXE"] = Field(
        default="VirtualMedia",
        description="VirtualMedia: insert template.image and boot it once; PXE: boot once "
        "from the network (the image is then the PXE server's business).",
    )
    reprovision: Reprovision | None = None
    bmc_timeout: Duration = Field(
        default="30s",
        description="How long one Redfish request may take; a BMC that does not answer "
        "in time fails the launch, and the failure counts against the host's rack.",
    )

    @model_validator(mode="after")
    def _check_unique_hosts(self) -> BareMetalTemplate:
        # The API server enforces this through the list's map key (name).
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError("template.baremetal.hosts lists a host name twice")
        # Nodes may be matched to hosts by MAC: one MAC on two hosts could match either.
        # Molt checks this when it reads the group (the API server does not).
        macs = [h.mac.lower() for h in self.hosts if h.mac]
        if len(set(macs)) != len(macs):
            raise ValueError("template.baremetal.hosts lists a MAC address twice")
        return self


class Template(ApiModel):
    """The immutable node template. Any change creates a new revision."""

    instance_types: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=32, description="Instance types, most preferred first."
    )
    image: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="Machine image (an AMI ID on AWS)."
    )
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list, max_length=32)
    aws: AwsTemplate | None = None
    kwok: KwokTemplate | None = None
    baremetal: BareMetalTemplate | None = None


def _on_demand_only() -> list[CapacityType]:
    return ["on-demand"]


class Capacity(ApiModel):
    """How capacity is bought: which capacity types, and the spot share."""

    types: list[CapacityType] = Field(
        default_factory=_on_demand_only,
        min_length=1,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    on_demand_base: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Nodes always bought on demand before any spot."
    )
    spot_percent: Annotated[int, Field(ge=0, le=100)] = Field(
        default=0, description="Share of capacity above the base bought as spot."
    )


class Strategy(ApiModel):
    """How a new revision replaces the old one."""

    type: Literal["RollingReplace", "BlueGreen"] = "RollingReplace"
    max_surge: CountOrPercent = 1
    max_unavailable: CountOrPercent = 0


class Health(ApiModel):
    """When a cell or a revision counts as failing, and how long a short cell rests."""

    ready_timeout: Duration = Field(
        default="10m", description="A launched instance must be a Ready node within this."
    )
    not_ready_for: Duration = Field(
        default="2m",
        description="A young node that goes NotReady fails only after staying NotReady this "
        "long (a shorter blink is not a failure).",
    )
    failure_threshold: CountOrPercent = Field(
        default="50%",
        description="Launch failures within the window, judged per cell: a revision is "
        "Degraded when more than one of its cells (or its only one) is past it.",
    )
    window: Duration = "30m"
    capacity_cooldown: Duration = Field(
        default="3m", description="How long a cell that ran out of capacity is left alone."
    )


class GroupLifecycle(Lifecycle):
    """A group's lifecycle: the hook points' actions, and post-launch manifests."""

    post_launch: PostLaunchList = Field(
        default_factory=list,
        description="Applied for each node when it joins (and has an address), removed "
        "when it goes.",
    )


class Overflow(ApiModel):
    """Where a group's shortfall goes while none of its cells can launch."""

    group: Name = Field(
        description="The InstanceGroup (any provider) that launches this group's missing "
        "replicas while every one of this group's cells is out of capacity or resting; they "
        "are handed back, through the termination pipeline, as this group's own nodes "
        "become Ready again."
    )


class InstanceGroupSpec(ApiModel):
    """Desired fleet."""

    provider: Provider
    min_size: Annotated[int, Field(ge=0, le=10000)]
    max_size: Annotated[int, Field(ge=0, le=10000)]
    replicas: Annotated[int, Field(ge=0, le=10000)] | None = Field(
        default=None, description="Desired nodes; defaults to minSize."
    )
    zones: list[Zone] = Field(
        min_length=1, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    capacity: Capacity = Field(default_factory=Capacity)
    template: Template
    max_node_age: Duration = Field(
        default=DEFAULT_MAX_NODE_AGE,
        description="Upper bound on node age; the smaller of this and the policies' applies. "
        "Nodes no policy covers are rotated at this age under a budget of one node or 10 %.",
    )
    strategy: Strategy = Field(default_factory=Strategy)
    health: Health = Field(default_factory=Health)
    lifecycle: GroupLifecycle = Field(
        default_factory=lambda: GroupLifecycle(),
        description="Actions around each node's drain (they run before its policy's), and "
        "objects applied for each node while it lives.",
    )
    overflow: Overflow | None = None

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> InstanceGroupSpec:
        # Mirrors INSTANCE_GROUP_SPEC_RULES so offline validation says what the server says.
        if self.min_size > self.max_size:
            raise ValueError("minSize must not exceed maxSize")
        if self.replicas is not None and not self.min_size <= self.replicas <= self.max_size:
            raise ValueError("replicas must lie between minSize and maxSize")
        if self.provider == "aws" and (self.template.image is None or self.template.aws is None):
            raise ValueError("an aws InstanceGroup needs template.image and template.aws")
        bare = self.template.baremetal
        if self.provider == "baremetal" and bare is None:
            raise ValueError("a baremetal InstanceGroup needs template.baremetal with its hosts")
        if (
            self.provider == "baremetal"
            and bare is not None
            and bare.boot == "VirtualMedia"
            and self.template.image is None
        ):
            raise ValueError(
                "a baremetal InstanceGroup that boots from virtual media needs template.image"
            )
        if bare is not None and any(h.zone not in self.zones for h in bare.hosts):
            raise ValueError("every host's zone in template.baremetal.hosts must be in zones")
        if self.capacity.spot_percent and "spot" not in self.capacity.types:
            raise ValueError("capacity.spotPercent above 0 needs 'spot' in capacity.types")
        return self

    @property
    def desired_replicas(self) -> int:
        """Desired node count, defaulting to minSize."""
        return self.min_size if self.replicas is None else self.replicas


INSTANCE_GROUP_SPEC_RULES = [
    cel(
        "self.minSize <= self.maxSize",
        "minSize must not exceed maxSize",
        ".minSize",
    ),
    cel(
        "!has(self.replicas) || (self.replicas >= self.minSize && self.replicas <= self.maxSize)",
        "replicas must lie between minSize and maxSize",
        ".replicas",
    ),
    cel(
        "self.provider != 'aws' || (has(self.template.image) && has(self.template.aws))",
        "an aws InstanceGroup needs template.image and template.aws",
        ".template",
    ),
    cel(
        "self.provider != 'baremetal' || has(self.template.baremetal)",
        "a baremetal InstanceGroup needs template.baremetal with its hosts",
        ".template",
    ),
    cel(
        "self.provider != 'baremetal' || !has(self.template.baremetal) "
        "|| (has(self.template.baremetal.boot) && self.template.baremetal.boot == 'PXE') "
        "|| has(self.template.image)",
        "a baremetal InstanceGroup that boots from virtual media needs template.image",
        ".template",
    ),
    cel(
        "!has(self.template.baremetal) "
        "|| self.template.baremetal.hosts.all(h, h.zone in self.zones)",
        "every host's zone in template.baremetal.hosts must be in zones",
        ".template.baremetal.hosts",
    ),
    cel(
        "!has(self.capacity) || !has(self.capacity.spotPercent) || self.capacity.spotPercent == 0 "
        "|| (has(self.capacity.types) && 'spot' in self.capacity.types)",
        "capacity.spotPercent above 0 needs 'spot' in capacity.types",
        ".capacity.spotPercent",
    ),
]


class HostInit(ApiModel):
    """Launch to Ready of the latest launches (at most 50), in whole seconds."""

    p50_seconds: Annotated[int, Field(ge=0)]
    p90_seconds: Annotated[int, Field(ge=0)]
    samples: Annotated[int, Field(ge=0)]


class RevisionStatus(ApiModel):
    """Counts for one template revision."""

    name: Name
    replicas: int = 0
    ready: int = 0
    launch_failures: int = 0
    state: Literal["Current", "Previous", "Outdated", "Degraded"] = "Current"
    message: Annotated[str, Field(max_length=1024)] | None = None
    host_init: HostInit | None = None
    template: Template | None = Field(
        default=None,
        description="Kept for the current and previous revisions, so a rollback can launch "
        "the previous template in any cell.",
    )


class CellStatus(ApiModel):
    """One cell: zone x capacity type x revision."""

    zone: Zone
    capacity_type: CapacityType
    revision: Name
    desired: int = 0
    ready: int = 0
    available: bool = True
    unavailable_until: str | None = None


class OverflowStatus(ApiModel):
    """Replicas this group asks its overflow group to run for it."""

    group: Name
    replicas: Annotated[int, Field(ge=0)]
    since: str | None = Field(default=None, description="When the overflow began (RFC 3339).")


class InstanceGroupStatus(ApiModel):
    """Observed fleet."""

    state: Literal["Pending", "Ready", "Progressing", "Degraded"] | None = None
    observed_generation: int | None = None
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    current_revision: Name | None = None
    revisions: list[RevisionStatus] = Field(default_factory=list, max_length=64)
    cells: list[CellStatus] = Field(default_factory=list, max_length=512)
    host_init: HostInit | None = Field(
        default=None,
        description="Launch to Ready at the current revision (p50, p90 of recent launches).",
    )
    selector: Annotated[str, Field(max_length=512)] | None = Field(
        default=None,
        description="The label selector of the group's nodes, for the scale subresource.",
    )
    overflow: OverflowStatus | None = Field(
        default=None, description="Replicas another group runs for this one (spec.overflow)."
    )
    borrowed: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Replicas this group runs for the groups that overflow into it."
    )
    conditions: Conditions


class InstanceGroup(Resource):
    """A fleet of nodes built from one immutable template at a time."""

    names = ResourceNames(
        kind="InstanceGroup",
        plural="instancegroups",
        short_names=("ig",),
        columns=(
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Min", ".spec.minSize", "integer"),
            PrinterColumn("Max", ".spec.maxSize", "integer"),
            PrinterColumn("Desired", ".spec.replicas", "integer"),
            PrinterColumn("Current", ".status.replicas", "integer"),
            PrinterColumn("Ready", ".status.readyReplicas", "integer"),
            PrinterColumn("Updated", ".status.updatedReplicas", "integer"),
            PrinterColumn("Revision", ".status.currentRevision", priority=1),
            PrinterColumn("Init-P50", ".status.hostInit.p50Seconds", "integer", priority=1),
            PrinterColumn("Provider", ".spec.provider", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
        scale=ScaleSubresource(".spec.replicas", ".status.replicas", ".status.selector"),
    )

    kind: Literal["InstanceGroup"] = "InstanceGroup"
    spec: Annotated[
        InstanceGroupSpec, Field(json_schema_extra={CEL_RULES: INSTANCE_GROUP_SPEC_RULES})
    ]
    status: InstanceGroupStatus | None = None
