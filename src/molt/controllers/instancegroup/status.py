"""The status phase: an InstanceGroup's status (revisions, cells, counts and the Ready,
Progressing and Degraded conditions) as ``InstanceGroupStatus``, computed from the scope,
and its shape on the wire.

``currentRevision`` is the revision capacity belongs to: the template's hash, or the
previous revision while a degraded template is rolled back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from molt.api.instancegroup import (
    CellStatus,
    HostInit,
    InstanceGroupStatus,
    OverflowStatus,
    RevisionStatus,
)
from molt.api.labels import GROUP_LABEL
from molt.api.types import Condition
from molt.controllers.conditions import ConditionWriter
from molt.controllers.instancegroup.scope import GroupScope
from molt.policy.age import format_rfc3339
from molt.policy.host_init import figures
from molt.policy.snapshot import NodeView

MAX_REVISIONS = 64
MAX_CELLS = 512

RevisionState = Literal["Current", "Previous", "Outdated", "Degraded"]


def group_status(scope: GroupScope) -> InstanceGroupStatus:
    """The status subresource for the scope's group over its nodes."""
    memory, template_revision = scope.memory, scope.template_revision
    target = memory.current or template_revision
    desired = scope.desired
    by_revision, ready_by_revision = _by_revision(scope.members)
    updated = [n for n in by_revision.get(target, []) if n.ready and not n.in_pipeline]
    outdated = sum(len(v) for k, v in by_revision.items() if k != target)
    settled = len(updated) >= desired and outdated == 0
    degraded = template_revision in memory.degraded
    message = f"{len(updated)}/{desired} nodes Ready at revision {target}" + (
        f", {outdated} of other revisions to replace" if outdated else ""
    )
    return InstanceGroupStatus(
        observed_generation=scope.group.metadata.generation,
        current_revision=target,
        state="Degraded" if degraded else "Ready" if settled else "Progressing",
        replicas=len(scope.members),
        ready_replicas=sum(ready_by_revision.values()),
        updated_replicas=len(updated),
        revisions=_revisions(scope, target, by_revision, ready_by_revision)[:MAX_REVISIONS],
        cells=_cells(scope, target, updated)[:MAX_CELLS],
        host_init=host_init_of(scope, target),
        selector=f"{GROUP_LABEL}={scope.group.metadata.name}",
        overflow=_overflow(scope),
        borrowed=scope.borrowed,
        conditions=_conditions(scope, target, settled, message),
    )


def _overflow(scope: GroupScope) -> OverflowStatus | None:
    """The request to the overflow group, keeping when it began."""
    target = scope.spec.overflow.group if scope.spec.overflow else None
    if target is None or scope.overflow_request <= 0:
        return None
    before = scope.group.status.overflow if scope.group.status else None
    since = before.since if before is not None and before.group == target else None
    return OverflowStatus(
        group=target, replicas=scope.overflow_request, since=since or format_rfc3339(scope.now)
    )


def _by_revision(nodes: Sequence[NodeView]) -> tuple[dict[str, list[NodeView]], Counter[str]]:
    """The nodes of each revision, and how many of them are Ready (in one pass)."""
    found: dict[str, list[NodeView]] = {}
    ready: Counter[str] = Counter()
    for node in nodes:
        revision = node.revision or "unknown"
        found.setdefault(revision, []).append(node)
        if node.ready:
            ready[revision] += 1
    return found, ready


def _revisions(
    scope: GroupScope,
    target: str,
    by_revision: dict[str, list[NodeView]],
    ready_by_revision: Counter[str],
) -> list[RevisionStatus]:
    """The target, the template's and the previous revision, then every revision a node
    has, each once."""
    memory = scope.memory

    def state_of(name: str) -> RevisionState:
        if name in memory.degraded:
            return "Degraded"
        if name == target:
            return "Current"
        return "Previous" if name == memory.previous else "Outdated"

    names = [target, scope.template_revision]
    if memory.previous is not None:
        names.append(memory.previous)
    names += sorted(by_revision)
    revisions = []
    for name in dict.fromkeys(names):
        members = by_revision.get(name, [])
        state = state_of(name)
        template = memory.templates.get(name)
        revisions.append(
            RevisionStatus(
                name=name,
                replicas=len(members),
                ready=ready_by_revision[name],
                launch_failures=memory.failure_totals.get(name, 0),
                state=state,
                message=memory.degraded[name][:1024] if name in memory.degraded else None,
                template=template if state in ("Current", "Previous", "Degraded") else None,
                host_init=host_init_of(scope, name),
            )
        )
    return revisions


def host_init_of(scope: GroupScope, revision: str) -> HostInit | None:
    """Launch to Ready of the revision's latest launches this process saw; else what the
    status said when it started."""
    found = figures(scope.memory.host_init.get(revision, []))
    if found is None:
        return scope.memory.host_init_reported.get(revision)
    return HostInit(
        p50_seconds=found.p50_seconds, p90_seconds=found.p90_seconds, samples=found.samples
    )


def _cells(scope: GroupScope, target: str, updated: list[NodeView]) -> list[CellStatus]:
    """The target revision's cells as last sized, with their Ready nodes and rests."""
    # Counted by (zone, capacity type): a tuple of strings hashes far cheaper than a CellKey.
    ready_by_cell = Counter((n.cell.zone, n.cell.capacity_type) for n in updated)
    resting = scope.memory.rests_for(target, scope.now)
    return [
        CellStatus(
            zone=figures.key.zone,
            capacity_type=figures.key.capacity_type,
            revision=target,
            desired=figures.desired,
            ready=ready_by_cell[(figures.key.zone, figures.key.capacity_type)],
            available=figures.key not in resting,
            unavailable_until=format_rfc3339(resting[figures.key])
            if figures.key in resting
            else None,
        )
        for figures in sorted(scope.cells, key=lambda f: f.key)
    ]


def _conditions(scope: GroupScope, target: str, settled: bool, message: str) -> list[Condition]:
    memory, template_revision = scope.memory, scope.template_revision
    degraded = template_revision in memory.degraded
    rolled_back = degraded and target != template_revision
    if rolled_back:
        why = memory.degraded[template_revision]
        degraded_message = (
            f"revision {template_revision} is degraded ({why}); capacity returned to {target}"
        )
    elif degraded:
        degraded_message = (
            f"revision {template_revision} is degraded ({memory.degraded[template_revision]}) "
            "and there is no previous revision to return to: the group keeps its size from it, "
            "one launch at a time, and tries it again after a backoff"
        )
    else:
        degraded_message = "no revision is failing"
    group = scope.group
    condition = ConditionWriter(
        group.status.conditions if group.status else [], group.metadata.generation, scope.now
    )
    written = [
        condition(
            "Ready",
            settled,
            "AllNodesCurrent" if settled else "NotAllNodesCurrent",
            message,
        ),
        condition(
            "Progressing",
            not settled and not (degraded and not rolled_back),
            "Settled" if settled else ("RollingBack" if rolled_back else "ReplacingNodes"),
            message,
        ),
        condition(
            "Degraded",
            degraded,
            ("RolledBack" if rolled_back else "RolloutStopped") if degraded else "Healthy",
            degraded_message,
        ),
    ]
    return [Condition.model_validate(c) for c in written]


def without_times(status: InstanceGroupStatus) -> dict[str, Any]:
    """The status with transition times dropped, to tell whether anything changed."""
    return status.model_dump(exclude={"conditions": {"__all__": {"last_transition_time"}}})


def wire(status: InstanceGroupStatus) -> dict[str, Any]:
    """The status as the API server is sent it: camelCase, absent fields omitted, but
    ``observedGeneration`` always written (null when the group has no generation yet) and
    transition times at second precision, as Kubernetes writes them; ``overflow`` is null
    when there is none."""
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["observedGeneration"] = status.observed_generation
    # A merge patch keeps what it does not name: an ended overflow is removed with null.
    body.setdefault("overflow", None)
    for entry, condition in zip(body["conditions"], status.conditions, strict=True):
        entry["lastTransitionTime"] = format_rfc3339(condition.last_transition_time)
        entry["observedGeneration"] = condition.observed_generation
    return body
