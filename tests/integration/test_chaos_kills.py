"""Chaos: ``kill -9`` of ``molt run`` at random moments drawn from a seed, through an age
rotation of a 6-node kwok group and then a template rollout, with a PDB-guarded workload;
and through a template rollout of 6 instances on moto (Auto Scaling behind the fault
proxy, a bridge registering a kwok Node per instance).

The seed is printed (``MOLT_CHAOS_SEED`` replays one; ``MOLT_CHAOS_KILLS`` sets the count,
30 by default; ``make chaos`` runs more). Each run prints kills survived / tried and a
table of the pipeline steps and group phases the kills landed in; kill moments are
stratified over the steps (``tests.support.kill_coverage``), and a run of at least
``STRATIFIED_FROM`` kills must have hit every step where a node waits between reconciles
in it: on kwok, waiting for its replacement and draining; on moto, draining (a rollout's
replacements stand before their old nodes are selected) and terminating (the fault proxy
answers each termination 1.5 s late, as a slow cloud does, so a kill can land while the
call is out and the restarted controller must not terminate the instance twice), with
the group's launches (an instance without its Node yet) waited for and reported. A
cordon, and a kwok termination, are single writes between those waits here and are
reported where a kill happened to hit them.
Watch streams follow the pods, nodes and the Deployment throughout, so the invariants
are decided on every event, not on a final look: every old node replaced exactly once
(no launch is repeated), at most the budget in flight, no node cordoned without a
recorded reason, the PDB never breached, and no pod still running when its node was
deleted.
"""

from __future__ import annotations

import os
import random
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.policy.cells import template_revision
from tests.integration.test_aws_rollout import ZONES as AWS_ZONES
from tests.integration.test_aws_rollout import Cloud, cloud  # noqa: F401 (fixture)
from tests.support.aws_bridge import AwsNodeBridge
from tests.support.builders import deployment, instance_group, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.groups import set_template
from tests.support.kill_coverage import KillCoverage, steps_of
from tests.support.kube_fleet import (
    KWOK_TEMPLATE,
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    ready_nodes,
)
from tests.support.streams import PodNodeStreams
from tests.support.waiting import eventually

NODES = 6
REPLICAS = 12
IN_FLIGHT = 2
STRATIFIED_FROM = 6
"""From this many kills on, every waiting step must have been hit."""
KWOK_STEPS = ("replace", "drain")
AWS_STEPS = ("drain", "terminate")
SLOW_TERMINATION = 1.5
"""Seconds the fault proxy holds each of moto's terminations (see the module docstring)."""


async def _revisions(kube: client.ApiClient, group: str) -> Counter[str]:
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return Counter((n.metadata.labels or {}).get("molt.dev/revision", "") for n in nodes.items)


async def test_thirty_kills_at_random_moments_lose_nothing_and_repeat_nothing(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    seed = int(os.environ.get("MOLT_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    kills = int(os.environ.get("MOLT_CHAOS_KILLS") or 30)
    print(f"chaos seed {seed} ({kills} kills): MOLT_CHAOS_SEED={seed} replays it")
    rng = random.Random(seed)
    group = f"chaos-{uuid.uuid4().hex[:5]}"
    old = await install_old_fleet(kube, group, nodes=NODES, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, NODES), what="six Ready nodes")
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace,
        deployment("web", namespace, REPLICAS, node_selector={"molt.dev/instance-group": group}),
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, REPLICAS), what="web ready")
    streams, watch = PodNodeStreams(), FleetWatch()
    await streams.start(kube)
    await watch.start(kube, namespace, "web", REPLICAS, group)
    await install_policy(
        kube, f"{group}-48h", group, rules={"maxAge": "48h"}, budgets=[{"maxInFlight": IN_FLIGHT}]
    )
    second = {**KWOK_TEMPLATE, "labels": {"example.com/chaos": "second"}}
    rev2 = template_revision(Template.model_validate(second))
    coverage = KillCoverage(targets=KWOK_STEPS)
    rolled_out = False
    try:
        molt = run_molt(name="chaos-0")
        for kill in range(kills):
            await coverage.moment(rng, lambda: steps_of(kube, group))
            ready = await ready_nodes(kube, group)
            if not rolled_out and len(ready) == NODES and not set(ready) & set(old):
                # The age rotation is done: the kills go on through a template rollout.
                await set_template(kube, group, second)
                rolled_out = True
            molt.kill(signal.SIGKILL)
            molt = run_molt(name=f"chaos-{kill + 1}")
        if not rolled_out:
            await eventually(
                lambda: _rotated(kube, group, old), within=300, interval=1, what="rotation"
            )
            await set_template(kube, group, second)

        async def rolled() -> bool:
            return (
                await _revisions(kube, group) == Counter({rev2: NODES})
                and len(await ready_nodes(kube, group)) == NODES
            )

        await eventually(rolled, within=300, interval=1, what="every node at the new revision")
        await eventually(lambda: has_ready_replicas(kube, namespace, REPLICAS), what="web ready")
        assert molt.alive(), molt.log()
    finally:
        await streams.stop()
        await watch.stop()

    print(coverage.table(f"kwok chaos seed {seed}"))
    in_group = [name for name, trace in streams.nodes.items() if trace.group == group]
    # Six old nodes, six of the age rotation, six of the rollout: none launched twice.
    assert len(in_group) == 3 * NODES, sorted(in_group)
    gone = [name for name in in_group if streams.nodes[name].deleted_rv is not None]
    assert len(gone) == 2 * NODES
    assert set(old) <= set(gone)
    assert watch.max_in_pipeline <= IN_FLIGHT, watch.max_in_pipeline
    assert watch.cordoned_without_reason == set()
    assert watch.min_ready is not None
    assert watch.min_ready >= REPLICAS - 1, f"PDB breached: {watch.min_ready} ready"
    assert streams.died_with_their_node() == []
    print(f"kwok chaos seed {seed}: kills survived {kills} / tried {kills}")
    if kills >= STRATIFIED_FROM:
        assert not coverage.unhit(), f"no kill landed in {coverage.unhit()}"


async def _rotated(kube: client.ApiClient, group: str, old: list[str]) -> bool:
    ready = await ready_nodes(kube, group)
    return len(ready) == NODES and not set(ready) & set(old)


async def test_kills_through_an_aws_rollout_launch_nothing_twice_and_orphan_nothing(
    cloud: Cloud,  # noqa: F811
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    """The same on moto: the group's launches and terminations go through Auto Scaling,
    and a kill between a call and its record must not make Molt launch or leave an
    instance it should not."""
    seed = int(os.environ.get("MOLT_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    kills = int(os.environ.get("MOLT_CHAOS_KILLS") or 30)
    print(f"aws chaos seed {seed} ({kills} kills): MOLT_CHAOS_SEED={seed} replays it")
    rng = random.Random(seed)
    group = f"awsk{uuid.uuid4().hex[:5]}"
    first, second = cloud.template("ami-11111111"), cloud.template("ami-22222222")
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group,
            provider="aws",
            minSize=0,
            maxSize=12,
            replicas=NODES,
            zones=AWS_ZONES,
            template=first,
            strategy={"type": "RollingReplace", "maxSurge": IN_FLIGHT, "maxUnavailable": 0},
        ),
    )
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace,
        deployment("web", namespace, REPLICAS, node_selector={"molt.dev/instance-group": group}),
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    rev2 = template_revision(Template.model_validate(second))
    streams, watch = PodNodeStreams(), FleetWatch()
    coverage = KillCoverage(targets=(*AWS_STEPS, "launch"))

    async def observe() -> Counter[str]:
        """The Nodes' steps, and moto's instances without a Node yet (launches)."""
        seen = await steps_of(kube, group)
        states = cloud.instances(group)
        unregistered = states["pending"] + states["running"] - seen.total()
        if unregistered > 0:
            seen["launch"] += unregistered
        return seen

    async with AwsNodeBridge(kube, group) as bridge:
        molt = run_molt("--provider", "aws", name="aws-chaos-0")
        await eventually(
            lambda: has_ready_nodes(kube, group, NODES), within=120, what="six Ready nodes"
        )
        await eventually(lambda: has_ready_replicas(kube, namespace, REPLICAS), what="web ready")
        await streams.start(kube)
        await watch.start(kube, namespace, "web", REPLICAS, group)
        cloud.proxy.slow("TerminateInstanceInAutoScalingGroup", SLOW_TERMINATION)
        try:
            await set_template(kube, group, second)
            for kill in range(kills):
                await coverage.moment(rng, observe)
                molt.kill(signal.SIGKILL)
                molt = run_molt("--provider", "aws", name=f"aws-chaos-{kill + 1}")

            async def rolled() -> bool:
                return (
                    await _revisions(kube, group) == Counter({rev2: NODES})
                    and len(await ready_nodes(kube, group)) == NODES
                    and cloud.instances(group) == Counter({"running": NODES, "terminated": NODES})
                )

            await eventually(rolled, within=300, interval=1, what="every instance replaced once")
            assert molt.alive(), molt.log()
        finally:
            await streams.stop()
            await watch.stop()
        assert not bridge.errors, bridge.errors[-3:]

    print(coverage.table(f"aws chaos seed {seed}"))
    # Moto's view: six instances of the old template terminated, six new running, each
    # with its Node; none launched twice, none left behind.
    assert cloud.instances(group) == Counter({"running": NODES, "terminated": NODES})
    running = cloud.ec2.describe_instances(
        Filters=[
            {"Name": "tag:molt.dev/instance-group", "Values": [group]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    running_ids = {i["InstanceId"] for r in running for i in r["Instances"]}
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    assert {n.spec.provider_id.rsplit("/", 1)[-1] for n in nodes.items} == running_ids
    assert watch.max_in_pipeline <= IN_FLIGHT, watch.peak
    assert watch.cordoned_without_reason == set()
    assert watch.min_ready_pods is not None
    assert watch.min_ready_pods >= REPLICAS - 1, f"PDB breached: {watch.min_ready_pods} ready"
    assert streams.died_with_their_node() == []
    calls = Counter(
        seen.params.get("InstanceId", "")
        for seen in cloud.proxy.seen("TerminateInstanceInAutoScalingGroup")
        if seen.status == 200
    )
    print(f"aws chaos seed {seed}: terminations answered per instance {sorted(calls.values())}")
    print(f"aws chaos seed {seed}: kills survived {kills} / tried {kills}")
    missed = [step for step in AWS_STEPS if not coverage.hits[step]]
    if kills >= STRATIFIED_FROM:
        assert not missed, f"no kill landed in {missed}"
