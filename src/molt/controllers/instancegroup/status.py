"""An InstanceGroup's status: revisions, cells, counts and the Ready, Progressing and
Degraded conditions, computed from what the controller knows and the group's nodes.

``currentRevision`` is the revision capacity belongs to: the template's hash, or the
previous revision while a degraded template is rolled back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from molt.api.instancegroup import InstanceGroup
from molt.api.labels import GROUP_LABEL
from molt.controllers.conditions import ConditionWriter
from molt.controllers.instancegroup.memory import GroupMemory
from molt.policy.age import format_rfc3339
from molt.policy.cells import CellKey
from molt.policy.snapshot import NodeView

MAX_REVISIONS = 64


@dataclass(frozen=True)
class CellFigures:
    """A target cell's desired size, as last set."""

    key: CellKey
    desired: int


def group_status(
    group: InstanceGroup,
    nodes: Sequence[NodeView],
    memory: GroupMemory,
    template_revision: str,
    cells: list[CellFigures],
    now: datetime,
) -> dict[str, Any]:
    """The status subresource for ``group`` over its ``nodes``."""
    target = memory.current or template_revision
    desired = group.spec.desired_replicas
    by_revision: dict[str, list[NodeView]] = {}
    for node in nodes:
        by_revision.setdefault(node.revision or "unknown", []).append(node)
    updated = [n for n in by_revision.get(target, []) if n.ready and not n.in_pipeline]
    outdated = sum(len(v) for k, v in by_revision.items() if k != target)
    settled = len(updated) >= desired and outdated == 0
    degraded = template_revision in memory.degraded
    rolled_back = degraded and target != template_revision

    def state_of(name: str) -> str:
        if name in memory.degraded:
            return "Degraded"
        if name == target:
            return "Current"
        return "Previous" if name == memory.previous else "Outdated"

    names = [target, template_revision]
    if memory.previous is not None:
        names.append(memory.previous)
    names += sorted(by_revision)
    revisions = []
    for name in dict.fromkeys(names):
        members = by_revision.get(name, [])
        state = state_of(name)
        entry: dict[str, Any] = {
            "name": name,
            "replicas": len(members),
            "ready": sum(1 for n in members if n.ready),
            "launchFailures": memory.failure_totals.get(name, 0),
            "state": state,
        }
        if name in memory.degraded:
            entry["message"] = memory.degraded[name][:1024]
        template = memory.templates.get(name)
        if template is not None and state in ("Current", "Previous", "Degraded"):
            entry["template"] = template.model_dump(mode="json", by_alias=True, exclude_none=True)
        revisions.append(entry)
    ready_by_cell = Counter(n.cell for n in updated)
    resting = memory.rests_for(target, now)
    cell_entries = [
        {
            "zone": figures.key.zone,
            "capacityType": figures.key.capacity_type,
            "revision": target,
            "desired": figures.desired,
            "ready": ready_by_cell[figures.key],
            "available": figures.key not in resting,
            **(
                {"unavailableUntil": format_rfc3339(resting[figures.key])}
                if figures.key in resting
                else {}
            ),
        }
        for figures in sorted(cells, key=lambda f: f.key)
    ]
    message = f"{len(updated)}/{desired} nodes Ready at revision {target}" + (
        f", {outdated} of other revisions to replace" if outdated else ""
    )
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
    condition = ConditionWriter(
        group.status.conditions if group.status else [], group.metadata.generation, now
    )
    state = "Degraded" if degraded else "Ready" if settled else "Progressing"
    return {
        "observedGeneration": group.metadata.generation,
        "currentRevision": target,
        "state": state,
        "replicas": len(nodes),
        "readyReplicas": sum(1 for n in nodes if n.ready),
        "updatedReplicas": len(updated),
        "revisions": revisions[:MAX_REVISIONS],
        "cells": cell_entries[:512],
        "selector": f"{GROUP_LABEL}={group.metadata.name}",
        "conditions": [
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
        ],
    }


def without_times(status: dict[str, Any]) -> dict[str, Any]:
    """The status with transition times dropped, to tell whether anything changed."""
    comparable = dict(status)
    comparable["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
    ]
    return comparable
