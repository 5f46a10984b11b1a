"""Which nodes a TerminationPolicy selects, and why, in the order they should go.

A node is selected when any rule matches: max age (with jitter or the leveling schedule of
``maxAgeSpread``, and a drain lead so the hard deadline is met), a condition held long
enough, a taint carried long enough, drift from its group's current revision, or a label
selector. Nodes already in the pipeline and control-plane nodes (unless the policy opts
in) are never candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from itertools import compress
from operator import attrgetter, not_

from molt.api.durations import format_duration, parse_duration
from molt.api.labels import INTERRUPTION_ANNOTATION
from molt.api.terminationpolicy import TaintRule, TerminationPolicy
from molt.api.types import LabelSelector
from molt.policy.age import (
    MalformedLaunchTimeError,
    jitter_fraction,
    launch_time,
    node_age,
)
from molt.policy.eligibility import EligibilitySchedule
from molt.policy.interruptions import read_annotation
from molt.policy.leveling import leveled_expiries
from molt.policy.snapshot import NodeTaint, NodeView, Snapshot


class Urgency(IntEnum):
    """Order of departure: lower goes first."""

    PAST_DEADLINE = 0
    UNHEALTHY = 1
    TAINTED = 2
    DRIFTED = 3
    AGED = 4
    LABELLED = 5


@dataclass(frozen=True)
class Candidate:
    """A node a policy wants gone, and the reason a person reads."""

    node: str
    policy: str
    rule: str
    """The API reason: MaxAge, Condition, Taint, Drift, Label or Rebalance."""
    reason: str
    urgency: Urgency
    age: timedelta
    deadline: datetime | None
    group: str | None
    zone: str | None

    @property
    def bypasses_windows(self) -> bool:
        """Past-deadline and unhealthy nodes may go outside maintenance windows."""
        return self.urgency <= Urgency.UNHEALTHY


@dataclass(frozen=True)
class NodeProblem:
    """Something wrong with a node's metadata: reported, and the node skipped."""

    node: str
    message: str


@dataclass(frozen=True)
class Selection:
    """The outcome of one policy over one snapshot."""

    candidates: tuple[Candidate, ...]
    problems: tuple[NodeProblem, ...]


def matches_selector(labels: dict[str, str], selector: LabelSelector | None) -> bool:
    """Kubernetes label-selector semantics; an empty selector matches everything."""
    if selector is None:
        return True
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for term in selector.match_expressions:
        present = term.key in labels
        if term.operator == "In" and not (present and labels[term.key] in term.values):
            return False
        if term.operator == "NotIn" and present and labels[term.key] in term.values:
            return False
        if term.operator == "Exists" and not present:
            return False
        if term.operator == "DoesNotExist" and present:
            return False
    return True


def covers(policy: TerminationPolicy, node: NodeView) -> bool:
    """Whether the policy applies to the node at all."""
    spec = policy.spec
    if node.is_control_plane and not spec.include_control_plane:
        return False
    selector = spec.node_selector
    # Asked of every node on every pass: most policies select every node.
    if not selector.match_labels and not selector.match_expressions:
        return True
    return matches_selector(node.labels, selector)


_IS_CONTROL_PLANE = attrgetter("is_control_plane")


def covered_nodes(policy: TerminationPolicy, nodes: Sequence[NodeView]) -> list[NodeView]:
    """The nodes the policy applies to, in their order: ``covers`` over a whole list,
    without a Python-level step per node when the policy selects nodes by no label."""
    selector = policy.spec.node_selector
    if selector is not None and (selector.match_labels or selector.match_expressions):
        return [node for node in nodes if covers(policy, node)]
    if policy.spec.include_control_plane:
        return list(nodes)
    return list(compress(nodes, map(not_, map(_IS_CONTROL_PLANE, nodes))))


@dataclass(frozen=True)
class _AgeRule:
    """A policy's max-age settings, parsed once per pass rather than once per node."""

    max_age: timedelta | None
    jitter: timedelta
    spread: timedelta
    drain_timeout: timedelta

    @classmethod
    def of(cls, policy: TerminationPolicy) -> _AgeRule:
        rules = policy.spec.rules
        return cls(
            parse_duration(rules.max_age) if rules.max_age is not None else None,
            parse_duration(rules.max_age_jitter) if rules.max_age_jitter else timedelta(0),
            parse_duration(rules.max_age_spread) if rules.max_age_spread else timedelta(0),
            parse_duration(policy.spec.drain.timeout),
        )


@dataclass(frozen=True)
class AgeDeadline:
    """When a node must be gone by age, when it is planned to go, and when the policy
    starts retiring it."""

    max_age: timedelta
    """The smaller of the policy's ``maxAge`` and the group's ``maxNodeAge``."""
    hard: datetime
    """Launch plus ``max_age``: never passed unless the budgets force it."""
    planned: datetime
    """``hard``, or earlier where ``maxAgeSpread`` levels the node's pool."""
    start: datetime
    """``planned`` less the jitter share and the drain lead."""

    @property
    def leveled(self) -> bool:
        return self.planned < self.hard


def _max_age(rule: _AgeRule, node: NodeView, snapshot: Snapshot) -> timedelta | None:
    limits: list[timedelta] = []
    if rule.max_age is not None:
        limits.append(rule.max_age)
    group = snapshot.groups.get(node.group or "")
    if group is not None and group.max_node_age_seconds is not None:
        limits.append(timedelta(seconds=group.max_node_age_seconds))
    return min(limits) if limits else None


def _drain_lead(rule: _AgeRule, max_age: timedelta) -> timedelta:
    """Start early enough that the node is gone by its planned expiry even if the drain
    takes its full timeout; the lead never eats more than a quarter of the node's life."""
    return min(rule.drain_timeout, max_age / 4)


def age_deadline(
    rule: _AgeRule,
    node: NodeView,
    snapshot: Snapshot,
    launched: datetime,
    expiries: Mapping[str, datetime],
) -> AgeDeadline | None:
    """The node's deadlines by age (None without a max age): the one call selection makes
    into the age rule. ``expiries`` are the policy's planned expiries (``leveled``)."""
    max_age = _max_age(rule, node, snapshot)
    if max_age is None:
        return None
    hard = launched + max_age
    planned = min(hard, expiries.get(node.name, hard))
    start = planned - rule.jitter * jitter_fraction(node.name) - _drain_lead(rule, max_age)
    return AgeDeadline(max_age, hard, planned, start)


def leveled(policy: TerminationPolicy, snapshot: Snapshot, now: datetime) -> Mapping[str, datetime]:
    """Planned expiries of the nodes the policy covers, pool by pool (its nodes in one
    InstanceGroup), from ``rules.maxAgeSpread``; empty without it. See
    ``molt.policy.leveling``."""
    rule = _AgeRule.of(policy)
    if rule.spread <= timedelta(0):
        return {}
    pools: dict[str | None, tuple[timedelta, list[tuple[datetime, str]]]] = {}
    for node in snapshot.nodes:
        if not covers(policy, node):
            continue
        max_age = _max_age(rule, node, snapshot)
        if max_age is None:
            continue
        try:
            launched = node_age(node, now).launched
        except MalformedLaunchTimeError:
            continue  # reported by selection; such a node is in no plan
        pools.setdefault(node.group, (max_age, []))[1].append((launched + max_age, node.name))
    planned: dict[str, datetime] = {}
    for max_age, pool in pools.values():
        # A node's replacement launches a drain lead before its planned expiry, so one
        # generation later its deadline is a lead short of a full max age; a spread as long
        # as the max age would push the whole plan earlier by a lead at every replacement.
        spread = min(rule.spread, max_age - _drain_lead(rule, max_age))
        planned.update(leveled_expiries(pool, spread))
    return planned


def max_age_due(
    policy: TerminationPolicy,
    node: NodeView,
    snapshot: Snapshot,
    now: datetime,
    expiries: Mapping[str, datetime] | None = None,
) -> datetime | None:
    """When the policy's max-age rule (or the group's maxNodeAge) selects the node; None
    without either. Raises ``MalformedLaunchTimeError`` like selection does. Pass the
    policy's ``leveled`` expiries when asking about many nodes."""
    deadline = age_deadline(
        _AgeRule.of(policy),
        node,
        snapshot,
        node_age(node, now).launched,
        leveled(policy, snapshot, now) if expiries is None else expiries,
    )
    return None if deadline is None else deadline.start


class _AgeLimits:
    """Per group, a pass's max age and the age at which the rule starts retiring a node
    before its jitter share (the max age less the drain lead), worked out once per
    group: both depend on the node's group alone."""

    def __init__(self, rule: _AgeRule, snapshot: Snapshot) -> None:
        self.rule = rule
        self.snapshot = snapshot
        self._by_group: dict[str | None, tuple[timedelta, timedelta] | None] = {}

    def of(self, node: NodeView) -> tuple[timedelta, timedelta] | None:
        """(max age, unjittered start), or None when no age limit applies to the node."""
        group = node.group
        if group in self._by_group:
            return self._by_group[group]
        max_age = _max_age(self.rule, node, self.snapshot)
        limit = None if max_age is None else (max_age, max_age - _drain_lead(self.rule, max_age))
        self._by_group[group] = limit
        return limit


def _age_due(
    rule: _AgeRule, node: NodeView, limits: _AgeLimits, launched: datetime
) -> datetime | None:
    """When the max-age rule starts retiring a node of an unleveled policy
    (``_max_age_candidate`` selects it from then on); None when no age limit applies.
    ``age_deadline``'s start, in the same whole-microsecond arithmetic."""
    limit = limits.of(node)
    if limit is None:
        return None
    return launched + (limit[1] - rule.jitter * jitter_fraction(node.name))


def _max_age_candidate(
    policy: TerminationPolicy,
    rule: _AgeRule,
    node: NodeView,
    snapshot: Snapshot,
    launched: datetime,
    age: timedelta,
    expiries: Mapping[str, datetime],
    limits: _AgeLimits | None = None,
) -> Candidate | None:
    if node.name not in expiries:
        # Not leveled: ``age_deadline``'s arithmetic from the group's limits (whole
        # microseconds, so exact), without building the node's deadlines.
        limit = (limits or _AgeLimits(rule, snapshot)).of(node)
        if limit is None:
            return None
        max_age, unjittered = limit
        start_at = unjittered - rule.jitter * jitter_fraction(node.name)
        if age < start_at:
            return None
        hard = planned = launched + max_age
    else:
        deadline = age_deadline(rule, node, snapshot, launched, expiries)
        if deadline is None:
            return None
        max_age = deadline.max_age
        start_at = deadline.start - launched
        if age < start_at:
            return None
        hard, planned = deadline.hard, deadline.planned
    past = age >= max_age
    shown_limit = max_age if past else start_at
    reason = f"max-age: {format_duration(age)} > {format_duration(shown_limit)}"
    if past:
        reason += " (past its deadline)"
    elif planned < hard:
        reason += (
            f" (max {format_duration(max_age)}, leveled by maxAgeSpread to "
            f"{format_duration(planned - launched)}, less drain lead)"
        )
    elif shown_limit != max_age:
        reason += f" (max {format_duration(max_age)}, less jitter and drain lead)"
    return _candidate(
        policy,
        node,
        "MaxAge",
        reason,
        Urgency.PAST_DEADLINE if past else Urgency.AGED,
        age,
        hard,
    )


def _condition_candidate(
    policy: TerminationPolicy, node: NodeView, now: datetime, age: timedelta
) -> Candidate | None:
    for rule in policy.spec.rules.conditions:
        held_for = parse_duration(rule.for_)
        for condition in node.conditions:
            if condition.type != rule.type or condition.status != rule.status:
                continue
            since = condition.last_transition or node.created
            if now - since >= held_for:
                reason = (
                    f"condition: {rule.type}={rule.status} for "
                    f"{format_duration(now - since)} >= {format_duration(held_for)}"
                )
                return _candidate(policy, node, "Condition", reason, Urgency.UNHEALTHY, age, None)
    return None


def taint_matches(rule: TaintRule, taint: NodeTaint) -> bool:
    """Whether the node's taint is the one the rule names: its key, and its value and
    effect where the rule gives them."""
    return (
        taint.key == rule.key
        and (rule.value is None or taint.value == rule.value)
        and (rule.effect is None or taint.effect == rule.effect)
    )


def _taint_candidate(
    policy: TerminationPolicy, node: NodeView, now: datetime, age: timedelta
) -> Candidate | None:
    for rule in policy.spec.rules.taints:
        held_for = parse_duration(rule.for_)
        for taint in node.taints:
            if not taint_matches(rule, taint):
                continue
            # Without a timestamp the taint's duration is unknown: only a zero "for" matches.
            if taint.added is None and held_for > timedelta(0):
                continue
            carried = now - taint.added if taint.added else timedelta(0)
            if carried >= held_for:
                reason = f"taint: {taint.key}:{taint.effect} for {format_duration(carried)}"
                return _candidate(policy, node, "Taint", reason, Urgency.TAINTED, age, None)
    return None


def health_due(policy: TerminationPolicy, node: NodeView) -> datetime | None:
    """The earliest moment a condition or taint rule can select the node as it is now
    (its ``for`` held from the condition's or taint's own timestamp); None: never, while
    the node is unchanged. The rules' own test is ``now - since >= for``, which is
    ``now >= since + for`` in whole microseconds."""
    dues: list[datetime] = []
    for condition_rule in policy.spec.rules.conditions:
        held_for = parse_duration(condition_rule.for_)
        for condition in node.conditions:
            if condition.type == condition_rule.type and condition.status == condition_rule.status:
                dues.append(_plus(condition.last_transition or node.created, held_for))
    for taint_rule in policy.spec.rules.taints:
        held_for = parse_duration(taint_rule.for_)
        for taint in node.taints:
            if not taint_matches(taint_rule, taint):
                continue
            if taint.added is not None:
                dues.append(_plus(taint.added, held_for))
            elif held_for <= timedelta(0):
                dues.append(datetime.min.replace(tzinfo=node.created.tzinfo))
    return min(dues) if dues else None


def _plus(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, or the calendar's end where that overflows (never reached)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=moment.tzinfo)


def health_candidate(policy: TerminationPolicy, node: NodeView, now: datetime) -> Candidate | None:
    """The node's selection by a condition or taint rule (its ``for`` held), if any: the
    rules a remediation chain acts on."""
    try:
        age = node_age(node, now).age
    except MalformedLaunchTimeError:
        age = timedelta(0)  # reported by selection; the node's health is judged all the same
    return _condition_candidate(policy, node, now, age) or _taint_candidate(policy, node, now, age)


def _drift_candidate(
    policy: TerminationPolicy, node: NodeView, snapshot: Snapshot, age: timedelta
) -> Candidate | None:
    if not policy.spec.rules.drift or node.group is None:
        return None
    group = snapshot.groups.get(node.group)
    if group is None or group.current_revision is None or node.revision is None:
        return None
    if node.revision == group.current_revision:
        return None
    reason = f"drift: revision {node.revision} != current {group.current_revision}"
    return _candidate(policy, node, "Drift", reason, Urgency.DRIFTED, age, None)


def _rebalance_candidate(
    policy: TerminationPolicy, node: NodeView, age: timedelta
) -> Candidate | None:
    """A node its cloud recommends rebalancing away from (elevated interruption risk) is
    replaced ahead of time, within the policy's budgets and windows."""
    notice = read_annotation(node.annotations.get(INTERRUPTION_ANNOTATION))
    if notice is None or notice.kind != "rebalance-recommendation":
        return None
    return _candidate(policy, node, "Rebalance", notice.describe(), Urgency.TAINTED, age, None)


def _label_candidate(policy: TerminationPolicy, node: NodeView, age: timedelta) -> Candidate | None:
    selector = policy.spec.rules.labels
    if selector is None or not matches_selector(node.labels, selector):
        return None
    return _candidate(
        policy, node, "Label", "label: matches rules.labels", Urgency.LABELLED, age, None
    )


def _candidate(
    policy: TerminationPolicy,
    node: NodeView,
    rule: str,
    reason: str,
    urgency: Urgency,
    age: timedelta,
    deadline: datetime | None,
) -> Candidate:
    return Candidate(
        node=node.name,
        policy=policy.metadata.name,
        rule=rule,
        reason=reason,
        urgency=urgency,
        age=age,
        deadline=deadline,
        group=node.group,
        zone=node.zone,
    )


def select_candidates(
    policy: TerminationPolicy,
    snapshot: Snapshot,
    now: datetime,
    schedule: EligibilitySchedule | None = None,
) -> Selection:
    """Every node the policy selects, most urgent first, oldest first within a tier.

    With a ``schedule`` (kept from pass to pass), a node no rule selects is skipped until
    the moment this function last found one could first select it (its age, or a
    condition or taint held long enough), unless the node, its group or the policy
    changed since (``molt.policy.eligibility``); the outcome is the same as without it."""
    candidates: list[Candidate] = []
    problems: list[NodeProblem] = []
    age_rule = _AgeRule.of(policy)
    expiries = leveled(policy, snapshot, now)
    rules = policy.spec.rules
    other_rules = bool(rules.conditions or rules.taints or rules.drift or rules.labels)
    health_rules = bool(rules.conditions or rules.taints)
    groups = snapshot.groups
    limits = _AgeLimits(age_rule, snapshot)
    # Not under a spread: a leveled expiry moves as other nodes of the pool come and go.
    schedule = schedule if age_rule.spread <= timedelta(0) else None
    if schedule is not None:
        schedule.begin(policy)
    # What is remembered for the policy, looked up once per pass, not once per node.
    waiting = schedule.waiting_in(policy) if schedule is not None else None
    for node in snapshot.nodes:
        if node.in_pipeline:
            continue
        # A node with an interruption notice is judged on every pass: the notice's own
        # moment is not one the schedule knows.
        notice = INTERRUPTION_ANNOTATION in node.annotations
        remembering = schedule if not notice else None
        group = groups.get(node.group or "") if remembering is not None else None
        if remembering is not None and waiting is not None and waiting(node, group, now):
            continue
        if not covers(policy, node):
            if remembering is not None:
                remembering.remember(policy, node, group, None)
            continue
        try:
            launched = launch_time(node)
        except MalformedLaunchTimeError as error:
            problems.append(NodeProblem(node.name, str(error)))
            continue
        age = now - launched
        # The most urgent selection; on a tie the first found, in the rules' order.
        best = _max_age_candidate(policy, age_rule, node, snapshot, launched, age, expiries, limits)
        if other_rules:
            for maybe in (
                _condition_candidate(policy, node, now, age) if rules.conditions else None,
                _taint_candidate(policy, node, now, age) if rules.taints else None,
                _drift_candidate(policy, node, snapshot, age) if rules.drift else None,
                _label_candidate(policy, node, age) if rules.labels else None,
            ):
                if maybe is not None and (best is None or maybe.urgency < best.urgency):
                    best = maybe
        if notice:
            rebalance = _rebalance_candidate(policy, node, age)
            if rebalance is not None and (best is None or rebalance.urgency < best.urgency):
                best = rebalance
        if best is not None:
            candidates.append(best)
        elif remembering is not None:
            # Nothing selects it now; drift and labels cannot before the node, its group
            # or the policy change, which the schedule notices. The rules with a moment:
            dues = [
                due
                for due in (
                    _age_due(age_rule, node, limits, launched),
                    health_due(policy, node) if health_rules else None,
                )
                if due is not None
            ]
            remembering.remember(policy, node, group, min(dues) if dues else None)
    if schedule is not None:
        schedule.forget_absent(policy.metadata.name, len(snapshot.nodes))
    candidates.sort(key=lambda c: (c.urgency, -c.age, c.node))
    return Selection(tuple(candidates), tuple(problems))
