"""Resting a cell: out of capacity for every revision, or unhealthy for one revision after
a failure there. Its share moves to the other cells, and an Event says so once."""

from __future__ import annotations

import structlog

from molt.api.durations import parse_duration
from molt.api.instancegroup import Health, InstanceGroup
from molt.controllers.instancegroup.scope import GroupPorts, GroupScope
from molt.policy.age import format_rfc3339
from molt.policy.cells import CellKey, split_capacity

log = structlog.get_logger(__name__)


async def rest_short(scope: GroupScope, ports: GroupPorts, cell: CellKey) -> None:
    """Rest a cell that is out of capacity for ``capacityCooldown``, doubling while it
    stays short (the group's health as the cache has it now)."""
    name, memory, now = scope.name, scope.memory, scope.now
    group = ports.reads.instance_group(name)
    health = group.spec.health if group else Health()
    fresh = cell not in memory.resting
    until = memory.rest_short(
        cell, now, parse_duration(health.capacity_cooldown), parse_duration(health.window)
    )
    if fresh:
        await ports.writes.record_resource_event(
            InstanceGroup,
            name,
            "CellUnavailable",
            f"cell {cell} is out of capacity; its share moves to other cells until "
            f"{format_rfc3339(until)}",
            warning=True,
        )
        log.info("group.cell_resting", group=name, cell=str(cell), until=format_rfc3339(until))


async def rest_unhealthy(
    scope: GroupScope, ports: GroupPorts, revision: str, cell: CellKey, why: str
) -> None:
    """Rest a cell of ``revision`` after a failure there, as if it were out of capacity,
    unless it is the revision's last open cell (resting it would launch nowhere, and
    the verdict needs the launches)."""
    spec, name, memory, now = scope.spec, scope.name, scope.memory, scope.now
    resting = memory.resting_cells(now, revision)
    cells = split_capacity(spec.desired_replicas, list(spec.zones), spec.capacity).cells
    open_elsewhere = [k for k in cells if k != cell and k not in resting]
    if not open_elsewhere or revision in memory.degraded:
        return
    until = now + parse_duration(spec.health.capacity_cooldown)
    fresh = cell not in resting
    memory.rest_unhealthy(revision, cell, until)
    if fresh:
        await ports.writes.record_resource_event(
            InstanceGroup,
            name,
            "CellUnhealthy",
            f"cell {cell} of revision {revision} rests until {format_rfc3339(until)} ({why}); "
            "its share moves to other cells",
            warning=True,
        )
        log.info(
            "group.cell_unhealthy",
            group=name,
            cell=str(cell),
            revision=revision,
            until=format_rfc3339(until),
        )
