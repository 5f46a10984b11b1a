"""The per-node pipeline: cordon, pre-termination actions, replacement, drain, terminate.

Each reconcile takes one node as far as it can without waiting and returns when to look
again; every step first reads what earlier runs recorded on the node, so a controller
killed at any point resumes without repeating a step (a launch is keyed by a token, a
termination of a gone instance is a no-op). The drain evicts through the Eviction API
for a bounded slice of time, backs off per pod on 429, reports pods it must not force
(two PDBs, do-not-disrupt before the deadline) on the node, and learns of deleted pods
from the node's pod watch rather than by polling.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog

from molt.actions.http import ActionFailedError, ActionRunner
from molt.api.durations import format_duration, parse_duration
from molt.api.instancegroup import InstanceGroup
from molt.api.terminationpolicy import TerminationPolicy
from molt.cloud.kwok_nodes import KWOK_NODE_ANNOTATION
from molt.cloud.provider import LaunchRequest, Provider, ProviderError
from molt.controllers.termination.drain import (
    EVICTION_SLICE_SECONDS,
    Drainer,
    blocked_message,
)
from molt.controllers.termination.progress import (
    ACTION_FAILURES_ANNOTATION,
    ACTIONS_DONE_ANNOTATION,
    BLOCKED_ANNOTATION,
    DRAIN_STARTED_ANNOTATION,
    DRAINING,
    NO_REPLACEMENT,
    REPLACEMENT_ANNOTATION,
    REPLACEMENT_LAUNCHED_AT_ANNOTATION,
    TERMINATING,
    count_annotation,
    deadline_of,
    drain_settings,
    read_time,
)
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.drain import classify_pods
from molt.policy.snapshot import (
    CAPACITY_TYPE_LABEL,
    DO_NOT_DISRUPT,
    POLICY_ANNOTATION,
    REASON_ANNOTATION,
    SELECTED_AT_ANNOTATION,
    STATE_LABEL,
    NodeTaint,
    NodeView,
)
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

Requeue = float | None
"""Seconds until the node should be looked at again; None: this step is done, go on."""

ACTION_RETRY_MAX = 300.0
REPLACEMENT_POLL = 2.0


class PipelineReconciler:
    """Moves one node at a time along the pipeline."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        metrics: Metrics,
        *,
        providers: dict[str, Provider],
        actions: ActionRunner | None = None,
        eviction_slice: float = EVICTION_SLICE_SECONDS,
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.metrics = metrics
        self.providers = providers
        self.actions = actions or ActionRunner()
        self.eviction_slice = eviction_slice
        self.drainer = Drainer(writes, clock, metrics, slice_seconds=eviction_slice)
        self._completed_written: dict[str, int] = {}
        self._status_lock = asyncio.Lock()
        self._launched_here: set[str] = set()
        """Launch tokens this process has sent; others are re-sent once after a restart."""
        self._timeout_reported: set[str] = set()

    async def reconcile(self, name: str) -> Requeue:
        node = self.reads.node(name)
        if node is None or not node.in_pipeline:
            self.reads.release_pods(name)
            self._timeout_reported.discard(name)
            self.drainer.forget(name)
            return None
        policy = self.reads.policy(node.annotations.get(POLICY_ANNOTATION, ""))
        steps = (self._cordon, self._pre_terminate, self._replace, self._drain, self._terminate)
        for step in steps:
            after = await step(node, policy)
            if after is not None:
                return after
            node = self.reads.node(name) or node
        return None

    # Steps. Each returns None when its work is done and the next step may run.

    async def _cordon(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        if node.unschedulable:
            return None
        await self.writes.patch_node(node.name, unschedulable=True)
        await self.writes.record_event(node, "Cordoned", "cordoned: no new pods will land here")
        return None

    async def _pre_terminate(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        actions = policy.spec.pre_termination if policy else []
        done = count_annotation(node, ACTIONS_DONE_ANNOTATION)
        for index in range(done, len(actions)):
            action = actions[index]
            label = action.name or f"#{index + 1}"
            try:
                await self.actions.run(
                    action,
                    node,
                    node.annotations.get(REASON_ANNOTATION, ""),
                    node.annotations.get(POLICY_ANNOTATION, ""),
                )
            except ActionFailedError as error:
                failures = count_annotation(node, ACTION_FAILURES_ANNOTATION) + 1
                exhausted = failures > action.retries
                message = f"pre-termination action {label} failed ({failures}x): {error}"
                if exhausted:
                    message += "; retries exhausted, the node is held until it succeeds"
                await self.writes.patch_node(
                    node.name,
                    annotations={
                        ACTION_FAILURES_ANNOTATION: str(failures),
                        BLOCKED_ANNOTATION: message if exhausted else None,
                    },
                )
                await self.writes.record_event(node, "PreTerminationFailed", message, warning=True)
                return min(ACTION_RETRY_MAX, 2.0**failures)
            await self.writes.patch_node(
                node.name,
                annotations={
                    ACTIONS_DONE_ANNOTATION: str(index + 1),
                    ACTION_FAILURES_ANNOTATION: None,
                    BLOCKED_ANNOTATION: None,
                },
            )
            await self.writes.record_event(node, "PreTerminationDone", f"action {label} succeeded")
        return None

    def _launch_request(
        self, node: NodeView, *, need_room: bool
    ) -> tuple[Provider, LaunchRequest, InstanceGroup] | str:
        """What to launch in place of ``node``, or why nothing is launched.

        ``need_room`` checks ``maxSize``: only before the first launch, since the
        replacement, once it joins, fills the very slot it was launched into.
        """
        if node.group is None:
            return "the node belongs to no instance group"
        group = self.reads.instance_group(node.group)
        if group is None:
            return f"instance group {node.group} not found"
        provider = self.providers.get(group.spec.provider)
        if provider is None:
            return f"provider {group.spec.provider} is not enabled in this controller"
        members = [n for n in self.reads.nodes() if n.group == node.group]
        if need_room and len(members) >= group.spec.max_size:
            return f"group {node.group} is at maxSize {group.spec.max_size}"
        template = group.spec.template
        boot = template.kwok.boot_delay if template.kwok else "0s"
        revision = (group.status.current_revision if group.status else None) or node.revision
        request = LaunchRequest(
            group=node.group,
            token=node.uid or node.name,
            zone=node.zone,
            capacity_type=node.labels.get(CAPACITY_TYPE_LABEL),
            revision=revision,
            labels=dict(template.labels),
            taints=tuple(NodeTaint(t.key, t.effect, t.value) for t in template.taints),
            boot_delay_seconds=parse_duration(boot).total_seconds(),
        )
        return provider, request, group

    async def _replace(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        recorded = node.annotations.get(REPLACEMENT_ANNOTATION)
        if recorded is not None and recorded.startswith(NO_REPLACEMENT):
            return None
        planned = self._launch_request(node, need_room=recorded is None)
        if isinstance(planned, str) and recorded is None:
            await self.writes.patch_node(
                node.name, annotations={REPLACEMENT_ANNOTATION: f"{NO_REPLACEMENT}: {planned}"}
            )
            await self.writes.record_event(node, "NoReplacement", f"no replacement: {planned}")
            return None
        # Past here with no plan, the group or provider went away after the launch: wait
        # out the ready timeout below as if the replacement were still coming.
        if recorded is None:
            assert not isinstance(planned, str)
            provider, request, _ = planned
            try:
                launched = await provider.launch(request)
            except ProviderError as error:
                await self.writes.record_event(
                    node, "ReplacementFailed", f"launch failed: {error}", warning=True
                )
                return 30.0
            self._launched_here.add(request.token)
            await self.writes.patch_node(
                node.name,
                annotations={
                    REPLACEMENT_ANNOTATION: launched,
                    REPLACEMENT_LAUNCHED_AT_ANNOTATION: format_rfc3339(self.clock.now()),
                },
            )
            await self.writes.record_event(
                node, "ReplacementLaunched", f"launched {launched} to take this node's place"
            )
            return REPLACEMENT_POLL
        replacement = self.reads.node(recorded)
        if replacement is not None and replacement.ready:
            return None
        group = planned[2] if not isinstance(planned, str) else None
        ready_timeout = parse_duration(group.spec.health.ready_timeout if group else "10m")
        launched_at = (
            read_time(node, REPLACEMENT_LAUNCHED_AT_ANNOTATION)
            or read_time(node, SELECTED_AT_ANNOTATION)
            or self.clock.now()
        )
        if self.clock.now() - launched_at > ready_timeout:
            message = f"{recorded} not Ready within {format_duration(ready_timeout)}"
            await self.writes.patch_node(
                node.name, annotations={REPLACEMENT_ANNOTATION: f"{NO_REPLACEMENT}: {message}"}
            )
            await self.writes.record_event(
                node,
                "ReplacementNotReady",
                f"draining without a replacement: {message}",
                warning=True,
            )
            return None
        if replacement is None and not isinstance(planned, str):
            provider, request, _ = planned
            if request.token not in self._launched_here:
                # Launched by an earlier process, which may have died before the instance
                # existed: ask again (the same token names the same instance).
                await provider.launch(request)
                self._launched_here.add(request.token)
        return REPLACEMENT_POLL

    async def _drain(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        now = self.clock.now()
        if node.state not in (DRAINING, TERMINATING):
            await self.writes.patch_node(
                node.name,
                labels={STATE_LABEL: DRAINING},
                annotations={DRAIN_STARTED_ANNOTATION: format_rfc3339(now)},
            )
            await self.writes.record_event(
                node, "Draining", "evicting pods through the Eviction API"
            )
            node = self.reads.node(node.name) or node
        if node.state == TERMINATING:
            return None
        pods = self.reads.pods_on(node.name)
        if pods is None:
            return 0.5  # the node's pod cache is still syncing
        deadline = deadline_of(node, policy, now)
        past_deadline = now >= deadline
        if node.do_not_disrupt and not past_deadline:
            return await self._report_blocked(
                node,
                f"the node has {DO_NOT_DISRUPT}=true (held until {format_rfc3339(deadline)})",
                (deadline - now).total_seconds(),
            )
        view = classify_pods(pods, now, deadline)
        if view.done:
            return await self._finish_drain(node, now)
        attempt = await self.drainer.evict_slice(node.name, view)
        started = read_time(node, DRAIN_STARTED_ANNOTATION) or now
        settings = drain_settings(policy)
        timed_out = now - started > parse_duration(settings.timeout)
        if timed_out and node.name not in self._timeout_reported:
            self._timeout_reported.add(node.name)
            await self.writes.record_event(
                node,
                "DrainTimeout",
                f"drain still unfinished after {settings.timeout}: {view.remaining} pod(s) left "
                f"({len(attempt.pdb_blocked)} refused by PDBs)",
                warning=True,
            )
        if past_deadline and settings.delete_pods_after_deadline:
            refused = {*attempt.pdb_blocked, *attempt.multiple_pdbs, *attempt.namespace_terminating}
            doomed = [pod for pod in view.evict if pod.key in refused]
            for pod in doomed:
                await self.writes.delete_pod(pod)
            if doomed:
                await self.writes.record_event(
                    node,
                    "PodsDeleted",
                    f"deleted {len(doomed)} pod(s) the Eviction API refused, "
                    "past the node's deadline (drain.deletePodsAfterDeadline)",
                    warning=True,
                )
        if timed_out:
            # The namespace is going, and its PDBs with it; once the drain has waited its
            # timeout, delete such pods rather than wait on the namespace controller.
            dying = set(attempt.namespace_terminating)
            for pod in view.evict:
                if pod.key in dying:
                    await self.writes.delete_pod(pod)
        message = blocked_message(view, attempt, deadline)
        wait = self.drainer.next_try(node.name, view)
        return await self._report_blocked(node, message, wait)

    async def _report_blocked(self, node: NodeView, message: str | None, wait: float) -> Requeue:
        current = node.annotations.get(BLOCKED_ANNOTATION)
        if message != current:
            await self.writes.patch_node(node.name, annotations={BLOCKED_ANNOTATION: message})
            if message:
                await self.writes.record_event(node, "DrainBlocked", message, warning=True)
        return max(wait, 0.05)

    async def _finish_drain(self, node: NodeView, now: datetime) -> Requeue:
        started = read_time(node, DRAIN_STARTED_ANNOTATION)
        if started is not None:
            self.metrics.drain_duration.observe(max(0.0, (now - started).total_seconds()))
        await self.writes.patch_node(
            node.name, labels={STATE_LABEL: TERMINATING}, annotations={BLOCKED_ANNOTATION: None}
        )
        await self.writes.record_event(node, "Drained", "every evictable pod has left")
        self.reads.release_pods(node.name)
        return None

    def _provider_for(self, node: NodeView) -> Provider | None:
        """The provider that owns the node's instance: its group's, or kwok for kwok nodes."""
        group = self.reads.instance_group(node.group) if node.group else None
        if group is not None:
            return self.providers.get(group.spec.provider)
        if node.annotations.get(KWOK_NODE_ANNOTATION) == "fake":
            return self.providers.get("kwok")
        return None

    async def _terminate(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        provider = self._provider_for(node)
        if provider is None:
            # Deleting only the Node object would let the kubelet register it again, young
            # and schedulable: leave it drained and cordoned, and say so.
            return await self._report_blocked(
                node,
                "no provider can terminate this node's instance (no InstanceGroup with an "
                "enabled provider owns it); it stays drained and cordoned for a person to remove",
                300.0,
            )
        try:
            await provider.terminate(node)
        except ProviderError as error:
            await self.writes.record_event(
                node, "TerminateFailed", f"instance not terminated: {error}", warning=True
            )
            return 30.0
        await self.writes.record_event(
            node, "InstanceTerminated", f"instance terminated by provider {provider.name}"
        )
        await self.writes.delete_node(node.name)
        await self.writes.record_event(
            node, "NodeDeleted", "node object deleted; pipeline complete"
        )
        policy_name = node.annotations.get(POLICY_ANNOTATION, "")
        self.metrics.completed.labels(policy=policy_name).inc()
        if policy is not None:
            await self._count_completed(policy)
        self.drainer.forget(node.name)
        log.info("node.terminated", node=node.name, policy=policy_name)
        return None

    async def _count_completed(self, policy: TerminationPolicy) -> None:
        """Add one to the policy's completed count.

        Two nodes can finish before the policy cache shows the first write, so the count
        is the larger of the cached one and the last this process wrote, under a lock.
        """
        name = policy.metadata.name
        async with self._status_lock:
            cached = policy.status.completed if policy.status else 0
            fresh = self.reads.policy(name)
            if fresh is not None and fresh.status is not None:
                cached = max(cached, fresh.status.completed)
            completed = max(cached, self._completed_written.get(name, 0)) + 1
            await self.writes.patch_policy_status(name, {"completed": completed})
            self._completed_written[name] = completed
