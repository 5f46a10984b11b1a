"""Reads a cloud's interruption queue and records each notice on its node (key
``interruptions``, requeued every couple of seconds).

- A spot interruption or an Auto Scaling termination is urgent: the instance goes
  whatever Molt does, so the node enters the pipeline at once, outside every budget (it
  is not a disruption Molt chooses), with the notice's deadline; the pipeline drains it
  without waiting for a replacement, and for an Auto Scaling termination holds the
  lifecycle hook (heartbeats) until the drain is done, then completes it.
- A rebalance recommendation is recorded only: selection treats it as a rule match
  (``Rebalance``), within the policy's budgets and windows.

The notice is written to ``molt.dev/interruption`` before its message is deleted, so a
crash in between redelivers a message whose notice is already there (a duplicate, which
changes nothing). A message about an instance no node here maps to is left on the queue
(another cluster may share it) until it is older than ``UNCLAIMED_TTL``, then deleted; a
message that is no notice Molt knows is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from molt.api.labels import (
    DEADLINE_ANNOTATION,
    INTERRUPTION_ANNOTATION,
    REASON_ANNOTATION,
    SELECTED,
    SELECTED_AT_ANNOTATION,
    STATE_LABEL,
)
from molt.cloud.aws_queue import Received
from molt.cloud.provider import ProviderError
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339, parse_rfc3339_or_none
from molt.policy.interruptions import Notice, read_annotation
from molt.policy.snapshot import NodeView
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

POLL_SECONDS = 2.0
QUEUE_RETRY_SECONDS = 15.0
UNCLAIMED_TTL = timedelta(minutes=15)
INTERRUPTION_RULE = "Interruption"


class NoticeQueue(Protocol):
    """Where notices come from (the AWS queue, or a test's)."""

    async def receive(self) -> list[Received]: ...

    async def delete(self, received: Received) -> None: ...


def node_of(nodes: list[NodeView], instance_id: str) -> NodeView | None:
    """The node whose providerID names ``instance_id`` (``aws:///zone/<id>``)."""
    suffix = f"/{instance_id}"
    return next((n for n in nodes if n.provider_id and n.provider_id.endswith(suffix)), None)


def is_duplicate(recorded: Notice | None, notice: Notice) -> bool:
    """Whether ``notice`` adds nothing to what the node already records."""
    if recorded is None:
        return False
    if recorded.id == notice.id and recorded.kind == notice.kind:
        return True
    # An urgent notice is never replaced by another, nor by a mere recommendation.
    return recorded.urgent and (notice.kind == recorded.kind or not notice.urgent)


class InterruptionReconciler:
    """One pass over the queue: record what arrived, delete what was recorded."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        metrics: Metrics,
        queue: NoticeQueue,
        *,
        on_selected: Callable[[str], None] = lambda _: None,
        idle_seconds: float = POLL_SECONDS,
    ) -> None:
        self.reads = reads
        self.idle_seconds = idle_seconds
        """When to look again after a short batch (a queue that wakes the controller
        when a message arrives, as the simulator's does, can be looked at rarely)."""
        self.writes = writes
        self.clock = clock
        self.metrics = metrics
        self.queue = queue
        self.on_selected = on_selected
        self._unclaimed: set[str] = set()
        """Message ids already logged as unclaimed."""
        self._recorded: dict[str, datetime] = {}
        """Notice id -> when it was recorded: a redelivery after its node is gone is
        recognised and deleted at once."""

    async def reconcile(self) -> float:
        if not self.reads.synced():
            return 1.0
        try:
            batch = await self.queue.receive()
        except ProviderError as error:
            log.warning("interruptions.unreadable", error=str(error))
            return QUEUE_RETRY_SECONDS
        now = self.clock.now()
        for seen in [k for k, at in self._recorded.items() if now - at > UNCLAIMED_TTL]:
            del self._recorded[seen]
        for received in batch:
            if received.notice is None:
                log.info("interruptions.ignored", message=received.message_id)
                await self._delete(received)
                continue
            if received.notice.id and received.notice.id in self._recorded:
                log.info("interruptions.duplicate", id=received.notice.id)
                await self._delete(received)
                continue
            node = node_of(self.reads.nodes(), received.notice.instance_id)
            if node is None:
                await self._unclaimed_notice(received, received.notice, now)
                continue
            await self._record(node, received.notice, now)
            if received.notice.id:
                self._recorded[received.notice.id] = now
            await self._delete(received)
        return 0.0 if len(batch) >= 10 else self.idle_seconds

    async def _delete(self, received: Received) -> None:
        try:
            await self.queue.delete(received)
        except ProviderError as error:  # redelivered later: a duplicate then, harmless
            log.warning("interruptions.not_deleted", error=str(error))
        self._unclaimed.discard(received.message_id)

    async def _unclaimed_notice(self, received: Received, notice: Notice, now: datetime) -> None:
        if now - notice.at > UNCLAIMED_TTL:
            log.info("interruptions.expired", instance=notice.instance_id, kind=notice.kind)
            await self._delete(received)
        elif received.message_id not in self._unclaimed:
            self._unclaimed.add(received.message_id)
            log.info("interruptions.unclaimed", instance=notice.instance_id, kind=notice.kind)

    async def _record(self, node: NodeView, notice: Notice, now: datetime) -> None:
        recorded = read_annotation(node.annotations.get(INTERRUPTION_ANNOTATION))
        if is_duplicate(recorded, notice):
            log.info("interruptions.duplicate", node=node.name, kind=notice.kind, id=notice.id)
            return
        annotations: dict[str, str | None] = {INTERRUPTION_ANNOTATION: notice.annotation()}
        labels: dict[str, str | None] | None = None
        if notice.urgent and not node.in_pipeline:
            labels = {STATE_LABEL: SELECTED}
            annotations[REASON_ANNOTATION] = notice.describe()
            annotations[SELECTED_AT_ANNOTATION] = format_rfc3339(now)
        if notice.urgent and notice.deadline is not None:
            before = parse_rfc3339_or_none(node.annotations.get(DEADLINE_ANNOTATION))
            if before is None or notice.deadline < before or not node.in_pipeline:
                annotations[DEADLINE_ANNOTATION] = format_rfc3339(notice.deadline)
        if not await self.writes.patch_node(node.name, labels=labels, annotations=annotations):
            return
        if not notice.urgent:
            await self.writes.record_event(node, "RebalanceRecommended", notice.describe())
            return
        self.metrics.decisions.labels(reason=INTERRUPTION_RULE).inc()
        log.warning("node.interrupted", node=node.name, kind=notice.kind, id=notice.id)
        await self.writes.record_event(
            node, "Interrupted", f"{notice.describe()}: draining at once", warning=True
        )
        self.on_selected(node.name)
