"""The instance-group controller: sizes each group's cells, rolls out new revisions, rolls
back failing ones, routes around cells out of capacity and collects garbage.

One reconcile of a group:

1. **Observe** the provider's cells (instances, desired sizes, failed launches).
2. **Health**: a failed launch counts against its revision; so does an instance that is
   not a Ready node within ``readyTimeout`` (it is terminated) and a young node that goes
   NotReady. A capacity failure instead rests its cell for ``capacityCooldown``. When a
   revision's failures within ``window`` pass ``failureThreshold`` it is Degraded: an
   Event says why, and capacity returns to the previous revision.
3. **Scale** the target revision's cells: the desired size split evenly over zones and
   capacity types (``molt.policy.cells``), within the strategy's surge
   (``molt.policy.rollout``), around resting cells. A cell that answers with a capacity
   error rests at once and its share moves in the same reconcile. Other revisions' cells
   never grow; a degraded revision's instances that never joined are terminated.
4. **Select** the nodes to replace (other revisions, surplus) into the termination
   pipeline, at the pace the strategy allows; the pipeline drains them once the group
   can spare them (``PipelineReconciler`` asks ``available_without``).
5. **Collect**: nodes whose instance is gone are deleted; empty cells of other revisions
   are removed.
6. **Report** the status (written only when it changes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import structlog

from molt.api.durations import parse_duration
from molt.api.instancegroup import InstanceGroup, Template
from molt.cloud.provider import (
    CapacityError,
    CellObservation,
    CellRef,
    Instance,
    Provider,
    ProviderError,
)
from molt.controllers.instancegroup.memory import GroupMemory
from molt.controllers.instancegroup.status import (
    CellFigures,
    group_status,
    without_times,
)
from molt.controllers.termination.progress import SELECTED
from molt.policy.age import format_rfc3339
from molt.policy.cells import CellKey, revision_degraded, split_capacity, template_revision
from molt.policy.rollout import (
    cell_targets,
    rollout_replacements,
    strategy_of,
    target_staying,
)
from molt.policy.snapshot import (
    REASON_ANNOTATION,
    SELECTED_AT_ANNOTATION,
    STATE_LABEL,
    NodeView,
)
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

BUSY_REQUEUE = 5.0
"""Node changes in the group requeue it sooner; this is the backstop."""
IDLE_REQUEUE = 30.0
MIN_FAILURES_FOR_RATE = 2
"""A percentage threshold needs at least this many failures: one bad launch is noise."""


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
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.providers = providers
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
            await self._count_failures(group, memory, observations, now)
            index = NodeIndex(members)
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
        memory.resting_cells(now)
        status = group_status(group, members, memory, template_rev, cells, now)
        comparable = without_times(status)
        if self._written.get(name) != comparable:
            await self.writes.patch_group_status(name, status)
            self._written[name] = comparable
        settled = status["state"] in ("Ready", "Degraded") and not busy
        wait = IDLE_REQUEUE if settled else BUSY_REQUEUE
        if memory.resting:
            wait = min(wait, max(0.5, min(memory.resting.values()).timestamp() - now.timestamp()))
        return wait

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
            for failure in observation.failures:
                key = (str(cell), failure.at, failure.message)
                if key in memory.counted or now - failure.at > window:
                    continue
                memory.counted.add(key)
                if failure.capacity:
                    await self._rest(name, memory, CellKey(cell.zone, cell.capacity_type), now)
                    continue
                memory.record_failure(cell.revision, failure.at)
                await self.writes.record_group_event(
                    name,
                    "LaunchFailed",
                    f"revision {cell.revision} in {cell.zone}/{cell.capacity_type}: "
                    f"{failure.message}",
                    warning=True,
                )

    async def _rest(self, name: str, memory: GroupMemory, cell: CellKey, now: datetime) -> None:
        group = self.reads.instance_group(name)
        cooldown = parse_duration(group.spec.health.capacity_cooldown if group else "3m")
        until = now + cooldown
        fresh = cell not in memory.resting
        memory.rest(cell, until)
        if fresh:
            await self.writes.record_group_event(
                name,
                "CellUnavailable",
                f"cell {cell} is out of capacity; its share moves to other cells until "
                f"{format_rfc3339(until)}",
                warning=True,
            )
            log.info("group.cell_resting", group=name, cell=str(cell), until=format_rfc3339(until))

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
        gone; note young nodes that went NotReady. True when an instance or node went."""
        name = group.metadata.name
        health = group.spec.health
        ready_timeout = parse_duration(health.ready_timeout)
        window = parse_duration(health.window)
        matched: set[str] = set()
        collected = False
        for member in members:
            if member.ready:
                memory.seen_ready.add(member.name)
        for observation in observations:
            for instance in observation.instances:
                node = index.node_for(instance)
                if node is not None:
                    matched.add(node.name)
                    if node.in_pipeline or node.ready:
                        continue
                launched = instance.launched_at
                if launched is None or now - launched > ready_timeout + window:
                    continue  # an old instance: its health is the policies' business
                if node is not None and node.name in memory.seen_ready:
                    if node.name not in memory.flapped:
                        memory.flapped.add(node.name)
                        memory.record_failure(observation.cell.revision, now)
                        await self.writes.record_group_event(
                            name,
                            "NodeNotReady",
                            f"{node.name} (revision {observation.cell.revision}) went NotReady "
                            "soon after joining",
                            warning=True,
                        )
                    continue
                if now - launched <= ready_timeout:
                    continue
                await provider.terminate_instance(observation.cell, instance.instance_id)
                if node is not None:
                    await self.writes.delete_node(node.name)
                collected = True
                memory.record_failure(observation.cell.revision, now)
                await self.writes.record_group_event(
                    name,
                    "InstanceNotReady",
                    f"instance {instance.instance_id} (revision {observation.cell.revision}, "
                    f"{observation.cell.zone}/{observation.cell.capacity_type}) was not a Ready "
                    f"node within {health.ready_timeout}: terminated",
                    warning=True,
                )
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

    async def _judge(
        self,
        group: InstanceGroup,
        memory: GroupMemory,
        observations: list[CellObservation],
        now: datetime,
    ) -> None:
        health = group.spec.health
        window = parse_duration(health.window)
        for revision in list(memory.failure_times):
            failures = memory.failures_within(revision, now, window)
            if revision in memory.degraded or failures == 0:
                continue
            launches = failures + sum(
                1
                for observation in observations
                if observation.cell.revision == revision
                for instance in observation.instances
                if instance.launched_at is not None and now - instance.launched_at <= window
            )
            threshold = health.failure_threshold
            percent = isinstance(threshold, str) and threshold.endswith("%")
            if percent and failures < MIN_FAILURES_FOR_RATE:
                continue
            if not revision_degraded(failures, launches, threshold):
                continue
            why = (
                f"{failures} launch failure(s) in {launches} launch(es) within "
                f"{health.window} (threshold {threshold})"
            )
            memory.degraded[revision] = why
            back_to = memory.previous if memory.can_roll_back(revision) else None
            action = (
                f"rolling back to revision {back_to}"
                if back_to
                else "no previous revision to return to: the rollout stops"
            )
            await self.writes.record_group_event(
                group.metadata.name,
                "RevisionDegraded",
                f"revision {revision} is degraded: {why}; {action}",
                warning=True,
            )
            log.warning("group.degraded", group=group.metadata.name, revision=revision, why=why)

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
        instances: Counter[tuple[str, CellKey]] = Counter()
        other_instances = 0
        pending = False
        for observation in observations:
            cell = observation.cell
            key = CellKey(cell.zone, cell.capacity_type)
            instances[(cell.revision, key)] += len(observation.instances)
            for instance in observation.instances:
                ready = index.ready(instance)
                pending = pending or not ready
                if cell.revision == target:
                    continue
                if cell.revision in memory.degraded and not ready:
                    continue  # dead weight: it will never serve, so it holds no surge
                other_instances += 1
        leaving = Counter((n.revision or "unknown", n.cell) for n in members if n.in_pipeline)
        leaving_at_target = sum(c for (rev, _), c in leaving.items() if rev == target)
        staying = target_staying(
            desired, strategy, other_instances, leaving_at_target, spec.max_size
        )
        frozen = target in memory.degraded  # nothing healthy to return to: stop growing
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
            resting = memory.resting_cells(now)
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
                if frozen:
                    want = min(want, have)
                figures.append(CellFigures(key, want))
                observed = by_cell.get(cell)
                if observed is not None and observed.desired == want and have >= want:
                    continue
                if observed is None and want == 0:
                    continue
                try:
                    await provider.scale(cell, template, want)
                except CapacityError:
                    await self._rest(name, memory, key, now)
                    retry = True
                    break
                except ProviderError as error:
                    memory.record_failure(target, now)
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
            memory.resting_cells(now),
        )
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
