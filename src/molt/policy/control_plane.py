"""Control-plane rotation rules: one node at a time, a bake after each, a health gate.

Pure. The reconciler evaluates the gate's I/O part (the API server's ``/readyz`` and the
policy's ``controlPlane.healthChecks``) and passes the failures in; node readiness comes
from the snapshot. The rotation's memory lives in the policy's ``status.controlPlane``:

- ``lastCompleted``: when the policy's latest control-plane node was gone; the next one
  waits until ``lastCompleted + bakeTime`` (the bake).
- ``halted``: set when the gate fails during a bake. A halt holds until the gate has
  passed again, without a break, for a whole ``bakeTime`` (``healthySince`` counts that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from molt.api.durations import format_duration, parse_duration
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.age import format_rfc3339
from molt.policy.snapshot import Snapshot

HoldCode = Literal[
    "ControlPlaneOneAtATime", "ControlPlaneHalted", "ControlPlaneBaking", "ControlPlaneGateFailing"
]
ONE_AT_A_TIME = "control plane: one node at a time"


@dataclass(frozen=True)
class RotationState:
    """What ``status.controlPlane`` remembers."""

    last_completed: datetime | None = None
    halted: str | None = None
    healthy_since: datetime | None = None

    @classmethod
    def of(cls, policy: TerminationPolicy) -> RotationState:
        status = policy.status.control_plane if policy.status else None
        if status is None:
            return cls()
        return cls(status.last_completed, status.halted, status.healthy_since)

    def to_status(self) -> dict[str, str | None]:
        """The fields selection owns (``lastCompleted`` is the pipeline's)."""
        return {
            "halted": self.halted,
            "healthySince": format_rfc3339(self.healthy_since) if self.healthy_since else None,
        }


@dataclass(frozen=True)
class ControlPlaneHold:
    """Why a control-plane candidate waits."""

    code: HoldCode
    message: str
    until: datetime | None = None
    """When the hold ends on its own (a bake's end, a halt's earliest resume)."""


@dataclass(frozen=True)
class GateInputs:
    """One policy's rotation memory and the failures of the gate's I/O checks, for the plan."""

    state: RotationState
    bake: timedelta
    failures: tuple[str, ...] = ()


def bake_time(policy: TerminationPolicy) -> timedelta:
    return parse_duration(policy.spec.control_plane.bake_time)


def unready_control_plane(snapshot: Snapshot, *, except_node: str | None = None) -> list[str]:
    """Control-plane nodes outside the pipeline that are not Ready (one gate check)."""
    return sorted(
        node.name
        for node in snapshot.nodes
        if node.is_control_plane
        and not node.in_pipeline
        and not node.ready
        and node.name != except_node
    )


def node_failures(snapshot: Snapshot, except_node: str | None = None) -> list[str]:
    """The gate's node check, in words: one failure per unready control-plane node."""
    unready = unready_control_plane(snapshot, except_node=except_node)
    return [f"node {name} not Ready" for name in unready]


def advance(
    state: RotationState, failures: Sequence[str], now: datetime, bake: timedelta
) -> RotationState:
    """The state after one evaluation of the full gate: a failure during a bake halts, a
    halt ends once the gate has passed for a whole ``bake``."""
    if failures:
        halted = state.halted
        if halted is None and baking_until(state, now, bake) is not None:
            halted = "health gate failed during the bake: " + "; ".join(failures)
        return replace(state, halted=halted, healthy_since=None)
    since = state.healthy_since or now
    halted = state.halted if state.halted is not None and now - since < bake else None
    return replace(state, halted=halted, healthy_since=since)


def baking_until(state: RotationState, now: datetime, bake: timedelta) -> datetime | None:
    """The end of the bake in progress, None when none is."""
    if state.last_completed is None:
        return None
    end = state.last_completed + bake
    return end if now < end else None


def hold(
    state: RotationState, failures: Sequence[str], now: datetime, bake: timedelta
) -> ControlPlaneHold | None:
    """What holds the policy's next control-plane node, from its state and the gate now
    (one-at-a-time is counted by the plan)."""
    if state.halted is not None:
        resume = state.healthy_since + bake if state.healthy_since and not failures else None
        when = (
            f"resumes at {format_rfc3339(resume)} if the gate keeps passing"
            if resume
            else f"resumes once the gate has passed for {format_duration(bake)} without a break"
        )
        return ControlPlaneHold(
            "ControlPlaneHalted", f"control plane: rotation halted ({state.halted}); {when}", resume
        )
    end = baking_until(state, now, bake)
    if end is not None:
        return ControlPlaneHold(
            "ControlPlaneBaking",
            f"control plane: baking until {format_rfc3339(end)} "
            f"(bakeTime {format_duration(bake)} after the previous node)",
            end,
        )
    if failures:
        return ControlPlaneHold(
            "ControlPlaneGateFailing", "control plane: health gate failing: " + "; ".join(failures)
        )
    return None
