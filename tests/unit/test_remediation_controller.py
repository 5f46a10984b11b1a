"""The remediation reconciler and selection's breaker report over the fake ports: a sick
node is recorded, cordoned, rebooted and kept when it recovers, or handed to the pipeline
when the reboot did not help; a provider that cannot reboot is skipped; a refused reboot
moves on at once; a malformed record is reported once; the breaker's condition, Events
and metric follow the zones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import generate_latest

from molt.api.labels import REMEDIATION_ANNOTATION, SELECTED, STATE_LABEL
from molt.cloud.provider import ProviderError
from molt.controllers.remediation.reconciler import RemediationReconciler
from molt.controllers.termination.selection import SelectionReconciler
from molt.observe.metrics import Metrics
from molt.policy.remediation import read_record
from molt.policy.snapshot import NodeCondition, NodeView
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider
from tests.support.fleet import NOW, node, policy

pytestmark = pytest.mark.unit


class FakeRebooter(FakeProvider):
    """A FAKE provider that can reboot: records the calls, or refuses with ``error``."""

    def __init__(self) -> None:
        super().__init__()
        self.reboots: list[str] = []
        self.error: ProviderError | None = None

    async def reboot(self, node: NodeView) -> None:
        if self.error is not None:
            raise self.error
        self.reboots.append(node.name)


def _heal(**remediation: object) -> object:
    return policy(
        "heal",
        rules={"conditions": [{"type": "Ready", "status": "Unknown", "for": "1m"}]},
        remediation={"steps": [{"reboot": {"timeout": "10m"}}, {"replace": {}}], **remediation},
    )


def _sick(name: str, zone: str = "zone-a") -> NodeView:
    return node(
        name, zone=zone, conditions=(NodeCondition("Ready", "Unknown", NOW - timedelta(minutes=5)),)
    )


def _well(name: str, zone: str = "zone-a") -> NodeView:
    return node(name, zone=zone, conditions=(NodeCondition("Ready", "True", NOW),))


def _setup(
    nodes: list[NodeView], provider: FakeProvider | None = None, **remediation: object
) -> tuple[FakeCluster, RemediationReconciler, FakeClock, FakeProvider]:
    cluster = FakeCluster(nodes=nodes, policies=[_heal(**remediation)])  # type: ignore[list-item]
    clock = FakeClock(NOW)
    chosen = provider if provider is not None else FakeRebooter()
    return cluster, RemediationReconciler(cluster, cluster, clock, {"kwok": chosen}), clock, chosen


async def test_a_sick_node_is_recorded_cordoned_and_rebooted_then_kept_when_it_recovers() -> None:
    cluster, reconciler, clock, provider = _setup(
        [_sick("n1"), *[_well(f"w{i}") for i in range(5)]]
    )
    after = await reconciler.reconcile()
    assert isinstance(provider, FakeRebooter)
    assert provider.reboots == ["n1"]
    marked = cluster.node_views["n1"]
    assert marked.unschedulable
    record = read_record(marked.annotations[REMEDIATION_ANNOTATION])
    assert record is not None
    assert (record.step, record.kind, record.cordoned) == (0, "reboot", True)
    assert cluster.event_reasons("n1") == ["Rebooting"]
    assert after is not None
    assert after <= 30.0

    # A second pass while it reboots does nothing more.
    await reconciler.reconcile()
    assert provider.reboots == ["n1"]

    # It comes back Ready: kept, uncordoned, record cleared.
    clock.advance(120)
    cluster.node_views["n1"] = marked.__class__(
        name="n1",
        created=marked.created,
        labels=marked.labels,
        annotations=marked.annotations,
        conditions=(NodeCondition("Ready", "True", clock.now()),),
        unschedulable=True,
    )
    await reconciler.reconcile()
    kept = cluster.node_views["n1"]
    assert REMEDIATION_ANNOTATION not in kept.annotations
    assert not kept.unschedulable
    assert cluster.event_reasons("n1") == ["Rebooting", "Remediated"]


async def test_a_reboot_that_did_not_help_moves_on_to_replace_which_selection_admits() -> None:
    nodes = [_sick("n1"), *[_well(f"w{i}") for i in range(5)]]
    cluster, reconciler, clock, _ = _setup(nodes)
    await reconciler.reconcile()
    clock.advance(11 * 60)
    await reconciler.reconcile()
    record = read_record(cluster.node_views["n1"].annotations[REMEDIATION_ANNOTATION])
    assert record is not None
    assert record.kind == "replace"
    assert cluster.event_reasons("n1") == [
        "Rebooting",
        "RemediationStepFailed",
        "RemediationReplacing",
    ]

    selection = SelectionReconciler(cluster, cluster, clock, Metrics())
    await selection.reconcile()
    chosen = cluster.node_views["n1"]
    assert chosen.labels[STATE_LABEL] == SELECTED
    assert "did not help within 10m" in chosen.annotations["molt.dev/reason"]


async def test_a_provider_that_cannot_reboot_is_skipped_and_a_refused_reboot_moves_on() -> None:
    cluster, reconciler, _, _ = _setup(
        [_sick("n1"), *[_well(f"w{i}") for i in range(5)]], FakeProvider()
    )
    await reconciler.reconcile()
    assert cluster.event_reasons("n1") == ["RemediationStepSkipped", "RemediationReplacing"]
    assert not cluster.node_views["n1"].unschedulable  # no reboot, no cordon

    refusing = FakeRebooter()
    refusing.error = ProviderError("IncorrectState: instance is stopping")
    cluster, reconciler, _, _ = _setup([_sick("n1"), *[_well(f"w{i}") for i in range(5)]], refusing)
    await reconciler.reconcile()
    assert cluster.event_reasons("n1") == [
        "Rebooting",
        "RebootFailed",
        "RemediationStepFailed",
        "RemediationReplacing",
    ]
    record = read_record(cluster.node_views["n1"].annotations[REMEDIATION_ANNOTATION])
    assert record is not None
    assert record.kind == "replace"
    assert "refused" in record.done[0]


async def test_a_malformed_record_is_reported_once_and_the_chain_starts_afresh() -> None:
    sick = _sick("n1").patched(annotations={REMEDIATION_ANNOTATION: "{not json"})
    cluster, reconciler, _, provider = _setup([sick, *[_well(f"w{i}") for i in range(5)]])
    await reconciler.reconcile()
    assert cluster.event_reasons("n1")[:2] == ["InvalidMetadata", "Rebooting"]
    assert isinstance(provider, FakeRebooter)
    assert provider.reboots == ["n1"]


async def test_the_breaker_pauses_zone_b_only_and_selection_reports_it_once() -> None:
    nodes = [
        _sick("a0", "zone-a"),
        *[_well(f"a{i}", "zone-a") for i in range(1, 4)],
        *[_sick(f"b{i}", "zone-b") for i in range(3)],
        _well("b3", "zone-b"),
        *[_well(f"c{i}", "zone-c") for i in range(4)],
    ]
    cluster, reconciler, clock, provider = _setup(nodes)
    await reconciler.reconcile()
    assert isinstance(provider, FakeRebooter)
    assert provider.reboots == ["a0"]  # zone-b's three are held

    metrics = Metrics()
    selection = SelectionReconciler(cluster, cluster, clock, metrics)
    await selection.reconcile()
    await selection.reconcile()
    paused = [e for e in cluster.events if e.reason == "RemediationPaused"]
    assert len(paused) == 1
    assert "zone zone-b" in paused[0].message
    assert "3 of 4" in paused[0].message
    status = cluster.termination_policies["heal"].status
    assert status is not None
    condition = next(c for c in status.conditions if c.type == "RemediationPaused")
    assert (condition.status, condition.reason) == ("True", "ZoneUnhealthy")
    assert "zone zone-b" in condition.message
    sample = metrics.registry.get_sample_value
    assert (
        sample("molt_remediation_paused", {"policy": "heal", "group": "workers", "zone": "zone-b"})
        == 1.0
    )
    assert (
        sample("molt_remediation_paused", {"policy": "heal", "group": "workers", "zone": "zone-a"})
        == 0.0
    )

    # zone-b comes back: the pause lifts with one Event, and its nodes are looked at again.
    for name in ("b0", "b1"):
        cluster.node_views[name] = _well(name, "zone-b")
    await selection.reconcile()
    resumed = [e for e in cluster.events if e.reason == "RemediationResumed"]
    assert len(resumed) == 1
    status = cluster.termination_policies["heal"].status
    assert status is not None
    condition = next(c for c in status.conditions if c.type == "RemediationPaused")
    assert condition.status == "False"
    assert (
        sample("molt_remediation_paused", {"policy": "heal", "group": "workers", "zone": "zone-b"})
        == 0.0
    )
    await reconciler.reconcile()
    assert provider.reboots == ["a0", "b2"]


async def test_a_policy_without_remediation_has_no_breaker_condition_or_metric() -> None:
    cluster = FakeCluster(nodes=[_sick("n1")], policies=[policy("plain")])
    metrics = Metrics()
    await SelectionReconciler(cluster, cluster, FakeClock(NOW), metrics).reconcile()
    status = cluster.termination_policies["plain"].status
    assert status is not None
    assert all(c.type != "RemediationPaused" for c in status.conditions)
    exported = generate_latest(metrics.registry).decode()
    assert "molt_remediation_paused{" not in exported
    reconciler = RemediationReconciler(cluster, cluster, FakeClock(NOW), {})
    assert not reconciler.wanted()
    assert await reconciler.reconcile() is None
