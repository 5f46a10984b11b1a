"""The Watchdog controller's rounds over the fake ports, alerting a loopback fake of the
alert services (webhook, PagerDuty Events v2, Slack) that refuses bodies not in their
documented shape. The clock is a fake one moved by the test, so warm-up, cool-down and
snooze are exact. Neither the routing key nor the Slack URL is in an Event, a status or a
log line afterwards (tests/support/secret_surfaces.py)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from molt.api.watchdog import Watchdog
from molt.controllers.watchdog.checks import PROBE_LABEL
from molt.controllers.watchdog.controller import WatchdogController
from molt.observe.metrics import Metrics
from molt.policy.snapshot import NodeCondition, NodeView
from molt.ports import ObjectRef
from tests.support.fake_alert_receiver import (
    PAGERDUTY_PATH,
    SLACK_PATH,
    WEBHOOK_PATH,
    FakeAlertReceiver,
)
from tests.support.fake_ports import FakeClock, FakeCluster
from tests.support.secret_surfaces import (
    assert_no_secret,
    captured_logs,
    fake_cluster_surfaces,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ROUTING_KEY = f"R0UT1NG-{uuid.uuid4().hex}"


def _node(name: str, deadlocked: bool) -> NodeView:
    condition = NodeCondition("KernelDeadlock", "True" if deadlocked else "False")
    ready = NodeCondition("Ready", "True")
    return NodeView(name=name, created=NOW - timedelta(days=1), conditions=(ready, condition))


def _watchdog(receiver: FakeAlertReceiver, **spec: Any) -> Watchdog:
    sinks = [
        {"webhook": {"url": receiver.url(WEBHOOK_PATH)}},
        {
            "pagerDuty": {
                "routingKey": {"namespace": "ops", "name": "pd", "key": "routing-key"},
                "url": receiver.url(PAGERDUTY_PATH),
                "severity": "critical",
            }
        },
        {"slack": {"webhookUrl": {"namespace": "ops", "name": "slack", "key": "url"}}},
    ]
    body = {
        "check": {"nodeCondition": {"type": "KernelDeadlock", "max": 0}},
        "interval": "2s",
        "warmup": "10s",
        "cooldown": "30s",
        "sinks": sinks,
        **spec,
    }
    return Watchdog.model_validate(
        {
            "apiVersion": "molt.dev/v1alpha1",
            "kind": "Watchdog",
            "metadata": {"name": "kernel", "generation": 1},
            "spec": body,
        }
    )


@pytest.fixture
async def receiver() -> Any:
    fake = FakeAlertReceiver()
    await fake.start()
    yield fake
    await fake.stop()


def _controller(cluster: FakeCluster, clock: FakeClock) -> WatchdogController:
    return WatchdogController(cluster, cluster, clock, Metrics(), sink_backoff=0.01)


async def test_fires_after_warmup_once_per_cooldown_silent_snoozed_and_resolves(
    receiver: FakeAlertReceiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster = FakeCluster(nodes=[_node("a", deadlocked=True), _node("b", deadlocked=False)])
    cluster.put_secret("ops", "pd", {"routing-key": ROUTING_KEY})
    slack_url = receiver.url(SLACK_PATH)
    cluster.put_secret("ops", "slack", {"url": slack_url})
    clock = FakeClock(NOW)
    controller = _controller(cluster, clock)
    watchdog = _watchdog(receiver)
    states = []
    try:
        for _ in range(6):  # 0s .. 10s: warming up, then failing past the 10s warm-up
            states.append((await controller.run_round(watchdog)).state)
            clock.advance(2)
        assert states == ["WarmingUp"] * 5 + ["Failing"]
        assert len(receiver.received[PAGERDUTY_PATH]) == 1

        for _ in range(10):  # 12s .. 30s: still failing, within the 30s cool-down
            assert (await controller.run_round(watchdog)).state == "Failing"
            clock.advance(2)
        assert len(receiver.received[PAGERDUTY_PATH]) == 1, "alerted again within cool-down"

        snoozed = _watchdog(receiver, snoozeUntil=(clock.now() + timedelta(minutes=5)).isoformat())
        for _ in range(20):  # 32s .. 70s: past the cool-down, but snoozed
            assert (await controller.run_round(snoozed)).state == "Snoozed"
            clock.advance(2)
        assert len(receiver.received[PAGERDUTY_PATH]) == 1, "alerted while snoozed"

        cluster.node_views["a"] = _node("a", deadlocked=False)
        assert (await controller.run_round(watchdog)).state == "Healthy"
    finally:
        await controller.stop()

    pager = receiver.received[PAGERDUTY_PATH]
    assert [e["event_action"] for e in pager] == ["trigger", "resolve"]
    assert pager[0]["dedup_key"] == pager[1]["dedup_key"]
    assert pager[0]["routing_key"] == ROUTING_KEY
    assert pager[0]["payload"]["severity"] == "critical"
    assert "KernelDeadlock" in pager[0]["payload"]["summary"]
    assert [m["event"] for m in receiver.received[WEBHOOK_PATH]] == ["trigger", "resolve"]
    assert receiver.received[WEBHOOK_PATH][0]["watchdog"] == "kernel"
    slack = receiver.received[SLACK_PATH]
    assert len(slack) == 2
    assert all(m["text"] and m["blocks"] for m in slack)
    reasons = [e.reason for e in cluster.events if e.node == "watchdog/kernel"]
    assert reasons == ["Fired", "Snoozed", "Resolved"]
    name, last = cluster.watchdog_status_patches[-1]
    assert name == "kernel"
    assert last["state"] == "Healthy"
    assert last["failingSince"] is None
    assert last["lastResult"]["ok"] is True
    fired = next(s for _, s in cluster.watchdog_status_patches if s["state"] == "Failing")
    assert fired["failingSince"] == "2026-06-01T12:00:00Z"
    assert {c["type"]: c["status"] for c in fired["conditions"]} == {
        "SinksReady": "True",
        "Delivered": "True",
    }
    secrets = {"PagerDuty routing key": ROUTING_KEY, "Slack webhook URL": slack_url}
    assert_no_secret(fake_cluster_surfaces(cluster, captured_logs(caplog, capsys)), secrets)


async def test_a_sink_without_its_secret_is_reported_and_the_others_still_alerted(
    receiver: FakeAlertReceiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster = FakeCluster(nodes=[_node("a", deadlocked=True)])
    cluster.put_secret("ops", "pd", {"routing-key": ROUTING_KEY})  # no Slack Secret
    clock = FakeClock(NOW)
    controller = _controller(cluster, clock)
    watchdog = _watchdog(receiver, warmup="0s")
    try:
        assert (await controller.run_round(watchdog)).state == "Failing"
    finally:
        await controller.stop()

    assert len(receiver.received[PAGERDUTY_PATH]) == 1
    assert len(receiver.received[WEBHOOK_PATH]) == 1
    assert SLACK_PATH not in receiver.received
    events = {e.reason: e for e in cluster.events if e.node == "watchdog/kernel"}
    assert "Secret ops/slack" in events["SinkMisconfigured"].message
    assert events["SinkMisconfigured"].warning
    assert "slack[2]" in events["AlertFailed"].message
    _, status = cluster.watchdog_status_patches[-1]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SinksReady"]["status"] == "False"
    assert "slack[2]" in conditions["SinksReady"]["message"]
    assert conditions["Delivered"]["status"] == "False"
    surfaces = fake_cluster_surfaces(cluster, captured_logs(caplog, capsys))
    assert_no_secret(surfaces, {"PagerDuty routing key": ROUTING_KEY})


class RunningPods(FakeCluster):
    """A fake cluster whose scheduler and kubelet put a created pod Running at once (or,
    with ``schedulable`` off, leave it Pending and unschedulable)."""

    schedulable = True

    async def create_object(self, body: dict[str, Any]) -> bool:
        if body.get("kind") == "Pod" and self.schedulable:
            body = {**body, "spec": {**body["spec"], "nodeName": "a"}}
            body["status"] = {"phase": "Running"}
        return await super().create_object(body)


async def test_probe_pod_rounds_clean_up_and_time_out_when_nothing_schedules(
    receiver: FakeAlertReceiver,
) -> None:
    cluster = RunningPods(nodes=[_node("a", deadlocked=False)])
    leftover = ObjectRef("v1", "Pod", "molt-probe-sched-old", "molt-system")
    cluster.objects[leftover] = {
        "metadata": {
            "name": leftover.name,
            "namespace": "molt-system",
            "labels": {PROBE_LABEL: "sched"},
        }
    }
    clock = FakeClock(NOW)
    controller = _controller(cluster, clock)
    watchdog = Watchdog.model_validate(
        {
            "apiVersion": "molt.dev/v1alpha1",
            "kind": "Watchdog",
            "metadata": {"name": "sched", "generation": 1},
            "spec": {"check": {"probePod": {"timeout": "1s"}}, "warmup": "0s"},
        }
    )
    try:
        assert (await controller.run_round(watchdog)).state == "Healthy"
        ok = cluster.watchdog_status_patches[-1][1]["lastResult"]
        cluster.schedulable = False
        assert (await controller.run_round(watchdog)).state == "Failing"
        failed = cluster.watchdog_status_patches[-1][1]["lastResult"]
    finally:
        await controller.stop()

    assert leftover in cluster.deleted_objects
    probes = [r for r in cluster.deleted_objects if r.name.startswith("molt-probe-sched-")]
    assert len(probes) == 3  # the leftover, then each round's own pod
    assert len({r.name for r in probes}) == 3, "a probe pod name was reused"
    assert not [r for r in cluster.objects if r.kind == "Pod"], "a probe pod was left behind"
    assert ok["ok"]
    assert "Running on a" in ok["message"]
    assert not failed["ok"]
    assert "not Running within 1s" in failed["message"]
    assert failed["durationSeconds"] >= 1.0


async def test_a_check_that_raises_is_a_failed_result_not_a_crash(
    receiver: FakeAlertReceiver,
) -> None:
    class Broken(FakeCluster):
        async def list_objects(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            raise ConnectionError("API server unreachable")

    cluster = Broken()
    controller = _controller(cluster, FakeClock(NOW))
    watchdog = Watchdog.model_validate(
        {
            "apiVersion": "molt.dev/v1alpha1",
            "kind": "Watchdog",
            "metadata": {"name": "api", "generation": 1},
            "spec": {"check": {"apiLatency": {"threshold": "1s"}}},
        }
    )
    try:
        assert (await controller.run_round(watchdog)).state == "WarmingUp"
    finally:
        await controller.stop()
    result = cluster.watchdog_status_patches[-1][1]["lastResult"]
    assert not result["ok"]
    assert "API server unreachable" in result["message"]
