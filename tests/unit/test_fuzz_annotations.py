"""Fuzzed node metadata: whatever a person (or a broken tool) writes into Molt's
annotations, selection, the pipeline and remediation report it and go on; no reconcile
raises, and no node is terminated before it has been drained.

A node carries random values under every annotation Molt reads (timestamps that are not
timestamps, JSON that is not the expected shape, empty strings), in each pipeline state,
beside a Ready replacement. Selection, the node's pipeline and the remediation pass run a
few rounds on a fake clock. ``MOLT_FUZZ_EXAMPLES`` raises the example count (default 60).
"""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molt.api import labels
from molt.controllers.remediation.reconciler import RemediationReconciler
from tests.support.fake_ports import pod
from tests.support.fleet import node, policy
from tests.unit.test_pipeline import ONE, READY, World, replacement_node, world

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("MOLT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

READ_BY_MOLT = [
    labels.POLICY_ANNOTATION,
    labels.REASON_ANNOTATION,
    labels.SELECTED_AT_ANNOTATION,
    labels.BLOCKED_ANNOTATION,
    labels.LAUNCHED_AT_ANNOTATION,
    labels.DEADLINE_ANNOTATION,
    labels.REPLACEMENT_ANNOTATION,
    labels.DRAIN_STARTED_ANNOTATION,
    labels.DRAINED_AT_ANNOTATION,
    labels.ACTIONS_ANNOTATION,
    labels.UNREACHABLE_ANNOTATION,
    labels.DEREGISTERED_AT_ANNOTATION,
    labels.DEREGISTRATION_WAIT_ANNOTATION,
    labels.INTERRUPTION_ANNOTATION,
    labels.REMEDIATION_ANNOTATION,
    labels.DO_NOT_DISRUPT,
]

values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "true",
            "false",
            "null",
            "-1",
            "{",
            "[]",
            "{}",
            '{"step": "x", "kind": 7}',
            '{"notify": {"state": 3, "attempts": "many"}}',
            '{"step": 99, "kind": "reboot", "startedAt": "yesterday"}',
            "2026-13-45T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-23T12:00:00",
            "none: no group",
            "workers-new-1",
        ]
    ),
)


async def _rounds(annotations: dict[str, str], state: str | None) -> World:
    marked = node("old", age_hours=60, state=state, annotations=annotations, conditions=READY)
    rotate = policy(
        "rotate",
        rules={"maxAge": "48h", "conditions": [{"type": "Ready", "status": "False", "for": "1m"}]},
        remediation={"steps": [{"reboot": {"timeout": "5m"}}, {"replace": {}}]},
    )
    w = world(marked, replacement_node(), pods=(pod("web-1"),), group=ONE, rotate=rotate)
    selection = w.selection()
    remediation = RemediationReconciler(w.cluster, w.cluster, w.clock, {"kwok": w.provider})
    for _ in range(8):
        await selection.reconcile()
        await remediation.reconcile()
        if w.cluster.node("old") is not None:
            await w.pipeline.reconcile("old")
        w.clock.advance(30)
    if "old" in w.cluster.deleted_nodes:
        # Its pod went first, through an eviction or a deletion: none goes with the node.
        assert not w.cluster.pods_on("old"), w.cluster.events
    return w


@FUZZ
@given(
    st.dictionaries(st.sampled_from(READ_BY_MOLT), values, min_size=1, max_size=6),
    st.sampled_from([None, "selected", "draining", "terminating", "bogus"]),
)
def test_malformed_molt_annotations_never_crash_a_reconcile_or_skip_the_drain(
    annotations: dict[str, str], state: str | None
) -> None:
    asyncio.run(_rounds(annotations, state))


def test_the_fuzzed_world_does_reach_the_pipeline() -> None:
    """The fuzz above is only worth something if a well-formed node in the same world is
    selected, drained and terminated within its rounds."""
    w = asyncio.run(_rounds({}, None))
    assert "old" in w.cluster.deleted_nodes, w.cluster.events
