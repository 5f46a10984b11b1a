"""The simulator's virtual clock and event heap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from molt.sim.clock import EventHeap, VirtualClock
from molt.sim.drive import SuspendedError, complete

pytestmark = pytest.mark.unit

START = datetime(2026, 1, 5, tzinfo=UTC)


def test_events_run_in_time_order_and_move_the_clock() -> None:
    clock = VirtualClock(START)
    heap = EventHeap(clock)
    seen: list[tuple[str, float]] = []
    heap.at(30, lambda: seen.append(("b", clock.monotonic())))
    heap.at(10, lambda: seen.append(("a", clock.monotonic())))
    heap.run_until(100)
    assert seen == [("a", 10), ("b", 30)]
    assert clock.now() == START + timedelta(seconds=100)


def test_a_keyed_event_keeps_its_earliest_slot() -> None:
    clock = VirtualClock(START)
    heap = EventHeap(clock)
    runs: list[float] = []
    heap.keyed("node/a", 50, lambda: runs.append(clock.seconds))
    heap.keyed("node/a", 20, lambda: runs.append(clock.seconds))
    heap.keyed("node/a", 80, lambda: runs.append(clock.seconds))
    heap.run_until(100)
    assert runs == [20]


def test_time_never_runs_backwards() -> None:
    clock = VirtualClock(START)
    clock.move_to(5)
    with pytest.raises(ValueError, match="backwards"):
        clock.move_to(4)


def test_a_reconcile_that_waits_on_real_time_is_refused() -> None:
    import asyncio

    async def sleeps() -> None:
        await asyncio.sleep(0)  # yields to a loop, as any real wait would

    async def answers() -> int:
        return 7

    assert complete(answers()) == 7
    with pytest.raises(SuspendedError, match="must not wait"):
        complete(sleeps())
