"""The Reaper controller over the fake ports: what it deletes, what it only reports in a
dry run, what it never touches, and how it counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from molt.api.reaper import Reaper
from molt.controllers.reaper.reconciler import ReaperReconciler
from molt.observe.metrics import Metrics
from molt.policy.snapshot import NodeCondition, NodeView, PodView
from tests.support.fake_ports import FakeClock, FakeCluster

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _node(name: str, ready: bool, provider_id: str | None = None) -> NodeView:
    status = "True" if ready else "Unknown"
    return NodeView(
        name=name,
        created=NOW - 24 * HOUR,
        conditions=(NodeCondition("Ready", status, last_transition=NOW - HOUR),),
        uid=f"uid-{name}",
        provider_id=provider_id or f"fake://{name}",
    )


def _stuck(name: str, node: str) -> PodView:
    return PodView(
        namespace="apps",
        name=name,
        uid=f"uid-{name}",
        node=node,
        phase="Running",
        deleting=True,
        deletion_timestamp=NOW - HOUR,
    )


def _reaper(**spec: Any) -> Reaper:
    return Reaper.model_validate(
        {
            "apiVersion": "molt.dev/v1alpha1",
            "kind": "Reaper",
            "metadata": {"name": "r"},
            "spec": spec,
        }
    )


class FakeChecker:
    """A FAKE instance checker: ``answers`` by node name (absent: cannot tell)."""

    name = "fake"

    def __init__(self, answers: dict[str, bool | None]) -> None:
        self.answers = answers

    async def instance_exists(self, node: NodeView) -> bool | None:
        return self.answers.get(node.name)


def _reconciler(
    cluster: FakeCluster, checkers: list[FakeChecker] | None = None
) -> tuple[ReaperReconciler, Metrics]:
    metrics = Metrics()
    return ReaperReconciler(cluster, cluster, FakeClock(NOW), metrics, checkers or []), metrics


def _reaped(metrics: Metrics, kind: str, dry_run: str = "false") -> float:
    value = metrics.registry.get_sample_value(
        "molt_reaped_total", {"kind": kind, "dry_run": dry_run}
    )
    return value or 0.0


async def test_stuck_pods_are_force_deleted_only_on_the_dead_node() -> None:
    cluster = FakeCluster(
        nodes=[_node("dead", False), _node("healthy", True)],
        pods=[_stuck("on-dead", "dead"), _stuck("on-healthy", "healthy")],
        reapers=[_reaper(stuckPods={"after": "10m"})],
    )
    reconciler, metrics = _reconciler(cluster)

    assert await reconciler.reconcile("r") == 30.0

    assert cluster.force_deleted_pods == ["apps/on-dead"]
    assert cluster.pod_keys("healthy") == ["apps/on-healthy"]
    assert _reaped(metrics, "stuckPods") == 1
    name, status = cluster.reaper_status_patches[-1]
    assert (name, status["reaped"]["stuckPods"]) == ("r", 1)
    assert "lastReapTime" in status
    assert {e.node for e in cluster.events if e.reason == "Reaped"} == {
        "pod/apps/on-dead",
        "reaper/r",
    }


async def test_a_dry_run_reports_once_and_deletes_nothing() -> None:
    cluster = FakeCluster(
        nodes=[_node("dead", False)],
        pods=[_stuck("on-dead", "dead")],
        reapers=[_reaper(stuckPods={"after": "10m"}, dryRun=True)],
    )
    reconciler, metrics = _reconciler(cluster)

    await reconciler.reconcile("r")
    await reconciler.reconcile("r")

    assert cluster.force_deleted_pods == []
    assert cluster.pod_keys("dead") == ["apps/on-dead"]
    assert _reaped(metrics, "stuckPods", dry_run="true") == 1
    assert _reaped(metrics, "stuckPods") == 0
    assert [e.node for e in cluster.events if e.reason == "WouldReap"] == [
        "pod/apps/on-dead",
        "reaper/r",
    ]


async def test_a_ghost_is_deleted_only_when_a_provider_says_gone_and_none_says_it_exists() -> None:
    nodes = [_node(n, False) for n in ("gone", "exists", "unknown", "disputed")] + [
        _node("ready", True)
    ]
    cluster = FakeCluster(nodes=nodes, reapers=[_reaper(ghostNodes={"after": "10m"})])
    checkers = [
        FakeChecker({"gone": False, "exists": True, "disputed": False, "ready": False}),
        FakeChecker({"disputed": True}),
    ]
    reconciler, metrics = _reconciler(cluster, checkers)

    await reconciler.reconcile("r")

    assert cluster.deleted_nodes == ["gone"]
    assert _reaped(metrics, "ghostNodes") == 1


async def test_finished_pods_past_the_ttl_go_but_not_a_jobs_nor_another_namespace() -> None:
    def finished(name: str, namespace: str = "apps", owners: tuple[str, ...] = ()) -> PodView:
        return PodView(
            namespace=namespace,
            name=name,
            uid=f"uid-{name}",
            node="n",
            phase="Succeeded",
            owner_kinds=owners,
            created=NOW - 48 * HOUR,
        )

    cluster = FakeCluster(
        nodes=[_node("n", True)],
        reapers=[
            _reaper(finishedPods={"ttl": "24h"}, namespaceSelector={"matchLabels": {"t": "y"}})
        ],
    )
    cluster.finished_pods = [
        finished("old"),
        finished("job-pod", owners=("Job",)),
        finished("x", "other"),
    ]
    cluster.namespace_labels = {"apps": {"t": "y"}, "other": {}}
    reconciler, _ = _reconciler(cluster)

    await reconciler.reconcile("r")

    assert cluster.deleted_pods == ["apps/old"]


async def test_the_rate_limit_holds_the_rest_for_later_and_says_so() -> None:
    cluster = FakeCluster(
        nodes=[_node("dead", False)],
        pods=[_stuck(f"p{i}", "dead") for i in range(3)],
        reapers=[_reaper(stuckPods={"after": "10m"}, maxPerMinute=2)],
    )
    reconciler, _ = _reconciler(cluster)

    await reconciler.reconcile("r")

    assert len(cluster.force_deleted_pods) == 2
    status = cluster.reaper_status_patches[-1][1]
    assert status["conditions"][0]["type"] == "RateLimited"
    assert status["conditions"][0]["status"] == "True"


async def test_a_deleted_reaper_stops_its_passes() -> None:
    cluster = FakeCluster(nodes=[_node("dead", False)], pods=[_stuck("p", "dead")])
    reconciler, _ = _reconciler(cluster)
    assert await reconciler.reconcile("r") is None
    assert cluster.force_deleted_pods == []
