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
5. **Collect**: nodes whose instance is gone are deleted (with health, before sizing,
   which then looks again); empty cells of other revisions are removed (last).
6. **Report** the status (written only when it changes) and the group's metrics
   (``molt.controllers.instancegroup.gauges``).

This module only orchestrates: it builds the reconcile's ``GroupScope`` and runs the
phases over it, each in its own module (``health``, ``scaling``, ``gc``, ``status``).
"""

from __future__ import annotations

import asyncio

import structlog

from molt.api.instancegroup import InstanceGroup
from molt.cloud.provider import Provider, ProviderError
from molt.controllers.instancegroup import gc, health, scaling
from molt.controllers.instancegroup.gauges import GroupMetrics, routed_share
from molt.controllers.instancegroup.memory import GroupMemory
from molt.controllers.instancegroup.scope import GroupPorts, GroupScope
from molt.controllers.instancegroup.status import group_status, wire, without_times
from molt.observe.metrics import Metrics
from molt.policy.cells import template_revision
from molt.policy.overflow import borrowed_by
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

BUSY_REQUEUE = 5.0
"""Node changes in the group requeue it sooner; this is the backstop."""
IDLE_REQUEUE = 30.0


class CellReconciler:
    """Reconciles one InstanceGroup at a time (key: the group's name)."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        providers: dict[str, Provider],
        metrics: Metrics | None = None,
        admission: asyncio.Lock | None = None,
    ) -> None:
        self.reads = reads
        self.admission = admission or asyncio.Lock()
        """Held while the group puts nodes into the pipeline (shared with selection)."""
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
        memory = self._memory.get(name)
        if memory is None:
            memory = self._memory[name] = GroupMemory.from_status(group.status)
        scope = GroupScope(
            group,
            memory,
            self.reads.group_nodes(name),
            template_revision(group.spec.template),
            self.clock.now(),
            borrowed=borrowed_by(name, (self.reads.instance_group(g) for g in self.reads.groups())),
        )
        provider = self.providers.get(group.spec.provider)
        if provider is None:
            memory.follow_template(scope.template_revision, group.spec.template)
        elif not await self._run_phases(scope, provider):
            return IDLE_REQUEUE
        return await self._report(scope, provider)

    async def _run_phases(self, scope: GroupScope, provider: Provider) -> bool:
        """Observe the cells, then judge health, collect, scale and select; False when
        the provider cannot list the cells."""
        name = scope.name
        try:
            scope.observations = await provider.observe(name)
        except ProviderError as error:
            log.warning("group.observe_failed", group=name, error=str(error))
            await self.writes.record_resource_event(
                InstanceGroup,
                name,
                "ProviderUnavailable",
                f"cannot list cells: {error}",
                warning=True,
            )
            return False
        ports = GroupPorts(self.reads, self.writes, provider, self.metrics, self.admission)
        self.metrics.observed(name, scope.observations)
        await health.count_failures(scope, ports)
        health.measure_host_init(scope, ports)
        await health.judge_launches(scope, ports)
        await gc.collect_nodes(scope, ports)
        await health.judge_revisions(scope, ports)
        scope.target = scope.memory.follow_template(scope.template_revision, scope.spec.template)
        if scope.collected:  # instances or nodes went: look again before sizing
            scope.look_again(await provider.observe(name), self.reads.group_nodes(name))
        await scaling.scale(scope, ports)
        await scaling.select(scope, ports)
        await gc.remove_empty_cells(scope, ports)
        return True

    async def _report(self, scope: GroupScope, provider: Provider | None) -> float:
        """Publish the metrics, write the status if it changed, and say when to look again."""
        name, memory, now, spec = scope.name, scope.memory, scope.now, scope.spec
        memory.rests_for(None, now)  # forget rests that ran out, before they are reported
        status = group_status(scope)
        target_rev = memory.current or scope.template_revision
        self.metrics.publish(
            name,
            status,
            scope.members,
            routed_share(
                scope.desired,
                spec.zones,
                spec.capacity,
                memory.resting_cells(now, target_rev),
            )
            if provider is not None
            else {},
        )
        comparable = without_times(status)
        if self._written.get(name) != comparable:
            await self.writes.patch_status(InstanceGroup, name, wire(status))
            self._written[name] = comparable
        settled = status.state in ("Ready", "Degraded") and not scope.busy
        wait = IDLE_REQUEUE if settled else BUSY_REQUEUE
        wake = memory.next_wake()
        if wake is not None:
            wait = min(wait, max(0.5, (wake - now).total_seconds()))
        return wait
