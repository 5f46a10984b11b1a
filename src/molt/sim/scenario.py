"""Simulation scenarios: the YAML a person writes, its models, and errors that name the line.

A scenario holds the fleet (InstanceGroups as in the CRD, with the ages of the nodes
already running), workloads (Deployments with requests and PDBs), TerminationPolicies,
the cloud's behaviour, Watchdogs (the node checks only), timeline events (a template
change, a zone outage, spot interruptions, a fleet-wide NotReady blink, kubelet deaths,
flapping nodes) and a duration. ``load_scenario`` parses
and validates the whole file before anything runs; every problem is reported as
``file:line: field: message``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from molt.api.durations import parse_duration
from molt.api.instancegroup import InstanceGroupSpec
from molt.api.lifecycle import Lifecycle
from molt.api.problems import field_path
from molt.api.terminationpolicy import TerminationPolicySpec
from molt.api.types import ApiModel, CountOrPercent, Duration, LabelSelector, Name
from molt.api.watchdog import Check, WatchdogSpec

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_BINARY = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0**2}
_DECIMAL = {"k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}


def cpu_millis(quantity: str | int | float) -> int:
    """A Kubernetes CPU quantity (``500m``, ``2``) in millicores."""
    match = _QUANTITY.match(str(quantity))
    if match is None or match.group(2) not in (None, "m"):
        raise ValueError(f"{quantity!r} is not a CPU quantity such as 500m or 2")
    value = float(match.group(1))
    return int(value if match.group(2) == "m" else value * 1000)


def memory_mib(quantity: str | int | float) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2Gi``, ``1G``, bytes) in MiB."""
    match = _QUANTITY.match(str(quantity))
    if match is None or match.group(2) == "m":
        raise ValueError(f"{quantity!r} is not a memory quantity such as 512Mi or 2Gi")
    value, unit = float(match.group(1)), match.group(2)
    if unit is None:
        return max(1, int(value / 2**20))
    return max(1, int(value * (_BINARY.get(unit) or _DECIMAL[unit])))


def seconds(duration: str) -> float:
    return parse_duration(duration).total_seconds()


class Requests(ApiModel):
    """What the scheduler places a pod by."""

    cpu: str = "100m"
    memory: str = "128Mi"

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        cpu_millis(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        memory_mib(value)
        return value


class TolerationSpec(ApiModel):
    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None


class BudgetSpec(ApiModel):
    """A PodDisruptionBudget: exactly one of minAvailable and maxUnavailable."""

    min_available: CountOrPercent | None = None
    max_unavailable: CountOrPercent | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError("set exactly one of minAvailable and maxUnavailable")
        return self


class Workload(ApiModel):
    """A Deployment and, optionally, the PDB over its pods."""

    name: Name
    namespace: Name = "default"
    replicas: Annotated[int, Field(ge=0, le=100000)]
    requests: Requests = Field(default_factory=Requests)
    labels: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[TolerationSpec] = Field(default_factory=list)
    startup: Duration = "10s"
    grace: Duration = "5s"
    do_not_disrupt: bool = False
    pdb: BudgetSpec | None = None

    @property
    def pod_labels(self) -> dict[str, str]:
        return self.labels or {"app": self.name}


class PdbEntry(BudgetSpec):
    """A PodDisruptionBudget declared on its own (e.g. two over the same pods)."""

    name: Name
    namespace: Name = "default"
    selector: dict[str, str]


class Ages(ApiModel):
    """Ages of the nodes running at the start, spread evenly from youngest to oldest."""

    youngest: Duration = "0h"
    oldest: Duration = "0h"

    def spread(self, count: int) -> list[timedelta]:
        young, old = parse_duration(self.youngest), parse_duration(self.oldest)
        if count <= 1:
            return [old] * count
        step = (old - young) / (count - 1)
        return [old - step * index for index in range(count)]


def action_names(lifecycle: Lifecycle) -> set[str]:
    return {a.name for a in (*lifecycle.pre_drain, *lifecycle.pre_terminate)}


class ActionTiming(ApiModel):
    """How a lifecycle action behaves in a simulation: it calls nothing, it takes
    ``duration`` and fails with probability ``failureRate`` (each attempt drawn from the
    scenario's seed)."""

    duration: Duration = "5s"
    failure_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class GroupEntry(ApiModel):
    """An InstanceGroup as in the CRD, plus the ages of its nodes at the start."""

    name: Name
    spec: InstanceGroupSpec
    ages: Ages | list[Duration] = Field(default_factory=Ages)

    @field_validator("spec")
    @classmethod
    def _no_manifests(cls, spec: InstanceGroupSpec) -> InstanceGroupSpec:
        if spec.lifecycle.post_launch:
            raise ValueError(
                "lifecycle.postLaunch applies objects to a real API server and is not "
                "simulated; remove it from the scenario"
            )
        return spec

    def node_ages(self) -> list[timedelta]:
        count = self.spec.desired_replicas
        if isinstance(self.ages, Ages):
            return self.ages.spread(count)
        listed = [parse_duration(a) for a in self.ages]
        return [listed[i % len(listed)] for i in range(count)] if listed else []


class PolicyEntry(ApiModel):
    """A TerminationPolicy as in the CRD."""

    name: Name
    spec: TerminationPolicySpec


_NOT_SIMULATED = (
    "needs a real cluster or network and is not simulated; the simulator runs the node "
    "checks, nodeReadyRatio and nodeCondition"
)


class SimulatedCheck(Check):
    """A Watchdog's check as a scenario may hold it: only the checks judged from the nodes.

    ``probePod``, ``apiLatency`` and ``http`` need a scheduler, an API server or a network
    the simulator does not have; each is refused at its own line."""

    @field_validator("probe_pod", "api_latency", "http")
    @classmethod
    def _needs_io(cls, value: object) -> object:
        if value is not None:
            raise ValueError(_NOT_SIMULATED)
        return value


class SimulatedWatchdogSpec(WatchdogSpec):
    check: SimulatedCheck


class WatchdogEntry(ApiModel):
    """A Watchdog as in the CRD. Its alerts go nowhere: the report lists each one."""

    name: Name
    spec: SimulatedWatchdogSpec

    def watchdog_spec(self) -> WatchdogSpec:
        """The spec as the production model holds it."""
        return WatchdogSpec.model_validate(self.spec.model_dump(by_alias=True, exclude_none=True))


class InstanceShape(ApiModel):
    cpu: str
    memory: str


class CloudSpec(ApiModel):
    """How the simulated cloud behaves."""

    launch_delay: Duration = "90s"
    launch_jitter: Duration = "30s"
    ready_delay: Duration = "20s"
    launch_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    retry_after: Duration = "30s"
    bad_images: list[str] = Field(
        default_factory=list, description="Images whose instances never become Ready."
    )
    instance_types: dict[str, InstanceShape] = Field(default_factory=dict)
    bare_metal_power_on: Duration = Field(
        default="5m",
        description="Power-on to join for a baremetal group's host (replaces launchDelay).",
    )
    bare_metal_reprovision: Duration = Field(
        default="20m",
        description="How long a released host is wiped before its rack can use it again.",
    )
    reboot: Duration = Field(
        default="3m", description="A reboot's restart to Ready (a remediation step)."
    )
    reboot_fix_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5, description="How often a reboot brings a dead kubelet back."
    )


class ControllerSpec(ApiModel):
    """The controller's settings, and how finely the simulator times its reconciles."""

    resync: Duration = Field(default="30s", description="As ``molt run --resync``.")
    selection_interval: Duration = Field(
        default="0s",
        description="Least time between selection passes; 0s: production's (1 s debounce).",
    )
    group_interval: Duration = Field(
        default="0s",
        description="Least time between reconciles of a group; 0s: production's timing.",
    )


class TemplateChange(ApiModel):
    group: Name
    template: dict[str, Any] = Field(description="Fields merged into the group's template.")


class ZoneOutage(ApiModel):
    zone: str
    until: Duration
    capacity_type: str | None = None
    nodes_not_ready: bool = False


class NotReadyBlink(ApiModel):
    """Every Ready node (of one group, or all) NotReady at once for ``duration``: a kubelet
    fleet restart, a control-plane network blip."""

    duration: Duration = "1s"
    group: Name | None = None


class KubeletDeath(ApiModel):
    """Kubelets that die for good: ``node`` by name, or ``nodes`` of them (of ``group``, or
    any), the youngest first. As with a real dead kubelet, the node turns Ready=Unknown and
    tainted unreachable after the node-monitor grace period, its pods turn unready, and a
    pod deleted there stays Terminating until the Node is deleted (pod GC)."""

    node: Name | None = None
    nodes: Annotated[int, Field(ge=1, le=10000)] | None = None
    group: Name | None = None

    @model_validator(mode="after")
    def _node_or_count(self) -> KubeletDeath:
        if (self.node is None) == (self.nodes is None):
            raise ValueError("set exactly one of node or nodes")
        return self


class Flap(ApiModel):
    """Nodes that flap: ``node`` by name, or ``nodes`` of them (of ``group``, or any), the
    youngest Ready ones first. Each of ``times`` cycles of ``period`` begins with the node
    NotReady for ``notReadyFor`` (half the period unless set), then Ready for the rest. A
    node that is gone, whose kubelet died, or that is NotReady for another reason when a
    cycle begins is left alone for that cycle."""

    node: Name | None = None
    nodes: Annotated[int, Field(ge=1, le=10000)] | None = None
    group: Name | None = None
    period: Duration = "2m"
    times: Annotated[int, Field(ge=1, le=10000)] = 5
    not_ready_for: Duration | None = None

    @model_validator(mode="after")
    def _shape(self) -> Flap:
        if (self.node is None) == (self.nodes is None):
            raise ValueError("set exactly one of node or nodes")
        if seconds(self.period) <= 0:
            raise ValueError("period must be longer than 0s")
        if self.not_ready_for is not None and not (
            0 < seconds(self.not_ready_for) < seconds(self.period)
        ):
            raise ValueError("notReadyFor must be longer than 0s and shorter than period")
        return self

    @property
    def down_seconds(self) -> float:
        if self.not_ready_for is not None:
            return seconds(self.not_ready_for)
        return seconds(self.period) / 2


class SpotInterruptions(ApiModel):
    """Spot instances reclaimed at random, ``perHour`` across the fleet."""

    per_hour: Annotated[float, Field(gt=0, le=10000)]
    until: Duration | None = None
    notices: bool = Field(
        default=True,
        description="Each reclaim is announced two minutes ahead on the interruption queue "
        "Molt reads (as EC2 does through EventBridge to SQS); false: reclaimed unwarned, as "
        "for a Molt run without --interruption-queue.",
    )


class TimelineEvent(ApiModel):
    """Something that happens at ``at``: exactly one kind is set."""

    at: Duration
    template_change: TemplateChange | None = None
    zone_outage: ZoneOutage | None = None
    spot_interruptions: SpotInterruptions | None = None
    not_ready_blink: NotReadyBlink | None = None
    kubelet_death: KubeletDeath | None = None
    flap: Flap | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TimelineEvent:
        kinds = [
            self.template_change,
            self.zone_outage,
            self.spot_interruptions,
            self.not_ready_blink,
            self.kubelet_death,
            self.flap,
        ]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError(
                "set exactly one of templateChange, zoneOutage, spotInterruptions, "
                "notReadyBlink, kubeletDeath, flap"
            )
        if self.zone_outage is not None and seconds(self.zone_outage.until) <= seconds(self.at):
            raise ValueError("zoneOutage.until must come after at")
        return self


class Scenario(ApiModel):
    """Everything a simulation starts from."""

    name: str = "scenario"
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    duration: Duration
    seed: int = 1
    sample_every: Duration = "10m"
    controller: ControllerSpec = Field(default_factory=ControllerSpec)
    cloud: CloudSpec = Field(default_factory=CloudSpec)
    fleet: list[GroupEntry] = Field(min_length=1)
    workloads: list[Workload] = Field(default_factory=list)
    pdbs: list[PdbEntry] = Field(default_factory=list)
    policies: list[PolicyEntry] = Field(default_factory=list)
    watchdogs: list[WatchdogEntry] = Field(default_factory=list)
    timeline: list[TimelineEvent] = Field(default_factory=list)
    actions: dict[str, ActionTiming] = Field(
        default_factory=dict,
        description="Lifecycle actions by name: how long each takes and how often it fails "
        "(an action not listed takes 5 s and succeeds). Nothing is called.",
    )

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        named = set().union(
            *(action_names(g.spec.lifecycle) for g in self.fleet),
            *(action_names(p.spec.lifecycle) for p in self.policies),
        )
        for name in self.actions:
            if name not in named:
                raise ValueError(
                    f"actions: {name!r} is no lifecycle action of the fleet or the policies"
                )
        watchdogs = [w.name for w in self.watchdogs]
        if len(set(watchdogs)) != len(watchdogs):
            raise ValueError("watchdogs: two watchdogs have the same name")
        for policy in self.policies:
            for pause in policy.spec.pause_when:
                if pause.watchdog not in watchdogs:
                    raise ValueError(
                        f"policies: {policy.name} pauses when watchdog {pause.watchdog!r} "
                        "fails, which the scenario does not have"
                    )
        groups = {g.name for g in self.fleet}
        for event in self.timeline:
            if event.template_change and event.template_change.group not in groups:
                raise ValueError(
                    f"timeline: templateChange names group {event.template_change.group!r}, "
                    f"which the fleet does not have"
                )
        return self

    @property
    def duration_seconds(self) -> float:
        return seconds(self.duration)


class ScenarioError(Exception):
    """A scenario that cannot run; ``problems`` name the file, line and field of each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on ``loc`` that exists."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            if found is None:
                break
            line = (key or found).start_mark.line + 1
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate a scenario's YAML text; raise ``ScenarioError`` naming every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = str(mark.line + 1) if mark is not None else "?"
        raise ScenarioError([f"{source}:{where}: not valid YAML: {error.problem}"]) from error
    except yaml.YAMLError as error:  # a character YAML does not allow (ReaderError)
        bad_line = text.count("\n", 0, getattr(error, "position", 0)) + 1
        what = str(error).splitlines()[0]
        raise ScenarioError([f"{source}:{bad_line}: not valid YAML: {what}"]) from error
    if not isinstance(data, dict):
        raise ScenarioError([f"{source}:1: a scenario is a mapping with fleet, duration, ..."])
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            loc = tuple(item["loc"])
            line = _line_of(root, loc)
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{source}:{line}: {field_path(loc)}: {message}")
        raise ScenarioError(problems) from error


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as error:
        raise ScenarioError([f"{path}: cannot read: {error.strerror}"]) from error
    return parse_scenario(text, str(path))


def selector_of(labels: dict[str, str]) -> LabelSelector:
    return LabelSelector(match_labels=labels)
