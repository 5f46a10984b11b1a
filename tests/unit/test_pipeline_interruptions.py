"""The pipeline for interrupted nodes: drained at once (no wait for a replacement), an
Auto Scaling lifecycle hook held with heartbeats while the node drains and completed only
once it is empty, before the instance goes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from molt.api import InstanceGroup
from molt.api.types import LabelSelector
from molt.controllers.termination.pipeline import PipelineReconciler
from molt.observe.metrics import Metrics
from molt.policy.interruptions import LifecycleHook, Notice
from molt.policy.pdbs import PdbView
from molt.policy.snapshot import NodeCondition
from molt.ports import EvictionOutcome
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider, pod
from tests.support.fleet import NOW, node, policy

HOOK = LifecycleHook("molt-workers-a", "drain", "token-1")
ONE = InstanceGroup.model_validate(instance_group("workers", minSize=1, maxSize=3, replicas=1))
READY = (NodeCondition("Ready", "True", NOW),)


class FakeHookedProvider(FakeProvider):
    """A FAKE cloud whose groups wait on lifecycle hooks (``LifecycleHooks``); every call
    lands in ``calls`` in order, with the node's pod count at the time."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self.calls: list[tuple[str, int]] = []

    def _pods(self) -> int:
        assert self.cluster is not None
        return len(self.cluster.pods.get("old", []))

    async def heartbeat(self, hook: LifecycleHook, instance_id: str) -> None:
        assert (hook, instance_id) == (HOOK, "i-0123")
        self.calls.append(("heartbeat", self._pods()))

    async def complete(self, hook: LifecycleHook, instance_id: str) -> bool:
        self.calls.append(("complete", self._pods()))
        return True

    async def terminate(self, node_view):  # type: ignore[no-untyped-def]
        self.calls.append(("terminate", self._pods()))
        await super().terminate(node_view)


def interrupted(notice: Notice):  # type: ignore[no-untyped-def]
    marks = {
        "molt.dev/reason": notice.describe(),
        "molt.dev/selected-at": "2026-01-01T00:00:00Z",
        "molt.dev/interruption": notice.annotation(),
    }
    found = node("old", age_hours=5, state="selected", annotations=marks, conditions=READY)
    return dataclasses.replace(found, provider_id="aws:///zone-a/i-0123")


def fleet(notice: Notice) -> tuple[FakeCluster, FakeHookedProvider, FakeClock, PipelineReconciler]:
    cluster = FakeCluster(nodes=[interrupted(notice)], groups=[ONE], policies=[policy("rotate")])
    for name in ("web-1", "web-2"):
        cluster.add_pod(pod(name, node="old"))
    provider = FakeHookedProvider(cluster)
    clock = FakeClock(NOW)
    pipeline = PipelineReconciler(
        cluster,
        cluster,
        clock,
        Metrics(),
        providers={"kwok": provider},
        drain_settle=0.0,
        heartbeat_seconds=5.0,
    )
    return cluster, provider, clock, pipeline


async def test_a_spot_interrupted_node_drains_at_once_without_a_replacement() -> None:
    cluster, provider, _, pipeline = fleet(Notice("spot-interruption", "i-0123", NOW, "e-1"))
    await pipeline.reconcile("old")
    # The group of one could not spare it; the instance goes in two minutes anyway.
    assert cluster.evictions, "drained at once"
    assert (
        cluster.node_views["old"]
        .annotations["molt.dev/replacement"]
        .startswith("none: spot interruption")
    )
    assert not [c for c in provider.calls if c[0] in ("heartbeat", "complete")]


async def test_a_lifecycle_hook_is_heartbeaten_while_draining_and_completed_once_empty() -> None:
    cluster, provider, clock, pipeline = fleet(
        Notice("asg-termination", "i-0123", NOW, "e-2", HOOK)
    )
    cluster.eviction_answers["default/web-1"] = [EvictionOutcome.PDB_BLOCKED] * 3
    cluster.pdbs = [PdbView("default", "web-pdb", LabelSelector(), disruptions_allowed=0)]
    for _ in range(60):
        if cluster.node("old") is None:
            break
        after = await pipeline.reconcile("old")
        clock.advance(min(after or 1.0, 6.0))
    assert cluster.node("old") is None, "the node went"
    kinds = [kind for kind, _ in provider.calls]
    assert kinds.count("complete") == 1
    assert kinds.index("complete") < kinds.index("terminate")
    heartbeats = [pods for kind, pods in provider.calls if kind == "heartbeat"]
    assert len(heartbeats) >= 2, provider.calls
    assert any(pods > 0 for pods in heartbeats), "a heartbeat while pods were still there"
    assert dict(provider.calls)["complete"] == 0, "completed only once the node was empty"
    assert "LifecycleHookCompleted" in cluster.event_reasons("old")
    assert timedelta(seconds=0) <= clock.now() - NOW
