"""What changed between two templates, in a few words: the label a revision goes by.

A revision is named by a hash of its template (``template_revision``); people recognise it
by what changed, e.g. ``image ami-v2`` or ``instanceTypes m5.xlarge``. Pure: works on the
templates as the status carries them (JSON, camelCase keys).
"""

from __future__ import annotations

from typing import Any

MAX_LABEL = 60


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def _show(value: Any) -> str:
    if value is None:
        return "(removed)"
    if isinstance(value, list):
        return ",".join(
            "=".join(str(v) for v in item.values()) if isinstance(item, dict) else str(item)
            for item in value
        )
    text = str(value)
    return text if len(text) <= 24 else "(changed)"


def change_label(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str:
    """A short label for ``new`` against ``old``: ``image ami-v2``, ``labels.team data``.

    With no ``old`` template the revision is the group's first (``initial``); the image
    alone, when it is known, is the most telling name then.
    """
    if new is None:
        return ""
    if old is None:
        image = new.get("image")
        return f"initial image {image}"[:MAX_LABEL] if image else "initial"
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(old, "", before)
    _flatten(new, "", after)
    changed = [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    if not changed:
        return "no change"
    parts = [f"{key} {_show(after.get(key))}" for key in changed]
    label = "; ".join(parts)
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"
