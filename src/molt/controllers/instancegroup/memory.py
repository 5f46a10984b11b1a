"""What the instance-group controller remembers about a group between reconciles.

The durable part (current and previous revision with their templates, degraded
revisions, failure counts, cells resting after a capacity error) is read back from the
group's status after a restart; the rest (failure times within the window, which
provider failures were already counted, which nodes have been seen Ready) is rebuilt
from what the provider and the caches report next.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from molt.api.instancegroup import InstanceGroupStatus, Template
from molt.policy.age import parse_rfc3339
from molt.policy.cells import CellKey


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
    failure_times: dict[str, list[datetime]] = field(default_factory=dict)
    failure_totals: Counter[str] = field(default_factory=Counter)
    counted: set[tuple[str, datetime, str]] = field(default_factory=set)
    """Provider failures already counted: (cell, time, message)."""
    resting: dict[CellKey, datetime] = field(default_factory=dict)
    """Cells out of capacity -> until when they are left alone."""
    seen_ready: set[str] = field(default_factory=set)
    flapped: set[str] = field(default_factory=set)
    missing: Counter[str] = field(default_factory=Counter)
    """Nodes whose instance the provider did not list, by consecutive observations."""

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
            if revision.state == "Previous":
                memory.previous = revision.name
            memory.failure_totals[revision.name] = revision.launch_failures
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

    def record_failure(self, revision: str, at: datetime) -> None:
        self.failure_times.setdefault(revision, []).append(at)
        self.failure_totals[revision] += 1

    def failures_within(self, revision: str, now: datetime, window: timedelta) -> int:
        times = [t for t in self.failure_times.get(revision, []) if now - t <= window]
        self.failure_times[revision] = times
        return len(times)

    def rest(self, cell: CellKey, until: datetime) -> None:
        self.resting[cell] = max(until, self.resting.get(cell, until))

    def resting_cells(self, now: datetime) -> frozenset[CellKey]:
        for cell in [c for c, until in self.resting.items() if until <= now]:
            del self.resting[cell]
        return frozenset(self.resting)

    def forget_counted_before(self, cutoff: datetime) -> None:
        self.counted = {key for key in self.counted if key[1] >= cutoff}
