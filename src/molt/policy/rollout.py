"""Rollout arithmetic: how many nodes a revision may have, which old nodes go next, and
when a node in the pipeline may leave its group.

The rules are Kubernetes' rolling-update rules applied to nodes. A group wants ``desired``
nodes at its target revision that are not leaving. While it gets there it may run at most
``desired + maxSurge`` instances (BlueGreen: a full second set), and a node may start to
drain only while the group keeps ``desired - maxUnavailable`` Ready nodes without it.
Nodes in the pipeline still hold an instance until they are terminated, so they count
against the surge; nodes that have passed the gate no longer count as available.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from molt.api.instancegroup import InstanceGroup
from molt.api.types import resolve_count_or_percent
from molt.policy.cells import CapacityPlan, CellKey
from molt.policy.snapshot import NodeView

BLUE_GREEN = "BlueGreen"


@dataclass(frozen=True)
class Strategy:
    """A group's rollout strategy with its counts resolved against the desired size."""

    kind: str
    max_surge: int
    max_unavailable: int

    @property
    def surge(self) -> int:
        """Extra instances allowed during a rollout; at least one when none may be lost."""
        return max(self.max_surge, 0 if self.max_unavailable > 0 else 1)


def strategy_of(group: InstanceGroup) -> Strategy:
    """The group's strategy, percentages resolved (surge up, unavailable down)."""
    desired = group.spec.desired_replicas
    spec = group.spec.strategy
    return Strategy(
        spec.type,
        resolve_count_or_percent(spec.max_surge, desired, round_up=True),
        resolve_count_or_percent(spec.max_unavailable, desired, round_up=False),
    )


def target_staying(
    desired: int,
    strategy: Strategy,
    other_instances: int,
    leaving_at_target: int,
    max_size: int | None = None,
) -> int:
    """How many non-leaving nodes the target revision may have now.

    ``other_instances`` are the instances of every other revision still standing (they
    hold capacity until terminated); ``leaving_at_target`` are target nodes in the pipeline.
    The group never holds more than ``max_size`` instances, surge or not.
    """
    surge = desired if strategy.kind == BLUE_GREEN else strategy.surge
    ceiling = desired + surge if max_size is None else min(desired + surge, max_size)
    room = ceiling - other_instances - leaving_at_target
    return max(0, min(desired, room))


def cell_targets(
    plan: CapacityPlan,
    leaving_by_cell: Counter[CellKey],
    instances_by_cell: Counter[CellKey],
    resting: frozenset[CellKey] = frozenset(),
    ideal: dict[CellKey, int] | None = None,
) -> dict[CellKey, int]:
    """Desired instances per target cell.

    A cell never gets fewer than the instances it holds (nodes leave through the
    pipeline, never by shrinking a cell under them), and the revision never more in all
    than the plan's total plus its nodes in the pipeline: the missing instances go, one
    at a time, to the open cell furthest below its share.

    An uneven spread (after an outage, a spot shortage) is mended launch first, like an
    Auto Scaling group's AZ rebalance: with ``ideal`` (the share every cell has with
    capacity everywhere) given, a group that is whole, with nothing in the pipeline and
    every cell open, launches one extra node in the cell furthest below its ideal share
    (see ``rebalance_cell``). Only once that node stands does the group hold more than its
    size, and the surplus then leaves from a cell over its share (``rollout_replacements``).
    A launch that fails there rests the cell and costs no node: nothing was drained for it.
    """
    targets = {key: instances_by_cell[key] for key in set(plan.cells) | set(instances_by_cell)}
    missing = plan.total + sum(leaving_by_cell.values()) - sum(instances_by_cell.values())
    open_cells = sorted(key for key in plan.cells if key not in resting)
    for _ in range(max(0, missing)):
        if not open_cells:
            break
        best = min(
            open_cells,
            key=lambda k: (targets[k] - leaving_by_cell[k] - plan.cells[k], k),
        )
        targets[best] += 1
    if ideal is not None and missing == 0 and not leaving_by_cell and not resting:
        probe = rebalance_cell(ideal, instances_by_cell)
        if probe is not None:
            targets[probe] = targets.get(probe, 0) + 1
    return targets


def rebalance_cell(
    ideal: dict[CellKey, int], instances_by_cell: Counter[CellKey]
) -> CellKey | None:
    """The cell a rebalance launches its extra node in, or None when the spread is fine.

    A cell short of its ideal share gets it only while another is over its own: the
    move then narrows the spread and the surplus has a cell to leave from. The shortest
    cell first (ties: the cell name), so repeated moves converge on the ideal split.
    """
    over = any(instances_by_cell[key] > want for key, want in ideal.items())
    over = over or any(key not in ideal for key, count in instances_by_cell.items() if count)
    short = [key for key, want in ideal.items() if instances_by_cell[key] < want]
    if not over or not short:
        return None
    return min(short, key=lambda k: (instances_by_cell[k] - ideal[k], k))


@dataclass(frozen=True)
class Replacement:
    """A node the group controller puts into the pipeline, and why."""

    node: NodeView
    reason: str
    """A human reason, e.g. ``drift: revision a1 != current b2``."""
    surplus: bool = False
    """A scale-down or rebalance, which the covering policies' budgets also bound; a
    rollout's nodes are paced by the group's strategy alone."""


def rollout_replacements(
    members: Sequence[NodeView],
    target: str,
    desired: int,
    strategy: Strategy,
    cell_plan: dict[CellKey, int],
    degraded: frozenset[str] = frozenset(),
    dead: frozenset[str] = frozenset(),
) -> list[Replacement]:
    """The nodes to put into the pipeline now: old revisions, then surplus at the target.

    ``cell_plan`` is the full-size split of ``desired`` over every cell, as if all had
    capacity; once no old node is left, target nodes beyond ``desired`` leave from the
    cells furthest over it (a scale-down, or a rebalance whose extra node already stands
    in the short cell). A node is never drained for its cell alone, so an outage that
    only stops launches never drains the healthy nodes elsewhere or in it.

    At most ``surge + maxUnavailable`` nodes of the group are in the pipeline at once, and
    only as many as the Ready nodes outside the pipeline exceed ``desired -
    maxUnavailable`` (so a node is never cordoned before its replacement stands).
    Under BlueGreen no old node goes until the target revision has ``desired`` Ready
    nodes; then all of them go. Oldest revisions' nodes go first, NotReady before Ready.
    ``dead`` old nodes (NotReady for longer than a blink, e.g. in a zone that is down)
    serve nothing, so like a Deployment's unhealthy old replicas they go without waiting
    for Ready nodes above the floor: only the in-flight bound holds them.
    """
    leaving = [n for n in members if n.in_pipeline]
    staying = [n for n in members if not n.in_pipeline]
    old = [n for n in staying if n.revision != target]
    current = [n for n in staying if n.revision == target]
    ready_current = sum(1 for n in current if n.ready)
    in_flight_room = max(1, strategy.surge + strategy.max_unavailable) - len(leaving)
    if not old:
        # Surplus nodes: nothing replaces them, so only the in-flight bound applies (the
        # gate keeps the floor).
        return _surplus(current, desired, cell_plan)[: max(0, in_flight_room)]
    dead_old = sum(1 for n in old if n.name in dead and not n.ready)
    if strategy.kind == BLUE_GREEN:
        room = len(old) if ready_current >= desired else min(in_flight_room, dead_old)
    else:
        # Like a Deployment: old nodes go only as fast as Ready ones stand above the floor.
        available = sum(1 for n in staying if n.ready)
        above_floor = available - (desired - strategy.max_unavailable)
        room = min(in_flight_room, max(above_floor, dead_old))
    if room <= 0:
        return []
    picked: list[Replacement] = []
    # Dead nodes first (they cost nothing to lose), then NotReady, then the oldest.
    old.sort(key=lambda n: (n.name not in dead, n.ready, n.launched_at or n.created, n.name))
    for node in old:
        if node.revision in degraded:
            reason = f"rollback: revision {node.revision} is degraded"
        else:
            reason = f"drift: revision {node.revision} != current {target}"
        picked.append(Replacement(node, reason))
    return picked[:room]


def _surplus(
    current: list[NodeView],
    desired: int,
    cell_plan: dict[CellKey, int],
) -> list[Replacement]:
    """Target nodes beyond the desired size, taken from the cells furthest over their
    share: a scale-down, or the second half of a rebalance (its extra node already
    stands in the short cell, see ``cell_targets``).

    A node is never replaced for its cell alone: its replacement would be placed by the
    launch rule, which (with a zone out, or its rest just over and its capacity
    unproven) may be its own cell again, one needless drain per rest of the zone.
    """
    excess_total = max(0, len(current) - desired)
    if excess_total == 0:
        return []
    by_cell: dict[CellKey, list[NodeView]] = {}
    for node in current:
        by_cell.setdefault(node.cell, []).append(node)
    picked: list[Replacement] = []
    for key in sorted(by_cell):
        over = len(by_cell[key]) - cell_plan.get(key, 0)
        if over <= 0:
            continue
        nodes = sorted(by_cell[key], key=lambda n: (n.ready, n.launched_at or n.created))
        for node in nodes[:over]:
            if excess_total == 0:
                return picked
            excess_total -= 1
            picked.append(
                Replacement(
                    node,
                    f"scale-down: group has more than {desired} (cell {key} over its share)",
                    surplus=True,
                )
            )
    return picked
