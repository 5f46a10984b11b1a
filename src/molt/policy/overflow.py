"""Overflow between instance groups: what a group lends out and what another runs for it.

A group with ``spec.overflow: {group: B}`` whose cells can no longer place part of its
desired size (every cell of a capacity type out of capacity or resting) asks B to run
the replicas it is missing; it publishes the request in its own status
(``status.overflow``), and B reads every such request from the groups' statuses, so
the arrangement is level-triggered and survives restarts of either side.

The request is sized by what the group has Ready, not by what it has launched: while
the group is short it asks for ``min(unplaced, desired - ready)``; once its cells can
launch again the request only shrinks, as the group's own nodes turn Ready, so the
borrowed nodes are handed back (drained as B's surplus) one for one, never before a
replacement serves. A group that borrows never lends what it borrowed on: only a
group's own desired size overflows, so two groups naming each other cannot grow a loop.
"""

from __future__ import annotations

from collections.abc import Iterable

from molt.api.instancegroup import InstanceGroup


def requested(desired: int, ready: int, unplaced: int, already: int) -> int:
    """Replicas to ask the overflow group for now.

    ``desired`` is the group's own desired size, ``ready`` its Ready nodes that still
    serve (not draining or terminating; a node selected but waiting for its replacement
    serves), ``unplaced`` what its cells could not place this reconcile and ``already``
    the request it published last.
    """
    missing = max(0, desired - ready)
    if unplaced > 0:
        return min(missing, max(unplaced, already))
    return min(missing, already)


def borrowed_by(name: str, groups: Iterable[InstanceGroup | None]) -> int:
    """Replicas the groups that overflow into ``name`` ask it to run."""
    total = 0
    for group in groups:
        if group is None or group.metadata.name == name:
            continue
        spec_target = group.spec.overflow.group if group.spec.overflow else None
        status = group.status.overflow if group.status else None
        if spec_target == name and status is not None and status.group == name:
            total += status.replicas
    return total


def effective_desired(group: InstanceGroup, groups: Iterable[InstanceGroup | None]) -> int:
    """The group's desired size with what it runs for others, within its maxSize."""
    spec = group.spec
    borrowed = borrowed_by(group.metadata.name, groups)
    return min(spec.max_size, spec.desired_replicas + borrowed)
