"""How long the policy core takes to plan a large fleet.

Builds 5,000 nodes in 3 zones and 4 groups at ages spread over 0-60 h, a policy with max
age, jitter, drift and condition rules and zone plus cluster budgets, then times
``compute_plan``. Pods are not part of the snapshot yet (the drain reads them per node),
so the figure covers node selection, ordering and budgets.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.plan import compute_plan
from molt.policy.snapshot import (
    GROUP_LABEL,
    LAUNCHED_AT_ANNOTATION,
    REVISION_LABEL,
    ZONE_LABEL,
    GroupView,
    NodeCondition,
    NodeView,
    Snapshot,
)

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


if __name__ == "__main__":
    run()
