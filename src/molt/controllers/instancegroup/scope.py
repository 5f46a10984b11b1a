"""What one reconcile of one instance group works over, and the ports it acts through.

The reconciler builds a ``GroupScope`` from the group, what it remembers of it, its nodes
and what the provider reports; each phase (``health``, ``scaling``, ``gc``, ``status``)
reads the scope and records in it what it found, so the phases never call one another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from molt.api.instancegroup import InstanceGroup, InstanceGroupSpec
from molt.cloud.provider import CellObservation, Instance, Provider
from molt.controllers.instancegroup.gauges import GroupMetrics
from molt.controllers.instancegroup.memory import GroupMemory
from molt.controllers.instancegroup.nodes import NodeIndex
from molt.policy.cells import CellKey
from molt.policy.snapshot import NodeView
from molt.ports import ClusterReads, ClusterWrites


@dataclass(frozen=True)
class CellFigures:
    """A target cell's desired size, as last set."""

    key: CellKey
    desired: int


PlacedInstance = tuple[CellObservation, Instance, NodeView | None]
"""An observed instance's cell observation, the instance, and the Node it became (None:
not joined, or not a member). A plain tuple: a reconcile builds one per instance."""


@dataclass
class GroupScope:
    """One group, for one reconcile."""

    group: InstanceGroup
    memory: GroupMemory
    members: Sequence[NodeView]
    template_revision: str
    now: datetime
    observations: list[CellObservation] = field(default_factory=list)
    """The provider's cells; empty when the group's provider is not configured."""
    index: NodeIndex = field(init=False)
    target: str = ""
    """The revision capacity belongs to, once the template has been followed."""
    collected: bool = False
    """An instance or a node went: observe again before sizing."""
    cells: list[CellFigures] = field(default_factory=list)
    """The target revision's cells as the scaling phase set them."""
    busy: bool = False
    """Work is pending (launches, replacements): requeue sooner."""
    borrowed: int = 0
    """Replicas the groups that overflow into this one ask it to run."""
    overflow_request: int = 0
    """Replicas this group asks its overflow group for (set by the scaling phase)."""

    _census: tuple[PlacedInstance, ...] = field(default=(), init=False, repr=False)
    _census_of: tuple[tuple[CellObservation, ...], NodeIndex] | None = field(
        default=None, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.index = NodeIndex(self.members)

    def census(self) -> tuple[PlacedInstance, ...]:
        """Every observed instance with the Node it became, matched once per look: the
        phases each walk it. Built again whenever ``observations`` holds other cell
        observations or the members were replaced (``look_again``), so it never
        outlives what it was matched from."""
        observations = tuple(self.observations)
        known = self._census_of
        if (
            known is None
            or known[1] is not self.index
            or len(known[0]) != len(observations)
            or any(a is not b for a, b in zip(known[0], observations, strict=True))
        ):
            by_provider_id, by_name = self.index.by_provider_id, self.index.by_name
            placed: list[PlacedInstance] = []
            for observation in observations:
                for instance in observation.instances:
                    # As NodeIndex.node_for, inlined: this runs for every instance.
                    pid = instance.provider_id
                    node = by_provider_id.get(pid) if pid else None
                    if node is None and instance.node_name:
                        node = by_name.get(instance.node_name)
                    placed.append((observation, instance, node))
            self._census = tuple(placed)
            self._census_of = (observations, self.index)
        return self._census

    @property
    def name(self) -> str:
        return self.group.metadata.name

    @property
    def spec(self) -> InstanceGroupSpec:
        return self.group.spec

    @property
    def desired(self) -> int:
        """The group's desired size with what it runs for others, within its maxSize."""
        return min(self.spec.max_size, self.spec.desired_replicas + self.borrowed)

    def look_again(self, observations: list[CellObservation], members: Sequence[NodeView]) -> None:
        """Replace what was observed (after instances or nodes went)."""
        self.observations = observations
        self.members = members
        self.index = NodeIndex(members)


@dataclass(frozen=True)
class GroupPorts:
    """What the phases act through: the caches, the writes, the provider and the metrics."""

    reads: ClusterReads
    writes: ClusterWrites
    provider: Provider
    metrics: GroupMetrics
    admission: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while nodes are put into the pipeline; shared with policy selection, so both
    count the nodes in flight after the other's writes have landed."""
