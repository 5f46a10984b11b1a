"""The controller manager: one work queue of typed keys, the workers, and ``dispatch``,
the single entry point ``molt run`` and the simulator both drive.

Keys are ``selection`` (plan and admit, for the whole cluster), ``group/<name>`` (one
InstanceGroup's cells, rollout and status; its current revision is what drift is judged
against), ``node/<name>`` (one node's pipeline), ``register/<name>`` (label a node that
joined one of Molt's cells without Molt's labels), ``reaper/<name>`` (one Reaper's pass,
requeued after its interval), ``manifests/<group>`` (a group's post-launch manifests,
applied for its nodes and removed when they go), ``interruptions`` (a pass over the
cloud's interruption queue, when one is configured), ``watchdog/<name>`` (start or stop
one Watchdog's background task; its checks never hold a worker) and ``remediation`` (one
pass over the unhealthy nodes of the policies with a remediation chain: reboot, wait,
hand over to the pipeline, or keep a node that recovered). A Watchdog whose state
changes enqueues selection, which reads ``pauseWhen``. Cache changes enqueue keys;
reconcilers return when to look again; a failing key backs off. It runs unchanged over any
implementation of the ports. The reconcilers it owns (``termination``, ``instancegroup``,
``registration``, ``reaper``, ``manifests``, ``interruption``, ``watchdog``,
``remediation``) know nothing
of one another or of the queue; import-linter holds them apart.
"""

from __future__ import annotations

import asyncio

import structlog

from molt.actions.runner import ActionRunner, action_kinds
from molt.api.labels import EXCLUDE_FROM_LB_LABEL, REPLACEMENT_ANNOTATION, STATE_LABEL
from molt.cloud.provider import InstanceChecker, Provider, Registrar
from molt.controllers.instancegroup.reconciler import CellReconciler
from molt.controllers.interruption.reconciler import InterruptionReconciler, NoticeQueue
from molt.controllers.manifests.reconciler import ManifestReconciler
from molt.controllers.reaper.reconciler import ReaperReconciler
from molt.controllers.registration import RegistrationReconciler
from molt.controllers.remediation.reconciler import RemediationReconciler
from molt.controllers.termination.pipeline import PipelineReconciler
from molt.controllers.termination.selection import SelectionReconciler
from molt.controllers.validity.reporter import ValidityReporter
from molt.controllers.watchdog.controller import WatchdogController
from molt.controllers.workqueue import QueueShutDown, WorkQueue
from molt.observe.metrics import Metrics
from molt.policy.snapshot import NodeView
from molt.ports import Clock, ClusterReads, ClusterWrites, HealthProbe, NotLeaderError

log = structlog.get_logger(__name__)

SELECTION = "selection"
GROUP_PREFIX = "group/"
NODE_PREFIX = "node/"
REGISTER_PREFIX = "register/"
REAPER_PREFIX = "reaper/"
MANIFESTS_PREFIX = "manifests/"
INTERRUPTIONS = "interruptions"
WATCHDOG_PREFIX = "watchdog/"
REMEDIATION = "remediation"
VALIDITY = "validity"
QUEUE_NAME = "molt"
"""The work queue's ``name`` label in the workqueue_* metrics."""
SELECTION_DEBOUNCE = 1.0
"""Bursts of node changes are coalesced into one selection per second at most."""


class ControllerManager:
    """Selection, the per-node pipeline, the groups and registration, fed by one queue."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        metrics: Metrics,
        *,
        providers: dict[str, Provider],
        actions: ActionRunner | None = None,
        workers: int = 4,
        queue: WorkQueue[str] | None = None,
        resync_seconds: float = 30.0,
        pipeline: bool = True,
        interruptions: NoticeQueue | None = None,
        interruption_poll_seconds: float | None = None,
        heartbeat_seconds: float | None = None,
        probe: HealthProbe | None = None,
    ) -> None:
        self.reads = reads
        self.pipeline_enabled = pipeline
        """Off in dry-run: nodes are planned and reported, never moved along."""
        self.queue: WorkQueue[str] = (
            queue if queue is not None else WorkQueue(metrics=metrics.workqueue(QUEUE_NAME))
        )
        self.workers = workers
        # Policy selection and the groups' own selections admit nodes one at a time, so
        # neither counts the nodes in flight before the other's writes have landed.
        admission = asyncio.Lock()
        self.selection = SelectionReconciler(
            reads,
            writes,
            clock,
            metrics,
            on_selected=self._selected,
            resync_seconds=resync_seconds,
            probe=probe,
            admission=admission,
        )
        self.groups = CellReconciler(
            reads,
            writes,
            clock,
            providers if pipeline else {},
            metrics=metrics,
            admission=admission,
        )
        self.pipeline = PipelineReconciler(
            reads,
            writes,
            clock,
            metrics,
            providers=providers,
            actions=actions if actions is not None else ActionRunner(action_kinds(writes)),
            **({"heartbeat_seconds": heartbeat_seconds} if heartbeat_seconds else {}),
        )
        registrars = [p for p in providers.values() if isinstance(p, Registrar)]
        self.registration = RegistrationReconciler(
            reads, writes, clock, registrars if pipeline else []
        )
        checkers = [p for p in providers.values() if isinstance(p, InstanceChecker)]
        self.reapers = ReaperReconciler(reads, writes, clock, metrics, checkers)
        self.manifests = ManifestReconciler(reads, writes, clock)
        self.interruptions = (
            InterruptionReconciler(
                reads,
                writes,
                clock,
                metrics,
                interruptions,
                on_selected=self._selected,
                **(
                    {"idle_seconds": interruption_poll_seconds} if interruption_poll_seconds else {}
                ),
            )
            if interruptions is not None and pipeline
            else None
        )
        self.watchdogs = WatchdogController(reads, writes, clock, metrics)
        self.remediation = RemediationReconciler(
            reads, writes, clock, providers if pipeline else {}
        )
        self.validity = ValidityReporter(reads, writes, clock)
        self._watchdog_states: dict[str, str | None] = {}
        """Each Watchdog's state as last seen in the cache: a change enqueues selection."""

    def notices_arrived(self) -> None:
        """Look at the interruption queue now (a message arrived)."""
        if self.interruptions is not None:
            self.queue.add(INTERRUPTIONS)

    def _selected(self, name: str) -> None:
        if self.pipeline_enabled:
            self.queue.add(NODE_PREFIX + name)

    # Change handlers, called by the caches.

    def node_changed(self, key: str, old: NodeView | None, new: NodeView | None) -> None:
        if self.registration.wants(old, new):
            self.queue.add(REGISTER_PREFIX + key)
        in_pipeline = (old is not None and old.in_pipeline) or (new is not None and new.in_pipeline)
        if in_pipeline and self.pipeline_enabled:
            self.queue.add(NODE_PREFIX + key)
        # Ready and in its group for the first time: Ready before registration labelled
        # it (a cloud node registers itself bare), or labelled before Ready.
        became_ready = (
            new is not None
            and new.ready
            and (old is None or not old.ready or old.group != new.group)
        )
        if became_ready and self.pipeline_enabled and new is not None and new.group is not None:
            # A node that can stand in for others: wake the group's nodes waiting at the
            # drain gate (those past it have no use for another Ready node).
            for waiting in self.reads.group_nodes(new.group):
                if waiting.in_pipeline and REPLACEMENT_ANNOTATION not in waiting.annotations:
                    self.queue.add(NODE_PREFIX + waiting.name)
        self.queue.add_after(SELECTION, SELECTION_DEBOUNCE)
        self._remediate()
        if self.pipeline_enabled and _changes_identity(old, new):
            groups = {n.group for n in (old, new) if n is not None and self.manifests.wants(n)}
            for group in groups:
                self.queue.add(MANIFESTS_PREFIX + str(group))
        # A node that joins, goes, turns Ready or not, or enters or leaves the pipeline
        # changes what its group may do next (select the next old node, launch the next
        # one): look at once. Other changes (a cordon, a step along the pipeline) are
        # coalesced, so a busy group's reconcile is not already running when one that
        # matters arrives.
        urgent = _changes_membership(old, new)
        for node in (old, new):
            if node is not None and node.group is not None:
                key = GROUP_PREFIX + node.group
                if urgent:
                    self.queue.add(key)
                else:
                    self.queue.add_after(key, SELECTION_DEBOUNCE)

    def pods_changed(self, node: str) -> None:
        if self.pipeline_enabled:
            self.queue.add(NODE_PREFIX + node)

    def reaper_changed(self, name: str) -> None:
        if self.pipeline_enabled:  # molt run --dry-run reaps nothing
            self.queue.add(REAPER_PREFIX + name)

    def watchdog_changed(self, name: str) -> None:
        if self.pipeline_enabled:  # molt run --dry-run sends no alert and makes no probe pod
            self.queue.add(WATCHDOG_PREFIX + name)
        found = next((w for w in self.reads.watchdogs() if w.metadata.name == name), None)
        state = found.status.state if found is not None and found.status else None
        if found is None:
            self._watchdog_states.pop(name, None)
        elif self._watchdog_states.get(name) == state:
            return
        else:
            self._watchdog_states[name] = state
        # Failing (or recovered): a policy whose pauseWhen names it selects differently.
        self.queue.add_after(SELECTION, SELECTION_DEBOUNCE)

    def unusable_changed(self) -> None:
        """One of Molt's objects became unusable, changed why, or was fixed."""
        self.queue.add(VALIDITY)

    def config_changed(self) -> None:
        # Groups first: a template change makes a new revision, which drift reads.
        self._enqueue_groups()
        self.queue.add_after(SELECTION, SELECTION_DEBOUNCE)
        self._remediate()

    def _remediate(self) -> None:
        """Look at the remediation chains soon (bursts coalesced like selection's)."""
        if self.pipeline_enabled and self.remediation.wanted():  # dry run: no reboot
            self.queue.add_after(REMEDIATION, SELECTION_DEBOUNCE)

    def _enqueue_groups(self) -> None:
        for name in self.reads.groups():
            self.queue.add(GROUP_PREFIX + name)
            if self.pipeline_enabled:  # molt run --dry-run applies nothing
                self.queue.add(MANIFESTS_PREFIX + name)

    def enqueue_all(self) -> None:
        """Look at everything once: after the caches sync or leadership is won."""
        self._enqueue_groups()
        self.queue.add(SELECTION)
        self._remediate()
        for node in self.reads.nodes():
            if node.in_pipeline and self.pipeline_enabled:
                self.queue.add(NODE_PREFIX + node.name)
            if self.registration.wants(None, node):
                self.queue.add(REGISTER_PREFIX + node.name)
        for reaper in self.reads.reapers():
            self.reaper_changed(reaper.metadata.name)
        if self.interruptions is not None:
            self.queue.add(INTERRUPTIONS)
        for watchdog in self.reads.watchdogs():
            self.watchdog_changed(watchdog.metadata.name)
        if self.reads.unusable():
            self.queue.add(VALIDITY)

    async def dispatch(self, key: str) -> float | None:
        """Reconcile one key; returns when to look at it again (None: when it changes)."""
        if key == SELECTION:
            return await self.selection.reconcile()
        if key.startswith(GROUP_PREFIX):
            return await self.groups.reconcile(key.removeprefix(GROUP_PREFIX))
        if key.startswith(REAPER_PREFIX):
            return await self.reapers.reconcile(key.removeprefix(REAPER_PREFIX))
        if key == REMEDIATION:
            return await self.remediation.reconcile()
        if key == VALIDITY:
            return await self.validity.reconcile()
        if key == INTERRUPTIONS and self.interruptions is not None:
            return await self.interruptions.reconcile()
        if key.startswith(MANIFESTS_PREFIX):
            return await self.manifests.reconcile(key.removeprefix(MANIFESTS_PREFIX))
        if key.startswith(WATCHDOG_PREFIX):
            return await self.watchdogs.reconcile(key.removeprefix(WATCHDOG_PREFIX))
        if key.startswith(REGISTER_PREFIX):
            return await self.registration.reconcile(key.removeprefix(REGISTER_PREFIX))
        return await self.pipeline.reconcile(key.removeprefix(NODE_PREFIX))

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                after = await self.dispatch(key)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, NotLeaderError):
                    raise
                delay = self.queue.add_rate_limited(key)
                log.exception("reconcile.failed", key=key, retry_in=round(delay, 2))
            else:
                self.queue.forget(key)
                if after is not None:
                    self.queue.add_after(key, after)
            finally:
                self.queue.done(key)

    async def run(self) -> None:
        """Run the workers until cancelled, or until one raises (e.g. leadership lost)."""
        self.enqueue_all()
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self.workers):
                    group.create_task(self._work(), name=f"worker-{index}")
        finally:
            # The watchdogs' rounds run only while the workers do (a replica that lost
            # its Lease probes and alerts no more).
            await self.watchdogs.stop()


PIPELINE_LABELS = frozenset({STATE_LABEL, EXCLUDE_FROM_LB_LABEL})
"""Labels a node's pipeline moves along (selected, draining, terminating; the cordon's
load-balancer exclusion): past its entry, no change to them alters what its group sizes or
selects, so they are coalesced like heartbeats."""


def _changes_membership(old: NodeView | None, new: NodeView | None) -> bool:
    """Whether a node change is one its group acts on at once: the node came or went,
    turned Ready or not, entered or left the pipeline, or was relabelled (not a heartbeat,
    a cordon or a step along the pipeline, which only the group's status reports)."""
    if old is None or new is None:
        return True
    return (
        old.ready != new.ready
        or old.in_pipeline != new.in_pipeline
        or _without(old.labels, PIPELINE_LABELS) != _without(new.labels, PIPELINE_LABELS)
    )


def _without(labels: dict[str, str], keys: frozenset[str]) -> dict[str, str]:
    return {key: value for key, value in labels.items() if key not in keys}


def _changes_identity(old: NodeView | None, new: NodeView | None) -> bool:
    """Whether a node change alters what is applied for it: it came, went, was replaced by
    a Node of the same name, or its addresses or labels changed."""
    if old is None or new is None:
        return True
    return old.uid != new.uid or old.addresses != new.addresses or old.labels != new.labels
