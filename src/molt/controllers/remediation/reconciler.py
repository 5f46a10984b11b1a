"""The remediation controller: one pass over the nodes of every TerminationPolicy with
``remediation`` (key ``remediation``), carrying out what ``molt.policy.remediation``
decides for each unhealthy node.

A step starts by writing the node's record (``molt.dev/remediation``, cordoning a
schedulable node about to reboot in the same patch), then an Event, then the provider's
``reboot`` where it is a ``Rebooter``. A node that is Ready and no longer matches its
policy's condition and taint rules gets its record cleared (and is uncordoned if Molt
cordoned it): it is kept. A node whose reboot did not help within the step's timeout
moves on; at the replace step, selection admits it into the termination pipeline within
the policy's budgets. The breaker (where too many nodes are unhealthy) holds every step;
selection reports it on the policy. Nothing is remembered here that the next pass needs:
all of it is on the nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import structlog

from molt.api.labels import REMEDIATION_ANNOTATION
from molt.api.terminationpolicy import TerminationPolicy
from molt.cloud.provider import Provider, ProviderError, Rebooter
from molt.policy.remediation import (
    Decision,
    MalformedRecordError,
    Record,
    breaker,
    decide,
    matches_health_rule,
    read_record,
    refused,
    remediating_policy,
)
from molt.policy.selection import health_candidate
from molt.policy.snapshot import NodeView
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

RESYNC_SECONDS = 30.0
"""A pass at least this often while a policy has remediation (steps time out)."""
NOT_SYNCED_REQUEUE = 1.0


class RemediationReconciler:
    """Moves every unhealthy node of a remediation policy along its chain."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        providers: Mapping[str, Provider],
        *,
        resync_seconds: float = RESYNC_SECONDS,
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.providers = providers
        self.resync_seconds = resync_seconds
        self._malformed: dict[str, str] = {}
        """Node -> the malformed record already reported (once per value and process)."""

    def wanted(self) -> bool:
        """Whether any policy has a remediation chain (else the pass has nothing to do)."""
        return any(p.spec.remediation is not None for p in self.reads.policies())

    async def reconcile(self) -> float | None:
        if not self.reads.synced():
            return NOT_SYNCED_REQUEUE
        policies = [p for p in self.reads.policies() if p.spec.remediation is not None]
        if not policies:
            self._malformed.clear()
            return None
        now = self.clock.now()
        nodes = self.reads.nodes()
        breakers = {p.metadata.name: breaker(p, nodes) for p in policies}
        due: list[float] = [self.resync_seconds]
        for node in nodes:
            if node.in_pipeline:
                continue
            policy = remediating_policy(policies, node)
            if policy is None:
                continue
            if REMEDIATION_ANNOTATION not in node.annotations and not matches_health_rule(
                policy, node
            ):
                continue
            record = await self._record(node)
            provider = self._provider_for(node)
            can_reboot = isinstance(provider, Rebooter)
            paused = breakers[policy.metadata.name].paused(node.group, node.zone)
            decision = decide(policy, node, record, can_reboot=can_reboot, paused=paused, now=now)
            await self._act(policy, node, decision, provider, now)
            if decision.recheck_at is not None:
                due.append((decision.recheck_at - now).total_seconds() + 0.05)
        known = {n.name for n in nodes}
        for gone in [n for n in self._malformed if n not in known]:
            del self._malformed[gone]
        return max(0.05, min(due))

    async def _record(self, node: NodeView) -> Record | None:
        """The node's record; a malformed one is reported once and read as a fresh start."""
        value = node.annotations.get(REMEDIATION_ANNOTATION)
        try:
            return read_record(value)
        except MalformedRecordError as error:
            if self._malformed.get(node.name) != value:
                self._malformed[node.name] = value or ""
                log.warning("node.remediation_malformed", node=node.name, problem=str(error))
                await self.writes.record_event(
                    node,
                    "InvalidMetadata",
                    f"{error}; the remediation chain starts afresh",
                    warning=True,
                )
            return None

    def _provider_for(self, node: NodeView) -> Provider | None:
        """The provider of the node's instance: its group's, else one that owns it."""
        group = self.reads.instance_group(node.group) if node.group else None
        if group is not None:
            return self.providers.get(group.spec.provider)
        return next((p for p in self.providers.values() if p.owns(node)), None)

    async def _act(
        self,
        policy: TerminationPolicy,
        node: NodeView,
        decision: Decision,
        provider: Provider | None,
        now: datetime,
    ) -> None:
        name = policy.metadata.name
        if decision.action == "recovered":
            patched = await self.writes.patch_node(
                node.name,
                annotations={REMEDIATION_ANNOTATION: None},
                unschedulable=False if decision.uncordon else None,
            )
            if patched:
                log.info("node.remediated", node=node.name, policy=name)
                kept = " and uncordoned" if decision.uncordon else ""
                await self.writes.record_event(
                    node, "Remediated", f"kept{kept} (policy {name}): {decision.message}"
                )
            return
        if decision.action != "start" or decision.record is None:
            return
        while decision.record is not None:
            decision = await self._start(policy, node, decision, provider, now)

    async def _start(
        self,
        policy: TerminationPolicy,
        node: NodeView,
        decision: Decision,
        provider: Provider | None,
        now: datetime,
    ) -> Decision:
        """Write the step's record and carry it out; returns the next decision when the
        provider refused the reboot (the chain goes on at once), else an idle one."""
        record = decision.record
        assert record is not None
        name = policy.metadata.name
        spec = policy.spec.remediation
        assert spec is not None
        total = len(spec.steps)
        patched = await self.writes.patch_node(
            node.name,
            annotations={REMEDIATION_ANNOTATION: record.to_json()},
            unschedulable=True if decision.cordon else None,
        )
        if not patched:
            return Decision("idle")  # the node is gone
        if decision.cordon:
            node = node.patched(unschedulable=True)
        if decision.finished is not None:
            await self.writes.record_event(
                node, "RemediationStepFailed", decision.finished, warning=True
            )
        for line in decision.skipped:
            await self.writes.record_event(node, "RemediationStepSkipped", line)
        selected = health_candidate(policy, node, now)
        why = selected.reason if selected is not None else "unhealthy"
        step = f"remediation step {record.step + 1}/{total}"
        if record.kind == "replace":
            log.info("node.remediation_replace", node=node.name, policy=name)
            await self.writes.record_event(
                node,
                "RemediationReplacing",
                f"{step} (policy {name}): replace through the termination pipeline ({why})",
            )
            return Decision("idle")
        if record.kind == "exhausted":
            log.warning("node.remediation_exhausted", node=node.name, policy=name)
            await self.writes.record_event(
                node,
                "RemediationExhausted",
                f"every remediation step of policy {name} was tried and the node is still "
                f"unhealthy ({why}); it is kept, as the chain has no replace step",
                warning=True,
            )
            return Decision("idle")
        assert isinstance(provider, Rebooter)
        timeout = spec.steps[record.step].reboot
        log.info("node.rebooting", node=node.name, policy=name, provider=provider.name)
        await self.writes.record_event(
            node,
            "Rebooting",
            f"{step} (policy {name}): rebooting through the {provider.name} provider; back "
            f"Ready and healthy within {timeout.timeout if timeout else '?'} or the next "
            f"step follows ({why})",
        )
        try:
            await provider.reboot(node)
        except ProviderError as error:
            log.warning("node.reboot_refused", node=node.name, error=str(error))
            await self.writes.record_event(
                node, "RebootFailed", f"{step}: the provider refused: {error}", warning=True
            )
            after = node.patched(annotations={REMEDIATION_ANNOTATION: record.to_json()})
            return refused(policy, after, record, str(error), can_reboot=True, now=now)
        return Decision("idle")
