"""The chaos runs' kill coverage: a node's pipeline step read from its Node, and kill
moments that wait (boundedly) for a step no kill has hit yet."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from kubernetes_asyncio import client

from molt.api.labels import (
    DRAIN_STARTED_ANNOTATION,
    DRAINED_AT_ANNOTATION,
    REPLACEMENT_ANNOTATION,
    STATE_LABEL,
)
from tests.support.kill_coverage import KillCoverage, step_of


def _node(
    state: str | None = None, *, ready: bool = True, unschedulable: bool = False, **notes: str
) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name="n", labels={STATE_LABEL: state} if state else {}, annotations=notes
        ),
        spec=client.V1NodeSpec(unschedulable=unschedulable),
        status=client.V1NodeStatus(
            conditions=[client.V1NodeCondition(type="Ready", status=str(ready))]
        ),
    )


@pytest.mark.parametrize(
    ("node", "step"),
    [
        (_node(), "serving"),
        (_node(ready=False), "launch"),
        (_node("selected"), "replace"),
        (_node("selected", **{REPLACEMENT_ANNOTATION: "launched"}), "cordon"),
        (_node("selected", unschedulable=True), "cordon"),
        (_node("draining", unschedulable=True, **{DRAIN_STARTED_ANNOTATION: "t"}), "drain"),
        (
            _node("draining", **{DRAIN_STARTED_ANNOTATION: "t", DRAINED_AT_ANNOTATION: "t"}),
            "terminate",
        ),
        (_node("terminating"), "terminate"),
    ],
)
def test_a_node_reads_as_its_pipeline_step(node: client.V1Node, step: str) -> None:
    assert step_of(node) == step


def test_a_kill_waits_for_a_step_no_kill_has_hit_yet() -> None:
    """Observations run replace, replace, drain: the first kill lands at replace at once,
    the second waits past the replace it sees first until the drain shows."""
    seen = iter([Counter(replace=1), Counter(replace=1), Counter(drain=1), Counter(drain=1)])

    async def observe() -> Counter[str]:
        return next(seen)

    coverage = KillCoverage(targets=("replace", "drain"), wait_cap=5.0)
    rng = random.Random(0)
    rng.uniform = lambda a, b: 0.0  # type: ignore[method-assign]
    asyncio.run(coverage.moment(rng, observe))
    assert coverage.hits == Counter(replace=1)
    asyncio.run(coverage.moment(rng, observe))
    assert coverage.hits == Counter(replace=1, drain=1)
    assert coverage.unhit() == []


def test_a_kill_lands_anyway_when_its_wait_runs_out() -> None:
    async def observe() -> Counter[str]:
        return Counter(serving=6)

    coverage = KillCoverage(targets=("drain",), wait_cap=0.3)
    rng = random.Random(0)
    rng.uniform = lambda a, b: 0.0  # type: ignore[method-assign]
    asyncio.run(coverage.moment(rng, observe))
    assert coverage.kills == 1
    assert coverage.unhit() == ["drain"]
    assert coverage.hits["serving"] == 1
    assert "drain" in coverage.table("t")
