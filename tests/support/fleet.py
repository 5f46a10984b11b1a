"""Builders for the policy core's snapshot types, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from molt.api.labels import (
    GROUP_LABEL,
    LAUNCHED_AT_ANNOTATION,
    REVISION_LABEL,
    STATE_LABEL,
    ZONE_LABEL,
)
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.snapshot import NodeCondition, NodeTaint, NodeView
from tests.support.builders import termination_policy

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def node(
    name: str,
    *,
    age_hours: float = 1.0,
    group: str | None = "workers",
    zone: str | None = "zone-a",
    revision: str | None = "rev1",
    state: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    conditions: tuple[NodeCondition, ...] = (),
    taints: tuple[NodeTaint, ...] = (),
    launched_annotation: bool = True,
) -> NodeView:
    """A node launched ``age_hours`` before NOW."""
    launched = NOW - timedelta(hours=age_hours)
    all_labels = dict(labels or {})
    for key, value in (
        (GROUP_LABEL, group),
        (ZONE_LABEL, zone),
        (REVISION_LABEL, revision),
        (STATE_LABEL, state),
    ):
        if value is not None:
            all_labels[key] = value
    all_annotations = dict(annotations or {})
    if launched_annotation:
        all_annotations.setdefault(LAUNCHED_AT_ANNOTATION, launched.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return NodeView(
        name=name,
        created=launched,
        labels=all_labels,
        annotations=all_annotations,
        conditions=conditions,
        taints=taints,
    )


def policy(name: str = "rotate", **spec: Any) -> TerminationPolicy:
    """A TerminationPolicy over every node, max age 48h unless overridden."""
    spec.setdefault("nodeSelector", {})
    spec.setdefault("rules", {"maxAge": "48h"})
    spec.setdefault("budgets", [])
    spec.setdefault("drain", {"timeout": "1h"})
    return TerminationPolicy.model_validate(termination_policy(name, **spec))
