"""The per-node pipeline: replacement, cordon, load-balancer deregistration, pre-drain
actions, the load balancers' drain, drain, pre-terminate actions, terminate.

Each reconcile takes one node as far as it can without waiting and returns when to look
again; every step first reads what earlier runs recorded on the node, so a controller
killed at any point resumes without repeating a step (a launch is keyed by a token, a
termination of a gone instance is a no-op, action progress is kept per action name).

The order is the production one: the replacement is Ready first (where the group has
room), then the node is cordoned, then drained. The drain evicts through the Eviction API
for a bounded slice of time, backs off per pod on 429, deletes (rather than evicts) the
unready pods of a node unreachable past its grace period, and reports on the node what it
must not force. Nothing is terminated while a pod that must leave is still on the node,
read fresh from the API server right before the instance goes.

Load balancers: the cordon also labels the node
``node.kubernetes.io/exclude-from-external-load-balancers`` (every provider). Where the
node's provider is ``LoadBalancers`` and its group's templates name targets, the instance
is deregistered right after the cordon (``molt.dev/deregistered-at`` and
``molt.dev/deregistration-wait-until`` are written once the call succeeded, so a restart
neither repeats it nor skips the wait), the preDrain actions run meanwhile, and the first
eviction waits until the targets no longer list the instance or the longest
deregistration delay has passed, whichever comes first, by requeueing. A failed
deregistration holds the node (Event and ``molt.dev/blocked``), retried with backoff,
also past the node's deadline: no pod leaves a node its load balancers still feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog

from molt.actions.base import ActionContext
from molt.actions.runner import ActionRunner, AttemptState
from molt.api.durations import parse_duration
from molt.api.labels import (
    BLOCKED_ANNOTATION,
    DEREGISTERED_AT_ANNOTATION,
    DEREGISTRATION_BLOCKED,
    DEREGISTRATION_WAIT_ANNOTATION,
    DO_NOT_DISRUPT,
    DRAIN_STARTED_ANNOTATION,
    DRAINED_AT_ANNOTATION,
    DRAINING,
    EXCLUDE_FROM_LB_LABEL,
    INTERRUPTION_ANNOTATION,
    POLICY_ANNOTATION,
    REASON_ANNOTATION,
    REPLACEMENT_ANNOTATION,
    SELECTED_AT_ANNOTATION,
    STATE_LABEL,
    TERMINATING,
    UNREACHABLE_ANNOTATION,
)
from molt.api.lifecycle import Hook, LifecycleAction
from molt.api.terminationpolicy import TerminationPolicy
from molt.cloud.provider import LifecycleHooks, LoadBalancers, Provider, ProviderError
from molt.controllers.termination.drain import EVICTION_SLICE_SECONDS, Drainer
from molt.controllers.termination.progress import (
    GROUP_CAPACITY,
    NO_REPLACEMENT,
    ActionProgress,
    ActionState,
    deadline_of,
    drain_rules,
    drain_settings,
    read_time,
)
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339, parse_rfc3339_or_none
from molt.policy.drain import DrainView, blocked_message, classify_pods, unreachable_since
from molt.policy.interruptions import read_annotation
from molt.policy.node_actions import actions_at
from molt.policy.overflow import effective_desired
from molt.policy.rollout import strategy_of
from molt.policy.selection import covers
from molt.policy.snapshot import NodeView, PodView
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

Requeue = float | None
"""Seconds until the node should be looked at again; None: this step is done, go on."""

ACTION_RETRY_MAX = 300.0
ACTION_POLL = 1.0
ACTION_HELD_RETRY = 3.0
"""How soon an action that waits for the cluster (it answered held) is tried again."""
"""How often a running action is checked; it ends in the background meanwhile."""
REPLACEMENT_POLL = 60.0
"""A node waiting for its group's capacity is woken when a group node turns Ready, and
when its wait for a replacement runs out; this is the backstop poll."""
LB_POLL = 5.0
"""How often the load balancers are asked whether they still list a deregistered node."""
HEARTBEAT_SECONDS = 300.0
"""How often an Auto Scaling lifecycle hook a draining node holds is extended (its
heartbeat timeout is an hour by default)."""
DRAIN_SETTLE_SECONDS = 3.0
"""How long a drained node must stay empty before it counts as drained: longer than a
ReplicaSet and the scheduler take to place an evicted pod's replacement."""


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
        drain_settle: float = DRAIN_SETTLE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.reads = reads
        self.drain_settle = drain_settle
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
        self._lb_retry: dict[str, tuple[int, float]] = {}
        """Node -> (failed deregistrations in a row, monotonic time of the next try)."""
        self._lb_drained: set[str] = set()
        """Nodes whose load balancers let them go (asked once more after a restart)."""
        self.heartbeat_seconds = heartbeat_seconds
        self._heartbeats: dict[str, float] = {}
        """Node -> monotonic time its lifecycle hook's next heartbeat is due."""

    async def reconcile(self, name: str) -> Requeue:
        node = self.reads.node(name)
        if node is None or not node.in_pipeline:
            self.reads.release_pods(name)
            self._passed.discard(name)
            self._timeout_reported.discard(name)
            self._lb_retry.pop(name, None)
            self._lb_drained.discard(name)
            self.drainer.forget(name)
            self.actions.forget(f"{name}/")
            self._heartbeats.pop(name, None)
            return None
        beat = await self._heartbeat(node) if INTERRUPTION_ANNOTATION in node.annotations else None
        policy = self.policy_for(node)
        steps = (
            self._adopt,
            self._replace,
            self._cordon,
            self._deregister,
            self._pre_drain,
            self._load_balancers_drained,
            self._drain,
            self._pre_terminate,
            self._terminate,
        )
        for step in steps:
            after = await step(node, policy)
            if after is not None:
                return after if beat is None else min(after, beat)
            node = self.reads.node(name) or node
        return None

    def policy_for(self, node: NodeView) -> TerminationPolicy | None:
        """The policy whose drain settings and actions apply: the one that selected the
        node, else (a rollout selected it) the first policy by name that covers it."""
        named = node.annotations.get(POLICY_ANNOTATION)
        if named:
            return self.reads.policy(named)
        covering = sorted(
            (p for p in self.reads.policies() if covers(p, node)), key=lambda p: p.metadata.name
        )
        return covering[0] if covering else None

    # Steps. Each returns None when its work is done and the next step may run.

    async def _adopt(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        """A node its group's rollout selected carries no policy: record the covering one,
        so its drain settings and actions are that policy's and it shows in its status."""
        if policy is not None and POLICY_ANNOTATION not in node.annotations:
            await self.writes.patch_node(
                node.name, annotations={POLICY_ANNOTATION: policy.metadata.name}
            )
        return None

    async def _cordon(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        # Past the gate: start the node's pod cache now, so it has listed the pods by the
        # time the drain asks (an empty node's drain then waits for no LIST of its own).
        self.reads.pods_on(node.name)
        # The exclusion label rides on the cordon patch: from the cordon on, the service
        # controller takes the node out of every external load balancer.
        if node.unschedulable and node.labels.get(EXCLUDE_FROM_LB_LABEL) == "true":
            return None
        await self.writes.patch_node(
            node.name, labels={EXCLUDE_FROM_LB_LABEL: "true"}, unschedulable=True
        )
        if not node.unschedulable:
            await self.writes.record_event(node, "Cordoned", "cordoned: no new pods will land here")
        return None

    def _load_balancers(self, node: NodeView) -> tuple[LoadBalancers | None, Sequence[str]]:
        """The node's provider as ``LoadBalancers`` and the targets to leave: those of its
        group's current template and of its own revision's (kept in the group status)."""
        group = self.reads.instance_group(node.group) if node.group else None
        if group is None:
            return None, ()
        provider = self.providers.get(group.spec.provider)
        if not isinstance(provider, LoadBalancers):
            return None, ()
        templates = [group.spec.template]
        if group.status is not None:
            templates += [
                r.template
                for r in group.status.revisions
                if r.name == node.revision and r.template is not None
            ]
        targets = sorted(
            {t for template in templates for t in provider.load_balancers_of(template)}
        )
        return provider, targets

    async def _deregister(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        """Take the instance out of its load balancers, once; the wait comes after the
        preDrain actions (``_load_balancers_drained``), so both run in the same time."""
        if node.state in (DRAINING, TERMINATING):
            return None
        if DEREGISTERED_AT_ANNOTATION in node.annotations:
            return None
        balancer, targets = self._load_balancers(node)
        if balancer is None or not targets:
            return None
        failed = self._lb_retry.get(node.name)
        if failed is not None and failed[1] > self.clock.monotonic():
            return max(0.05, failed[1] - self.clock.monotonic())
        try:
            delay = await balancer.deregister(node, targets)
        except ProviderError as error:
            return await self._deregistration_failed(node, policy, targets, error)
        self._lb_retry.pop(node.name, None)
        now = self.clock.now()
        annotations: dict[str, str | None] = {
            DEREGISTERED_AT_ANNOTATION: format_rfc3339(now),
            DEREGISTRATION_WAIT_ANNOTATION: format_rfc3339(now + timedelta(seconds=delay)),
        }
        if node.annotations.get(BLOCKED_ANNOTATION, "").startswith(DEREGISTRATION_BLOCKED):
            annotations[BLOCKED_ANNOTATION] = None
        await self.writes.patch_node(node.name, annotations=annotations)
        await self.writes.record_event(
            node,
            "Deregistered",
            f"instance deregistered from {len(targets)} load balancer target(s) "
            f"({', '.join(targets)}); the first eviction waits up to {delay:g}s for them "
            "to drain it",
        )
        return None

    async def _deregistration_failed(
        self,
        node: NodeView,
        policy: TerminationPolicy | None,
        targets: Sequence[str],
        error: ProviderError,
    ) -> Requeue:
        attempts = (self._lb_retry.get(node.name) or (0, 0.0))[0] + 1
        delay = min(ACTION_RETRY_MAX, 2.0**attempts)
        self._lb_retry[node.name] = (attempts, self.clock.monotonic() + delay)
        now = self.clock.now()
        message = (
            f"{DEREGISTRATION_BLOCKED}: deregistration from {', '.join(targets)} failed "
            f"({attempts}x, next try in {delay:g}s): {error}; no pod is evicted until it "
            "succeeds"
        )
        if now >= deadline_of(node, policy, now):
            message += (
                "; past the node's deadline it is still held: fix the cause, or deregister "
                f"the instance yourself and annotate the node {DEREGISTERED_AT_ANNOTATION}"
            )
        await self.writes.patch_node(node.name, annotations={BLOCKED_ANNOTATION: message[:1000]})
        await self.writes.record_event(node, "DeregistrationFailed", message, warning=True)
        log.warning("node.deregistration_failed", node=node.name, error=str(error))
        return delay

    async def _load_balancers_drained(
        self, node: NodeView, policy: TerminationPolicy | None
    ) -> Requeue:
        """Hold the first eviction until the load balancers let the instance go or the
        longest deregistration delay has passed, whichever comes first."""
        if node.state in (DRAINING, TERMINATING) or node.name in self._lb_drained:
            return None
        if read_time(node, DEREGISTERED_AT_ANNOTATION) is None:
            return None  # nothing was deregistered: no load balancer to wait for
        wait_until = read_time(node, DEREGISTRATION_WAIT_ANNOTATION)
        now = self.clock.now()
        done = wait_until is None or now >= wait_until  # none: a person deregistered it
        if not done:
            assert wait_until is not None
            balancer, targets = self._load_balancers(node)
            if balancer is None or not targets:
                done = True
            else:
                try:
                    done = not await balancer.deregistering(node, targets)
                except ProviderError as error:
                    # The delay is the bound ELB itself keeps: wait it out rather than guess.
                    log.warning("node.deregistration_unknown", node=node.name, error=str(error))
            if not done:
                return min(LB_POLL, max(0.05, (wait_until - now).total_seconds()))
        self._lb_drained.add(node.name)
        return None

    def _actions(
        self, node: NodeView, policy: TerminationPolicy | None, hook: Hook
    ) -> list[tuple[str, LifecycleAction]]:
        """The node's actions at ``hook``: its group's, then its policy's."""
        group = self.reads.instance_group(node.group) if node.group else None
        return actions_at(hook, group, policy)

    async def _pre_drain(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        if node.state in (DRAINING, TERMINATING):
            return None  # past this hook point
        return await self._run_hook(node, policy, "preDrain")

    async def _pre_terminate(self, node: NodeView, policy: TerminationPolicy | None) -> Requeue:
        after = await self._run_hook(node, policy, "preTerminate")
        if after is not None or node.state == TERMINATING:
            return after
        # Terminating only once the preTerminate actions are done: whoever reads the label
        # (an etcd member table, a dashboard) sees a node that has handed off its duties.
        await self.writes.patch_node(node.name, labels={STATE_LABEL: TERMINATING})
        return None

    async def _run_hook(
        self, node: NodeView, policy: TerminationPolicy | None, hook: Hook
    ) -> Requeue:
        """Take the hook's actions one at a time; each runs in the background, so this
        only starts, checks and records (never holding a worker for an action's timeout)."""
        progress = ActionProgress.of(node)
        for source, action in self._actions(node, policy, hook):
            key = ActionProgress.key(hook, source, action.name)
            state = progress.get(key)
            if state.state == "done":
                continue
            label = f"{hook} action {action.name}"
            runner_key = f"{node.name}/{key}"
            if not self.actions.running(runner_key) and state.retry_at:
                retry_at = parse_rfc3339_or_none(state.retry_at)
                now = self.clock.now()
                if retry_at is not None and retry_at > now:
                    return max(0.05, (retry_at - now).total_seconds())
            # Recorded as running with no attempt here: this process restarted during it,
            # so the new task resumes that attempt (a Job action finds its Job by name).
            resuming = state.state == "running" and state.attempts > 0
            context = ActionContext(
                node,
                hook,
                node.annotations.get(REASON_ANNOTATION, ""),
                policy.metadata.name if policy else "",
                key=key,
                attempt=state.attempts if resuming else state.attempts + 1,
            )
            outcome = self.actions.poll(runner_key, action, context)
            if outcome.state == AttemptState.RUNNING:
                return ACTION_POLL
            if outcome.state == AttemptState.STARTED:
                started = ActionState("running", context.attempt, state.error)
                await self._record_progress(node, progress.with_state(key, started))
                if state.attempts == 0 and state.state != "held":
                    await self.writes.record_event(node, "ActionStarted", f"{label} started")
                return ACTION_POLL
            if outcome.state == AttemptState.SUCCEEDED:
                progress = progress.with_state(key, ActionState("done", max(1, state.attempts)))
                await self._record_progress(node, progress, blocked=None)
                await self.writes.record_event(node, "ActionDone", f"{label} succeeded")
                node = self.reads.node(node.name) or node
                continue
            if outcome.state == AttemptState.HELD:
                # Not a failure: the attempt is given back, and the node is held meanwhile.
                message = f"{label} held: {outcome.error}"
                retry_at = self.clock.now() + timedelta(seconds=ACTION_HELD_RETRY)
                held = ActionState(
                    "held", max(0, state.attempts - 1), None, format_rfc3339(retry_at)
                )
                await self._record_progress(node, progress.with_state(key, held), blocked=message)
                if node.annotations.get(BLOCKED_ANNOTATION) != message:
                    await self.writes.record_event(node, "ActionHeld", message, warning=True)
                return ACTION_HELD_RETRY
            attempts = max(1, state.attempts)
            exhausted = attempts > action.retries
            delay = min(ACTION_RETRY_MAX, 2.0**attempts)
            retry_at = self.clock.now() + timedelta(seconds=delay)
            message = f"{label} failed ({attempts}x): {outcome.error}"
            if exhausted:
                message += "; retries exhausted, the node is held until it succeeds"
            failed = ActionState(
                "failed", attempts, (outcome.error or "")[:300], format_rfc3339(retry_at)
            )
            await self._record_progress(
                node, progress.with_state(key, failed), blocked=message if exhausted else None
            )
            await self.writes.record_event(node, "ActionFailed", message, warning=True)
            return delay
        return None

    async def _record_progress(
        self, node: NodeView, progress: ActionProgress, *, blocked: str | None = ""
    ) -> None:
        annotations = progress.annotation()
        if blocked != "":
            annotations[BLOCKED_ANNOTATION] = blocked
        await self.writes.patch_node(node.name, annotations=annotations)

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
        notice = read_annotation(node.annotations.get(INTERRUPTION_ANNOTATION))
        if notice is not None and notice.urgent:
            # The instance goes whatever Molt does: drain now; the group launches the
            # replacement meanwhile (the node in the pipeline makes room for it).
            why = f"{NO_REPLACEMENT}: {notice.describe()}, drained without waiting"
            await self.writes.patch_node(node.name, annotations={REPLACEMENT_ANNOTATION: why})
            return None
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
        # What the group runs for groups that overflow into it counts too: a borrowed
        # node is serving someone's shortfall.
        desired = effective_desired(
            group, (self.reads.instance_group(name) for name in self.reads.groups())
        )
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
            self.drainer.began(node.name)
            node = self.reads.node(node.name) or node
        if node.state == TERMINATING or DRAINED_AT_ANNOTATION in node.annotations:
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
        settings = drain_settings(policy)
        rules = drain_rules(settings)
        since = unreachable_since(node)
        unreachable = since is not None and now - since >= rules.unreachable_grace
        view = classify_pods(pods, now, deadline, unreachable=unreachable, rules=rules)
        if unreachable:
            await self._handle_unreachable(node, view, now - since if since else timedelta())
        if view.done:
            return await self._finish_drain(node, policy, now)
        self.drainer.busy(node.name)
        self.drainer.observe(node.name, view)
        attempt = await self.drainer.evict_slice(node.name, view)
        started = read_time(node, DRAIN_STARTED_ANNOTATION) or now
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
                await self._delete_pod(node, pod)
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
                    await self._delete_pod(node, pod)
        findings = self.drainer.findings(node.name, attempt)
        message = blocked_message(view, findings, deadline, now, rules)
        wait = self.drainer.next_try(node.name, view)
        if unreachable and (view.leaving or view.delete):
            # Pods deleted on a dead node stop holding it once their deletion has been due
            # for the grace period; look again then.
            wait = min(wait, rules.unreachable_grace.total_seconds())
        elif since is not None and not unreachable:
            wait = min(wait, max(0.05, (since + rules.unreachable_grace - now).total_seconds()))
        return await self._report_blocked(node, message, wait)

    async def _handle_unreachable(self, node: NodeView, view: DrainView, for_: timedelta) -> None:
        """Delete the unready pods of a node nobody can reach, and say what the drain no
        longer waits for; see ``molt.policy.drain`` for why this breaks no budget."""
        for pod in view.delete:
            await self._delete_pod(node, pod)
        parts = []
        if view.delete:
            parts.append(f"deleted {len(view.delete)} unready pod(s) instead of evicting them")
        if view.abandoned:
            names = ", ".join(p.key for p in view.abandoned[:5])
            parts.append(
                f"{len(view.abandoned)} pod(s) deleting with no kubelet to confirm no longer "
                f"hold the drain (pod GC removes them once the Node is gone): {names}"
            )
        if not parts:
            return
        message = f"node unreachable for {int(for_.total_seconds())}s: " + "; ".join(parts)
        if view.abandoned and not view.delete:
            if node.annotations.get(UNREACHABLE_ANNOTATION, "").startswith("abandoned"):
                return
            message = "abandoned: " + message
        await self.writes.patch_node(node.name, annotations={UNREACHABLE_ANNOTATION: message})
        await self.writes.record_event(node, "NodeUnreachable", message, warning=True)

    async def _delete_pod(self, node: NodeView, pod: PodView) -> None:
        self.drainer.moved(node.name)
        await self.writes.delete_pod(pod)

    async def _report_blocked(self, node: NodeView, message: str | None, wait: float) -> Requeue:
        current = node.annotations.get(BLOCKED_ANNOTATION)
        if message != current:
            await self.writes.patch_node(node.name, annotations={BLOCKED_ANNOTATION: message})
            # One Event per cause, not per refusal: a second pod refused by the same PDB
            # updates the annotation, the Event already said the node is held.
            if message and _cause(message) != _cause(current):
                await self.writes.record_event(node, "DrainBlocked", message, warning=True)
        return max(wait, 0.05)

    async def _left_on_node(self, node: NodeView, policy: TerminationPolicy | None) -> DrainView:
        """The node's pods as the API server has them now (not the cache), classified."""
        now = self.clock.now()
        rules = drain_rules(drain_settings(policy))
        since = unreachable_since(node)
        unreachable = since is not None and now - since >= rules.unreachable_grace
        pods = await self.writes.list_pods_now(node.name)
        return classify_pods(
            pods, now, deadline_of(node, policy, now), unreachable=unreachable, rules=rules
        )

    async def _finish_drain(
        self, node: NodeView, policy: TerminationPolicy | None, now: datetime
    ) -> Requeue:
        # The ReplicaSet replaces an evicted pod at once and the scheduler may bind the
        # newcomer here if it tolerates the cordon: the node must stay empty for a moment
        # after the last eviction before it counts as drained.
        quiet = self.drainer.quiet_for(node.name)
        if self.drainer.needs_settle(node.name) and quiet < self.drain_settle:
            return self.drain_settle - quiet
        # The quorum read that confirms the node is empty is made once, in _terminate,
        # right before the instance goes (after any preTerminate actions).
        started = read_time(node, DRAIN_STARTED_ANNOTATION)
        if started is not None:
            self.metrics.drain_duration.observe(max(0.0, (now - started).total_seconds()))
        await self.writes.patch_node(
            node.name,
            annotations={BLOCKED_ANNOTATION: None, DRAINED_AT_ANNOTATION: format_rfc3339(now)},
        )
        await self.writes.record_event(node, "Drained", "every evictable pod has left")
        return None

    def _provider_for(self, node: NodeView) -> Provider | None:
        """The provider that owns the node's instance: its group's, else whichever
        provider recognises the node as its own."""
        group = self.reads.instance_group(node.group) if node.group else None
        if group is not None:
            return self.providers.get(group.spec.provider)
        return next((p for p in self.providers.values() if p.owns(node)), None)

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
        # The one promise: no live pod goes down with its node. A pod that tolerates the
        # cordon can have landed since the drain finished (or during pre-terminate
        # actions); a quorum read sees it even when the cache does not yet.
        left = await self._left_on_node(node, policy)
        if not left.done:
            names = ", ".join(p.key for p in (*left.evict, *left.delete, *left.leaving)[:5])
            await self.writes.patch_node(
                node.name, labels={STATE_LABEL: DRAINING}, annotations={DRAINED_AT_ANNOTATION: None}
            )
            await self.writes.record_event(
                node,
                "PodsArrived",
                f"{left.remaining} pod(s) on the node right before termination ({names}): "
                "draining again",
                warning=True,
            )
            return 0.0
        if not await self._release_lifecycle_hook(node, provider):
            return 30.0
        self.reads.release_pods(node.name)
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
            await self._count_completed(policy, control_plane=node.is_control_plane)
        self.drainer.forget(node.name)
        log.info("node.terminated", node=node.name, policy=policy_name)
        return None

    async def _heartbeat(self, node: NodeView) -> Requeue:
        """Keep an Auto Scaling lifecycle hook from timing out while the node drains;
        returns when the next heartbeat is due."""
        notice = read_annotation(node.annotations.get(INTERRUPTION_ANNOTATION))
        provider = self._provider_for(node)
        if notice is None or notice.hook is None or not isinstance(provider, LifecycleHooks):
            return None
        instance = (node.provider_id or "").rsplit("/", 1)[-1]
        due = self._heartbeats.get(node.name, 0.0)
        now = self.clock.monotonic()
        if now >= due:
            try:
                await provider.heartbeat(notice.hook, instance)
                await self.writes.record_event(
                    node, "LifecycleHeartbeat", f"holding lifecycle hook {notice.hook.name}"
                )
            except ProviderError as error:
                log.warning("node.heartbeat_failed", node=node.name, error=str(error))
            due = self._heartbeats[node.name] = now + self.heartbeat_seconds
        return max(0.5, due - now)

    async def _release_lifecycle_hook(self, node: NodeView, provider: Provider) -> bool:
        """Let an Auto Scaling group terminate the drained instance it waits on; False:
        not yet (the call failed, retried)."""
        notice = read_annotation(node.annotations.get(INTERRUPTION_ANNOTATION))
        if notice is None or notice.hook is None or not isinstance(provider, LifecycleHooks):
            return True
        instance = (node.provider_id or "").rsplit("/", 1)[-1]
        try:
            completed = await provider.complete(notice.hook, instance)
        except ProviderError as error:
            await self.writes.record_event(
                node, "LifecycleHookFailed", f"lifecycle hook not completed: {error}", warning=True
            )
            return False
        if completed:
            await self.writes.record_event(
                node,
                "LifecycleHookCompleted",
                f"drained: auto scaling group {notice.hook.group} may terminate the instance",
            )
        self._heartbeats.pop(node.name, None)
        return True

    async def _count_completed(
        self, policy: TerminationPolicy, *, control_plane: bool = False
    ) -> None:
        """Add one to the policy's completed count; a control-plane node also stamps
        ``status.controlPlane.lastCompleted``, which starts the bake selection waits out.

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
            status: dict[str, object] = {"completed": completed}
            if control_plane:
                # Second precision on the wire: round up, so the bake is never cut short.
                done = self.clock.now() + timedelta(microseconds=999_999)
                status["controlPlane"] = {"lastCompleted": format_rfc3339(done)}
            await self.writes.patch_status(TerminationPolicy, name, status)
            self._completed_written[name] = completed


def _cause(message: str | None) -> str | None:
    """What kind of block a report names (its first clause's lead-in)."""
    return message.split(":", 1)[0] if message else None
