"""A node's age, its per-node jitter and its hard deadline.

Age runs from the provider's launch time when known, else from the ``molt.dev/launched-at``
annotation, else from the Node's creationTimestamp. A malformed annotation is reported
and the node is left out of age decisions: guessing could terminate a healthy node.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from molt.api.labels import LAUNCHED_AT_ANNOTATION
from molt.policy.snapshot import NodeView


class MalformedLaunchTimeError(ValueError):
    """``molt.dev/launched-at`` is not an RFC 3339 time."""


@dataclass(frozen=True)
class NodeAge:
    """When a node launched and how old it is."""

    launched: datetime
    age: timedelta
    source: str


def format_rfc3339(moment: datetime) -> str:
    """A UTC timestamp as Kubernetes writes them (second precision, ``Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


EARLIEST_YEAR = 1970
LATEST_YEAR = 9000
"""Timestamps outside these years are refused as malformed: every one Molt reads is a
moment of a node's life, and one at the calendar's edge would overflow the arithmetic
(a deadline, a timeout) done with it."""


@lru_cache(maxsize=65536)
def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with a zone (``Z`` or an offset). Cached: every pass
    reads the same launch and selection times of every node again."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    if not EARLIEST_YEAR <= parsed.year < LATEST_YEAR:
        raise ValueError(f"{text!r} is not between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return parsed


def parse_rfc3339_or_none(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp, or None when absent or unreadable (bookkeeping a person
    may have edited: unreadable reads as absent)."""
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def node_age(node: NodeView, now: datetime) -> NodeAge:
    """The node's age; raise MalformedLaunchTimeError for a bad annotation."""
    launched, source = _launch(node)
    return NodeAge(launched, now - launched, source)


def launch_time(node: NodeView) -> datetime:
    """When the node launched, as ``node_age`` reads it (and raising as it does)."""
    return _launch(node)[0]


def _launch(node: NodeView) -> tuple[datetime, str]:
    if node.launched_at is not None:
        return node.launched_at, "provider"
    raw = node.annotations.get(LAUNCHED_AT_ANNOTATION)
    if raw is not None:
        try:
            return parse_rfc3339(raw), "annotation"
        except ValueError as error:
            raise MalformedLaunchTimeError(
                f"annotation {LAUNCHED_AT_ANNOTATION}={raw!r} is not an RFC 3339 time "
                "(e.g. 2026-01-02T15:04:05Z); the node is skipped for age rules"
            ) from error
    return node.created, "creationTimestamp"


def age_of(node: NodeView, now: datetime) -> timedelta:
    """``node_age(node, now).age`` without building the ``NodeAge`` (fleet-wide loops
    ask it of every node); raise MalformedLaunchTimeError for a bad annotation."""
    launched = node.launched_at
    if launched is not None:
        return now - launched
    return node_age(node, now).age


@lru_cache(maxsize=65536)
def jitter_fraction(node_name: str) -> float:
    """A stable number in [0, 1) per node, so nodes launched together expire apart."""
    digest = hashlib.sha256(node_name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
