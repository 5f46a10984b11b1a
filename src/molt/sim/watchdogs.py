"""The simulator's Watchdogs: the node checks, judged round by round on the virtual clock.

In production each Watchdog is a background task whose rounds may do I/O (a probe pod,
API calls, an HTTP GET, the sinks), which a virtual clock cannot drive. The simulator
runs the rounds of the checks that need none: every ``interval`` of virtual time the
check is judged from the simulated nodes by ``molt.policy.watchdog.node_verdict`` and
the state machine moves on by ``molt.policy.watchdog.step`` (both exactly what the
controller's round calls). The Watchdog's status is written into the simulated cluster,
whose change reaches the manager as a watch event would (a new state wakes selection,
which reads ``pauseWhen``), and the ``Fired``, ``Resolved`` and ``Snoozed`` Events are
recorded as the controller records them.

No sink is called: every trigger and resolve the state machine asks for is kept, with
its time, for the report. A scenario refuses the checks that need I/O
(``molt.sim.scenario.SimulatedCheck``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from molt.api.durations import parse_duration
from molt.api.watchdog import Watchdog
from molt.controllers.watchdog.controller import MIN_INTERVAL_SECONDS
from molt.policy.age import format_rfc3339
from molt.policy.watchdog import (
    AlertEvent,
    Memory,
    Verdict,
    dedup_key,
    node_verdict,
    pauses_rotation,
    step,
)
from molt.sim.clock import EventHeap
from molt.sim.cluster import SimCluster
from molt.sim.drive import complete


@dataclass(frozen=True)
class SentAlert:
    """An alert the controller would have sent to the Watchdog's sinks."""

    at: float
    watchdog: str
    kind: AlertEvent
    dedup_key: str
    message: str


@dataclass
class WatchdogRecord:
    """What one Watchdog did over a run, in simulated seconds."""

    rounds: int = 0
    fired: int = 0
    """Failure episodes that went past the warm-up (Failing, or Snoozed)."""
    held: list[tuple[float, float | None]] = field(default_factory=list)
    """When it was Failing or Snoozed (and so held a ``pauseWhen`` policy): from, to
    (None: still at the end)."""

    def held_seconds(self, end: float) -> float:
        return sum((until if until is not None else end) - since for since, until in self.held)


class SimWatchdogs:
    """Runs the rounds of every simulated Watchdog; ``start`` is the manager's reconcile."""

    def __init__(self, cluster: SimCluster, events: EventHeap) -> None:
        self.cluster = cluster
        self.events = events
        self.alerts: list[SentAlert] = []
        self.records: dict[str, WatchdogRecord] = {}
        self._memory: dict[str, Memory] = {}
        self._running: set[str] = set()

    def start(self, name: str) -> None:
        """Start the Watchdog's rounds unless they run already (production's reconcile of
        ``watchdog/<name>`` starts its task the same way)."""
        if name in self._running or self.cluster.watchdog(name) is None:
            return
        self._running.add(name)
        self.records.setdefault(name, WatchdogRecord())
        self.events.after(0.0, lambda: self.run_round(name))

    def run_round(self, name: str) -> None:
        """One check, the state machine, the Events, the status; then the next round."""
        watchdog = self.cluster.watchdog(name)
        if watchdog is None:
            self._running.discard(name)
            return
        spec = watchdog.spec
        verdict = node_verdict(spec.check, self.cluster.nodes()) or Verdict(
            False,
            "this check is not simulated",  # the scenario refuses it before a run
        )
        clock = self.cluster.clock
        now, seconds = clock.now(), clock.seconds
        memory = self._memory.get(name, Memory())
        outcome = step(
            memory,
            verdict.ok,
            now,
            warmup=parse_duration(spec.warmup),
            cooldown=parse_duration(spec.cooldown),
            snooze_until=spec.snooze_until,
        )
        new = outcome.memory
        self._memory[name] = new
        record = self.records.setdefault(name, WatchdogRecord())
        record.rounds += 1
        if pauses_rotation(new.state) and not pauses_rotation(memory.state):
            record.fired += 1
            record.held.append((seconds, None))
        elif pauses_rotation(memory.state) and not pauses_rotation(new.state):
            since, _ = record.held[-1]
            record.held[-1] = (since, seconds)
        if outcome.alert is not None and outcome.episode_start is not None:
            self.alerts.append(
                SentAlert(
                    seconds,
                    name,
                    outcome.alert,
                    dedup_key(name, outcome.episode_start),
                    verdict.message,
                )
            )
            trigger = outcome.alert == "trigger"
            complete(
                self.cluster.record_resource_event(
                    Watchdog,
                    name,
                    "Fired" if trigger else "Resolved",
                    f"{verdict.message}; sent nowhere (simulated)",
                    warning=trigger,
                )
            )
        elif new.state != memory.state and new.state == "Snoozed":
            complete(
                self.cluster.record_resource_event(
                    Watchdog,
                    name,
                    "Snoozed",
                    f"failing but snoozed until {spec.snooze_until}: {verdict.message}",
                )
            )
        status = {
            "state": new.state,
            "observedGeneration": watchdog.metadata.generation,
            "failingSince": _time(new.failing_since),
            "lastAlertTime": _time(new.last_alert_time),
            "lastResult": {
                "time": format_rfc3339(now),
                "ok": verdict.ok,
                "message": verdict.message[:4096],
                "durationSeconds": 0.0,
            },
        }
        complete(self.cluster.patch_status(Watchdog, name, status))
        interval = parse_duration(spec.interval).total_seconds()
        self.events.after(max(MIN_INTERVAL_SECONDS, interval), lambda: self.run_round(name))


def _time(moment: datetime | None) -> str | None:
    return format_rfc3339(moment) if moment is not None else None
