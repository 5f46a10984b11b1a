"""Host init time: how long a group's instances take from launch to a Ready Node, as the
median and 90th percentile of the latest launches (nearest-rank, whole seconds). Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SAMPLES = 50
"""Launches kept per revision: recent enough to show a slower image at once."""


@dataclass(frozen=True)
class HostInitFigures:
    p50_seconds: int
    p90_seconds: int
    samples: int


def nearest_rank(sorted_values: Sequence[float], quantile: float) -> float:
    """The nearest-rank percentile of values sorted ascending (at least one)."""
    rank = max(1, math.ceil(quantile * len(sorted_values)))
    return sorted_values[rank - 1]


def figures(samples: Sequence[float]) -> HostInitFigures | None:
    """p50 and p90 of ``samples`` (seconds); None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    return HostInitFigures(
        round(nearest_rank(ordered, 0.5)), round(nearest_rank(ordered, 0.9)), len(ordered)
    )


def keep_latest(samples: list[float], seconds: float, limit: int = SAMPLES) -> None:
    """Add one launch's time, dropping the oldest past ``limit``."""
    samples.append(seconds)
    del samples[: max(0, len(samples) - limit)]
