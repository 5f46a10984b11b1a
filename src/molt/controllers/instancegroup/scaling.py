"""The scaling phase: every cell's desired size, and the nodes the rollout replaces next.

The target revision's cells share the desired size evenly over zones and capacity types
(``molt.policy.cells``), within the strategy's surge (``molt.policy.rollout``), around
resting cells; a cell that answers with a capacity error rests at once and its share
moves in the same reconcile. Other revisions' cells never grow; a degraded revision's
instances that never joined are terminated. Nodes NotReady on their own past
``notReadyFor`` hold no surge. The nodes to replace (other revisions, surplus, and nodes
no policy covers past the group's ``maxNodeAge``) are selected into the termination
pipeline at the pace the strategy allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import structlog

from molt.api.durations import parse_duration
from molt.api.instancegroup import InstanceGroup, Template
from molt.api.labels import (
    DRAINING,
    REASON_ANNOTATION,
    SELECTED,
    SELECTED_AT_ANNOTATION,
    STATE_LABEL,
    TERMINATING,
)
from molt.api.terminationpolicy import TerminationPolicy
from molt.cloud.provider import CapacityError, CellRef, Provider, ProviderError
from molt.controllers.instancegroup.nodes import dead_nodes
from molt.controllers.instancegroup.rests import rest_short
from molt.controllers.instancegroup.scope import CellFigures, GroupPorts, GroupScope
from molt.policy.age import format_rfc3339
from molt.policy.budgets import SurplusBudgets
from molt.policy.cells import CellKey, split_capacity
from molt.policy.group_age import aged_out
from molt.policy.overflow import requested
from molt.policy.rollout import (
    Replacement,
    cell_targets,
    rollout_replacements,
    strategy_of,
    target_staying,
)
from molt.policy.selection import covers

log = structlog.get_logger(__name__)

Instances = Counter[tuple[str, CellKey]]
"""Instances per (revision, cell)."""


async def scale(scope: GroupScope, ports: GroupPorts) -> None:
    """Set every cell's desired size; records the target cells in ``scope.cells`` and
    whether work is pending in ``scope.busy``."""
    spec, memory, target = scope.spec, scope.memory, scope.target
    strategy = strategy_of(scope.group)
    template = memory.templates.get(target, spec.template)
    dead = dead_nodes(
        scope.members,
        scope.now,
        parse_duration(spec.health.not_ready_for),
        frozenset(scope.memory.struck),
    )
    instances: Instances = Counter()
    other_instances = 0
    ready_at_target = 0
    pending = False
    for observation in scope.observations:
        cell = observation.cell
        instances[(cell.revision, CellKey(cell.zone, cell.capacity_type))] += len(
            observation.instances
        )
    for observation, _, node in scope.census():
        cell = observation.cell
        ready = node is not None and node.ready
        pending = pending or not ready
        if cell.revision == target:
            ready_at_target += ready
            continue
        if cell.revision in memory.degraded and not ready:
            continue  # dead weight: it will never serve, so it holds no surge
        if node is not None and node.name in dead:
            continue  # NotReady past notReadyFor (a zone down): it serves nothing
        other_instances += 1
    leaving = Counter((n.revision or "unknown", n.cell) for n in scope.members if n.in_pipeline)
    leaving_at_target = sum(c for (rev, _), c in leaving.items() if rev == target)
    staying = target_staying(
        scope.desired, strategy, other_instances, leaving_at_target, spec.max_size
    )
    if target in memory.degraded:
        # Nothing healthy to return to: keep the group at size from this revision, but
        # with one unproven launch at a time, so a broken template costs one instance
        # per readyTimeout rather than a full set.
        staying = min(staying, ready_at_target + 1)
    await _shrink_others(scope, ports, instances, template)
    leaving_here = Counter({key: c for (rev, key), c in leaving.items() if rev == target})
    # A rebalance launches one node beyond the size, so only in a calm, whole group:
    # every instance Ready at the target, nothing leaving, no zone NotReady, room left.
    calm = (
        not pending
        and not leaving
        and not dead
        and target not in memory.degraded
        and all(rev == target for (rev, _), count in instances.items() if count)
        and strategy.surge > 0
        and scope.desired < spec.max_size
    )
    grows, unplaced = await _size_target(
        scope, ports, instances, leaving_here, staying, template, rebalance=calm
    )
    scope.busy = pending or grows
    await _request_overflow(scope, ports, unplaced)


async def _request_overflow(scope: GroupScope, ports: GroupPorts, unplaced: int) -> None:
    """Size the request to the overflow group (``molt.policy.overflow``); an Event when
    an overflow begins or ends."""
    overflow = scope.spec.overflow
    if overflow is None:
        return
    before = scope.group.status.overflow if scope.group.status else None
    already = before.replicas if before is not None and before.group == overflow.group else 0
    if overflow.group == scope.name:
        if already == 0 and unplaced:
            log.warning("group.overflow_to_itself", group=scope.name)
        return
    # A node selected but not yet draining still serves: a rotation short of a surge
    # slot is not a shortfall, and a borrowed node would not let its drain start anyway.
    ready = sum(1 for n in scope.members if n.ready and n.state not in (DRAINING, TERMINATING))
    own = min(scope.spec.desired_replicas, scope.desired)
    scope.overflow_request = requested(own, ready, unplaced, already)
    if scope.overflow_request and not already:
        await ports.writes.record_resource_event(
            InstanceGroup,
            scope.name,
            "Overflowing",
            f"no cell can place {unplaced} node(s): group {overflow.group} runs "
            f"{scope.overflow_request} replica(s) until this group's own nodes are Ready",
            warning=True,
        )
    elif already and not scope.overflow_request:
        await ports.writes.record_resource_event(
            InstanceGroup,
            scope.name,
            "OverflowReturned",
            f"this group's own nodes are Ready again: group {overflow.group} hands its "
            f"{already} replica(s) back",
        )


async def _shrink_others(
    scope: GroupScope, ports: GroupPorts, instances: Instances, template: Template
) -> None:
    """Shrink the pending launches of other revisions; terminate a degraded revision's
    instances that never joined."""
    for observation in scope.observations:
        cell = observation.cell
        if cell.revision == scope.target:
            continue
        key = (cell.revision, CellKey(cell.zone, cell.capacity_type))
        if cell.revision in scope.memory.degraded:
            for instance in observation.instances:
                if scope.index.node_for(instance) is None:  # never joined, never will
                    await ports.provider.terminate_instance(cell, instance.instance_id)
                    instances[key] -= 1
        have = instances[key]
        if observation.desired > have:
            await _shrink(
                ports.provider, cell, scope.memory.templates.get(cell.revision, template), have
            )


async def _size_target(
    scope: GroupScope,
    ports: GroupPorts,
    instances: Instances,
    leaving: Counter[CellKey],
    staying: int,
    template: Template,
    rebalance: bool = False,
) -> tuple[bool, int]:
    """Size the target revision's cells for ``staying`` nodes, resting any cell out of
    capacity and splitting again around it; with ``rebalance``, one extra node in a cell
    short of its share (``cell_targets``). Returns whether a cell is still to grow and
    how many nodes no cell could place."""
    spec, memory, target, now = scope.spec, scope.memory, scope.target, scope.now
    by_cell = {o.cell: o for o in scope.observations if o.cell.revision == target}
    pending = False
    figures: list[CellFigures] = []
    unplaced = 0
    ideal = split_capacity(scope.desired, list(spec.zones), spec.capacity).cells
    for _ in range(8):  # each pass rests at least one more cell, or finishes
        resting = memory.resting_cells(now, target)
        plan = split_capacity(staying, list(spec.zones), spec.capacity, resting)
        unplaced = plan.unplaced
        targets = cell_targets(
            plan,
            leaving,
            Counter({key: c for (rev, key), c in instances.items() if rev == target}),
            resting,
            ideal if rebalance else None,
        )
        figures = []
        retry = False
        for key, want in sorted(targets.items()):
            cell = CellRef(scope.name, target, key.zone, key.capacity_type)
            have = instances[(target, key)]
            figures.append(CellFigures(key, want))
            observed = by_cell.get(cell)
            if observed is not None and observed.desired == want and have >= want:
                continue
            if observed is None and want == 0:
                continue
            try:
                await ports.provider.scale(cell, template, want)
            except CapacityError:
                ports.metrics.failed(scope.name, key)
                await rest_short(scope, ports, key)
                retry = True
                break
            except ProviderError as error:
                memory.record_failure(target, key, f"scale {format_rfc3339(now)}", now)
                ports.metrics.failed(scope.name, key)
                await ports.writes.record_resource_event(
                    InstanceGroup, scope.name, "ScaleFailed", f"cell {cell}: {error}", warning=True
                )
            pending = pending or want > have
        if not retry:
            break
    scope.cells = figures
    return pending, unplaced


async def _shrink(provider: Provider, cell: CellRef, template: Template, size: int) -> None:
    """Drop a cell's launches still to come (never below the instances it holds)."""
    try:
        await provider.scale(cell, template, size)
    except ProviderError as error:
        log.warning("group.shrink_failed", cell=str(cell), error=str(error))


async def select(scope: GroupScope, ports: GroupPorts) -> None:
    """Put the nodes the rollout replaces next into the pipeline; marks the scope busy
    if any remain."""
    async with ports.admission:
        if await _select(scope, ports):
            scope.busy = True


async def _select(scope: GroupScope, ports: GroupPorts) -> bool:
    spec, memory, target, members, now = (
        scope.spec,
        scope.memory,
        scope.target,
        scope.members,
        scope.now,
    )
    if target in memory.degraded:
        return False  # frozen: replacing nodes now would only lose capacity
    # The share every cell would have with capacity everywhere: the surplus leaves from
    # the cells furthest over it.
    ideal = split_capacity(scope.desired, list(spec.zones), spec.capacity)
    picks = rollout_replacements(
        members,
        target,
        scope.desired,
        strategy_of(scope.group),
        ideal.cells,
        frozenset(memory.degraded),
        dead_nodes(
            members, now, parse_duration(spec.health.not_ready_for), frozenset(memory.struck)
        ),
    )
    if not picks:
        # The group's own maxNodeAge, for the nodes no TerminationPolicy covers (a
        # covered node is aged by its policy, with the smaller limit).
        covered = _Covered(scope, ports.reads.policies())
        aged = aged_out(members, parse_duration(spec.max_node_age), covered, now)
        picks = [Replacement(a.node, a.reason) for a in aged]
    stamp = format_rfc3339(now)
    budgets: SurplusBudgets | None = None  # built on the first surplus pick only
    control_plane_moving: bool | None = None  # read on the first control-plane pick only
    for pick in picks:
        node = ports.reads.node(pick.node.name) or pick.node
        if node.in_pipeline:
            continue  # a policy selected it while this reconcile ran
        if node.is_control_plane:
            # A rollout of a control-plane group still moves one node at a time, cluster-wide.
            if control_plane_moving is None:
                control_plane_moving = any(
                    n.is_control_plane and n.in_pipeline for n in ports.reads.nodes()
                )
            if control_plane_moving:
                continue
            control_plane_moving = True
        if pick.surplus:
            if budgets is None:
                budgets = SurplusBudgets(ports.reads.policies(), ports.reads.nodes(), now)
            held = budgets.admit(node, pick.reason)
            if held is not None:
                log.info("group.surplus_held", group=scope.name, node=node.name, reason=held)
                continue
        changed = await ports.writes.patch_node(
            node.name,
            labels={STATE_LABEL: SELECTED},
            annotations={REASON_ANNOTATION: pick.reason, SELECTED_AT_ANNOTATION: stamp},
        )
        if changed:
            await ports.writes.record_event(
                node, "Selected", f"selected by instance group {scope.name}: {pick.reason}"
            )
            log.info("group.selected", node=node.name, reason=pick.reason)
    return bool(picks) or any(n.in_pipeline or n.revision != target for n in members)


class _Covered:
    """The group's members some TerminationPolicy covers, asked of one member at a time
    (``aged_out`` asks only of those old enough)."""

    def __init__(self, scope: GroupScope, policies: Sequence[TerminationPolicy]) -> None:
        self.members = scope.index.by_name
        self.policies = policies

    def __contains__(self, name: object) -> bool:
        node = self.members.get(name) if isinstance(name, str) else None
        return node is not None and any(covers(p, node) for p in self.policies)
