"""The instance-group controller's metrics: what a group's cells want and have, what
routing moved, which revisions are degraded, launches, failures, rollbacks and the time
from launch to a Ready node.

The figures are worked out here from what the reconciler already computed (the status it
writes, the capacity plan, the observed instances), so the metrics say what the status says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from molt.api.instancegroup import Capacity, InstanceGroupStatus
from molt.cloud.provider import CellObservation
from molt.observe.metrics import Metrics
from molt.policy.cells import CellKey, split_capacity
from molt.policy.snapshot import NodeView


def routed_share(
    total: int, zones: Sequence[str], capacity: Capacity, resting: frozenset[CellKey]
) -> dict[CellKey, int]:
    """How many nodes of each cell's share routing moved elsewhere: the cell's share with
    capacity everywhere, less its share around the resting cells (never negative)."""
    ideal = split_capacity(total, list(zones), capacity).cells
    routed = split_capacity(total, list(zones), capacity, resting).cells
    return {key: max(0, want - routed.get(key, 0)) for key, want in ideal.items()}


def node_series(
    group: str, status: InstanceGroupStatus, members: Iterable[NodeView]
) -> dict[tuple[str, ...], float]:
    """``molt_group_nodes`` for one group: desired and Ready per revision and cell.

    The target revision's cells come from the status (their desired sizes as set); cells
    of other revisions have no desired size (0) and report their Ready nodes.
    """
    target = status.current_revision or ""
    series: dict[tuple[str, ...], float] = {}
    for cell in status.cells:
        key = str(CellKey(cell.zone, cell.capacity_type))
        series[(group, cell.revision, key, "desired")] = float(cell.desired)
        series[(group, cell.revision, key, "ready")] = float(cell.ready)
    others: Counter[tuple[str, str]] = Counter()
    for node in members:
        revision = node.revision or "unknown"
        if revision == target:
            continue
        others[(revision, str(node.cell))] += 1 if node.ready else 0
    for (revision, key), ready in others.items():
        series.setdefault((group, revision, key, "desired"), 0.0)
        series[(group, revision, key, "ready")] = float(ready)
    return series


def degraded_series(group: str, status: InstanceGroupStatus) -> dict[tuple[str, ...], float]:
    """``molt_revision_degraded`` for the revisions the status lists."""
    return {
        (group, entry.name): 1.0 if entry.state == "Degraded" else 0.0 for entry in status.revisions
    }


def ready_at(node: NodeView) -> datetime | None:
    """When a Ready node last turned Ready, if its condition says."""
    for condition in node.conditions:
        if condition.type == "Ready" and condition.status == "True":
            return condition.last_transition
    return None


class GroupMetrics:
    """Publishes one reconciler's group metrics; remembers only what it needs to count
    each launch once (the instances it has seen per group, pruned to the live ones)."""

    def __init__(self, metrics: Metrics, started: datetime) -> None:
        self.metrics = metrics
        # Launch times often have second precision (RFC 3339 annotations, creationTimestamp).
        self.started = started.replace(microsecond=0)
        """Host init is measured only for instances launched from this second on."""
        self._seen: dict[str, set[str]] = {}
        self._looked: dict[str, dict[int, tuple[CellObservation, frozenset[str]]]] = {}
        """Per group, the cell observations ``_seen`` was learnt from (by identity) and
        their instance ids: the same observation again holds no instance not seen."""

    def observed(self, group: str, observations: Sequence[CellObservation]) -> None:
        """Count instances not seen before as launches; the first look at a group only
        learns what is there (they were launched before this process, or counted by it)."""
        last = self._looked.get(group, {})
        seen = self._seen.get(group)
        looked: dict[int, tuple[CellObservation, frozenset[str]]] = {}
        counted: set[str] = set()
        for o in observations:
            known = last.get(id(o))
            if known is not None and known[0] is o:
                looked[id(o)] = known  # the same observation: all of it was seen
                continue
            ids = frozenset(i.instance_id for i in o.instances)
            looked[id(o)] = (o, ids)
            if seen is None:
                continue  # the first look only learns
            cell = str(CellKey(o.cell.zone, o.cell.capacity_type))  # once per cell
            for instance_id in ids - seen - counted:
                self.metrics.launches.labels(group=group, cell=cell).inc()
                counted.add(instance_id)
        self._looked[group] = looked
        self._seen[group] = set().union(*(ids for _, ids in looked.values()))

    def failed(self, group: str, cell: CellKey) -> None:
        self.metrics.launch_failures.labels(group=group, cell=str(cell)).inc()

    def rolled_back(self, group: str) -> None:
        self.metrics.rollbacks.labels(group=group).inc()

    def became_ready(
        self,
        group: str,
        fresh: Sequence[NodeView],
        launched: Mapping[str, datetime],
        now: datetime,
    ) -> list[tuple[str, float]]:
        """Observe launch-to-Ready for nodes Ready for the first time (this process saw);
        ``launched`` maps node names to their instance's launch time. Returns each
        observation as (revision, seconds)."""
        found: list[tuple[str, float]] = []
        for node in fresh:
            start = launched.get(node.name)
            if start is None or start < self.started:
                continue
            seconds = max(0.0, ((ready_at(node) or now) - start).total_seconds())
            revision = node.revision or "unknown"
            self.metrics.host_init.labels(group=group, revision=revision).observe(seconds)
            found.append((revision, seconds))
        return found

    def publish(
        self,
        group: str,
        status: InstanceGroupStatus,
        members: Sequence[NodeView],
        routed: Mapping[CellKey, int],
    ) -> None:
        # The group's counters start at 0 for each of its cells (see Metrics).
        self.metrics.rollbacks.labels(group=group)
        for key in routed:
            self.metrics.launches.labels(group=group, cell=str(key))
            self.metrics.launch_failures.labels(group=group, cell=str(key))
        self.metrics.group_nodes_series.replace(group, node_series(group, status, members))
        self.metrics.degraded_series.replace(group, degraded_series(group, status))
        self.metrics.routed_series.replace(
            group, {(group, str(key)): float(count) for key, count in routed.items()}
        )

    def forget(self, group: str) -> None:
        """The group is gone: remove its series."""
        self._seen.pop(group, None)
        self._looked.pop(group, None)
        for series in (
            self.metrics.group_nodes_series,
            self.metrics.degraded_series,
            self.metrics.routed_series,
        ):
            series.drop(group)
