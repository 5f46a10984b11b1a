"""The provider port: cells of instances that the controllers size, launch and terminate.

A provider (kwok, aws, the simulator's cloud) backs each cell of an InstanceGroup (zone x
capacity type x revision) with one provider group that converges on a desired size, as an
Auto Scaling group does. The instance-group controller sizes cells and collects what
failed; the termination pipeline terminates the instance behind a drained node (taking
one off its cell's desired size, so nothing relaunches it).

Every call is idempotent: ``scale`` sets an absolute size, ``terminate`` of a gone
instance succeeds, ``delete_cell`` of a gone cell succeeds.

A provider whose nodes register themselves (a cloud's bootstrap starts the kubelet, which
knows nothing of Molt) is also a ``Registrar``: it tells which cell a Node's instance
belongs to, so the registration controller can label the node as Molt would have.

A provider whose instances sit behind load balancers it manages (AWS target groups) is
also ``LoadBalancers``: the pipeline asks it to take a node's instance out of them
before the first eviction and to say when they have let it go. A provider without the
capability (kwok) has nothing to deregister; the pipeline still labels the node
``node.kubernetes.io/exclude-from-external-load-balancers`` for every provider.

A provider that can say whether the instance a Node's providerID names still exists is
also an ``InstanceChecker``: the ghost-node reaper deletes a long-NotReady node only when
one says the instance is gone, never when every provider answers "cannot tell".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from molt.api.instancegroup import Template
from molt.policy.interruptions import LifecycleHook
from molt.policy.snapshot import NodeView


@dataclass(frozen=True, order=True)
class CellRef:
    """One cell of one group: where a revision's instances run."""

    group: str
    revision: str
    zone: str
    capacity_type: str

    def __str__(self) -> str:
        return f"{self.group}/{self.revision}/{self.zone}/{self.capacity_type}"


@dataclass(frozen=True)
class Instance:
    """An instance in a cell, and how to find its Node once it joins."""

    instance_id: str
    launched_at: datetime | None
    node_name: str | None = None
    """The Node's name when the provider chooses it (kwok); else match by provider_id."""
    provider_id: str | None = None


@dataclass(frozen=True)
class LaunchFailure:
    """A launch the provider attempted and could not complete."""

    at: datetime
    message: str
    capacity: bool
    """Out of capacity (zone, instance type or spot pool): route around the cell."""


@dataclass(frozen=True)
class CellObservation:
    """What the provider holds for a cell right now."""

    cell: CellRef
    desired: int
    instances: tuple[Instance, ...] = ()
    failures: tuple[LaunchFailure, ...] = ()
    """Recent failed launch attempts, oldest first (the provider keeps a bounded tail)."""


class ProviderError(Exception):
    """The provider refused or failed a call; the message says why."""


class CapacityError(ProviderError):
    """The cell cannot get capacity now (e.g. ``InsufficientInstanceCapacity``)."""


class Provider(Protocol):
    """Sizes a group's cells and terminates the instances behind nodes."""

    name: str

    async def observe(self, group: str) -> list[CellObservation]:
        """Every cell the provider holds for ``group``, with instances and failures."""
        ...

    async def scale(self, cell: CellRef, template: Template, desired: int) -> None:
        """Create the cell from ``template`` if it is missing, then set its desired size.

        Raises ``CapacityError`` when the provider says at once that the cell has no
        capacity, ``ProviderError`` for other refusals.
        """
        ...

    def owns(self, node: NodeView) -> bool:
        """Whether ``node``'s instance is one this provider can terminate (by its
        providerID or the provider's own mark), even when no group claims the node."""
        ...

    async def terminate(self, node: NodeView) -> None:
        """Terminate the instance behind ``node`` and shrink its cell by one."""
        ...

    async def terminate_instance(self, cell: CellRef, instance_id: str) -> None:
        """Terminate an instance that never became a node, shrinking its cell by one."""
        ...

    async def delete_cell(self, cell: CellRef) -> None:
        """Remove an empty cell (its provider group and launch configuration)."""
        ...


@dataclass(frozen=True)
class NodeOrigin:
    """Where a registered Node came from: its instance and that instance's cell."""

    cell: CellRef
    instance: Instance


@runtime_checkable
class Registrar(Protocol):
    """A provider that can tell which of its cells a Node's instance belongs to."""

    name: str

    async def describe_node(self, node: NodeView) -> NodeOrigin | None:
        """The cell and instance behind ``node.provider_id``; None if not one of Molt's.

        Answered from what the provider already observed where it can; a miss may cost
        one batched look-up of every Molt cell, at most once in a while.
        """
        ...


@runtime_checkable
class LoadBalancers(Protocol):
    """A provider that can take a node's instance out of its load balancers."""

    name: str

    def load_balancers_of(self, template: Template) -> tuple[str, ...]:
        """The load balancer targets (AWS: target group ARNs) ``template``'s instances
        join; empty when there is nothing to deregister from."""
        ...

    async def deregister(self, node: NodeView, targets: Sequence[str]) -> float:
        """Take ``node``'s instance out of every one of ``targets`` that still sends it
        traffic (one already deregistering is left alone, so a retry changes nothing) and
        return the longest deregistration delay, in seconds, of those that list it.

        Raises ``ProviderError`` (a target that does not exist, access denied, a node
        with no instance of this provider); nothing is half-done that a retry would not
        finish.
        """
        ...

    async def deregistering(self, node: NodeView, targets: Sequence[str]) -> bool:
        """Whether any of ``targets`` still lists ``node``'s instance (draining, or
        registered again): False once the load balancers have let it go."""
        ...


@runtime_checkable
class Rebooter(Protocol):
    """A provider that can restart the machine behind a Node in place (a remediation
    step tried before replacing it)."""

    name: str

    async def reboot(self, node: NodeView) -> None:
        """Ask for the instance behind ``node`` to restart; returns once the provider has
        accepted (the node comes back, or not, later). Raises ``ProviderError`` for a node
        that is not this provider's or a refusal."""
        ...


@runtime_checkable
class LifecycleHooks(Protocol):
    """A provider whose groups wait on a lifecycle hook before terminating an instance
    (AWS Auto Scaling): Molt holds the hook while it drains the node, then lets go."""

    name: str

    async def heartbeat(self, hook: LifecycleHook, instance_id: str) -> None:
        """Extend the hook's timeout while the drain runs; ProviderError on a refusal."""
        ...

    async def complete(self, hook: LifecycleHook, instance_id: str) -> bool:
        """Let the group terminate the instance (CONTINUE); False when no such lifecycle
        action is pending any more (completed before, or timed out)."""
        ...


@runtime_checkable
class InstanceChecker(Protocol):
    """A provider that can tell whether the instance behind a Node still exists."""

    name: str

    async def instance_exists(self, node: NodeView) -> bool | None:
        """True: the instance ``node.provider_id`` names exists (running or not); False:
        it is gone (terminated, or unknown to the provider); None: not this provider's
        providerID, or the provider cannot tell now. Reads only; never raises for an
        instance that is simply absent."""
        ...
