"""Load-balancer deregistration in the pipeline, over the fake cloud with load balancers.

The cordon labels the node ``node.kubernetes.io/exclude-from-external-load-balancers``
for every provider; on a provider with the ``LoadBalancers`` capability the instance is
deregistered from its template's targets once, and no pod is evicted until the targets
let it go or the longest deregistration delay has passed. A restart repeats nothing and
skips no wait; a failed deregistration holds the node, reported and retried.
"""

from __future__ import annotations

from datetime import timedelta

from molt.api import InstanceGroup
from molt.cloud.provider import ProviderError
from molt.controllers.termination.pipeline import LB_POLL, PipelineReconciler
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.plan import compute_plan
from molt.policy.snapshot import NodeView, Snapshot
from molt.policy.why import Explanation, WhyInputs, explain
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeBalancedProvider, FakeClock, FakeCluster, pod
from tests.support.fleet import NOW, policy
from tests.unit.test_pipeline import NEW, draining_world, replacement_node, selected_node

EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"
DEREGISTERED_AT = "molt.dev/deregistered-at"
WAIT_UNTIL = "molt.dev/deregistration-wait-until"
BLOCKED = "molt.dev/blocked"
WEB = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef"
API = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/fedcba9876543210"


def aws_group(*target_groups: str, previous: tuple[str, ...] | None = None) -> InstanceGroup:
    template = {
        "instanceTypes": ["m5.large"],
        "image": "ami-1",
        "aws": {"subnets": {"zone-a": "subnet-1"}, "targetGroups": list(target_groups)},
    }
    manifest = instance_group("workers", provider="aws", zones=["zone-a"], template=template)
    if previous is not None:
        old = {**template, "image": "ami-0", "aws": {**template["aws"], "targetGroups": previous}}
        manifest["status"] = {
            "currentRevision": "rev2",
            "revisions": [{"name": "rev1", "state": "Previous", "template": old}],
        }
    return InstanceGroup.model_validate(manifest)


class Fleet:
    """One node in the pipeline on the fake cloud with load balancers."""

    def __init__(
        self, group: InstanceGroup, *, deadline_in: timedelta = timedelta(hours=1)
    ) -> None:
        self.cluster = FakeCluster(
            nodes=[
                selected_node(deadline=NOW + deadline_in, replacement=NEW),
                replacement_node(),
            ],
            pods=[pod("web")],
            groups=[group],
            policies=[policy("rotate")],
        )
        self.cloud = FakeBalancedProvider(self.cluster)
        self.clock = FakeClock(NOW)
        self.pipeline = self.restart()

    def restart(self) -> PipelineReconciler:
        """A new controller process: nothing in memory, the same cluster and cloud."""
        self.pipeline = PipelineReconciler(
            self.cluster,
            self.cluster,
            self.clock,
            Metrics(),
            providers={"aws": self.cloud},
            drain_settle=0.0,
        )
        return self.pipeline

    async def reconcile(self) -> float | None:
        return await self.pipeline.reconcile("old")

    def annotations(self) -> dict[str, str]:
        found = self.cluster.node("old")
        assert found is not None
        return found.annotations


async def test_the_cordon_carries_the_exclusion_label_on_every_provider() -> None:
    fleet = draining_world(pod("web"))  # kwok: no load balancers to deregister from
    await fleet.reconcile()
    cordon = next(p for _, p in fleet.cluster.node_patches if p["unschedulable"])
    assert cordon["labels"] == {EXCLUDE: "true"}  # in the cordon patch itself
    assert fleet.cluster.evictions == ["default/web"]
    assert DEREGISTERED_AT not in fleet.node().annotations


async def test_no_pod_is_evicted_until_the_load_balancers_let_the_node_go() -> None:
    fleet = Fleet(aws_group(WEB, API))
    fleet.cloud.registered = {WEB: {"old", NEW}, API: {"old"}}
    fleet.cloud.delays = {WEB: 30.0, API: 120.0}
    after = await fleet.reconcile()
    node = fleet.cluster.node("old")
    assert node is not None
    assert node.unschedulable
    assert node.labels[EXCLUDE] == "true"
    assert sorted(fleet.cloud.deregistrations) == [(API, "old"), (WEB, "old")]
    assert fleet.cloud.registered[WEB] == {NEW}
    assert node.annotations[DEREGISTERED_AT] == format_rfc3339(NOW)
    assert node.annotations[WAIT_UNTIL] == format_rfc3339(NOW + timedelta(seconds=120))
    assert fleet.cluster.evictions == []
    assert after == LB_POLL
    for _ in range(3):
        fleet.clock.advance(LB_POLL)
        await fleet.reconcile()
    assert fleet.cluster.evictions == []  # still draining, the delay not over
    fleet.cloud.drained("old")
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web"]
    assert "Deregistered" in fleet.cluster.event_reasons("old")


async def test_the_wait_ends_with_the_longest_delay_even_while_still_listed() -> None:
    fleet = Fleet(aws_group(WEB))
    fleet.cloud.registered = {WEB: {"old"}}
    fleet.cloud.delays = {WEB: 12.0}
    assert await fleet.reconcile() == LB_POLL
    fleet.clock.advance(10.0)
    assert await fleet.reconcile() == 2.0  # the poll never oversleeps the delay
    assert fleet.cluster.evictions == []
    fleet.clock.advance(2.0)
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web"]  # listed as draining, but its time is up


async def test_a_restarted_controller_neither_deregisters_twice_nor_skips_the_wait() -> None:
    fleet = Fleet(aws_group(WEB))
    fleet.cloud.registered = {WEB: {"old"}}
    fleet.cloud.delays = {WEB: 60.0}
    await fleet.reconcile()
    assert len(fleet.cloud.deregister_calls) == 1
    fleet.clock.advance(20.0)
    fleet.restart()
    await fleet.reconcile()
    assert len(fleet.cloud.deregister_calls) == 1  # the annotation says it is done
    assert fleet.cluster.evictions == []  # and the wait is not skipped
    fleet.clock.advance(40.0)
    fleet.restart()
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web"]
    assert fleet.cloud.deregistrations == [(WEB, "old")]


async def test_a_crash_before_the_annotation_costs_a_longer_wait_not_a_second_call() -> None:
    fleet = Fleet(aws_group(WEB))
    fleet.cloud.registered = {WEB: set()}
    fleet.cloud.draining = {WEB: {"old"}}  # deregistered by a process killed right after
    fleet.cloud.delays = {WEB: 60.0}
    await fleet.reconcile()
    assert fleet.cloud.deregistrations == []  # already draining: nothing repeated
    assert fleet.annotations()[WAIT_UNTIL] == format_rfc3339(NOW + timedelta(seconds=60))
    assert fleet.cluster.evictions == []


async def test_a_failed_deregistration_is_reported_and_retried_with_backoff() -> None:
    fleet = Fleet(aws_group(WEB))
    fleet.cloud.registered = {WEB: {"old"}}
    fleet.cloud.delays = {WEB: 0.0}
    fleet.cloud.errors = [ProviderError("AccessDenied: not allowed"), ProviderError("Throttled")]
    assert await fleet.reconcile() == 2.0
    blocked = fleet.annotations()[BLOCKED]
    assert blocked.startswith("load balancers: deregistration from")
    assert "AccessDenied" in blocked
    assert "no pod is evicted" in blocked
    assert fleet.cluster.event_reasons("old").count("DeregistrationFailed") == 1
    await fleet.reconcile()  # before the backoff: no second call
    assert len(fleet.cloud.deregister_calls) == 1
    fleet.clock.advance(2.0)
    assert await fleet.reconcile() == 4.0
    assert "(2x" in fleet.annotations()[BLOCKED]
    assert fleet.cluster.evictions == []
    fleet.clock.advance(4.0)
    await fleet.reconcile()  # succeeds; a delay of 0 lets the drain start at once
    assert BLOCKED not in fleet.annotations()
    assert fleet.cloud.deregistrations == [(WEB, "old")]
    assert fleet.cluster.evictions == ["default/web"]


async def test_past_its_deadline_a_node_its_load_balancers_still_feed_is_held() -> None:
    fleet = Fleet(aws_group(WEB), deadline_in=-timedelta(hours=1))
    fleet.cloud.registered = {}  # the target group does not exist
    for _ in range(8):
        await fleet.reconcile()
        fleet.clock.advance(300.0)
    assert fleet.cluster.evictions == []
    assert fleet.cluster.deleted_nodes == []
    assert "past the node's deadline it is still held" in fleet.annotations()[BLOCKED]
    assert "TargetGroupNotFound" in fleet.annotations()[BLOCKED]
    # A person deregisters it by hand and says so: the node goes.
    await fleet.cluster.patch_node(
        "old", annotations={DEREGISTERED_AT: format_rfc3339(fleet.clock.now())}
    )
    fleet.clock.advance(300.0)
    await fleet.reconcile()
    assert fleet.cluster.evictions == ["default/web"]


async def test_a_node_of_an_older_revision_leaves_that_revisions_target_groups_too() -> None:
    fleet = Fleet(aws_group(WEB, previous=(API,)))
    fleet.cloud.registered = {WEB: set(), API: {"old"}}
    await fleet.reconcile()
    assert fleet.cloud.deregister_calls == [("old", tuple(sorted((API, WEB))))]
    assert fleet.cloud.deregistrations == [(API, "old")]


def _why(node: NodeView) -> Explanation:
    snapshot = Snapshot(nodes=(node,))
    policies = [policy("rotate")]
    return explain(
        WhyInputs(
            node=node,
            snapshot=snapshot,
            policies=policies,
            plan=compute_plan(snapshot, policies, NOW),
            now=NOW,
        )
    )


async def test_molt_why_names_the_load_balancer_wait_and_a_failed_deregistration() -> None:
    fleet = Fleet(aws_group(WEB))
    fleet.cloud.registered = {WEB: {"old"}}
    fleet.cloud.delays = {WEB: 60.0}
    await fleet.reconcile()
    node = fleet.cluster.node("old")
    assert node is not None
    waiting = _why(node)
    assert waiting.blocker == "LoadBalancersDraining"
    assert waiting.eta == NOW + timedelta(seconds=60)

    refused = Fleet(aws_group(WEB))
    refused.cloud.errors = [ProviderError("AccessDenied: not allowed")]
    await refused.reconcile()
    node = refused.cluster.node("old")
    assert node is not None
    held = _why(node)
    assert held.blocker == "DeregistrationFailed"
    assert "AccessDenied" in held.message
