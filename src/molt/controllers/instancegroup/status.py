"""Each InstanceGroup's revision and status, computed from its template and its nodes.

The current revision is the hash of the template, so editing the template makes every
node of an older revision drift, and a TerminationPolicy with ``drift: true`` replaces
them through the pipeline (whose replacements carry the new revision). The status says
how many nodes each revision has, how many are Ready, and whether the group is Ready or
still Progressing; it is written only when it changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from molt.api.instancegroup import InstanceGroup
from molt.policy.age import format_rfc3339
from molt.policy.cells import template_revision
from molt.policy.snapshot import NodeView
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)


def group_status(group: InstanceGroup, nodes: list[NodeView], now: datetime) -> dict[str, Any]:
    """The status subresource for ``group`` over its ``nodes``."""
    current = template_revision(group.spec.template)
    desired = group.spec.desired_replicas
    by_revision: dict[str, list[NodeView]] = {}
    for node in nodes:
        by_revision.setdefault(node.revision or "unknown", []).append(node)
    updated = [n for n in by_revision.get(current, []) if n.ready and not n.in_pipeline]
    outdated = sum(len(v) for k, v in by_revision.items() if k != current)
    ready = sum(1 for n in nodes if n.ready)
    settled = len(updated) >= desired and outdated == 0
    revisions = [
        {
            "name": name,
            "replicas": len(members),
            "ready": sum(1 for n in members if n.ready),
            "state": "Current" if name == current else "Outdated",
        }
        for name, members in sorted(by_revision.items(), key=lambda kv: kv[0] != current)
    ]
    if current not in by_revision:
        revisions.insert(0, {"name": current, "replicas": 0, "ready": 0, "state": "Current"})
    message = f"{len(updated)}/{desired} nodes Ready at revision {current}" + (
        f", {outdated} of older revisions to replace" if outdated else ""
    )
    stamp = format_rfc3339(now)
    generation = group.metadata.generation
    return {
        "observedGeneration": generation,
        "currentRevision": current,
        "state": "Ready" if settled else "Progressing",
        "replicas": len(nodes),
        "readyReplicas": ready,
        "updatedReplicas": len(updated),
        "revisions": revisions[:64],
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if settled else "False",
                "reason": "AllNodesCurrent" if settled else "NotAllNodesCurrent",
                "message": message,
                "lastTransitionTime": stamp,
                "observedGeneration": generation,
            },
            {
                "type": "Progressing",
                "status": "False" if settled else "True",
                "reason": "Settled" if settled else "ReplacingNodes",
                "message": message,
                "lastTransitionTime": stamp,
                "observedGeneration": generation,
            },
        ],
    }


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    comparable = dict(status)
    comparable["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
    ]
    return comparable


class GroupStatusReconciler:
    """Writes every InstanceGroup's revision and counts; returns when to look again."""

    def __init__(self, reads: ClusterReads, writes: ClusterWrites, clock: Clock) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self._written: dict[str, dict[str, Any]] = {}

    async def reconcile(self) -> float:
        if not self.reads.synced():
            return 1.0
        now = self.clock.now()
        nodes = self.reads.nodes()
        for name in sorted(self.reads.groups()):
            group = self.reads.instance_group(name)
            if group is None:
                continue
            members = [n for n in nodes if n.group == name]
            status = group_status(group, members, now)
            comparable = _without_times(status)
            if self._written.get(name) == comparable:
                continue
            if (
                group.status is not None
                and group.status.current_revision != status["currentRevision"]
            ):
                log.info(
                    "group.new_revision",
                    group=name,
                    revision=status["currentRevision"],
                    previous=group.status.current_revision,
                )
            await self.writes.patch_group_status(name, status)
            self._written[name] = comparable
        return 30.0
