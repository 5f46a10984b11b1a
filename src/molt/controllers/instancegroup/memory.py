"""What the instance-group controller remembers about a group between reconciles.

The durable part (current and previous revision with their templates, degraded
revisions, failure counts, cells resting after a capacity error) is read back from the
group's status after a restart; the rest (each cell's launches and failures within the
window, which nodes have been seen Ready, when a degraded revision is tried again) is
rebuilt from what the provider and the caches report next.

Launches and failures are kept per revision and cell, keyed by the launch (the instance
ID, or the provider's failed launch), so one launch is counted once however many times
it is seen or fails.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from molt.api.instancegroup import HostInit, InstanceGroupStatus, Template
from molt.policy.age import parse_rfc3339
from molt.policy.cells import CellKey
from molt.policy.health import CellRecord

Record = dict[str, dict[CellKey, dict[str, datetime]]]
"""Revision -> cell -> launch key -> when."""


@dataclass
class GroupMemory:
    """One group's rollout history and health record."""

    current: str | None = None
    """The revision capacity belongs to (the target)."""
    previous: str | None = None
    """The revision before it, to roll back to."""
    templates: dict[str, Template] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)
    """Degraded revision -> why."""
    degraded_until: dict[str, datetime] = field(default_factory=dict)
    """Degraded revision -> when it is tried again."""
    times_degraded: Counter[str] = field(default_factory=Counter)
    failures: Record = field(default_factory=dict)
    launches: Record = field(default_factory=dict)
    failure_totals: Counter[str] = field(default_factory=Counter)
    counted: dict[str, datetime] = field(default_factory=dict)
    """Provider failures already counted (the provider lists recent ones every time)."""
    resting: dict[CellKey, datetime] = field(default_factory=dict)
    """Cells out of capacity -> until when they are left alone."""
    short_at: dict[CellKey, datetime] = field(default_factory=dict)
    """Cells -> their latest capacity error, until a launch there succeeds."""
    strikes: Counter[CellKey] = field(default_factory=Counter)
    """Capacity rests in a row without a successful launch between them."""
    unhealthy: dict[tuple[str, CellKey], datetime] = field(default_factory=dict)
    """(revision, cell) resting after a failure -> until when. Per revision: a broken
    template's failures in a zone do not keep the good revision out of it."""
    seen_ready: set[str] = field(default_factory=set)
    excused: set[str] = field(default_factory=set)
    """Nodes whose NotReady was reported as an infrastructure event."""
    struck: set[str] = field(default_factory=set)
    """NotReady nodes struck by an infrastructure event, until they are Ready again."""
    missing: Counter[str] = field(default_factory=Counter)
    """Nodes whose instance the provider did not list, by consecutive observations."""
    host_init: dict[str, list[float]] = field(default_factory=dict)
    """Revision -> launch-to-Ready seconds of its latest launches this process saw."""
    host_init_reported: dict[str, HostInit] = field(default_factory=dict)
    """Revision -> the figures the status held at start, shown until new launches come."""

    @classmethod
    def from_status(cls, status: InstanceGroupStatus | None) -> GroupMemory:
        memory = cls()
        if status is None:
            return memory
        memory.current = status.current_revision
        for revision in status.revisions:
            if revision.template is not None:
                memory.templates[revision.name] = revision.template
            if revision.state == "Degraded":
                memory.degraded[revision.name] = revision.message or "degraded"
                memory.times_degraded[revision.name] = 1
            if revision.state == "Previous":
                memory.previous = revision.name
            memory.failure_totals[revision.name] = revision.launch_failures
            if revision.host_init is not None:
                memory.host_init_reported[revision.name] = revision.host_init
        for cell in status.cells:
            if cell.unavailable_until:
                try:
                    until = parse_rfc3339(cell.unavailable_until)
                except ValueError:
                    continue
                memory.resting[CellKey(cell.zone, cell.capacity_type)] = until
        return memory

    def follow_template(self, revision: str, template: Template) -> str:
        """Note the template's revision and return the revision capacity belongs to.

        A new healthy revision becomes current and the old current becomes previous. A
        degraded one hands capacity back to the previous revision when its template is
        known; with nothing to return to, the degraded revision stays current (frozen).
        """
        self.templates[revision] = template
        if revision not in self.degraded:
            if self.current != revision:
                if self.current is not None and self.current not in self.degraded:
                    self.previous = self.current
                self.current = revision
            return revision
        if self.can_roll_back(revision):
            assert self.previous is not None
            self.current = self.previous
        return self.current or revision

    def can_roll_back(self, revision: str) -> bool:
        return (
            self.previous is not None
            and self.previous != revision
            and self.previous in self.templates
            and self.previous not in self.degraded
        )

    def record_launch(self, revision: str, cell: CellKey, key: str, at: datetime) -> None:
        self.launches.setdefault(revision, {}).setdefault(cell, {}).setdefault(key, at)

    def record_failure(self, revision: str, cell: CellKey, key: str, at: datetime) -> bool:
        """Count a failed launch once; False if this launch had already failed."""
        seen = self.failures.setdefault(revision, {}).setdefault(cell, {})
        if key in seen:
            return False
        seen[key] = at
        self.record_launch(revision, cell, key, at)
        self.failure_totals[revision] += 1
        return True

    def has_failed(self, revision: str, cell: CellKey, key: str) -> bool:
        return key in self.failures.get(revision, {}).get(cell, {})

    def cell_records(
        self, revision: str, now: datetime, window: timedelta
    ) -> dict[CellKey, CellRecord]:
        """Each cell's failures and launches within the window (older ones forgotten)."""
        for record in (self.failures, self.launches):
            cells = record.get(revision, {})
            for cell, keys in list(cells.items()):
                kept = {k: at for k, at in keys.items() if now - at <= window}
                if kept:
                    cells[cell] = kept
                else:
                    del cells[cell]
        for record in (self.failures, self.launches):
            if not record.get(revision, True):
                del record[revision]  # nothing left of it within the window
        failures = self.failures.get(revision, {})
        launches = self.launches.get(revision, {})
        return {
            cell: CellRecord(
                len(failures.get(cell, {})),
                len(set(launches.get(cell, {})) | set(failures.get(cell, {}))),
            )
            for cell in set(failures) | set(launches)
        }

    def forget_health(self, revision: str) -> None:
        """A fresh start for a revision tried again: its old failures are not held against it."""
        self.failures.pop(revision, None)
        self.launches.pop(revision, None)
        for key in [k for k in self.unhealthy if k[0] == revision]:
            del self.unhealthy[key]

    def rest(self, cell: CellKey, until: datetime) -> None:
        self.resting[cell] = max(until, self.resting.get(cell, until))

    def rest_short(
        self, cell: CellKey, now: datetime, cooldown: timedelta, cap: timedelta
    ) -> datetime:
        """Rest a cell out of capacity: for the cooldown, doubling with each rest in a row
        (at most ``cap``). Each rest ends in a replacement launched there that fails and
        lands elsewhere, so a zone out for hours would otherwise cost one wasted
        replacement per cooldown."""
        if cell not in self.resting:  # errors reported during a rest are the same strike
            self.strikes[cell] += 1
        self.short_at[cell] = now
        backoff: timedelta = cooldown * (1 << min(self.strikes[cell] - 1, 16))
        until = now + min(backoff, max(cap, cooldown))
        self.rest(cell, until)
        return until

    def launched_in(self, cell: CellKey, at: datetime) -> None:
        """A launch in ``cell`` succeeded: its next capacity rest is the plain cooldown."""
        short = self.short_at.get(cell)
        if short is not None and at > short:
            del self.short_at[cell]
            self.strikes.pop(cell, None)

    def rest_unhealthy(self, revision: str, cell: CellKey, until: datetime) -> None:
        key = (revision, cell)
        self.unhealthy[key] = max(until, self.unhealthy.get(key, until))

    def rests_for(self, revision: str | None, now: datetime) -> dict[CellKey, datetime]:
        """Cells ``revision`` may not launch in now, and until when: out of capacity, or
        resting after its own failures there."""
        for cell in [c for c, until in self.resting.items() if until <= now]:
            del self.resting[cell]
        for key in [k for k, until in self.unhealthy.items() if until <= now]:
            del self.unhealthy[key]
        rests = dict(self.resting)
        for (rev, cell), until in self.unhealthy.items():
            if rev == revision:
                rests[cell] = max(until, rests.get(cell, until))
        return rests

    def resting_cells(self, now: datetime, revision: str | None = None) -> frozenset[CellKey]:
        return frozenset(self.rests_for(revision, now))

    def forget_counted_before(self, cutoff: datetime) -> None:
        self.counted = {key: at for key, at in self.counted.items() if at >= cutoff}

    def next_wake(self) -> datetime | None:
        """The soonest a rest or a degraded verdict runs out."""
        times = [*self.resting.values(), *self.unhealthy.values(), *self.degraded_until.values()]
        return min(times) if times else None
