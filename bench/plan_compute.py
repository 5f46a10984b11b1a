"""How long the policy core takes to plan a large fleet.

Builds 5,000 nodes in 3 zones and 4 groups at ages spread over 0-60 h, a policy with max
age, jitter, drift and condition rules and zone plus cluster budgets, then times
``compute_plan``. By design the plan reads no pods (the controller caches pods only for
nodes that drain), so the 150,000 pods of the fleet (30 a node) are timed where Molt
looks at them: sorting every node's pods for a drain with ``classify_pods``.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from molt.api.labels import GROUP_LABEL, LAUNCHED_AT_ANNOTATION, REVISION_LABEL, ZONE_LABEL
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.drain import classify_pods
from molt.policy.plan import compute_plan
from molt.policy.snapshot import GroupView, NodeCondition, NodeView, PodView, Snapshot

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def fleet(size: int, seed: int = 7) -> Snapshot:
    rng = random.Random(seed)
    groups = [f"group-{i}" for i in range(4)]
    nodes = []
    for index in range(size):
        launched = NOW - timedelta(hours=rng.uniform(0, 60))
        group = groups[index % len(groups)]
        ready = "False" if rng.random() < 0.01 else "True"
        nodes.append(
            NodeView(
                name=f"node-{index:05d}",
                created=launched,
                labels={
                    GROUP_LABEL: group,
                    ZONE_LABEL: f"zone-{'abc'[index % 3]}",
                    REVISION_LABEL: "rev2" if rng.random() < 0.9 else "rev1",
                },
                annotations={LAUNCHED_AT_ANNOTATION: launched.strftime("%Y-%m-%dT%H:%M:%SZ")},
                conditions=(NodeCondition("Ready", ready, NOW - timedelta(minutes=30)),),
            )
        )
    return Snapshot(tuple(nodes), {g: GroupView(g, "rev2") for g in groups})


POLICY = TerminationPolicy.model_validate(
    {
        "kind": "TerminationPolicy",
        "metadata": {"name": "rotate"},
        "spec": {
            "rules": {
                "maxAge": "48h",
                "maxAgeJitter": "4h",
                "drift": True,
                "conditions": [{"type": "Ready", "status": "False", "for": "5m"}],
            },
            "budgets": [
                {"maxInFlight": "10%", "scope": "Cluster"},
                {"maxInFlight": 20, "scope": "Zone"},
            ],
        },
    }
)


def run(size: int = 5000, repeats: int = 7) -> None:
    snapshot = fleet(size)
    timings = []
    plan = None
    for _ in range(repeats):
        started = time.perf_counter()
        plan = compute_plan(snapshot, [POLICY], NOW)
        timings.append(time.perf_counter() - started)
    assert plan is not None
    print(
        f"plan for {size} nodes: median {statistics.median(timings) * 1000:.1f} ms "
        f"(min {min(timings) * 1000:.1f} ms over {repeats} runs); "
        f"{len(plan.decisions)} selected, {len(plan.admitted)} admitted now"
    )


def pods_per_node(snapshot: Snapshot, per_node: int = 30) -> dict[str, list[PodView]]:
    """30 pods a node: mostly ReplicaSet pods, one DaemonSet pod, a few do-not-disrupt."""
    pods: dict[str, list[PodView]] = {}
    for node in snapshot.nodes:
        pods[node.name] = [
            PodView(
                namespace=f"ns-{index % 7}",
                name=f"{node.name}-pod-{index}",
                uid=f"{node.name}-{index}",
                node=node.name,
                phase="Running",
                owner_kinds=("DaemonSet",) if index == 0 else ("ReplicaSet",),
                annotations={"molt.dev/do-not-disrupt": "true"} if index % 29 == 1 else {},
            )
            for index in range(per_node)
        ]
    return pods


def run_pods(size: int = 5000, repeats: int = 5) -> None:
    snapshot = fleet(size)
    pods = pods_per_node(snapshot)
    total = sum(len(p) for p in pods.values())
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for node in snapshot.nodes:
            classify_pods(pods[node.name], NOW, None)
        timings.append(time.perf_counter() - started)
    print(
        f"drain classification of {total} pods on {size} nodes: "
        f"median {statistics.median(timings) * 1000:.1f} ms over {repeats} runs"
    )


if __name__ == "__main__":
    run()
    run_pods()
