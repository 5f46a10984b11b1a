"""Which nodes a TerminationPolicy selects, and why, in the order they should go.

A node is selected when any rule matches: max age (with jitter or the leveling schedule of
``maxAgeSpread``, and a drain lead so the hard deadline is met), a condition held long
enough, a taint carried long enough, drift from its group's current revision, or a label
selector. Nodes already in the pipeline and control-plane nodes (unless the policy opts
in) are never candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from molt.api.durations import format_duration, parse_duration
from molt.api.labels import INTERRUPTION_ANNOTATION
from molt.api.terminationpolicy import TerminationPolicy
from molt.api.types import LabelSelector
from molt.policy.age import MalformedLaunchTimeError, NodeAge, jitter_fraction, node_age
from molt.policy.eligibility import EligibilitySchedule
from molt.policy.interruptions import read_annotation
from molt.policy.leveling import leveled_expiries
from molt.policy.snapshot import NodeView, Snapshot


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


def _age_due(rule: _AgeRule, node: NodeView, snapshot: Snapshot, age: NodeAge) -> datetime | None:
    """When the max-age rule starts retiring a node of an unleveled policy
    (``_max_age_candidate`` selects it from then on); None when no age limit applies."""
    deadline = age_deadline(rule, node, snapshot, age.launched, {})
    return None if deadline is None else deadline.start


def _max_age_candidate(
    policy: TerminationPolicy,
    rule: _AgeRule,
    node: NodeView,
    snapshot: Snapshot,
    age: NodeAge,
    expiries: Mapping[str, datetime],
) -> Candidate | None:
    deadline = age_deadline(rule, node, snapshot, age.launched, expiries)
    if deadline is None:
        return None
    max_age = deadline.max_age
    start_at = deadline.start - age.launched
    if age.age < start_at:
        return None
    past = age.age >= max_age
    shown_limit = max_age if past else start_at
    reason = f"max-age: {format_duration(age.age)} > {format_duration(shown_limit)}"
    if past:
        reason += " (past its deadline)"
    elif deadline.leveled:
        reason += (
            f" (max {format_duration(max_age)}, leveled by maxAgeSpread to "
            f"{format_duration(deadline.planned - age.launched)}, less drain lead)"
        )
    elif shown_limit != max_age:
        reason += f" (max {format_duration(max_age)}, less jitter and drain lead)"
    return _candidate(
        policy,
        node,
        "MaxAge",
        reason,
        Urgency.PAST_DEADLINE if past else Urgency.AGED,
        age.age,
        deadline.hard,
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


def _taint_candidate(
    policy: TerminationPolicy, node: NodeView, now: datetime, age: timedelta
) -> Candidate | None:
    for rule in policy.spec.rules.taints:
        held_for = parse_duration(rule.for_)
        for taint in node.taints:
            if taint.key != rule.key:
                continue
            if rule.value is not None and taint.value != rule.value:
                continue
            if rule.effect is not None and taint.effect != rule.effect:
                continue
            # Without a timestamp the taint's duration is unknown: only a zero "for" matches.
            if taint.added is None and held_for > timedelta(0):
                continue
            carried = now - taint.added if taint.added else timedelta(0)
            if carried >= held_for:
                reason = f"taint: {taint.key}:{taint.effect} for {format_duration(carried)}"
                return _candidate(policy, node, "Taint", reason, Urgency.TAINTED, age, None)
    return None


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

    With a ``schedule`` (kept from pass to pass), a node only the max-age rule could
    select is skipped until the moment this function last found it could first be
    selected, unless the node, its group or the policy changed since
    (``molt.policy.eligibility``); the outcome is the same as without it."""
    candidates: list[Candidate] = []
    problems: list[NodeProblem] = []
    age_rule = _AgeRule.of(policy)
    expiries = leveled(policy, snapshot, now)
    rules = policy.spec.rules
    other_rules = bool(rules.conditions or rules.taints or rules.drift or rules.labels)
    groups = snapshot.groups
    if schedule is not None:
        schedule.begin(policy)
    # Only the age rule can select a node: its moment can be remembered. Not under a
    # spread: a leveled expiry moves as other nodes of the pool come and go.
    age_only = schedule if not other_rules and age_rule.spread <= timedelta(0) else None
    waiting = age_only.waiting_in(policy) if age_only is not None else None
    for node in snapshot.nodes:
        if node.in_pipeline:
            continue
        # Nor for a node with an interruption notice, which another rule selects.
        remembering = age_only if INTERRUPTION_ANNOTATION not in node.annotations else None
        group = groups.get(node.group or "")
        if remembering is not None and waiting is not None and waiting(node, group, now):
            continue
        if not covers(policy, node):
            if remembering is not None:
                remembering.remember(policy, node, group, None)
            continue
        found: list[Candidate] = []
        try:
            measured = node_age(node, now)
        except MalformedLaunchTimeError as error:
            problems.append(NodeProblem(node.name, str(error)))
            continue
        age = measured.age
        aged = _max_age_candidate(policy, age_rule, node, snapshot, measured, expiries)
        if aged is not None:
            found.append(aged)
        elif remembering is not None:
            remembering.remember(policy, node, group, _age_due(age_rule, node, snapshot, measured))
        if other_rules:
            for maybe in (
                _condition_candidate(policy, node, now, age),
                _taint_candidate(policy, node, now, age),
                _drift_candidate(policy, node, snapshot, age),
                _label_candidate(policy, node, age),
            ):
                if maybe is not None:
                    found.append(maybe)
        if INTERRUPTION_ANNOTATION in node.annotations:
            rebalance = _rebalance_candidate(policy, node, age)
            if rebalance is not None:
                found.append(rebalance)
        if found:
            candidates.append(min(found, key=lambda c: c.urgency))
    if schedule is not None:
        schedule.forget_absent(policy.metadata.name, len(snapshot.nodes))
    candidates.sort(key=lambda c: (c.urgency, -c.age, c.node))
    return Selection(tuple(candidates), tuple(problems))
