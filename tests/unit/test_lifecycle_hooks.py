"""Lifecycle actions in the pipeline: each hook runs at its moment, progress is kept per
action name, and an action in progress never holds the reconcile that started it.

The action kind here is a scripted stand-in for the HTTP kind (the real webhook is
exercised against a loopback server in tests/integration/test_lifecycle_hooks.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from molt.actions.base import ActionContext, ActionFailedError, ActionHeldError
from molt.actions.runner import ActionRunner
from molt.api import TerminationPolicy
from molt.api.lifecycle import LifecycleAction
from molt.controllers.termination.pipeline import ACTION_POLL, PipelineReconciler
from molt.controllers.termination.progress import ActionProgress
from molt.observe.metrics import Metrics
from tests.support.fake_ports import pod
from tests.support.fleet import policy
from tests.unit.test_pipeline import NEW, World, replacement_node, selected_node, world


class ScriptedKind:
    """Records each attempt; an attempt waits on its gate when one is set, and fails
    while ``failures`` lasts."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.attempts: list[int] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: dict[str, int] = {}
        self.holds: dict[str, int] = {}

    async def attempt(self, action: LifecycleAction, context: ActionContext) -> None:
        self.calls.append((context.hook, action.name))
        self.attempts.append(context.attempt)
        gate = self.gates.get(action.name)
        if gate is not None:
            await gate.wait()
        if self.holds.get(action.name, 0) > 0:
            self.holds[action.name] -= 1
            raise ActionHeldError("waiting for the replacement's member")
        if self.failures.get(action.name, 0) > 0:
            self.failures[action.name] -= 1
            raise ActionFailedError("503 from the hook")


def _policy(**lifecycle: list[str]) -> TerminationPolicy:
    """Policy rotate with an http action per name at each hook given."""
    hooks: dict[str, Any] = {
        hook: [{"name": name, "http": {"url": f"https://hooks.example/{name}"}} for name in names]
        for hook, names in lifecycle.items()
    }
    return policy("rotate", lifecycle=hooks)


def _with_kind(fleet: World, kind: ScriptedKind) -> None:
    fleet.pipeline = PipelineReconciler(
        fleet.cluster,
        fleet.cluster,
        fleet.clock,
        Metrics(),
        providers={"kwok": fleet.provider},
        actions=ActionRunner({"http": kind}),
        drain_settle=0.0,
    )


async def _settle(fleet: World, rounds: int = 30) -> None:
    for _ in range(rounds):
        await fleet.reconcile()
        await asyncio.sleep(0)
        if fleet.cluster.node("old") is None:
            return


async def test_pre_drain_runs_before_the_first_eviction_and_pre_terminate_after_the_drain() -> None:
    kind = ScriptedKind()
    fleet = world(
        selected_node(replacement=NEW),
        replacement_node(),
        pods=(pod("web"),),
        rotate=_policy(preDrain=["notify"], preTerminate=["deregister"]),
    )
    _with_kind(fleet, kind)
    order: list[str] = []
    evict = fleet.cluster.evict

    async def evict_and_note(target):  # type: ignore[no-untyped-def]
        order.append(f"evict {target.name} after {kind.calls}")
        return await evict(target)

    fleet.cluster.evict = evict_and_note  # type: ignore[method-assign]
    await _settle(fleet)

    assert kind.calls == [("preDrain", "notify"), ("preTerminate", "deregister")]
    assert order == ["evict web after [('preDrain', 'notify')]"]
    assert fleet.provider.terminations == ["old"]


async def test_a_node_turns_terminating_only_after_its_pre_terminate_actions() -> None:
    """Readers of the state label (an etcd member table, dashboards) must never see a
    terminating node that still holds what a preTerminate action hands off."""
    kind = ScriptedKind()
    kind.gates["step-down"] = asyncio.Event()
    fleet = world(
        selected_node(replacement=NEW),
        replacement_node(),
        pods=(pod("web"),),
        rotate=_policy(preTerminate=["step-down"]),
    )
    _with_kind(fleet, kind)
    for _ in range(10):
        await fleet.reconcile()
        await asyncio.sleep(0)
    during = fleet.node()

    assert kind.calls == [("preTerminate", "step-down")]
    assert fleet.cluster.evictions, "the drain ran first"
    assert during.state == "draining"
    assert "molt.dev/drained-at" in during.annotations
    assert "Drained" in fleet.cluster.event_reasons("old")
    assert fleet.provider.terminations == []

    order: list[str] = []
    patch_node, terminate = fleet.cluster.patch_node, fleet.provider.terminate

    async def patch_and_note(name, *, labels=None, **rest):  # type: ignore[no-untyped-def]
        if labels and "molt.dev/state" in labels:
            order.append(f"label {labels['molt.dev/state']}")
        return await patch_node(name, labels=labels, **rest)

    async def terminate_and_note(node):  # type: ignore[no-untyped-def]
        order.append("terminate")
        return await terminate(node)

    fleet.cluster.patch_node = patch_and_note  # type: ignore[method-assign]
    fleet.provider.terminate = terminate_and_note  # type: ignore[method-assign]
    kind.gates["step-down"].set()
    await _settle(fleet)
    assert order == ["label terminating", "terminate"]
    assert fleet.provider.terminations == ["old"]


async def test_an_action_in_progress_returns_the_worker_at_once() -> None:
    kind = ScriptedKind()
    kind.gates["slow"] = asyncio.Event()
    fleet = world(
        selected_node(replacement=NEW), replacement_node(), rotate=_policy(preDrain=["slow"])
    )
    _with_kind(fleet, kind)

    first = await asyncio.wait_for(fleet.reconcile(), timeout=1)
    await asyncio.sleep(0)
    second = await asyncio.wait_for(fleet.reconcile(), timeout=1)

    assert (first, second) == (ACTION_POLL, ACTION_POLL)
    assert fleet.cluster.evictions == []
    assert ActionProgress.of(fleet.node()).get("preDrain/tp/slow").state == "running"
    kind.gates["slow"].set()
    await _settle(fleet)
    assert fleet.provider.terminations == ["old"]
    assert kind.calls == [("preDrain", "slow")]


async def test_a_failing_action_is_retried_with_backoff_and_holds_the_node() -> None:
    kind = ScriptedKind()
    kind.failures["flaky"] = 2
    fleet = world(
        selected_node(replacement=NEW), replacement_node(), rotate=_policy(preDrain=["flaky"])
    )
    _with_kind(fleet, kind)

    for _ in range(40):
        await fleet.reconcile()
        await asyncio.sleep(0)
        fleet.clock.advance(5)
        if fleet.cluster.node("old") is None:
            break

    assert kind.calls == [("preDrain", "flaky")] * 3
    assert fleet.cluster.event_reasons("old").count("ActionFailed") == 2
    assert fleet.provider.terminations == ["old"]
    assert kind.attempts == [1, 2, 3]


async def test_a_held_action_holds_the_node_without_using_its_retries() -> None:
    kind = ScriptedKind()
    kind.holds["etcd"] = 6
    held = {"name": "etcd", "retries": 1, "http": {"url": "https://hooks.example/etcd"}}
    fleet = world(
        selected_node(replacement=NEW),
        replacement_node(),
        rotate=policy("rotate", lifecycle={"preTerminate": [held]}),
    )
    _with_kind(fleet, kind)
    blocked: list[str | None] = []

    for _ in range(80):
        await fleet.reconcile()
        await asyncio.sleep(0)
        node = fleet.cluster.node("old")
        if node is None:
            break
        blocked.append(node.annotations.get("molt.dev/blocked"))
        fleet.clock.advance(5)

    assert kind.calls == [("preTerminate", "etcd")] * 7
    assert kind.attempts == [1] * 7, "a held attempt is given back"
    assert any(b and "held: waiting for the replacement's member" in b for b in blocked)
    assert fleet.cluster.event_reasons("old").count("ActionFailed") == 0
    assert fleet.cluster.event_reasons("old").count("ActionHeld") == 1, "once per message"
    assert fleet.provider.terminations == ["old"]


async def test_a_restarted_controller_resumes_the_attempt_in_flight() -> None:
    """The attempt number names a Job action's Job: after a restart during attempt 1, the
    new process runs attempt 1 again (and finds that Job), not attempt 2."""
    kind = ScriptedKind()
    kind.gates["slow"] = asyncio.Event()
    fleet = world(
        selected_node(replacement=NEW), replacement_node(), rotate=_policy(preDrain=["slow"])
    )
    _with_kind(fleet, kind)
    await fleet.reconcile()
    await asyncio.sleep(0)
    assert ActionProgress.of(fleet.node()).get("preDrain/tp/slow").attempts == 1
    await fleet.pipeline.actions.close()  # the process dies; its attempts with it

    restarted = ScriptedKind()
    _with_kind(fleet, restarted)
    await _settle(fleet)
    assert restarted.attempts == [1]
    assert fleet.provider.terminations == ["old"]


async def test_editing_the_list_mid_flight_neither_skips_nor_repeats_an_action() -> None:
    kind = ScriptedKind()
    kind.gates["second"] = asyncio.Event()
    fleet = world(
        selected_node(replacement=NEW),
        replacement_node(),
        rotate=_policy(preDrain=["first", "second"]),
    )
    _with_kind(fleet, kind)
    for _ in range(4):
        await fleet.reconcile()
        await asyncio.sleep(0)
    assert kind.calls == [("preDrain", "first"), ("preDrain", "second")]

    # A person puts a new action in front while "second" runs: "first" is not repeated,
    # "second" is not skipped, and the new one runs too.
    fleet.cluster.termination_policies["rotate"] = _policy(preDrain=["zeroth", "first", "second"])
    kind.gates["second"].set()
    await _settle(fleet)

    assert kind.calls == [
        ("preDrain", "first"),
        ("preDrain", "second"),
        ("preDrain", "zeroth"),
    ]
    assert fleet.provider.terminations == ["old"]
