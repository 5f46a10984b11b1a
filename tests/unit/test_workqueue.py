"""The work queue hands each key to one worker at a time, delays and backs off as told."""

import asyncio
import time

import pytest

from molt.controllers.workqueue import QueueShutDown, WorkQueue


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unlimited_bucket(
    clock: FakeClock, *, base_delay: float = 0.5, max_delay: float = 300.0
) -> WorkQueue[str]:
    """A queue whose token bucket never delays, so only the per-key backoff shows."""
    return WorkQueue(
        clock=clock, base_delay=base_delay, max_delay=max_delay, rate=1e9, burst=1_000_000
    )


async def test_a_key_already_waiting_is_queued_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("node/a")
    queue.add("node/a")
    queue.add("node/b")

    assert len(queue) == 2
    assert await queue.get() == "node/a"
    assert await queue.get() == "node/b"
    assert len(queue) == 0


async def test_a_key_added_while_processing_is_not_handed_to_a_second_worker() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("node/a")
    assert await queue.get() == "node/a"

    queue.add("node/a")
    second_worker = asyncio.create_task(queue.get())
    await asyncio.sleep(0.02)

    assert len(queue) == 0
    assert not second_worker.done()
    second_worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second_worker


async def test_a_key_added_while_processing_is_processed_again_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("node/a")
    assert await queue.get() == "node/a"
    queue.add("node/a")
    second_worker = asyncio.create_task(queue.get())
    await asyncio.sleep(0)

    queue.done("node/a")

    assert await asyncio.wait_for(second_worker, timeout=1) == "node/a"
    assert len(queue) == 0


async def test_done_without_a_re_add_does_not_queue_the_key_again() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("node/a")
    await queue.get()

    queue.done("node/a")

    assert len(queue) == 0


async def test_add_after_wakes_a_blocked_get_no_sooner_than_the_delay() -> None:
    queue: WorkQueue[str] = WorkQueue()
    worker = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    started = time.monotonic()

    queue.add_after("node/a", 0.05)

    assert len(queue) == 0
    assert queue.pending_delayed() == 1
    assert await asyncio.wait_for(worker, timeout=1) == "node/a"
    assert time.monotonic() - started >= 0.05
    assert queue.pending_delayed() == 0


async def test_add_after_with_no_delay_adds_now() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock())

    queue.add_after("node/a", 0)

    assert len(queue) == 1
    assert queue.pending_delayed() == 0


async def test_an_earlier_add_after_replaces_a_later_one() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("node/a", 10)
    queue.add_after("node/a", 1)

    clock.advance(1)

    assert len(queue) == 1
    assert queue.pending_delayed() == 0


async def test_a_later_add_after_does_not_postpone_an_earlier_one() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("node/a", 1)
    queue.add_after("node/a", 10)

    clock.advance(0.5)
    assert len(queue) == 0
    clock.advance(0.5)
    assert len(queue) == 1
    assert await queue.get() == "node/a"
    queue.done("node/a")

    clock.advance(10)
    assert len(queue) == 0


async def test_backoff_doubles_with_each_failure() -> None:
    queue = unlimited_bucket(FakeClock(), base_delay=0.5, max_delay=300.0)

    delays = [queue.add_rate_limited("node/a") for _ in range(4)]

    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert queue.failures("node/a") == 4
    assert queue.next_delay("node/a") == 8.0


async def test_backoff_is_capped_at_max_delay() -> None:
    queue = unlimited_bucket(FakeClock(), base_delay=1.0, max_delay=5.0)

    delays = [queue.add_rate_limited("node/a") for _ in range(5)]

    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_backoff_is_tracked_per_key() -> None:
    queue = unlimited_bucket(FakeClock(), base_delay=0.5)
    queue.add_rate_limited("node/a")
    queue.add_rate_limited("node/a")

    assert queue.add_rate_limited("node/b") == 0.5
    assert queue.failures("node/a") == 2
    assert queue.failures("node/b") == 1


async def test_forget_resets_the_backoff() -> None:
    queue = unlimited_bucket(FakeClock(), base_delay=0.5)
    for _ in range(3):
        queue.add_rate_limited("node/a")

    queue.forget("node/a")

    assert queue.failures("node/a") == 0
    assert queue.next_delay("node/a") == 0.5
    assert queue.add_rate_limited("node/a") == 0.5


async def test_next_delay_does_not_count_a_failure_or_spend_a_token() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock(), base_delay=0.0, rate=10.0, burst=1)

    assert queue.next_delay("node/a") == 0.0
    assert queue.next_delay("node/a") == 0.0
    assert queue.failures("node/a") == 0
    assert queue.add_rate_limited("node/a") == 0.0


async def test_the_token_bucket_delays_the_third_key_of_a_burst() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock(), base_delay=0.0, rate=10.0, burst=2)

    delays = [queue.add_rate_limited(key) for key in ("node/a", "node/b", "node/c")]

    assert delays == [0.0, 0.0, pytest.approx(0.1)]
    assert len(queue) == 2
    assert queue.pending_delayed() == 1


async def test_the_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock, base_delay=0.0, rate=10.0, burst=2)
    for key in ("node/a", "node/b", "node/c"):
        queue.add_rate_limited(key)

    clock.advance(0.2)

    assert queue.add_rate_limited("node/d") == 0.0
    assert queue.add_rate_limited("node/e") == pytest.approx(0.1)


async def test_a_rate_limited_add_waits_for_the_longer_of_backoff_and_bucket() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock(), base_delay=0.05, rate=10.0, burst=1)

    assert queue.add_rate_limited("node/a") == 0.05
    assert queue.add_rate_limited("node/b") == pytest.approx(0.1)


async def test_shut_down_wakes_a_blocked_get_with_queue_shut_down() -> None:
    queue: WorkQueue[str] = WorkQueue()
    worker = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not worker.done()

    queue.shut_down()

    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(worker, timeout=1)


async def test_keys_ready_at_shut_down_are_still_handed_out_then_get_raises() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("node/a")
    queue.add_after("node/b", 60)

    queue.shut_down()
    queue.add("node/c")

    assert await queue.get() == "node/a"
    assert queue.pending_delayed() == 0
    with pytest.raises(QueueShutDown):
        await queue.get()
