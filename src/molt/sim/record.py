"""What a simulation saw, kept for the report: node lifetimes, decisions and samples.

The recorder listens to the simulated cluster like any watcher would: every node's
launch, join, Ready, selection (with the policy's reason) and end; and, every sample
interval, the ready capacity per cell and per zone and the distribution of node ages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from molt.api.labels import CAPACITY_TYPE_LABEL, REASON_ANNOTATION
from molt.policy.snapshot import NodeView
from molt.sim.cluster import SimCluster


@dataclass
class Lifetime:
    """One node from launch to end, in simulated seconds (launch may be negative)."""

    name: str
    group: str
    zone: str
    capacity_type: str
    revision: str
    launched: float
    joined: float
    initial: bool
    ready: float | None = None
    selected: float | None = None
    reason: str | None = None
    ended: float | None = None
    cause: str | None = None


@dataclass(frozen=True)
class Decision:
    """A node selected into the pipeline, in order."""

    at: float
    node: str
    rule: str
    reason: str


@dataclass(frozen=True)
class Sample:
    at: float
    ready_by_cell: dict[str, int]
    nodes_by_zone: dict[str, int]
    ready_by_zone: dict[str, int]
    age_quantiles: tuple[float, float, float, float, float]
    """Node ages in hours: min, p10, p50, p90, max."""
    in_pipeline: int


def rule_of(reason: str) -> str:
    """``max-age: 49h > 48h`` -> ``max-age``."""
    return reason.split(":", 1)[0].strip() or "unknown"


@dataclass
class Recorder:
    cluster: SimCluster
    start_seconds: float = 0.0
    lifetimes: dict[str, Lifetime] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    max_in_pipeline: int = 0
    _in_pipeline: set[str] = field(default_factory=set)

    def node_changed(self, name: str, old: NodeView | None, new: NodeView | None) -> None:
        now = self.cluster.clock.seconds
        if old is None and new is not None:
            launched = new.launched_at or new.created
            start = self.cluster.clock.start
            self.lifetimes[name] = Lifetime(
                name=name,
                group=new.group or "",
                zone=new.zone or "",
                capacity_type=new.labels.get(CAPACITY_TYPE_LABEL, "on-demand"),
                revision=new.revision or "",
                launched=(launched - start).total_seconds(),
                joined=now,
                initial=now == 0.0,
                ready=now if new.ready else None,
            )
            return
        life = self.lifetimes.get(name)
        if life is None:
            return
        if new is None:
            life.ended = now
            self._in_pipeline.discard(name)
            return
        if new.ready and life.ready is None:
            life.ready = now
        if new.in_pipeline and name not in self._in_pipeline:
            self._in_pipeline.add(name)
            self.max_in_pipeline = max(self.max_in_pipeline, len(self._in_pipeline))
            if life.selected is None:
                reason = new.annotations.get(REASON_ANNOTATION, "")
                life.selected = now
                life.reason = reason
                self.decisions.append(Decision(now, name, rule_of(reason), reason))
        elif not new.in_pipeline:
            self._in_pipeline.discard(name)

    def sample(self) -> None:
        now = self.cluster.clock.seconds
        ready_by_cell: dict[str, int] = {}
        nodes_by_zone: dict[str, int] = {}
        ready_by_zone: dict[str, int] = {}
        ages: list[float] = []
        for view in self.cluster.nodes():
            zone = view.zone or "?"
            nodes_by_zone[zone] = nodes_by_zone.get(zone, 0) + 1
            life = self.lifetimes.get(view.name)
            if life is not None:
                ages.append((now - life.launched) / 3600)
            if view.ready:
                cell = f"{zone}/{view.labels.get(CAPACITY_TYPE_LABEL, 'on-demand')}"
                cell += f"/{view.revision or '?'}"
                ready_by_cell[cell] = ready_by_cell.get(cell, 0) + 1
                ready_by_zone[zone] = ready_by_zone.get(zone, 0) + 1
        ages.sort()
        self.samples.append(
            Sample(
                at=now,
                ready_by_cell=ready_by_cell,
                nodes_by_zone=nodes_by_zone,
                ready_by_zone=ready_by_zone,
                age_quantiles=_quantiles(ages),
                in_pipeline=len(self._in_pipeline),
            )
        )


def _quantiles(values: list[float]) -> tuple[float, float, float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    last = len(values) - 1

    def at(q: float) -> float:
        return values[round(q * last)]

    return (values[0], at(0.1), at(0.5), at(0.9), values[-1])
