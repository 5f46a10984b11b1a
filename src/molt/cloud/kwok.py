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
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from fnmatch import fnmatchcase

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api.durations import parse_duration
from molt.api.instancegroup import Template
from molt.api.labels import (
    CAPACITY_TYPE_LABEL,
    GROUP_LABEL,
    KWOK_NODE_ANNOTATION,
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
from molt.policy.age import parse_rfc3339
from molt.policy.snapshot import NodeView

log = structlog.get_logger(__name__)

FAULTS_CONFIGMAP = "molt-kwok-faults"
FAULTS_NAMESPACE = "kube-system"
UNKNOWN = "unknown"
FAILURE_TAIL = 20
KWOK_PROVIDER_PREFIX = "kwok://"
NEVER_READY = "never-ready"


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

    async def _nodes(self, group: str) -> list[client.V1Node]:
        found = await self.core.list_node(label_selector=f"{GROUP_LABEL}={group}")
        return list(found.items)

    async def _instances(self, group: str) -> dict[CellRef, list[Instance]]:
        cells: dict[CellRef, list[Instance]] = {}
        for node in await self._nodes(group):
            meta = node.metadata
            if meta.deletion_timestamp is not None:
                continue
            launched = meta.creation_timestamp
            stamp = (meta.annotations or {}).get(LAUNCHED_AT_ANNOTATION)
            if stamp:
                with contextlib.suppress(ValueError):
                    launched = parse_rfc3339(stamp)
            cell = _cell_of(group, meta.labels or {})
            cells.setdefault(cell, []).append(Instance(meta.name, launched, node_name=meta.name))
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

    async def close(self) -> None:
        """Cancel launches still waiting out their boot delay."""
        for _, _, task in list(self._booting.values()):
            task.cancel()
        self._booting.clear()
