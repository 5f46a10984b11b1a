"""``molt history --plot``: node lifetimes from the history, as a PNG (matplotlib, Agg).

One horizontal bar per node from the first row about it to its termination (or to the
end of the story, when it still runs), grouped and coloured by group and revision, the revision
labelled by what changed beside its hash; selections, drain blocks and rollbacks marked.
Each bar's ``gid`` is its node's name, each marker's ``selected:NODE`` / ``blocked:NODE``,
each rollback line's ``rollback:GROUP``, so the figure can be checked without pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

END_REASONS = ("NodeDeleted", "InstanceTerminated", "NodeRemoved")
ROLLBACK_REASONS = ("RolledBack", "RevisionDegraded")


def revision_labels(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(group, revision) -> ``7f3c9a1b2c image ami-v2``, from the RevisionCreated rows."""
    labels: dict[tuple[str, str], str] = {}
    for row in rows:
        if row["reason"] == "RevisionCreated" and row.get("group_name") and row.get("revision"):
            change = row.get("change") or ""
            labels[(row["group_name"], row["revision"])] = f"{row['revision']} {change}".strip()
    return labels


def draw_timeline(rows: Sequence[dict[str, Any]], title: str = "Molt history") -> Figure:
    nodes: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["kind"] != "Node":
            continue
        node = nodes.setdefault(
            row["name"],
            {"start": row["time"], "end": None, "last": row["time"], "marks": []},
        )
        node["last"] = row["time"]
        for key in ("group_name", "revision"):
            if row.get(key):
                node.setdefault(key, row[key])
        if row["reason"] in END_REASONS and node["end"] is None:
            node["end"] = row["time"]
        if row["reason"] in ("Selected", "DrainBlocked"):
            node["marks"].append((row["reason"], row["time"]))
    times = [row["time"] for row in rows]
    origin: datetime | None = min(times) if times else None

    def hours(moment: datetime) -> float:
        assert origin is not None
        return (moment - origin).total_seconds() / 3600

    labels = revision_labels(rows)
    order = sorted(nodes, key=lambda n: (nodes[n].get("group_name") or "", nodes[n]["start"]))
    last = max(times) if times else None
    keys = sorted(
        {(nodes[n].get("group_name") or "-", nodes[n].get("revision") or "-") for n in nodes}
    )
    palette = plt.get_cmap("tab10")
    colours = {key: palette(i % 10) for i, key in enumerate(keys)}
    fig, ax = plt.subplots(figsize=(11, max(3.0, 0.3 * len(order) + 1.5)))
    for index, name in enumerate(order):
        node = nodes[name]
        bar_key = (node.get("group_name") or "-", node.get("revision") or "-")
        start = hours(node["start"])
        stop = hours(node["end"] or last or node["last"])  # a live node: to the story's end
        ax.barh(
            index,
            max(stop - start, 0.002),
            left=start,
            height=0.7,
            color=colours[bar_key],
            gid=name,
        )
        for reason, moment in node["marks"]:
            selected = reason == "Selected"
            ax.plot(
                [hours(moment)],
                [index],
                marker="v" if selected else "x",
                color="black" if selected else "tab:red",
                markersize=7,
                linestyle="none",
                gid=f"{'selected' if selected else 'blocked'}:{name}",
            )
    for row in rows:
        if row["kind"] == "InstanceGroup" and row["reason"] in ROLLBACK_REASONS:
            ax.axvline(
                hours(row["time"]),
                color="tab:red",
                linestyle="--",
                linewidth=1,
                gid=f"rollback:{row['name']}",
            )
    for (group, revision), colour in colours.items():
        label = labels.get((group, revision), revision)
        ax.barh(0, 0, color=colour, label=f"{group} {label}")
    if order:
        ax.plot([], [], marker="v", color="black", linestyle="none", label="selected")
        ax.plot([], [], marker="x", color="tab:red", linestyle="none", label="drain blocked")
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"hours since {origin:%Y-%m-%d %H:%M:%S} UTC" if origin else "hours")
    ax.set_title(title)
    if order:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def write_timeline(rows: Sequence[dict[str, Any]], path: Path, title: str = "Molt history") -> None:
    fig = draw_timeline(rows, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
