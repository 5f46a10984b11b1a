"""The kwok provider: a cell is a set of kwok-run Nodes that converges on a desired size.

Scaling a cell up creates, after the template's boot delay, Nodes that kwok runs as if a
kubelet had joined, labelled with the group, revision, zone and capacity type and
annotated with their launch time. Terminating deletes the Node. The cell sizes live in
this process (as an Auto Scaling group's would live in AWS); after a restart a cell's
size is its node count until the controller sets it again.

Faults, for tests and demos in the sandbox: the ConfigMap ``molt-kwok-faults`` in
``kube-system`` lists cells as ``zone/capacity-type`` patterns (``*`` matches anything)
under ``capacityErrors`` (launching there raises ``CapacityError``, like AWS's
``InsufficientInstanceCapacity``), ``launchErrors`` (launches fail and are reported
as failures) and ``notReady`` (launches succeed, but the nodes join without a kubelet
and never become Ready: a zone whose network or images are broken). A template with
``kwok.neverReady`` makes such nodes in every cell. Faults are read at each launch, so
nodes already running are not touched; a node's kubelet dies when its
``kwok.x-k8s.io/node`` annotation is changed from ``fake`` and kwok is restarted.

What an instance is: a kwok Node *is* its instance, and kwok runs it while the node
carries the annotation ``kwok.x-k8s.io/node`` (``fake``: kwok runs its kubelet; another
value such as ``dead`` or ``never-ready``: the machine is there, its kubelet is not). A
node with a ``kwok://`` providerID and no such annotation is one no kwok has any more:
its instance is gone (``instance_exists`` answers False), as an AWS node's is once EC2
says terminated.

Reboot (the ``Rebooter`` capability remediation uses): the simulated kubelet goes away
for the template's boot delay and comes back. The node's ``kwok.x-k8s.io/node`` turns
``rebooting`` (kwok stops playing its stages, though a running kwok still renews its
Lease) and its Ready condition ``Unknown``; when the delay is over it turns ``fake``
again and kwok reports it Ready at once, the way a kubelet that comes back does. That a
node that lost its kubelet (``dead``) comes back is the point: a reboot fixes it. One
that never had one (``never-ready``: a broken image) is restarted, and stays broken. The
end of a reboot is also on the node (``kwok.molt.dev/rebooting-until``), so a process
that restarts mid-reboot finishes it at the group's next ``observe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api.durations import parse_duration
from molt.api.instancegroup import Template
from molt.api.labels import (
    CAPACITY_TYPE_LABEL,
    GROUP_LABEL,
    KWOK_NODE_ANNOTATION,
    KWOK_REBOOT_UNTIL_ANNOTATION,
    LAUNCHED_AT_ANNOTATION,
    REVISION_LABEL,
    ZONE_LABEL,
)
from molt.cloud.kwok_nodes import kwok_node
from molt.cloud.provider import (
    CapacityError,
    CellObservation,
    CellRef,
    Instance,
    LaunchFailure,
    ProviderError,
)
from molt.policy.age import format_rfc3339, parse_rfc3339
from molt.policy.snapshot import NodeView

log = structlog.get_logger(__name__)

FAULTS_CONFIGMAP = "molt-kwok-faults"
FAULTS_NAMESPACE = "kube-system"
UNKNOWN = "unknown"
FAILURE_TAIL = 20
KWOK_PROVIDER_PREFIX = "kwok://"
NEVER_READY = "never-ready"
REBOOTING = "rebooting"
RUN_BY_KWOK = "fake"
DEFAULT_BOOT_SECONDS = 5.0
"""A reboot's length for a node whose group's template this process has not seen."""


def _cell_of(group: str, labels: dict[str, str]) -> CellRef:
    return CellRef(
        group,
        labels.get(REVISION_LABEL, UNKNOWN),
        labels.get(ZONE_LABEL, UNKNOWN),
        labels.get(CAPACITY_TYPE_LABEL, "on-demand"),
    )


def _matches(patterns: str, cell: CellRef) -> bool:
    wanted = f"{cell.zone}/{cell.capacity_type}"
    return any(
        fnmatchcase(wanted, pattern.strip())
        for pattern in patterns.replace(",", "\n").splitlines()
        if pattern.strip()
    )


class KwokProvider:
    """Sizes cells of kwok Nodes through the API server."""

    name = "kwok"

    def __init__(
        self,
        api: client.ApiClient,
        *,
        check_fence: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.check_fence = check_fence
        self.now = now
        self._desired: dict[CellRef, int] = {}
        self._booting: dict[str, tuple[CellRef, datetime, asyncio.Task[None]]] = {}
        self._failures: dict[CellRef, deque[LaunchFailure]] = {}
        self._boot_seconds: dict[tuple[str, str], float] = {}
        """(group, revision) -> the boot delay of the template it was last scaled with."""
        self._reboots: dict[str, asyncio.Task[None]] = {}

    async def _nodes(self, group: str) -> list[dict[str, Any]]:
        """The group's Nodes' metadata. Read as plain JSON: the group controller observes
        its cells at every reconcile, and building client models for every node of a
        large group costs more CPU than the rest of the reconcile."""
        # Unparsed, the call returns the HTTP response (the stubs know only the model).
        response: Any = await self.core.list_node(
            label_selector=f"{GROUP_LABEL}={group}", _preload_content=False
        )
        async with response:
            body = await response.read()
            if not 200 <= response.status < 300:  # unparsed, nothing else checks it
                raise ApiException(status=response.status, reason=response.reason)
            found = json.loads(body)
        return [item.get("metadata") or {} for item in found.get("items") or []]

    async def _instances(self, group: str) -> dict[CellRef, list[Instance]]:
        cells: dict[CellRef, list[Instance]] = {}
        for meta in await self._nodes(group):
            if meta.get("deletionTimestamp") is not None:
                continue
            await self._finish_overdue_reboot(meta)
            name = meta["name"]
            launched = parse_rfc3339(meta["creationTimestamp"])
            stamp = (meta.get("annotations") or {}).get(LAUNCHED_AT_ANNOTATION)
            if stamp:
                with contextlib.suppress(ValueError):
                    launched = parse_rfc3339(stamp)
            cell = _cell_of(group, meta.get("labels") or {})
            cells.setdefault(cell, []).append(Instance(name, launched, node_name=name))
        for name, (cell, launched, _) in self._booting.items():
            if cell.group == group and all(i.instance_id != name for i in cells.get(cell, [])):
                cells.setdefault(cell, []).append(Instance(name, launched, node_name=name))
        return cells

    async def observe(self, group: str) -> list[CellObservation]:
        instances = await self._instances(group)
        cells = set(instances) | {c for c in self._desired if c.group == group}
        return [
            CellObservation(
                cell,
                self._desired.get(cell, len(instances.get(cell, []))),
                tuple(instances.get(cell, [])),
                tuple(self._failures.get(cell, ())),
            )
            for cell in sorted(cells)
        ]

    async def _faults(self) -> dict[str, str]:
        try:
            found = await self.core.read_namespaced_config_map(FAULTS_CONFIGMAP, FAULTS_NAMESPACE)
        except ApiException as error:
            if error.status == 404:
                return {}
            raise ProviderError(f"cannot read the kwok fault settings: {error.reason}") from error
        return dict(found.data or {})

    def _fail(self, cell: CellRef, message: str, *, capacity: bool) -> None:
        tail = self._failures.setdefault(cell, deque(maxlen=FAILURE_TAIL))
        tail.append(LaunchFailure(self.now(), message, capacity))

    async def scale(self, cell: CellRef, template: Template, desired: int) -> None:
        self.check_fence()
        boot_delay = template.kwok.boot_delay if template.kwok else "0s"
        self._boot_seconds[(cell.group, cell.revision)] = parse_duration(boot_delay).total_seconds()
        have = len((await self._instances(cell.group)).get(cell, []))
        missing = desired - have
        if missing <= 0:
            self._desired[cell] = desired
            return
        faults = await self._faults()
        if _matches(faults.get("capacityErrors", ""), cell):
            message = (
                f"InsufficientInstanceCapacity: no capacity in {cell.zone}/{cell.capacity_type}"
            )
            self._fail(cell, message, capacity=True)
            raise CapacityError(message)
        if _matches(faults.get("launchErrors", ""), cell):
            self._desired[cell] = desired
            for _ in range(missing):
                self._fail(cell, "launch failed (injected by molt-kwok-faults)", capacity=False)
            return
        self._desired[cell] = desired
        boot = parse_duration(template.kwok.boot_delay if template.kwok else "0s")
        ready = not _matches(faults.get("notReady", ""), cell)
        for _ in range(missing):
            name = f"{cell.group}-{cell.revision[:6]}-{secrets.token_hex(3)}"
            launched = self.now()
            task = asyncio.create_task(
                self._boot(name, cell, template, launched, boot.total_seconds(), ready=ready)
            )
            self._booting[name] = (cell, launched, task)
        log.info("kwok.scaled", cell=str(cell), desired=desired, launching=missing)

    def _manifest(
        self, name: str, cell: CellRef, template: Template, launched: datetime, *, ready: bool
    ) -> dict[str, object]:
        labels = dict(template.labels)
        labels.update(
            {
                GROUP_LABEL: cell.group,
                REVISION_LABEL: cell.revision,
                ZONE_LABEL: cell.zone,
                CAPACITY_TYPE_LABEL: cell.capacity_type,
            }
        )
        taints = [
            {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
            for t in template.taints
        ]
        manifest = kwok_node(name, labels=labels, launched_at=launched, taints=taints or None)
        if not ready or (template.kwok is not None and template.kwok.never_ready):
            # kwok runs only nodes annotated ``fake``: this one has no simulated kubelet and
            # never turns Ready, but its instance exists (the annotation says so).
            manifest["metadata"]["annotations"][KWOK_NODE_ANNOTATION] = NEVER_READY
        manifest["spec"]["providerID"] = f"{KWOK_PROVIDER_PREFIX}{name}"
        return manifest

    async def _boot(
        self,
        name: str,
        cell: CellRef,
        template: Template,
        launched: datetime,
        delay: float,
        *,
        ready: bool = True,
    ) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            self.check_fence()
            manifest = self._manifest(name, cell, template, launched, ready=ready)
            await self.core.create_node(manifest)  # type: ignore[arg-type]
            log.info("kwok.launched", node=name, cell=str(cell))
        except ApiException as error:
            if error.status != 409:  # 409: it already exists, which is what we wanted
                self._fail(cell, f"node {name} not created: {error.reason}", capacity=False)
                log.warning("kwok.launch_failed", node=name, error=str(error.reason))
        except Exception as error:  # a lost fence, mostly: the instance never appears
            log.warning("kwok.launch_abandoned", node=name, error=str(error))
        finally:
            self._booting.pop(name, None)

    def _shrink(self, cell: CellRef) -> None:
        if cell in self._desired:
            self._desired[cell] = max(0, self._desired[cell] - 1)

    async def _delete(self, name: str) -> None:
        self.check_fence()
        booting = self._booting.pop(name, None)
        if booting is not None:
            booting[2].cancel()
        try:
            await self.core.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise ProviderError(f"cannot delete node {name}: {error.reason}") from error

    def owns(self, node: NodeView) -> bool:
        return node.annotations.get(KWOK_NODE_ANNOTATION) == "fake"

    async def instance_exists(self, node: NodeView) -> bool | None:
        if not (node.provider_id or "").startswith(KWOK_PROVIDER_PREFIX):
            return None
        return KWOK_NODE_ANNOTATION in node.annotations

    async def terminate(self, node: NodeView) -> None:
        group = node.group
        await self._delete(node.name)
        if group is not None:
            self._shrink(_cell_of(group, node.labels))

    async def terminate_instance(self, cell: CellRef, instance_id: str) -> None:
        await self._delete(instance_id)
        self._shrink(cell)

    async def delete_cell(self, cell: CellRef) -> None:
        if (await self._instances(cell.group)).get(cell):
            raise ProviderError(f"cell {cell} still has instances")
        self._desired.pop(cell, None)
        self._failures.pop(cell, None)

    async def reboot(self, node: NodeView) -> None:
        self.check_fence()
        kubelet = node.annotations.get(KWOK_NODE_ANNOTATION)
        if kubelet is None or not (node.provider_id or KWOK_PROVIDER_PREFIX).startswith(
            KWOK_PROVIDER_PREFIX
        ):
            raise ProviderError(f"node {node.name} is not a kwok node")
        if kubelet == NEVER_READY:
            log.info("kwok.rebooted_never_ready", node=node.name)
            return  # the machine restarts; its broken image boots no kubelet again
        seconds = self._boot_seconds.get(
            (node.group or "", node.revision or ""), DEFAULT_BOOT_SECONDS
        )
        now = self.now()
        until = now + timedelta(seconds=seconds)
        try:
            await self.core.patch_node(
                node.name,
                {
                    "metadata": {
                        "annotations": {
                            KWOK_NODE_ANNOTATION: REBOOTING,
                            KWOK_REBOOT_UNTIL_ANNOTATION: format_rfc3339(until),
                        }
                    }
                },
            )
            await self._report_rebooting(node.name, now)
        except ApiException as error:
            raise ProviderError(f"cannot reboot node {node.name}: {error.reason}") from error
        log.info("kwok.rebooting", node=node.name, seconds=seconds)
        previous = self._reboots.pop(node.name, None)
        if previous is not None:
            previous.cancel()
        self._reboots[node.name] = asyncio.create_task(self._come_back(node.name, seconds))

    async def _report_rebooting(self, name: str, now: datetime) -> None:
        """The node's Ready condition turns Unknown, as the node-lifecycle controller would
        make it once the kubelet's Lease ran out (kwok still renews it); a node deleted
        meanwhile has nothing to report."""
        stamp = format_rfc3339(now)
        condition = {
            "type": "Ready",
            "status": "Unknown",
            "reason": "Rebooting",
            "message": "the machine is restarting (kwok reboot)",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        try:
            await self.core.patch_node_status(name, {"status": {"conditions": [condition]}})
        except ApiException as error:
            if error.status != 404:
                raise

    async def _come_back(self, name: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self._end_reboot(name)
        except Exception as error:  # a lost fence: the next leader's observe finishes it
            log.warning("kwok.reboot_unfinished", node=name, error=str(error))
        finally:
            self._reboots.pop(name, None)

    async def _end_reboot(self, name: str) -> None:
        self.check_fence()
        try:
            await self.core.patch_node(
                name,
                {
                    "metadata": {
                        "annotations": {
                            KWOK_NODE_ANNOTATION: RUN_BY_KWOK,
                            KWOK_REBOOT_UNTIL_ANNOTATION: None,
                        }
                    }
                },
            )
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile: nothing comes back
                raise
        log.info("kwok.rebooted", node=name)

    async def _finish_overdue_reboot(self, meta: dict[str, Any]) -> None:
        """A reboot whose end passed while no task of this process waited for it."""
        annotations = meta.get("annotations") or {}
        stamp = annotations.get(KWOK_REBOOT_UNTIL_ANNOTATION)
        name = meta["name"]
        if stamp is None or name in self._reboots:
            return
        with contextlib.suppress(ValueError):
            if parse_rfc3339(stamp) > self.now():
                return
        try:
            await self._end_reboot(name)
        except Exception as error:  # a lost fence, an API error: the next observe tries again
            log.warning("kwok.reboot_unfinished", node=name, error=str(error))

    async def close(self) -> None:
        """Cancel launches still waiting out their boot delay, and reboots' ends (the
        annotation finishes them at the next process's ``observe``)."""
        for _, _, task in list(self._booting.values()):
            task.cancel()
        self._booting.clear()
        for task in list(self._reboots.values()):
            task.cancel()
        self._reboots.clear()
