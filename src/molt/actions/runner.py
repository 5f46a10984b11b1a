"""Runs lifecycle actions in the background, so a reconcile only starts and checks them.

A reconcile calls ``poll`` for an action's key: the first call starts an attempt as a
task and answers ``RUNNING``; later calls answer ``RUNNING`` until it ends, then hand back
its outcome once. Attempts live in this process only: after a restart the pipeline sees
the action ``running`` on the node with no task here, and starts another attempt (the
webhook hears twice rather than never).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import structlog

from molt.actions.base import ActionContext, ActionFailedError, ActionHeldError, ActionKind
from molt.actions.etcd import EtcdActionKind
from molt.actions.http import HttpActionKind
from molt.actions.job import JobActionKind
from molt.actions.vault import VaultActionKind
from molt.api.lifecycle import NOT_IMPLEMENTED, LifecycleAction
from molt.ports import ClusterWrites

log = structlog.get_logger(__name__)


class AttemptState(StrEnum):
    STARTED = "started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    HELD = "held"
    """The action waits for the cluster; it is tried again without using a retry."""


@dataclass(frozen=True)
class AttemptOutcome:
    state: AttemptState
    error: str | None = None


def action_kinds(cluster: ClusterWrites) -> dict[str, ActionKind]:
    """Every implemented kind, the ones that read or write the cluster through ``cluster``."""
    return {
        "http": HttpActionKind(),
        "vault": VaultActionKind(cluster),
        "job": JobActionKind(cluster),
        "etcd": EtcdActionKind(cluster),
    }


class ActionRunner:
    """Background attempts of lifecycle actions, keyed by node and action."""

    def __init__(self, kinds: dict[str, ActionKind] | None = None) -> None:
        """``kinds`` defaults to http alone (no cluster access); see ``action_kinds``."""
        self.kinds: dict[str, ActionKind] = (
            kinds if kinds is not None else {"http": HttpActionKind()}
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def poll(self, key: str, action: LifecycleAction, context: ActionContext) -> AttemptOutcome:
        """Start an attempt if none is running for ``key``; report one that ended."""
        task = self._tasks.get(key)
        if task is None:
            kind = self.kinds.get(action.kind)
            if kind is None:
                return AttemptOutcome(AttemptState.FAILED, NOT_IMPLEMENTED)
            self._tasks[key] = asyncio.create_task(
                kind.attempt(action, context), name=f"action {key}"
            )
            return AttemptOutcome(AttemptState.STARTED)
        if not task.done():
            return AttemptOutcome(AttemptState.RUNNING)
        del self._tasks[key]
        error = task.exception() if not task.cancelled() else ActionFailedError("cancelled")
        if error is None:
            return AttemptOutcome(AttemptState.SUCCEEDED)
        if isinstance(error, ActionHeldError):
            return AttemptOutcome(AttemptState.HELD, str(error))
        if not isinstance(error, ActionFailedError):
            log.warning("action.crashed", key=key, error=repr(error))
        return AttemptOutcome(AttemptState.FAILED, str(error) or repr(error))

    def running(self, key: str) -> bool:
        return key in self._tasks

    def forget(self, prefix: str) -> None:
        """Cancel and drop the attempts of one node (it left the pipeline)."""
        for key in [k for k in self._tasks if k.startswith(prefix)]:
            self._tasks.pop(key).cancel()

    async def close(self) -> None:
        """Cancel every attempt (on shutdown or lost leadership)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
