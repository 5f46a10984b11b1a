"""The kwok provider: an instance is a kwok-managed Node object.

Launching creates, after the template's boot delay, a Node that kwok then runs as if a
kubelet had joined, labelled with its group, revision, zone and capacity type and
annotated with its launch time. Terminating deletes the Node. It is how the pipeline runs
end to end in the sandbox, with no cloud.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.cloud.kwok_nodes import kwok_node
from molt.cloud.provider import LaunchRequest, ProviderError
from molt.policy.snapshot import (
    CAPACITY_TYPE_LABEL,
    GROUP_LABEL,
    REVISION_LABEL,
    ZONE_LABEL,
    NodeView,
)

log = structlog.get_logger(__name__)


def node_name_for(request: LaunchRequest) -> str:
    """The same token always names the same node, so a repeated launch is harmless."""
    digest = hashlib.sha256(request.token.encode()).hexdigest()[:8]
    return f"{request.group}-{digest}"


class KwokProvider:
    """Launches and terminates kwok Nodes through the API server."""

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
        self._booting: dict[str, asyncio.Task[None]] = {}

    def _manifest(self, request: LaunchRequest) -> dict[str, object]:
        labels = dict(request.labels)
        labels[GROUP_LABEL] = request.group
        if request.revision:
            labels[REVISION_LABEL] = request.revision
        if request.zone:
            labels[ZONE_LABEL] = request.zone
        labels[CAPACITY_TYPE_LABEL] = request.capacity_type or "on-demand"
        taints = [
            {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
            for t in request.taints
        ]
        return kwok_node(
            node_name_for(request), labels=labels, launched_at=self.now(), taints=taints or None
        )

    async def _boot(self, request: LaunchRequest) -> None:
        name = node_name_for(request)
        try:
            if request.boot_delay_seconds > 0:
                await asyncio.sleep(request.boot_delay_seconds)
            self.check_fence()
            await self.core.create_node(self._manifest(request))  # type: ignore[arg-type]
            log.info("kwok.launched", node=name, group=request.group)
        except ApiException as error:
            if error.status != 409:  # 409: it already exists, which is what we wanted
                log.warning("kwok.launch_failed", node=name, error=str(error.reason))
        finally:
            self._booting.pop(request.token, None)

    async def launch(self, request: LaunchRequest) -> str:
        name = node_name_for(request)
        if request.token in self._booting:
            return name
        try:
            await self.core.read_node(name)
            return name  # launched before (perhaps by an earlier controller process)
        except ApiException as error:
            if error.status != 404:
                raise ProviderError(f"cannot look up node {name}: {error.reason}") from error
        self.check_fence()
        self._booting[request.token] = asyncio.create_task(self._boot(request))
        return name

    async def terminate(self, node: NodeView) -> None:
        self.check_fence()
        try:
            await self.core.delete_node(node.name)
        except ApiException as error:
            if error.status != 404:
                raise ProviderError(f"cannot delete node {node.name}: {error.reason}") from error

    async def close(self) -> None:
        """Cancel launches still waiting out their boot delay."""
        for task in list(self._booting.values()):
            task.cancel()
        self._booting.clear()
