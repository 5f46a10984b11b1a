"""The Watchdog state machine on a fake clock: warm-up, cool-down, snooze, resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from molt.api.labels import ZONE_LABEL
from molt.observe.metrics import Metrics
from molt.policy.snapshot import NodeCondition, NodeView
from molt.policy.watchdog import (
    STATES,
    Memory,
    Step,
    dedup_key,
    node_condition_count,
    node_ready_ratio,
    pauses_rotation,
    step,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WARMUP = timedelta(minutes=5)
COOLDOWN = timedelta(minutes=30)


class FakeClock:
    """Time that moves only when told."""

    def __init__(self) -> None:
        self.now = T0

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def run(memory: Memory, ok: bool, now: datetime, snooze_until: datetime | None = None) -> Step:
    return step(memory, ok, now, warmup=WARMUP, cooldown=COOLDOWN, snooze_until=snooze_until)


def test_passing_checks_are_healthy_and_silent() -> None:
    s = run(Memory(), True, T0)
    assert s.memory.state == "Healthy"
    assert s.alert is None
    assert s.memory.failing_since is None


def test_a_blip_shorter_than_the_warmup_pages_nobody() -> None:
    clock = FakeClock()
    s = run(Memory(), False, clock.now)
    assert (s.memory.state, s.alert, s.memory.failing_since) == ("WarmingUp", None, T0)
    s = run(s.memory, False, clock.advance(minutes=4))
    assert (s.memory.state, s.alert) == ("WarmingUp", None)
    s = run(s.memory, True, clock.advance(minutes=1))
    assert (s.memory.state, s.alert) == ("Healthy", None)


def test_fires_after_warmup_then_once_per_cooldown_then_resolves() -> None:
    clock = FakeClock()
    s = run(Memory(), False, clock.now)
    s = run(s.memory, False, clock.advance(minutes=5))
    assert (s.memory.state, s.alert, s.episode_start) == ("Failing", "trigger", T0)
    assert s.memory.last_alert_time == clock.now
    alerts = []
    for _ in range(29):
        s = run(s.memory, False, clock.advance(minutes=1))
        alerts.append(s.alert)
    assert alerts == [None] * 29
    assert s.memory.state == "Failing"
    s = run(s.memory, False, clock.advance(minutes=1))
    assert s.alert == "trigger"
    s = run(s.memory, True, clock.advance(minutes=1))
    assert (s.memory.state, s.alert, s.episode_start) == ("Healthy", "resolve", T0)
    # The next failure is a new episode: it warms up again and fires with a new key.
    s = run(s.memory, False, clock.advance(minutes=1))
    assert (s.memory.state, s.alert) == ("WarmingUp", None)


def test_snooze_silences_but_keeps_failing_and_alerts_when_it_ends() -> None:
    clock = FakeClock()
    until = T0 + timedelta(minutes=20)
    s = run(Memory(), False, clock.now, until)
    s = run(s.memory, False, clock.advance(minutes=6), until)
    assert (s.memory.state, s.alert) == ("Snoozed", None)
    assert pauses_rotation(s.memory.state)
    s = run(s.memory, False, clock.advance(minutes=10), until)
    assert (s.memory.state, s.alert) == ("Snoozed", None)
    s = run(s.memory, False, clock.advance(minutes=5), until)
    assert (s.memory.state, s.alert) == ("Failing", "trigger")


def test_snooze_within_an_alerted_episode_keeps_the_cooldown() -> None:
    clock = FakeClock()
    s = run(Memory(), False, clock.now)
    s = run(s.memory, False, clock.advance(minutes=5))
    assert s.alert == "trigger"
    until = clock.now + timedelta(minutes=10)
    s = run(s.memory, False, clock.advance(minutes=5), until)
    assert (s.memory.state, s.alert) == ("Snoozed", None)
    s = run(s.memory, False, clock.advance(minutes=6), until)
    assert (s.memory.state, s.alert) == ("Failing", None)  # 11 min since the alert


def test_resolve_is_sent_only_for_an_alerted_episode() -> None:
    clock = FakeClock()
    s = run(Memory(last_alert_time=T0 - timedelta(days=1)), False, clock.now)
    s = run(s.memory, True, clock.advance(minutes=1))
    assert s.alert is None  # the old alert belongs to an earlier episode


def test_only_failing_past_warmup_pauses_a_rotation() -> None:
    assert not pauses_rotation("WarmingUp")
    assert not pauses_rotation("Healthy")
    assert not pauses_rotation(None)
    assert pauses_rotation("Failing")


def test_dedup_key_is_stable_per_episode() -> None:
    assert dedup_key("api", T0) == dedup_key("api", T0)
    assert dedup_key("api", T0) != dedup_key("api", T0 + timedelta(seconds=1))
    assert dedup_key("api", T0) != dedup_key("probe", T0)


def _node(name: str, zone: str, ready: bool, *extra: NodeCondition) -> NodeView:
    ready_condition = NodeCondition("Ready", "True" if ready else "False")
    return NodeView(
        name=name,
        created=T0,
        labels={ZONE_LABEL: zone},
        conditions=(ready_condition, *extra),
    )


def test_node_ready_ratio_fails_overall_and_per_zone() -> None:
    nodes = [_node(f"a{i}", "a", True) for i in range(4)] + [
        _node("b0", "b", True),
        _node("b1", "b", False),
    ]
    assert node_ready_ratio(nodes, None, "50%").ok  # 5/6 overall, zone b 1/2
    verdict = node_ready_ratio(nodes, None, "90%")
    assert not verdict.ok
    assert "5/6" in verdict.message
    zone_only = node_ready_ratio(nodes, None, "60%")
    assert not zone_only.ok
    assert "zone b: 1/2" in zone_only.message
    assert "5/6" not in zone_only.message  # overall 5/6 is above 60 %
    assert node_ready_ratio(nodes, None, 5).ok
    assert not node_ready_ratio(nodes, None, 6).ok
    assert not node_ready_ratio([], None, "50%").ok


def test_node_condition_count_fails_above_max() -> None:
    deadlock = NodeCondition("KernelDeadlock", "True")
    cleared = NodeCondition("KernelDeadlock", "False")
    nodes = [_node("n0", "a", True, deadlock), _node("n1", "a", True, cleared)]
    assert node_condition_count(nodes, None, "KernelDeadlock", 1).ok
    verdict = node_condition_count(nodes, None, "KernelDeadlock", 0)
    assert not verdict.ok
    assert "n0" in verdict.message
    assert "n1" not in verdict.message


def test_the_state_gauge_is_one_for_the_current_state_only() -> None:
    metrics = Metrics()
    metrics.set_watchdog_state("probe", "WarmingUp")
    metrics.set_watchdog_state("probe", "Failing")
    values = {
        s.labels["state"]: s.value
        for family in metrics.registry.collect()
        if family.name == "molt_watchdog_state"
        for s in family.samples
    }
    assert values == {state: float(state == "Failing") for state in STATES}
    metrics.set_watchdog_state("probe", None)
    assert not [
        s
        for family in metrics.registry.collect()
        if family.name == "molt_watchdog_state"
        for s in family.samples
    ]
