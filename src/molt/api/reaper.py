"""``Reaper``: opt-in cleanup of what a fleet leaves behind.

Three reapers, each off until its field is set: pods stuck Terminating on a node that is
NotReady (force-deleted), finished pods past a TTL (deleted, except a Job's: Jobs keep
their own history), and ghost nodes whose instance no provider has any more (deleted).
Nothing is reaped without a Reaper object.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from molt.api.resource import PrinterColumn, Resource, ResourceNames
from molt.api.types import (
    CEL_RULES,
    ApiModel,
    Conditions,
    Duration,
    LabelSelector,
    cel,
)


class StuckPodsReaper(ApiModel):
    """Force-delete (grace 0) pods Terminating ``after`` past their deadline on a NotReady
    node. A pod on a Ready node is never touched, however long it has been deleting."""

    after: Duration = Field(default="10m", description="Past the pod's deletion deadline.")


class FinishedPodsReaper(ApiModel):
    """Delete Succeeded or Failed pods older than ``ttl`` that no Job owns."""

    ttl: Duration = Field(default="24h", description="Since the pod was created.")


class GhostNodesReaper(ApiModel):
    """Delete nodes NotReady longer than ``after`` whose instance a provider reports gone.

    A node no provider can judge (no providerID, an unknown scheme) is never deleted.
    """

    after: Duration = Field(default="10m", description="NotReady at least this long.")


REAPER_SPEC_RULES = [
    cel(
        "has(self.stuckPods) || has(self.finishedPods) || has(self.ghostNodes)",
        "at least one of stuckPods, finishedPods or ghostNodes must be set",
    )
]


class ReaperSpec(ApiModel):
    """Which reapers run, where, and how fast."""

    stuck_pods: StuckPodsReaper | None = None
    finished_pods: FinishedPodsReaper | None = None
    ghost_nodes: GhostNodesReaper | None = None
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Pod reapers act only in namespaces this selects; absent: every namespace.",
    )
    dry_run: bool = Field(default=False, description="Report what would be reaped; delete none.")
    max_per_minute: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=10, description="At most this many deletions (all kinds) per minute."
    )
    interval: Duration = Field(default="30s", description="How often the reapers look.")

    @model_validator(mode="after")
    def _at_least_one_reaper(self) -> ReaperSpec:
        if not (self.stuck_pods or self.finished_pods or self.ghost_nodes):
            raise ValueError("at least one of stuckPods, finishedPods or ghostNodes")
        return self


class ReapedCounts(ApiModel):
    """How many objects each reaper has reaped (or, in dry run, would have)."""

    stuck_pods: Annotated[int, Field(ge=0)] = 0
    finished_pods: Annotated[int, Field(ge=0)] = 0
    ghost_nodes: Annotated[int, Field(ge=0)] = 0


class ReaperStatus(ApiModel):
    """Counts since the Reaper was created, and when it last acted."""

    observed_generation: int | None = None
    reaped: ReapedCounts | None = None
    last_reap_time: datetime | None = None
    conditions: Conditions


class Reaper(Resource):
    """Opt-in reapers for stuck pods, finished pods and ghost nodes."""

    names = ResourceNames(
        kind="Reaper",
        plural="reapers",
        short_names=("rp",),
        columns=(
            PrinterColumn("Dry-Run", ".spec.dryRun", "boolean"),
            PrinterColumn("Stuck-Pods", ".status.reaped.stuckPods", "integer"),
            PrinterColumn("Finished-Pods", ".status.reaped.finishedPods", "integer"),
            PrinterColumn("Ghost-Nodes", ".status.reaped.ghostNodes", "integer"),
            PrinterColumn("Last-Reap", ".status.lastReapTime", "date"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["Reaper"] = "Reaper"
    spec: Annotated[ReaperSpec, Field(json_schema_extra={CEL_RULES: REAPER_SPEC_RULES})]
    status: ReaperStatus | None = None
