"""Lifecycle actions on the virtual clock: each attempt takes its scenario duration and
succeeds or fails by the scenario's failure rate, and calls nothing.

It answers the pipeline as the production runner does (``poll`` starts an attempt and
reports it once it ended; ``running``; ``forget``), but an attempt is a point of virtual
time, not a task: a simulated reconcile never waits. Each outcome is drawn when the
attempt starts, from a generator seeded by the scenario, so a run is repeatable.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from molt.actions.base import ActionContext
from molt.actions.runner import ActionRunner, AttemptOutcome, AttemptState
from molt.api.lifecycle import LifecycleAction
from molt.sim.clock import VirtualClock
from molt.sim.scenario import ActionTiming, seconds


@dataclass(frozen=True)
class Attempt:
    ends: float
    fails: bool


class SimulatedActions(ActionRunner):
    """Timed, seeded stand-ins for every lifecycle action of a scenario."""

    def __init__(
        self, clock: VirtualClock, timings: dict[str, ActionTiming], rng: random.Random
    ) -> None:
        super().__init__({})
        self.clock = clock
        self.timings = timings
        self.rng = rng
        self._attempts: dict[str, Attempt] = {}
        self.started: Counter[str] = Counter()
        """Attempts started, by action name."""
        self.failed: Counter[str] = Counter()
        """Attempts that failed, by action name."""

    def poll(self, key: str, action: LifecycleAction, context: ActionContext) -> AttemptOutcome:
        attempt = self._attempts.get(key)
        if attempt is None:
            timing = self.timings.get(action.name, ActionTiming())
            fails = self.rng.random() < timing.failure_rate
            self._attempts[key] = Attempt(self.clock.seconds + seconds(timing.duration), fails)
            self.started[action.name] += 1
            return AttemptOutcome(AttemptState.STARTED)
        if self.clock.seconds < attempt.ends:
            return AttemptOutcome(AttemptState.RUNNING)
        del self._attempts[key]
        if attempt.fails:
            self.failed[action.name] += 1
            return AttemptOutcome(AttemptState.FAILED, f"{action.name} failed (simulated)")
        return AttemptOutcome(AttemptState.SUCCEEDED)

    def running(self, key: str) -> bool:
        return key in self._attempts

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._attempts if k.startswith(prefix)]:
            del self._attempts[key]
