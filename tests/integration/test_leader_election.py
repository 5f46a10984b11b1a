"""Leader election against the sandbox's real API server: one leader among candidates,
takeover after a crash only once the lease has expired, prompt handover on release, and
a fence that stops passing by the clock alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes_asyncio import client

from molt.kube.leader import ACQUIRE_JITTER, Fence, LeaderElector, NotLeaderError, _MicroTime
from tests.support.waiting import eventually

NAMESPACE = "default"
LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5
# The longest a candidate sleeps between attempts.
MAX_RETRY = RETRY_PERIOD * (1 + ACQUIRE_JITTER)


@pytest.fixture
def lease_name() -> str:
    return f"molt-test-{uuid.uuid4().hex[:8]}"


def _elector(
    kube: client.ApiClient,
    lease: str,
    identity: str,
    clock: Callable[[], float] = time.monotonic,
) -> LeaderElector:
    return LeaderElector(
        kube,
        name=lease,
        namespace=NAMESPACE,
        identity=identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
        clock=clock,
    )


async def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _lead(elector: LeaderElector, within: float = 5.0) -> float:
    """Wait until ``elector`` leads; return how long that took."""
    start = time.monotonic()
    await asyncio.wait_for(elector.fence.wait_until_leader(), timeout=within)
    return time.monotonic() - start


async def _read(kube: client.ApiClient, lease: str) -> client.V1Lease:
    return await client.CoordinationV1Api(kube).read_namespaced_lease(lease, NAMESPACE)


async def test_exactly_one_of_two_candidates_leads(kube: client.ApiClient, lease_name: str) -> None:
    a = _elector(kube, lease_name, "replica-a")
    b = _elector(kube, lease_name, "replica-b")
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        winner = await eventually(
            lambda: _either_leads(a, b), within=5, interval=0.05, what="a leader"
        )
        assert winner is not None
        loser = b if winner is a else a
        assert winner.fence.is_leader
        assert not loser.fence.is_leader
        winner.fence.check()
        with pytest.raises(NotLeaderError):
            loser.fence.check()
        # Several renewals later it is still the same single leader.
        deadline = time.monotonic() + 3 * RETRY_PERIOD
        while time.monotonic() < deadline:
            assert winner.fence.is_leader
            assert not loser.fence.is_leader
            await asyncio.sleep(0.05)
        assert (await _read(kube, lease_name)).spec.holder_identity == winner.identity
    finally:
        await _cancel(tasks)


async def _either_leads(a: LeaderElector, b: LeaderElector) -> LeaderElector | None:
    if a.fence.is_leader:
        return a
    if b.fence.is_leader:
        return b
    return None


async def test_crashed_leader_is_replaced_after_lease_expires(
    kube: client.ApiClient, lease_name: str
) -> None:
    a = _elector(kube, lease_name, "replica-a")
    b = _elector(kube, lease_name, "replica-b")
    task_a = asyncio.create_task(a.run())
    tasks = [task_a]
    try:
        await _lead(a)
        tasks.append(asyncio.create_task(b.run()))
        await asyncio.sleep(2 * RETRY_PERIOD)  # b is following a's renewals
        assert not b.fence.is_leader

        await _cancel([task_a])  # a crash: no release, the lease still names a
        assert (await _read(kube, lease_name)).spec.holder_identity == "replica-a"
        took = await _lead(b, within=LEASE_DURATION + 2 * MAX_RETRY + 1.0)

        # b waited out the lease from the last renewal it saw, which was at most one
        # retry period before the crash; it never judged expiry early.
        assert took >= LEASE_DURATION - MAX_RETRY - 0.1, took
        assert took <= LEASE_DURATION + 2 * MAX_RETRY + 0.5, took
        with pytest.raises(NotLeaderError):
            a.fence.check()
        assert a.fence.lost.is_set()
        assert not a.fence.is_leader
        spec = (await _read(kube, lease_name)).spec
        assert spec.holder_identity == "replica-b"
        assert spec.lease_transitions == 1
    finally:
        await _cancel(tasks)


async def test_released_lease_is_taken_over_within_two_retry_periods(
    kube: client.ApiClient, lease_name: str
) -> None:
    a = _elector(kube, lease_name, "replica-a")
    b = _elector(kube, lease_name, "replica-b")
    task_a = asyncio.create_task(a.run())
    tasks = [task_a]
    try:
        await _lead(a)
        tasks.append(asyncio.create_task(b.run()))
        await asyncio.sleep(RETRY_PERIOD)

        await _cancel([task_a])
        await a.release()
        assert a.fence.lost.is_set()
        with pytest.raises(NotLeaderError):
            a.fence.check()
        took = await _lead(b, within=LEASE_DURATION)
        assert took <= 2 * MAX_RETRY, took
        spec = (await _read(kube, lease_name)).spec
        assert spec.holder_identity == "replica-b"
        assert spec.lease_transitions == 1
    finally:
        await _cancel(tasks)


async def test_lease_shows_holder_and_utc_times(kube: client.ApiClient, lease_name: str) -> None:
    a = _elector(kube, lease_name, "replica-a")
    tasks = [asyncio.create_task(a.run())]
    try:
        await _lead(a)
        first = (await _read(kube, lease_name)).spec
        assert first.holder_identity == "replica-a"
        assert first.lease_duration_seconds == int(LEASE_DURATION)
        assert first.lease_transitions == 0
        for stamp in (first.acquire_time, first.renew_time):
            assert stamp.utcoffset() == timedelta(0)
            assert abs(datetime.now(UTC) - stamp) < timedelta(seconds=30)

        async def renewed() -> client.V1LeaseSpec | None:
            spec = (await _read(kube, lease_name)).spec
            return spec if spec.renew_time > first.renew_time else None

        later = await eventually(renewed, within=3 * RETRY_PERIOD, interval=0.1, what="renewal")
        assert later is not None
        assert later.holder_identity == "replica-a"
        assert later.acquire_time == first.acquire_time
        assert later.lease_transitions == 0

        await _cancel(tasks)
        await a.release()
        released = (await _read(kube, lease_name)).spec
        assert not released.holder_identity
        assert released.renew_time > later.renew_time
    finally:
        await _cancel(tasks)


async def test_fence_expires_by_the_clock_before_the_loop_notices(
    kube: client.ApiClient, lease_name: str
) -> None:
    offset = 0.0

    def clock() -> float:
        return time.monotonic() + offset

    a = _elector(kube, lease_name, "replica-a", clock=clock)
    tasks = [asyncio.create_task(a.run())]
    try:
        await _lead(a)
        a.fence.check()
        # Jump past the renew deadline without yielding: the election loop cannot have
        # run, yet the fence already refuses.
        offset = RENEW_DEADLINE + 0.01
        assert not a.fence.is_leader
        with pytest.raises(NotLeaderError, match="not renewed in time"):
            a.fence.check()
        # The loop then steps down on its next tick and, still named on the lease,
        # renews it again.
        await asyncio.wait_for(a.fence.lost.wait(), timeout=2 * RETRY_PERIOD)
        await _lead(a)
        a.fence.check()
    finally:
        await _cancel(tasks)


async def test_always_fence_passes() -> None:
    fence = Fence.always()
    fence.check()
    assert fence.is_leader
    await asyncio.wait_for(fence.wait_until_leader(), timeout=1)
    assert not fence.lost.is_set()


async def test_times_with_zero_microseconds_are_accepted(
    kube: client.ApiClient, lease_name: str
) -> None:
    # isoformat() drops a zero fraction, which the API server's MicroTime parser rejects.
    stamp = _MicroTime.of(datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC))
    body = client.V1Lease(
        metadata=client.V1ObjectMeta(name=lease_name),
        spec=client.V1LeaseSpec(holder_identity="x", acquire_time=stamp, renew_time=stamp),
    )
    created = await client.CoordinationV1Api(kube).create_namespaced_lease(NAMESPACE, body)
    assert created.spec.renew_time == stamp
