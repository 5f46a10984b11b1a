"""``TerminationPolicy``: which nodes go, why, and how many at a time.

A node is selected when any rule matches; budgets bound how many selected nodes are in
flight; drain settings and lifecycle actions shape how each one leaves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from molt.api.durations import parse_duration
from molt.api.lifecycle import Lifecycle
from molt.api.resource import PrinterColumn, Resource, ResourceNames
from molt.api.types import (
    CEL_RULES,
    ApiModel,
    Conditions,
    ConditionStatus,
    CountOrPercent,
    CronSchedule,
    Duration,
    LabelKey,
    LabelSelector,
    Name,
    TaintEffect,
    TimeZone,
    Url,
    cel,
)

Reason = Literal["MaxAge", "Condition", "Taint", "Drift", "Label", "Rebalance"]
ALL_REASONS: tuple[Reason, ...] = ("MaxAge", "Condition", "Taint", "Drift", "Label", "Rebalance")


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
    max_age_spread: Duration | None = Field(
        default=None,
        description="Even churn: nodes of one InstanceGroup whose deadlines bunch together "
        "are planned to expire at least maxAgeSpread/n apart (n: the group's nodes under "
        "the policy), each as late as that allows and never past maxAge, so a cliff of "
        "nodes launched together leaves evenly over [maxAge - maxAgeSpread, maxAge]. At most "
        "maxAge; not with maxAgeJitter.",
    )
    conditions: list[ConditionRule] = Field(default_factory=list, max_length=32)
    taints: list[TaintRule] = Field(default_factory=list, max_length=32)
    drift: bool = Field(
        default=False, description="Nodes whose revision is not their group's current one go."
    )
    labels: LabelSelector | None = Field(
        default=None, description="Nodes matching this selector go (e.g. a retire label)."
    )

    @model_validator(mode="after")
    def _spread_within_max_age(self) -> Rules:
        if self.max_age_spread is None:
            return self
        if self.max_age_jitter is not None:
            raise ValueError("maxAgeSpread and maxAgeJitter cannot be set together")
        if self.max_age is None:
            raise ValueError("maxAgeSpread needs maxAge")
        if parse_duration(self.max_age_spread) > parse_duration(self.max_age):
            raise ValueError("maxAgeSpread must not exceed maxAge")
        return self


RULES_RULES = [
    cel(
        "!has(self.maxAgeSpread) || !has(self.maxAgeJitter)",
        "maxAgeSpread and maxAgeJitter cannot be set together",
        ".maxAgeSpread",
    ),
    cel(
        "!has(self.maxAgeSpread) || has(self.maxAge)", "maxAgeSpread needs maxAge", ".maxAgeSpread"
    ),
    cel(
        "!has(self.maxAgeSpread) || !has(self.maxAge) || "
        "duration(self.maxAgeSpread) <= duration(self.maxAge)",
        "maxAgeSpread must not exceed maxAge",
        ".maxAgeSpread",
    ),
]


class Budget(ApiModel):
    """At most ``maxInFlight`` nodes in the pipeline per scope; the strictest budget wins."""

    max_in_flight: CountOrPercent
    scope: Literal["Cluster", "InstanceGroup", "Zone"] = "Cluster"
    reasons: list[Reason] = Field(
        default_factory=list,
        max_length=6,
        description="Reasons the budget applies to; empty means all.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    schedule: CronSchedule | None = Field(
        default=None, description="Cron expression opening a maintenance window."
    )
    duration: Duration | None = Field(default=None, description="How long a window stays open.")
    time_zone: TimeZone | None = Field(
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
    unreachable_grace_period: Duration = Field(
        default="1m",
        description="On a node unreachable this long, its unready pods are deleted rather "
        "than evicted, and pods deleting this long no longer hold the drain.",
    )
    blocked_after: Duration = Field(
        default="5m",
        description="A pod refused this long is named in molt.dev/blocked and the Blocked "
        "condition.",
    )
    cordon_tolerant_pods: Literal["Drain", "LeaveWithNode"] = Field(
        default="Drain",
        description="Pods that tolerate the cordon can land back on the draining node. Drain "
        "(the default) evicts them again and holds the node until none is left; "
        "LeaveWithNode lets them go down with the node, as Karpenter does.",
    )


class PauseWhen(ApiModel):
    """A condition that pauses the policy's selection."""

    watchdog: Name = Field(
        description="While this Watchdog is Failing (or Snoozed: still failing), the policy "
        "selects no new node; nodes already in the pipeline finish."
    )


class ControlPlane(ApiModel):
    """How control-plane nodes rotate (with ``includeControlPlane: true``): one at a time,
    each after a bake, only while the health gate passes."""

    bake_time: Duration = Field(
        default="10m",
        description="After a control-plane node is gone, wait this long, the health gate "
        "passing, before the next one; a gate failing meanwhile halts the rotation until it "
        "has passed again for a whole bakeTime.",
    )
    health_checks: list[Url] = Field(
        default_factory=list,
        max_length=16,
        description="URLs (e.g. etcd or API server health endpoints) that must answer 2xx; "
        "with every other control-plane node Ready and the API server's /readyz.",
    )


class RebootStep(ApiModel):
    """Restart the node's machine in place, where its provider can (aws, baremetal, kwok)."""

    timeout: Duration = Field(
        default="10m",
        description="How long the node has to come back Ready and healthy before the next step.",
    )


class ReplaceStep(ApiModel):
    """Replace the node through the termination pipeline (the policy's budgets apply)."""


class RemediationStep(ApiModel):
    """One step of the chain; exactly one of ``reboot`` or ``replace`` is set."""

    reboot: RebootStep | None = None
    replace: ReplaceStep | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> RemediationStep:
        if (self.reboot is None) == (self.replace is None):
            raise ValueError("exactly one of reboot or replace must be set")
        return self

    @property
    def kind(self) -> Literal["reboot", "replace"]:
        return "reboot" if self.reboot is not None else "replace"


STEP_RULES = [
    cel("has(self.reboot) != has(self.replace)", "exactly one of reboot or replace must be set"),
]


class MaxUnhealthy(ApiModel):
    """Meltdown protection: above these shares of unhealthy nodes, remediation pauses."""

    group: CountOrPercent = Field(
        default="40%",
        description="Unhealthy nodes of an InstanceGroup above this: remediation pauses in "
        "the whole group (100% never pauses).",
    )
    zone: CountOrPercent = Field(
        default="50%",
        description="Unhealthy nodes of a group in one zone above this: remediation pauses "
        "in that zone only (an outage, not sick nodes); the other zones go on.",
    )


REMEDIATION_RULES = [
    cel(
        "self.steps.all(s, !has(s.replace)) || (has(self.steps[self.steps.size() - 1].replace)"
        " && self.steps.filter(s, has(s.replace)).size() == 1)",
        "replace must be the last step, and come at most once",
        ".steps",
    ),
]


class Remediation(ApiModel):
    """What happens to a node a condition or taint rule selects, in order, before (or
    instead of) replacing it."""

    steps: list[Annotated[RemediationStep, Field(json_schema_extra={CEL_RULES: STEP_RULES})]] = (
        Field(
            min_length=1,
            max_length=8,
            description="Steps in order, e.g. [{reboot: {timeout: 10m}}, {replace: {}}]; "
            "replace, if present, is last. A chain without replace keeps a node that no "
            "reboot helped (it is reported).",
        )
    )
    max_unhealthy: MaxUnhealthy = Field(default_factory=MaxUnhealthy)

    @model_validator(mode="after")
    def _replace_last(self) -> Remediation:
        kinds = [step.kind for step in self.steps]
        if "replace" in kinds and (kinds.count("replace") > 1 or kinds[-1] != "replace"):
            raise ValueError("replace must be the last step, and come at most once")
        return self


class TerminationPolicySpec(ApiModel):
    """Which nodes are selected and how fast they go."""

    node_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Nodes the policy covers; empty: every node."
    )
    include_control_plane: bool = Field(
        default=False, description="Also cover control-plane nodes (off unless you opt in)."
    )
    control_plane: ControlPlane = Field(default_factory=ControlPlane)
    rules: Annotated[Rules, Field(json_schema_extra={CEL_RULES: RULES_RULES})]
    budgets: list[Annotated[Budget, Field(json_schema_extra={CEL_RULES: BUDGET_RULES})]] = Field(
        default_factory=list,
        max_length=32,
        description="Empty: one node or 10 % of the covered nodes, whichever is larger.",
    )
    drain: Drain = Field(default_factory=Drain)
    lifecycle: Lifecycle = Field(
        default_factory=Lifecycle,
        description="Actions around the drain; a node runs its group's first, then these.",
    )
    remediation: (
        Annotated[Remediation, Field(json_schema_extra={CEL_RULES: REMEDIATION_RULES})] | None
    ) = Field(
        default=None,
        description="For nodes a condition or taint rule selects: reboot first where the "
        "provider can, then replace; paused where too many nodes are unhealthy at once.",
    )
    pause_when: list[PauseWhen] = Field(
        default_factory=list,
        max_length=16,
        description="Watchdogs that pause new selections while they fail.",
    )


class ControlPlaneStatus(ApiModel):
    """The control-plane rotation's memory, kept across restarts."""

    last_completed: datetime | None = Field(
        default=None, description="When the latest control-plane node of the policy was gone."
    )
    halted: str | None = Field(
        default=None, description="Why the rotation is halted; unset when it is not."
    )
    healthy_since: datetime | None = Field(
        default=None, description="Since when the health gate has passed without a break."
    )


class TerminationPolicyStatus(ApiModel):
    """What the policy is doing."""

    observed_generation: int | None = None
    selected: int = 0
    in_flight: int = 0
    completed: int = 0
    blocked: int = 0
    deadlocked: int = Field(
        default=0,
        description="Selected nodes held before cordoning: a PodDisruptionBudget over their "
        "pods can never allow a disruption (e.g. minAvailable equal to the replicas).",
    )
    control_plane: ControlPlaneStatus | None = None
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
