"""The work queue that feeds Molt's reconcilers: which keys are ready, which are waiting
for a delay to pass, which are being processed, and how long a failing key backs off.

It owns deduplication (a key waits at most once and is never handed to two workers at
the same time), delayed re-adds, per-key exponential backoff and a global token bucket,
with the semantics of client-go's rate-limiting delaying workqueue. An optional
``QueueHook`` receives client-go's workqueue measurements (adds, retries, time queued,
time worked, depth and work in progress), without the queue knowing of Prometheus.
"""

# Written by hand: no maintained asyncio library provides client-go's workqueue
# semantics (dirty/processing sets, delayed adds, per-item backoff plus a token bucket).

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)

# Far beyond any sane max_delay, and small enough that 2.0**n cannot overflow.
_MAX_BACKOFF_EXPONENT = 1000


class QueueShutDown(Exception):  # noqa: N818 - same name as asyncio.QueueShutDown (3.13)
    """Raised by `WorkQueue.get` once the queue is shut down and nothing is ready."""


class QueueHook(Protocol):
    """What a work queue reports, with client-go's workqueue metrics semantics."""

    def added(self) -> None:
        """A key became dirty (an add that was not deduplicated)."""

    def retried(self) -> None:
        """A delayed add (``add_after``, and so ``add_rate_limited``), as client-go counts."""

    def waited(self, seconds: float) -> None:
        """A key was handed out ``seconds`` after it was added."""

    def worked(self, seconds: float) -> None:
        """A key was done ``seconds`` after it was handed out."""

    def watch(self, depth: Callable[[], int], in_progress: Callable[[], Iterable[float]]) -> None:
        """Called once: read the ready depth and the running keys' ages when needed."""


class WorkQueue(Generic[K]):
    """A deduplicating, delaying, rate-limiting queue of keys for asyncio workers.

    A worker loops ``key = await queue.get()``, reconciles, then calls ``forget(key)``
    on success or ``add_rate_limited(key)`` on failure, and always ``done(key)``.

    Due times are computed from ``clock``; waiting for them uses real time (the
    difference between a due time and ``clock()``), so a fake clock makes the computed
    delays testable while due keys are also promoted whenever the queue is inspected.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        rate: float = 20.0,
        burst: int = 50,
        metrics: QueueHook | None = None,
    ) -> None:
        if base_delay < 0:
            raise ValueError(f"base_delay must be >= 0, got {base_delay}")
        if max_delay < base_delay:
            raise ValueError(f"max_delay ({max_delay}) must be >= base_delay ({base_delay})")
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._clock = clock
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._rate = rate
        self._burst = burst

        # Keys ready to be handed out, in order; every one of them is also in _dirty.
        self._ready: deque[K] = deque()
        # Keys that need processing: waiting in _ready, or re-added while processing.
        self._dirty: set[K] = set()
        # Keys handed out by get() and not yet done().
        self._processing: set[K] = set()

        # Delayed keys: a heap of (due, seq, key) with lazy deletion; _scheduled holds
        # the live (due, seq) per key, so superseded heap entries are skipped.
        self._delayed: list[tuple[float, int, K]] = []
        self._scheduled: dict[K, tuple[float, int]] = {}
        self._seq = 0

        self._failures: dict[K, int] = {}
        self._tokens = float(burst)
        self._tokens_at = clock()

        self._shutting_down = False
        self._wakeup = asyncio.Event()

        self._metrics = metrics
        # When each dirty key was added, and when each processing key was handed out.
        self._added_at: dict[K, float] = {}
        self._started_at: dict[K, float] = {}
        if metrics is not None:
            metrics.watch(lambda: len(self._ready), self._in_progress)

    # -- adding ---------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue `key` now; a no-op if it is already waiting or the queue is shut down.

        A key that is being processed is marked dirty and queued again by `done`.
        """
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if self._metrics is not None:
            self._metrics.added()
            self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return
        self._ready.append(key)
        self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` once `delay` seconds have passed (now if `delay` <= 0).

        If `key` is already scheduled, the earlier due time wins.
        """
        if self._shutting_down:
            return
        if self._metrics is not None:
            self._metrics.retried()
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        current = self._scheduled.get(key)
        if current is not None and current[0] <= due:
            return
        self._seq += 1
        self._scheduled[key] = (due, self._seq)
        heapq.heappush(self._delayed, (due, self._seq, key))
        # Blocked getters recompute how long to wait for the earliest due key.
        self._wakeup.set()

    def add_rate_limited(self, key: K) -> float:
        """Queue `key` after its backoff or the token bucket's delay, whichever is longer.

        Counts a failure for `key`. Returns the delay applied, in seconds.
        """
        backoff = self._backoff(self._failures.get(key, 0))
        self._failures[key] = self._failures.get(key, 0) + 1
        delay = max(backoff, self._take_token())
        self.add_after(key, delay)
        return delay

    # -- rate limiting --------------------------------------------------------------

    def forget(self, key: K) -> None:
        """Reset `key`'s failure count; call after it was processed successfully."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """How many times `key` was added rate-limited since it was last forgotten."""
        return self._failures.get(key, 0)

    def next_delay(self, key: K) -> float:
        """The delay `add_rate_limited(key)` would apply now, without applying it."""
        tokens, _ = self._refilled_tokens()
        bucket_delay = 0.0 if tokens >= 1 else (1 - tokens) / self._rate
        return max(self._backoff(self._failures.get(key, 0)), bucket_delay)

    def _backoff(self, failures: int) -> float:
        exponent = min(failures, _MAX_BACKOFF_EXPONENT)
        return min(self._base_delay * 2.0**exponent, self._max_delay)

    def _refilled_tokens(self) -> tuple[float, float]:
        now = self._clock()
        elapsed = max(0.0, now - self._tokens_at)
        return min(float(self._burst), self._tokens + elapsed * self._rate), now

    def _take_token(self) -> float:
        """Reserve one token (the balance may go negative); return the wait for it."""
        tokens, now = self._refilled_tokens()
        self._tokens = tokens - 1
        self._tokens_at = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    # -- consuming ------------------------------------------------------------------

    async def get(self) -> K:
        """Wait for a ready key and mark it as being processed.

        Raises `QueueShutDown` once the queue is shut down and no key is ready.
        """
        while True:
            self._promote_due()
            if self._ready:
                key = self._ready.popleft()
                self._dirty.discard(key)
                self._processing.add(key)
                if self._metrics is not None:
                    now = self._clock()
                    added = self._added_at.pop(key, now)
                    self._metrics.waited(now - added)
                    self._started_at[key] = now
                return key
            if self._shutting_down:
                raise QueueShutDown
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self._seconds_until_next_due()):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def done(self, key: K) -> None:
        """Mark `key` as processed; queue it again if it was added meanwhile."""
        if key not in self._processing:
            return
        self._processing.discard(key)
        started = self._started_at.pop(key, None)
        if self._metrics is not None and started is not None:
            self._metrics.worked(self._clock() - started)
        if key in self._dirty:
            self._ready.append(key)
            self._wakeup.set()

    def shut_down(self) -> None:
        """Stop accepting keys, drop delayed ones and wake every blocked `get`.

        Keys already ready are still handed out; then `get` raises `QueueShutDown`.
        """
        self._promote_due()
        self._shutting_down = True
        self._delayed.clear()
        self._scheduled.clear()
        self._wakeup.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """The number of keys ready now (delayed keys not yet due are not counted)."""
        self._promote_due()
        return len(self._ready)

    def _in_progress(self) -> list[float]:
        """How long each key being processed has been running (read at scrape time)."""
        now = self._clock()
        return [now - started for started in list(self._started_at.values())]

    def pending_delayed(self) -> int:
        """The number of keys waiting for a delay to pass."""
        self._promote_due()
        return len(self._scheduled)

    # -- delayed set ----------------------------------------------------------------

    def _promote_due(self) -> None:
        """Move every delayed key whose due time has come into the ready queue."""
        if not self._delayed:
            return
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, seq, key = heapq.heappop(self._delayed)
            if self._scheduled.get(key) != (due, seq):
                continue  # superseded by an earlier add_after
            del self._scheduled[key]
            self.add(key)

    def _seconds_until_next_due(self) -> float | None:
        while self._delayed:
            due, seq, key = self._delayed[0]
            if self._scheduled.get(key) == (due, seq):
                return max(0.0, due - self._clock())
            heapq.heappop(self._delayed)
        return None
