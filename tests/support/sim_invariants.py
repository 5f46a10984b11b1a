"""Invariants checked on every simulated run, from what the simulated cluster saw.

``InvariantMonitor`` listens to a ``Simulation`` before it runs. Each invariant counts
what it checked and what broke it (``counts``: name -> ``Tally``):

- ``budget``: a node enters the pipeline under a TerminationPolicy while one of the
  policy's budgets is already full in the node's scope (counted from the nodes the policy
  covers, as the cluster holds them at that instant);
- ``controlPlane``: a policy that does not opt in selects a control-plane node;
- ``drainedBeforeDeletion``: Molt deletes a node that still holds a pod not being deleted;
- ``maxAgeSelected``: after a selection pass, a node its policy has due (its effective
  deadline, as ``molt.policy.selection.max_age_due`` computes it, has come) is still out
  of the pipeline although nothing legitimate holds it. Legitimate: a budget full in its
  scope, a closed maintenance window (only before the hard ``maxAge``: a node past it
  goes outside windows), its policy paused by a failing watchdog, a PDB that can never
  allow its drain (judged again with the pods and PDBs as they are, or reported by the
  controller within its recheck interval; not past the hard deadline when the policy
  deletes pods then), ``do-not-disrupt`` (only before the hard deadline), and for a
  control-plane node another one in flight or the policy's bake, halt or health gate;
- ``deadlineWithinMaxAge``: a node's effective deadline lies after its hard ``maxAge``
  (the smaller of the policy's ``maxAge`` and its group's ``maxNodeAge``);
- ``selectionCadence``: two selection passes (or the last and the run's end) lie further
  apart than the resync interval and the selection floor allow;
- ``rollbackSpansCells``: an instance group judges a revision Degraded (and rolls it
  back, or freezes it) although the revision failed in fewer than two of the group's
  cells (in one, for a group of one cell), counted from the simulated cloud's ground
  truth over the health window: launches that failed for any reason but capacity, and
  nodes of the revision NotReady for ``notReadyFor`` or longer;
- ``pdb``: an eviction broke a PDB (checked: every eviction answered);
- ``controllerError``: a reconcile raised (checked: every reconcile).

``waits`` counts, by reason, the due nodes a pass legitimately left waiting, and
``singleCellFailures`` the revisions that failed in one cell only and stood: the
invariants were exercised, not vacuous.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from molt.api.durations import parse_duration
from molt.api.labels import CAPACITY_TYPE_LABEL, POLICY_ANNOTATION
from molt.api.terminationpolicy import TerminationPolicy
from molt.api.types import resolve_count_or_percent
from molt.controllers.termination.selection import DEADLOCK_RECHECK_SECONDS
from molt.policy.age import MalformedLaunchTimeError, node_age
from molt.policy.budgets import DEFAULT_BUDGET, DEFAULT_MINIMUM, scope_key, window_open
from molt.policy.cells import ON_DEMAND, split_capacity
from molt.policy.control_plane import RotationState, bake_time, hold, node_failures
from molt.policy.pdbs import find_deadlocks
from molt.policy.selection import covers, max_age_due
from molt.policy.snapshot import NodeView, Snapshot
from molt.policy.watchdog import paused_policies
from molt.sim.runner import Simulation

INVARIANTS = (
    "budget",
    "controlPlane",
    "drainedBeforeDeletion",
    "maxAgeSelected",
    "deadlineWithinMaxAge",
    "selectionCadence",
    "rollbackSpansCells",
    "pdb",
    "controllerError",
)
CADENCE_SLACK_SECONDS = 1.0
DEGRADED = re.compile(r"revision (\S+) is degraded")


@dataclass
class Tally:
    checked: int = 0
    violated: int = 0

    def add(self, other: Tally) -> None:
        self.checked += other.checked
        self.violated += other.violated


class _ListenedLog(list[tuple[float, str, str]]):
    """The simulated cloud's log, telling a listener of every entry as it is appended."""

    def __init__(
        self,
        entries: list[tuple[float, str, str]],
        listener: Callable[[tuple[float, str, str]], None],
    ) -> None:
        super().__init__(entries)
        self.listener = listener

    def append(self, entry: tuple[float, str, str]) -> None:
        super().append(entry)
        self.listener(entry)


@dataclass
class _Deadlines:
    due: datetime
    hard: datetime


@dataclass
class InvariantMonitor:
    """Watches one simulation; ``violations`` says what broke, ``counts`` what was checked."""

    sim: Simulation
    violations: list[str] = field(default_factory=list)
    counts: dict[str, Tally] = field(default_factory=lambda: {n: Tally() for n in INVARIANTS})
    waits: dict[str, int] = field(default_factory=dict)
    single_cell_failures: int = 0
    _deadlines: dict[tuple[str, str, str], _Deadlines | None] = field(default_factory=dict)
    _last_pass: float | None = None
    _not_ready_since: dict[str, float] = field(default_factory=dict)
    _troubles: list[tuple[float, str, str, str]] = field(default_factory=list)
    """(at, group, revision, zone/capacity type): a failure of a revision in a cell."""
    _events_seen: int = 0

    def __post_init__(self) -> None:
        self.sim.cluster.node_listeners.append(self._node_changed)
        cluster, cloud = self.sim.cluster, self.sim.cloud
        delete_node, terminate = cluster.delete_node, cloud.terminate

        async def checked_delete(name: str) -> bool:
            self._deleting(name)
            return await delete_node(name)

        async def checked_terminate(node: NodeView) -> None:
            self._deleting(node.name)
            await terminate(node)

        cluster.delete_node = checked_delete  # type: ignore[method-assign]
        cloud.terminate = checked_terminate  # type: ignore[method-assign]
        selection = self.sim.controller.selection
        reconcile: Callable[[], Awaitable[float]] = selection.reconcile

        async def checked_pass() -> float:
            after = await reconcile()
            await self._after_pass()
            return after

        selection.reconcile = checked_pass  # type: ignore[method-assign]
        cloud.log = _ListenedLog(cloud.log, self._cloud_logged)

    def _at(self) -> str:
        return f"{self.sim.clock.seconds:.0f}s"

    def _fail(self, invariant: str, message: str) -> None:
        self.counts[invariant].violated += 1
        self.violations.append(f"{self._at()} [{invariant}]: {message}")

    # Deletions and admissions.

    def _deleting(self, name: str) -> None:
        self.counts["drainedBeforeDeletion"].checked += 1
        left = [p.key for p in self.sim.cluster.pods_on(name) or [] if not p.deleting]
        if left:
            self._fail("drainedBeforeDeletion", f"node {name} deleted with pods {left}")

    def _node_changed(self, name: str, old: NodeView | None, new: NodeView | None) -> None:
        self._track_readiness(name, old, new)
        if new is None or not new.in_pipeline or (old is not None and old.in_pipeline):
            return
        policy_name = new.annotations.get(POLICY_ANNOTATION)
        policy = self.sim.cluster.policy(policy_name) if policy_name else None
        if policy is None:
            return  # selected by its instance group (drift, scale-down), not by a policy
        if new.is_control_plane:
            self.counts["controlPlane"].checked += 1
            if not policy.spec.include_control_plane:
                self._fail(
                    "controlPlane",
                    f"control-plane node {name} selected by {policy_name}, which does not "
                    "include the control plane",
                )
        self.counts["budget"].checked += 1
        full = self._full_budget(policy, new, admitted=True)
        if full is not None:
            self._fail("budget", f"{name} admitted with {full}")

    def _full_budget(
        self, policy: TerminationPolicy, node: NodeView, *, admitted: bool
    ) -> str | None:
        """A budget of ``policy`` with no room in the node's scope: over its allowance
        counting an ``admitted`` node, or at it counting a waiting one; or None."""
        covered = [n for n in self.sim.cluster.nodes() if covers(policy, n)]
        for budget in list(policy.spec.budgets) or [DEFAULT_BUDGET]:
            if budget.reasons and "MaxAge" not in budget.reasons:
                continue  # the generator draws no reasons; MaxAge is what is checked here
            key = scope_key(budget, node.group, node.zone)
            bucket = [n for n in covered if scope_key(budget, n.group, n.zone) == key]
            allowed = resolve_count_or_percent(budget.max_in_flight, len(bucket))
            if not policy.spec.budgets:
                allowed = max(DEFAULT_MINIMUM, allowed)
            flying = sum(1 for n in bucket if n.in_pipeline)
            if flying > allowed or (not admitted and flying >= allowed):
                return (
                    f"{flying} in flight in {key}, budget maxInFlight "
                    f"{budget.max_in_flight} allows {allowed}"
                )
        return None

    # Max age: every due node selected in one pass where nothing holds it.

    def _deadlines_of(
        self, policy: TerminationPolicy, node: NodeView, snapshot: Snapshot, now: datetime
    ) -> _Deadlines | None:
        key = (policy.metadata.name, str(policy.metadata.generation), node.name)
        if key in self._deadlines:
            return self._deadlines[key]
        found: _Deadlines | None = None
        try:
            due = max_age_due(policy, node, snapshot, now)
            launched = node_age(node, now).launched
        except MalformedLaunchTimeError:
            due = None
        if due is not None:
            limits = []
            if policy.spec.rules.max_age is not None:
                limits.append(parse_duration(policy.spec.rules.max_age))
            group = snapshot.groups.get(node.group or "")
            if group is not None and group.max_node_age_seconds is not None:
                limits.append(timedelta(seconds=group.max_node_age_seconds))
            found = _Deadlines(due, launched + min(limits))
            self.counts["deadlineWithinMaxAge"].checked += 1
            if found.due > found.hard:
                self._fail(
                    "deadlineWithinMaxAge",
                    f"{node.name}: effective deadline {due} after its hard max age {found.hard}",
                )
        self._deadlines[key] = found
        return found

    async def _after_pass(self) -> None:
        sim = self.sim
        seconds = sim.clock.seconds
        self._check_cadence(seconds)
        self._last_pass = seconds
        now = sim.clock.now()
        nodes = sim.cluster.nodes()
        snapshot = Snapshot(tuple(nodes), sim.cluster.groups())
        policies = sim.cluster.policies()
        states = {
            w.metadata.name: w.status.state if w.status else None for w in sim.cluster.watchdogs()
        }
        paused = paused_policies(policies, states)
        for node in nodes:
            if node.in_pipeline:
                continue
            due_under = []
            for policy in policies:
                if not covers(policy, node):
                    continue
                deadlines = self._deadlines_of(policy, node, snapshot, now)
                if deadlines is not None and now >= deadlines.due:
                    due_under.append((policy, deadlines))
            if not due_under:
                continue
            self.counts["maxAgeSelected"].checked += 1
            excuse = None
            for policy, deadlines in due_under:
                excuse = await self._excuse(policy, node, snapshot, now, deadlines.hard, paused)
                if excuse is not None:
                    break
            if excuse is not None:
                self.waits[excuse] = self.waits.get(excuse, 0) + 1
                continue
            policy, deadlines = due_under[0]
            self._fail(
                "maxAgeSelected",
                f"{node.name} due at {deadlines.due:%H:%M:%S} (hard max age "
                f"{deadlines.hard:%Y-%m-%d %H:%M:%S}) under {policy.metadata.name} was not "
                "selected by this pass, and no budget, window, pause, PDB deadlock, "
                "do-not-disrupt or control-plane gate held it",
            )

    async def _excuse(
        self,
        policy: TerminationPolicy,
        node: NodeView,
        snapshot: Snapshot,
        now: datetime,
        hard: datetime,
        paused: dict[str, str],
    ) -> str | None:
        """Why the node may legitimately wait under ``policy`` after a pass, or None."""
        past_hard = now >= hard
        if policy.metadata.name in paused:
            return "pausedByWatchdog"
        if node.is_control_plane:
            if any(n.is_control_plane and n.in_pipeline for n in snapshot.nodes):
                return "controlPlaneOneAtATime"
            state = RotationState.of(policy)
            failures = node_failures(snapshot, except_node=node.name)
            if hold(state, failures, now, bake_time(policy)) is not None:
                return "controlPlaneGate"
        deletes_pods = past_hard and policy.spec.drain.delete_pods_after_deadline
        if not deletes_pods and await self._deadlocked(node.name):
            return "pdbDeadlock"
        if node.do_not_disrupt and not past_hard:
            return "doNotDisrupt"
        if self._full_budget(policy, node, admitted=False) is not None:
            return "budgetFull"
        if not past_hard:
            for budget in list(policy.spec.budgets):
                if budget.reasons and "MaxAge" not in budget.reasons:
                    continue
                if not window_open(budget, now):
                    return "windowClosed"
        return None

    async def _deadlocked(self, name: str) -> bool:
        cluster = self.sim.cluster
        pods = await cluster.list_pods_now(name)
        if pods and find_deadlocks(pods, await cluster.list_pdbs_now()):
            return True
        # The controller reads a deadlock's pods and PDBs again only after its recheck
        # interval (a deadlock ended by a scaled-up Deployment is seen then).
        since = self.sim.clock.seconds - DEADLOCK_RECHECK_SECONDS - CADENCE_SLACK_SECONDS
        return any(
            e.node == name and e.reason == "PDBDeadlock" and e.at >= since
            for e in reversed(cluster.recorded[-200:])
        )

    def _check_cadence(self, seconds: float) -> None:
        if self._last_pass is None:
            return
        self.counts["selectionCadence"].checked += 1
        limit = (
            self.sim.controller.selection.resync_seconds
            + self.sim.queue.selection_floor
            + CADENCE_SLACK_SECONDS
        )
        if seconds - self._last_pass > limit:
            self._fail(
                "selectionCadence",
                f"no selection pass for {seconds - self._last_pass:.0f}s (at most {limit:.0f}s)",
            )

    # Rollbacks: only for revisions that fail in more than one cell.

    def _track_readiness(self, name: str, old: NodeView | None, new: NodeView | None) -> None:
        was = old is not None and not old.ready
        now_not_ready = new is not None and not new.ready
        seconds = self.sim.clock.seconds
        if now_not_ready and not was:
            self._not_ready_since[name] = seconds
        elif was and not now_not_ready:
            since = self._not_ready_since.pop(name, None)
            view = old
            if since is not None and view is not None:
                self._not_ready_for(view, since, seconds)

    def _not_ready_for(self, node: NodeView, since: float, until: float) -> None:
        group = self.sim.cluster.instance_group(node.group or "")
        if group is None or node.revision is None:
            return
        if until - since >= parse_duration(group.spec.health.not_ready_for).total_seconds():
            cell = f"{node.zone}/{node.labels.get(CAPACITY_TYPE_LABEL, ON_DEMAND)}"
            self._troubles.append((since, group.metadata.name, node.revision, cell))

    def _cloud_logged(self, entry: tuple[float, str, str]) -> None:
        at, kind, message = entry
        if kind != "launch-failed" or "InsufficientInstanceCapacity" in message:
            return
        ref = message.split(":", 1)[0]
        group, revision, zone, capacity_type = ref.split("/")
        self._troubles.append((at, group, revision, f"{zone}/{capacity_type}"))

    def _check_rollbacks(self) -> None:
        """Judge every RevisionDegraded against the cells the revision failed in."""
        sim = self.sim
        seconds = sim.clock.seconds
        for name, since in self._not_ready_since.items():
            view = sim.cluster.node(name)
            if view is not None:
                self._not_ready_for(view, since, seconds)
        self._not_ready_since.clear()
        degraded: set[tuple[str, str]] = set()
        for event in sim.cluster.recorded:
            if not event.node.startswith("ig/") or event.reason != "RevisionDegraded":
                continue
            found = DEGRADED.search(event.message)
            group_name = event.node[3:]
            group = sim.cluster.instance_group(group_name)
            if found is None or group is None:
                continue
            revision = found.group(1)
            degraded.add((group_name, revision))
            self.counts["rollbackSpansCells"].checked += 1
            spec, health = group.spec, group.spec.health
            lookback = (
                parse_duration(health.window)
                + parse_duration(health.ready_timeout)
                + parse_duration(health.not_ready_for)
            ).total_seconds()
            cells = {
                cell
                for at, g, r, cell in self._troubles
                if g == group_name and r == revision and event.at - lookback <= at <= event.at
            }
            group_cells = len(
                split_capacity(spec.desired_replicas, spec.zones, spec.capacity).cells
            )
            needed = min(2, max(group_cells, 1))
            if len(cells) < needed:
                self.counts["rollbackSpansCells"].violated += 1
                self.violations.append(
                    f"{event.at:.0f}s [rollbackSpansCells]: group {group_name} degraded "
                    f"revision {revision} after failures in {sorted(cells) or 'no cell'} "
                    f"(needs {needed} of its {group_cells} cells): {event.message}"
                )
        by_revision: dict[tuple[str, str], set[str]] = {}
        for _, group_name, revision, cell in self._troubles:
            by_revision.setdefault((group_name, revision), set()).add(cell)
        self.single_cell_failures = sum(
            1 for key, cells in by_revision.items() if len(cells) == 1 and key not in degraded
        )

    def check(self) -> list[str]:
        """Every violation: those seen during the run, PDBs broken, controller errors."""
        sim = self.sim
        if self._last_pass is not None:
            self._check_cadence(sim.clock.seconds)
            self._last_pass = sim.clock.seconds
        self._check_rollbacks()
        found = list(self.violations)
        self.counts["pdb"] = Tally(
            sum(sim.cluster.evictions.values()),
            sum(len(b.violations) for b in sim.cluster.budgets.values()),
        )
        for budget in sim.cluster.budgets.values():
            found.extend(f"[pdb] PDB {budget.key}: {v}" for v in budget.violations)
        self.counts["controllerError"] = Tally(sim.stats.reconciles, sim.stats.errors)
        found.extend(f"[controllerError] {m}" for m in sim.stats.error_messages)
        if sim.stats.errors > len(sim.stats.error_messages):
            found.append(f"[controllerError] {sim.stats.errors} controller errors in all")
        return found
