"""The drainer: evict a node's pods through the Eviction API without ever forcing a PDB.

Shared by the pipeline and ``molt drain``. One call evicts for a bounded slice of time
and returns. A 429 names the PDB that refused: the PDB, not the pod, is then retried —
one pod of it every 5 s (kubectl retries each pod every 5 s), every 15 s once it has
refused for two minutes — and the moment one of its pods goes, the rest are tried at
once. A PDB is short of healthy pods only until a replacement turns Ready (or, after a
client died mid-eviction, until the API server's two-minute hold on the pod it counted
as disrupted expires), so retrying it soon and cheaply beats a backoff that doubles past
the moment it allows again. A 429 that names no PDB backs its pod off 5 s doubling to
60 s; a pod under two PDBs (500) is reported, not retried fast; a pod in a terminating
namespace is waited for. Whether a drain has finished is read
from the node's pod cache, which the watch keeps current. It also remembers, per node, since
when each pod has been refused and which cordon-tolerant pods came back, for the report
``molt.policy.drain.blocked_message`` words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from molt.observe.metrics import Metrics
from molt.policy.drain import BudgetRefusal, DrainFindings, DrainView
from molt.policy.pdbs import admission_of
from molt.policy.snapshot import PodView
from molt.ports import Clock, ClusterWrites, EvictionOutcome

log = structlog.get_logger(__name__)

EVICTION_SLICE_SECONDS = 10.0
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 60.0
PDB_RETRY = 5.0
PDB_RETRY_SLOW = 15.0
PDB_SLOW_AFTER = 120.0
"""A PDB refusing for longer than this is waiting on something slower than a pod start."""
PDB_CHECK = 1.0
"""While a PDB refuses, its status is read this often (a GET, far cheaper than an
eviction): the moment it allows a disruption again, its next pod is tried."""
MULTIPLE_PDB_RETRY = 60.0  # a misconfiguration: a person must fix it, no point hurrying
POD_WAIT_SAFETY = 30.0  # deletions arrive by watch; this only guards a missed event


@dataclass
class PodBackoff:
    """When a pod may be tried again, and how often it was refused."""

    due: float = 0.0
    failures: int = 0
    last: EvictionOutcome | None = None


@dataclass
class PdbGate:
    """One refusing PDB on one node: when one of its pods may be tried next."""

    due: float
    refusing_since: float
    checked: float = 0.0
    """When (monotonic) its status was last read."""

    def check_interval(self) -> float:
        slow = self.checked - self.refusing_since >= PDB_SLOW_AFTER
        return PDB_RETRY_SLOW if slow else PDB_CHECK


@dataclass
class DrainAttempt:
    """What one drain slice saw, for the node's report."""

    evicted: list[str] = field(default_factory=list)
    pdb_blocked: list[str] = field(default_factory=list)
    multiple_pdbs: list[str] = field(default_factory=list)
    namespace_terminating: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


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
        self._gates: dict[str, dict[str, PdbGate]] = {}
        """Per node, per refusing PDB (by name, as the 429 words it)."""
        self._pdb_of: dict[str, dict[str, str]] = {}
        """Per node, per pod UID: the PDB that last refused the pod."""
        self._refusals: dict[str, dict[str, BudgetRefusal]] = {}
        """Per node, per pod key: since when a PDB has refused the pod (in memory: a
        restart starts the blockedAfter clock again, which only delays a report)."""
        self._known: dict[str, set[str]] = {}
        """Per node, the UIDs of the pods seen on it since its drain began."""
        self._returned: dict[str, Counter[str]] = {}
        self._returning_since: dict[str, datetime] = {}
        self._quiet_since: dict[str, float] = {}
        self._moved_nothing: set[str] = set()
        """Nodes whose drain this process began and that have had nothing evicted or
        deleted since: no replacement pod is on its way to them, so no settle is needed."""
        """Per node, since when (monotonic) the drain has evicted nothing and seen it empty."""

    def forget(self, node: str) -> None:
        for memory in (
            self._backoff,
            self._gates,
            self._pdb_of,
            self._refusals,
            self._known,
            self._returned,
            self._returning_since,
            self._quiet_since,
        ):
            memory.pop(node, None)
        self._moved_nothing.discard(node)

    def began(self, node: str) -> None:
        """This process started the node's drain (it has evicted nothing yet)."""
        self._moved_nothing.add(node)

    def moved(self, node: str) -> None:
        """A pod of the node was deleted outside the Eviction API: its replacement is on
        its way (somewhere), so the node must settle before it counts as drained."""
        self._moved_nothing.discard(node)

    def needs_settle(self, node: str) -> bool:
        """Whether an evicted pod's replacement may still be on its way to the node."""
        return node not in self._moved_nothing

    def observe(self, node: str, view: DrainView) -> None:
        """Note pods that arrived on the draining node and tolerate its cordon: the
        scheduler put them back (a drain that evicts them again can go round for long)."""
        pods = [*view.evict, *view.left_with_node]
        known = self._known.get(node)
        if known is None:
            self._known[node] = {p.uid for p in pods}
            return
        for pod in pods:
            if pod.uid in known:
                continue
            known.add(pod.uid)
            if pod.tolerates_cordon:
                owner = pod.key.rsplit("-", 1)[0]
                returns = self._returned.setdefault(node, Counter())
                returns[owner] += 1
                self._returning_since.setdefault(node, self.clock.now())
                # The scheduler favours the emptiest node, which a drained node is: evicting
                # the newcomer at once would only send its successor back here. Space the
                # evictions of a returning owner out, so the churn stays bounded.
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (returns[owner] - 1))
                backoff = self._backoff.setdefault(node, {}).setdefault(pod.uid, PodBackoff())
                backoff.due = max(backoff.due, self.clock.monotonic() + delay)

    def busy(self, node: str) -> None:
        """The node had pods to move: its quiet period starts again."""
        self._quiet_since.pop(node, None)

    def quiet_for(self, node: str) -> float:
        """Seconds the node has been seen empty with nothing evicted since; the first
        call starts the count (so a restarted controller waits the full period too)."""
        now = self.clock.monotonic()
        return now - self._quiet_since.setdefault(node, now)

    def findings(self, node: str, attempt: DrainAttempt) -> DrainFindings:
        """What this node's drain has run into, for its blocked report."""
        return DrainFindings(
            refusals=dict(self._refusals.get(node, {})),
            multiple_pdbs=tuple(attempt.multiple_pdbs),
            returned=dict(self._returned.get(node, {})),
            returning_since=self._returning_since.get(node),
        )

    async def evict_slice(self, node: str, view: DrainView) -> DrainAttempt:
        """Evict what may be tried now, for at most ``slice_seconds``; report what refused."""
        attempt = DrainAttempt()
        await self._check_gates(node)
        started = self.clock.monotonic()
        backoffs = self._backoff.setdefault(node, {})
        gates = self._gates.setdefault(node, {})
        pdb_of = self._pdb_of.setdefault(node, {})
        for pod in view.evict:
            now = self.clock.monotonic()
            if now - started > self.slice_seconds:
                break  # never hold a worker: the rest go on the next reconcile
            if pod.key in attempt.evicted:
                continue  # deleted above as the pod its PDB had already paid for
            backoff = backoffs.setdefault(pod.uid, PodBackoff())
            gate = gates.get(pdb_of.get(pod.uid, ""))
            if gate is not None and gate.due > now:
                backoff.due = max(backoff.due, gate.due)  # one pod of the PDB at a time
            if backoff.due > now:
                self._remember(pod, backoff, attempt)
                continue
            result = await self.writes.evict(pod)
            self.metrics.evictions.labels(outcome=result.outcome.value).inc()
            refusals = self._refusals.setdefault(node, {})
            if result.outcome in (EvictionOutcome.EVICTED, EvictionOutcome.GONE):
                self._moved_nothing.discard(node)
                attempt.evicted.append(pod.key)
                backoffs.pop(pod.uid, None)
                refusals.pop(pod.key, None)
                opened = pdb_of.pop(pod.uid, None)
                if opened is not None and gates.pop(opened, None) is not None:
                    self._open_gate(node, opened)
                continue
            backoff.failures += 1
            if result.outcome == EvictionOutcome.MULTIPLE_PDBS:
                delay = MULTIPLE_PDB_RETRY
                attempt.multiple_pdbs.append(pod.key)
            elif result.outcome == EvictionOutcome.PDB_BLOCKED:
                attempt.pdb_blocked.append(pod.key)
                first = refusals.get(pod.key)
                refusal = BudgetRefusal(
                    pod.key, first.since if first else self.clock.now(), result.message
                )
                refusals[pod.key] = refusal
                budget = f"{pod.namespace}/{refusal.budget}" if refusal.budget else None
                paid = (
                    await self._admitted_before(
                        pod,
                        [p for p in view.evict if p.key not in attempt.evicted],
                        refusal.budget,
                    )
                    if refusal.budget is not None
                    else None
                )
                if paid is not None:
                    attempt.evicted.append(paid.key)
                    backoffs.pop(paid.uid, None)
                    refusals.pop(paid.key, None)
                    if paid.uid == pod.uid:
                        continue
                if budget is None:
                    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (backoff.failures - 1))
                else:
                    pdb_of[pod.uid] = budget
                    delay = self._close_gate(gates, budget, now)
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

    async def _admitted_before(
        self, refused: PodView, pods: Sequence[PodView], budget: str
    ) -> PodView | None:
        """The pod the PDB already counts as disrupted, deleted now; None if there is none.

        An eviction of it was admitted, but the pod was never deleted (the client that
        asked died mid-request, after the API server charged the PDB and before it deleted
        the pod). The API server then refuses every eviction under the PDB for two minutes,
        until it drops the entry, whichever pod is asked for: so the charged pod is looked
        for among all the node's pods in the refused one's namespace, not just the refused
        one (the drain tries one pod of a refusing PDB at a time, and may never come to
        it). Deleting it carries out the disruption the PDB has already allowed and paid
        for, so it breaks nothing; waiting would only stall the drain. Only an entry that
        is that pod's and still counted is taken (``admission_of``): one that outlived its
        pod, or its two minutes, is no permission."""
        pdb = await self.writes.read_pdb(refused.namespace, budget)
        if pdb is None:
            return None
        now = self.clock.now()
        candidates = [refused, *(p for p in pods if p.uid != refused.uid)]
        paid = next(
            (
                candidate
                for candidate in candidates
                if candidate.namespace == refused.namespace
                and admission_of(pdb, candidate, now) is not None
            ),
            None,
        )
        if paid is None:
            return None
        await self.writes.delete_pod(paid)
        self._moved_nothing.discard(paid.node or "")
        self.metrics.evictions.labels(outcome="admitted-earlier").inc()
        log.info("eviction.completed", pod=paid.key, pdb=f"{refused.namespace}/{budget}")
        return paid

    def _close_gate(self, gates: dict[str, PdbGate], budget: str, now: float) -> float:
        """The PDB refused: its next pod is tried after a short, flat wait."""
        gate = gates.get(budget)
        since = gate.refusing_since if gate is not None else now
        delay = PDB_RETRY if now - since < PDB_SLOW_AFTER else PDB_RETRY_SLOW
        gates[budget] = PdbGate(now + delay, since, checked=now)
        return delay

    async def _check_gates(self, node: str) -> None:
        """Read each refusing PDB whose check is due; one that allows again opens."""
        now = self.clock.monotonic()
        for budget, gate in list(self._gates.get(node, {}).items()):
            if gate.due <= now or now - gate.checked < gate.check_interval():
                continue
            gate.checked = now
            namespace, _, name = budget.partition("/")
            pdb = await self.writes.read_pdb(namespace, name)
            # A status behind its spec is no news: the API server refuses under it too.
            if pdb is None or (not pdb.stale and (pdb.disruptions_allowed or 0) > 0):
                gate.due = now
                self._open_gate(node, budget)

    def _open_gate(self, node: str, budget: str) -> None:
        """A pod of the PDB went: the PDB allows again, so its other pods are due now."""
        backoffs = self._backoff.get(node, {})
        for uid, refused_by in self._pdb_of.get(node, {}).items():
            if refused_by == budget and uid in backoffs:
                backoffs[uid].due = 0.0

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
        checks = [
            gate.checked + gate.check_interval() - now
            for gate in self._gates.get(node, {}).values()
            if gate.due > now
        ]
        soonest = min([d for d in (*dues, *checks) if d > 0], default=POD_WAIT_SAFETY)
        if view.evict and not dues:
            soonest = 0.0  # pods not tried yet (the slice ran out)
        return max(0.0, min(soonest, POD_WAIT_SAFETY))
