"""The garbage-collection phase: nodes whose instance is gone are deleted, and empty cells
of revisions capacity no longer belongs to are removed."""

from __future__ import annotations

import structlog

from molt.api.instancegroup import InstanceGroup
from molt.cloud.provider import ProviderError
from molt.controllers.instancegroup.scope import GroupPorts, GroupScope

log = structlog.get_logger(__name__)


async def collect_nodes(scope: GroupScope, ports: GroupPorts) -> None:
    """Delete nodes no cell has listed for two observations running (their instance is
    gone, e.g. reclaimed); sets ``scope.collected`` when one went."""
    memory = scope.memory
    matched = {node.name for _, _, node in scope.census() if node is not None}
    for node in scope.members:
        if node.provider_id is None or node.name in matched:
            if node.name in memory.missing:
                del memory.missing[node.name]
            continue
        memory.missing[node.name] += 1
        if memory.missing[node.name] >= 2:
            if await ports.writes.delete_node(node.name):
                scope.collected = True
                await ports.writes.record_resource_event(
                    InstanceGroup,
                    scope.name,
                    "InstanceGone",
                    f"deleted node {node.name}: its instance no longer exists",
                    warning=True,
                )
            memory.missing.pop(node.name, None)


async def remove_empty_cells(scope: GroupScope, ports: GroupPorts) -> None:
    """Remove the cells of other revisions that hold nothing and want nothing, and forget
    the templates of revisions neither current nor previous."""
    memory = scope.memory
    for observation in scope.observations:
        cell = observation.cell
        if cell.revision == scope.target or observation.instances or observation.desired:
            continue
        try:
            await ports.provider.delete_cell(cell)
        except ProviderError as error:
            log.warning("group.cell_not_removed", cell=str(cell), error=str(error))
            continue
        log.info("group.cell_removed", cell=str(cell))
        if cell.revision not in (memory.current, memory.previous):
            memory.templates.pop(cell.revision, None)
