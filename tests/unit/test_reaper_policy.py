"""The reapers' pure decisions: which stuck pods, finished pods and ghost nodes are due,
and the per-minute rate limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from molt.api.reaper import Reaper
from molt.policy.reaper import (
    RateLimit,
    finished_pod_due,
    ghost_candidate,
    not_ready_since,
    stuck_pods_due,
)
from molt.policy.snapshot import NodeCondition, NodeView, PodView

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TEN_MINUTES = timedelta(minutes=10)


def _node(ready: str | None, since: timedelta = timedelta(hours=1), **kw: object) -> NodeView:
    conditions = (
        () if ready is None else (NodeCondition("Ready", ready, last_transition=NOW - since),)
    )
    return NodeView(
        name="n1",
        created=NOW - timedelta(days=3),
        conditions=conditions,
        provider_id=kw.get("provider_id", "kwok://n1"),  # type: ignore[arg-type]
    )


def _deleting(name: str, overdue: timedelta, namespace: str = "default") -> PodView:
    return PodView(
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        node="n1",
        phase="Running",
        deleting=True,
        deletion_timestamp=NOW - overdue,
    )


def test_a_ready_node_never_yields_a_stuck_pod() -> None:
    pods = [_deleting("old", timedelta(days=1))]
    assert stuck_pods_due(_node("True"), pods, NOW, TEN_MINUTES) == []


@pytest.mark.parametrize("status", ["False", "Unknown"])
def test_on_a_not_ready_node_only_pods_past_after_are_due(status: str) -> None:
    late, early = _deleting("late", timedelta(minutes=11)), _deleting("early", timedelta(minutes=9))
    running = PodView(namespace="default", name="up", uid="u", node="n1", phase="Running")
    due = stuck_pods_due(_node(status), [late, early, running], NOW, TEN_MINUTES)
    assert due == [late]


def test_the_namespace_selection_limits_stuck_pods() -> None:
    kept, out = _deleting("a", timedelta(hours=1), "apps"), _deleting("b", timedelta(hours=1), "x")
    assert stuck_pods_due(_node("False"), [kept, out], NOW, TEN_MINUTES, frozenset({"apps"})) == [
        kept
    ]


def _finished(phase: str, age: timedelta, owners: tuple[str, ...] = ()) -> PodView:
    return PodView(
        namespace="default",
        name="f",
        uid="uf",
        node="n1",
        phase=phase,
        owner_kinds=owners,
        created=NOW - age,
    )


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_pod_past_its_ttl_is_due(phase: str) -> None:
    assert finished_pod_due(_finished(phase, timedelta(hours=25)), NOW, timedelta(hours=24))
    assert not finished_pod_due(_finished(phase, timedelta(hours=23)), NOW, timedelta(hours=24))


def test_a_jobs_pod_a_running_pod_and_another_namespace_are_never_due() -> None:
    old = timedelta(days=9)
    assert not finished_pod_due(_finished("Succeeded", old, ("Job",)), NOW, timedelta(hours=1))
    assert not finished_pod_due(_finished("Running", old), NOW, timedelta(hours=1))
    assert not finished_pod_due(
        _finished("Failed", old), NOW, timedelta(hours=1), frozenset({"other"})
    )


def test_ghost_candidates_are_not_ready_long_enough_and_name_an_instance() -> None:
    assert ghost_candidate(_node("Unknown", timedelta(minutes=11)), NOW, TEN_MINUTES)
    assert not ghost_candidate(_node("Unknown", timedelta(minutes=9)), NOW, TEN_MINUTES)
    assert not ghost_candidate(_node("True"), NOW, TEN_MINUTES)
    assert not ghost_candidate(_node("False", provider_id=None), NOW, TEN_MINUTES)


def test_a_node_without_a_ready_condition_counts_from_its_creation() -> None:
    node = _node(None)
    assert not_ready_since(node) == node.created


def test_the_rate_limit_slides_over_a_minute() -> None:
    limit = RateLimit(per_minute=2)
    assert limit.take(NOW)
    assert limit.take(NOW + timedelta(seconds=10))
    assert not limit.take(NOW + timedelta(seconds=59))
    assert limit.remaining(NOW + timedelta(seconds=60)) == 1
    assert limit.take(NOW + timedelta(seconds=60))
    assert not limit.take(NOW + timedelta(seconds=61))


def test_the_reaper_model_refuses_a_negative_duration_and_an_unknown_field() -> None:
    base = {"apiVersion": "molt.dev/v1alpha1", "kind": "Reaper", "metadata": {"name": "r"}}
    Reaper.model_validate({**base, "spec": {"stuckPods": {"after": "10m"}}})
    with pytest.raises(ValueError, match="must be a duration"):
        Reaper.model_validate({**base, "spec": {"stuckPods": {"after": "-10m"}}})
    with pytest.raises(ValueError, match="surprise"):
        Reaper.model_validate({**base, "spec": {"ghostNodes": {}, "surprise": 1}})
    with pytest.raises(ValueError, match="at least one of"):
        Reaper.model_validate({**base, "spec": {"dryRun": True}})
