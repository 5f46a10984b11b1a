"""PodDisruptionBudgets as a drain sees them: which cover a pod, which allow nothing now,
and which can never allow a disruption at all (a deadlock to report before cordoning).

A PDB deadlocks a drain when its spec leaves no pod to spare at the size it expects:
``maxUnavailable: 0`` (or ``0%``), ``minAvailable`` equal to (or above) the pods it
expects, or ``minAvailable: 100%``. A single-replica Deployment under either is the
common case. Such a node can be cordoned, but never emptied by evictions: cordoning it
only spends a budget slot and the capacity of a node. A PDB that merely allows 0 *now*
(a pod not Ready, a rollout under way) is a wait, not a deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter

from molt.api.types import LabelSelector, resolve_count_or_percent
from molt.policy.selection import matches_selector
from molt.policy.snapshot import PodView


@dataclass(frozen=True)
class PdbView:
    """What Molt needs of a PodDisruptionBudget (policy/v1)."""

    namespace: str
    name: str
    selector: LabelSelector | None
    """None: a null selector, which selects no pod; an empty one selects every pod."""
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    expected_pods: int | None = None
    current_healthy: int | None = None
    desired_healthy: int | None = None
    disruptions_allowed: int | None = None
    allowed_since: datetime | None = None
    """When the DisruptionAllowed condition last changed: since when it allows what now."""
    stale: bool = False
    """Its status predates its spec (``observedGeneration`` behind ``generation``)."""
    disrupted_pods: Mapping[str, datetime | None] = field(default_factory=dict, hash=False)
    """Pods whose eviction the API server admitted and counted, not yet seen deleted, with
    when it admitted each (``status.disruptedPods``). The disruption controller drops an
    entry two minutes on and counts its pod healthy again; with the controller manager
    down nobody drops it, so an entry can outlive its pod and name a newer one."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def covers(self, pod: PodView) -> bool:
        if pod.namespace != self.namespace or self.selector is None:
            return False
        return matches_selector(pod.labels, self.selector)


ADMISSION_TRUSTED_FOR = timedelta(seconds=90)
"""How long after the API server admitted a pod's eviction Molt may still carry it out
by deleting the pod. The disruption controller forgets an admission after two minutes
(``DeletionTimeout``) and counts the pod healthy again, so from then on deleting it would
be a second, unpaid disruption; the margin covers clock skew and the delete's own time."""


def admission_of(pdb: PdbView, pod: PodView, now: datetime) -> datetime | None:
    """When the PDB's status says the API server admitted (and charged) this very pod's
    eviction, if that admission may still be carried out; else None.

    The entry is keyed by name only: a StatefulSet pod recreated under the same name, or
    an entry nobody dropped because the controller manager is down, would otherwise pass
    for permission. So the entry must postdate the pod's creation and be younger than
    ``ADMISSION_TRUSTED_FOR``. Both times are whole seconds: for a pod whose name can
    come back (a StatefulSet's), an entry in the second of its creation may be its
    predecessor's and is no permission; a generated name was never anyone else's, so an
    entry in that second can only be its own (kwok, or a fast node, has a pod Ready and
    evictable within the second it was created)."""
    if pod.name not in pdb.disrupted_pods:
        return None
    admitted = pdb.disrupted_pods[pod.name]
    if admitted is None or pod.created is None or admitted < pod.created:
        return None
    if admitted == pod.created and not pod.name_generated:
        return None
    if now - admitted >= ADMISSION_TRUSTED_FOR or admitted > now + ADMISSION_TRUSTED_FOR:
        return None
    return admitted


@dataclass(frozen=True)
class Deadlock:
    """A pod that no eviction can ever move, and the PDB that forbids it."""

    pod: str
    pdb: str
    why: str

    @property
    def message(self) -> str:
        return f"PodDisruptionBudget {self.pdb} can never allow evicting {self.pod}: {self.why}"


_POSITION = itemgetter(0)


def never_allows(pdb: PdbView) -> str | None:
    """Why the PDB can never allow a disruption at its expected size, or None."""
    expected = pdb.expected_pods
    if pdb.max_unavailable is not None:
        if pdb.max_unavailable in (0, "0%"):
            return "maxUnavailable is 0"
        if expected is not None and expected > 0:
            spare = resolve_count_or_percent(pdb.max_unavailable, expected)
            if spare <= 0:
                return f"maxUnavailable {pdb.max_unavailable} of {expected} pods rounds to 0"
        return None
    if pdb.min_available is not None:
        if pdb.min_available == "100%":
            return "minAvailable is 100%"
        if expected is not None and expected > 0:
            needed = resolve_count_or_percent(pdb.min_available, expected)
            if needed >= expected:
                return f"minAvailable {pdb.min_available} with {expected} pod(s) expected"
    return None


def covering(pdbs: list[PdbView], pod: PodView) -> list[PdbView]:
    """The PDBs whose selector matches the pod."""
    return [pdb for pdb in pdbs if pdb.covers(pod)]


class DeadlockIndex:
    """The PDBs that can never allow a disruption, indexed to find the pods they hold.

    Built once per pass from every PDB: only those ``never_allows`` judges deadlocked are
    kept (the others cannot deadlock a drain), by namespace, and within a namespace by
    one of their ``matchLabels`` pairs, so a pod is matched against the few PDBs that
    could select it rather than all of them. A pod's deadlock is the first such PDB, in
    the order the PDBs were given, whose selector covers it (as a scan of the list
    finds it)."""

    def __init__(self, pdbs: list[PdbView]) -> None:
        self._keyed: dict[str, dict[str, dict[str, list[tuple[int, PdbView, str]]]]] = {}
        """Namespace -> label key -> label value -> (position, PDB, why) it requires."""
        self._unkeyed: dict[str, list[tuple[int, PdbView, str]]] = {}
        """Namespace -> (position, PDB, why) whose selector has no ``matchLabels``."""
        self._pairs: dict[str, set[tuple[str, str]]] = {}
        """Label key -> the (namespace, value) pairs the keyed PDBs require under it."""
        for position, pdb in enumerate(pdbs):
            if pdb.selector is None:
                continue  # a null selector selects no pod
            why = never_allows(pdb)
            if why is None:
                continue
            entry = (position, pdb, why)
            labels = pdb.selector.match_labels
            if labels:
                key = min(labels)
                by_key = self._keyed.setdefault(pdb.namespace, {}).setdefault(key, {})
                by_key.setdefault(labels[key], []).append(entry)
                self._pairs.setdefault(key, set()).add((pdb.namespace, labels[key]))
            else:
                self._unkeyed.setdefault(pdb.namespace, []).append(entry)
        self.namespaces: frozenset[str] = frozenset(self._keyed.keys() | self._unkeyed.keys())
        """The namespaces with a PDB that can deadlock a drain: a pod elsewhere has none."""

    def __bool__(self) -> bool:
        return bool(self.namespaces)

    def holding(self, pod: PodView) -> Deadlock | None:
        """The deadlock that holds the pod, if a drain must evict it and one does."""
        namespace = pod.namespace
        if namespace not in self.namespaces:
            return None
        found: list[tuple[int, PdbView, str]] = self._unkeyed.get(namespace, [])
        labels = pod.labels
        for key, by_value in self._keyed.get(namespace, {}).items():
            value = labels.get(key)
            entries = by_value.get(value) if value is not None else None
            if entries:
                # Each list is in the PDBs' order already; a merge keeps it so.
                found = sorted([*found, *entries], key=_POSITION) if found else entries
        if not found or not _must_be_evicted(pod):
            return None
        for _, pdb, why in found:
            if matches_selector(labels, pdb.selector):
                return Deadlock(pod.key, pdb.key, why)
        return None

    def suspects(self, pods: list[PodView]) -> list[PodView]:
        """The pods ``holding`` may find held, in the order given: in a namespace with a
        PDB that can deadlock, carrying the ``matchLabels`` pair such a PDB is indexed by
        (any pod, where one has no ``matchLabels``), and not a DaemonSet's. A cheap look
        at every pod, so that the full match runs only on these few."""
        namespaces = self.namespaces
        unkeyed = self._unkeyed
        keyed = tuple(self._pairs.items())
        found: list[PodView] = []
        for pod in pods:
            # A DaemonSet's pod first: a drain never evicts one, and they are many.
            if "DaemonSet" in pod.owner_kinds:
                continue
            namespace = pod.namespace
            if namespace not in namespaces:
                continue
            if namespace not in unkeyed:
                labels = pod.labels
                for key, pairs in keyed:
                    if (namespace, labels.get(key)) in pairs:
                        break
                else:
                    continue
            found.append(pod)
        return found

    def find(self, pods: list[PodView]) -> list[Deadlock]:
        """The pods a drain must evict that a PDB will never let go (at most one per pod)."""
        found: list[Deadlock] = []
        for pod in self.suspects(pods):
            deadlock = self.holding(pod)
            if deadlock is not None:
                found.append(deadlock)
        return found

    def by_node(self, pods: list[PodView]) -> dict[str, str]:
        """Node name -> its deadlock, over pods of many nodes (``molt plan``'s LISTs)."""
        by_node: dict[str, list[Deadlock]] = {}
        for pod in self.suspects(pods):
            if pod.node:
                deadlock = self.holding(pod)
                if deadlock is not None:
                    by_node.setdefault(pod.node, []).append(deadlock)
        return {node: describe(deadlocks) for node, deadlocks in by_node.items()}


def find_deadlocks(pods: list[PodView], pdbs: list[PdbView]) -> list[Deadlock]:
    """The pods a drain must evict that a PDB will never let go (at most one per pod)."""
    return DeadlockIndex(pdbs).find(pods)


def describe(deadlocks: list[Deadlock]) -> str:
    """One line for an Event, a plan or a status: the first few deadlocked pods."""
    shown = "; ".join(d.message for d in deadlocks[:3])
    more = len(deadlocks) - 3
    return shown + (f" (and {more} more pod(s))" if more > 0 else "")


def deadlocks_by_node(pods: list[PodView], pdbs: list[PdbView]) -> dict[str, str]:
    """Node name -> its deadlock, over pods of many nodes."""
    return DeadlockIndex(pdbs).by_node(pods)


def refusing_now(pods: list[PodView], pdbs: list[PdbView]) -> list[PdbView]:
    """The PDBs covering the node's evictable pods that allow no disruption right now."""
    seen: dict[str, PdbView] = {}
    for pod in pods:
        if not _must_be_evicted(pod):
            continue
        for pdb in covering(pdbs, pod):
            if pdb.disruptions_allowed is not None and pdb.disruptions_allowed <= 0:
                seen.setdefault(pdb.key, pdb)
    return list(seen.values())


def _must_be_evicted(pod: PodView) -> bool:
    """Pods a drain evicts: not DaemonSet or mirror pods, not finished, not leaving."""
    return not (pod.daemonset or pod.mirror or pod.finished or pod.deleting)
