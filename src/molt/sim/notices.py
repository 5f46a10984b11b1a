"""The simulator's interruption queue: spot notices delivered the way an SQS queue would.

A spot instance about to be reclaimed gets a notice two minutes ahead (EC2's warning); the
simulated cloud puts it here and wakes the interruption controller, which reads and
deletes it as it would an SQS message. Molt's own ``InterruptionReconciler`` handles it,
so a what-if shows whether drains finish inside the warning.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from molt.cloud.aws_queue import Received
from molt.policy.interruptions import Notice


class SimNoticeQueue:
    """Messages not yet deleted, redelivered on every receive (no visibility timeout:
    the controller deletes what it reads in the same pass)."""

    def __init__(self) -> None:
        self._pending: dict[str, Received] = {}
        self._serial = 0
        self.wake: Callable[[], None] = lambda: None
        """Called when a message arrives (a long poll that returns at once)."""

    def publish_spot_notice(self, instance_id: str, at: datetime) -> Notice:
        self._serial += 1
        notice = Notice("spot-interruption", instance_id, at, f"sim-notice-{self._serial}")
        receipt = f"receipt-{self._serial}"
        self._pending[receipt] = Received(notice, receipt, notice.id)
        self.wake()
        return notice

    async def receive(self) -> list[Received]:
        return list(self._pending.values())[:10]

    async def delete(self, received: Received) -> None:
        self._pending.pop(received.receipt, None)

    @property
    def pending(self) -> int:
        return len(self._pending)
