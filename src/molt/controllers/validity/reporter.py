"""Molt's objects that it cannot read are told so on themselves: a ``Valid`` condition
that names the field at fault and what is wrong, and one Warning Event.

The API server's schema refuses most bad specs with the field named, but a few checks
only Molt can make (a cron expression, a time zone). An object that fails one is left
out of every cache, so it selects, scales or checks nothing; without this reconciler a
log line would be its only trace, and ``kubectl get`` would show a policy that simply
never acts. The condition goes again once the object is fixed (or gone), and a
restarted controller finds its own condition in place and writes nothing twice.
"""

from __future__ import annotations

from typing import Any

import structlog

from molt.api import API_VERSION
from molt.api.resource import Resource
from molt.api.types import Condition
from molt.controllers.conditions import MESSAGE_LIMIT, ConditionWriter
from molt.policy.age import format_rfc3339
from molt.ports import Clock, ClusterReads, ClusterWrites, ObjectRef

log = structlog.get_logger(__name__)

VALID = "Valid"
INVALID_SPEC = "InvalidSpec"
Key = tuple[type[Resource], str]


class ValidityReporter:
    """Writes ``Valid=False`` on unusable objects and takes it away once they are fixed."""

    def __init__(self, reads: ClusterReads, writes: ClusterWrites, clock: Clock) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self._reported: dict[Key, str] = {}
        """What this process last reported per object (a restart reads the condition)."""

    async def reconcile(self) -> float | None:
        unusable = self.reads.unusable()
        for (kind, name), why in sorted(unusable.items(), key=lambda item: item[0][1]):
            if self._reported.get((kind, name)) != why:
                await self._report(kind, name, why)
                self._reported[(kind, name)] = why
        for kind, name in [key for key in self._reported if key not in unusable]:
            await self._clear(kind, name)
            del self._reported[(kind, name)]
        return None  # the caches call again when an object's problem changes or ends

    async def _read(self, kind: type[Resource], name: str) -> tuple[list[Condition], Any] | None:
        """The object's conditions as they are now, and its generation; None if gone."""
        found = await self.writes.read_object(ObjectRef(API_VERSION, kind.names.kind, name))
        if found is None:
            return None
        conditions: list[Condition] = []
        for raw in (found.get("status") or {}).get("conditions") or []:
            try:
                conditions.append(Condition.model_validate(raw))
            except ValueError:
                continue  # a condition someone else garbled is simply not carried over
        return conditions, (found.get("metadata") or {}).get("generation")

    async def _report(self, kind: type[Resource], name: str, why: str) -> None:
        read = await self._read(kind, name)
        if read is None:
            return
        conditions, generation = read
        message = f"Molt ignores this {kind.names.kind} until it is fixed: {why}"[:MESSAGE_LIMIT]
        if any(
            c.type == VALID and c.status == "False" and c.message == message for c in conditions
        ):
            return  # reported before a restart
        write = ConditionWriter(conditions, generation, self.clock.now())
        status = {"conditions": [*_others(conditions), write(VALID, False, INVALID_SPEC, message)]}
        await self.writes.patch_status(kind, name, status)
        await self.writes.record_resource_event(kind, name, INVALID_SPEC, message, warning=True)
        log.warning("object.invalid", kind=kind.names.kind, name=name, problem=why)

    async def _clear(self, kind: type[Resource], name: str) -> None:
        read = await self._read(kind, name)
        if read is None:
            return
        conditions, _ = read
        if not any(c.type == VALID for c in conditions):
            return
        await self.writes.patch_status(kind, name, {"conditions": _others(conditions)})
        log.info("object.valid", kind=kind.names.kind, name=name)


def _others(conditions: list[Condition]) -> list[dict[str, Any]]:
    """The object's other conditions, as they were (the status patch replaces the list)."""
    return [
        {
            **c.model_dump(by_alias=True, mode="json", exclude_none=True),
            "lastTransitionTime": format_rfc3339(c.last_transition_time),
        }
        for c in conditions
        if c.type != VALID
    ]
