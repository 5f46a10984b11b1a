"""The controller's writes to the API server (the ``ClusterWrites`` port).

Every mutating call first checks the leadership fence, so a replica that lost its Lease
writes nothing more, and waits its turn in a token bucket so a burst of work cannot flood
the API server. A write's response goes straight into the node cache, so the next
decision already counts it (a node just selected uses budget at once). ``DryRunWrites``
logs what would be written and writes nothing.

Events can be sent in the background (``background_events``, what ``molt run`` uses), as
client-go's event recorder does: an Event is for people, so the step that records one
does not wait a round trip for it. They are sent one at a time in the order recorded,
each through the fence and the token bucket; a full backlog drops the newest (logged),
and ``flush`` sends what is left before the process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from molt.api import GROUP as API_GROUP
from molt.api import VERSION as API_VERSION
from molt.api.resource import Resource
from molt.kube.objects import ResourcePaths
from molt.kube.projections import pdb_view, pod_view
from molt.kube.state import NODES, PDBS
from molt.kube.transport import ApiError, RawApi
from molt.kube.watch import Reflector
from molt.policy.age import format_rfc3339
from molt.policy.pdbs import PdbView
from molt.policy.registration import missing_taints
from molt.policy.snapshot import NodeTaint, NodeView, PodView
from molt.ports import EvictionOutcome, EvictionResult, ObjectRef, WatchEvent

log = structlog.get_logger(__name__)

EVENT_NAMESPACE = "default"
COMPONENT = "molt"
FIELD_MANAGER = "molt"
REGISTRATION_ATTEMPTS = 3
EVENT_BACKLOG = 1000
"""Events recorded but not yet sent, at most (background events only)."""
"""A node's status changes often (heartbeats): a conflicting taint write is redone."""


class TokenBucket:
    """At most ``rate`` calls per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._tokens = 1
                self._stamp = time.monotonic()
            self._tokens -= 1


def classify_eviction_error(error: ApiError) -> EvictionResult:
    """Map the Eviction API's answers (see REFERENCE: The Eviction API) to outcomes."""
    if error.status in (404, 409):
        # 404: the pod is gone; 409: the UID precondition failed, so this pod is gone and
        # a new one of the same name is not ours to evict.
        return EvictionResult(EvictionOutcome.GONE, error.message)
    if error.status == 429:
        # A PDB allows no disruption now (no Retry-After is sent; we back off ourselves).
        # The cause names the budget: "The disruption budget web needs 4 healthy pods and
        # has 4 currently", which the drain's blocked report quotes.
        return EvictionResult(
            EvictionOutcome.PDB_BLOCKED, " ".join([error.message, *error.cause_messages])
        )
    if error.status == 500 and "more than one" in error.message.lower():
        return EvictionResult(EvictionOutcome.MULTIPLE_PDBS, error.message)
    if error.status == 403 and "NamespaceTerminating" in [*error.causes, error.reason]:
        return EvictionResult(EvictionOutcome.NAMESPACE_TERMINATING, error.message)
    return EvictionResult(EvictionOutcome.FAILED, str(error))


class KubeWrites:
    """Fenced, rate-limited writes through the raw transport."""

    def __init__(
        self,
        raw: RawApi,
        *,
        check_fence: Callable[[], None],
        nodes_cache: Reflector[NodeView] | None = None,
        rate: float = 20.0,
        burst: int = 40,
        background_events: bool = False,
    ) -> None:
        self.raw = raw
        self.paths = ResourcePaths(raw)
        self.check_fence = check_fence
        self.nodes_cache = nodes_cache
        self.bucket = TokenBucket(rate, burst)
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] | None = (
            asyncio.Queue(EVENT_BACKLOG) if background_events else None
        )
        self._sender: asyncio.Task[None] | None = None

    async def _before_write(self) -> None:
        await self.bucket.take()
        # Checked after waiting for a token: the Lease may have been lost meanwhile.
        self.check_fence()

    async def patch_node(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        unschedulable: bool | None = None,
    ) -> bool:
        await self._before_write()
        body: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        if meta:
            body["metadata"] = meta
        if unschedulable is not None:
            body["spec"] = {"unschedulable": unschedulable}
        try:
            updated = await self.raw.merge_patch(f"{NODES}/{name}", body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        if self.nodes_cache is not None:
            self.nodes_cache.observe_write(updated)
        return True

    async def register_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        taints: Sequence[NodeTaint],
    ) -> bool:
        # spec.taints has no merge key: a patch replaces the whole list. So read the node,
        # add what is missing and write under its resourceVersion; a 409 means someone
        # (the node controller, the kubelet) changed it meanwhile, and we merge again.
        for attempt in range(REGISTRATION_ATTEMPTS):
            await self._before_write()
            try:
                current = await self.raw.get(f"{NODES}/{name}")
            except ApiError as error:
                if error.status == 404:
                    return False
                raise
            meta = current.get("metadata") or {}
            existing = list((current.get("spec") or {}).get("taints") or [])
            added = missing_taints(
                ((str(t.get("key", "")), str(t.get("effect", ""))) for t in existing), taints
            )
            body: dict[str, Any] = {
                "metadata": {
                    "labels": labels,
                    "annotations": annotations,
                    "resourceVersion": meta.get("resourceVersion"),
                }
            }
            if added:
                body["spec"] = {"taints": existing + [_taint_json(t) for t in added]}
            try:
                updated = await self.raw.merge_patch(f"{NODES}/{name}", body)
            except ApiError as error:
                if error.status == 404:
                    return False
                if error.status == 409 and attempt + 1 < REGISTRATION_ATTEMPTS:
                    continue
                raise
            if self.nodes_cache is not None:
                self.nodes_cache.observe_write(updated)
            return True
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def evict(self, pod: PodView) -> EvictionResult:
        await self._before_write()
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "deleteOptions": {"preconditions": {"uid": pod.uid}},
        }
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction"
        try:
            await self.raw.request("create", "POST", path, body=body)
        except ApiError as error:
            return classify_eviction_error(error)
        return EvictionResult(EvictionOutcome.EVICTED)

    async def list_pods_now(self, node: str) -> list[PodView]:
        # No resourceVersion in the query: the API server answers from etcd (a quorum
        # read), never from its watch cache.
        items, _ = await self.raw.list_all(
            "/api/v1/pods", [("fieldSelector", f"spec.nodeName={node}")]
        )
        return [pod_view(item) for item in items]

    async def list_pdbs_now(self) -> list[PdbView]:
        items, _ = await self.raw.list_all(PDBS)
        return [pdb_view(item) for item in items]

    async def read_pdb(self, namespace: str, name: str) -> PdbView | None:
        try:
            found = await self.raw.get(
                f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}"
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return pdb_view(found)

    async def delete_pod(self, pod: PodView) -> None:
        await self._before_write()
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
        try:
            await self.raw.delete(path, {"preconditions": {"uid": pod.uid}})
        except ApiError as error:
            if error.status not in (404, 409):
                raise

    async def read_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            return await self.raw.get(await self.paths.path(ref))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def watch_object(
        self, ref: ObjectRef, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncGenerator[WatchEvent, None]:
        path = await self.paths.collection(ref.api_version, ref.kind, ref.namespace)
        query = [("fieldSelector", f"metadata.name={ref.name}")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        try:
            async for event in self.raw.watch(path, query, timeout_seconds):
                kind = str(event.get("type"))
                found = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(found.get("code", 500)), found, "WATCH", path)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield WatchEvent(kind, found)
        except ApiError as error:
            if error.status != 410:
                raise
            log.info("watch.expired", object=str(ref), resource_version=resource_version)
        except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as error:
            # A broken stream ends the watch like a closed one: the caller's next read
            # either resumes or reports an API server that is really unreachable.
            log.info("watch.broken", object=str(ref), error=repr(error))

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        path = await self.paths.collection(api_version, kind, namespace)
        items, _ = await self.raw.list_all(path, query)
        return items

    async def create_object(self, body: dict[str, Any]) -> bool:
        ref = ObjectRef.of(body)
        path = await self.paths.collection(ref.api_version, ref.kind, ref.namespace)
        await self._before_write()
        try:
            await self.raw.create(path, body)
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        return True

    async def apply_object(self, body: dict[str, Any]) -> None:
        path = await self.paths.path(ObjectRef.of(body))
        await self._before_write()
        await self.raw.apply(path, body, FIELD_MANAGER)

    async def delete_object(self, ref: ObjectRef) -> bool:
        path = await self.paths.path(ref)
        await self._before_write()
        try:
            await self.raw.delete(path, {"propagationPolicy": "Background"})
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def delete_node(self, name: str) -> bool:
        await self._before_write()
        try:
            await self.raw.delete(f"{NODES}/{name}")
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        if self.nodes_cache is not None:
            self.nodes_cache.observe_delete(name)
        return True

    async def force_delete_pod(self, pod: PodView) -> bool:
        await self._before_write()
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod.uid}}
        try:
            await self.raw.delete(path, body)
        except ApiError as error:
            if error.status in (404, 409):  # gone, or a new pod of that name: not ours
                return False
            raise
        return True

    async def list_finished_pods_now(self, phase: str) -> list[PodView]:
        # One field-selected LIST per phase, paged by list_all: finished pods are few
        # against a cluster's running ones, and the reaper asks once per pass, so this
        # costs less than a cluster-wide pod watch (which Molt never runs).
        items, _ = await self.raw.list_all(
            "/api/v1/pods", [("fieldSelector", f"status.phase=={phase}")]
        )
        return [pod_view(item) for item in items]

    async def namespace_labels_now(self) -> dict[str, dict[str, str]]:
        items, _ = await self.raw.list_all("/api/v1/namespaces")
        return {
            item["metadata"]["name"]: dict(item["metadata"].get("labels") or {}) for item in items
        }

    async def record_pod_event(
        self, pod: PodView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        involved = {"kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid}
        await self._record(involved, reason, message, warning=warning, namespace=pod.namespace)

    async def record_resource_event(
        self, kind: type[Resource], name: str, reason: str, message: str, *, warning: bool = False
    ) -> None:
        involved = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": kind.names.kind,
            "name": name,
        }
        await self._record(involved, reason, message, warning=warning)

    async def record_event(
        self, node: NodeView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        involved = {"kind": "Node", "name": node.name, "uid": node.uid or node.name}
        await self._record(involved, reason, message, warning=warning)

    async def _record(
        self,
        involved: dict[str, str],
        reason: str,
        message: str,
        *,
        warning: bool,
        namespace: str = EVENT_NAMESPACE,
    ) -> None:
        stamp = format_rfc3339(datetime.now(UTC))
        event: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{involved['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        path = f"/api/v1/namespaces/{namespace}/events"
        if self._events is None:
            await self._before_write()
            await self._send_event(path, event)
            return
        self.check_fence()
        try:
            self._events.put_nowait((path, event))
        except asyncio.QueueFull:
            log.warning("event.not_recorded", on=involved["name"], reason=reason, error="backlog")
            return
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_events(), name="events")

    async def _send_event(self, path: str, event: dict[str, Any]) -> None:
        try:
            await self.raw.create(path, event)
        except ApiError as error:
            # An Event is for people; failing to record one must not stop the controller.
            log.warning(
                "event.not_recorded",
                on=event["involvedObject"]["name"],
                reason=event["reason"],
                error=str(error),
            )

    async def _send_events(self) -> None:
        """Send the backlog in order, each write behind the fence and the bucket."""
        assert self._events is not None
        while True:
            path, event = await self._events.get()
            try:
                await self._before_write()
                await self._send_event(path, event)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the fence is lost, the connection aborted
                log.warning(
                    "event.not_recorded",
                    on=event["involvedObject"]["name"],
                    reason=event["reason"],
                    error=repr(error),
                )
            finally:
                self._events.task_done()

    async def flush(self, within: float = 5.0) -> None:
        """Send the Events still waiting (at most ``within`` seconds), then stop sending."""
        if self._sender is None:
            return
        if self._events is not None and not self._sender.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._events.join()
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        self._sender = None

    async def patch_status(self, kind: type[Resource], name: str, status: dict[str, Any]) -> None:
        collection = f"/apis/{API_GROUP}/{API_VERSION}/{kind.names.plural}"
        await self._before_write()
        try:
            await self.raw.merge_patch(f"{collection}/{name}/status", {"status": status})
        except ApiError as error:
            if error.status != 404:  # deleted meanwhile: nothing to report on
                raise


def _taint_json(taint: NodeTaint) -> dict[str, str]:
    found = {"key": taint.key, "effect": taint.effect}
    if taint.value is not None:
        found["value"] = taint.value
    return found


class DryRunWrites:
    """Logs each write it would make; changes nothing."""

    def __init__(self) -> None:
        self.would: list[str] = []

    def _note(self, text: str) -> None:
        self.would.append(text)
        log.info("dry_run.would", action=text)

    async def patch_node(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        unschedulable: bool | None = None,
    ) -> bool:
        self._note(f"patch node {name}: labels={labels} unschedulable={unschedulable}")
        return True

    async def register_node(
        self,
        name: str,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        taints: Sequence[NodeTaint],
    ) -> bool:
        self._note(f"register node {name}: labels={labels} taints={[t.key for t in taints]}")
        return True

    async def evict(self, pod: PodView) -> EvictionResult:
        self._note(f"evict pod {pod.key}")
        return EvictionResult(EvictionOutcome.FAILED, "dry run")

    async def list_pods_now(self, node: str) -> list[PodView]:
        return []  # a dry run never reaches the step that asks

    async def list_pdbs_now(self) -> list[PdbView]:
        return []  # a dry run selects nothing, so it never asks

    async def read_pdb(self, namespace: str, name: str) -> PdbView | None:
        return None  # a dry run evicts nothing, so no eviction of it was ever admitted

    async def delete_pod(self, pod: PodView) -> None:
        self._note(f"delete pod {pod.key}")

    async def delete_node(self, name: str) -> bool:
        self._note(f"delete node {name}")
        return True

    async def force_delete_pod(self, pod: PodView) -> bool:
        self._note(f"force-delete pod {pod.key}")
        return True

    async def list_finished_pods_now(self, phase: str) -> list[PodView]:
        return []  # molt run --dry-run runs no reaper (a Reaper's own dryRun reports)

    async def namespace_labels_now(self) -> dict[str, dict[str, str]]:
        return {}

    async def record_pod_event(
        self, pod: PodView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self._note(f"event on pod {pod.key}: {reason}: {message}")

    async def record_resource_event(
        self, kind: type[Resource], name: str, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self._note(f"event on {kind.names.kind} {name}: {reason}: {message}")

    async def record_event(
        self, node: NodeView, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self._note(f"event on node {node.name}: {reason}: {message}")

    async def patch_status(self, kind: type[Resource], name: str, status: dict[str, Any]) -> None:
        self._note(f"status of {kind.names.kind} {name}: {sorted(status)}")

    async def read_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        return None  # a dry run never runs lifecycle actions or probes

    async def watch_object(
        self, ref: ObjectRef, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncGenerator[WatchEvent, None]:
        return  # nothing is ever created, so nothing changes
        yield

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        return []

    async def create_object(self, body: dict[str, Any]) -> bool:
        self._note(f"create {ObjectRef.of(body)}")
        return True

    async def apply_object(self, body: dict[str, Any]) -> None:
        self._note(f"apply {ObjectRef.of(body)}")

    async def delete_object(self, ref: ObjectRef) -> bool:
        self._note(f"delete {ref}")
        return True
