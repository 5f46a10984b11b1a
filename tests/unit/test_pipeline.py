"""The per-node pipeline and selection, driven reconcile by reconcile over in-memory fakes.

Each test calls ``reconcile`` as the work queue would, moving the fake clock and the fake
cluster between calls; a "restart" is a new reconciler over the same cluster and cloud.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from molt.api import InstanceGroup, TerminationPolicy
from molt.api.types import LabelSelector
from molt.controllers.termination.pipeline import REPLACEMENT_POLL, PipelineReconciler
from molt.controllers.termination.selection import SelectionReconciler
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.pdbs import PdbView
from molt.policy.snapshot import NodeCondition, NodeView, PodView
from molt.ports import EvictionOutcome
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider, RecordedEvent, pod
from tests.support.fleet import NOW, node, policy

POLICY = "molt.dev/policy"
REASON = "molt.dev/reason"
SELECTED_AT = "molt.dev/selected-at"
DEADLINE = "molt.dev/deadline"
REPLACEMENT = "molt.dev/replacement"
BLOCKED = "molt.dev/blocked"
HOLD = {"molt.dev/do-not-disrupt": "true"}

NEW = "workers-new-1"
"""The name FakeProvider gives the first instance it launches into group workers."""
READY = (NodeCondition("Ready", "True", NOW),)


def _at(moment: datetime) -> str:
    return format_rfc3339(moment)


def selected_node(
    name: str = "old",
    *,
    deadline: datetime = NOW + timedelta(hours=1),
    selected_at: datetime = NOW,
    state: str = "selected",
    replacement: str | None = None,
    conditions: tuple[NodeCondition, ...] = (),
) -> NodeView:
    """A 60-hour-old workers node as selection leaves it (policy rotate)."""
    marks = {
        POLICY: "rotate",
        REASON: "max-age: 60h > 48h (past its deadline)",
        SELECTED_AT: _at(selected_at),
        DEADLINE: _at(deadline),
    }
    if replacement is not None:
        marks[REPLACEMENT] = replacement
    return node(name, age_hours=60, state=state, annotations=marks, conditions=conditions)


def replacement_node(name: str = NEW, *, ready: bool = True) -> NodeView:
    return node(name, age_hours=0, conditions=READY if ready else ())


def _pipeline(
    cluster: FakeCluster, provider: FakeProvider, clock: FakeClock, *, settle: float = 0.0
) -> PipelineReconciler:
    """The pipeline over the fakes; no settle period unless a test is about it."""
    return PipelineReconciler(
        cluster, cluster, clock, Metrics(), providers={"kwok": provider}, drain_settle=settle
    )


@dataclass
class World:
    """One fake cluster, one fake cloud, one fake clock, and the reconcilers over them."""

    cluster: FakeCluster
    provider: FakeProvider
    clock: FakeClock
    pipeline: PipelineReconciler

    def restart(self) -> PipelineReconciler:
        """A new controller process: fresh in-memory state, same cluster and cloud."""
        self.pipeline = _pipeline(self.cluster, self.provider, self.clock)
        return self.pipeline

    def selection(self) -> SelectionReconciler:
        return SelectionReconciler(self.cluster, self.cluster, self.clock, Metrics())

    async def reconcile(self, name: str = "old") -> float | None:
        return await self.pipeline.reconcile(name)

    def node(self, name: str = "old") -> NodeView:
        found = self.cluster.node(name)
        assert found is not None, f"node {name} is gone"
        return found


def world(
    *nodes: NodeView,
    pods: tuple[PodView, ...] = (),
    group: InstanceGroup | None = None,
    rotate: TerminationPolicy | None = None,
) -> World:
    cluster = FakeCluster(
        nodes=nodes,
        pods=pods,
        groups=[group or InstanceGroup.model_validate(instance_group("workers"))],
        policies=[rotate or policy("rotate")],
    )
    provider = FakeProvider(cluster)
    clock = FakeClock(NOW)
    return World(cluster, provider, clock, _pipeline(cluster, provider, clock))


def draining_world(
    *pods: PodView,
    deadline: datetime = NOW + timedelta(hours=1),
    rotate: TerminationPolicy | None = None,
) -> World:
    """A selected node whose Ready replacement is already recorded: reconcile goes to drain."""
    return world(
        selected_node(deadline=deadline, replacement=NEW),
        replacement_node(),
        pods=pods,
        rotate=rotate,
    )


# Cordon, and the group's capacity gate.

ONE = InstanceGroup.model_validate(instance_group("workers", minSize=1, maxSize=3, replicas=1))


async def test_a_selected_node_stays_schedulable_while_its_group_cannot_spare_it() -> None:
    fleet = world(selected_node(conditions=READY), pods=(pod("web"),), group=ONE)

    after = await fleet.reconcile()

    # The replacement comes first: until it is Ready the node keeps taking pods.
    assert fleet.node().unschedulable is False
    assert REPLACEMENT not in fleet.node().annotations
    assert (fleet.node().state, fleet.cluster.evictions) == ("selected", [])
    assert fleet.cluster.events == []
    assert after == REPLACEMENT_POLL  # a backstop: a group node turning Ready wakes it


async def test_the_drain_starts_once_a_ready_replacement_keeps_the_group_at_size() -> None:
    fleet = world(selected_node(conditions=READY), pods=(pod("web"),), group=ONE)
    await fleet.reconcile()

    fleet.cluster.add_node(replacement_node(ready=False))
    await fleet.reconcile()
    assert (fleet.node().state, fleet.cluster.evictions) == ("selected", [])

    fleet.cluster.add_node(replacement_node(ready=True))
    await fleet.reconcile()
    assert fleet.node().annotations[REPLACEMENT] == "group capacity: 1 Ready without it"
    assert (fleet.node().state, fleet.cluster.evictions) == ("draining", ["default/web"])
    assert "CapacityReady" in fleet.cluster.event_reasons()


async def test_one_spare_node_lets_only_one_of_two_selected_nodes_drain() -> None:
    two = InstanceGroup.model_validate(instance_group("workers", minSize=1, maxSize=4, replicas=2))
    fleet = world(
        selected_node("old", conditions=READY),
        selected_node("old-2", conditions=READY),
        replacement_node(),
        pods=(pod("web"), pod("api", node="old-2")),
        group=two,
    )

    await fleet.reconcile("old")
    await fleet.reconcile("old-2")

    passed = [n for n in ("old", "old-2") if REPLACEMENT in fleet.node(n).annotations]
    assert passed == ["old"]


async def test_a_restarted_pipeline_does_not_hold_a_node_that_already_passed_the_gate() -> None:
    fleet = world(
        selected_node(replacement="group capacity: 1 Ready without it"),
        pods=(pod("web"),),
        group=ONE,
    )

    fleet.restart()
    await fleet.reconcile()

    assert (fleet.node().state, fleet.cluster.evictions) == ("draining", ["default/web"])


async def test_past_its_deadline_a_policy_selected_node_drains_without_a_replacement() -> None:
    fleet = world(
        selected_node(deadline=NOW + timedelta(minutes=5), conditions=READY),
        pods=(pod("web"),),
        group=ONE,
    )
    await fleet.reconcile()

    fleet.clock.advance(5 * 60 + 1)
    await fleet.reconcile()
    assert (fleet.node().state, fleet.cluster.evictions) == ("selected", [])  # 10m not up

    fleet.clock.advance(4 * 60 + 44)
    assert await fleet.reconcile() == 15  # woken when its patience runs out, not later

    fleet.clock.advance(15)
    await fleet.reconcile()

    message = "group workers has had no spare Ready node for 10m and the node's deadline has passed"
    assert fleet.node().annotations[REPLACEMENT] == f"none: {message}"
    assert ("old", "ReplacementNotReady", f"draining without a replacement: {message}", True) in (
        fleet.cluster.events
    )
    assert fleet.cluster.evictions == ["default/web"]


async def test_a_node_of_a_group_whose_provider_is_not_enabled_gets_no_replacement() -> None:
    aws = InstanceGroup.model_validate(
        instance_group(
            "workers",
            provider="aws",
            template={"instanceTypes": ["m5.large"], "image": "ami-1", "aws": {}},
        )
    )
    fleet = world(selected_node(), pods=(pod("web"),), group=aws)

    await fleet.reconcile()

    why = "provider aws is not enabled in this controller"
    assert fleet.node().annotations[REPLACEMENT] == f"none: {why}"
    assert ("old", "NoReplacement", f"no replacement: {why}", False) in fleet.cluster.events
    assert fleet.node().state == "draining"


# Drain.


def _refusing_pdb(allowed: int = 0) -> PdbView:
    """The PDB the fake's 429 names (``web-pdb``), as its status reads."""
    return PdbView("default", "web-pdb", LabelSelector(), disruptions_allowed=allowed)


async def test_a_pdb_refusal_retries_the_pod_after_5s_while_the_pdb_allows_nothing() -> None:
    fleet = draining_world(pod("web"))
    fleet.cluster.pdbs = [_refusing_pdb()]
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED]

    after = await fleet.reconcile()
    assert (fleet.cluster.evictions, after) == (["default/web"], 1.0)  # its status, in 1 s

    for _ in range(4):
        fleet.clock.advance(1.0)
        await fleet.reconcile()  # the status still allows nothing: no eviction
    fleet.clock.advance(0.9)
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web"]

    fleet.clock.advance(0.1)
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web", "default/web"]
    assert fleet.cluster.pod_keys("old") == []


async def test_a_pdb_that_allows_again_is_retried_at_the_next_status_check() -> None:
    fleet = draining_world(pod("web"))
    fleet.cluster.pdbs = [_refusing_pdb()]
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED]
    await fleet.reconcile()
    fleet.clock.advance(1.0)
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web"]

    fleet.cluster.pdbs = [_refusing_pdb(allowed=1)]  # a replacement turned Ready
    fleet.clock.advance(1.0)
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web", "default/web"], "waited out 5 s"
    assert fleet.cluster.pod_keys("old") == []


async def test_a_pdb_that_keeps_refusing_is_retried_every_5s_then_every_15s() -> None:
    fleet = draining_world(pod("web"))
    fleet.cluster.pdbs = [_refusing_pdb()]
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED] * 60
    await fleet.reconcile()
    tried_at: list[float] = [0.0]
    elapsed = 0.0
    while elapsed < 300:
        after = await fleet.reconcile()
        assert after is not None
        before = len(fleet.cluster.evictions)
        fleet.clock.advance(after)
        elapsed += after
        await fleet.reconcile()
        if len(fleet.cluster.evictions) > before:
            tried_at.append(elapsed)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(tried_at)]
    # No doubling while a replacement may turn Ready any second (or the API server's
    # two-minute hold on a pod counted as disrupted runs out); slower after two minutes.
    assert set(gaps[:20]) == {5.0}, gaps
    assert gaps[-1] == 15.0, gaps


async def test_one_pod_per_refusing_pdb_is_tried_and_the_rest_follow_once_it_goes() -> None:
    pods = [pod(f"web-{i}") for i in range(4)]
    fleet = draining_world(*pods)
    for one in pods:  # web-0 is refused thrice, the others once (the PDB decides, not they)
        refusals = 3 if one.name == "web-0" else 1
        fleet.cluster.eviction_answers[one.key] = [EvictionOutcome.PDB_BLOCKED] * refusals
    await fleet.reconcile()  # each pod is refused once: its PDB is learnt
    assert len(fleet.cluster.evictions) == 4

    for _ in range(2):  # the PDB still refuses: one request per retry, not four
        fleet.clock.advance(5)
        await fleet.reconcile()
    assert len(fleet.cluster.evictions) == 6
    assert fleet.cluster.evictions[4:] == ["default/web-0", "default/web-0"]

    fleet.clock.advance(5)
    await fleet.reconcile()  # web-0's third try is let through, so the others go at once
    assert fleet.cluster.pod_keys("old") == []
    assert fleet.cluster.evictions[6:] == [p.key for p in pods]


async def test_a_pod_under_two_pdbs_is_reported_on_the_node_and_not_forced() -> None:
    fleet = draining_world(pod("web"))
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.MULTIPLE_PDBS] * 5

    await fleet.reconcile()

    blocked = fleet.node().annotations[BLOCKED]
    assert "more than one PodDisruptionBudget" in blocked
    assert blocked.endswith(": default/web")
    assert fleet.cluster.events[-1] == ("old", "DrainBlocked", blocked, True)
    assert fleet.provider.terminations == []
    assert fleet.cluster.deleted_pods == []


async def test_a_pod_under_two_pdbs_keeps_the_node_until_the_pdbs_are_fixed() -> None:
    fleet = draining_world(pod("web"))
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.MULTIPLE_PDBS] * 3

    for _ in range(3):
        await fleet.reconcile()
        fleet.clock.advance(60)

    assert fleet.provider.terminations == []
    assert fleet.cluster.event_reasons().count("DrainBlocked") == 1
    await fleet.reconcile()  # the PDBs were fixed: the fourth eviction succeeds
    await fleet.reconcile()  # the pod's deletion arrives: the drain is done
    assert fleet.provider.terminations == ["old"]


async def test_a_do_not_disrupt_pod_holds_the_node_before_its_deadline() -> None:
    deadline = NOW + timedelta(minutes=30)
    fleet = draining_world(pod("precious", annotations=HOLD), deadline=deadline)

    await fleet.reconcile()
    fleet.clock.advance(30 * 60 - 1)
    await fleet.reconcile()

    assert fleet.cluster.evictions == []
    assert fleet.node().annotations[DEADLINE] == "2026-11-23T12:30:00Z"
    assert fleet.node().annotations[BLOCKED] == (
        "do-not-disrupt pods hold the node until 2026-11-23T12:30:00Z: default/precious"
    )


async def test_a_do_not_disrupt_pod_is_evicted_once_its_deadline_passes() -> None:
    fleet = draining_world(pod("precious", annotations=HOLD), deadline=NOW + timedelta(minutes=30))
    await fleet.reconcile()

    fleet.clock.advance(30 * 60)
    await fleet.reconcile()

    assert fleet.cluster.evictions == ["default/precious"]
    assert BLOCKED not in fleet.node().annotations


async def test_past_the_deadline_a_pdb_blocked_pod_is_deleted_when_the_policy_says_so() -> None:
    rotate = policy("rotate", drain={"timeout": "1h", "deletePodsAfterDeadline": True})
    fleet = draining_world(pod("web"), deadline=NOW + timedelta(minutes=30), rotate=rotate)
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED] * 100

    await fleet.reconcile()
    fleet.clock.advance(30 * 60)
    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == ["default/web"]
    assert "PodsDeleted" in fleet.cluster.event_reasons("old")
    assert fleet.cluster.events[-1].warning is True


async def test_before_the_deadline_a_pdb_blocked_pod_is_not_deleted() -> None:
    rotate = policy("rotate", drain={"timeout": "1h", "deletePodsAfterDeadline": True})
    fleet = draining_world(pod("web"), deadline=NOW + timedelta(minutes=30), rotate=rotate)
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED] * 100

    for _ in range(30):
        await fleet.reconcile()
        fleet.clock.advance(59.9)

    assert fleet.clock.now() < NOW + timedelta(minutes=30)
    assert len(fleet.cluster.evictions) > 1
    assert fleet.cluster.deleted_pods == []
    assert fleet.cluster.pod_keys("old") == ["default/web"]


async def test_without_delete_pods_after_deadline_a_pdb_blocked_pod_is_never_deleted() -> None:
    fleet = draining_world(pod("web"), deadline=NOW + timedelta(minutes=30))
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED] * 100

    await fleet.reconcile()
    fleet.clock.advance(2 * 3600)
    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == []
    assert fleet.provider.terminations == []


async def test_past_the_deadline_only_pods_the_eviction_api_refused_are_deleted() -> None:
    rotate = policy("rotate", drain={"timeout": "1h", "deletePodsAfterDeadline": True})
    fleet = draining_world(
        pod("stubborn"), pod("willing"), deadline=NOW - timedelta(minutes=1), rotate=rotate
    )
    fleet.cluster.eviction_answers["default/stubborn"] = [EvictionOutcome.PDB_BLOCKED]

    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == ["default/stubborn"]
    assert fleet.cluster.events[-1].message.startswith("deleted 1 pod(s)")


async def test_daemonset_pods_do_not_keep_a_node_from_terminating() -> None:
    fleet = draining_world(pod("agent", owner_kinds=("DaemonSet",)))

    await fleet.reconcile()

    assert fleet.cluster.evictions == []
    assert fleet.provider.terminations == ["old"]


# Termination.


async def test_a_drained_node_is_terminated_once_deleted_and_counted() -> None:
    fleet = world(
        node("old", age_hours=60, conditions=READY), pods=(pod("web"), pod("api")), group=ONE
    )
    await fleet.selection().reconcile()

    for _ in range(3):
        await fleet.reconcile()
    fleet.cluster.add_node(replacement_node())
    for _ in range(3):
        await fleet.reconcile()

    assert fleet.provider.terminations == ["old"]
    assert fleet.cluster.node("old") is None
    assert fleet.cluster.deleted_nodes == ["old"]
    assert fleet.cluster.evictions == ["default/api", "default/web"]
    assert fleet.cluster.event_reasons("old") == [
        "Selected",
        "CapacityReady",
        "Cordoned",
        "Draining",
        "Drained",
        "InstanceTerminated",
        "NodeDeleted",
    ]
    assert ("rotate", {"completed": 1}) in fleet.cluster.policy_status_patches
    rotate = fleet.cluster.policy("rotate")
    assert rotate is not None
    assert rotate.status is not None
    assert rotate.status.completed == 1


async def test_a_node_no_provider_owns_stays_drained_and_cordoned_and_is_reported() -> None:
    orphan = dataclasses.replace(
        selected_node(state="terminating", replacement="none: no group"),
        labels={"molt.dev/state": "terminating"},
        unschedulable=True,
    )
    fleet = world(orphan)

    await fleet.reconcile()

    assert fleet.provider.terminations == []
    assert fleet.cluster.deleted_nodes == []
    kept = fleet.node()
    assert kept.unschedulable
    assert "no provider can terminate" in kept.annotations[BLOCKED]
    assert fleet.cluster.event_reasons("old") == ["DrainBlocked"]


async def test_completed_counts_every_node_even_when_the_policy_cache_lags() -> None:
    fleet = world(
        selected_node("old", state="terminating", replacement="none: test"),
        selected_node("older", state="terminating", replacement="none: test"),
    )
    stale = fleet.cluster.policy("rotate")
    fleet.cluster.policy = lambda name: stale  # type: ignore[method-assign]

    await fleet.reconcile("old")
    await fleet.reconcile("older")

    assert fleet.cluster.policy_status_patches[-2:] == [
        ("rotate", {"completed": 1}),
        ("rotate", {"completed": 2}),
    ]


async def test_restart_finishes_a_terminating_node_without_launching_or_evicting() -> None:
    terminating = dataclasses.replace(
        selected_node(state="terminating", replacement=NEW), unschedulable=True
    )
    fleet = world(terminating, replacement_node(), pods=(pod("agent", owner_kinds=("DaemonSet",)),))

    fleet.restart()
    after = await fleet.reconcile()

    assert after is None
    assert fleet.provider.scales == []
    assert fleet.cluster.evictions == []
    assert fleet.provider.terminations == ["old"]
    assert fleet.cluster.event_reasons() == ["InstanceTerminated", "NodeDeleted"]


async def test_a_pod_found_on_a_terminating_node_sends_it_back_to_draining() -> None:
    terminating = dataclasses.replace(
        selected_node(state="terminating", replacement=NEW), unschedulable=True
    )
    fleet = world(terminating, replacement_node(), pods=(pod("landed-back"),))

    after = await fleet.reconcile()

    assert fleet.provider.terminations == []
    assert fleet.node().state == "draining"
    assert fleet.cluster.event_reasons("old") == ["PodsArrived"]
    assert after == 0.0
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/landed-back"]


async def test_a_node_that_left_the_pipeline_is_let_go() -> None:
    fleet = world(node("old", age_hours=60))

    after = await fleet.reconcile()

    assert after is None
    assert fleet.cluster.released == ["old"]
    assert fleet.cluster.events == []
    assert fleet.cluster.node_patches == []


# Selection.


async def test_selection_marks_an_admitted_node_and_records_an_event() -> None:
    fleet = world(node("old", age_hours=60), node("young", age_hours=2))
    selection = fleet.selection()

    after = await selection.reconcile()

    old = fleet.node("old")
    assert old.state == "selected"
    assert {k: old.annotations[k] for k in (POLICY, REASON, SELECTED_AT, DEADLINE)} == {
        POLICY: "rotate",
        REASON: "max-age: 60h > 48h (past its deadline)",
        SELECTED_AT: "2026-11-23T12:00:00Z",
        DEADLINE: "2026-11-23T00:00:00Z",  # launched 60h ago + 48h
    }
    assert fleet.cluster.events == [
        RecordedEvent(
            "old",
            "Selected",
            "selected by policy rotate: max-age: 60h > 48h (past its deadline)",
            warning=False,
        )
    ]
    assert fleet.node("young").state is None
    assert after == 30.0


async def test_with_max_in_flight_one_a_second_selection_admits_nothing_more() -> None:
    rotate = policy("rotate", budgets=[{"maxInFlight": 1}])
    fleet = world(node("a", age_hours=60), node("b", age_hours=55), rotate=rotate)
    selection = fleet.selection()

    await selection.reconcile()
    fleet.clock.advance(30)
    await selection.reconcile()

    assert [n.name for n in fleet.cluster.nodes() if n.in_pipeline] == ["a"]
    assert fleet.cluster.event_reasons() == ["Selected"]
    assert selection.last_plan is not None
    [waiting] = [d for d in selection.last_plan.decisions if d.action == "wait"]
    assert waiting.node == "b"
    assert waiting.blocked_by is not None
    assert waiting.blocked_by.startswith("budget full: 1/1")


async def test_a_malformed_launch_time_gets_one_invalid_metadata_warning() -> None:
    garbled = node("garbled", age_hours=60, annotations={"molt.dev/launched-at": "yesterday"})
    fleet = world(garbled)
    selection = fleet.selection()

    await selection.reconcile()
    fleet.clock.advance(30)
    await selection.reconcile()

    warnings = [e for e in fleet.cluster.events if e.reason == "InvalidMetadata"]
    assert len(warnings) == 1
    assert warnings[0].node == "garbled"
    assert warnings[0].warning is True
    assert "'yesterday' is not an RFC 3339 time" in warnings[0].message
    assert fleet.node("garbled").state is None


def _charged(name: str, admitted: datetime) -> PdbView:
    """``web-pdb`` (the PDB the fake's 429 names) with ``name`` in its disruptedPods."""
    return PdbView("default", "web-pdb", LabelSelector(), disrupted_pods={name: admitted})


def _both_refused(charged: str) -> World:
    """Two hour-old pods, "web" and "api", both refused by ``web-pdb``, which has
    ``charged`` in its disruptedPods since 30 s ago."""
    created = NOW - timedelta(hours=1)
    fleet = draining_world(pod("web", created=created), pod("api", created=created))
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED]
    fleet.cluster.eviction_answers["default/api"] = [EvictionOutcome.PDB_BLOCKED]
    fleet.cluster.pdbs = [_charged(charged, NOW - timedelta(seconds=30))]
    return fleet


async def test_a_pod_whose_eviction_was_admitted_but_never_carried_out_is_deleted() -> None:
    # A controller died mid-eviction: the API server charged the PDB for the pod (it is in
    # status.disruptedPods) but never deleted it, and refuses every eviction under the PDB
    # until that entry expires two minutes later.
    fleet = _both_refused(charged="web")

    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == ["default/web"], "the admitted eviction is finished"
    assert fleet.cluster.pod_keys("old") == ["default/api"], "a pod the PDB did not pay for"


async def test_an_admission_older_than_the_pod_is_no_permission_to_delete_it() -> None:
    # A StatefulSet pod recreated under the same name after its predecessor's eviction:
    # the entry (keyed by name) is the old pod's, and this pod was never paid for.
    fleet = draining_world(pod("web", created=NOW - timedelta(seconds=10)))
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED]
    fleet.cluster.pdbs = [_charged("web", NOW - timedelta(seconds=40))]

    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == []
    assert fleet.cluster.pod_keys("old") == ["default/web"]


async def test_an_admission_in_the_second_a_generated_name_was_created_is_its_own() -> None:
    # kwok (or a fast node) has a ReplicaSet pod Ready and evictable within the second it
    # was created, so the admission can carry the same whole-second time as the pod. No
    # other pod ever had a generated name: the entry can only be this pod's.
    created = NOW.replace(microsecond=0) - timedelta(seconds=20)
    fleet = draining_world(pod("web-5f7c9-x2b4q", created=created, name_generated=True))
    fleet.cluster.eviction_answers["default/web-5f7c9-x2b4q"] = [EvictionOutcome.PDB_BLOCKED]
    fleet.cluster.pdbs = [_charged("web-5f7c9-x2b4q", created)]

    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == ["default/web-5f7c9-x2b4q"]


async def test_an_admission_in_the_second_a_reused_name_was_created_is_no_permission() -> None:
    # A StatefulSet pod evicted and recreated within one second: an entry bearing the new
    # pod's creation second may be its predecessor's.
    created = NOW.replace(microsecond=0) - timedelta(seconds=20)
    fleet = draining_world(pod("db-0", created=created, owner_kinds=("StatefulSet",)))
    fleet.cluster.eviction_answers["default/db-0"] = [EvictionOutcome.PDB_BLOCKED]
    fleet.cluster.pdbs = [_charged("db-0", created)]

    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == []
    assert fleet.cluster.pod_keys("old") == ["default/db-0"]


async def test_an_admission_past_its_90s_is_no_permission_to_delete_the_pod() -> None:
    # The disruption controller forgets an admission after two minutes and counts the pod
    # healthy again; with the controller manager down nobody forgets it at all. Either way
    # an old entry is no payment for this disruption.
    fleet = draining_world(pod("web", created=NOW - timedelta(hours=1)))
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED]
    fleet.cluster.pdbs = [_charged("web", NOW - timedelta(seconds=90))]

    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == []
    assert fleet.cluster.pod_keys("old") == ["default/web"]


async def test_a_pdb_status_behind_its_spec_opens_no_gate_however_much_it_allows() -> None:
    # observedGeneration behind generation: the API server refuses every eviction under it
    # ("still being processed"), so its disruptionsAllowed is no news to act on.
    fleet = draining_world(pod("web"))
    fleet.cluster.pdbs = [_refusing_pdb()]
    fleet.cluster.eviction_answers["default/web"] = [EvictionOutcome.PDB_BLOCKED]
    await fleet.reconcile()
    stale = dataclasses.replace(_refusing_pdb(allowed=1), stale=True)
    fleet.cluster.pdbs = [stale]
    for _ in range(3):
        fleet.clock.advance(1.0)
        await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web"], "tried before its 5 s"

    fleet.cluster.pdbs = [_refusing_pdb(allowed=1)]  # the controller caught up
    fleet.clock.advance(1.0)
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web", "default/web"], "waited out 5 s"


async def test_the_charged_pod_is_found_when_another_pod_of_its_pdb_is_the_one_refused() -> None:
    # The drain tries one pod of a refusing PDB at a time, always the first: if the charge
    # is on another pod, only looking at every pod of the node ever reaches it.
    fleet = _both_refused(charged="api")

    await fleet.reconcile()

    assert fleet.cluster.deleted_pods == ["default/api"], "the admitted eviction is finished"
    assert fleet.cluster.pod_keys("old") == ["default/web"]
