"""``TerminationPolicy``: which nodes go, why, and how many at a time.

A node is selected when any rule matches; budgets bound how many selected nodes are in
flight; drain settings and pre-termination actions shape how each one leaves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from molt.api.resource import PrinterColumn, Resource, ResourceNames
from molt.api.types import (
    CEL_RULES,
    ApiModel,
    Conditions,
    ConditionStatus,
    CountOrPercent,
    Duration,
    LabelKey,
    LabelSelector,
    Name,
    TaintEffect,
    Url,
    cel,
)

Reason = Literal["MaxAge", "Condition", "Taint", "Drift", "Label"]
ALL_REASONS: tuple[Reason, ...] = ("MaxAge", "Condition", "Taint", "Drift", "Label")


class ConditionRule(ApiModel):
    """Select a node whose condition has had this status for at least ``for``."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus
    for_: Duration = Field(default="0s", alias="for")


class TaintRule(ApiModel):
    """Select a node that has carried a matching taint for at least ``for``."""

    key: LabelKey
    value: Annotated[str, Field(max_length=63)] | None = None
    effect: TaintEffect | None = None
    for_: Duration = Field(default="0s", alias="for")


class Rules(ApiModel):
    """Why a node is selected. Any matching rule selects it."""

    max_age: Duration | None = Field(default=None, description="Nodes older than this go.")
    max_age_jitter: Duration | None = Field(
        default=None,
        description="Spread expiry: each node's max age is shortened by a stable share of this.",
    )
    conditions: list[ConditionRule] = Field(default_factory=list, max_length=32)
    taints: list[TaintRule] = Field(default_factory=list, max_length=32)
    drift: bool = Field(
        default=False, description="Nodes whose revision is not their group's current one go."
    )
    labels: LabelSelector | None = Field(
        default=None, description="Nodes matching this selector go (e.g. a retire label)."
    )


class Budget(ApiModel):
    """At most ``maxInFlight`` nodes in the pipeline per scope; the strictest budget wins."""

    max_in_flight: CountOrPercent
    scope: Literal["Cluster", "InstanceGroup", "Zone"] = "Cluster"
    reasons: list[Reason] = Field(
        default_factory=list,
        max_length=5,
        description="Reasons the budget applies to; empty means all.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    schedule: Annotated[str, Field(min_length=9, max_length=128)] | None = Field(
        default=None, description="Cron expression opening a maintenance window."
    )
    duration: Duration | None = Field(default=None, description="How long a window stays open.")
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="IANA time zone of the schedule; UTC when unset."
    )

    @model_validator(mode="after")
    def _window_needs_schedule_and_duration(self) -> Budget:
        if (self.schedule is None) != (self.duration is None):
            raise ValueError("schedule and duration must be set together")
        return self


BUDGET_RULES = [
    cel(
        "has(self.schedule) == has(self.duration)",
        "schedule and duration must be set together",
    ),
    cel(
        "!has(self.timeZone) || has(self.schedule)",
        "timeZone needs a schedule",
        ".timeZone",
    ),
]


class Drain(ApiModel):
    """How pods leave a node."""

    timeout: Duration = Field(
        default="1h", description="After this the drain is reported as stuck."
    )
    delete_pods_after_deadline: bool = Field(
        default=False,
        description="Once the hard deadline passes, delete pods the Eviction API still refuses.",
    )


class HttpAction(ApiModel):
    """POST the node's details to a URL and wait for a 2xx."""

    url: Url
    method: Literal["POST", "PUT"] = "POST"


class JobAction(ApiModel):
    """Run a Kubernetes Job from a ConfigMap-held template and wait for it."""

    namespace: Name
    template_config_map: Name


class EtcdAction(ApiModel):
    """Move etcd leadership away from the node and remove its member."""

    endpoints: list[Url] = Field(min_length=1, max_length=5)
    client_secret: Name | None = None


class VaultAction(ApiModel):
    """Step a Vault server on the node down from active."""

    address: Url
    token_secret: Name | None = None


class LifecycleAction(ApiModel):
    """One pre-termination action; exactly one kind is set."""

    name: Annotated[str, Field(max_length=63)] | None = None
    timeout: Duration = "5m"
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    http: HttpAction | None = None
    job: JobAction | None = None
    etcd: EtcdAction | None = None
    vault: VaultAction | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> LifecycleAction:
        kinds = [k for k in (self.http, self.job, self.etcd, self.vault) if k is not None]
        if len(kinds) != 1:
            raise ValueError("exactly one of http, job, etcd or vault must be set")
        return self


ACTION_RULES = [
    cel(
        "[has(self.http), has(self.job), has(self.etcd), has(self.vault)].filter(x, x).size() == 1",
        "exactly one of http, job, etcd or vault must be set",
    )
]


class TerminationPolicySpec(ApiModel):
    """Which nodes are selected and how fast they go."""

    node_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Nodes the policy covers; empty: every node."
    )
    include_control_plane: bool = Field(
        default=False, description="Also cover control-plane nodes (off unless you opt in)."
    )
    rules: Rules
    budgets: list[Annotated[Budget, Field(json_schema_extra={CEL_RULES: BUDGET_RULES})]] = Field(
        default_factory=list,
        max_length=32,
        description="Empty: one node or 10 % of the covered nodes, whichever is larger.",
    )
    drain: Drain = Field(default_factory=Drain)
    pre_termination: list[
        Annotated[LifecycleAction, Field(json_schema_extra={CEL_RULES: ACTION_RULES})]
    ] = Field(default_factory=list, max_length=8)


class TerminationPolicyStatus(ApiModel):
    """What the policy is doing."""

    observed_generation: int | None = None
    selected: int = 0
    in_flight: int = 0
    completed: int = 0
    blocked: int = 0
    conditions: Conditions


class TerminationPolicy(Resource):
    """Selects nodes for replacement and bounds the disruption."""

    names = ResourceNames(
        kind="TerminationPolicy",
        plural="terminationpolicies",
        short_names=("tp",),
        columns=(
            PrinterColumn("Selected", ".status.selected", "integer"),
            PrinterColumn("In-Flight", ".status.inFlight", "integer"),
            PrinterColumn("Completed", ".status.completed", "integer"),
            PrinterColumn("Blocked", ".status.blocked", "integer"),
            PrinterColumn("Max-Age", ".spec.rules.maxAge", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["TerminationPolicy"] = "TerminationPolicy"
    spec: TerminationPolicySpec
    status: TerminationPolicyStatus | None = None
