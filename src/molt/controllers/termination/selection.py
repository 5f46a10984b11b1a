"""Selection: turn the current plan into nodes entering the pipeline, and report it.

Runs the policy core over the cached cluster, marks each admitted node (state label,
policy, reason, selection time and deadline annotations, an Event), reports nodes whose
metadata cannot be read, and keeps each TerminationPolicy's status counters current, and
the fleet's age and blocked-drain metrics with them (``fleet_gauges``).
Budgets hold across restarts because the in-flight count is read back from the nodes'
state labels, and within one run because each write lands in the cache at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import datetime

import structlog

from molt.api.durations import parse_duration
from molt.api.labels import (
    BLOCKED_ANNOTATION,
    DEADLINE_ANNOTATION,
    POLICY_ANNOTATION,
    REASON_ANNOTATION,
    SELECTED,
    SELECTED_AT_ANNOTATION,
    STATE_LABEL,
)
from molt.api.terminationpolicy import TerminationPolicy
from molt.controllers.conditions import ConditionWriter
from molt.controllers.termination.fleet_gauges import FleetGauges
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.control_plane import (
    GateInputs,
    RotationState,
    advance,
    bake_time,
    baking_until,
    node_failures,
)
from molt.policy.eligibility import EligibilitySchedule
from molt.policy.pdbs import DeadlockIndex, describe
from molt.policy.plan import Plan, compute_plan, select_all
from molt.policy.remediation import Breaker
from molt.policy.selection import covers
from molt.policy.snapshot import NodeView, Snapshot
from molt.policy.watchdog import paused_policies
from molt.ports import Clock, ClusterReads, ClusterWrites, HealthProbe

log = structlog.get_logger(__name__)

RESYNC_SECONDS = 30.0
DEADLOCK_RECHECK_SECONDS = 60.0
"""How long a PDB deadlock found on a node stands before its pods and PDBs are read again
(a scaled-up Deployment or an edited PDB ends it)."""
CONTROL_PLANE_PASS_SECONDS = 5.0
"""While a control-plane rotation bakes or is halted, selection runs at least this often,
so a failing gate halts it promptly and a bake's end or a halt's resume is not missed."""
GATE_RECHECK_SECONDS = 2.0
"""How long one answer of a policy's health checks stands (selection can run many times a
second while nodes change)."""


class SelectionReconciler:
    """One step: plan, admit, report. Returns when to run again."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        metrics: Metrics,
        *,
        on_selected: Callable[[str], None] = lambda _: None,
        resync_seconds: float = RESYNC_SECONDS,
        probe: HealthProbe | None = None,
        admission: asyncio.Lock | None = None,
    ) -> None:
        self.reads = reads
        self.admission = admission or asyncio.Lock()
        """Held while nodes are admitted; shared with the instance groups' selections."""
        self.writes = writes
        self.clock = clock
        self.metrics = metrics
        self.on_selected = on_selected
        self.resync_seconds = resync_seconds
        self.fleet_gauges = FleetGauges(metrics, resync_seconds)
        self.schedule = EligibilitySchedule()
        """When each node can next be selected by age, so a pass skips those not due."""
        self._reported_problems: dict[str, str] = {}
        self.last_plan: Plan | None = None
        """The plan of the latest pass, for inspection."""
        self._written_status: dict[str, tuple[object, ...]] = {}
        """What each policy's status last said, so an unchanged status is not rewritten."""
        self._deadlocked: dict[str, tuple[str, float]] = {}
        """Node -> the PDB deadlock found on it, and when (monotonic) it was found."""
        self._deadlock_reported: dict[str, str] = {}
        """Node -> the deadlock last reported by an Event, so a recheck does not repeat it."""
        self.probe = probe
        """The health gate's I/O checks; None: only node readiness is checked."""
        self._rotation: dict[str, RotationState] = {}
        """Policy -> its control-plane rotation state as last written (ahead of the cache)."""
        self._probed: dict[str, tuple[float, tuple[str, ...]]] = {}
        """Policy -> when (monotonic) its health checks last ran, and what failed."""
        self._paused_scopes: dict[str, set[tuple[str, str | None]]] = {}
        """Policy -> the (group, zone) scopes its remediation breaker was last reported
        tripped in (zone None: the whole group), so each pause has one Event and one end."""

    async def reconcile(self) -> float:
        if not self.reads.synced():
            return 1.0
        # Admission is serialised with the instance groups' own selections: both count the
        # nodes in flight from the cache, and a write lands there only once it returns.
        async with self.admission:
            now, policies, plan, paused, gates = await self._admit()
        await self._write_statuses(policies, self.reads.nodes(), plan, now, paused, gates)
        await self._report_breakers(policies, plan)
        self.fleet_gauges.publish(policies, self.reads.nodes(), self.reads.groups(), now)
        # Waiting decisions are looked at again when the pipeline frees room (a node event
        # enqueues selection); the resync catches nodes that simply grew older.
        return min([self.resync_seconds, *(_next_pass(g, now) for g in gates.values())])

    async def _admit(
        self,
    ) -> tuple[datetime, list[TerminationPolicy], Plan, dict[str, str], dict[str, GateInputs]]:
        """Plan over the cache and mark every admitted node selected."""
        now = self.clock.now()
        policies = self.reads.policies()
        nodes = self.reads.nodes()
        by_name = {node.name: node for node in nodes}
        snapshot = Snapshot(tuple(nodes), self.reads.groups())
        states = {
            w.metadata.name: w.status.state if w.status else None for w in self.reads.watchdogs()
        }
        paused = paused_policies(policies, states)
        gates = await self._control_plane_gates(policies, snapshot, now)
        plan = await self._plan_without_deadlocks(snapshot, policies, now, by_name, paused, gates)
        self.last_plan = plan
        await self._report_problems(plan, by_name)
        by_policy = {p.metadata.name: p for p in policies}
        for decision in plan.admitted:
            candidate = decision.candidate
            node = by_name[candidate.node]
            policy = by_policy[candidate.policy]
            deadline = candidate.deadline or now + parse_duration(policy.spec.drain.timeout)
            marked = await self.writes.patch_node(
                node.name,
                labels={STATE_LABEL: SELECTED},
                annotations={
                    POLICY_ANNOTATION: candidate.policy,
                    REASON_ANNOTATION: candidate.reason,
                    SELECTED_AT_ANNOTATION: format_rfc3339(now),
                    DEADLINE_ANNOTATION: format_rfc3339(deadline),
                },
            )
            if not marked:
                continue
            self.metrics.decisions.labels(reason=candidate.rule).inc()
            log.info(
                "node.selected", node=node.name, policy=candidate.policy, reason=candidate.reason
            )
            await self.writes.record_event(
                node, "Selected", f"selected by policy {candidate.policy}: {candidate.reason}"
            )
            self.on_selected(node.name)
        return now, policies, plan, paused, gates

    async def _plan_without_deadlocks(
        self,
        snapshot: Snapshot,
        policies: list[TerminationPolicy],
        now: datetime,
        nodes: dict[str, NodeView],
        paused: dict[str, str],
        gates: dict[str, GateInputs],
    ) -> Plan:
        """The plan, after the pods of every node it would admit were checked against the
        PDBs: a node no drain can empty is held before it is cordoned, and its budget slot
        goes to the next candidate."""
        monotonic = self.clock.monotonic()
        for name, (_, found_at) in list(self._deadlocked.items()):
            if name not in nodes or monotonic - found_at >= DEADLOCK_RECHECK_SECONDS:
                del self._deadlocked[name]
        for name in [n for n in self._deadlock_reported if n not in nodes]:
            del self._deadlock_reported[name]
        index: DeadlockIndex | None = None
        checked: set[str] = set()
        # The same on every round below.
        selections = select_all(snapshot, policies, now, self.schedule)
        while True:
            known = {name: message for name, (message, _) in self._deadlocked.items()}
            plan = compute_plan(
                snapshot, policies, now, known, paused, gates, selections=selections
            )
            fresh: list[tuple[str, str]] = []
            for decision in plan.admitted:
                if decision.node in checked:
                    continue
                checked.add(decision.node)
                if index is None:
                    index = DeadlockIndex(await self.writes.list_pdbs_now())
                if not index:
                    return plan  # no PDB can deadlock a drain: no pod needs reading
                pods = await self.writes.list_pods_now(decision.node)
                deadlocks = index.find(pods)
                if deadlocks:
                    fresh.append((decision.node, describe(deadlocks)))
            if not fresh:
                return plan
            for name, message in fresh:
                self._deadlocked[name] = (message, monotonic)
                if self._deadlock_reported.get(name) == message:
                    continue
                self._deadlock_reported[name] = message
                log.warning("node.pdb_deadlock", node=name, problem=message)
                await self.writes.record_event(
                    nodes[name], "PDBDeadlock", f"not selected: {message}", warning=True
                )

    async def _control_plane_gates(
        self, policies: list[TerminationPolicy], snapshot: Snapshot, now: datetime
    ) -> dict[str, GateInputs]:
        """Evaluate the health gate of each policy that rotates control-plane nodes, move
        its rotation state along (a failure during the bake halts it; a whole bake of
        passing ends the halt), and record an Event when it halts or resumes."""
        gates: dict[str, GateInputs] = {}
        control_plane = [n for n in snapshot.nodes if n.is_control_plane]
        present = {p.metadata.name for p in policies}
        for gone in [name for name in self._rotation if name not in present]:
            del self._rotation[gone]  # a policy recreated under its name starts afresh
        for policy in policies:
            name = policy.metadata.name
            if not policy.spec.include_control_plane or not any(
                covers(policy, n) for n in control_plane
            ):
                self._rotation.pop(name, None)
                continue
            cached = RotationState.of(policy)
            known = self._rotation.get(name)
            before = (
                RotationState(cached.last_completed, known.halted, known.healthy_since)
                if known is not None
                else cached
            )
            checked = await self._probe(policy)
            bake = bake_time(policy)
            after = advance(before, [*checked, *node_failures(snapshot)], now, bake)
            if after.halted is not None and before.halted is None:
                log.warning("policy.control_plane_halted", policy=name, why=after.halted)
                await self.writes.record_resource_event(
                    TerminationPolicy,
                    name,
                    "ControlPlaneHalted",
                    f"control-plane rotation halted: {after.halted}",
                    warning=True,
                )
            elif after.halted is None and before.halted is not None:
                log.info("policy.control_plane_resumed", policy=name)
                await self.writes.record_resource_event(
                    TerminationPolicy,
                    name,
                    "ControlPlaneResumed",
                    f"control-plane rotation resumed: the health gate passed for "
                    f"{policy.spec.control_plane.bake_time}",
                )
            self._rotation[name] = after
            gates[name] = GateInputs(after, bake, checked)
        return gates

    async def _probe(self, policy: TerminationPolicy) -> tuple[str, ...]:
        if self.probe is None:
            return ()
        name = policy.metadata.name
        monotonic = self.clock.monotonic()
        last = self._probed.get(name)
        if last is not None and monotonic - last[0] < GATE_RECHECK_SECONDS:
            return last[1]
        failed = tuple(await self.probe.failures(list(policy.spec.control_plane.health_checks)))
        self._probed[name] = (self.clock.monotonic(), failed)
        return failed

    async def _report_problems(self, plan: Plan, nodes: dict[str, NodeView]) -> None:
        current = {problem.node: problem.message for problem in plan.problems}
        for name, message in current.items():
            if self._reported_problems.get(name) == message or name not in nodes:
                continue
            self._reported_problems[name] = message
            log.warning("node.skipped", node=name, problem=message)
            await self.writes.record_event(
                nodes[name], "InvalidMetadata", f"skipped by molt: {message}", warning=True
            )
        for name in [n for n in self._reported_problems if n not in current]:
            del self._reported_problems[name]

    async def _report_breakers(self, policies: list[TerminationPolicy], plan: Plan) -> None:
        """``molt_remediation_paused`` per zone of each policy with a remediation chain,
        and one Event when remediation pauses in a zone or group and one when it resumes.
        After a restart, a pause the policy's condition already shows is not announced
        again."""
        present = {p.metadata.name for p in policies}
        for gone in [name for name in self._paused_scopes if name not in present]:
            del self._paused_scopes[gone]
            self.metrics.set_remediation_paused(gone, {})
        for policy in policies:
            name = policy.metadata.name
            chain = plan.breakers.get(name)
            if chain is None:
                if self._paused_scopes.pop(name, None) is not None:
                    self.metrics.set_remediation_paused(name, {})
                continue
            self.metrics.set_remediation_paused(name, chain.zone_paused())
            tripped = {(t.group, t.zone): t for t in chain.tripped()}
            before = self._paused_scopes.get(name)
            if before is None:
                shown = any(
                    c.type == "RemediationPaused" and c.status == "True"
                    for c in (policy.status.conditions if policy.status else [])
                )
                before = set(tripped) if shown else set()
            for scope, tally in tripped.items():
                if scope in before:
                    continue
                limit = chain.group_limit if tally.zone is None else chain.zone_limit
                log.warning("policy.remediation_paused", policy=name, where=_where(scope))
                await self.writes.record_resource_event(
                    TerminationPolicy,
                    name,
                    "RemediationPaused",
                    f"remediation paused in {_where(scope)}: {tally.describe(limit)}; no "
                    "node there is rebooted or replaced for being unhealthy until fewer are",
                    warning=True,
                )
            for scope in sorted(before - set(tripped), key=str):
                log.info("policy.remediation_resumed", policy=name, where=_where(scope))
                group, zone = scope
                now_count = (
                    chain.groups.get(group) if zone is None else chain.zones.get((group, zone))
                )
                counts = (
                    f": {now_count.unhealthy} of {now_count.total} nodes unhealthy"
                    if now_count is not None
                    else ""
                )
                await self.writes.record_resource_event(
                    TerminationPolicy,
                    name,
                    "RemediationResumed",
                    f"remediation resumed in {_where(scope)}{counts}",
                )
            self._paused_scopes[name] = set(tripped)

    async def _write_statuses(
        self,
        policies: list[TerminationPolicy],
        nodes: list[NodeView],
        plan: Plan,
        now: datetime,
        paused: dict[str, str],
        gates: dict[str, GateInputs],
    ) -> None:
        """Counters and conditions per policy, from the nodes as they are after admission;
        ``Paused`` names the watchdog that holds a ``pauseWhen`` policy, ``Halted`` says
        why a control-plane rotation stopped."""
        waiting: dict[str, int] = {}
        deadlocked: dict[str, int] = {}
        for decision in plan.decisions:
            policy_name = decision.candidate.policy
            if decision.deadlock is not None:
                deadlocked[policy_name] = deadlocked.get(policy_name, 0) + 1
            elif decision.action == "wait" and decision.remediation is None:
                waiting[policy_name] = waiting.get(policy_name, 0) + 1
        for policy in policies:
            name = policy.metadata.name
            mine = [
                n for n in nodes if n.in_pipeline and n.annotations.get(POLICY_ANNOTATION) == name
            ]
            selected = sum(1 for n in mine if n.state == SELECTED)
            blocked = [n for n in mine if n.annotations.get(BLOCKED_ANNOTATION)]
            self.metrics.in_flight.labels(policy=name).set(len(mine))
            self.metrics.completed.labels(policy=name)  # 0 until the policy's first node goes
            counts = {
                "selected": selected,
                "inFlight": len(mine),
                "blocked": len(blocked),
                "deadlocked": deadlocked.get(name, 0),
                "observedGeneration": policy.metadata.generation,
            }
            blocked_text = "; ".join(
                f"{n.name}: {n.annotations[BLOCKED_ANNOTATION]}" for n in blocked[:5]
            )
            holder = paused.get(name)
            chain = plan.breakers.get(name)
            summary = (
                counts,
                blocked_text,
                waiting.get(name, 0),
                deadlocked.get(name, 0),
                holder,
                gates.get(name),
                chain.summary() if chain is not None else None,
            )
            if self._written_status.get(name) == summary:
                continue
            condition = ConditionWriter(
                policy.status.conditions if policy.status else [], policy.metadata.generation, now
            )
            conditions = [
                condition(
                    "Progressing",
                    bool(mine),
                    "NodesInFlight" if mine else "Idle",
                    f"{len(mine)} node(s) in the pipeline, "
                    f"{waiting.get(name, 0)} waiting on budgets, "
                    f"{deadlocked.get(name, 0)} held by a PDB that can never allow a drain",
                ),
                condition(
                    "Blocked",
                    bool(blocked),
                    "DrainBlocked" if blocked else "NotBlocked",
                    blocked_text or "no node is blocked",
                ),
                condition(
                    "Paused",
                    holder is not None,
                    "PausedByWatchdog" if holder else "NotPaused",
                    f"watchdog {holder} is failing: no new node is selected; nodes in the "
                    "pipeline finish"
                    if holder
                    else "no watchdog named in pauseWhen is failing",
                ),
            ]
            if chain is not None:
                conditions.append(_remediation_condition(condition, chain))
            status: dict[str, object] = {**counts, "conditions": conditions}
            gate = gates.get(name)
            if gate is not None:
                conditions.append(_halted_condition(condition, gate, policy))
                status["controlPlane"] = gate.state.to_status()
            await self.writes.patch_status(TerminationPolicy, name, status)
            self._written_status[name] = summary


def _remediation_condition(condition: ConditionWriter, chain: Breaker) -> dict[str, object]:
    """``RemediationPaused``: where the breaker holds remediation, with the counts."""
    tripped = chain.tripped()
    if any(t.zone is None for t in tripped):
        reason = "GroupUnhealthy"
    elif tripped:
        reason = "ZoneUnhealthy"
    else:
        reason = "NotPaused"
    return condition("RemediationPaused", bool(tripped), reason, chain.summary())


def _where(scope: tuple[str, str | None]) -> str:
    group, zone = scope
    return f"group {group or '(no group)'}" + ("" if zone is None else f", zone {zone}")


def _halted_condition(
    condition: ConditionWriter, gate: GateInputs, policy: TerminationPolicy
) -> dict[str, object]:
    bake = policy.spec.control_plane.bake_time
    halted = gate.state.halted
    return condition(
        "Halted",
        halted is not None,
        "HealthGateFailed" if halted else "NotHalted",
        f"{halted}; no control-plane node is selected until the health gate has passed "
        f"for {bake} without a break"
        if halted
        else "the control-plane health gate has not failed during a bake",
    )


def _next_pass(gate: GateInputs, now: datetime) -> float:
    """How soon a policy's control-plane rotation needs selection again."""
    state = gate.state
    end = baking_until(state, now, gate.bake)
    due = [CONTROL_PLANE_PASS_SECONDS] if state.halted or end is not None else []
    if end is not None:
        due.append((end - now).total_seconds() + 0.05)
    if state.halted and state.healthy_since is not None:
        due.append((state.healthy_since + gate.bake - now).total_seconds() + 0.05)
    return max(0.05, min(due)) if due else math.inf
