"""The provider port: how the pipeline launches and terminates instances.

Adapters (kwok, aws, the simulator's cloud) implement ``Provider``. Both calls are
idempotent: ``launch`` is keyed by a client token, so a controller that restarts mid-way
asks again and gets the same instance; ``terminate`` of a gone instance succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from molt.policy.snapshot import NodeTaint, NodeView


@dataclass(frozen=True)
class LaunchRequest:
    """One instance to launch into a group's cell."""

    group: str
    token: str
    """Idempotency key: the same token always means the same instance."""
    zone: str | None = None
    capacity_type: str | None = None
    revision: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[NodeTaint, ...] = ()
    boot_delay_seconds: float = 0.0


class ProviderError(Exception):
    """The provider refused or failed a call; the message says why."""


class Provider(Protocol):
    """Launches and terminates the instances behind nodes."""

    name: str

    async def launch(self, request: LaunchRequest) -> str:
        """Ensure the instance for ``request.token`` exists; return its future node name."""
        ...

    async def terminate(self, node: NodeView) -> None:
        """Terminate the instance behind ``node``; a gone instance is not an error."""
        ...
