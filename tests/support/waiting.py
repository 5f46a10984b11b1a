"""Poll-until helpers for tests (tests may wait; controllers never do)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    within: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
) -> T:
    """Await ``probe`` until it is truthy; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}; last: {last!r}")
