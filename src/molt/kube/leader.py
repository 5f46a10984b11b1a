"""Lease-based leader election with fencing: this module owns the ``coordination.k8s.io/v1``
Lease that decides which Molt replica may act, the loop that acquires, renews and gives
it up (``LeaderElector``), and the ``Fence`` that every write path checks before acting,
so that a replica which has lost, or can no longer prove, its lease stops writing even if
its election loop has not yet noticed.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from molt.ports import NotLeaderError

# Why not kubernetes_asyncio's LeaseLock/LeaderElection: it stores times as naive strings
# (dropping the zone), logs and swallows API errors (a 409 from a lost race looks like any
# other failure), judges expiry by wall-clock timestamps, and has no fencing hook. This is
# client-go's algorithm instead, on CoordinationV1Api directly.

log = structlog.get_logger(__name__)

ACQUIRE_JITTER = 0.2
"""Candidates wait retry_period * (1 + up to this fraction) between attempts to acquire."""

_WAIT_POLL = 0.05
"""How often ``wait_until_leader`` re-checks while the elector is leading but the lease
has already run out by the clock (the elector is about to step down)."""


class _MicroTime(datetime):
    """An aware UTC datetime that always serializes with six fractional digits.

    The API server parses ``metav1.MicroTime`` with the exact layout
    ``2006-01-02T15:04:05.000000Z07:00``. kubernetes_asyncio serializes datetimes with
    ``isoformat()``, which drops the fraction when the microsecond is 0, and the server
    then rejects the whole Lease with a 400 (one write in a million, at random).
    """

    def isoformat(self, sep: str = "T", timespec: str = "microseconds") -> str:
        return super().isoformat(sep, timespec)

    @classmethod
    def of(cls, value: datetime) -> _MicroTime:
        if value.tzinfo is None:  # the API's times are UTC
            value = value.replace(tzinfo=UTC)
        utc = value.astimezone(UTC)
        return cls(
            utc.year,
            utc.month,
            utc.day,
            utc.hour,
            utc.minute,
            utc.second,
            utc.microsecond,
            tzinfo=UTC,
        )

    @classmethod
    def now_utc(cls) -> _MicroTime:
        return cls.of(datetime.now(UTC))


class Fence:
    """Whether this replica may act now, judged by the monotonic clock.

    Leading is valid until ``last_successful_renew_monotonic + lease_duration -
    safety_margin``, where the renew time is taken when the successful request was *sent*
    (other candidates can only have observed it later, so this errs towards stepping down
    early). ``check()`` goes false at that instant by itself, without waiting for the
    election loop to run. ``lost`` is set whenever leadership ends (and cleared when it is
    acquired again).
    """

    def __init__(
        self,
        *,
        lease_duration: float,
        safety_margin: float,
        clock: Callable[[], float] = time.monotonic,
        always: bool = False,
    ) -> None:
        if not always and not 0 <= safety_margin < lease_duration:
            raise ValueError("safety_margin must be in [0, lease_duration)")
        self._valid_for = lease_duration - safety_margin
        self._clock = clock
        self._always = always
        self._leading = always
        self.last_successful_renew_monotonic: float | None = None
        self._acquired = asyncio.Event()
        if always:
            self._acquired.set()
        self.lost = asyncio.Event()

    @classmethod
    def always(cls) -> Fence:
        """A fence that always passes: for running with leader election turned off."""
        return cls(lease_duration=math.inf, safety_margin=0.0, always=True)

    @property
    def valid_until(self) -> float:
        """The monotonic time at which the current lease stops being trusted."""
        if self._always:
            return math.inf
        if not self._leading or self.last_successful_renew_monotonic is None:
            return -math.inf
        return self.last_successful_renew_monotonic + self._valid_for

    @property
    def is_leader(self) -> bool:
        return self._always or (self._leading and self._clock() < self.valid_until)

    def check(self) -> None:
        """Raise ``NotLeaderError`` unless this replica leads on a still-valid lease."""
        if self._always:
            return
        if not self._leading:
            raise NotLeaderError("not the leader")
        now = self._clock()
        if now >= self.valid_until:
            raise NotLeaderError(
                f"lease not renewed in time (expired {now - self.valid_until:.3f}s ago)"
            )

    async def wait_until_leader(self) -> None:
        """Return once this replica leads on a valid lease."""
        while not self.is_leader:
            await self._acquired.wait()
            if not self.is_leader:
                await asyncio.sleep(_WAIT_POLL)

    # -- driven by LeaderElector --------------------------------------------------------

    def _renewed(self, sent_at: float) -> bool:
        """Record a successful acquire or renew; return whether leadership is new."""
        became = not self._leading
        self.last_successful_renew_monotonic = sent_at
        self._leading = True
        self.lost.clear()
        self._acquired.set()
        return became

    def _step_down(self) -> bool:
        """Stop leading; return whether this replica was leading."""
        was = self._leading
        self._leading = False
        self._acquired.clear()
        if was:
            self.lost.set()
        return was


@dataclass(frozen=True)
class _Record:
    """The election record in a Lease's spec; a change to it proves the holder is alive."""

    holder: str
    lease_duration_seconds: int | None
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int | None

    @classmethod
    def of(cls, spec: client.V1LeaseSpec | None) -> _Record:
        if spec is None:
            return cls("", None, None, None, None)
        return cls(
            holder=spec.holder_identity or "",
            lease_duration_seconds=spec.lease_duration_seconds,
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            transitions=spec.lease_transitions,
        )


class _Outcome(enum.Enum):
    HOLDING = "holding"  # we acquired or renewed
    HELD = "held"  # someone else holds an unexpired lease
    FAILED = "failed"  # error, timeout or lost write race; try again


class LeaderElector:
    """Campaign for, hold and release one Lease; ``fence`` tells the rest of Molt whether
    it may act.

    Timing follows client-go: ``lease_duration`` is how long a candidate waits, after it
    last saw the record change, before taking the lease over; the leader must renew within
    ``renew_deadline`` of its last successful renewal or step down; every attempt is
    ``retry_period`` apart. The fence's safety margin is ``lease_duration -
    renew_deadline``, so it stops passing when the leader would step down.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        name: str = "molt-controller",
        namespace: str = "kube-system",
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._api = client.CoordinationV1Api(api)
        self._lease_seconds = max(1, math.ceil(lease_duration))
        self.fence = Fence(
            lease_duration=lease_duration,
            safety_margin=lease_duration - renew_deadline,
            clock=clock,
        )
        self._observed = _Record.of(None)
        self._observed_at = -math.inf
        self._running = False
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign and lead forever; cancel to stop (then ``release()`` to hand over)."""
        if self._running:
            raise RuntimeError("LeaderElector.run() is already running")
        self._running = True
        self._log.info("leader.candidate")
        try:
            while True:
                await self._acquire()
                await self._lead()
        finally:
            self._running = False
            self._step_down("elector stopped", expected=True)

    async def _acquire(self) -> None:
        while True:
            if await self._attempt(budget=self.renew_deadline) is _Outcome.HOLDING:
                return
            await asyncio.sleep(self.retry_period * (1 + random.random() * ACQUIRE_JITTER))

    async def _lead(self) -> None:
        """Renew every retry_period until a renewal misses the deadline or we are ousted."""
        delay = self.retry_period
        while True:
            await asyncio.sleep(delay)
            last = self.fence.last_successful_renew_monotonic
            assert last is not None
            remaining = last + self.renew_deadline - self._clock()
            if remaining <= 0:
                self._step_down(f"no successful renewal within {self.renew_deadline}s")
                return
            outcome = await self._attempt(budget=remaining)
            if outcome is _Outcome.HELD:
                self._step_down(f"lease taken over by {self._observed.holder!r}")
                return
            if outcome is _Outcome.HOLDING:
                delay = self.retry_period
            else:  # retry, but wake at the deadline to step down on time
                remaining = last + self.renew_deadline - self._clock()
                delay = max(0.0, min(self.retry_period, remaining))

    def _step_down(self, reason: str, *, expected: bool = False) -> None:
        if self.fence._step_down():
            (self._log.info if expected else self._log.warning)("leader.lost", reason=reason)

    # -- one attempt ------------------------------------------------------------------

    async def _attempt(self, *, budget: float) -> _Outcome:
        """One read-then-write, bounded by ``budget`` seconds in all."""
        try:
            async with asyncio.timeout(budget):
                return await self._try_acquire_or_renew(budget)
        except TimeoutError:
            self._log.warning("leader.attempt_timeout", budget=round(budget, 3))
            return _Outcome.FAILED

    async def _try_acquire_or_renew(self, request_timeout: float) -> _Outcome:
        sent_at = self._clock()
        now = _MicroTime.now_utc()
        try:
            lease = await self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=request_timeout
            )
        except ApiException as error:
            if error.status == 404:
                return await self._create(now, sent_at, request_timeout)
            self._log.warning("leader.read_failed", status=error.status, reason=error.reason)
            return _Outcome.FAILED
        except (aiohttp.ClientError, OSError) as error:
            self._log.warning("leader.read_failed", error=repr(error))
            return _Outcome.FAILED

        spec = lease.spec or client.V1LeaseSpec()
        record = _Record.of(spec)
        if record != self._observed:
            if record.holder != self._observed.holder and record.holder != self.identity:
                self._log.info("leader.observed", holder=record.holder or None)
            self._observed = record
            self._observed_at = sent_at
        ours = record.holder == self.identity
        if record.holder and not ours:
            # Expiry as client-go judges it: the record has not changed for the lease's
            # duration on *our* monotonic clock. renewTime is never compared with our
            # wall clock, so clock skew between replicas cannot cause a takeover.
            duration = record.lease_duration_seconds or self._lease_seconds
            if self._clock() < self._observed_at + duration:
                return _Outcome.HELD

        lease.spec = client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self._lease_seconds,
            acquire_time=_MicroTime.of(spec.acquire_time) if ours and spec.acquire_time else now,
            renew_time=now,
            lease_transitions=(spec.lease_transitions or 0) + (0 if ours else 1),
            preferred_holder=spec.preferred_holder,
            strategy=spec.strategy,
        )
        try:
            # Optimistic concurrency: the body carries the resourceVersion we read, so a
            # concurrent writer makes this a 409 instead of a silent overwrite.
            written = await self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=request_timeout
            )
        except ApiException as error:
            if error.status == 409:
                self._log.info("leader.conflict", previous_holder=record.holder or None)
            else:
                self._log.warning("leader.write_failed", status=error.status, reason=error.reason)
            return _Outcome.FAILED
        except (aiohttp.ClientError, OSError) as error:
            self._log.warning("leader.write_failed", error=repr(error))
            return _Outcome.FAILED
        self._holding(written, sent_at, previous_holder=record.holder)
        return _Outcome.HOLDING

    async def _create(self, now: _MicroTime, sent_at: float, request_timeout: float) -> _Outcome:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self._lease_seconds,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            created = await self._api.create_namespaced_lease(
                self.namespace, body, _request_timeout=request_timeout
            )
        except ApiException as error:
            if error.status == 409:  # another candidate created it first
                self._log.info("leader.conflict", previous_holder=None)
            else:
                self._log.warning("leader.create_failed", status=error.status, reason=error.reason)
            return _Outcome.FAILED
        except (aiohttp.ClientError, OSError) as error:
            self._log.warning("leader.create_failed", error=repr(error))
            return _Outcome.FAILED
        self._holding(created, sent_at, previous_holder="")
        return _Outcome.HOLDING

    def _holding(self, lease: client.V1Lease, sent_at: float, *, previous_holder: str) -> None:
        self._observed = _Record.of(lease.spec)
        self._observed_at = self._clock()
        if self.fence._renewed(sent_at):
            self._log.info(
                "leader.acquired",
                previous_holder=previous_holder or None,
                transitions=lease.spec.lease_transitions,
            )

    # -- shutdown ---------------------------------------------------------------------

    async def release(self) -> None:
        """Hand the lease over at once (client-go's ReleaseOnCancel).

        Call after ``run()`` has been cancelled. If the Lease still names this replica, the
        fence is invalidated first and then the holder is cleared, so another replica can
        take over on its next attempt instead of waiting for the lease to expire. Errors
        are logged, not raised: on shutdown, expiry is the fallback.
        """
        if self._running:
            raise RuntimeError("cancel LeaderElector.run() before release()")
        self._step_down("released", expected=True)
        request_timeout = self.renew_deadline
        try:
            async with asyncio.timeout(request_timeout):
                lease = await self._api.read_namespaced_lease(
                    self.name, self.namespace, _request_timeout=request_timeout
                )
                spec = lease.spec or client.V1LeaseSpec()
                if spec.holder_identity != self.identity:
                    return
                now = _MicroTime.now_utc()
                lease.spec = client.V1LeaseSpec(
                    holder_identity=None,
                    lease_duration_seconds=1,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=spec.lease_transitions,
                    preferred_holder=spec.preferred_holder,
                    strategy=spec.strategy,
                )
                written = await self._api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=request_timeout
                )
        except ApiException as error:
            if error.status != 404:
                self._log.warning("leader.release_failed", status=error.status, reason=error.reason)
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self._log.warning("leader.release_failed", error=repr(error))
            return
        self._observed = _Record.of(written.spec)
        self._observed_at = self._clock()
        self._log.info("leader.released")
