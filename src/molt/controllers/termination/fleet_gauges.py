"""The fleet's age and blocked-drain metrics, published after each selection pass: each
live node's age (the histogram once per resync, however often selection runs), the oldest
node per group, nodes past their maximum age per policy, and how long each policy's
longest-blocked node has been blocked.

Blocked time runs from when this process first saw the node's ``molt.dev/blocked``
annotation (it is set once a pod has been refused for ``drain.blockedAfter``), so a
restarted controller starts counting again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from molt.api.labels import BLOCKED_ANNOTATION, POLICY_ANNOTATION
from molt.api.terminationpolicy import TerminationPolicy
from molt.observe.metrics import Metrics
from molt.policy.fleet_age import NO_POLICY, fleet_ages
from molt.policy.snapshot import GroupView, NodeView


class FleetGauges:
    """Remembers only when each currently blocked node was first seen blocked."""

    def __init__(self, metrics: Metrics, resync_seconds: float) -> None:
        self.metrics = metrics
        self.resync = timedelta(seconds=resync_seconds)
        self._blocked_since: dict[str, datetime] = {}
        self._ages_observed: datetime | None = None

    def publish(
        self,
        policies: Sequence[TerminationPolicy],
        nodes: Sequence[NodeView],
        groups: Mapping[str, GroupView],
        now: datetime,
    ) -> None:
        fleet = fleet_ages(nodes, policies, groups, now)
        if self._ages_observed is None or now - self._ages_observed >= self.resync:
            self._ages_observed = now
            for group, ages in fleet.ages.items():
                histogram = self.metrics.node_age.labels(group=group)
                for age in ages:
                    histogram.observe(age)
        self.metrics.oldest_series.replace(
            "fleet", {(group,): age for group, age in fleet.oldest.items()}
        )
        self.metrics.policy_series.replace(
            "fleet", {(policy,): float(count) for policy, count in fleet.past_max_age.items()}
        )
        # Nodes a group's rollout selected carry no policy annotation: "(none)".
        blocked = {
            n.name: n.annotations.get(POLICY_ANNOTATION) or NO_POLICY
            for n in nodes
            if n.in_pipeline and n.annotations.get(BLOCKED_ANNOTATION)
        }
        self._blocked_since = {name: self._blocked_since.get(name, now) for name in blocked}
        longest = {p.metadata.name: 0.0 for p in policies}
        for name, policy in blocked.items():
            seconds = (now - self._blocked_since[name]).total_seconds()
            longest[policy] = max(longest.get(policy, 0.0), seconds)
        self.metrics.blocked_series.replace(
            "fleet", {(policy,): seconds for policy, seconds in longest.items()}
        )
