"""Go-style durations (``90s``, ``5m``, ``48h``, ``1h30m``) as used throughout the API.

Kubernetes users know this format from every upstream API (``metav1.Duration``), so Molt
accepts exactly it; the same regular expression is enforced by the API server through
the CRD schema and by pydantic here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

# Anchored for CEL's RE2 ``matches`` and Python's ``re`` alike.
# "[.]" rather than "\." because CEL string literals reject unknown escapes.
DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
DURATION_HINT = "must be a duration such as 90s, 5m, 48h or 1h30m (units: ms, s, m, h)"

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_WHOLE = re.compile(DURATION_PATTERN)


class InvalidDurationError(ValueError):
    """A string that is not a Go-style duration."""


@lru_cache(maxsize=1024)
def parse_duration(text: str) -> timedelta:
    """Parse ``text`` (e.g. ``"1h30m"``) into a timedelta; raise InvalidDurationError otherwise."""
    if not _WHOLE.match(text):
        raise InvalidDurationError(f"{text!r} {DURATION_HINT}")
    seconds = sum(float(value) * _UNIT_SECONDS[unit] for value, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta compactly for people: ``49h12m``, ``5m30s``, ``0s``."""
    total = int(delta.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or not parts:
        parts.append(f"{seconds}s")
    # Seconds are noise once a duration runs to hours.
    if hours and seconds:
        parts.pop()
    return sign + "".join(parts)
