"""``molt run``: wire the controllers to a real cluster and run them.

Starts the watch caches (a standby replica keeps them warm), joins leader election when
asked, waits for the caches to sync and for leadership, then runs the workers. Losing
the Lease stops every write at once (the fence) and ends the process with exit code 3,
so the orchestrator restarts it as a fresh candidate, as client-go controllers do.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Awaitable
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

import structlog
from prometheus_client import start_http_server

from molt.cloud.aws_queue import InterruptionQueue
from molt.cloud.provider import Provider
from molt.controllers.manager import ControllerManager
from molt.kube.connections import abort_connections
from molt.kube.health import KubeHealthProbe
from molt.kube.leader import Fence, LeaderElector
from molt.kube.reader import NoClusterError, connect, reach_cluster
from molt.kube.state import KubeClusterState
from molt.kube.transport import RawApi
from molt.kube.writes import DryRunWrites, KubeWrites
from molt.observe.history import HistoryOptions, HistoryStore, HistoryWrites
from molt.observe.metrics import Metrics
from molt.policy.snapshot import NodeView
from molt.ports import ClusterWrites, SystemClock
from molt.runtime.debug import DebugServer
from molt.runtime.providers import PROVIDERS, Built

log = structlog.get_logger(__name__)

EXIT_LOST_LEADERSHIP = 3


class StartupError(Exception):
    """``molt run`` cannot start as asked (a port taken, say); the message says why."""


@dataclass(frozen=True)
class RunOptions:
    """Everything ``molt run`` can be told."""

    kubeconfig: str | None = None
    leader_elect: bool = False
    lease_name: str = "molt-controller"
    lease_namespace: str = "kube-system"
    lease_duration: float = 15.0
    identity: str | None = None
    dry_run: bool = False
    metrics_port: int = 8080
    metrics_address: str = "0.0.0.0"
    workers: int = 4
    resync_seconds: float = 30.0
    write_rate: float = 20.0
    providers: tuple[str, ...] = ("kwok",)
    """Clouds this controller may launch into and terminate in: kwok, aws, baremetal."""
    history_url: str | None = None
    """SQLAlchemy URL of the decision history (sqlite:///..., postgresql://...); None: off."""
    cluster_name: str = "default"
    history_retention: timedelta | None = timedelta(days=30)
    interruption_queue: str | None = None
    """URL of the SQS queue EventBridge delivers spot and Auto Scaling notices to."""
    lifecycle_heartbeat: float | None = None
    """Seconds between heartbeats of an Auto Scaling lifecycle hook a draining node holds."""
    debug_port: int | None = None
    """Serve ``/debug/caches`` here (0: any free port, logged); None: off."""
    debug_address: str = "127.0.0.1"


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def _publish_request_counts(raw: RawApi, metrics: Metrics, fence: Fence) -> None:
    while True:
        for verb, count in raw.requests.items():
            metrics.api_requests.labels(verb=verb).set(count)
        metrics.leader.set(1 if fence.is_leader else 0)
        await asyncio.sleep(5)


async def run_controller(options: RunOptions) -> int:
    """Run until a signal (exit 0) or until leadership is lost (exit 3)."""
    api = await connect(options.kubeconfig)
    raw = RawApi(api)
    metrics = Metrics()
    if options.metrics_port:
        try:
            start_http_server(options.metrics_port, options.metrics_address, metrics.registry)
        except OSError as error:
            await api.close()
            where = f"{options.metrics_address}:{options.metrics_port}"
            raise StartupError(
                f"cannot serve metrics on {where}: {error.strerror or error} "
                "(use --metrics-port to pick another port, 0 for none)"
            ) from error
    try:
        await reach_cluster(api)
    except NoClusterError:
        await api.close()
        raise
    identity = options.identity or default_identity()
    elector: LeaderElector | None = None
    if options.leader_elect:
        elector = LeaderElector(
            api,
            name=options.lease_name,
            namespace=options.lease_namespace,
            identity=identity,
            lease_duration=options.lease_duration,
            renew_deadline=options.lease_duration * 2 / 3,
            retry_period=max(0.5, options.lease_duration / 7.5),
        )
    fence = elector.fence if elector else Fence.always()

    holder: list[ControllerManager] = []
    history_writes: list[HistoryWrites] = []

    def node_changed(key: str, old: NodeView | None, new: NodeView | None) -> None:
        for recorder in history_writes:
            recorder.node_changed(key, old, new)
        if holder:
            holder[0].node_changed(key, old, new)

    state = KubeClusterState(
        raw,
        on_node=node_changed,
        on_pod=lambda node: holder[0].pods_changed(node) if holder else None,
        on_policy_or_group=lambda: holder[0].config_changed() if holder else None,
        on_reaper=lambda name: holder[0].reaper_changed(name) if holder else None,
        on_watchdog=lambda name: holder[0].watchdog_changed(name) if holder else None,
        on_unusable=lambda: holder[0].unusable_changed() if holder else None,
        shared_pods=True,
    )
    writes: ClusterWrites
    kube_writes: KubeWrites | None = None
    providers: dict[str, Provider] = {}
    built: list[Built] = []
    if options.dry_run:
        writes = DryRunWrites()
    else:
        kube_writes = KubeWrites(
            raw,
            check_fence=fence.check,
            nodes_cache=state.nodes_cache,
            rate=options.write_rate,
            background_events=True,
        )
        writes = kube_writes
        for name in options.providers:
            built.append(PROVIDERS[name](api, fence.check))
            providers[name] = built[-1].provider
    history: HistoryStore | None = None
    if options.history_url and options.dry_run:
        log.warning("history.off", detail="--dry-run changes nothing, so nothing is recorded")
    if options.history_url and not options.dry_run:
        # Every Event (and group decision) also becomes a row; the store never blocks a write.
        history = HistoryStore(
            HistoryOptions(
                url=options.history_url,
                cluster=options.cluster_name,
                retention=options.history_retention,
            ),
            SystemClock(),
            metrics,
        )
        recorder = HistoryWrites(writes, history, state, acting=lambda: fence.is_leader)
        history_writes.append(recorder)
        writes = recorder
    controller = ControllerManager(
        state,
        writes,
        SystemClock(),
        metrics,
        providers=providers,
        workers=options.workers,
        resync_seconds=options.resync_seconds,
        pipeline=not options.dry_run,
        interruptions=(
            InterruptionQueue(options.interruption_queue) if options.interruption_queue else None
        ),
        heartbeat_seconds=options.lifecycle_heartbeat,
        probe=KubeHealthProbe(raw),
    )
    holder.append(controller)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    background: list[asyncio.Task[None]] = [
        asyncio.create_task(_publish_request_counts(raw, metrics, fence), name="metrics")
    ]
    if elector is not None:
        background.append(asyncio.create_task(elector.run(), name="leader-election"))
    if history is not None:
        history.start()
    debug: DebugServer | None = None
    exit_code = 0
    try:
        if options.debug_port is not None:
            debug = DebugServer(state.digest, options.debug_address, options.debug_port)
            try:
                await debug.start()
            except OSError as error:
                where = f"{options.debug_address}:{options.debug_port}"
                raise StartupError(
                    f"cannot serve {where}: {error.strerror or error} "
                    "(use --debug-port to pick another port)"
                ) from error
        await state.start()
        log.info("controller.starting", identity=identity, dry_run=options.dry_run)
        if not await _until(stop, state.wait_synced()):
            return 0
        log.info("caches.synced", nodes=len(state.nodes()), policies=len(state.policies()))
        if not await _until(stop, fence.wait_until_leader()):
            return 0
        log.info("controller.leading", identity=identity)
        workers = asyncio.create_task(controller.run(), name="workers")
        lost = asyncio.create_task(fence.lost.wait(), name="fence-lost")
        stopped = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({workers, lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if lost in done:
            exit_code = EXIT_LOST_LEADERSHIP
        elif workers in done and workers.exception() is not None:
            # A worker only ends by raising; the fence (NotLeaderError) is the expected case.
            exit_code = EXIT_LOST_LEADERSHIP
        if exit_code == EXIT_LOST_LEADERSHIP:
            # Before anything else: a write still in flight must not land once the
            # partition that cost the Lease heals (molt.kube.connections).
            await abort_connections(api)
            if lost in done:
                log.error("leader.lost", identity=identity, action="exiting")
            else:
                log.error("controller.stopped", error=repr(workers.exception()))
        for task in (workers, lost, stopped):
            task.cancel()
        await asyncio.gather(workers, lost, stopped, return_exceptions=True)
        return exit_code
    finally:
        controller.queue.shut_down()
        for one in built:
            if one.close is not None:
                await one.close()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if history is not None:
            await history.stop()
        if debug is not None:
            await debug.stop()
        if elector is not None and exit_code == 0:
            with suppress(Exception):
                await elector.release()
        if kube_writes is not None:
            # The Events still waiting go out while this replica leads (a lost fence drops
            # them, each checked before it is sent).
            await kube_writes.flush(within=5.0 if exit_code == 0 else 0.0)
        await state.stop()
        await api.close()
        log.info("controller.stopped", exit_code=exit_code)


async def _until(stop: asyncio.Event, awaitable: Awaitable[object]) -> bool:
    """Await ``awaitable`` unless ``stop`` is set first; True when it finished."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stopper):
        pending.cancel()
    return task in done
