"""Applies a group's post-launch manifests for each of its nodes, and removes them when
the node goes (key ``manifests/<group>``).

A node gets its objects once it has joined and, where a manifest names
``{{ .Node.InternalIP }}``, once it has an address. Each object is server-side applied
with an owner reference to its Node (garbage collection removes it with the Node) and the
labels ``molt.dev/node``, ``molt.dev/post-launch`` and ``molt.dev/instance-group``. Every
pass also lists the group's objects of each manifest's kind and deletes those whose node
is gone or is another Node of the same name: garbage collection cannot be relied on for
that (it may be slow, kube-controller-manager may be down, an owner reference may have
been removed), and a controller killed between a node's deletion and the clean-up finds
its leftovers on the next pass.

What a pass applies is remembered (node uid, entry, digest of the rendered object), so
a steady group costs one LIST per manifest kind per pass and no writes. An error (a
placeholder the node cannot fill, a kind the API server does not serve, a refusal) is
reported in an Event on the node and one on the group, once per distinct error, and the
pass carries on with the other nodes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import structlog

from molt.api.instancegroup import InstanceGroup
from molt.api.labels import GROUP_LABEL, MANIFEST_ENTRY_LABEL, MANIFEST_NODE_LABEL
from molt.api.manifests import PostLaunchManifest
from molt.policy.node_template import TemplateError, render_object, uses_address
from molt.policy.snapshot import NodeView
from molt.ports import Clock, ClusterReads, ClusterWrites, ObjectRef

log = structlog.get_logger(__name__)

APPLIED_REASON = "PostLaunchApplied"
FAILED_REASON = "PostLaunchFailed"
REMOVED_REASON = "PostLaunchRemoved"
RESYNC_SECONDS = 60.0
RETRY_SECONDS = 10.0
NOT_SYNCED_REQUEUE = 1.0


def desired_object(entry: PostLaunchManifest, node: NodeView, group: str) -> dict[str, Any]:
    """The object ``entry`` describes for ``node``: rendered, labelled, owned by the Node."""
    body: dict[str, Any] = render_object(entry.manifest, node)
    meta = body.setdefault("metadata", {})
    meta["labels"] = {
        **(meta.get("labels") or {}),
        MANIFEST_NODE_LABEL: node.name,
        MANIFEST_ENTRY_LABEL: entry.name,
        GROUP_LABEL: group,
    }
    if node.uid:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}
        ]
    return body


def digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def joined(node: NodeView, entry: PostLaunchManifest) -> bool:
    """Whether ``node`` is ready for ``entry``: it exists, and has an address if asked."""
    return not uses_address(entry.manifest) or bool(node.addresses)


class ManifestReconciler:
    """One group at a time: apply what its nodes need, delete what no node needs."""

    def __init__(self, reads: ClusterReads, writes: ClusterWrites, clock: Clock) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self._applied: dict[str, dict[tuple[str, str], str]] = {}
        """group -> (node uid, entry) -> digest of what was last applied."""
        self._reported: dict[str, set[tuple[str, str, str]]] = {}
        """group -> (node, entry, error) already reported in Events."""
        self._kinds: dict[str, set[tuple[str, str]]] = {}
        """group -> (apiVersion, kind) of every entry seen, so an entry taken out of the
        list still has its objects swept."""

    def wants(self, node: NodeView | None) -> bool:
        """Whether a node change may concern post-launch manifests (cheap)."""
        if node is None or node.group is None:
            return False
        group = self.reads.instance_group(node.group)
        return group is not None and bool(group.spec.lifecycle.post_launch)

    async def reconcile(self, name: str) -> float | None:
        if not self.reads.synced():
            return NOT_SYNCED_REQUEUE
        group = self.reads.instance_group(name)
        entries: Sequence[PostLaunchManifest] = (
            group.spec.lifecycle.post_launch if group is not None else ()
        )
        nodes = {node.name: node for node in self.reads.group_nodes(name)}
        applied = self._applied.setdefault(name, {})
        live = {(node.uid or node.name, entry.name) for node in nodes.values() for entry in entries}
        for key in set(applied) - live:
            del applied[key]
        reported = self._reported.setdefault(name, set())
        names = {entry.name for entry in entries}
        reported -= {r for r in reported if r[0] not in nodes or r[1] not in names}
        waiting = False
        for node in nodes.values():
            for entry in entries:
                waiting = not await self._apply(name, entry, node, applied) or waiting
        kinds = self._kinds.setdefault(name, set())
        kinds |= {(e.manifest["apiVersion"], e.manifest["kind"]) for e in entries}
        for api_version, kind in sorted(kinds):
            await self._sweep(name, api_version, kind, entries, nodes)
        if group is None:
            for memory in (self._applied, self._reported, self._kinds):
                memory.pop(name, None)
            return None
        if not entries:
            return None
        return RETRY_SECONDS if waiting else RESYNC_SECONDS

    async def _apply(
        self,
        group: str,
        entry: PostLaunchManifest,
        node: NodeView,
        applied: dict[tuple[str, str], str],
    ) -> bool:
        """Apply ``entry`` for ``node`` unless it is applied already; False: not done."""
        if not joined(node, entry):
            return False  # no address yet: look again soon
        try:
            body = desired_object(entry, node, group)
            ref = ObjectRef.of(body)
        except (TemplateError, ValueError) as error:
            await self._report(group, entry, node, str(error))
            return False
        key = (node.uid or node.name, entry.name)
        wanted = digest(body)
        if applied.get(key) == wanted:
            return True
        try:
            await self.writes.apply_object(body)
        except Exception as error:  # the API server's refusal, an unknown kind, a timeout
            await self._report(group, entry, node, f"cannot apply {ref}: {error}")
            return False
        first = key not in applied
        applied[key] = wanted
        log.info("manifest.applied", group=group, node=node.name, entry=entry.name, object=str(ref))
        if first:
            await self.writes.record_event(node, APPLIED_REASON, f"applied {ref} ({entry.name})")
        return True

    async def _sweep(
        self,
        group: str,
        api_version: str,
        kind: str,
        entries: Sequence[PostLaunchManifest],
        nodes: dict[str, NodeView],
    ) -> None:
        """Delete the group's objects of one kind that no living node's entry needs."""
        try:
            found = await self.writes.list_objects(
                api_version, kind, None, label_selector=f"{GROUP_LABEL}={group}"
            )
        except Exception as error:  # a kind no longer served, a refusal: try next pass
            log.warning("manifest.list_failed", group=group, kind=kind, error=str(error))
            return
        names = {entry.name for entry in entries}
        for body in found:
            meta = body.get("metadata") or {}
            labels = meta.get("labels") or {}
            node = nodes.get(str(labels.get(MANIFEST_NODE_LABEL, "")))
            owners = {
                o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Node"
            }
            if (
                node is not None
                and (not owners or node.uid in owners)
                and labels.get(MANIFEST_ENTRY_LABEL) in names
            ):
                continue
            ref = ObjectRef(api_version, kind, str(meta.get("name")), meta.get("namespace"))
            if await self.writes.delete_object(ref):
                log.info("manifest.removed", group=group, object=str(ref))
                await self.writes.record_resource_event(
                    InstanceGroup,
                    group,
                    REMOVED_REASON,
                    f"removed {ref}: node {labels.get(MANIFEST_NODE_LABEL)} no longer needs it",
                )

    async def _report(
        self, group: str, entry: PostLaunchManifest, node: NodeView, error: str
    ) -> None:
        log.warning("manifest.failed", group=group, node=node.name, entry=entry.name, error=error)
        reported = self._reported.setdefault(group, set())
        key = (node.name, entry.name, error)
        if key in reported:
            return
        reported.add(key)
        message = f"post-launch manifest {entry.name}: {error}"
        await self.writes.record_event(node, FAILED_REASON, message, warning=True)
        await self.writes.record_resource_event(
            InstanceGroup, group, FAILED_REASON, f"node {node.name}: {message}", warning=True
        )
