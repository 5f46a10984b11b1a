"""The manager's side of the Watchdogs: ``watchdog/<name>`` starts one background task
per Watchdog (a round never runs inside a worker), a state change wakes selection, and
the task stops with its Watchdog."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from molt.api.watchdog import Watchdog
from molt.controllers.manager import ControllerManager
from molt.observe.metrics import Metrics
from tests.support.fake_ports import FakeClock, FakeCluster

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _watchdog(state: str | None) -> Watchdog:
    return Watchdog.model_validate(
        {
            "apiVersion": "molt.dev/v1alpha1",
            "kind": "Watchdog",
            "metadata": {"name": "wd", "generation": 1},
            "spec": {"check": {"nodeCondition": {"type": "KernelDeadlock"}}, "interval": "1s"},
            "status": {"state": state} if state else None,
        }
    )


async def test_a_watchdog_key_starts_its_task_and_a_state_change_wakes_selection() -> None:
    cluster = FakeCluster(watchdogs=[_watchdog(None)])
    manager = ControllerManager(cluster, cluster, FakeClock(NOW), Metrics(), providers={})
    woken: list[str] = []
    delayed = manager.queue.add_after

    def add_after(key: str, delay: float) -> None:
        woken.append(key)
        delayed(key, delay)

    manager.queue.add_after = add_after  # type: ignore[method-assign]
    try:
        manager.watchdog_changed("wd")
        assert woken == [], "a Watchdog with no state yet pauses nothing"
        key = await manager.queue.get()
        assert key == "watchdog/wd"
        assert await asyncio.wait_for(manager.dispatch(key), 1) is None  # quick: no round here
        manager.queue.done(key)
        for _ in range(50):  # the round runs in the background task
            if cluster.watchdog_status_patches:
                break
            await asyncio.sleep(0.02)
        assert cluster.watchdog_status_patches[-1][1]["state"] == "Healthy"

        cluster.watchdog_objects["wd"] = _watchdog("Healthy")
        manager.watchdog_changed("wd")
        manager.watchdog_changed("wd")  # the next round's write: same state
        assert woken == ["selection"]
        cluster.watchdog_objects["wd"] = _watchdog("Failing")
        manager.watchdog_changed("wd")
        assert woken == ["selection", "selection"]

        del cluster.watchdog_objects["wd"]
        assert await manager.dispatch("watchdog/wd") is None
        await asyncio.sleep(0)
        running = [t for t in asyncio.all_tasks() if t.get_name() == "watchdog-wd"]
        assert all(t.done() for t in running)
    finally:
        await manager.watchdogs.stop()
