"""``molt demo``: four simulated days of a 60-node fleet, told as a short story.

Needs no cluster and no Go: it runs Molt's own controller over the built-in scenario in
``molt.sim.builtin`` on a virtual clock (48 h rotation, a bad template rolled back, a
zone outage routed around, spot interruptions), prints what happened and writes the
report and plots.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from molt.cli.checks import require_writable_dir
from molt.cli.simulate import run_with_progress, write_outputs
from molt.sim.builtin import demo_scenario
from molt.sim.report import build_report

console = Console(width=None if Console().is_terminal else 110)


def _first(events: list[dict[str, Any]], reason: str) -> dict[str, Any] | None:
    return next((e for e in events if e["reason"] == reason), None)


def tell_story(report: dict[str, Any]) -> list[str]:
    """The report as a few sentences, in the order things happened."""
    lines = [
        f"Molt ran its own controller over {report['nodesAtStart']} simulated nodes in 3 zones "
        f"for {report['durationHours']:g} simulated hours "
        f"({report['wallSeconds']:g} s on this machine)."
    ]
    rotation = report["fullRotationHours"]
    limit = report["policyMaxAgeHours"]
    if rotation is not None:
        lines.append(
            f"[bold]Rotation[/bold]: every node running at the start was replaced within "
            f"{rotation:g} h; the oldest node ever reached {report['maxNodeAgeHours']:g} h "
            f"(policy maximum {limit:g} h). Nodes replaced: "
            + ", ".join(f"{n} by {k}" for k, n in report["replacedByReason"].items())
            + "."
        )
    events = report["groupEvents"]
    degraded = _first(events, "RevisionDegraded")
    if degraded is not None:
        lines.append(
            f"[bold]Bad template[/bold] (t=6h, image ami-broken): its first instances never "
            f"became Ready; at t={degraded['at_hours']:g}h the group said: "
            f"\u201c{degraded['message']}\u201d"
        )
    if report["routing"]:
        first = report["routing"][0]
        lows: dict[str, int] = {}
        for sample in report["capacityByZone"]:
            if 20 <= sample["atHours"] <= 26:
                for zone, ready in sample["ready"].items():
                    lows[zone] = min(lows.get(zone, ready), ready)
        lines.append(
            f"[bold]Zone outage[/bold] (zone-b out of capacity from t=20h to t=26h): "
            f"{len(report['routing'])} routing decisions, the first at "
            f"t={first['at_hours']:g}h: \u201c{first['message']}\u201d Ready nodes per zone "
            "stayed at least " + ", ".join(f"{z} {n}" for z, n in sorted(lows.items())) + "."
        )
    drift = report["replacedByReason"].get("drift", 0)
    if drift:
        lines.append(
            f"[bold]Good template[/bold] (t=30h, image ami-v2): {drift} nodes replaced by "
            "drift, a few at a time within the group's surge."
        )
    pdbs = "; ".join(
        f"{p['name']} lowest {p['lowestHealthy']}/{p['expected']} (needs {p['desiredHealthy']})"
        for p in report["pdbs"]
    )
    violations = sum(len(p["violations"]) for p in report["pdbs"])
    evictions = report["evictions"]
    lines.append(
        f"[bold]Workloads[/bold]: {evictions.get('evicted', 0)} evictions, "
        f"{evictions.get('pdb-blocked', 0)} refused by a PDB and retried; "
        f"{violations} PDB violations. {pdbs}."
    )
    if report["errorCount"]:
        lines.append(f"[red]{report['errorCount']} reconcile errors[/red]: {report['errors'][:3]}")
    return lines


def demo_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write report.json and the plots.")
    ] = None,
) -> None:
    """Simulate four days of a 60-node fleet with Molt's controller and tell what happened.

    Needs no cluster: the same reconcilers that run in production drive an in-memory
    cluster and cloud on a virtual clock.
    """
    started = time.monotonic()
    target = out or Path(tempfile.mkdtemp(prefix="molt-demo-"))
    require_writable_dir(target, "--out")
    console.print("[bold]Molt demo[/bold]: 60 nodes, 3 zones, 4 simulated days\n")
    sim = run_with_progress(demo_scenario())
    report = build_report(sim)
    for line in tell_story(report):
        console.print(line + "\n")
    paths = write_outputs(sim, report, target)
    console.print("Plots and report: " + ", ".join(str(p) for p in paths))
    console.print(
        f"Demo finished in {time.monotonic() - started:.1f}s. "
        "Try your own fleet: molt simulate SCENARIO --out DIR."
    )
