"""The drainer: evict a node's pods through the Eviction API without ever forcing a PDB.

Shared by the pipeline and ``molt drain``. One call evicts for a bounded slice of time
and returns; a pod refused with 429 backs off on its own schedule (5 s doubling to 60 s,
as kubectl retries every 5 s); a pod under two PDBs (500) is reported, not retried fast;
a pod in a terminating namespace is waited for. Whether a drain has finished is read
from the node's pod cache, which the watch keeps current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog

from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.drain import DrainView
from molt.policy.snapshot import PodView
from molt.ports import Clock, ClusterWrites, EvictionOutcome

log = structlog.get_logger(__name__)

EVICTION_SLICE_SECONDS = 10.0
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 60.0
MULTIPLE_PDB_RETRY = 60.0  # a misconfiguration: a person must fix it, no point hurrying
POD_WAIT_SAFETY = 30.0  # deletions arrive by watch; this only guards a missed event


@dataclass
class PodBackoff:
    """When a pod may be tried again, and how often it was refused."""

    due: float = 0.0
    failures: int = 0
    last: EvictionOutcome | None = None


@dataclass
class DrainAttempt:
    """What one drain slice saw, for the node's report."""

    evicted: list[str] = field(default_factory=list)
    pdb_blocked: list[str] = field(default_factory=list)
    multiple_pdbs: list[str] = field(default_factory=list)
    namespace_terminating: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def blocked_message(view: DrainView, attempt: DrainAttempt, deadline: datetime) -> str | None:
    """The sentence a person reads on a node whose drain cannot finish by itself."""
    parts: list[str] = []
    if attempt.multiple_pdbs:
        parts.append(
            "pods under more than one PodDisruptionBudget (the Eviction API refuses them; "
            f"fix the PDBs): {', '.join(attempt.multiple_pdbs[:5])}"
        )
    if view.held:
        names = ", ".join(p.key for p in view.held[:5])
        parts.append(f"do-not-disrupt pods hold the node until {format_rfc3339(deadline)}: {names}")
    return "; ".join(parts) or None


class Drainer:
    """Evicts pods with per-pod backoff; remembers refusals per node, in memory only."""

    def __init__(
        self,
        writes: ClusterWrites,
        clock: Clock,
        metrics: Metrics,
        *,
        slice_seconds: float = EVICTION_SLICE_SECONDS,
    ) -> None:
        self.writes = writes
        self.clock = clock
        self.metrics = metrics
        self.slice_seconds = slice_seconds
        self._backoff: dict[str, dict[str, PodBackoff]] = {}
        """Per node, per pod UID. A restart loses it and simply tries again sooner."""

    def forget(self, node: str) -> None:
        self._backoff.pop(node, None)

    async def evict_slice(self, node: str, view: DrainView) -> DrainAttempt:
        """Evict what may be tried now, for at most ``slice_seconds``; report what refused."""
        attempt = DrainAttempt()
        started = self.clock.monotonic()
        backoffs = self._backoff.setdefault(node, {})
        for pod in view.evict:
            if self.clock.monotonic() - started > self.slice_seconds:
                break  # never hold a worker: the rest go on the next reconcile
            backoff = backoffs.setdefault(pod.uid, PodBackoff())
            if backoff.due > self.clock.monotonic():
                self._remember(pod, backoff, attempt)
                continue
            result = await self.writes.evict(pod)
            self.metrics.evictions.labels(outcome=result.outcome.value).inc()
            if result.outcome in (EvictionOutcome.EVICTED, EvictionOutcome.GONE):
                attempt.evicted.append(pod.key)
                backoffs.pop(pod.uid, None)
                continue
            backoff.failures += 1
            if result.outcome == EvictionOutcome.MULTIPLE_PDBS:
                delay = MULTIPLE_PDB_RETRY
                attempt.multiple_pdbs.append(pod.key)
            elif result.outcome == EvictionOutcome.PDB_BLOCKED:
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (backoff.failures - 1))
                attempt.pdb_blocked.append(pod.key)
            elif result.outcome == EvictionOutcome.NAMESPACE_TERMINATING:
                delay = BACKOFF_FIRST
                attempt.namespace_terminating.append(pod.key)
            else:
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (backoff.failures - 1))
                attempt.failed.append(f"{pod.key} ({result.message})")
                log.warning("eviction.failed", pod=pod.key, error=result.message)
            backoff.due = self.clock.monotonic() + delay
            backoff.last = result.outcome
        return attempt

    @staticmethod
    def _remember(pod: PodView, backoff: PodBackoff, attempt: DrainAttempt) -> None:
        """A pod still backing off keeps its last refusal in the node's report."""
        if backoff.last == EvictionOutcome.MULTIPLE_PDBS:
            attempt.multiple_pdbs.append(pod.key)
        elif backoff.last == EvictionOutcome.PDB_BLOCKED:
            attempt.pdb_blocked.append(pod.key)
        elif backoff.last == EvictionOutcome.NAMESPACE_TERMINATING:
            attempt.namespace_terminating.append(pod.key)

    def next_try(self, node: str, view: DrainView) -> float:
        """Seconds until a pod of the node may be tried again (pod deletions arrive by watch)."""
        now = self.clock.monotonic()
        backoffs = self._backoff.get(node, {})
        dues = [backoffs[p.uid].due - now for p in view.evict if p.uid in backoffs]
        soonest = min([d for d in dues if d > 0], default=POD_WAIT_SAFETY)
        if view.evict and not dues:
            soonest = 0.0  # pods not tried yet (the slice ran out)
        return max(0.0, min(soonest, POD_WAIT_SAFETY))
