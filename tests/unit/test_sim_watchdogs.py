"""Watchdogs in the simulator: a nodeReadyRatio watchdog judged on the virtual clock by the
controller's own verdict and state machine, through a zone outage; a policy whose
``pauseWhen`` names it selects nothing while it fails; checks that need I/O are refused."""

from __future__ import annotations

import pytest

from molt.cli.simulate import render_report
from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import ScenarioError, parse_scenario

pytestmark = pytest.mark.unit

MINUTE = 60.0

OUTAGE = """\
name: watchdog-outage
duration: 3h
seed: 3
cloud: {launchDelay: 30s, launchJitter: 10s, readyDelay: 10s}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 9
      maxSize: 12
      replicas: 9
      zones: [zone-a, zone-b, zone-c]
      template: {instanceTypes: [m5.large]}
      strategy: {type: RollingReplace, maxSurge: 1, maxUnavailable: 0}
    ages: [26h, 25h, 24h, 21h50m, 21h48m, 21h45m, 21h42m, 21h40m, 20h]
watchdogs:
  - name: ready-nodes
    spec:
      interval: 1m
      warmup: 5m
      cooldown: 30m
      check: {nodeReadyRatio: {minReady: "90%"}}
policies:
  - name: rotate
    spec:
      rules: {maxAge: 24h}
      budgets: [{maxInFlight: 1}]
      PAUSE
workloads:
  - name: web
    replicas: 9
    pdb: {maxUnavailable: 1}
timeline:
  - at: 1h
    zoneOutage: {zone: zone-b, until: UNTIL, nodesNotReady: true}
"""
"""Zone-b's three nodes NotReady from 1h; five nodes turn 23h old (selected for max age)
between 1h10m and 1h20m, while the zone is out."""


def _outage(*, until: str = "1h25m", paused: bool = True) -> Simulation:
    pause = "pauseWhen: [{watchdog: ready-nodes}]" if paused else ""
    text = OUTAGE.replace("PAUSE", pause).replace("UNTIL", until)
    return Simulation(parse_scenario(text))


def test_it_fires_after_its_warmup_alerts_once_within_its_cooldown_and_resolves() -> None:
    sim = _outage()
    sim.run()
    alerts = sim.watchdogs.alerts
    assert [a.kind for a in alerts] == ["trigger", "resolve"]
    trigger, resolve = alerts
    # Failing from the first round in the outage (1h); fired once the 5m warm-up passed.
    assert 65 * MINUTE <= trigger.at < 66 * MINUTE
    assert "zone zone-b: 0/3 Ready" in trigger.message
    # The zone is back at 1h25m: the next round resolves the same episode.
    assert 85 * MINUTE <= resolve.at < 86 * MINUTE
    assert resolve.dedup_key == trigger.dedup_key
    record = sim.watchdogs.records["ready-nodes"]
    assert record.fired == 1
    assert record.held == [(trigger.at, resolve.at)]
    reasons = [(e.reason, e.warning) for e in sim.cluster.recorded if e.node == "wd/ready-nodes"]
    assert reasons == [("Fired", True), ("Resolved", False)]
    watchdog = sim.cluster.watchdog("ready-nodes")
    assert watchdog is not None
    assert watchdog.status is not None
    assert watchdog.status.state == "Healthy"
    assert watchdog.status.last_result is not None
    assert watchdog.status.last_result.ok


def test_a_failure_longer_than_the_cooldown_alerts_again() -> None:
    sim = _outage(until="2h")
    sim.run()
    kinds = [(a.kind, a.at) for a in sim.watchdogs.alerts]
    assert [k for k, _ in kinds] == ["trigger", "trigger", "resolve"]
    assert kinds[1][1] - kinds[0][1] == 30 * MINUTE
    assert sim.watchdogs.records["ready-nodes"].fired == 1


def test_the_report_says_what_each_watchdog_did(capsys: pytest.CaptureFixture[str]) -> None:
    sim = _outage()
    sim.run()
    report = build_report(sim)
    summary = report["watchdogs"]["ready-nodes"]
    trigger, resolve = sim.watchdogs.alerts
    assert summary["check"] == "nodeReadyRatio"
    assert summary["fired"] == 1
    assert summary["alerts"] == 1
    assert summary["resolves"] == 1
    assert summary["failingSeconds"] == resolve.at - trigger.at
    assert summary["failing"] == [{"fromSeconds": trigger.at, "toSeconds": resolve.at}]
    assert summary["state"] == "Healthy"
    assert [(a["atSeconds"], a["kind"]) for a in summary["sent"]] == [
        (trigger.at, "trigger"),
        (resolve.at, "resolve"),
    ]
    assert report["remediation"]["RemediationPaused"] == 0

    report["remediation"].update(RemediationPaused=2, RemediationResumed=1, Rebooting=3)
    render_report(report)
    text = capsys.readouterr().out
    assert "watchdog ready-nodes" in text
    assert "fired 1 time(s), 1 alert(s) and 1 resolve(s) (not sent), failing 20 min" in text
    assert "remediation breaker" in text
    assert "2 pause(s), 1 resume(s)" in text
    assert "3 reboot(s)" in text


def _inside(sim: Simulation, since: float, until: float) -> list[str]:
    return [d.node for d in sim.recorder.decisions if since < d.at < until]


def test_a_policy_paused_by_the_watchdog_selects_no_node_while_it_fails() -> None:
    sim = _outage()
    sim.controller.enqueue_all()
    sim.events.run_until(75 * MINUTE)
    policy = sim.cluster.policy("rotate")
    assert policy is not None
    assert policy.status is not None
    paused = next(c for c in policy.status.conditions if c.type == "Paused")
    assert paused.status == "True"
    assert "ready-nodes" in paused.message
    sim.events.run_until(sim.scenario.duration_seconds)

    ((since, until),) = sim.watchdogs.records["ready-nodes"].held
    assert until is not None
    assert _inside(sim, since, until) == []
    # The rotation picks up after the watchdog resolves: the nodes that aged meanwhile.
    after = [d for d in sim.recorder.decisions if until <= d.at < until + 10 * MINUTE]
    assert len(after) >= 3

    # Without pauseWhen the same run selects nodes in that stretch.
    free = _outage(paused=False)
    free.run()
    assert _inside(free, since, until)


def test_the_node_condition_check_runs_and_a_healthy_fleet_stays_healthy() -> None:
    text = OUTAGE.replace("PAUSE", "").replace("UNTIL", "1h25m")
    text = text.replace(
        'check: {nodeReadyRatio: {minReady: "90%"}}',
        "check: {nodeCondition: {type: KernelDeadlock, max: 0}}",
    )
    sim = Simulation(parse_scenario(text))
    sim.controller.enqueue_all()
    sim.events.run_until(30 * MINUTE)
    record = sim.watchdogs.records["ready-nodes"]
    assert record.rounds == 31  # one a minute, from the start
    assert sim.watchdogs.alerts == []
    watchdog = sim.cluster.watchdog("ready-nodes")
    assert watchdog is not None
    assert watchdog.status is not None
    assert watchdog.status.state == "Healthy"
    assert watchdog.status.last_result is not None
    assert "0 node(s) with KernelDeadlock=True" in watchdog.status.last_result.message


@pytest.mark.parametrize(
    ("check", "field"),
    [
        ("probePod: {timeout: 30s}", "probePod"),
        ("apiLatency: {threshold: 1s}", "apiLatency"),
        ("http: {url: 'https://example.com/healthz'}", "http"),
    ],
)
def test_a_check_that_needs_io_is_refused_at_its_line(check: str, field: str) -> None:
    text = OUTAGE.replace("PAUSE", "").replace("UNTIL", "1h25m")
    text = text.replace(
        '      check: {nodeReadyRatio: {minReady: "90%"}}', f"      check:\n        {check}"
    )
    line = text.splitlines().index(f"        {check}") + 1
    with pytest.raises(ScenarioError) as raised:
        parse_scenario(text, "outage.yaml")
    (problem,) = raised.value.problems
    assert problem.startswith(f"outage.yaml:{line}: watchdogs[0].spec.check.{field}: ")
    assert "not simulated" in problem


def test_pause_when_naming_a_watchdog_the_scenario_lacks_is_refused() -> None:
    text = OUTAGE.replace("PAUSE", "pauseWhen: [{watchdog: nobody}]").replace("UNTIL", "1h25m")
    with pytest.raises(ScenarioError, match="'nobody'"):
        parse_scenario(text)


FLAP = """\
name: flapping
duration: 1h
seed: 2
cloud: {launchDelay: 30s, launchJitter: 10s, readyDelay: 10s}
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 4
      maxSize: 5
      replicas: 4
      zones: [zone-a, zone-b]
      template: {instanceTypes: [m5.large]}
      strategy: {type: RollingReplace, maxSurge: 1, maxUnavailable: 0}
    ages: [4h, 3h, 2h, 1h]
policies:
  - name: heal
    spec:
      rules:
        conditions: [{type: Ready, status: "False", for: 3m}]
      budgets: [{maxInFlight: 1}]
workloads:
  - name: web
    replicas: 4
    pdb: {maxUnavailable: 1}
timeline:
  - at: 10m
    flap: FLAP
"""


def _flapping(flap: str) -> tuple[Simulation, list[tuple[float, str, bool]]]:
    sim = Simulation(parse_scenario(FLAP.replace("FLAP", flap)))
    seen: list[tuple[float, str, bool]] = []

    def changed(name: str, old: object, new: object) -> None:
        before = getattr(old, "ready", None)
        after = getattr(new, "ready", None)
        if old is not None and new is not None and before != after:
            seen.append((sim.clock.seconds, name, bool(after)))

    sim.cluster.node_listeners.append(changed)
    sim.run()
    return sim, seen


def test_a_node_that_flaps_faster_than_the_rule_waits_is_blinked_through() -> None:
    sim, seen = _flapping("{node: workers-zone-a-00001, period: 3m, notReadyFor: 1m, times: 5}")
    assert seen == [
        (at, "workers-zone-a-00001", ready)
        for cycle in range(5)
        for at, ready in (
            ((10 + 3 * cycle) * MINUTE, False),
            ((11 + 3 * cycle) * MINUTE, True),
        )
    ]
    assert sim.recorder.decisions == []
    assert sim.cluster.node("workers-zone-a-00001") is not None
    timeline = build_report(sim)["cloud"]["timeline"]
    assert [row["kind"] for row in timeline] == ["flap"]
    assert "1 node(s) flapping: NotReady 60s of every 180s, 5 time(s)" in timeline[0]["message"]


def test_a_node_down_longer_than_the_rule_waits_is_replaced_and_the_flapping_stops() -> None:
    sim, seen = _flapping("{nodes: 1, period: 10m, notReadyFor: 5m, times: 4}")
    youngest = "workers-zone-b-00004"  # 1h old at the start
    assert [d.node for d in sim.recorder.decisions] == [youngest]
    decision = sim.recorder.decisions[0]
    assert decision.reason.startswith("condition: Ready=False for 3m")
    assert 13 * MINUTE <= decision.at < 14 * MINUTE
    assert sim.cluster.node(youngest) is None
    # It went NotReady once and was gone before the next cycle began.
    assert [(at, ready) for at, name, ready in seen if name == youngest] == [(10 * MINUTE, False)]
    assert sim.cluster.node_count() == 4
    assert all(not b.violations for b in sim.cluster.budgets.values())


@pytest.mark.parametrize(
    ("flap", "message"),
    [
        ("{nodes: 1, period: 2m, notReadyFor: 2m}", "notReadyFor must be"),
        ("{node: a, nodes: 1}", "exactly one of node or nodes"),
        ("{nodes: 1, times: 0}", "times"),
    ],
)
def test_a_flap_that_cannot_happen_is_refused(flap: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as raised:
        parse_scenario(FLAP.replace("FLAP", flap), "flap.yaml")
    line = FLAP.splitlines().index("    flap: FLAP") + 1
    assert raised.value.problems[0].startswith(f"flap.yaml:{line}: timeline[0].flap")
