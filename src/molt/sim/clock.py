"""The simulator's virtual time: a clock that only moves when the event heap says so.

``VirtualClock`` satisfies the ``Clock`` port (wall time from a fixed start, monotonic
time in seconds since the start). ``EventHeap`` holds what happens next, ordered by time
then by insertion, so a run is deterministic; ``run_until`` pops events and moves the
clock to each one. Nothing here ever waits on the wall clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import datetime, timedelta


class VirtualClock:
    """Wall and monotonic time, moved forward by the event heap only."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.seconds = 0.0
        self._now = start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self.seconds

    def move_to(self, seconds: float) -> None:
        """Move to ``seconds`` since the start; time never runs backwards."""
        if seconds < self.seconds:
            raise ValueError(f"time cannot run backwards ({seconds} < {self.seconds})")
        if seconds != self.seconds:
            self.seconds = seconds
            self._now = self.start + timedelta(seconds=seconds)


Action = Callable[[], None]


class EventHeap:
    """Actions due at points of virtual time; keyed actions are kept once, at their earliest.

    ``at``/``after`` schedule an action. ``keyed`` schedules an action under a key (a
    reconcile of ``node/x``, say): a key already due no later keeps its slot, one due later
    moves earlier. That is the work queue's deduplication, on a virtual clock.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, str | None, Action]] = []
        self._seq = 0
        self._due: dict[str, float] = {}
        self.processed = 0

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, seconds: float, action: Action) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(seconds, self.clock.seconds), self._seq, None, action))

    def after(self, delay: float, action: Action) -> None:
        self.at(self.clock.seconds + max(0.0, delay), action)

    def keyed(self, key: str, delay: float, action: Action) -> None:
        when = self.clock.seconds + max(0.0, delay)
        due = self._due.get(key)
        if due is not None and due <= when:
            return
        self._due[key] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key, action))

    def is_due(self, key: str) -> bool:
        return key in self._due

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, end: float, on_step: Callable[[float], None] | None = None) -> None:
        """Run every action due at or before ``end``, then leave the clock at ``end``."""
        heap = self._heap
        due = self._due
        while heap and heap[0][0] <= end:
            when, _, key, action = heapq.heappop(heap)
            if key is not None:
                if due.get(key) != when:
                    continue  # superseded by an earlier slot for the same key
                del due[key]
            self.clock.move_to(when)
            self.processed += 1
            action()
            if on_step is not None:
                on_step(when)
        self.clock.move_to(max(end, self.clock.seconds))
