"""One-shot reads for the commands that explain the fleet (``molt why``, ``molt plan``,
``molt status``): a node's pods, every PDB, and how long recent rotations took, as told
by the Events Molt recorded.

Like ``reader``, this path is for commands that run once and exit; the controller reads
through its watch caches.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection
from datetime import timedelta

from molt.kube.pods import PODS
from molt.kube.projections import pdb_view, pod_view
from molt.kube.state import PDBS, WATCHDOGS
from molt.kube.transport import RawApi
from molt.kube.writes import COMPONENT, EVENT_NAMESPACE
from molt.policy.age import parse_rfc3339
from molt.policy.pdbs import PdbView
from molt.policy.snapshot import PodView

DONE_REASONS = ("InstanceTerminated", "NodeDeleted")


async def node_pods(raw: RawApi, node: str) -> list[PodView]:
    """The pods bound to ``node``."""
    items, _ = await raw.list_all(PODS, [("fieldSelector", f"spec.nodeName={node}")])
    return [pod_view(item) for item in items]


async def all_pods(raw: RawApi) -> list[PodView]:
    """Every pod in the cluster (one paginated LIST: for a command, never the controller)."""
    items, _ = await raw.list_all(PODS)
    return [pod_view(item) for item in items]


NAMESPACED_LISTS_UP_TO = 16
"""Up to this many namespaces, their pods are read by one LIST each; beyond, by one LIST
of every pod (fewer requests, the same pods once filtered)."""


async def pods_in(raw: RawApi, namespaces: Collection[str]) -> list[PodView]:
    """The pods of the given namespaces (``molt plan`` reads only those a PDB that can
    deadlock a drain lives in: no other pod can be held by one)."""
    if len(namespaces) > NAMESPACED_LISTS_UP_TO:
        return [pod for pod in await all_pods(raw) if pod.namespace in namespaces]
    pods: list[PodView] = []
    for namespace in sorted(namespaces):
        items, _ = await raw.list_all(f"/api/v1/namespaces/{namespace}/pods")
        pods.extend(pod_view(item) for item in items)
    return pods


async def all_pdbs(raw: RawApi) -> list[PdbView]:
    items, _ = await raw.list_all(PDBS)
    return [pdb_view(item) for item in items]


async def rotation_durations(raw: RawApi) -> list[timedelta]:
    """Selection-to-termination times of the nodes whose Events are still kept (an hour by
    default): each node's first ``Selected`` to its first termination Event."""
    items, _ = await raw.list_all(f"/api/v1/namespaces/{EVENT_NAMESPACE}/events")
    selected: dict[str, str] = {}
    done: dict[str, str] = {}
    for event in items:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "Node":
            continue
        if (event.get("source") or {}).get("component") != COMPONENT:
            continue
        stamp = event.get("firstTimestamp") or event.get("eventTime")
        if not stamp:
            continue
        name = str(involved.get("name"))
        reason = event.get("reason")
        table = selected if reason == "Selected" else done if reason in DONE_REASONS else None
        if table is not None and (name not in table or stamp < table[name]):
            table[name] = stamp
    found: list[timedelta] = []
    for name, start in selected.items():
        if name in done:
            try:
                found.append(parse_rfc3339(done[name]) - parse_rfc3339(start))
            except ValueError:
                continue
    return [d for d in found if d >= timedelta(0)]


def median(durations: list[timedelta]) -> timedelta | None:
    if not durations:
        return None
    return timedelta(seconds=statistics.median(d.total_seconds() for d in durations))


async def all_watchdogs(raw: RawApi) -> list[tuple[str, str, str]]:
    """(name, state, last result's message) of every Watchdog."""
    items, _ = await raw.list_all(WATCHDOGS)
    found: list[tuple[str, str, str]] = []
    for item in items:
        status = item.get("status") or {}
        last = status.get("lastResult") or {}
        found.append(
            (
                str((item.get("metadata") or {}).get("name")),
                str(status.get("state") or "Unknown"),
                str(last.get("message") or "-"),
            )
        )
    return sorted(found)
