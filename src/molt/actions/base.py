"""What every lifecycle action kind provides, and what it is told about the node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from molt.api.lifecycle import LifecycleAction
from molt.policy.snapshot import NodeView


class ActionFailedError(Exception):
    """A lifecycle action did not succeed; the message says what happened."""


class ActionHeldError(Exception):
    """Not yet: the action must wait for the cluster (e.g. a replacement to join) before it
    may act. It is tried again soon without using up one of its retries; the message says
    what it waits for."""


@dataclass(frozen=True)
class ActionContext:
    """The node an action runs for, and why it is leaving."""

    node: NodeView
    hook: str
    reason: str
    policy: str
    key: str = ""
    """The action's progress key on the node (hook/source/name): unique per node."""
    attempt: int = 1
    """Which attempt this is, from 1; a restarted controller resumes the recorded one."""


class ActionKind(Protocol):
    """One kind of action (http, vault, job): a single attempt, bounded by the action's timeout.

    The runner drives it in the background, so an attempt may take its whole timeout
    without holding a reconcile worker.
    """

    async def attempt(self, action: LifecycleAction, context: ActionContext) -> None:
        """Do the action once; raise ActionFailedError unless it succeeded, or
        ActionHeldError when it must wait before it may act."""
        ...
