"""A group's own maximum node age, for the nodes no TerminationPolicy covers.

``InstanceGroup.spec.maxNodeAge`` (48 h by default) bounds every node of the group. A
node a policy covers is aged by that policy (the smaller of the two limits applies, see
``molt.policy.selection``); a node no policy covers would otherwise live forever. Those
are selected here, oldest first, under the budget a policy without budgets gets: one
node or 10 % of the group in the pipeline, whichever is larger. They start early by the
default drain timeout (at most a quarter of the age), so they are gone by their deadline.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from molt.api.durations import format_duration, parse_duration
from molt.api.terminationpolicy import Drain
from molt.api.types import resolve_count_or_percent
from molt.policy.age import MalformedLaunchTimeError, age_of
from molt.policy.budgets import DEFAULT_BUDGET, DEFAULT_MINIMUM
from molt.policy.snapshot import NodeView

DRAIN_LEAD = parse_duration(Drain().timeout)


@dataclass(frozen=True)
class AgedNode:
    """A node past its group's maximum age (less the drain lead), and the reason shown."""

    node: NodeView
    reason: str


def group_age_budget(group_size: int) -> int:
    """Nodes of the group that may be in the pipeline at once for age."""
    share = resolve_count_or_percent(DEFAULT_BUDGET.max_in_flight, group_size, round_up=False)
    return max(DEFAULT_MINIMUM, share)


def aged_out(
    members: Sequence[NodeView],
    max_age: timedelta,
    covered: Container[str],
    now: datetime,
) -> list[AgedNode]:
    """Members no policy covers (``covered`` names those a policy does) that have reached
    ``max_age`` less the drain lead, oldest first, within the group's age budget.
    Control-plane nodes are never aged out here: only a policy with
    ``includeControlPlane: true`` rotates them, one at a time with its health gate."""
    room = group_age_budget(len(members)) - sum(1 for n in members if n.in_pipeline)
    if room <= 0:
        return []
    lead = min(DRAIN_LEAD, max_age / 4)
    due_at = max_age - lead
    found: list[tuple[timedelta, str, AgedNode]] = []
    for node in members:
        if node.in_pipeline or node.is_control_plane:
            continue  # a control-plane node is rotated only by a policy that opts in
        try:
            age = age_of(node, now)
        except MalformedLaunchTimeError:
            continue  # reported by selection, which reads the same annotation
        # Whether a policy covers the node is asked last: it is the dearest question.
        if age < due_at or node.name in covered:
            continue
        reason = (
            f"max-age: {format_duration(age)} > {format_duration(due_at)} "
            f"(group maxNodeAge {format_duration(max_age)}, less drain lead)"
        )
        found.append((age, node.name, AgedNode(node, reason)))
    found.sort(key=lambda item: (-item[0], item[1]))
    return [aged for _, _, aged in found[:room]]
