"""PNG plots of a simulation (matplotlib, Agg backend: no display needed).

``node-ages.png``: the spread of node ages over time against the policy's maximum.
``capacity.png``: Ready nodes per cell (zone / capacity type / revision) over time.
``lifetimes.png``: one bar per node from launch to end, coloured by revision, with the
moment it was selected marked.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from molt.policy.revisions import change_label
from molt.sim.report import policy_max_age_hours
from molt.sim.runner import Simulation

MAX_TIMELINE_NODES = 240


def plot_ages(sim: Simulation, path: Path) -> None:
    samples = sim.recorder.samples
    hours = [s.at / 3600 for s in samples]
    q: list[tuple[float, ...]] = (
        list(zip(*(s.age_quantiles for s in samples), strict=True)) if samples else [()] * 5
    )
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.fill_between(hours, q[0], q[4], alpha=0.15, color="tab:blue", label="min-max")
    ax.fill_between(hours, q[1], q[3], alpha=0.35, color="tab:blue", label="p10-p90")
    ax.plot(hours, q[2], color="tab:blue", label="median")
    limit = policy_max_age_hours(sim)
    if limit is not None:
        ax.axhline(limit, color="tab:red", linestyle="--", label=f"max age {limit:g}h")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("node age (hours)")
    ax.set_title(f"{sim.scenario.name}: node ages over time")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_capacity(sim: Simulation, path: Path) -> None:
    samples = sim.recorder.samples
    hours = [s.at / 3600 for s in samples]
    cells = sorted({cell for s in samples for cell in s.ready_by_cell})
    series = [[s.ready_by_cell.get(cell, 0) for s in samples] for cell in cells]
    fig, ax = plt.subplots(figsize=(12, 5))
    if cells:
        palette = plt.get_cmap("tab20")
        colours = [palette(i % 20) for i in range(len(cells))]
        ax.stackplot(hours, series, labels=cells, colors=colours, alpha=0.9)
    for at, kind, message in sim.cloud.log:
        if kind in ("outage", "template"):
            ax.axvline(at / 3600, color="black", linestyle=":", linewidth=1)
            ax.annotate(
                message.split(":")[0][:40] if kind == "template" else message[:40],
                (at / 3600, 0),
                xytext=(3, 8),
                textcoords="offset points",
                rotation=90,
                fontsize=7,
            )
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("Ready nodes")
    ax.set_title(f"{sim.scenario.name}: Ready capacity by cell (zone/capacity/revision)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def revision_changes(sim: Simulation) -> dict[str, str]:
    """Revision -> its group and what its template changed against the group's revision
    before it, e.g. ``workers: image ami-v2``."""
    labels: dict[str, str] = {}
    last: dict[str, dict[str, object]] = {}
    for (group, revision), template in sim.cloud.templates.items():
        dumped = template.model_dump(mode="json", by_alias=True, exclude_none=True)
        labels[revision] = f"{group}: {change_label(last.get(group), dumped)}"
        last[group] = dumped
    return labels


def plot_lifetimes(sim: Simulation, path: Path) -> None:
    end = sim.clock.seconds / 3600
    lives = sorted(sim.recorder.lifetimes.values(), key=lambda life: (life.launched, life.name))
    if len(lives) > MAX_TIMELINE_NODES:
        step = len(lives) / MAX_TIMELINE_NODES
        lives = [lives[int(i * step)] for i in range(MAX_TIMELINE_NODES)]
    revisions = sorted({life.revision for life in lives})
    colours = {rev: plt.get_cmap("tab10")(i % 10) for i, rev in enumerate(revisions)}
    fig, ax = plt.subplots(figsize=(10, max(4.0, len(lives) * 0.035 + 1.5)))
    for row, life in enumerate(lives):
        start = max(life.launched / 3600, -60.0)
        stop = (life.ended / 3600) if life.ended is not None else end
        ax.barh(row, stop - start, left=start, height=0.8, color=colours[life.revision])
        if life.selected is not None:
            ax.plot(life.selected / 3600, row, marker="|", color="black", markersize=4)
    changes = revision_changes(sim)
    for rev, colour in colours.items():
        change = changes.get(rev)
        ax.barh(0, 0, color=colour, label=f"revision {rev}" + (f" ({change})" if change else ""))
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_xlabel("simulated hours (negative: launched before the start)")
    ax.set_ylabel("nodes, by launch time")
    ax.set_title(f"{sim.scenario.name}: node lifetimes (| = selected for replacement)")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(sim: Simulation, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "node-ages.png", out / "capacity.png", out / "lifetimes.png"]
    plot_ages(sim, paths[0])
    plot_capacity(sim, paths[1])
    plot_lifetimes(sim, paths[2])
    return paths
