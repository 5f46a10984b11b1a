"""``Watchdog``: a deep check that exercises the cluster and alerts when it fails.

Warm-up keeps a blip from paging; cool-down keeps a long failure from paging twice;
snooze silences it until a set time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from molt.api.resource import PrinterColumn, Resource, ResourceNames
from molt.api.types import (
    CEL_RULES,
    ApiModel,
    Conditions,
    CountOrPercent,
    Duration,
    LabelSelector,
    Name,
    SecretKeyRef,
    Url,
    cel,
)


class ProbePodCheck(ApiModel):
    """Schedule a small pod and wait for it to run."""

    namespace: Name = "molt-system"
    timeout: Duration = "60s"
    image: Annotated[str, Field(max_length=512)] = "registry.k8s.io/pause:3.10"


class ApiLatencyCheck(ApiModel):
    """Time a cheap API call against a threshold."""

    threshold: Duration = "1s"


class NodeReadyRatioCheck(ApiModel):
    """At least this share of the selected nodes must be Ready."""

    min_ready: CountOrPercent = "90%"
    node_selector: LabelSelector = Field(default_factory=LabelSelector)


class HttpCheck(ApiModel):
    """GET a URL and expect a status code."""

    url: Url
    timeout: Duration = "10s"
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200


class NodeConditionCheck(ApiModel):
    """At most ``max`` of the selected nodes may carry a condition type with status True.

    For node-problem-detector's ``KernelDeadlock``, or a custom condition for sysctl or
    hairpin-mode problems.
    """

    type: Annotated[str, Field(min_length=1, max_length=316)]
    max: Annotated[int, Field(ge=0)] = 0
    node_selector: LabelSelector = Field(default_factory=LabelSelector)


class Check(ApiModel):
    """Exactly one kind of check."""

    probe_pod: ProbePodCheck | None = None
    api_latency: ApiLatencyCheck | None = None
    node_ready_ratio: NodeReadyRatioCheck | None = None
    http: HttpCheck | None = None
    node_condition: NodeConditionCheck | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Check:
        kinds = (
            self.probe_pod,
            self.api_latency,
            self.node_ready_ratio,
            self.http,
            self.node_condition,
        )
        if len([c for c in kinds if c]) != 1:
            raise ValueError(
                "exactly one of probePod, apiLatency, nodeReadyRatio, http or nodeCondition"
            )
        return self


CHECK_RULES = [
    cel(
        "[has(self.probePod), has(self.apiLatency), has(self.nodeReadyRatio), has(self.http),"
        " has(self.nodeCondition)].filter(x, x).size() == 1",
        "exactly one of probePod, apiLatency, nodeReadyRatio, http or nodeCondition must be set",
    )
]


class WebhookSink(ApiModel):
    """POST alerts as JSON to a URL."""

    url: Url


PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class PagerDutySink(ApiModel):
    """PagerDuty Events API v2; the routing key lives in a Secret."""

    routing_key: SecretKeyRef
    severity: Literal["critical", "error", "warning", "info"] = "error"
    url: Url = Field(
        default=PAGERDUTY_EVENTS_URL, description="The Events API v2 endpoint (for tests)."
    )


class SlackSink(ApiModel):
    """A Slack incoming webhook whose URL lives in a Secret."""

    webhook_url: SecretKeyRef


class Sink(ApiModel):
    """Exactly one alert destination."""

    webhook: WebhookSink | None = None
    pager_duty: PagerDutySink | None = None
    slack: SlackSink | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Sink:
        if len([s for s in (self.webhook, self.pager_duty, self.slack) if s]) != 1:
            raise ValueError("exactly one of webhook, pagerDuty or slack")
        return self


SINK_RULES = [
    cel(
        "[has(self.webhook), has(self.pagerDuty), has(self.slack)].filter(x, x).size() == 1",
        "exactly one of webhook, pagerDuty or slack must be set",
    )
]


class WatchdogSpec(ApiModel):
    """What to check, how often, and whom to tell."""

    check: Annotated[Check, Field(json_schema_extra={CEL_RULES: CHECK_RULES})]
    interval: Duration = "1m"
    warmup: Duration = Field(default="5m", description="Failing this long before it fires.")
    cooldown: Duration = Field(default="30m", description="No repeated alert within this.")
    snooze_until: datetime | None = Field(
        default=None, description="Silenced until then; alerts again after if still failing."
    )
    sinks: list[Annotated[Sink, Field(json_schema_extra={CEL_RULES: SINK_RULES})]] = Field(
        default_factory=list, max_length=8
    )


class CheckResult(ApiModel):
    """The outcome of the last check."""

    time: datetime
    ok: bool
    message: Annotated[str, Field(max_length=4096)] = ""
    duration_seconds: float | None = None


class WatchdogStatus(ApiModel):
    """The watchdog's state machine."""

    state: Literal["Unknown", "Healthy", "WarmingUp", "Failing", "Snoozed"] | None = None
    observed_generation: int | None = None
    failing_since: datetime | None = None
    last_alert_time: datetime | None = None
    last_result: CheckResult | None = None
    conditions: Conditions


class Watchdog(Resource):
    """A deep health check with warm-up, cool-down, snooze and alert sinks."""

    names = ResourceNames(
        kind="Watchdog",
        plural="watchdogs",
        short_names=("wd",),
        columns=(
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Last-Check", ".status.lastResult.time", "date"),
            PrinterColumn("Message", ".status.lastResult.message", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["Watchdog"] = "Watchdog"
    spec: WatchdogSpec
    status: WatchdogStatus | None = None
