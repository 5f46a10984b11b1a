"""An observer that follows pods and nodes through watch streams, for assertions that
something *never* happened (kwok acts within milliseconds: polling would miss it).

``PodNodeStreams`` records, per pod, the node it was bound to, whether it was ever
Running, and the etcd revision (resourceVersion) at which its deletion started; per node,
the revision of its deletion and the moments it was cordoned and became Ready. Since
resourceVersions are etcd revisions, one total order over both streams, "a pod was still
running, its deletion not started, when its node was deleted" is decided exactly, however
late either stream delivers.

``GroupStreams`` follows one InstanceGroup and its nodes: every revision ever reported
Degraded, every current revision in turn, the most group nodes NotReady at one moment,
the nodes that fell from Ready to NotReady, and the nodes that joined or went.
``SelectionStream`` orders node selections against Watchdog states by etcd revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.kube.transport import ApiError, RawApi


async def follow(
    raw: RawApi,
    path: str,
    query: list[tuple[str, str]],
    handle: Callable[[str, dict[str, Any]], None],
    listed: asyncio.Event,
) -> None:
    """List ``path`` (with ``query``), then watch it for good: ``handle(type, object)`` for
    every item listed (as ``ADDED``) and every event; ``listed`` is set once the list is in.

    A watch that expires (410) fails the test, with one exception: after the API server
    itself was away (a fault test stops it), a fresh API server cannot resume from an old
    version, so the collection is listed again, objects gone meanwhile are handed over as
    ``DELETED`` at the new version and the rest as ``MODIFIED``. Nothing can change while
    no API server runs, so only what happened in the moment before it stopped could be
    seen late; the relist is counted in ``RELISTS``."""
    items, version = await raw.list_all(path, query)
    known: dict[str, dict[str, Any]] = {}
    for item in items:
        known[item["metadata"]["uid"]] = item
        handle("ADDED", item)
    listed.set()
    reconnected = False
    while True:  # resumed from the last version when the server ends a stream
        watch_query = [*query, ("resourceVersion", version), ("allowWatchBookmarks", "true")]
        try:
            async for event in raw.watch(path, watch_query, timeout_seconds=600):
                obj = event["object"]
                if event["type"] == "ERROR":
                    if reconnected and obj.get("code") == 410:
                        version = await _relist(raw, path, query, handle, known)
                        RELISTS[path] = RELISTS.get(path, 0) + 1
                        break
                    raise RuntimeError(f"watch {path} failed (a lost event fails the test): {obj}")
                reconnected = False
                version = obj["metadata"].get("resourceVersion", version)
                if event["type"] == "BOOKMARK":
                    continue
                if event["type"] == "DELETED":
                    known.pop(obj["metadata"]["uid"], None)
                else:
                    known[obj["metadata"]["uid"]] = obj
                handle(event["type"], obj)
        except (TimeoutError, aiohttp.ClientError, OSError):
            # The API server is away: resume from the last version once it answers.
            reconnected = True
            await asyncio.sleep(0.5)
        except (ApiError, ApiException) as error:
            if getattr(error, "status", 0) < 500:
                raise
            reconnected = True
            await asyncio.sleep(0.5)  # the API server is up but its etcd is not


RELISTS: dict[str, int] = {}
"""Collections listed again after an API server restart expired their watch."""


async def _relist(
    raw: RawApi,
    path: str,
    query: list[tuple[str, str]],
    handle: Callable[[str, dict[str, Any]], None],
    known: dict[str, dict[str, Any]],
) -> str:
    items, version = await raw.list_all(path, query)
    present = {item["metadata"]["uid"]: item for item in items}
    for uid, gone in list(known.items()):
        if uid not in present:
            meta = {**gone["metadata"], "resourceVersion": version}
            handle("DELETED", {**gone, "metadata": meta})
            del known[uid]
    for uid, item in present.items():
        known[uid] = item
        handle("MODIFIED", item)
    return version


@dataclass
class PodTrace:
    name: str
    node: str | None = None
    ran: bool = False
    daemonset: bool = False
    deletion_rv: int | None = None
    bound_rv: int | None = None


@dataclass
class NodeTrace:
    deleted_rv: int | None = None
    cordoned_rv: int | None = None
    group: str | None = None
    ready_in_group_at_cordon: int | None = None


@dataclass
class PodNodeStreams:
    """Follows every pod and node of the cluster from the moment ``start`` returns."""

    pods: dict[str, PodTrace] = field(default_factory=dict)
    nodes: dict[str, NodeTrace] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, kube: client.ApiClient) -> None:
        raw = RawApi(kube)
        listed = asyncio.Event(), asyncio.Event()
        self.tasks = [
            asyncio.create_task(self._follow(raw, "/api/v1/pods", self._pod, listed[0])),
            asyncio.create_task(self._follow(raw, "/api/v1/nodes", self._node, listed[1])),
        ]
        await asyncio.gather(listed[0].wait(), listed[1].wait())

    async def stop(self) -> None:
        """Stop following; a stream that had failed (events lost) fails the test here."""
        for task in self.tasks:
            task.cancel()
        ended = await asyncio.gather(*self.tasks, return_exceptions=True)
        for result in ended:
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                raise AssertionError(f"a watch stream failed, events may be lost: {result!r}")

    async def _follow(self, raw: RawApi, path: str, handle: Any, listed: asyncio.Event) -> None:
        await follow(raw, path, [], handle, listed)

    def _pod(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        trace = self.pods.setdefault(meta["uid"], PodTrace(f"{meta['namespace']}/{meta['name']}"))
        bound = (obj.get("spec") or {}).get("nodeName")
        if bound and trace.bound_rv is None:
            trace.bound_rv = int(meta["resourceVersion"])
        trace.node = bound or trace.node
        trace.daemonset = any(
            o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []
        )
        deleting = meta.get("deletionTimestamp") is not None or kind == "DELETED"
        if (obj.get("status") or {}).get("phase") == "Running" and not deleting:
            trace.ran = True
        if deleting and trace.deletion_rv is None:
            trace.deletion_rv = int(meta["resourceVersion"])

    def _node(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name = meta["name"]
        trace = self.nodes.setdefault(name, NodeTrace())
        trace.group = (meta.get("labels") or {}).get("molt.dev/instance-group") or trace.group
        if kind == "DELETED":
            trace.deleted_rv = int(meta["resourceVersion"])
            self.ready.pop(name, None)
            return
        conditions = (obj.get("status") or {}).get("conditions") or []
        self.ready[name] = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
        )
        if (obj.get("spec") or {}).get("unschedulable") and trace.cordoned_rv is None:
            trace.cordoned_rv = int(meta["resourceVersion"])
            trace.ready_in_group_at_cordon = sum(
                1
                for other, ready in self.ready.items()
                if ready and self.nodes[other].group == trace.group
            )

    def died_with_their_node(self) -> list[str]:
        """Pods that had run on a node and whose deletion had not started when it went."""
        found = []
        for pod in self.pods.values():
            node = self.nodes.get(pod.node or "")
            if node is None or node.deleted_rv is None or not pod.ran or pod.daemonset:
                continue
            if pod.deletion_rv is None or pod.deletion_rv > node.deleted_rv:
                found.append(
                    f"{pod.name} on {pod.node} (bound at {pod.bound_rv}, deletion at "
                    f"{pod.deletion_rv}, node deleted at {node.deleted_rv})"
                )
        return sorted(found)


def _ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class GroupStreams:
    """Follows one InstanceGroup's status and its nodes from the moment ``start`` returns."""

    group: str
    current: list[str] = field(default_factory=list)
    """``status.currentRevision`` as reported, each change once, in order."""
    degraded: dict[str, str] = field(default_factory=dict)
    """Revisions ever reported Degraded -> the message then."""
    degraded_conditions: list[str] = field(default_factory=list)
    """Messages of every ``Degraded=True`` condition reported."""
    members: set[str] = field(default_factory=set)
    not_ready: set[str] = field(default_factory=set)
    most_not_ready: int = 0
    """The most group nodes NotReady at one moment."""
    whole_group_not_ready: int = 0
    """The largest group whose every node was NotReady at one moment."""
    fell: set[str] = field(default_factory=set)
    """Nodes seen Ready, then NotReady."""
    joined: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _was_ready: set[str] = field(default_factory=set)

    async def start(self, kube: client.ApiClient) -> None:
        raw = RawApi(kube)
        listed = asyncio.Event(), asyncio.Event()
        group_path = "/apis/molt.dev/v1alpha1/instancegroups"
        by_name = [("fieldSelector", f"metadata.name={self.group}")]
        in_group = [("labelSelector", f"molt.dev/instance-group={self.group}")]
        self.tasks = [
            asyncio.create_task(follow(raw, group_path, by_name, self._group, listed[0])),
            asyncio.create_task(follow(raw, "/api/v1/nodes", in_group, self._node, listed[1])),
        ]
        await asyncio.gather(listed[0].wait(), listed[1].wait())
        self.joined.clear()  # only nodes that join from now on

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _group(self, kind: str, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        current = status.get("currentRevision")
        if current and (not self.current or self.current[-1] != current):
            self.current.append(current)
        for revision in status.get("revisions") or []:
            if revision.get("state") == "Degraded":
                self.degraded.setdefault(revision["name"], revision.get("message") or "")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Degraded" and condition.get("status") == "True":
                self.degraded_conditions.append(condition.get("message") or "")

    def _node(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.members.discard(name)
            self.not_ready.discard(name)
            self.gone.append(name)
            return
        if name not in self.members:
            self.members.add(name)
            self.joined.append(name)
        if _ready(obj):
            self.not_ready.discard(name)
            self._was_ready.add(name)
        else:
            self.not_ready.add(name)
            if name in self._was_ready:
                self.fell.add(name)
        self.most_not_ready = max(self.most_not_ready, len(self.not_ready))
        if self.not_ready == self.members:
            self.whole_group_not_ready = max(self.whole_group_not_ready, len(self.members))


@dataclass
class SelectionStream:
    """Follows Nodes and Watchdogs and records, in etcd revision order, each node's first
    ``molt.dev/state`` label and each change of a watchdog's ``status.state``: "no node was
    selected while the watchdog failed" is then decided exactly, not by a poll at the end."""

    watchdog_path: str
    selected: dict[str, int] = field(default_factory=dict)
    """Node -> the revision at which it first carried a molt.dev/state label."""
    states: list[tuple[int, str, str]] = field(default_factory=list)
    """(revision, watchdog, state) at each state change."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, kube: client.ApiClient) -> None:
        raw = RawApi(kube)
        listed = asyncio.Event(), asyncio.Event()
        self.tasks = [
            asyncio.create_task(follow(raw, "/api/v1/nodes", [], self._node, listed[0])),
            asyncio.create_task(follow(raw, self.watchdog_path, [], self._watchdog, listed[1])),
        ]
        await asyncio.gather(listed[0].wait(), listed[1].wait())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _node(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if kind != "DELETED" and "molt.dev/state" in (meta.get("labels") or {}):
            self.selected.setdefault(meta["name"], int(meta["resourceVersion"]))

    def _watchdog(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        state = (obj.get("status") or {}).get("state") or "Unknown"
        if kind == "DELETED":
            return
        last = next((s for _, n, s in reversed(self.states) if n == meta["name"]), None)
        if state != last:
            self.states.append((int(meta["resourceVersion"]), meta["name"], state))

    def state_at(self, watchdog: str, revision: int) -> str:
        """The watchdog's state as of ``revision``."""
        found = "Unknown"
        for rv, name, state in self.states:
            if name == watchdog and rv <= revision:
                found = state
        return found
