"""The answer a simulation gives: figures a person reads, and the JSON ``--out`` writes.

Full-rotation time (when the last node that was running at the start had gone), nodes
replaced by reason, evictions by answer, the fewest healthy pods each PDB kept (and any
eviction that broke one, which would be a bug), the oldest node against the policy's
limit, each group's launch-to-Ready (p50, p90), ready capacity by zone over time, the
instance-group controller's rollbacks and routing decisions as it recorded them in Events,
the remediation steps and breaker pauses, and what each Watchdog did (when it failed,
every alert it would have sent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molt.api.durations import parse_duration
from molt.api.watchdog import Check
from molt.sim.record import Lifetime
from molt.sim.runner import Simulation
from molt.sim.watchdogs import WatchdogRecord

REMEDIATION_EVENTS = (
    "Rebooting",
    "Remediated",
    "RemediationStepFailed",
    "RemediationStepSkipped",
    "RebootFailed",
    "RemediationReplacing",
    "RemediationExhausted",
    "RemediationPaused",
    "RemediationResumed",
)
"""The remediation chain's Events (on nodes) and its breaker's (on policies)."""

ROLLBACK_WORDS = ("degraded", "rollback", "rolledback", "rolled")
ROUTING_WORDS = ("capacity", "unavailable", "rest", "route", "cooldown", "recovered")


@dataclass(frozen=True)
class GroupEvent:
    at_hours: float
    group: str
    reason: str
    message: str
    kind: str


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value / 3600, 2)


def policy_max_age_hours(sim: Simulation) -> float | None:
    limits = [
        parse_duration(p.spec.rules.max_age).total_seconds() / 3600
        for p in sim.cluster.policies()
        if p.spec.rules.max_age
    ]
    for name in sim.cluster.groups():
        group = sim.cluster.instance_group(name)
        if group is not None and group.spec.max_node_age:
            limits.append(parse_duration(group.spec.max_node_age).total_seconds() / 3600)
    return min(limits) if limits else None


def group_events(sim: Simulation) -> list[GroupEvent]:
    found = []
    for event in sim.cluster.recorded:
        if not event.node.startswith("ig/"):
            continue
        text = f"{event.reason} {event.message}".lower()
        if any(word in event.reason.lower() for word in ROLLBACK_WORDS):
            kind = "rollback"
        elif any(word in text for word in ROUTING_WORDS):
            kind = "routing"
        else:
            kind = "other"
        found.append(
            GroupEvent(round(event.at / 3600, 2), event.node[3:], event.reason, event.message, kind)
        )
    return found


def host_init(sim: Simulation) -> dict[str, dict[str, int]]:
    """Each group's launch-to-Ready at its current revision, as its status reports it."""
    found = {}
    for name in sorted(sim.cluster.groups()):
        group = sim.cluster.instance_group(name)
        if group is not None and group.status is not None and group.status.host_init:
            found[name] = group.status.host_init.model_dump(by_alias=True)
    return found


def replacement_rate(lives: list[Lifetime], end: float) -> dict[str, Any] | None:
    """Nodes the pipeline replaced per simulated hour: the mean, the busiest hour and
    their ratio (1.0: a steady rate; a fleet that ages together shows a tall peak), for
    every reason and for max age alone (a rollout's burst is wanted; an expiry cliff is
    not)."""
    hours = max(1, int(end // 3600))

    def rate(chosen: list[Lifetime]) -> dict[str, float] | None:
        per_hour = [0] * hours
        for life in chosen:
            assert life.ended is not None
            per_hour[min(hours - 1, int(life.ended // 3600))] += 1
        total = sum(per_hour)
        if total == 0:
            return None
        mean = total / hours
        peak = max(per_hour)
        return {
            "perHourMean": round(mean, 2),
            "perHourPeak": peak,
            "peakToMean": round(peak / mean, 2),
        }

    replaced = [x for x in lives if x.selected is not None and x.ended is not None]
    overall = rate(replaced)
    if overall is None:
        return None
    aged = rate([x for x in replaced if (x.reason or "").startswith("max-age")])
    return {**overall, "maxAge": aged}


def remediation_counts(sim: Simulation) -> dict[str, int]:
    """Remediation steps by Event reason (reboots, nodes kept, replacements, breaker pauses),
    and the reboots the simulated cloud says fixed their node."""
    counts = {reason: 0 for reason in REMEDIATION_EVENTS}
    for event in sim.cluster.recorded:
        if event.reason in counts:
            counts[event.reason] += 1
    counts["rebootsThatFixed"] = sum(1 for _, kind, _ in sim.cloud.log if kind == "reboot-fixed")
    return counts


def _check_kind(check: Check) -> str:
    kinds = check.model_dump(by_alias=True, exclude_none=True)
    return next(iter(kinds), "unknown")


def watchdog_summary(sim: Simulation) -> dict[str, dict[str, Any]]:
    """Per Watchdog: episodes that fired (past the warm-up), alerts and resolves it would
    have sent, its time Failing or Snoozed (holding any ``pauseWhen`` policy) and when,
    its state at the end, and every alert in order. Nothing was sent anywhere."""
    end = sim.clock.seconds
    summary: dict[str, dict[str, Any]] = {}
    for watchdog in sim.cluster.watchdogs():
        name = watchdog.metadata.name
        record = sim.watchdogs.records.get(name) or WatchdogRecord()
        sent = [a for a in sim.watchdogs.alerts if a.watchdog == name]
        summary[name] = {
            "check": _check_kind(watchdog.spec.check),
            "rounds": record.rounds,
            "fired": record.fired,
            "alerts": sum(1 for a in sent if a.kind == "trigger"),
            "resolves": sum(1 for a in sent if a.kind == "resolve"),
            "failingSeconds": round(record.held_seconds(end), 1),
            "failing": [{"fromSeconds": since, "toSeconds": until} for since, until in record.held],
            "state": watchdog.status.state if watchdog.status else None,
            "sent": [
                {
                    "atSeconds": a.at,
                    "kind": a.kind,
                    "dedupKey": a.dedup_key,
                    "message": a.message,
                }
                for a in sent
            ],
        }
    return summary


def build_report(sim: Simulation) -> dict[str, Any]:
    """Everything the report says, as plain data."""
    end = sim.clock.seconds
    lives = list(sim.recorder.lifetimes.values())
    initial = [life for life in lives if life.initial]
    rotated = all(life.ended is not None for life in initial) and bool(initial)
    full_rotation = max((life.ended or 0.0) for life in initial) if rotated else None
    replaced: dict[str, int] = {}
    for life in lives:
        if life.ended is None:
            continue
        cause = life.cause or sim.cloud.ended.get(life.name)
        if life.selected is not None and cause is None:
            cause = life.reason.split(":", 1)[0] if life.reason else "selected"
        replaced[cause or "deleted"] = replaced.get(cause or "deleted", 0) + 1
    max_age = max(
        (
            ((life.ended if life.ended is not None else end) - life.launched) / 3600
            for life in lives
        ),
        default=0.0,
    )
    budgets = [
        {
            "name": b.key,
            "expected": b.expected,
            "desiredHealthy": b.desired_healthy,
            "lowestHealthy": b.lowest_healthy,
            "lowestAtHours": _hours(b.lowest_at),
            "violations": b.violations,
        }
        for b in sim.cluster.budgets.values()
    ]
    events = group_events(sim)
    stats = sim.stats
    node_hours = sim.node_hours()
    cloud_log = sim.cloud.log
    return {
        "scenario": sim.scenario.name,
        "durationHours": round(end / 3600, 2),
        "wallSeconds": round(stats.wall_seconds, 2),
        "reconciles": stats.reconciles,
        "events": stats.events,
        "nodeHours": round(node_hours, 1),
        "nodeHoursPerWallSecond": round(node_hours / max(stats.wall_seconds, 1e-9), 1),
        "nodesAtStart": len(initial),
        "nodesAtEnd": sim.cluster.node_count(),
        "fullRotationHours": _hours(full_rotation),
        "initialNodesRemaining": sum(1 for life in initial if life.ended is None),
        "replacedByReason": dict(sorted(replaced.items())),
        "replacementRate": replacement_rate(lives, end),
        "decisions": len(sim.recorder.decisions),
        "maxInPipeline": sim.recorder.max_in_pipeline,
        "evictions": dict(sorted(sim.cluster.evictions.items())),
        "podsLostWithNodes": sim.cluster.pods_lost,
        "pdbs": budgets,
        "maxNodeAgeHours": round(max_age, 2),
        "policyMaxAgeHours": policy_max_age_hours(sim),
        "capacityByZone": [
            {"atHours": round(s.at / 3600, 2), "ready": s.ready_by_zone, "nodes": s.nodes_by_zone}
            for s in sim.recorder.samples
        ],
        "hostInit": host_init(sim),
        "actions": {
            name: {"attempts": count, "failed": sim.actions.failed[name]}
            for name, count in sorted(sim.actions.started.items())
        },
        "remediation": remediation_counts(sim),
        "watchdogs": watchdog_summary(sim),
        "groupEvents": [e.__dict__ for e in events],
        "rollbacks": [e.__dict__ for e in events if e.kind == "rollback"],
        "routing": [e.__dict__ for e in events if e.kind == "routing"],
        "cloud": {
            "launchFailures": sum(1 for _, kind, _ in cloud_log if kind == "launch-failed"),
            "spotInterruptions": sum(
                1
                for _, kind, _ in cloud_log
                if kind in ("spot-interruption", "spot-drained-in-time")
            ),
            "spotNotices": sum(1 for _, kind, _ in cloud_log if kind == "spot-notice"),
            "spotDrainedInTime": sum(
                1 for _, kind, _ in cloud_log if kind == "spot-drained-in-time"
            ),
            "scaleIns": sum(1 for _, kind, _ in cloud_log if kind == "scale-in"),
            "timeline": [
                {"atHours": round(at / 3600, 2), "kind": kind, "message": message}
                for at, kind, message in cloud_log
                if kind in ("outage", "template", "flap")
            ],
        },
        "errors": stats.error_messages,
        "errorCount": stats.errors,
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
