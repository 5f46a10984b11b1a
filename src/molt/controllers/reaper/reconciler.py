"""The Reaper controller: one pass per Reaper (key ``reaper/<name>``), then a requeue
after its ``interval``.

Each pass reads nodes and Reapers from the caches; pods are never watched cluster-wide.
Stuck pods are read per NotReady node with a quorum LIST narrowed by ``spec.nodeName``
(a handful of dead nodes, not a cache that would outlive them); finished pods with one
paged LIST per phase (``status.phase==Succeeded`` / ``Failed``), once per pass. A ghost
node is deleted only when an ``InstanceChecker`` says its instance is gone and none says
it exists.

Every action (or, with ``dryRun``, every would-be action, once per object while this
process runs) is an Event on the object and on the Reaper, a ``molt_reaped_total``
count and a status count; ``maxPerMinute`` caps all three reapers together. Writes go
through the fenced writes port, so a replica that lost its Lease reaps nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from molt.api.durations import format_duration, parse_duration
from molt.api.reaper import Reaper, ReaperSpec, ReaperStatus
from molt.cloud.provider import InstanceChecker
from molt.controllers.conditions import ConditionWriter
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.reaper import (
    RateLimit,
    finished_pod_due,
    ghost_candidate,
    not_ready_since,
    stuck_pods_due,
)
from molt.policy.selection import matches_selector
from molt.policy.snapshot import NodeView, PodView
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

STUCK_PODS = "stuckPods"
FINISHED_PODS = "finishedPods"
GHOST_NODES = "ghostNodes"
FINISHED_PHASES = ("Succeeded", "Failed")
VERBS = {
    STUCK_PODS: "force-deleted (grace 0)",
    FINISHED_PODS: "deleted",
    GHOST_NODES: "deleted",
}
RATE_LIMITED = "RateLimited"
NOT_SYNCED_REQUEUE = 1.0


@dataclass
class _ReaperState:
    """What a Reaper's passes share in this process."""

    limit: RateLimit
    reported: set[str] = field(default_factory=set)
    """Objects a dry run already reported: each is counted once, not at every pass."""
    written: dict[str, int] = field(default_factory=dict)
    """The counts this process last wrote: the cached status may not show them yet."""


@dataclass
class _Pass:
    """One pass's tally."""

    counts: dict[str, int]
    acted: bool = False
    throttled: int = 0


class ReaperReconciler:
    """Runs one Reaper's pass per reconcile (key: the Reaper's name)."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        metrics: Metrics,
        checkers: Sequence[InstanceChecker],
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.metrics = metrics
        self.checkers = tuple(checkers)
        self._states: dict[str, _ReaperState] = {}

    def _state(self, name: str, spec: ReaperSpec) -> _ReaperState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = _ReaperState(RateLimit(spec.max_per_minute))
        state.limit.per_minute = spec.max_per_minute
        return state

    async def reconcile(self, name: str) -> float | None:
        if not self.reads.synced():
            return NOT_SYNCED_REQUEUE
        reaper = next((r for r in self.reads.reapers() if r.metadata.name == name), None)
        if reaper is None:
            self._states.pop(name, None)
            return None
        spec = reaper.spec
        state = self._state(name, spec)
        now = self.clock.now()
        previous = reaper.status.reaped if reaper.status and reaper.status.reaped else None
        cached = {
            STUCK_PODS: previous.stuck_pods if previous else 0,
            FINISHED_PODS: previous.finished_pods if previous else 0,
            GHOST_NODES: previous.ghost_nodes if previous else 0,
        }
        tally = _Pass(counts={k: max(v, state.written.get(k, 0)) for k, v in cached.items()})
        namespaces = await self._namespaces(spec)
        if spec.stuck_pods is not None:
            await self._stuck_pods(reaper, state, tally, now, namespaces)
        if spec.ghost_nodes is not None:
            await self._ghost_nodes(reaper, state, tally, now)
        if spec.finished_pods is not None:
            await self._finished_pods(reaper, state, tally, now, namespaces)
        await self._report(reaper, tally, now)
        state.written = dict(tally.counts)
        return parse_duration(spec.interval).total_seconds()

    async def _namespaces(self, spec: ReaperSpec) -> frozenset[str] | None:
        if spec.namespace_selector is None:
            return None
        labels = await self.writes.namespace_labels_now()
        return frozenset(
            name
            for name, found in labels.items()
            if matches_selector(found, spec.namespace_selector)
        )

    async def _stuck_pods(
        self,
        reaper: Reaper,
        state: _ReaperState,
        tally: _Pass,
        now: datetime,
        namespaces: frozenset[str] | None,
    ) -> None:
        assert reaper.spec.stuck_pods is not None
        after = parse_duration(reaper.spec.stuck_pods.after)
        for node in self.reads.nodes():
            if not_ready_since(node) is None:
                continue  # a Ready node's kubelet finishes its own deletions: never touched
            pods = await self.writes.list_pods_now(node.name)
            for pod in stuck_pods_due(node, pods, now, after, namespaces):
                overdue = (
                    format_duration(now - pod.deletion_timestamp) if pod.deletion_timestamp else "?"
                )
                message = (
                    f"pod {pod.key} Terminating {overdue} past its deadline on NotReady "
                    f"node {node.name}"
                )
                await self._act(reaper, state, tally, STUCK_PODS, pod.uid, message, now, pod=pod)

    async def _ghost_nodes(
        self, reaper: Reaper, state: _ReaperState, tally: _Pass, now: datetime
    ) -> None:
        assert reaper.spec.ghost_nodes is not None
        after = parse_duration(reaper.spec.ghost_nodes.after)
        for node in self.reads.nodes():
            # A node in Molt's pipeline is the pipeline's to finish (it deletes the node
            # after terminating the instance); a ghost is one nobody is handling.
            if node.in_pipeline or not ghost_candidate(node, now, after):
                continue
            if not await self._instance_gone(node):
                continue
            since = not_ready_since(node)
            gone_for = format_duration(now - since) if since else "?"
            message = (
                f"node {node.name} NotReady for {gone_for} and its instance "
                f"{node.provider_id} is gone"
            )
            await self._act(
                reaper, state, tally, GHOST_NODES, node.uid or node.name, message, now, node=node
            )

    async def _instance_gone(self, node: NodeView) -> bool:
        """True only when some provider says gone and none says it exists."""
        answers = [await checker.instance_exists(node) for checker in self.checkers]
        return False in answers and True not in answers

    async def _finished_pods(
        self,
        reaper: Reaper,
        state: _ReaperState,
        tally: _Pass,
        now: datetime,
        namespaces: frozenset[str] | None,
    ) -> None:
        assert reaper.spec.finished_pods is not None
        ttl = parse_duration(reaper.spec.finished_pods.ttl)
        for phase in FINISHED_PHASES:
            for pod in await self.writes.list_finished_pods_now(phase):
                if not finished_pod_due(pod, now, ttl, namespaces):
                    continue
                age = format_duration(now - pod.created) if pod.created else "?"
                message = (
                    f"pod {pod.key} {phase} and {age} old (ttl {reaper.spec.finished_pods.ttl})"
                )
                await self._act(reaper, state, tally, FINISHED_PODS, pod.uid, message, now, pod=pod)

    async def _act(
        self,
        reaper: Reaper,
        state: _ReaperState,
        tally: _Pass,
        kind: str,
        uid: str,
        message: str,
        now: datetime,
        *,
        pod: PodView | None = None,
        node: NodeView | None = None,
    ) -> None:
        name = reaper.metadata.name
        dry_run = reaper.spec.dry_run
        if dry_run and uid in state.reported:
            return
        if not state.limit.take(now):
            tally.throttled += 1
            return
        if dry_run:
            state.reported.add(uid)
            message = f"{message}: would be {VERBS[kind]} (dryRun)"
            reason = "WouldReap"
        else:
            done = await self._delete(kind, pod, node)
            if not done:
                return  # gone already (or a new object of that name): nothing reaped
            message = f"{message}: {VERBS[kind]}"
            reason = "Reaped"
        tally.counts[kind] += 1
        tally.acted = True
        self.metrics.reaped.labels(kind=kind, dry_run="true" if dry_run else "false").inc()
        if pod is not None:
            await self.writes.record_pod_event(pod, reason, message, warning=not dry_run)
        if node is not None:
            await self.writes.record_event(node, reason, message, warning=not dry_run)
        await self.writes.record_resource_event(Reaper, name, reason, message)
        log.info("reaper.reaped", reaper=name, kind=kind, dry_run=dry_run, message=message)

    async def _delete(self, kind: str, pod: PodView | None, node: NodeView | None) -> bool:
        if kind == STUCK_PODS and pod is not None:
            return await self.writes.force_delete_pod(pod)
        if kind == FINISHED_PODS and pod is not None:
            await self.writes.delete_pod(pod)
            return True
        if node is not None:
            return await self.writes.delete_node(node.name)
        return False

    async def _report(self, reaper: Reaper, tally: _Pass, now: datetime) -> None:
        status = reaper.status
        conditions = ConditionWriter(
            status.conditions if status else (), reaper.metadata.generation, now
        )
        limited = tally.throttled > 0
        body: dict[str, Any] = {
            "observedGeneration": reaper.metadata.generation,
            "reaped": {
                "stuckPods": tally.counts[STUCK_PODS],
                "finishedPods": tally.counts[FINISHED_PODS],
                "ghostNodes": tally.counts[GHOST_NODES],
            },
            "conditions": [
                conditions(
                    RATE_LIMITED,
                    limited,
                    "MaxPerMinute" if limited else "WithinLimit",
                    f"{tally.throttled} due objects wait for maxPerMinute "
                    f"({reaper.spec.max_per_minute})"
                    if limited
                    else "every due object was handled",
                )
            ],
        }
        if tally.acted:
            body["lastReapTime"] = format_rfc3339(now)
        elif status is not None and status.last_reap_time is not None:
            body["lastReapTime"] = format_rfc3339(status.last_reap_time)
        if not tally.acted and _unchanged(status, body):
            return
        await self.writes.patch_status(Reaper, reaper.metadata.name, body)
        if limited:
            await self.writes.record_resource_event(
                Reaper,
                reaper.metadata.name,
                RATE_LIMITED,
                f"{tally.throttled} due objects wait for maxPerMinute",
                warning=True,
            )


def _unchanged(status: ReaperStatus | None, body: dict[str, Any]) -> bool:
    """Whether a status write with no new action would change nothing."""
    if status is None:
        return False
    current = status.model_dump(by_alias=True, mode="json", exclude_none=True)

    def essentials(conditions: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        keys = ("type", "status", "reason", "message")
        return [tuple(c.get(key) for key in keys) for c in conditions]

    return (
        current.get("observedGeneration") == body["observedGeneration"]
        and current.get("reaped") == body["reaped"]
        and essentials(current.get("conditions", [])) == essentials(body["conditions"])
    )
