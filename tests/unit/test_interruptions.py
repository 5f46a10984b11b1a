"""Interruption notices: the queue's message shapes, the node annotation, and the
reconciler that records them (over the in-memory cluster and a scripted queue)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from molt.api import TerminationPolicy
from molt.cloud.aws_queue import Received
from molt.controllers.interruption.reconciler import InterruptionReconciler
from molt.observe.metrics import Metrics
from molt.policy.interruptions import LifecycleHook, Notice, parse_message, read_annotation
from molt.policy.plan import compute_plan
from molt.policy.snapshot import NodeView, Snapshot
from tests.support.builders import termination_policy
from tests.support.fake_ports import FakeClock, FakeCluster

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
INSTANCE = "i-0b662ef9931388ba0"


def spot(event_id: str = "e-1", instance: str = INSTANCE, at: datetime = NOW) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "eu-west-1",
        "resources": [f"arn:aws:ec2:eu-west-1a:instance/{instance}"],
        "detail": {"instance-id": instance, "instance-action": "terminate"},
    }


LIFECYCLE_DETAIL = {
    "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
    "AutoScalingGroupName": "molt-web-a",
    "LifecycleHookName": "drain",
    "EC2InstanceId": INSTANCE,
    "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
}


def test_every_documented_shape_is_read_and_anything_else_is_not() -> None:
    notice = parse_message(json.dumps(spot()))
    assert notice == Notice("spot-interruption", INSTANCE, NOW, "e-1")
    assert notice.deadline == NOW + timedelta(minutes=2)

    rebalance = {**spot(), "detail-type": "EC2 Instance Rebalance Recommendation"}
    assert parse_message(json.dumps(rebalance)).kind == "rebalance-recommendation"  # type: ignore[union-attr]

    event = {
        **spot("e-2"),
        "source": "aws.autoscaling",
        "detail-type": "EC2 Instance-terminate Lifecycle Action",
        "detail": LIFECYCLE_DETAIL,
    }
    hook = LifecycleHook("molt-web-a", "drain", LIFECYCLE_DETAIL["LifecycleActionToken"])
    assert parse_message(json.dumps(event)) == Notice("asg-termination", INSTANCE, NOW, "e-2", hook)

    direct = {**LIFECYCLE_DETAIL, "Service": "AWS Auto Scaling", "Time": "2026-12-02T06:00:00.5Z"}
    found = parse_message(json.dumps(direct))
    assert found is not None
    assert found.hook == hook
    assert found.deadline is None

    wrapped = {"Type": "Notification", "Message": json.dumps(spot())}
    assert parse_message(json.dumps(wrapped)) == notice

    test_notification = {"Event": "autoscaling:TEST_NOTIFICATION", "Service": "AWS Auto Scaling"}
    launching = {**LIFECYCLE_DETAIL, "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}
    for other in ("not json", "[]", json.dumps(test_notification), json.dumps(launching)):
        assert parse_message(other) is None


def test_the_annotation_reads_back_and_a_garbled_one_reads_as_none() -> None:
    hook = LifecycleHook("g", "h", "t")
    notice = Notice("asg-termination", INSTANCE, NOW, "e-9", hook)
    assert read_annotation(notice.annotation(), INSTANCE) == notice
    for garbled in ("{", '{"kind": "meteor", "at": "2026-12-02T06:00:00Z"}', '{"kind": 1}'):
        assert read_annotation(garbled) is None


class ScriptedQueue:
    """A queue that hands out what the test put on it, once, until deleted."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}
        self.deleted: list[str] = []

    def put(self, message_id: str, body: dict[str, Any]) -> None:
        self.messages[message_id] = json.dumps(body)

    async def receive(self) -> list[Received]:
        return [Received(parse_message(b), mid, mid) for mid, b in self.messages.items()]

    async def delete(self, received: Received) -> None:
        self.deleted.append(received.message_id)
        self.messages.pop(received.message_id, None)


def aws_node(name: str, instance: str) -> NodeView:
    return NodeView(
        name=name,
        created=NOW - timedelta(hours=3),
        labels={"molt.dev/instance-group": "workers"},
        provider_id=f"aws:///eu-west-1a/{instance}",
    )


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster(nodes=[aws_node("n1", INSTANCE), aws_node("n2", "i-0000000000000000b")])


async def test_a_spot_notice_puts_its_node_in_the_pipeline_once_with_the_notice_deadline(
    cluster: FakeCluster,
) -> None:
    queue = ScriptedQueue()
    selected: list[str] = []
    reconciler = InterruptionReconciler(
        cluster, cluster, FakeClock(NOW), Metrics(), queue, on_selected=selected.append
    )
    queue.put("m1", spot())
    await reconciler.reconcile()
    node = cluster.node_views["n1"]
    assert node.labels["molt.dev/state"] == "selected"
    assert node.annotations["molt.dev/deadline"] == "2026-12-02T06:02:00Z"
    assert node.annotations["molt.dev/reason"].startswith("spot interruption: reclaimed at")
    assert selected == ["n1"]
    assert queue.deleted == ["m1"]

    queue.put("m2", spot())  # the same event delivered again
    await reconciler.reconcile()
    assert cluster.event_reasons("n1") == ["Interrupted"], "a duplicate changes nothing"
    assert queue.deleted == ["m1", "m2"]
    assert selected == ["n1"]
    assert "molt.dev/state" not in cluster.node_views["n2"].labels

    del cluster.node_views["n1"]  # drained and gone; SQS delivers the event once more
    queue.put("m3", spot())
    await reconciler.reconcile()
    assert queue.deleted == ["m1", "m2", "m3"], "a redelivery after the node went is dropped"


async def test_a_notice_for_no_node_here_stays_queued_until_it_is_stale(
    cluster: FakeCluster,
) -> None:
    queue = ScriptedQueue()
    clock = FakeClock(NOW)
    reconciler = InterruptionReconciler(cluster, cluster, clock, Metrics(), queue)
    queue.put("elsewhere", spot(instance="i-0ffffffffffffffff"))
    queue.put("noise", {"Event": "autoscaling:TEST_NOTIFICATION"})
    await reconciler.reconcile()
    assert queue.deleted == ["noise"], "another cluster may share the queue"
    clock.advance(16 * 60)
    await reconciler.reconcile()
    assert queue.deleted == ["noise", "elsewhere"]
    assert not cluster.events


async def test_a_rebalance_recommendation_is_selected_by_policy_within_its_budget(
    cluster: FakeCluster,
) -> None:
    queue = ScriptedQueue()
    reconciler = InterruptionReconciler(cluster, cluster, FakeClock(NOW), Metrics(), queue)
    queue.put("r1", {**spot("r-1"), "detail-type": "EC2 Instance Rebalance Recommendation"})
    other = {**spot("r-2", instance="i-0000000000000000b")}
    queue.put("r2", {**other, "detail-type": "EC2 Instance Rebalance Recommendation"})
    await reconciler.reconcile()
    assert all("molt.dev/state" not in n.labels for n in cluster.node_views.values())
    assert cluster.event_reasons() == ["RebalanceRecommended", "RebalanceRecommended"]

    policy = TerminationPolicy.model_validate(
        termination_policy(
            "rotate", rules={"maxAge": "48h"}, budgets=[{"maxInFlight": 1, "scope": "Cluster"}]
        )
    )
    plan = compute_plan(Snapshot(tuple(cluster.node_views.values()), {}), [policy], NOW)
    assert [(d.candidate.rule, d.action) for d in plan.decisions] == [
        ("Rebalance", "terminate"),
        ("Rebalance", "wait"),
    ]
