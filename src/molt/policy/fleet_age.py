"""How old the fleet is, for the metrics: each live node's age by group, the oldest per
group, and how many nodes are past their effective maximum age, per policy.

A node's effective maximum age under a policy is the smaller of the policy's ``maxAge``
and its group's ``maxNodeAge`` (jitter, the ``maxAgeSpread`` plan and the drain lead only
make a node go earlier, so they do not move the limit). A node no policy covers is judged
by its group's ``maxNodeAge`` alone and counted under ``NO_POLICY``. Nodes with a
malformed launch time are left out, as selection leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from molt.api.durations import parse_duration
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.age import MalformedLaunchTimeError, age_of
from molt.policy.selection import covers
from molt.policy.snapshot import GroupView, NodeView

NO_POLICY = "(none)"
"""The policy label of nodes no TerminationPolicy covers (not a valid resource name)."""
NO_GROUP = "(none)"
"""The group label of nodes outside any InstanceGroup."""


@dataclass(frozen=True)
class FleetAges:
    """Ages in seconds per group, the oldest per group, nodes past max age per policy."""

    ages: dict[str, list[float]]
    oldest: dict[str, float]
    past_max_age: dict[str, int]


def _limit(policy_max: timedelta | None, group: GroupView | None) -> timedelta | None:
    limits = [policy_max] if policy_max is not None else []
    if group is not None and group.max_node_age_seconds is not None:
        limits.append(timedelta(seconds=group.max_node_age_seconds))
    return min(limits) if limits else None


def fleet_ages(
    nodes: Iterable[NodeView],
    policies: Sequence[TerminationPolicy],
    groups: Mapping[str, GroupView],
    now: datetime,
) -> FleetAges:
    """Every live node's age, and the nodes past their effective maximum age.

    Every policy appears in ``past_max_age`` (0 when none of its nodes is past), so a
    series drops to 0 rather than vanishing; ``NO_POLICY`` appears only when counted.
    """
    policy_limits = [
        (p, parse_duration(p.spec.rules.max_age) if p.spec.rules.max_age else None)
        for p in policies
    ]
    ages: dict[str, list[float]] = {}
    past: dict[str, int] = {p.metadata.name: 0 for p in policies}
    # The limits per (policy, group), worked out once: a fleet has few of each.
    limits: dict[tuple[int, str], timedelta | None] = {}

    def limit_of(index: int, policy_max: timedelta | None, group: str) -> timedelta | None:
        key = (index, group)
        if key not in limits:
            limits[key] = _limit(policy_max, groups.get(group))
        return limits[key]

    for node in nodes:
        try:
            age = age_of(node, now)
        except MalformedLaunchTimeError:
            continue
        ages.setdefault(node.group or NO_GROUP, []).append(age.total_seconds())
        group = node.group or ""
        covered = False
        for index, (policy, policy_max) in enumerate(policy_limits):
            if not covers(policy, node):
                continue
            covered = True
            limit = limit_of(index, policy_max, group)
            if limit is not None and age >= limit:
                past[policy.metadata.name] += 1
        if not covered:
            limit = limit_of(-1, None, group)
            if limit is not None and age >= limit:
                past[NO_POLICY] = past.get(NO_POLICY, 0) + 1
    oldest = {group: max(values) for group, values in ages.items()}
    return FleetAges(ages, oldest, past)
