"""A simulation: the production termination controller over the simulated cluster and cloud.

``Simulation`` builds the world a scenario describes, then runs Molt's own
``ControllerManager`` (selection, the per-node pipeline, the instance-group
controller) unchanged. Only its work queue is the simulator's: ``VirtualWorkQueue``
turns "reconcile this key after X seconds" into events on the virtual clock, and each
reconcile is run to completion at once (``molt.sim.drive``). The cluster notifies the
controller of node, pod and resource changes exactly as the watch caches do.

The one key not dispatched to the manager is ``watchdog/<name>``: production starts a
background task there, whose rounds do I/O. The simulator's ``SimWatchdogs`` runs the
rounds of the node checks on the virtual clock instead (``molt.sim.watchdogs``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from molt.api.instancegroup import InstanceGroup, Template
from molt.api.terminationpolicy import TerminationPolicy
from molt.api.types import ObjectMeta
from molt.api.watchdog import Watchdog
from molt.cloud.provider import CellRef, Provider
from molt.controllers.manager import (
    GROUP_PREFIX,
    SELECTION,
    WATCHDOG_PREFIX,
    ControllerManager,
)
from molt.controllers.workqueue import WorkQueue
from molt.observe.history import HistoryOptions, HistoryStore, HistoryWrites
from molt.observe.metrics import Metrics
from molt.policy.age import node_age
from molt.policy.cells import CellKey, split_capacity, template_revision
from molt.ports import ClusterWrites
from molt.sim.actions import SimulatedActions
from molt.sim.clock import EventHeap, VirtualClock
from molt.sim.cloud import CloudSettings, Outage, SimCloud
from molt.sim.cluster import SimCluster
from molt.sim.drive import complete
from molt.sim.notices import SimNoticeQueue
from molt.sim.record import Recorder
from molt.sim.scenario import Flap, KubeletDeath, Scenario, cpu_millis, memory_mib, seconds
from molt.sim.watchdogs import SimWatchdogs
from molt.sim.workloads import Budget, Deployment, Toleration

log = structlog.get_logger(__name__)

ERRORS_KEPT = 20


class VirtualWorkQueue(WorkQueue[str]):
    """The controller's work queue on the virtual clock: keys become heap events.

    Deduplication and "the earlier due time wins" are the heap's keyed events. Selection
    passes and group reconciles may be spaced at least ``selection_floor`` and
    ``group_floor`` apart. With floors of 0 the timing is production's exactly (selection
    debounced by 1 s, a busy group every 2 s); a large fleet is simulated faster with
    coarser floors, and the scenario's ``controller`` block says which were used.
    """

    def __init__(
        self, events: EventHeap, *, selection_floor: float = 0.0, group_floor: float = 0.0
    ) -> None:
        super().__init__(clock=events.clock.monotonic)
        self.events = events
        self.selection_floor = selection_floor
        self.group_floor = group_floor
        self.run_key: Callable[[str], None] = lambda key: None

    def add(self, key: str) -> None:
        self.add_after(key, 0.0)

    def add_after(self, key: str, delay: float) -> None:
        if key == SELECTION:
            delay = max(delay, self.selection_floor)
        elif key.startswith(GROUP_PREFIX):
            delay = max(delay, self.group_floor)
        self.events.keyed(key, delay, lambda: self.run_key(key))

    def done(self, key: str) -> None:
        return None

    def __bool__(self) -> bool:
        # WorkQueue has __len__, so an empty one is falsy, and the controller takes
        # ``queue or WorkQueue()``: without this it would quietly build its own.
        return True


@dataclass
class SimulationStats:
    reconciles: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    events: int = 0


NOTICE_POLL_BACKSTOP = 3600.0
"""How often the simulated controller looks at its interruption queue unwoken."""


def _announces_spot(scenario: Scenario) -> bool:
    return any(
        e.spot_interruptions is not None and e.spot_interruptions.notices for e in scenario.timeline
    )


class Simulation:
    """One run of a scenario; ``run`` returns when its duration has passed."""

    def __init__(self, scenario: Scenario, history: HistoryOptions | None = None) -> None:
        self.scenario = scenario
        self.clock = VirtualClock(scenario.start)
        self.events = EventHeap(self.clock)
        self.cluster = SimCluster(self.events)
        cloud_spec = scenario.cloud
        self.cloud = SimCloud(
            self.events,
            self.cluster,
            CloudSettings(
                launch_delay=seconds(cloud_spec.launch_delay),
                launch_jitter=seconds(cloud_spec.launch_jitter),
                ready_delay=seconds(cloud_spec.ready_delay),
                failure_rate=cloud_spec.launch_failure_rate,
                retry_seconds=seconds(cloud_spec.retry_after),
                power_on_seconds=seconds(cloud_spec.bare_metal_power_on),
                reprovision_seconds=seconds(cloud_spec.bare_metal_reprovision),
                reboot_seconds=seconds(cloud_spec.reboot),
                reboot_fix_rate=cloud_spec.reboot_fix_rate,
                bad_images=frozenset(cloud_spec.bad_images),
                shapes={
                    name: (cpu_millis(shape.cpu), memory_mib(shape.memory))
                    for name, shape in cloud_spec.instance_types.items()
                },
            ),
            seed=scenario.seed,
        )
        self.rng = random.Random(scenario.seed)
        self.recorder = Recorder(self.cluster)
        self.stats = SimulationStats()
        self.metrics = Metrics()
        self.queue = VirtualWorkQueue(
            self.events,
            selection_floor=seconds(scenario.controller.selection_interval),
            group_floor=seconds(scenario.controller.group_interval),
        )
        providers: dict[str, Provider] = {
            "kwok": self.cloud,
            "aws": self.cloud,
            "baremetal": self.cloud,
        }
        self.history: HistoryStore | None = None
        self.history_writes: HistoryWrites | None = None
        """Rows of every decision, on the virtual clock, when asked for: kept in memory
        during the run (nothing flushes on a virtual clock); ``HistoryStore.stop`` writes them."""
        writes: ClusterWrites = self.cluster
        if history is not None:
            self.history = HistoryStore(history, self.clock, self.metrics)
            writes = self.history_writes = HistoryWrites(self.cluster, self.history, self.cluster)
        self.actions = SimulatedActions(
            self.clock, scenario.actions, random.Random(f"{scenario.seed}/actions")
        )
        notices = _announces_spot(scenario)
        if notices:
            self.cloud.notices = SimNoticeQueue()
        self.controller = ControllerManager(
            self.cluster,
            writes,
            self.clock,
            self.metrics,
            providers=providers,
            actions=self.actions,
            queue=self.queue,
            resync_seconds=seconds(scenario.controller.resync),
            interruptions=self.cloud.notices,
            # The queue wakes the controller when a notice arrives: no 2 s polling.
            interruption_poll_seconds=NOTICE_POLL_BACKSTOP,
        )
        if self.cloud.notices is not None:
            self.cloud.notices.wake = self.controller.notices_arrived
        self.watchdogs = SimWatchdogs(self.cluster, self.events)
        self.queue.run_key = self._reconcile
        self._build()

    # The world.

    def _build(self) -> None:
        scenario = self.scenario
        for policy_entry in scenario.policies:
            self.cluster.add_policy(
                TerminationPolicy(
                    metadata=ObjectMeta(name=policy_entry.name, generation=1),
                    spec=policy_entry.spec,
                )
            )
        for watchdog_entry in scenario.watchdogs:
            self.cluster.add_watchdog(
                Watchdog(
                    metadata=ObjectMeta(name=watchdog_entry.name, generation=1),
                    spec=watchdog_entry.watchdog_spec(),
                )
            )
        for entry in scenario.fleet:
            revision = template_revision(entry.spec.template)
            group = InstanceGroup.model_validate(
                {
                    "metadata": {"name": entry.name, "generation": 1},
                    "spec": entry.spec.model_dump(by_alias=True, exclude_none=True),
                    "status": {"currentRevision": revision},
                }
            )
            self.cluster.add_group(group)
            plan = split_capacity(
                entry.spec.desired_replicas, entry.spec.zones, entry.spec.capacity
            )
            # Deal the nodes (oldest first) round the cells, so each cell gets old and young.
            remaining = dict(plan.cells)
            slots: list[CellKey] = []
            while len(slots) < plan.total:
                for key in sorted(remaining):
                    if remaining[key] > 0:
                        slots.append(key)
                        remaining[key] -= 1
            for index, age in enumerate(entry.node_ages()):
                if not slots:
                    break
                key = slots[index % len(slots)]
                cell = CellRef(entry.name, revision, key.zone, key.capacity_type)
                self.cloud.seed_instance(cell, entry.spec.template, age)
        for pdb in scenario.pdbs:
            self.cluster.add_budget(
                Budget(
                    pdb.namespace, pdb.name, pdb.selector, pdb.min_available, pdb.max_unavailable
                )
            )
        for workload in scenario.workloads:
            if workload.pdb is not None:
                self.cluster.add_budget(
                    Budget(
                        workload.namespace,
                        workload.name,
                        workload.pod_labels,
                        workload.pdb.min_available,
                        workload.pdb.max_unavailable,
                    )
                )
            self.cluster.add_deployment(
                Deployment(
                    namespace=workload.namespace,
                    name=workload.name,
                    replicas=workload.replicas,
                    cpu_millis=cpu_millis(workload.requests.cpu),
                    memory_mib=memory_mib(workload.requests.memory),
                    labels=workload.pod_labels,
                    node_selector=dict(workload.node_selector),
                    tolerations=tuple(
                        Toleration(t.key, t.operator, t.value, t.effect)
                        for t in workload.tolerations
                    ),
                    startup_seconds=seconds(workload.startup),
                    grace_seconds=seconds(workload.grace),
                    do_not_disrupt=workload.do_not_disrupt,
                )
            )
        # Pods start Running at once at the start: the fleet was already serving.
        self.cluster.schedule_pending()
        self._settle_initial_pods()
        self.cluster.node_listeners.append(self.recorder.node_changed)
        for view in self.cluster.nodes():
            self.recorder.node_changed(view.name, None, view)
        self.cluster.node_listeners.append(self.controller.node_changed)
        if self.history_writes is not None:
            self.cluster.node_listeners.append(self.history_writes.node_changed)
        self.cluster.pod_listeners.append(self._pods_changed)
        self.cluster.group_listeners.append(lambda *_: self.controller.config_changed())
        self.cluster.watchdog_listeners.append(self.controller.watchdog_changed)
        self._timeline()
        every = seconds(scenario.sample_every)
        self._sample_every = every
        self.events.at(0.0, self._sample)

    def _settle_initial_pods(self) -> None:
        """Pods placed at the start are Running and Ready already."""
        for deployment in self.cluster.deployments.values():
            for pod in deployment.pods.values():
                if pod.node is not None:
                    pod.running = True
                    pod.changed()
                    if not pod.ready:
                        pod.ready = True
                        deployment.ready += 1
        for budget in self.cluster.budgets.values():
            budget.observe(0.0)

    def _pods_changed(self, node: str) -> None:
        view = self.cluster.node(node)
        if view is not None and view.in_pipeline:
            self.controller.pods_changed(node)

    def _sample(self) -> None:
        self.recorder.sample()
        self.events.after(self._sample_every, self._sample)

    def _timeline(self) -> None:
        for event in self.scenario.timeline:
            at = seconds(event.at)
            if event.template_change is not None:
                change = event.template_change
                self.events.at(at, lambda c=change: self._change_template(c.group, c.template))  # type: ignore[misc]
            if event.zone_outage is not None:
                spec = event.zone_outage
                outage = Outage(spec.zone, spec.capacity_type, spec.nodes_not_ready)
                self.events.at(at, lambda o=outage: self.cloud.begin_outage(o))  # type: ignore[misc]
                self.events.at(seconds(spec.until), lambda o=outage: self.cloud.end_outage(o))  # type: ignore[misc]
            if event.not_ready_blink is not None:
                blink = event.not_ready_blink
                self.events.at(
                    at,
                    lambda b=blink: self.cloud.blink(b.group, seconds(b.duration)),  # type: ignore[misc]
                )
            if event.kubelet_death is not None:
                death = event.kubelet_death
                self.events.at(at, lambda d=death: self._kill_kubelets(d))  # type: ignore[misc]
            if event.flap is not None:
                flap = event.flap
                self.events.at(at, lambda f=flap: self._flap(f))  # type: ignore[misc]
            if event.spot_interruptions is not None:
                rate = event.spot_interruptions.per_hour / 3600.0
                until = (
                    seconds(event.spot_interruptions.until)
                    if event.spot_interruptions.until
                    else math.inf
                )
                self._next_interruption(at, rate, until)

    def _struck(self, node: str | None, count: int | None, group: str | None) -> list[str]:
        """``node`` by name, or the ``count`` youngest Ready nodes (of ``group``, or any)."""
        if node is not None:
            return [node]
        nodes = [n for n in self.cluster.nodes() if group in (None, n.group) and n.ready]
        now = self.cluster.clock.now()
        nodes.sort(key=lambda n: (node_age(n, now).age, n.name))
        return [n.name for n in nodes[:count]]

    def _kill_kubelets(self, death: KubeletDeath) -> None:
        for name in self._struck(death.node, death.nodes, death.group):
            self.cluster.kill_kubelet(name)

    def _flap(self, flap: Flap) -> None:
        names = self._struck(flap.node, flap.nodes, flap.group)
        self.cloud.flap(names, seconds(flap.period), flap.down_seconds, flap.times)

    def _next_interruption(self, after: float, rate: float, until: float) -> None:
        when = after + self.rng.expovariate(rate)
        if when >= until:
            return

        def interrupt() -> None:
            self.cloud.interrupt_spot()
            self._next_interruption(when, rate, until)

        self.events.at(when, interrupt)

    def _change_template(self, name: str, patch: dict[str, Any]) -> None:
        group = self.cluster.instance_group(name)
        if group is None:
            return
        template = group.spec.template.model_dump(by_alias=True, exclude_none=True)
        template.update(patch)
        spec = group.spec.model_copy(update={"template": Template.model_validate(template)})
        generation = (group.metadata.generation or 1) + 1
        metadata = group.metadata.model_copy(update={"generation": generation})
        self.cluster.update_group(group.model_copy(update={"spec": spec, "metadata": metadata}))
        self.cloud.log.append(
            (self.clock.seconds, "template", f"group {name}: template changed ({patch})")
        )

    # Driving the controller.

    def _reconcile(self, key: str) -> None:
        self.stats.reconciles += 1
        if key.startswith(WATCHDOG_PREFIX):
            self.watchdogs.start(key.removeprefix(WATCHDOG_PREFIX))
            return
        try:
            after = complete(self.controller.dispatch(key))
        except Exception as error:
            self.stats.errors += 1
            if len(self.stats.error_messages) < ERRORS_KEPT:
                self.stats.error_messages.append(
                    f"{self.clock.seconds:.0f}s {key}: {type(error).__name__}: {error}"
                )
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        if after is not None:
            self.queue.add_after(key, after)

    def run(
        self, progress: Callable[[float], None] | None = None, *, steps: int = 200
    ) -> SimulationStats:
        """Run the scenario's duration; ``progress`` hears the simulated seconds passed."""
        started = time.perf_counter()
        self.controller.enqueue_all()
        end = self.scenario.duration_seconds
        for step in range(1, steps + 1):
            self.events.run_until(end * step / steps)
            if progress is not None:
                progress(self.clock.seconds)
        self.recorder.sample()
        self.stats.wall_seconds = time.perf_counter() - started
        self.stats.events = self.events.processed
        return self.stats

    def node_hours(self) -> float:
        """Simulated node-hours: every node's time alive within the run."""
        end = self.clock.seconds
        total = 0.0
        for life in self.recorder.lifetimes.values():
            total += ((life.ended if life.ended is not None else end) - life.joined) / 3600
        return total
