"""The health phase: failures counted per revision and cell, failing cells rested, young
instances and nodes judged, and revisions judged Degraded or tried again.

A failed launch, an instance that is not a Ready node within ``readyTimeout`` and a young
node NotReady for ``notReadyFor`` each count once against their cell, and the failed
instance is terminated; the cell rests for that revision (``rests``). NotReady striking
several cells at once is an infrastructure event and counts nowhere. A revision is
Degraded when its failures span its cells (``molt.policy.health``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from molt.api.durations import parse_duration
from molt.api.instancegroup import InstanceGroup
from molt.api.labels import INTERRUPTION_ANNOTATION
from molt.cloud.provider import CellObservation, CellRef, Instance
from molt.controllers.instancegroup.nodes import not_ready_since
from molt.controllers.instancegroup.rests import rest_short, rest_unhealthy
from molt.controllers.instancegroup.scope import GroupPorts, GroupScope
from molt.policy.age import format_rfc3339
from molt.policy.cells import SPOT, CellKey, split_capacity
from molt.policy.health import NotReadyNode, degraded_backoff, judge_not_ready, judge_revision
from molt.policy.host_init import keep_latest
from molt.policy.interruptions import read_annotation
from molt.policy.snapshot import NodeView

log = structlog.get_logger(__name__)

DEGRADED_RETRY_CAP = timedelta(hours=8)
"""A degraded revision is tried again after the window, doubling, at most this long."""


def _key(cell: CellRef) -> CellKey:
    return CellKey(cell.zone, cell.capacity_type)


async def count_failures(scope: GroupScope, ports: GroupPorts) -> None:
    """Record the launches within the window and count each failed launch once: a
    capacity failure rests its cell, any other rests the cell for its revision."""
    memory, now = scope.memory, scope.now
    window = parse_duration(scope.spec.health.window)
    since = now - window
    memory.forget_counted_before(since)
    for observation in scope.observations:
        cell = observation.cell
        key = _key(cell)
        for instance in observation.instances:
            launched = instance.launched_at
            if launched is not None and launched >= since:  # within the window
                memory.record_launch(cell.revision, key, instance.instance_id, launched)
                memory.launched_in(key, launched)
        for failure in observation.failures:
            if now - failure.at > window:
                continue
            launch = f"{cell} {format_rfc3339(failure.at)} {failure.message}"
            if launch in memory.counted:
                continue  # the provider lists its recent failures on every observation
            memory.counted[launch] = failure.at
            ports.metrics.failed(scope.name, key)
            if failure.capacity:
                await rest_short(scope, ports, key)
                continue
            memory.record_failure(cell.revision, key, launch, failure.at)
            await rest_unhealthy(
                scope, ports, cell.revision, key, f"a launch failed: {failure.message}"
            )
            await ports.writes.record_resource_event(
                InstanceGroup,
                scope.name,
                "LaunchFailed",
                f"revision {cell.revision} in {cell.zone}/{cell.capacity_type}: {failure.message}",
                warning=True,
            )
    await _rest_interrupted_spot_cells(scope, ports)


async def _rest_interrupted_spot_cells(scope: GroupScope, ports: GroupPorts) -> None:
    """A spot interruption says the cell's spot pool is being reclaimed: rest the cell as
    if it were out of capacity, so the node's replacement launches in another cell."""
    memory = scope.memory
    for node in scope.members:
        if INTERRUPTION_ANNOTATION not in node.annotations or node.cell.capacity_type != SPOT:
            continue
        notice = read_annotation(node.annotations[INTERRUPTION_ANNOTATION])
        if notice is None or notice.kind != "spot-interruption":
            continue
        mark = f"interrupted {node.name} {notice.id}"
        if mark in memory.counted:
            continue
        memory.counted[mark] = notice.at
        await rest_short(scope, ports, node.cell)


def measure_host_init(scope: GroupScope, ports: GroupPorts) -> None:
    """Launch to Ready, for nodes Ready for the first time (before ``judge_launches``
    learns them as seen Ready)."""
    fresh = [m for m in scope.members if m.ready and m.name not in scope.memory.seen_ready]
    if not fresh:
        return
    launched: dict[str, datetime] = {}
    for _, instance, node in scope.census():
        if node is not None and instance.launched_at is not None:
            launched[node.name] = instance.launched_at
    for revision, seconds in ports.metrics.became_ready(scope.name, fresh, launched, scope.now):
        keep_latest(scope.memory.host_init.setdefault(revision, []), seconds)


async def judge_launches(scope: GroupScope, ports: GroupPorts) -> None:
    """Terminate young instances that never became Ready nodes within ``readyTimeout``,
    and judge nodes that were Ready once and are NotReady now. Sets ``scope.collected``
    when an instance or a node went."""
    memory = scope.memory
    names = scope.index.by_name  # every member, by name
    memory.seen_ready.intersection_update(names)  # nodes that went are forgotten
    memory.excused.intersection_update(names)
    ready = {member.name for member in scope.members if member.ready}
    memory.seen_ready |= ready
    memory.excused -= ready
    not_ready: list[NotReadyNode] = []
    launches: dict[str, tuple[CellRef, Instance]] = {}
    for observation, instance, node in scope.census():
        if node is not None and node.ready:
            continue  # the common case, decided before any arithmetic
        down = _judge_instance(scope, observation, instance, node)
        if isinstance(down, NotReadyNode):
            not_ready.append(down)
            launches[down.name] = (observation.cell, instance)
        elif down:
            await _not_ready_in_time(scope, ports, observation.cell, instance)
    await _judge_not_ready(scope, ports, not_ready, launches)


def _judge_instance(
    scope: GroupScope, observation: CellObservation, instance: Instance, node: NodeView | None
) -> NotReadyNode | bool:
    """A node Ready once and NotReady now (judged with the whole group's NotReady), True
    for a young instance past ``readyTimeout`` without a Ready node, else False.
    ``node`` is the Node the instance became, if any."""
    if node is not None and node.ready:
        return False
    health, now = scope.spec.health, scope.now
    ready_timeout = parse_duration(health.ready_timeout)
    window = parse_duration(health.window)
    launched = instance.launched_at
    young = launched is not None and now - launched <= ready_timeout + window
    if node is not None and node.name in scope.memory.seen_ready:
        return NotReadyNode(
            node.name,
            _key(observation.cell),
            not_ready_since(node, now),
            young and not node.in_pipeline,
            observation.cell.revision,
        )
    if node is not None and node.in_pipeline:
        return False
    if launched is None or not young:
        return False  # an old instance: its health is the policies' business
    return now - launched > ready_timeout


async def _not_ready_in_time(
    scope: GroupScope, ports: GroupPorts, cell: CellRef, instance: Instance
) -> None:
    """Terminate an instance that was not a Ready node within ``readyTimeout`` (and its
    node, if it joined) and count it against its cell."""
    await ports.provider.terminate_instance(cell, instance.instance_id)
    node = scope.index.node_for(instance)
    if node is not None:
        await ports.writes.delete_node(node.name)
    scope.collected = True
    key = _key(cell)
    scope.memory.record_failure(cell.revision, key, instance.instance_id, scope.now)
    ports.metrics.failed(scope.name, key)
    await rest_unhealthy(scope, ports, cell.revision, key, "a node was not Ready in time")
    await ports.writes.record_resource_event(
        InstanceGroup,
        scope.name,
        "InstanceNotReady",
        f"instance {instance.instance_id} (revision {cell.revision}, "
        f"{cell.zone}/{cell.capacity_type}) was not a Ready "
        f"node within {scope.spec.health.ready_timeout}: terminated",
        warning=True,
    )


async def _judge_not_ready(
    scope: GroupScope,
    ports: GroupPorts,
    not_ready: list[NotReadyNode],
    launches: dict[str, tuple[CellRef, Instance]],
) -> None:
    """Count young nodes NotReady past ``notReadyFor`` against their cell, once per
    launch, and replace them; report NotReady that struck several cells at once, and
    count it nowhere."""
    name, memory, now = scope.name, scope.memory, scope.now
    not_ready_for = parse_duration(scope.spec.health.not_ready_for)
    verdict = judge_not_ready(
        not_ready, len(scope.members), now, not_ready_for, struck_before=frozenset(memory.struck)
    )
    memory.struck = set(verdict.struck)
    fresh = [n for n in verdict.excused if n not in memory.excused]
    if fresh:
        memory.excused.update(fresh)
        cells = sorted({str(n.cell) for n in not_ready})
        message = (
            f"{len(not_ready)} node(s) went NotReady at once across {', '.join(cells)}: "
            "an infrastructure event, counted against no cell or revision"
        )
        await ports.writes.record_resource_event(
            InstanceGroup, name, "NodesNotReady", message, warning=True
        )
        log.warning("group.not_ready_burst", group=name, nodes=len(not_ready), cells=cells)
    for node_name in verdict.failing:
        cell, instance = launches[node_name]
        key = _key(cell)
        memory.record_failure(cell.revision, key, instance.instance_id, now)
        ports.metrics.failed(name, key)
        await rest_unhealthy(scope, ports, cell.revision, key, f"{node_name} stayed NotReady")
        # A young node that died on its own serves nothing and never will: it goes like
        # an instance that never became Ready, and its share is launched elsewhere.
        await ports.provider.terminate_instance(cell, instance.instance_id)
        await ports.writes.delete_node(node_name)
        scope.collected = True
        await ports.writes.record_resource_event(
            InstanceGroup,
            name,
            "NodeNotReady",
            f"{node_name} (revision {cell.revision}, {key}) has been NotReady for "
            f"{scope.spec.health.not_ready_for} soon after joining: terminated",
            warning=True,
        )


async def judge_revisions(scope: GroupScope, ports: GroupPorts) -> None:
    """Retry degraded revisions whose backoff has run out; degrade revisions whose
    failures span their cells."""
    await _retry_degraded(scope, ports)
    health, spec, memory, now = scope.spec.health, scope.spec, scope.memory, scope.now
    window = parse_duration(health.window)
    group_cells = len(split_capacity(spec.desired_replicas, list(spec.zones), spec.capacity).cells)
    for revision in sorted(set(memory.failures) | set(memory.launches)):
        records = memory.cell_records(revision, now, window)  # also forgets old launches
        if revision in memory.degraded or not any(r.failures for r in records.values()):
            continue
        verdict = judge_revision(records, health.failure_threshold, group_cells)
        if verdict.degraded:
            await _degrade(scope, ports, revision, f"{verdict.why} within {health.window}")


async def _retry_degraded(scope: GroupScope, ports: GroupPorts) -> None:
    memory, now = scope.memory, scope.now
    window = parse_duration(scope.spec.health.window)
    for revision in list(memory.degraded):
        until = memory.degraded_until.setdefault(revision, now + window)
        if until > now:
            continue
        del memory.degraded[revision]
        del memory.degraded_until[revision]
        memory.forget_health(revision)
        await ports.writes.record_resource_event(
            InstanceGroup,
            scope.name,
            "RevisionRetried",
            f"revision {revision} was degraded {memory.times_degraded[revision]} time(s); "
            "trying it again",
        )
        log.info("group.degraded_retry", group=scope.name, revision=revision)


async def _degrade(scope: GroupScope, ports: GroupPorts, revision: str, why: str) -> None:
    """Mark ``revision`` Degraded, roll back to the previous revision if there is one,
    and say when it is tried again."""
    name, memory, now = scope.name, scope.memory, scope.now
    memory.degraded[revision] = why
    memory.times_degraded[revision] += 1
    window = parse_duration(scope.spec.health.window)
    retry = degraded_backoff(memory.times_degraded[revision], window, DEGRADED_RETRY_CAP)
    memory.degraded_until[revision] = now + retry
    back_to = memory.previous if memory.can_roll_back(revision) else None
    if back_to:
        ports.metrics.rolled_back(name)
    action = (
        f"rolling back to revision {back_to}"
        if back_to
        else "no previous revision to return to: the group keeps its size from it"
    )
    await ports.writes.record_resource_event(
        InstanceGroup,
        name,
        "RevisionDegraded",
        f"revision {revision} is degraded: {why}; {action}; tried again at "
        f"{format_rfc3339(now + retry)}",
        warning=True,
    )
    log.warning("group.degraded", group=name, revision=revision, why=why)
