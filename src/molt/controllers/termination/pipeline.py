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
from molt.api.durations import parse_duration
from molt.api.terminationpolicy import TerminationPolicy
from molt.cloud.kwok_nodes import KWOK_NODE_ANNOTATION
from molt.cloud.provider import Provider, ProviderError
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
    GROUP_CAPACITY,
    NO_REPLACEMENT,
    TERMINATING,
    count_annotation,
    deadline_of,
    drain_settings,
    read_time,
)
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.drain import classify_pods
from molt.policy.rollout import strategy_of
from molt.policy.snapshot import (
    DO_NOT_DISRUPT,
    POLICY_ANNOTATION,
    REASON_ANNOTATION,
    REPLACEMENT_ANNOTATION,
    SELECTED_AT_ANNOTATION,
    STATE_LABEL,
    NodeView,
)
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

Requeue = float | None
"""Seconds until the node should be looked at again; None: this step is done, go on."""

ACTION_RETRY_MAX = 300.0
REPLACEMENT_POLL = 60.0
"""A node waiting for its group's capacity is woken when a group node turns Ready, and
when its wait for a replacement runs out; this is the backstop poll."""


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
        self._gate_lock = asyncio.Lock()
        self._passed: set[str] = set()
        """Nodes this process let drain, until the cache shows their annotation."""
        self._timeout_reported: set[str] = set()

    async def reconcile(self, name: str) -> Requeue:
        node = self.reads.node(name)
        if node is None or not node.in_pipeline:
            self.reads.release_pods(name)
            self._passed.discard(name)
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

    def _no_replacement(self, node: NodeView) -> str | None:
        """Why no instance group will stand in for ``node``, or None when one will."""
        if node.group is None:
            return "the node belongs to no instance group"
        group = self.reads.instance_group(node.group)
        if group is None:
            return f"instance group {node.group} not found"
        if group.spec.provider not in self.providers:
            return f"provider {group.spec.provider} is not enabled in this controller"
        return None

    async def _replace(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        """Wait until the node's group can spare it; its instance-group controller launches
        the replacement (the node in the pipeline makes room for one more instance)."""
        if node.annotations.get(REPLACEMENT_ANNOTATION) is not None:
            return None  # passed this gate before
        why_not = self._no_replacement(node)
        if why_not is not None:
            await self.writes.patch_node(
                node.name, annotations={REPLACEMENT_ANNOTATION: f"{NO_REPLACEMENT}: {why_not}"}
            )
            await self.writes.record_event(node, "NoReplacement", f"no replacement: {why_not}")
            return None
        assert node.group is not None
        group = self.reads.instance_group(node.group)
        assert group is not None
        desired = group.spec.desired_replicas
        unavailable = strategy_of(group).max_unavailable
        async with self._gate_lock:
            spare = self._available_without(node)
            if spare >= desired - unavailable:
                self._passed.add(node.name)
                await self.writes.patch_node(
                    node.name,
                    annotations={
                        REPLACEMENT_ANNOTATION: f"{GROUP_CAPACITY}: {spare} Ready without it"
                    },
                )
                await self.writes.record_event(
                    node,
                    "CapacityReady",
                    f"group {node.group} keeps {spare} Ready node(s) without this one "
                    f"(needs {desired - unavailable}): draining",
                )
                return None
        # A node a policy must retire (its deadline has passed) waits for a replacement at
        # most the group's readyTimeout from its selection, then drains without one.
        now = self.clock.now()
        patience = parse_duration(group.spec.health.ready_timeout)
        selected = read_time(node, SELECTED_AT_ANNOTATION) or now
        deadline = deadline_of(node, policy, now) if policy is not None else None
        if deadline is not None and now >= deadline and now - selected >= patience:
            message = (
                f"group {node.group} has had no spare Ready node for "
                f"{group.spec.health.ready_timeout} and the node's deadline has passed"
            )
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
        if deadline is None:
            return REPLACEMENT_POLL
        give_up = max(deadline, selected + patience) - now
        return min(REPLACEMENT_POLL, max(1.0, give_up.total_seconds()))

    def _available_without(self, node: NodeView) -> int:
        """How many of the node's group's nodes stay available if it leaves: Ready, and not
        past the gate, counting those this process let through whose annotation the cache
        does not show yet (``_passed``, a handful at most)."""
        assert node.group is not None
        available = self.reads.available_in_group(node.group)
        for name in self._passed | {node.name}:
            view = self.reads.node(name)
            if view is not None and view.group == node.group and view.available:
                available -= 1
        return available

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
