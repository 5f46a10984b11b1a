"""The simulated cloud: the ``Provider`` port over cells that behave like Auto Scaling groups.

Each cell converges on its desired size a moment after it changes: it launches the
missing instances one at a time, and stops at the first failure to retry later, as an
ASG's scaling activities do. A launch can fail for lack of capacity (the zone, or the
zone's spot pool, is out: a timeline outage) or at random (``failure_rate``). A
launched instance registers its Node after the launch delay and turns Ready after the
ready delay, except one built from a bad image, which never does. Spot instances are
interrupted at a rate; a zone outage can also take its nodes NotReady, and a blink takes
every node NotReady for a moment. Scaling a cell
in terminates instances without a Ready node first, then the oldest.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from molt.api.instancegroup import Template
from molt.api.labels import CAPACITY_TYPE_LABEL, GROUP_LABEL, REVISION_LABEL, ZONE_LABEL
from molt.cloud.provider import CellObservation, CellRef, Instance, LaunchFailure, ProviderError
from molt.policy.interruptions import SPOT_WARNING
from molt.policy.snapshot import NodeCondition, NodeTaint, NodeView
from molt.sim.clock import EventHeap
from molt.sim.cluster import SimCluster
from molt.sim.notices import SimNoticeQueue

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
FAILURE_TAIL = 20

# Allocatable CPU (millicores) and memory (MiB) of instance types a scenario may name.
INSTANCE_SHAPES: dict[str, tuple[int, int]] = {
    "m5.large": (1930, 7000),
    "m5a.large": (1930, 7000),
    "m5.xlarge": (3920, 14500),
    "m5.2xlarge": (7910, 29500),
    "c5.xlarge": (3920, 6600),
    "r5.xlarge": (3920, 30000),
}
DEFAULT_SHAPE = (3920, 14500)


@dataclass(frozen=True)
class CloudSettings:
    """How the cloud behaves; every delay is in simulated seconds."""

    launch_delay: float = 90.0
    launch_jitter: float = 30.0
    ready_delay: float = 20.0
    failure_rate: float = 0.0
    retry_seconds: float = 30.0
    converge_delay: float = 1.0
    bad_images: frozenset[str] = frozenset()
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    power_on_seconds: float = 300.0
    """A bare-metal host's power-on to join (its launch delay)."""
    reprovision_seconds: float = 1200.0
    """How long a released bare-metal host is wiped before it can be claimed again."""
    reboot_seconds: float = 180.0
    """A reboot's restart to Ready (a remediation step)."""
    reboot_fix_rate: float = 0.5
    """How often a reboot brings a dead kubelet back."""


@dataclass
class SimInstance:
    instance_id: str
    cell: CellRef
    node_name: str
    launched_at: datetime
    image: str | None
    instance_type: str
    joined: bool = False

    @cached_property
    def listed(self) -> Instance:
        """How the cloud lists this instance (it never changes)."""
        return Instance(self.instance_id, self.launched_at, node_name=self.node_name)


@dataclass
class SimCell:
    ref: CellRef
    template: Template
    desired: int = 0
    instances: dict[str, SimInstance] = field(default_factory=dict)
    failures: deque[LaunchFailure] = field(default_factory=lambda: deque(maxlen=FAILURE_TAIL))
    launches: int = 0
    observation: CellObservation | None = None
    """What ``observe`` answered last, until the cell changes (observe runs very often)."""

    def observe(self) -> CellObservation:
        if self.observation is None:
            self.observation = CellObservation(
                cell=self.ref,
                desired=self.desired,
                instances=tuple(i.listed for i in self.instances.values()),
                failures=tuple(self.failures),
            )
        return self.observation


@dataclass(frozen=True)
class Outage:
    """No capacity in a zone (one capacity type, or both when None)."""

    zone: str
    capacity_type: str | None
    nodes_not_ready: bool = False


class SimCloud:
    """Cells, instances and their nodes; implements ``molt.cloud.provider.Provider``."""

    name = "sim"

    def __init__(
        self,
        events: EventHeap,
        cluster: SimCluster,
        settings: CloudSettings | None = None,
        *,
        seed: int = 1,
    ) -> None:
        self.events = events
        self.cluster = cluster
        self.settings = settings or CloudSettings()
        self.rng = random.Random(seed)
        self.cells: dict[CellRef, SimCell] = {}
        self.templates: dict[tuple[str, str], Template] = {}
        """Every (group, revision) a cell was made for, with its template, in that order;
        kept after the cells go, so plots can say what each revision changed."""
        self._by_node: dict[str, SimInstance] = {}
        self._serial = 0
        self.outages: list[Outage] = []
        self._rebooting: set[str] = set()
        """Nodes in a reboot: a flap leaves them to it."""
        self.log: list[tuple[float, str, str]] = []
        """(second, kind, message): launches failed, interruptions, scale-ins, for the report."""
        self.ended: dict[str, str] = {}
        """Why an instance's node went, when the cloud took it (not the pipeline)."""
        self._wiping: dict[tuple[str, str], int] = {}
        """Bare-metal hosts being wiped, by (group, rack)."""
        self.notices: SimNoticeQueue | None = None
        """Where spot notices go two minutes before the reclaim; None: reclaimed unwarned."""
        self._noticed: set[str] = set()

    # The Provider port.

    async def observe(self, group: str) -> list[CellObservation]:
        return [cell.observe() for ref, cell in sorted(self.cells.items()) if ref.group == group]

    async def scale(self, cell: CellRef, template: Template, desired: int) -> None:
        if desired < 0:
            raise ProviderError(f"desired size {desired} of {cell} is negative")
        found = self.cells.get(cell)
        if found is None:
            found = self.cells[cell] = SimCell(cell, template)
            self.templates.setdefault((cell.group, cell.revision), template)
        if found.desired != desired:
            found.desired = desired
            found.observation = None
            self._converge_soon(found)

    def owns(self, node: NodeView) -> bool:
        return node.name in self._by_node

    async def terminate(self, node: NodeView) -> None:
        instance = self._by_node.get(node.name)
        if instance is None:
            self.cluster.remove_node(node.name)
            return
        cell = self.cells.get(instance.cell)
        if cell is not None:
            cell.desired = max(0, cell.desired - 1)
            cell.observation = None
        self._end(instance, None)

    async def terminate_instance(self, cell: CellRef, instance_id: str) -> None:
        found = self.cells.get(cell)
        if found is None or instance_id not in found.instances:
            return
        found.desired = max(0, found.desired - 1)
        found.observation = None
        self._end(found.instances[instance_id], "never-joined")

    async def reboot(self, node: NodeView) -> None:
        """The ``Rebooter`` capability: the node is NotReady for ``reboot_seconds``; a dead
        kubelet then runs again with probability ``reboot_fix_rate`` (seeded), and a node
        whose kubelet was alive comes back as it was."""
        instance = self._by_node.get(node.name)
        if instance is None:
            raise ProviderError(f"node {node.name} has no instance in the simulated cloud")
        name = node.name
        was_dead = self.cluster.kubelet_dead(name)
        fixes = self.rng.random() < self.settings.reboot_fix_rate
        self.log.append((self.events.clock.seconds, "reboot", f"node {name} rebooting"))
        if not was_dead:
            self.cluster.set_ready(name, False)
        self._rebooting.add(name)

        def back() -> None:
            self._rebooting.discard(name)
            if self._by_node.get(name) is not instance:
                return  # terminated meanwhile
            if was_dead and fixes:
                self.cluster.revive_kubelet(name)
                self.log.append((self.events.clock.seconds, "reboot-fixed", f"node {name}"))
            elif not was_dead:
                self.cluster.set_ready(name, True)

        self.events.after(self.settings.reboot_seconds, back)

    async def delete_cell(self, cell: CellRef) -> None:
        found = self.cells.get(cell)
        if found is None:
            return
        for instance in list(found.instances.values()):
            self._end(instance, "cell-deleted")
        del self.cells[cell]

    # Seeding and the timeline.

    def seed_instance(self, cell: CellRef, template: Template, age: timedelta) -> str:
        """An instance already running at the start, launched ``age`` ago, Ready."""
        found = self.cells.get(cell)
        if found is None:
            found = self.cells[cell] = SimCell(cell, template)
            self.templates.setdefault((cell.group, cell.revision), template)
        found.desired += 1
        found.observation = None
        instance = self._new_instance(found, self.cluster.clock.now() - age)
        self._join(instance, ready=True)
        return instance.node_name

    def begin_outage(self, outage: Outage) -> None:
        self.outages.append(outage)
        self.log.append((self.events.clock.seconds, "outage", self._describe(outage) + " begins"))
        if outage.nodes_not_ready:
            for instance in self._instances_in(outage):
                self.cluster.set_ready(instance.node_name, False)

    def end_outage(self, outage: Outage) -> None:
        if outage in self.outages:
            self.outages.remove(outage)
        self.log.append((self.events.clock.seconds, "outage", self._describe(outage) + " ends"))
        if outage.nodes_not_ready:
            for instance in self._instances_in(outage):
                if instance.joined and instance.image not in self.settings.bad_images:
                    self.cluster.set_ready(instance.node_name, True)
        for cell in self.cells.values():
            self._converge_soon(cell)

    def blink(self, group: str | None, duration: float) -> None:
        """Every Ready node (of ``group``, or all) NotReady for ``duration`` seconds."""
        struck = [
            i.node_name
            for c in self.cells.values()
            if group in (None, c.ref.group)
            for i in c.instances.values()
            if self._ready(i)
        ]
        self.log.append(
            (self.events.clock.seconds, "blink", f"{len(struck)} node(s) NotReady for {duration}s")
        )
        for name in struck:
            self.cluster.set_ready(name, False)

        def back() -> None:
            for name in struck:
                instance = self._by_node.get(name)
                if instance is not None:
                    self._become_ready(instance)

        self.events.after(duration, back)

    def flap(self, names: list[str], period: float, down: float, times: int) -> None:
        """Each node NotReady for ``down`` seconds at the start of each of ``times`` cycles
        of ``period`` seconds, then Ready again. A cycle leaves alone a node that is gone,
        whose kubelet died, or that is not Ready when it begins (a reboot, an outage); the
        flapping goes on after a reboot (its cause is not the kubelet)."""
        self.log.append(
            (
                self.events.clock.seconds,
                "flap",
                f"{len(names)} node(s) flapping: NotReady {down:g}s of every {period:g}s, "
                f"{times} time(s): {', '.join(names[:5])}" + (", ..." if len(names) > 5 else ""),
            )
        )
        for name in names:
            for cycle in range(times):
                self.events.after(cycle * period, lambda n=name: self._flap_down(n, down))  # type: ignore[misc]

    def _flap_down(self, name: str, down: float) -> None:
        instance = self._by_node.get(name)
        if instance is None or self.cluster.kubelet_dead(name) or not self._ready(instance):
            return
        self.cluster.set_ready(name, False)

        def up() -> None:
            if self._by_node.get(name) is not instance or name in self._rebooting:
                return  # gone, or a reboot brings it back in its own time
            if not self.cluster.kubelet_dead(name):
                self._become_ready(instance)

        self.events.after(down, up)

    def interrupt_spot(self) -> str | None:
        """Reclaim one running spot instance at random; the cell launches another. With a
        notice queue, the notice comes first and the reclaim two minutes later (whatever
        Molt has done by then)."""
        spot = [
            i
            for c in self.cells.values()
            if c.ref.capacity_type == "spot"
            for i in c.instances.values()
            if i.joined and i.instance_id not in self._noticed
        ]
        if not spot:
            return None
        victim = self.rng.choice(sorted(spot, key=lambda i: i.instance_id))
        if self.notices is not None:
            self._noticed.add(victim.instance_id)
            self.log.append((self.events.clock.seconds, "spot-notice", victim.node_name))
            self.notices.publish_spot_notice(victim.instance_id, self.events.clock.now())
            self.events.after(SPOT_WARNING.total_seconds(), lambda: self._reclaim(victim))
            return victim.node_name
        self._reclaim(victim)
        return victim.node_name

    def _reclaim(self, victim: SimInstance) -> None:
        self._noticed.discard(victim.instance_id)
        cell = self.cells.get(victim.cell)
        if cell is None or victim.instance_id not in cell.instances:
            # Molt drained and terminated it inside the warning.
            self.log.append((self.events.clock.seconds, "spot-drained-in-time", victim.node_name))
            return
        self.log.append((self.events.clock.seconds, "spot-interruption", victim.node_name))
        self._end(victim, "spot-interruption")
        self._converge_soon(cell)

    # Convergence.

    @staticmethod
    def _describe(outage: Outage) -> str:
        kind = outage.capacity_type or "all capacity"
        return f"zone {outage.zone} ({kind}) out"

    def _instances_in(self, outage: Outage) -> list[SimInstance]:
        return [
            i
            for c in self.cells.values()
            if c.ref.zone == outage.zone and outage.capacity_type in (None, c.ref.capacity_type)
            for i in c.instances.values()
        ]

    def _out_of_capacity(self, ref: CellRef) -> bool:
        return any(
            o.zone == ref.zone and o.capacity_type in (None, ref.capacity_type)
            for o in self.outages
        )

    def _converge_soon(self, cell: SimCell, delay: float | None = None) -> None:
        ref = cell.ref
        wait = self.settings.converge_delay if delay is None else delay
        self.events.keyed(f"converge/{ref}", wait, lambda: self._converge(ref))

    def _converge(self, ref: CellRef) -> None:
        cell = self.cells.get(ref)
        if cell is None:
            return
        surplus = len(cell.instances) - cell.desired
        if surplus > 0:
            ranked = sorted(
                cell.instances.values(),
                key=lambda i: (self._ready(i), i.launched_at, i.instance_id),
            )
            for instance in ranked[:surplus]:
                self.log.append((self.events.clock.seconds, "scale-in", instance.node_name))
                self._end(instance, "scale-in")
            return
        now = self.events.clock.now()
        for _ in range(-surplus):
            message = self._launch_error(ref)
            if message is not None:
                capacity = message.startswith("InsufficientInstanceCapacity")
                cell.failures.append(LaunchFailure(now, message, capacity))
                cell.observation = None
                self.log.append((self.events.clock.seconds, "launch-failed", f"{ref}: {message}"))
                self._converge_soon(cell, self.settings.retry_seconds)
                return
            instance = self._new_instance(cell, now)
            base = (
                self.settings.power_on_seconds
                if cell.template.baremetal is not None
                else self.settings.launch_delay
            )
            delay = base + self.rng.uniform(0, self.settings.launch_jitter)
            self.events.after(delay, lambda i=instance: self._join(i, ready=False))  # type: ignore[misc]

    def _free_hosts(self, cell: SimCell) -> int | None:
        """Free hosts of a bare-metal cell's rack (None: not bare metal, no fixed pool).
        The pool is the template's hosts in the rack; every instance of the group there,
        of any revision, holds one, and a released host is wiped before reuse."""
        bare = cell.template.baremetal
        if bare is None:
            return None
        ref = cell.ref
        pool = sum(1 for h in bare.hosts if h.zone == ref.zone)
        held = sum(
            len(c.instances)
            for c in self.cells.values()
            if c.ref.group == ref.group and c.ref.zone == ref.zone
        )
        return pool - held - self._wiping.get((ref.group, ref.zone), 0)

    def _release_host(self, instance: SimInstance, cell: SimCell | None) -> None:
        if cell is None or cell.template.baremetal is None:
            return
        key = (instance.cell.group, instance.cell.zone)
        self._wiping[key] = self._wiping.get(key, 0) + 1

        def wiped() -> None:
            self._wiping[key] -= 1

        self.events.after(self.settings.reprovision_seconds, wiped)

    def _launch_error(self, ref: CellRef) -> str | None:
        cell = self.cells.get(ref)
        free = self._free_hosts(cell) if cell is not None else None
        if free is not None and free <= 0:
            return f"InsufficientInstanceCapacity: no free host in rack {ref.zone}"
        if self._out_of_capacity(ref):
            return f"InsufficientInstanceCapacity: no {ref.capacity_type} capacity in {ref.zone}"
        if self.settings.failure_rate and self.rng.random() < self.settings.failure_rate:
            return "InternalError: the instance failed to launch"
        return None

    def _ready(self, instance: SimInstance) -> bool:
        view = self.cluster.node(instance.node_name)
        return view is not None and view.ready

    def _new_instance(self, cell: SimCell, launched_at: datetime) -> SimInstance:
        self._serial += 1
        template = cell.template
        ref = cell.ref
        name = f"{ref.group}-{ref.zone}-{self._serial:05d}"
        instance = SimInstance(
            instance_id=f"i-{self._serial:08x}",
            cell=ref,
            node_name=name,
            launched_at=launched_at,
            image=template.image,
            instance_type=template.instance_types[0],
        )
        cell.instances[instance.instance_id] = instance
        cell.observation = None
        cell.launches += 1
        self._by_node[name] = instance
        return instance

    def _join(self, instance: SimInstance, *, ready: bool) -> None:
        cell = self.cells.get(instance.cell)
        if cell is None or instance.instance_id not in cell.instances:
            return
        ref = instance.cell
        template = cell.template
        labels = dict(template.labels)
        labels.update(
            {
                GROUP_LABEL: ref.group,
                REVISION_LABEL: ref.revision,
                ZONE_LABEL: ref.zone,
                CAPACITY_TYPE_LABEL: ref.capacity_type,
                INSTANCE_TYPE_LABEL: instance.instance_type,
            }
        )
        now = self.events.clock.now()
        view = NodeView(
            name=instance.node_name,
            created=now if not ready else instance.launched_at,
            labels=labels,
            conditions=(NodeCondition("Ready", "True" if ready else "False", now),),
            taints=tuple(NodeTaint(t.key, t.effect, t.value) for t in template.taints),
            launched_at=instance.launched_at,
            uid=instance.instance_id,
            provider_id=f"sim:///{ref.zone}/{instance.instance_id}",
        )
        cpu, memory = self.settings.shapes.get(
            instance.instance_type, INSTANCE_SHAPES.get(instance.instance_type, DEFAULT_SHAPE)
        )
        instance.joined = True
        self.cluster.add_node(view, cpu_millis=cpu, memory_mib=memory)
        if ready:
            return
        if instance.image in self.settings.bad_images:
            return  # the kubelet never reports Ready: the group's health must catch it
        self.events.after(self.settings.ready_delay, lambda: self._become_ready(instance))

    def _become_ready(self, instance: SimInstance) -> None:
        if instance.node_name not in self._by_node:
            return
        if any(o.nodes_not_ready for o in self.outages if o.zone == instance.cell.zone):
            return
        self.cluster.set_ready(instance.node_name, True)

    def _end(self, instance: SimInstance, cause: str | None) -> None:
        cell = self.cells.get(instance.cell)
        if cell is not None:
            if cell.instances.pop(instance.instance_id, None) is not None:
                self._release_host(instance, cell)
            cell.observation = None
        self._by_node.pop(instance.node_name, None)
        if cause is not None:
            self.ended[instance.node_name] = cause
        self.cluster.remove_node(instance.node_name)
