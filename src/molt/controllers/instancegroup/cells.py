"""The instance-group controller: sizes each group's cells, rolls out new revisions, rolls
back failing ones, routes around cells out of capacity and collects garbage.

One reconcile of a group:

1. **Observe** the provider's cells (instances, desired sizes, failed launches).
2. **Health**, judged per cell (``molt.policy.health``): a failed launch, an instance
   that is not a Ready node within ``readyTimeout`` and a young node NotReady for
   ``notReadyFor`` each count once against their cell, and the failed instance is
   terminated; the cell rests for that revision like a cell out of capacity (an Event
   says so) and its share moves. NotReady striking several cells at once is reported as
   an infrastructure event and counted nowhere. A revision is Degraded only when more
   than one of its cells (or its only one) is past ``failureThreshold`` within
   ``window``: an Event says why, capacity returns to the previous revision, and the
   revision is tried again after a backoff. A capacity failure rests its cell for
   ``capacityCooldown``, doubling while it stays short.
3. **Scale** the target revision's cells: the desired size split evenly over zones and
   capacity types (``molt.policy.cells``), within the strategy's surge
   (``molt.policy.rollout``), around resting cells. A cell that answers with a capacity
   error rests at once and its share moves in the same reconcile. Other revisions' cells
   never grow; a degraded revision's instances that never joined are terminated. Nodes
   NotReady on their own past ``notReadyFor`` hold no surge.
4. **Select** the nodes to replace (other revisions, surplus, and nodes no policy covers
   past the group's ``maxNodeAge``) into the termination pipeline, at the pace the
   strategy (for age, the default budget) allows; the pipeline drains them once the group
   can spare them (``PipelineReconciler`` asks ``available_without``).
5. **Collect**: nodes whose instance is gone are deleted; empty cells of other revisions
   are removed.
6. **Report** the status (written only when it changes) and the group's metrics
   (``molt.controllers.instancegroup.gauges``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog

from molt.api.durations import parse_duration
from molt.api.instancegroup import Health, InstanceGroup, Template
from molt.api.labels import REASON_ANNOTATION, SELECTED, SELECTED_AT_ANNOTATION, STATE_LABEL
from molt.cloud.provider import (
    CapacityError,
    CellObservation,
    CellRef,
    Instance,
    Provider,
    ProviderError,
)
from molt.controllers.instancegroup.gauges import GroupMetrics, routed_share
from molt.controllers.instancegroup.memory import GroupMemory
from molt.controllers.instancegroup.status import (
    CellFigures,
    group_status,
    without_times,
)
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.cells import CellKey, split_capacity, template_revision
from molt.policy.group_age import aged_out
from molt.policy.health import (
    NotReadyNode,
    degraded_backoff,
    judge_not_ready,
    judge_revision,
    struck_at_once,
)
from molt.policy.rollout import (
    Replacement,
    cell_targets,
    rollout_replacements,
    strategy_of,
    target_staying,
)
from molt.policy.selection import covers
from molt.policy.snapshot import NodeView
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

BUSY_REQUEUE = 5.0
"""Node changes in the group requeue it sooner; this is the backstop."""
IDLE_REQUEUE = 30.0
DEGRADED_RETRY_CAP = timedelta(hours=8)
"""A degraded revision is tried again after the window, doubling, at most this long."""


def not_ready_since(node: NodeView, now: datetime) -> datetime:
    """When the node's Ready condition last changed (it is not True now)."""
    for condition in node.conditions:
        if condition.type == "Ready" and condition.last_transition is not None:
            return condition.last_transition
    return now


def dead_nodes(
    members: Sequence[NodeView],
    now: datetime,
    not_ready_for: timedelta,
    struck_before: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """Nodes NotReady for at least ``not_ready_for`` on their own (a zone down, a node
    lost): they serve nothing, so they hold no surge and are replaced first. A blink is
    not this, and neither is NotReady that struck several cells at once."""
    down = [
        NotReadyNode(n.name, n.cell, not_ready_since(n, now), young=False)
        for n in members
        if not n.ready
    ]
    struck = struck_at_once(down, len(members), struck_before=struck_before)
    return frozenset(
        n.name for n in down if n.name not in struck and now - n.since >= not_ready_for
    )


class NodeIndex:
    """Finds the Node an instance became: by providerID, else by the name it was given."""

    def __init__(self, members: Sequence[NodeView]) -> None:
        self.by_name = {n.name: n for n in members}
        self.by_provider_id = {n.provider_id: n for n in members if n.provider_id}

    def node_for(self, instance: Instance) -> NodeView | None:
        if instance.provider_id:
            found = self.by_provider_id.get(instance.provider_id)
            if found is not None:
                return found
        return self.by_name.get(instance.node_name) if instance.node_name else None

    def ready(self, instance: Instance) -> bool:
        node = self.node_for(instance)
        return node is not None and node.ready


class CellReconciler:
    """Reconciles one InstanceGroup at a time (key: the group's name)."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        providers: dict[str, Provider],
        metrics: Metrics | None = None,
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.providers = providers
        self.metrics = GroupMetrics(metrics or Metrics(), clock.now())
        self._memory: dict[str, GroupMemory] = {}
        self._written: dict[str, dict[str, object]] = {}

    def memory(self, name: str) -> GroupMemory | None:
        return self._memory.get(name)

    async def reconcile(self, name: str) -> float | None:
        if not self.reads.synced():
            return 1.0
        group = self.reads.instance_group(name)
        if group is None:
            self._memory.pop(name, None)
            self._written.pop(name, None)
            self.metrics.forget(name)
            return None
        now = self.clock.now()
        memory = self._memory.get(name)
        if memory is None:
            memory = self._memory[name] = GroupMemory.from_status(group.status)
        members = self.reads.group_nodes(name)
        provider = self.providers.get(group.spec.provider)
        template_rev = template_revision(group.spec.template)
        busy = False
        cells: list[CellFigures] = []
        if provider is not None:
            try:
                observations = await provider.observe(name)
            except ProviderError as error:
                log.warning("group.observe_failed", group=name, error=str(error))
                await self.writes.record_group_event(
                    name, "ProviderUnavailable", f"cannot list cells: {error}", warning=True
                )
                return IDLE_REQUEUE
            self.metrics.observed(name, observations)
            await self._count_failures(group, memory, observations, now)
            index = NodeIndex(members)
            self._measure_host_init(name, memory, observations, members, index, now)
            collected = await self._collect_instances(
                group, provider, memory, observations, members, index, now
            )
            await self._judge(group, memory, observations, now)
            target = memory.follow_template(template_rev, group.spec.template)
            if collected:  # instances or nodes went: look again before sizing
                observations = await provider.observe(name)
                members = self.reads.group_nodes(name)
                index = NodeIndex(members)
            cells, busy = await self._scale(
                group, provider, memory, target, members, index, observations, now
            )
            busy = await self._select(group, memory, target, members, now) or busy
            await self._remove_empty_cells(provider, memory, target, observations)
        else:
            memory.follow_template(template_rev, group.spec.template)
        memory.rests_for(None, now)  # forget rests that ran out, before they are reported
        status = group_status(group, members, memory, template_rev, cells, now)
        spec = group.spec
        target_rev = memory.current or template_rev
        self.metrics.publish(
            name,
            status,
            members,
            routed_share(
                spec.desired_replicas,
                spec.zones,
                spec.capacity,
                memory.resting_cells(now, target_rev),
            )
            if provider is not None
            else {},
        )
        comparable = without_times(status)
        if self._written.get(name) != comparable:
            await self.writes.patch_group_status(name, status)
            self._written[name] = comparable
        settled = status["state"] in ("Ready", "Degraded") and not busy
        wait = IDLE_REQUEUE if settled else BUSY_REQUEUE
        wake = memory.next_wake()
        if wake is not None:
            wait = min(wait, max(0.5, (wake - now).total_seconds()))
        return wait

    def _measure_host_init(
        self,
        name: str,
        memory: GroupMemory,
        observations: list[CellObservation],
        members: Sequence[NodeView],
        index: NodeIndex,
        now: datetime,
    ) -> None:
        """Launch to Ready, for nodes Ready for the first time (before ``seen_ready``
        learns them in ``_collect_instances``)."""
        fresh = [m for m in members if m.ready and m.name not in memory.seen_ready]
        if not fresh:
            return
        launched: dict[str, datetime] = {}
        for observation in observations:
            for instance in observation.instances:
                node = index.node_for(instance)
                if node is not None and instance.launched_at is not None:
                    launched[node.name] = instance.launched_at
        self.metrics.became_ready(name, fresh, launched, now)

    # Health.

    async def _count_failures(
        self,
        group: InstanceGroup,
        memory: GroupMemory,
        observations: list[CellObservation],
        now: datetime,
    ) -> None:
        name = group.metadata.name
        window = parse_duration(group.spec.health.window)
        memory.forget_counted_before(now - window)
        for observation in observations:
            cell = observation.cell
            key = CellKey(cell.zone, cell.capacity_type)
            for instance in observation.instances:
                launched = instance.launched_at
                if launched is not None and now - launched <= window:
                    memory.record_launch(cell.revision, key, instance.instance_id, launched)
                    memory.launched_in(key, launched)
            for failure in observation.failures:
                if now - failure.at > window:
                    continue
                launch = f"{cell} {format_rfc3339(failure.at)} {failure.message}"
                if launch in memory.counted:
                    continue  # the provider lists its recent failures on every observation
                memory.counted[launch] = failure.at
                self.metrics.failed(name, key)
                if failure.capacity:
                    await self._rest(name, memory, key, now)
                    continue
                memory.record_failure(cell.revision, key, launch, failure.at)
                await self._rest_unhealthy(
                    group,
                    memory,
                    cell.revision,
                    key,
                    now,
                    f"a launch failed: {failure.message}",
                )
                await self.writes.record_group_event(
                    name,
                    "LaunchFailed",
                    f"revision {cell.revision} in {cell.zone}/{cell.capacity_type}: "
                    f"{failure.message}",
                    warning=True,
                )

    async def _rest(self, name: str, memory: GroupMemory, cell: CellKey, now: datetime) -> None:
        group = self.reads.instance_group(name)
        health = group.spec.health if group else Health()
        fresh = cell not in memory.resting
        until = memory.rest_short(
            cell, now, parse_duration(health.capacity_cooldown), parse_duration(health.window)
        )
        if fresh:
            await self.writes.record_group_event(
                name,
                "CellUnavailable",
                f"cell {cell} is out of capacity; its share moves to other cells until "
                f"{format_rfc3339(until)}",
                warning=True,
            )
            log.info("group.cell_resting", group=name, cell=str(cell), until=format_rfc3339(until))

    async def _rest_unhealthy(
        self,
        group: InstanceGroup,
        memory: GroupMemory,
        revision: str,
        cell: CellKey,
        now: datetime,
        why: str,
    ) -> None:
        """Rest a cell of ``revision`` after a failure there, as if it were out of capacity,
        unless it is the revision's last open cell (resting it would launch nowhere, and
        the verdict needs the launches)."""
        spec = group.spec
        name = group.metadata.name
        resting = memory.resting_cells(now, revision)
        cells = split_capacity(spec.desired_replicas, list(spec.zones), spec.capacity).cells
        open_elsewhere = [k for k in cells if k != cell and k not in resting]
        if not open_elsewhere or revision in memory.degraded:
            return
        until = now + parse_duration(spec.health.capacity_cooldown)
        fresh = cell not in resting
        memory.rest_unhealthy(revision, cell, until)
        if fresh:
            await self.writes.record_group_event(
                name,
                "CellUnhealthy",
                f"cell {cell} of revision {revision} rests until {format_rfc3339(until)} ({why}); "
                "its share moves to other cells",
                warning=True,
            )
            log.info(
                "group.cell_unhealthy",
                group=name,
                cell=str(cell),
                revision=revision,
                until=format_rfc3339(until),
            )

    async def _collect_instances(
        self,
        group: InstanceGroup,
        provider: Provider,
        memory: GroupMemory,
        observations: list[CellObservation],
        members: Sequence[NodeView],
        index: NodeIndex,
        now: datetime,
    ) -> bool:
        """Terminate instances that never became Ready nodes; delete nodes whose instance is
        gone; count young nodes NotReady for too long. True when an instance or node went."""
        name = group.metadata.name
        health = group.spec.health
        ready_timeout = parse_duration(health.ready_timeout)
        window = parse_duration(health.window)
        matched: set[str] = set()
        collected = False
        names = {member.name for member in members}
        memory.seen_ready &= names  # nodes that went are forgotten
        memory.excused &= names
        for member in members:
            if member.ready:
                memory.seen_ready.add(member.name)
                memory.excused.discard(member.name)
        not_ready: list[NotReadyNode] = []
        launches: dict[str, tuple[CellRef, Instance]] = {}
        for observation in observations:
            for instance in observation.instances:
                node = index.node_for(instance)
                if node is not None:
                    matched.add(node.name)
                launched = instance.launched_at
                young = launched is not None and now - launched <= ready_timeout + window
                if node is not None and node.ready:
                    continue
                if node is not None and node.name in memory.seen_ready:
                    # Joined and was Ready once: judged below, with the whole group's NotReady.
                    not_ready.append(
                        NotReadyNode(
                            node.name,
                            CellKey(observation.cell.zone, observation.cell.capacity_type),
                            not_ready_since(node, now),
                            young and not node.in_pipeline,
                            observation.cell.revision,
                        )
                    )
                    launches[node.name] = (observation.cell, instance)
                    continue
                if node is not None and node.in_pipeline:
                    continue
                if launched is None or not young:
                    continue  # an old instance: its health is the policies' business
                if now - launched <= ready_timeout:
                    continue
                await provider.terminate_instance(observation.cell, instance.instance_id)
                if node is not None:
                    await self.writes.delete_node(node.name)
                collected = True
                cell = observation.cell
                key = CellKey(cell.zone, cell.capacity_type)
                memory.record_failure(cell.revision, key, instance.instance_id, now)
                self.metrics.failed(name, key)
                await self._rest_unhealthy(
                    group, memory, cell.revision, key, now, "a node was not Ready in time"
                )
                await self.writes.record_group_event(
                    name,
                    "InstanceNotReady",
                    f"instance {instance.instance_id} (revision {cell.revision}, "
                    f"{cell.zone}/{cell.capacity_type}) was not a Ready "
                    f"node within {health.ready_timeout}: terminated",
                    warning=True,
                )
        if await self._judge_not_ready(
            group, memory, not_ready, launches, len(members), provider, now
        ):
            collected = True
        for node in members:
            if node.provider_id is None or node.name in matched:
                if node.name in memory.missing:
                    del memory.missing[node.name]
                continue
            memory.missing[node.name] += 1
            if memory.missing[node.name] >= 2:
                # Listed by no cell twice running: the instance is gone (e.g. reclaimed).
                if await self.writes.delete_node(node.name):
                    collected = True
                    await self.writes.record_group_event(
                        name,
                        "InstanceGone",
                        f"deleted node {node.name}: its instance no longer exists",
                        warning=True,
                    )
                memory.missing.pop(node.name, None)
        return collected

    async def _judge_not_ready(
        self,
        group: InstanceGroup,
        memory: GroupMemory,
        not_ready: list[NotReadyNode],
        launches: dict[str, tuple[CellRef, Instance]],
        group_size: int,
        provider: Provider,
        now: datetime,
    ) -> bool:
        """Count young nodes NotReady past ``notReadyFor`` against their cell, once per
        launch, and replace them; report NotReady that struck several cells at once, and
        count it nowhere. True when a node went."""
        name = group.metadata.name
        not_ready_for = parse_duration(group.spec.health.not_ready_for)
        verdict = judge_not_ready(
            not_ready, group_size, now, not_ready_for, struck_before=frozenset(memory.struck)
        )
        memory.struck = set(verdict.struck)
        fresh = [n for n in verdict.excused if n not in memory.excused]
        if fresh:
            memory.excused.update(fresh)
            cells = sorted({str(n.cell) for n in not_ready})
            message = (
                f"{len(not_ready)} node(s) went NotReady at once across {', '.join(cells)}: "
                "an infrastructure event, counted against no cell or revision"
            )
            await self.writes.record_group_event(name, "NodesNotReady", message, warning=True)
            log.warning("group.not_ready_burst", group=name, nodes=len(not_ready), cells=cells)
        collected = False
        for node_name in verdict.failing:
            cell, instance = launches[node_name]
            key = CellKey(cell.zone, cell.capacity_type)
            memory.record_failure(cell.revision, key, instance.instance_id, now)
            self.metrics.failed(name, key)
            await self._rest_unhealthy(
                group, memory, cell.revision, key, now, f"{node_name} stayed NotReady"
            )
            # A young node that died on its own serves nothing and never will: it goes like
            # an instance that never became Ready, and its share is launched elsewhere.
            await provider.terminate_instance(cell, instance.instance_id)
            await self.writes.delete_node(node_name)
            collected = True
            await self.writes.record_group_event(
                name,
                "NodeNotReady",
                f"{node_name} (revision {cell.revision}, {key}) has been NotReady for "
                f"{group.spec.health.not_ready_for} soon after joining: terminated",
                warning=True,
            )
        return collected

    async def _judge(
        self,
        group: InstanceGroup,
        memory: GroupMemory,
        observations: list[CellObservation],
        now: datetime,
    ) -> None:
        """Degrade revisions whose failures span their cells; retry degraded ones whose
        backoff has run out."""
        health = group.spec.health
        name = group.metadata.name
        window = parse_duration(health.window)
        for revision in list(memory.degraded):
            until = memory.degraded_until.setdefault(revision, now + window)
            if until > now:
                continue
            del memory.degraded[revision]
            del memory.degraded_until[revision]
            memory.forget_health(revision)
            await self.writes.record_group_event(
                name,
                "RevisionRetried",
                f"revision {revision} was degraded {memory.times_degraded[revision]} time(s); "
                "trying it again",
            )
            log.info("group.degraded_retry", group=name, revision=revision)
        spec = group.spec
        group_cells = len(
            split_capacity(spec.desired_replicas, list(spec.zones), spec.capacity).cells
        )
        for revision in sorted(set(memory.failures) | set(memory.launches)):
            records = memory.cell_records(revision, now, window)  # also forgets old launches
            if revision in memory.degraded or not any(r.failures for r in records.values()):
                continue
            verdict = judge_revision(records, health.failure_threshold, group_cells)
            if not verdict.degraded:
                continue
            why = f"{verdict.why} within {health.window}"
            memory.degraded[revision] = why
            memory.times_degraded[revision] += 1
            retry = degraded_backoff(memory.times_degraded[revision], window, DEGRADED_RETRY_CAP)
            memory.degraded_until[revision] = now + retry
            back_to = memory.previous if memory.can_roll_back(revision) else None
            if back_to:
                self.metrics.rolled_back(name)
            action = (
                f"rolling back to revision {back_to}"
                if back_to
                else "no previous revision to return to: the group keeps its size from it"
            )
            await self.writes.record_group_event(
                name,
                "RevisionDegraded",
                f"revision {revision} is degraded: {why}; {action}; tried again at "
                f"{format_rfc3339(now + retry)}",
                warning=True,
            )
            log.warning("group.degraded", group=name, revision=revision, why=why)

    # Capacity.

    async def _scale(
        self,
        group: InstanceGroup,
        provider: Provider,
        memory: GroupMemory,
        target: str,
        members: Sequence[NodeView],
        index: NodeIndex,
        observations: list[CellObservation],
        now: datetime,
    ) -> tuple[list[CellFigures], bool]:
        """Set every cell's desired size; returns the target cells and whether work is pending."""
        name = group.metadata.name
        spec = group.spec
        desired = spec.desired_replicas
        strategy = strategy_of(group)
        template = memory.templates.get(target, spec.template)
        dead = dead_nodes(
            members, now, parse_duration(spec.health.not_ready_for), frozenset(memory.struck)
        )
        instances: Counter[tuple[str, CellKey]] = Counter()
        other_instances = 0
        ready_at_target = 0
        pending = False
        for observation in observations:
            cell = observation.cell
            key = CellKey(cell.zone, cell.capacity_type)
            instances[(cell.revision, key)] += len(observation.instances)
            for instance in observation.instances:
                ready = index.ready(instance)
                pending = pending or not ready
                if cell.revision == target:
                    ready_at_target += ready
                    continue
                if cell.revision in memory.degraded and not ready:
                    continue  # dead weight: it will never serve, so it holds no surge
                node = index.node_for(instance)
                if node is not None and node.name in dead:
                    continue  # NotReady past notReadyFor (a zone down): it serves nothing
                other_instances += 1
        leaving = Counter((n.revision or "unknown", n.cell) for n in members if n.in_pipeline)
        leaving_at_target = sum(c for (rev, _), c in leaving.items() if rev == target)
        staying = target_staying(
            desired, strategy, other_instances, leaving_at_target, spec.max_size
        )
        if target in memory.degraded:
            # Nothing healthy to return to: keep the group at size from this revision, but
            # with one unproven launch at a time, so a broken template costs one instance
            # per readyTimeout rather than a full set.
            staying = min(staying, ready_at_target + 1)
        # Shrink the pending launches of other revisions; terminate a degraded revision's
        # instances that never joined.
        for observation in observations:
            cell = observation.cell
            if cell.revision == target:
                continue
            if cell.revision in memory.degraded:
                for instance in observation.instances:
                    if index.node_for(instance) is None:  # never joined, never will
                        await provider.terminate_instance(cell, instance.instance_id)
                        instances[(cell.revision, CellKey(cell.zone, cell.capacity_type))] -= 1
            have = instances[(cell.revision, CellKey(cell.zone, cell.capacity_type))]
            if observation.desired > have:
                await self._shrink(
                    provider, cell, memory.templates.get(cell.revision, template), have
                )
        by_cell = {o.cell: o for o in observations if o.cell.revision == target}
        figures: list[CellFigures] = []
        for _ in range(8):  # each pass rests at least one more cell, or finishes
            resting = memory.resting_cells(now, target)
            plan = split_capacity(staying, list(spec.zones), spec.capacity, resting)
            targets = cell_targets(
                plan,
                Counter({key: c for (rev, key), c in leaving.items() if rev == target}),
                Counter({key: c for (rev, key), c in instances.items() if rev == target}),
                resting,
            )
            figures = []
            retry = False
            for key, want in sorted(targets.items()):
                cell = CellRef(name, target, key.zone, key.capacity_type)
                have = instances[(target, key)]
                figures.append(CellFigures(key, want))
                observed = by_cell.get(cell)
                if observed is not None and observed.desired == want and have >= want:
                    continue
                if observed is None and want == 0:
                    continue
                try:
                    await provider.scale(cell, template, want)
                except CapacityError:
                    self.metrics.failed(name, key)
                    await self._rest(name, memory, key, now)
                    retry = True
                    break
                except ProviderError as error:
                    memory.record_failure(target, key, f"scale {format_rfc3339(now)}", now)
                    self.metrics.failed(name, key)
                    await self.writes.record_group_event(
                        name, "ScaleFailed", f"cell {cell}: {error}", warning=True
                    )
                pending = pending or want > have
            if not retry:
                break
        return figures, pending

    async def _shrink(
        self, provider: Provider, cell: CellRef, template: Template, size: int
    ) -> None:
        """Drop a cell's launches still to come (never below the instances it holds)."""
        try:
            await provider.scale(cell, template, size)
        except ProviderError as error:
            log.warning("group.shrink_failed", cell=str(cell), error=str(error))

    # Replacement.

    async def _select(
        self,
        group: InstanceGroup,
        memory: GroupMemory,
        target: str,
        members: Sequence[NodeView],
        now: datetime,
    ) -> bool:
        """Put the nodes the rollout replaces next into the pipeline; True if any remain."""
        spec = group.spec
        if target in memory.degraded:
            return False  # frozen: replacing nodes now would only lose capacity
        # The share every cell would have with capacity everywhere: a resting cell's nodes
        # are never drained for being there, only moved back once it can launch again.
        ideal = split_capacity(spec.desired_replicas, list(spec.zones), spec.capacity)
        picks = rollout_replacements(
            members,
            target,
            spec.desired_replicas,
            strategy_of(group),
            ideal.cells,
            frozenset(memory.degraded),
            memory.resting_cells(now, target),
            dead_nodes(
                members, now, parse_duration(spec.health.not_ready_for), frozenset(memory.struck)
            ),
        )
        if not picks:
            # The group's own maxNodeAge, for the nodes no TerminationPolicy covers (a
            # covered node is aged by its policy, with the smaller limit).
            policies = self.reads.policies()
            covered = {n.name for n in members if any(covers(p, n) for p in policies)}
            aged = aged_out(members, parse_duration(spec.max_node_age), covered, now)
            picks = [Replacement(a.node, a.reason) for a in aged]
        stamp = format_rfc3339(now)
        for pick in picks:
            node = pick.node
            changed = await self.writes.patch_node(
                node.name,
                labels={STATE_LABEL: SELECTED},
                annotations={REASON_ANNOTATION: pick.reason, SELECTED_AT_ANNOTATION: stamp},
            )
            if changed:
                await self.writes.record_event(
                    node,
                    "Selected",
                    f"selected by instance group {group.metadata.name}: {pick.reason}",
                )
                log.info("group.selected", node=node.name, reason=pick.reason)
        return bool(picks) or any(n.in_pipeline or n.revision != target for n in members)

    async def _remove_empty_cells(
        self,
        provider: Provider,
        memory: GroupMemory,
        target: str,
        observations: list[CellObservation],
    ) -> None:
        for observation in observations:
            cell = observation.cell
            if cell.revision == target or observation.instances or observation.desired:
                continue
            try:
                await provider.delete_cell(cell)
            except ProviderError as error:
                log.warning("group.cell_not_removed", cell=str(cell), error=str(error))
                continue
            log.info("group.cell_removed", cell=str(cell))
            if cell.revision not in (memory.current, memory.previous):
                memory.templates.pop(cell.revision, None)
