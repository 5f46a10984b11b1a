"""Interruption notices: what a cloud says is about to happen to an instance, read from
the messages of a queue, and how Molt records one on its node.

Pure. The shapes are those aws-node-termination-handler's queue mode reads: EventBridge
events for an EC2 Spot Instance Interruption Warning (the instance is reclaimed two
minutes after the event's time), an EC2 Instance Rebalance Recommendation (it is at
elevated risk: replace it ahead of time) and an Auto Scaling
``EC2 Instance-terminate Lifecycle Action`` (its group is terminating it and waits on the
lifecycle hook), the same lifecycle notification sent by Auto Scaling straight to the
queue, and any of these wrapped in an SNS envelope. Anything else is ``None``: not a
notice Molt acts on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from molt.policy.age import format_rfc3339, parse_rfc3339_or_none

Kind = Literal["spot-interruption", "rebalance-recommendation", "asg-termination"]
SPOT_WARNING = timedelta(minutes=2)
"""EC2 reclaims a Spot Instance two minutes after its interruption warning."""
SPOT_DETAIL = "EC2 Spot Instance Interruption Warning"
REBALANCE_DETAIL = "EC2 Instance Rebalance Recommendation"
LIFECYCLE_DETAIL = "EC2 Instance-terminate Lifecycle Action"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


@dataclass(frozen=True)
class LifecycleHook:
    """The Auto Scaling lifecycle action a terminating instance waits on."""

    group: str
    name: str
    token: str


@dataclass(frozen=True)
class Notice:
    """One notice about one instance."""

    kind: Kind
    instance_id: str
    at: datetime
    """When the notice was issued."""
    id: str
    """The event's id (the lifecycle action token for Auto Scaling's own messages): a
    duplicate delivery carries the same."""
    hook: LifecycleHook | None = None

    @property
    def deadline(self) -> datetime | None:
        """When the instance goes whatever Molt does; None when no time is given."""
        return self.at + SPOT_WARNING if self.kind == "spot-interruption" else None

    @property
    def urgent(self) -> bool:
        """Whether the instance goes regardless (outside any budget, drained at once)."""
        return self.kind != "rebalance-recommendation"

    def describe(self) -> str:
        if self.kind == "spot-interruption":
            assert self.deadline is not None
            return f"spot interruption: reclaimed at {format_rfc3339(self.deadline)}"
        if self.kind == "asg-termination":
            assert self.hook is not None
            return f"auto scaling group {self.hook.group} terminates it (hook {self.hook.name})"
        return "rebalance recommendation: at elevated risk of interruption"

    def annotation(self) -> str:
        """The node annotation that records the notice (and the hook to complete)."""
        body: dict[str, Any] = {"kind": self.kind, "id": self.id, "at": format_rfc3339(self.at)}
        if self.deadline is not None:
            body["deadline"] = format_rfc3339(self.deadline)
        if self.hook is not None:
            body["hook"] = asdict(self.hook)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def read_annotation(text: str | None, instance_id: str = "") -> Notice | None:
    """The notice a node records; None when absent or malformed (reported by the caller)."""
    if not text:
        return None
    try:
        body = json.loads(text)
        kind = body["kind"]
        at = parse_rfc3339_or_none(body.get("at"))
        hook = body.get("hook")
        if kind not in ("spot-interruption", "rebalance-recommendation", "asg-termination"):
            return None
        if at is None:
            return None
        return Notice(
            kind,
            instance_id,
            at,
            str(body.get("id", "")),
            LifecycleHook(str(hook["group"]), str(hook["name"]), str(hook["token"]))
            if isinstance(hook, dict)
            else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def parse_message(text: str) -> Notice | None:
    """The notice a queue message carries, or None for any other message."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        return parse_message(body["Message"])  # an SNS envelope
    if "detail-type" in body:
        return _event(body)
    if body.get("LifecycleTransition") == TERMINATING:
        return _lifecycle(body, body.get("Time"), str(body.get("LifecycleActionToken", "")))
    return None


def _event(body: dict[str, Any]) -> Notice | None:
    detail = body.get("detail")
    at = parse_rfc3339_or_none(body.get("time"))
    if not isinstance(detail, dict) or at is None:
        return None
    kind = body["detail-type"]
    event_id = str(body.get("id", ""))
    if kind in (SPOT_DETAIL, REBALANCE_DETAIL):
        instance = detail.get("instance-id")
        if not isinstance(instance, str):
            return None
        found: Kind = "spot-interruption" if kind == SPOT_DETAIL else "rebalance-recommendation"
        return Notice(found, instance, at, event_id)
    if kind == LIFECYCLE_DETAIL and detail.get("LifecycleTransition") == TERMINATING:
        return _lifecycle(detail, body.get("time"), event_id)
    return None


def _lifecycle(body: dict[str, Any], time: Any, event_id: str) -> Notice | None:
    at = parse_rfc3339_or_none(time if isinstance(time, str) else None)
    fields = [body.get(k) for k in ("EC2InstanceId", "AutoScalingGroupName", "LifecycleHookName")]
    token = body.get("LifecycleActionToken")
    if at is None or not all(isinstance(f, str) and f for f in (*fields, token)):
        return None
    instance, group, name = (str(f) for f in fields)
    return Notice("asg-termination", instance, at, event_id, LifecycleHook(group, name, str(token)))
