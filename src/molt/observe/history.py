"""The decision history: every selection, step and group decision as a row in SQL.

``HistoryStore`` takes rows without ever waiting: they go into a bounded in-memory buffer
and a background task writes them in batches. The database calls are the blocking
SQLAlchemy ones, run in a worker thread (``asyncio.to_thread``): one code path for SQLite
and PostgreSQL (psycopg 3), the same engine the migrations (Alembic, synchronous) use, and
a store that hangs holds a thread, never the event loop. While the store is down the rows
stay buffered; once the buffer is full new rows are dropped and counted
(``molt_history_rows_dropped_total``), with a log line, and the controller runs on. The
task reconnects with a backoff and flushes what it kept. Rows older than the retention
are deleted now and then.

``HistoryWrites`` wraps the writes port: each Event a reconciler records also becomes a
row (group, revision and zone from the node's labels), and a group status that shows a
new revision, a new current revision or removed cells becomes a row too, since those
decisions have no Event of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, delete, insert, select
from sqlalchemy.engine import make_url

from molt.api.instancegroup import InstanceGroup
from molt.api.labels import (
    DEADLINE_ANNOTATION,
    POLICY_ANNOTATION,
    REASON_ANNOTATION,
)
from molt.api.resource import Resource
from molt.observe.history_schema import events
from molt.observe.metrics import Metrics
from molt.policy.pdbs import PdbView
from molt.policy.revisions import change_label
from molt.policy.snapshot import NodeTaint, NodeView, PodView
from molt.ports import (
    Clock,
    ClusterReads,
    ClusterWrites,
    EvictionResult,
    ObjectRef,
    WatchEvent,
)

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite:///molt-history.db"


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 here (not psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def display_url(url: str) -> str:
    """The store's URL fit for a message or a log: its password masked."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL may still hold a secret: show none of it
        return "(an unparsable URL)"


def make_engine(url: str) -> Engine:
    """An engine that fails fast when the store is away and checks pooled connections."""
    url = normalize_url(url)
    backend = make_url(url).get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        # Fail fast when the server is away, and never let one statement hang a thread.
        connect_args["connect_timeout"] = 3
        connect_args["options"] = "-c statement_timeout=15000"
    elif backend == "sqlite":
        connect_args["timeout"] = 5
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, target: str = "head") -> None:
    """Bring the schema to ``target`` (idempotent)."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), target)


@dataclass(frozen=True)
class HistoryOptions:
    url: str
    cluster: str = "default"
    bound: int = 10_000
    """Rows kept in memory while the store cannot take them."""
    batch: int = 500
    flush_interval: float = 1.0
    retention: timedelta | None = timedelta(days=30)
    retention_interval: float = 600.0


class HistoryStore:
    """A bounded buffer of rows and the task that writes them."""

    def __init__(self, options: HistoryOptions, clock: Clock, metrics: Metrics) -> None:
        self.options = options
        self.clock = clock
        self.metrics = metrics
        self.engine = make_engine(options.url)
        self._buffer: deque[dict[str, Any]] = deque()
        self._migrated = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._dropping = False
        self._last_retention = 0.0
        self.dropped = 0
        self.written = 0

    # Taking rows: never waits, never raises.

    def record(
        self,
        *,
        kind: str,
        name: str,
        reason: str,
        message: str = "",
        warning: bool = False,
        group: str | None = None,
        revision: str | None = None,
        zone: str | None = None,
        policy: str | None = None,
        change: str | None = None,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        if len(self._buffer) >= self.options.bound:
            self.dropped += 1
            self.metrics.history_dropped.inc()
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "history.dropping",
                    buffered=len(self._buffer),
                    bound=self.options.bound,
                    detail="the history store cannot keep up; new rows are dropped",
                )
            return
        self._buffer.append(
            {
                "time": at or self.clock.now(),
                "cluster": self.options.cluster,
                "kind": kind,
                "name": name,
                "group_name": group,
                "revision": revision,
                "zone": zone,
                "policy": policy,
                "reason": reason,
                "message": message,
                "warning": warning,
                "details": details,
                "change": change,
            }
        )
        self.metrics.history_buffered.set(len(self._buffer))
        if len(self._buffer) >= self.options.batch:
            self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # Writing them.

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        if not self._migrated:
            migrate(self.engine)
            self._migrated = True
        with self.engine.begin() as connection:
            connection.execute(insert(events), rows)

    def _delete_older_than(self, cutoff: datetime) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(events).where(
                    events.c.cluster == self.options.cluster, events.c.time < cutoff
                )
            )
            return int(result.rowcount or 0)

    async def flush(self) -> bool:
        """Write the buffer, batch by batch; False when the store refused (rows kept)."""
        while self._buffer:
            rows = list(islice(self._buffer, self.options.batch))
            try:
                await asyncio.to_thread(self._insert, rows)
            except Exception as error:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "history.store_down",
                        error=str(error).splitlines()[0][:300],
                        buffered=len(self._buffer),
                    )
                return False
            # Rows are only ever appended on the right (a full buffer refuses new ones), so
            # the first len(rows) are exactly the ones written.
            for _ in rows:
                self._buffer.popleft()
            self.written += len(rows)
            self.metrics.history_buffered.set(len(self._buffer))
            if self._down_since is not None:
                log.info(
                    "history.store_back",
                    after_seconds=round(time.monotonic() - self._down_since, 1),
                    dropped=self.dropped,
                )
                self._down_since = None
            self._dropping = False
        return True

    async def apply_retention(self) -> int:
        if self.options.retention is None:
            return 0
        cutoff = self.clock.now() - self.options.retention
        try:
            removed = await asyncio.to_thread(self._delete_older_than, cutoff)
        except Exception as error:
            log.warning("history.retention_failed", error=str(error).splitlines()[0][:300])
            return 0
        if removed:
            log.info("history.retention", removed=removed, before=cutoff.isoformat())
        return removed

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            ok = await self.flush()
            if ok and self._migrated:
                backoff = 1.0
                now = time.monotonic()
                if now - self._last_retention >= self.options.retention_interval:
                    self._last_retention = now
                    await self.apply_retention()
                wait = self.options.flush_interval
            else:
                wait = backoff
                backoff = min(backoff * 2, 10.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="history")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the task and write what is left, for at most ``grace`` seconds."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=grace)
        if self._buffer:
            log.warning("history.unwritten", rows=len(self._buffer))
        self.engine.dispose()


def _node_fields(node: NodeView) -> dict[str, Any]:
    return {
        "kind": "Node",
        "name": node.name,
        "group": node.group,
        "revision": node.revision,
        "zone": node.zone,
        "policy": node.annotations.get(POLICY_ANNOTATION),
    }


class HistoryWrites:
    """The writes port, with every Event and group decision also kept as a history row."""

    def __init__(
        self,
        inner: ClusterWrites,
        store: HistoryStore,
        reads: ClusterReads | None = None,
        *,
        acting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.inner = inner
        self.store = store
        self.reads = reads
        self.acting = acting
        """Whether this replica acts (holds the Lease): a standby's caches see the same
        nodes come and go, and must not record them twice."""
        self._marks: dict[str, dict[str, str]] = {}
        self._group_status: dict[str, dict[str, Any]] = {}

    # Recorded.

    async def record_event(
        self, node: NodeView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        await self.inner.record_event(node, reason, message, warning=warning)
        fields = _node_fields(node)
        marks = self._marks.get(node.name, {})
        fields["policy"] = fields["policy"] or marks.get(POLICY_ANNOTATION)
        details: dict[str, Any] | None = None
        if reason == "Selected":
            details = {
                "rule_reason": marks.get(REASON_ANNOTATION)
                or node.annotations.get(REASON_ANNOTATION),
                "deadline": marks.get(DEADLINE_ANNOTATION)
                or node.annotations.get(DEADLINE_ANNOTATION),
            }
        if reason == "NodeDeleted":
            self._marks.pop(node.name, None)
        self.store.record(
            **fields, reason=reason, message=message, warning=warning, details=details
        )

    async def record_resource_event(
        self, kind: type[Resource], name: str, reason: str, message: str, *, warning: bool = False
    ) -> None:
        await self.inner.record_resource_event(kind, name, reason, message, warning=warning)
        if kind is not InstanceGroup:
            return
        group = name
        self.store.record(
            kind="InstanceGroup",
            name=group,
            group=group,
            revision=self._current_revision(group),
            reason=reason,
            message=message,
            warning=warning,
        )

    async def patch_status(self, kind: type[Resource], name: str, status: dict[str, Any]) -> None:
        if kind is not InstanceGroup:
            await self.inner.patch_status(kind, name, status)
            return
        # The status as it was, read before the write: the cache may see the patch at once.
        before = self._group_status.get(name)
        if before is None and self.reads is not None:
            group = self.reads.instance_group(name)
            if group is not None and group.status is not None:
                before = _status_dict(group)
        await self.inner.patch_status(kind, name, status)
        self._group_status[name] = status
        for row in group_decisions(name, before, status):
            self.store.record(**row)

    async def patch_node(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        unschedulable: bool | None = None,
    ) -> bool:
        done = await self.inner.patch_node(
            name, labels=labels, annotations=annotations, unschedulable=unschedulable
        )
        if done and annotations:
            marks = self._marks.setdefault(name, {})
            for key in (POLICY_ANNOTATION, REASON_ANNOTATION, DEADLINE_ANNOTATION):
                value = annotations.get(key)
                if value:
                    marks[key] = value
        return done

    def _current_revision(self, group: str) -> str | None:
        status = self._group_status.get(group)
        if status is not None:
            return status.get("currentRevision")
        if self.reads is not None:
            found = self.reads.instance_group(group)
            if found is not None and found.status is not None:
                return found.status.current_revision
        return None

    # Seen in the caches: nodes joining, becoming Ready, leaving outside the pipeline.

    def node_changed(self, key: str, old: NodeView | None, new: NodeView | None) -> None:
        """A node-cache callback: the rows no Event gives, so a node's lifetime starts when
        it joins. Quiet until the caches have synced (a restart's first LIST is no news)."""
        if new is None:
            self._marks.pop(key, None)
        if not self.acting() or (self.reads is not None and not self.reads.synced()):
            return
        if new is not None and old is None:
            self.store.record(
                **_node_fields(new), reason="NodeJoined", message="the Node object appeared"
            )
        if new is not None and new.ready and (old is None or not old.ready):
            self.store.record(**_node_fields(new), reason="NodeReady", message="node is Ready")
        if new is None and old is not None and not old.in_pipeline:
            self.store.record(
                **_node_fields(old),
                reason="NodeRemoved",
                message="the Node object was deleted outside Molt's pipeline",
            )

    # Passed through.

    async def register_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        taints: Sequence[NodeTaint],
    ) -> bool:
        return await self.inner.register_node(
            name, labels=labels, annotations=annotations, taints=taints
        )

    async def evict(self, pod: PodView) -> EvictionResult:
        return await self.inner.evict(pod)

    async def list_pods_now(self, node: str) -> list[PodView]:
        return await self.inner.list_pods_now(node)

    async def list_pdbs_now(self) -> list[PdbView]:
        return await self.inner.list_pdbs_now()

    async def read_pdb(self, namespace: str, name: str) -> PdbView | None:
        return await self.inner.read_pdb(namespace, name)

    async def delete_pod(self, pod: PodView) -> None:
        await self.inner.delete_pod(pod)

    async def delete_node(self, name: str) -> bool:
        return await self.inner.delete_node(name)

    async def force_delete_pod(self, pod: PodView) -> bool:
        return await self.inner.force_delete_pod(pod)

    async def list_finished_pods_now(self, phase: str) -> list[PodView]:
        return await self.inner.list_finished_pods_now(phase)

    async def namespace_labels_now(self) -> dict[str, dict[str, str]]:
        return await self.inner.namespace_labels_now()

    async def record_pod_event(
        self, pod: PodView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        await self.inner.record_pod_event(pod, reason, message, warning=warning)

    async def read_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        return await self.inner.read_object(ref)

    def watch_object(
        self, ref: ObjectRef, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncGenerator[WatchEvent, None]:
        return self.inner.watch_object(ref, resource_version, timeout_seconds=timeout_seconds)

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self.inner.list_objects(
            api_version, kind, namespace, label_selector=label_selector
        )

    async def create_object(self, body: dict[str, Any]) -> bool:
        return await self.inner.create_object(body)

    async def apply_object(self, body: dict[str, Any]) -> None:
        await self.inner.apply_object(body)

    async def delete_object(self, ref: ObjectRef) -> bool:
        return await self.inner.delete_object(ref)


def _status_dict(group: InstanceGroup) -> dict[str, Any]:
    assert group.status is not None
    return group.status.model_dump(mode="json", by_alias=True, exclude_none=True)


def group_decisions(
    name: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows for what a group's new status shows that its last one did not: a revision
    created (with what changed), a new current revision (a rollout or a rollback), a
    revision with no nodes left and cells removed (garbage collection)."""
    rows: list[dict[str, Any]] = []
    old_revisions = {r["name"]: r for r in (before or {}).get("revisions", [])}
    new_revisions = {r["name"]: r for r in after.get("revisions", [])}
    current = after.get("currentRevision")
    old_current = (before or {}).get("currentRevision")
    known_templates = [r.get("template") for r in old_revisions.values() if r.get("template")]
    for revision, entry in new_revisions.items():
        if revision in old_revisions or not entry.get("template"):
            continue
        base = (old_revisions.get(old_current) or {}).get("template") if old_current else None
        if base is None and known_templates:
            base = known_templates[0]
        if base is None:
            others = [
                r.get("template")
                for n, r in new_revisions.items()
                if n != revision and r.get("template")
            ]
            base = others[0] if others else None
        label = change_label(base, entry["template"])
        rows.append(
            {
                "kind": "InstanceGroup",
                "name": name,
                "group": name,
                "revision": revision,
                "reason": "RevisionCreated",
                "message": f"revision {revision} ({label})",
                "change": label,
            }
        )
    if current and current != old_current:
        state = new_revisions.get(old_current or "", {}).get("state")
        rolled_back = state == "Degraded"
        rows.append(
            {
                "kind": "InstanceGroup",
                "name": name,
                "group": name,
                "revision": current,
                "reason": "RolledBack" if rolled_back else "RevisionCurrent",
                "message": (
                    f"capacity returned to revision {current} from degraded {old_current}"
                    if rolled_back
                    else f"revision {current} is current"
                    + (f" (was {old_current})" if old_current else "")
                ),
                "warning": rolled_back,
            }
        )

    for revision in old_revisions:
        if revision not in new_revisions:
            rows.append(
                {
                    "kind": "InstanceGroup",
                    "name": name,
                    "group": name,
                    "revision": revision,
                    "reason": "RevisionRemoved",
                    "message": f"revision {revision} has no nodes left and is forgotten",
                }
            )

    def cells(status: dict[str, Any] | None) -> set[tuple[str, str]]:
        return {(c["zone"], c["capacityType"]) for c in (status or {}).get("cells", [])}

    for zone, capacity in sorted(cells(before) - cells(after)):
        rows.append(
            {
                "kind": "InstanceGroup",
                "name": name,
                "group": name,
                "zone": zone,
                "reason": "CellRemoved",
                "message": f"cell {zone}/{capacity} removed",
            }
        )
    return rows


# Reading it back.


@dataclass(frozen=True)
class HistoryQuery:
    cluster: str | None = None
    node: str | None = None
    group: str | None = None
    since: datetime | None = None
    limit: int = 100_000


def read_history(url: str, query: HistoryQuery) -> list[dict[str, Any]]:
    """The matching rows, oldest first, with times in UTC."""
    engine = make_engine(url)
    try:
        statement = select(events)
        if query.cluster is not None:
            statement = statement.where(events.c.cluster == query.cluster)
        if query.node is not None:
            statement = statement.where(events.c.kind == "Node", events.c.name == query.node)
        if query.group is not None:
            statement = statement.where(events.c.group_name == query.group)
        if query.since is not None:
            statement = statement.where(events.c.time >= query.since)
        statement = statement.order_by(events.c.time, events.c.id).limit(query.limit)
        with engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(statement)]
    finally:
        engine.dispose()
    for row in rows:
        moment = row["time"]
        row["time"] = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return rows
