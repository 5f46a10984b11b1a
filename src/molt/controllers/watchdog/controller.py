"""The Watchdog controller: one background task per Watchdog, each on its own interval.

The manager's key ``watchdog/<name>`` is a quick step (:meth:`WatchdogController.reconcile`):
it starts the Watchdog's task, or stops it when the Watchdog is gone. The task runs a
*round* per ``interval``: the check (a ``probePod`` round may wait up to its ``timeout``,
outside any worker), the state machine (``molt.policy.watchdog.step``), the alert to every
sink, and the status (state, last result, failing-since, last alert, conditions) that a
TerminationPolicy's ``pauseWhen`` reads from the cache.

A check that raises counts as a failed check, with the error as its message. Anything
else that raises in a round is logged and the next round runs: one Watchdog never stops
another, nor the controller. A sink that fails is an Event and a ``Delivered=False``
condition; a sink whose Secret is missing is a ``SinksReady=False`` condition (looked at
when the spec changes and at every alert).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import structlog

from molt.api.durations import parse_duration
from molt.api.watchdog import Watchdog
from molt.controllers.conditions import ConditionWriter
from molt.controllers.watchdog.checks import (
    LatencyWindow,
    Timed,
    api_latency,
    http_check,
    probe_pod,
)
from molt.controllers.watchdog.sinks import Alert, Outcome, missing_secret, send, sink_name
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.watchdog import (
    Memory,
    Verdict,
    dedup_key,
    node_verdict,
    step,
)
from molt.ports import Clock, ClusterReads, ClusterWrites, NotLeaderError

log = structlog.get_logger(__name__)

SINKS_READY = "SinksReady"
DELIVERED = "Delivered"
MIN_INTERVAL_SECONDS = 1.0


@dataclass
class _Watch:
    """What one Watchdog's rounds share in this process."""

    memory: Memory | None = None
    """None until the first round, which starts from the Watchdog's status."""
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    sink_generation: int | None = None
    """The generation whose sinks were last looked at."""
    sink_problems: dict[str, str] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class WatchdogController:
    """Runs every Watchdog's rounds (key: the Watchdog's name)."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        metrics: Metrics,
        *,
        session: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
        sink_attempts: int = 3,
        sink_backoff: float = 0.5,
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.metrics = metrics
        self._new_session = session
        self._session: aiohttp.ClientSession | None = None
        self.sink_attempts = sink_attempts
        self.sink_backoff = sink_backoff
        self._watches: dict[str, _Watch] = {}

    def _find(self, name: str) -> Watchdog | None:
        return next((w for w in self.reads.watchdogs() if w.metadata.name == name), None)

    async def reconcile(self, name: str) -> float | None:
        """Start the Watchdog's task, or stop it when the Watchdog is gone. Quick."""
        watchdog = self._find(name)
        watch = self._watches.get(name)
        if watchdog is None:
            if watch is not None:
                self._watches.pop(name)
                if watch.task is not None:
                    watch.task.cancel()
                self.metrics.set_watchdog_state(name, None)
            return None
        if watch is None:
            watch = self._watches[name] = _Watch()
        if watch.task is None or watch.task.done():
            watch.task = asyncio.create_task(self._loop(name), name=f"watchdog-{name}")
        return None

    async def stop(self) -> None:
        """Cancel every task and close the HTTP session (leadership lost, shutdown)."""
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watches.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._new_session()
        return self._session

    async def _loop(self, name: str) -> None:
        while True:
            watchdog = self._find(name)
            if watchdog is None:
                return
            try:
                await self.run_round(watchdog)
            except asyncio.CancelledError:
                raise
            except NotLeaderError:
                log.warning("watchdog.not_leader", watchdog=name)
            except Exception:
                log.exception("watchdog.round_failed", watchdog=name)
            current = self._find(name) or watchdog
            interval = parse_duration(current.spec.interval).total_seconds()
            await asyncio.sleep(max(MIN_INTERVAL_SECONDS, interval))

    async def _check(self, watchdog: Watchdog, watch: _Watch) -> Timed:
        check = watchdog.spec.check
        name = watchdog.metadata.name
        if check.probe_pod is not None:
            return await probe_pod(self.writes, name, check.probe_pod)
        if check.api_latency is not None:
            interval = parse_duration(watchdog.spec.interval).total_seconds()
            return await api_latency(self.writes, check.api_latency, watch.latency, interval)
        if check.http is not None:
            return await http_check(self._http(), check.http)
        verdict = node_verdict(check, self.reads.nodes())
        assert verdict is not None  # a node check: the others were handled above
        return Timed(verdict, 0.0)

    async def run_round(self, watchdog: Watchdog) -> Memory:
        """One check, the state machine, any alert, and the status; the new memory."""
        name = watchdog.metadata.name
        watch = self._watches.setdefault(name, _Watch())
        spec = watchdog.spec
        try:
            timed = await self._check(watchdog, watch)
        except asyncio.CancelledError:
            raise
        except NotLeaderError:
            raise
        except Exception as error:
            log.warning("watchdog.check_error", watchdog=name, error=repr(error))
            timed = Timed(Verdict(False, f"the check could not run: {error!r}"[:1024]), 0.0)
        now = self.clock.now()
        memory = watch.memory if watch.memory is not None else _memory_from(watchdog)
        outcome = step(
            memory,
            timed.verdict.ok,
            now,
            warmup=parse_duration(spec.warmup),
            cooldown=parse_duration(spec.cooldown),
            snooze_until=spec.snooze_until,
        )
        await self._look_at_sinks(watchdog, watch)
        delivered: list[Outcome] | None = None
        if outcome.alert is not None and outcome.episode_start is not None:
            alert = Alert(
                watchdog=name,
                event=outcome.alert,
                state=outcome.memory.state,
                message=timed.verdict.message,
                time=now,
                dedup_key=dedup_key(name, outcome.episode_start),
            )
            delivered = await send(
                self.writes,
                self._http(),
                list(spec.sinks),
                alert,
                attempts=self.sink_attempts,
                backoff=self.sink_backoff,
            )
            await self._report_alert(watchdog, watch, alert, delivered)
        elif outcome.memory.state != memory.state and outcome.memory.state == "Snoozed":
            await self.writes.record_resource_event(
                Watchdog,
                name,
                "Snoozed",
                f"failing but snoozed until {spec.snooze_until}: {timed.verdict.message}",
            )
        watch.memory = outcome.memory
        self.metrics.set_watchdog_state(name, outcome.memory.state)
        await self.writes.patch_status(
            Watchdog, name, self._status(watchdog, watch, outcome.memory, timed, now, delivered)
        )
        if outcome.memory.state != memory.state:
            log.info(
                "watchdog.state",
                watchdog=name,
                state=outcome.memory.state,
                previous=memory.state,
                message=timed.verdict.message,
            )
        return outcome.memory

    async def _look_at_sinks(self, watchdog: Watchdog, watch: _Watch) -> None:
        """Once per generation: is every sink's Secret there? Reported when one is not."""
        generation = watchdog.metadata.generation
        if watch.sink_generation == generation and watch.sink_generation is not None:
            return
        watch.sink_generation = generation
        problems: dict[str, str] = {}
        for index, sink in enumerate(watchdog.spec.sinks):
            problem = await missing_secret(self.writes, sink)
            if problem is not None:
                problems[sink_name(sink, index)] = problem
        for label, problem in problems.items():
            if watch.sink_problems.get(label) != problem:
                await self.writes.record_resource_event(
                    Watchdog,
                    watchdog.metadata.name,
                    "SinkMisconfigured",
                    f"{label}: {problem}; its alerts cannot be sent",
                    warning=True,
                )
        watch.sink_problems = problems

    async def _report_alert(
        self, watchdog: Watchdog, watch: _Watch, alert: Alert, outcomes: list[Outcome]
    ) -> None:
        name = watchdog.metadata.name
        sent = [o.sink for o in outcomes if o.delivery.ok]
        failed = [o for o in outcomes if not o.delivery.ok]
        for outcome in failed:
            if outcome.delivery.attempts == 0:  # its Secret is missing
                watch.sink_problems[outcome.sink] = outcome.delivery.error
        reason = "Fired" if alert.event == "trigger" else "Resolved"
        told = f"; sent to {', '.join(sent)}" if sent else ""
        await self.writes.record_resource_event(
            Watchdog, name, reason, f"{alert.message}{told}", warning=alert.event == "trigger"
        )
        for outcome in failed:
            await self.writes.record_resource_event(
                Watchdog,
                name,
                "AlertFailed",
                f"{alert.event} to {outcome.sink} failed after {outcome.delivery.attempts} "
                f"attempt(s): {outcome.delivery.error}",
                warning=True,
            )
        log.info(
            "watchdog.alert",
            watchdog=name,
            alert=alert.event,
            dedup_key=alert.dedup_key,
            sent=sent,
            failed=[o.sink for o in failed],
        )

    def _status(
        self,
        watchdog: Watchdog,
        watch: _Watch,
        memory: Memory,
        timed: Timed,
        now: datetime,
        delivered: list[Outcome] | None,
    ) -> dict[str, Any]:
        previous = watchdog.status
        conditions = ConditionWriter(
            previous.conditions if previous else (), watchdog.metadata.generation, now
        )
        problems = watch.sink_problems
        written = [
            conditions(
                SINKS_READY,
                not problems,
                "SecretMissing" if problems else "AllSinksReady",
                "; ".join(f"{s}: {p}" for s, p in sorted(problems.items()))
                or f"{len(watchdog.spec.sinks)} sink(s) configured",
            )
        ]
        if delivered is not None:
            failed = [o for o in delivered if not o.delivery.ok]
            written.append(
                conditions(
                    DELIVERED,
                    not failed,
                    "DeliveryFailed" if failed else "Delivered",
                    "; ".join(f"{o.sink}: {o.delivery.error}" for o in failed)
                    or f"the last alert reached {len(delivered)} sink(s)",
                )
            )
        elif previous is not None:
            kept = next((c for c in previous.conditions if c.type == DELIVERED), None)
            if kept is not None:
                written.append(kept.model_dump(by_alias=True, mode="json", exclude_none=True))
        result: dict[str, Any] = {
            "time": format_rfc3339(now),
            "ok": timed.verdict.ok,
            "message": timed.verdict.message[:4096],
            "durationSeconds": round(timed.seconds, 3),
        }
        return {
            "state": memory.state,
            "observedGeneration": watchdog.metadata.generation,
            "failingSince": _time(memory.failing_since),
            "lastAlertTime": _time(memory.last_alert_time),
            "lastResult": result,
            "conditions": written,
        }


def _time(moment: datetime | None) -> str | None:
    return format_rfc3339(moment) if moment is not None else None


def _memory_from(watchdog: Watchdog) -> Memory:
    """Where a restarted controller picks up: the Watchdog's status."""
    status = watchdog.status
    if status is None:
        return Memory()
    return Memory(
        state=status.state or "Unknown",
        failing_since=status.failing_since,
        last_alert_time=status.last_alert_time,
    )
