"""Where a sandbox rollout's time goes: a watch on the group's Nodes that stamps each
node's milestones as the API server reports them, and the per-wave breakdown of the
hand-off between an old node and the new one that replaces it.

Milestones of a new node: ``created`` (the provider's launch, after the template's boot
delay) and ``ready`` (kwok's Ready condition). Of an old node: ``selected``
(``molt.dev/state=selected``), ``cordoned``, ``draining``, ``terminating`` and
``deleted``. A wave is the i-th group of ``surge`` new nodes (by creation) and the
i-th group of ``surge`` old nodes (by selection); the phases are measured from the
wave's last milestone of one kind to its last of the next, so they add up to the wave.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean, median
from typing import Any

from kubernetes_asyncio import client, watch

from molt.api.labels import GROUP_LABEL, STATE_LABEL

Milestones = dict[str, float]
"""Milestone -> monotonic seconds when the watch first saw it."""


@dataclass
class NodeTimeline:
    """Every milestone of every node of one group, seen through one watch."""

    group: str
    nodes: dict[str, Milestones] = field(default_factory=dict)
    revisions: dict[str, str] = field(default_factory=dict)

    def _stamp(self, name: str, milestone: str, at: float) -> None:
        self.nodes.setdefault(name, {}).setdefault(milestone, at)

    def seen(self, kind: str, node: Any, at: float) -> None:
        name = node.metadata.name
        labels = node.metadata.labels or {}
        self.revisions.setdefault(name, labels.get("molt.dev/revision", ""))
        if kind == "DELETED":
            self._stamp(name, "deleted", at)
            return
        self._stamp(name, "created", at)
        conditions = node.status.conditions if node.status else None
        if any(c.type == "Ready" and c.status == "True" for c in conditions or []):
            self._stamp(name, "ready", at)
        state = labels.get(STATE_LABEL)
        if state:
            self._stamp(name, "selected", at)
        if node.spec is not None and node.spec.unschedulable:
            self._stamp(name, "cordoned", at)
        if state in ("draining", "terminating"):
            self._stamp(name, "draining", at)
        if state == "terminating":
            self._stamp(name, "terminating", at)

    async def follow(self, core: client.CoreV1Api) -> None:
        """Watch the group's Nodes until cancelled (restarting a watch that ends)."""
        version = ""
        while True:
            stream = watch.Watch()
            try:
                async for event in stream.stream(
                    core.list_node,
                    label_selector=f"{GROUP_LABEL}={self.group}",
                    resource_version=version or None,
                    timeout_seconds=300,
                ):
                    node = event["object"]
                    version = node.metadata.resource_version
                    self.seen(event["type"], node, time.monotonic())
            finally:
                stream.stop()


@contextlib.asynccontextmanager
async def following(core: client.CoreV1Api, group: str) -> Any:
    """A ``NodeTimeline`` filled by a watch for as long as the block runs."""
    timeline = NodeTimeline(group)
    task = asyncio.create_task(timeline.follow(core))
    try:
        yield timeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


PHASES = (
    ("launch", "previous wave's old nodes deleted -> new nodes created", "boot delay"),
    ("ready", "created -> Ready (kwok)", "kwok"),
    ("select", "Ready -> old nodes selected", "Molt"),
    ("cordon", "selected -> cordoned", "Molt"),
    ("drain", "cordoned -> drained (terminating)", "Molt"),
    ("delete", "terminating -> Node deleted", "Molt"),
)


@dataclass(frozen=True)
class Wave:
    """One wave's phase lengths in seconds (keys of ``PHASES``)."""

    phases: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def waves(timeline: NodeTimeline, old: str, new: str, surge: int, start: float) -> list[Wave]:
    """The per-wave breakdown of a rollout from revision ``old`` to ``new`` that began
    (the template edit) at monotonic ``start``."""
    fresh = sorted(
        (m for n, m in timeline.nodes.items() if timeline.revisions.get(n) == new and "ready" in m),
        key=lambda m: m["created"],
    )
    leaving = sorted(
        (
            m
            for n, m in timeline.nodes.items()
            if timeline.revisions.get(n) == old and "selected" in m and "deleted" in m
        ),
        key=lambda m: m["selected"],
    )
    found: list[Wave] = []
    previous_end = start
    for index in range(0, min(len(fresh), len(leaving)), surge):
        new_nodes, old_nodes = fresh[index : index + surge], leaving[index : index + surge]
        marks = [
            previous_end,
            max(m["created"] for m in new_nodes),
            max(m["ready"] for m in new_nodes),
            max(m["selected"] for m in old_nodes),
            max(m.get("cordoned", m["selected"]) for m in old_nodes),
            max(m.get("terminating", m["deleted"]) for m in old_nodes),
            max(m["deleted"] for m in old_nodes),
        ]
        # A phase that overlapped the one before it (a node selected before the wave's
        # last new node was Ready) counts as zero, so the phases still add up.
        for i in range(1, len(marks)):
            marks[i] = max(marks[i], marks[i - 1])
        found.append(Wave({name: marks[i + 1] - marks[i] for i, (name, _, _) in enumerate(PHASES)}))
        previous_end = marks[-1]
    return found


def breakdown(found: Sequence[Wave]) -> list[str]:
    """Printable lines: each phase's mean, median and max over the waves, and whose it is."""
    if not found:
        return ["no complete wave seen"]
    lines = [f"per-wave breakdown over {len(found)} waves (seconds: mean / median / max):"]
    for name, what, whose in PHASES:
        values = [w.phases[name] for w in found]
        lines.append(
            f"  {name:<7} {mean(values):5.2f} / {median(values):5.2f} / {max(values):5.2f}"
            f"  {what} [{whose}]"
        )
    totals = [w.total for w in found]
    lines.append(f"  wave    {mean(totals):5.2f} / {median(totals):5.2f} / {max(totals):5.2f}")
    return lines
