"""Status conditions in the shape of ``metav1.Condition``, for every resource Molt reports on.

A condition's ``lastTransitionTime`` moves only when its status does, so the previous
conditions are read back from the resource's status.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from molt.api.types import Condition
from molt.policy.age import format_rfc3339

MESSAGE_LIMIT = 1024


class ConditionWriter:
    """Builds the conditions of one status write: ``write(kind, status, reason, message)``."""

    def __init__(
        self, previous: Sequence[Condition], generation: int | None, now: datetime
    ) -> None:
        self.previous = previous
        self.generation = generation
        self.now = now

    def __call__(self, kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
        text = "True" if status else "False"
        since = self.now
        for existing in self.previous:
            if existing.type == kind and existing.status == text:
                since = existing.last_transition_time
        return {
            "type": kind,
            "status": text,
            "reason": reason,
            "message": message[:MESSAGE_LIMIT],
            "lastTransitionTime": format_rfc3339(since),
            "observedGeneration": self.generation,
        }
