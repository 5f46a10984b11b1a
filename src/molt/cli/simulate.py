"""``molt simulate SCENARIO``: run Molt's controller over a simulated fleet and report.

The scenario is validated whole before anything runs (errors name the line and field).
A progress bar follows simulated time; the report then says how long a full rotation
took, why nodes were replaced, what the PDBs went through and what the instance-group
controller did. ``--out DIR`` also writes ``report.json`` and PNG plots.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import make_url

from molt.cli.checks import errors, require_writable_dir
from molt.cli.logs import configure_logging
from molt.observe.history import HistoryOptions, display_url, make_engine, normalize_url
from molt.sim.report import build_report, write_json
from molt.sim.runner import Simulation
from molt.sim.scenario import Scenario, ScenarioError, load_scenario

console = Console(width=None if Console().is_terminal else 120)


def run_with_progress(
    scenario: Scenario, *, show: bool = True, history: HistoryOptions | None = None
) -> Simulation:
    """Run a scenario under a progress bar over simulated hours."""
    configure_logging(level="error")
    sim = Simulation(scenario, history)
    total_hours = scenario.duration_seconds / 3600
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} simulated h"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not show,
    ) as progress:
        task = progress.add_task(f"simulating {scenario.name}", total=total_hours)
        sim.run(lambda seconds: progress.update(task, completed=seconds / 3600))
    return sim


def render_report(report: dict[str, Any]) -> None:
    """The report as a person reads it."""
    table = Table(title=f"Simulation of {report['scenario']}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rotation = report["fullRotationHours"]
    table.add_row(
        "simulated",
        f"{report['durationHours']:g} h in {report['wallSeconds']:g} s wall "
        f"({report['nodeHoursPerWallSecond']:g} node-hours per second)",
    )
    table.add_row("nodes", f"{report['nodesAtStart']} at start, {report['nodesAtEnd']} at end")
    table.add_row(
        "full rotation",
        f"{rotation:g} h"
        if rotation is not None
        else f"not finished ({report['initialNodesRemaining']} original node(s) left)",
    )
    reasons = ", ".join(f"{k} {v}" for k, v in report["replacedByReason"].items()) or "none"
    table.add_row("nodes replaced", reasons)
    rate = report["replacementRate"]
    if rate is not None:
        table.add_row(
            "replacement rate",
            f"{rate['perHourMean']:g}/h on average, {rate['perHourPeak']} in the busiest hour "
            f"(peak to mean {rate['peakToMean']:g})"
            + (
                f"; max age alone: peak to mean {rate['maxAge']['peakToMean']:g}"
                if rate["maxAge"]
                else ""
            ),
        )
    evictions = ", ".join(f"{k} {v}" for k, v in report["evictions"].items()) or "none"
    table.add_row("evictions", evictions)
    table.add_row("max in pipeline", str(report["maxInPipeline"]))
    for name, counts in report["actions"].items():
        table.add_row(f"action {name}", f"{counts['attempts']} attempts, {counts['failed']} failed")
    for group, init in report["hostInit"].items():
        table.add_row(
            f"host init {group}",
            f"p50 {init['p50Seconds']} s, p90 {init['p90Seconds']} s ({init['samples']} launches)",
        )
    limit = report["policyMaxAgeHours"]
    table.add_row(
        "oldest node",
        f"{report['maxNodeAgeHours']:g} h" + (f" (policy max {limit:g} h)" if limit else ""),
    )
    for pdb in report["pdbs"]:
        broken = f", [red]{len(pdb['violations'])} violation(s)[/red]" if pdb["violations"] else ""
        table.add_row(
            f"PDB {pdb['name']}",
            f"lowest {pdb['lowestHealthy']} healthy of {pdb['expected']} "
            f"(needs {pdb['desiredHealthy']}){broken}",
        )
    remediation = report["remediation"]
    if any(remediation.values()):
        table.add_row(
            "remediation",
            f"{remediation['Rebooting']} reboot(s) ({remediation['rebootsThatFixed']} fixed), "
            f"{remediation['Remediated']} node(s) kept, "
            f"{remediation['RemediationReplacing']} handed to replacement, "
            f"{remediation['RemediationExhausted']} out of steps",
        )
        table.add_row(
            "remediation breaker",
            f"{remediation['RemediationPaused']} pause(s), "
            f"{remediation['RemediationResumed']} resume(s)",
        )
    for name, watchdog in report["watchdogs"].items():
        table.add_row(
            f"watchdog {name}",
            f"fired {watchdog['fired']} time(s), {watchdog['alerts']} alert(s) and "
            f"{watchdog['resolves']} resolve(s) (not sent), failing "
            f"{watchdog['failingSeconds'] / 60:g} min, {watchdog['state'] or 'not run'} at the end",
        )
    cloud = report["cloud"]
    table.add_row(
        "cloud",
        f"{cloud['launchFailures']} failed launches, {cloud['spotInterruptions']} spot "
        f"interruptions, {cloud['scaleIns']} scale-ins",
    )
    if cloud["spotNotices"]:
        table.add_row(
            "spot notices",
            f"{cloud['spotNotices']} (2 min ahead): {cloud['spotDrainedInTime']} node(s) "
            "drained and terminated before the reclaim",
        )
    for row in cloud["timeline"]:
        table.add_row(f"  t={row['atHours']:g}h", row["message"])
    for event in report["rollbacks"] + report["routing"]:
        table.add_row(f"  t={event['at_hours']:g}h {event['kind']}", event["message"][:110])
    if report["errorCount"]:
        table.add_row("[red]reconcile errors[/red]", str(report["errorCount"]))
        for message in report["errors"][:5]:
            table.add_row("", message[:140])
    console.print(table)
    zones = report["capacityByZone"]
    if zones:
        lows: dict[str, int] = {}
        for sample in zones:
            for zone, ready in sample["ready"].items():
                lows[zone] = min(lows.get(zone, ready), ready)
        console.print(
            "fewest Ready nodes per zone: "
            + ", ".join(f"{zone} {count}" for zone, count in sorted(lows.items()))
        )


def _require_history_store(history: str) -> None:
    """The history URL parses, and a SQLite store's directory can be written."""
    try:
        url = make_url(normalize_url(history))
        make_engine(history).dispose()  # checks the URL and its driver; connects to nothing
    except Exception as error:
        errors.print(
            f"[red]error:[/red] --history {display_url(history)}: {error}", highlight=False
        )
        raise typer.Exit(2) from error
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        require_writable_dir(Path(url.database).parent, "--history")


def write_outputs(sim: Simulation, report: dict[str, Any], out: Path) -> list[Path]:
    from molt.sim.plots import write_plots  # matplotlib only when plots are asked for

    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json")
    return [out / "report.json", *write_plots(sim, out)]


def simulate_command(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write report.json and PNG plots here.")
    ] = None,
    history: Annotated[
        str | None,
        typer.Option(
            "--history",
            help="Also write every decision, on the simulated clock, to this history store "
            "(sqlite:///sim.db); read it with molt history --history URL --cluster NAME.",
        ),
    ] = None,
    cluster_name: Annotated[
        str | None,
        typer.Option("--cluster-name", help="The history's cluster name (default: scenario's)."),
    ] = None,
) -> None:
    """Simulate a scenario on a virtual clock with Molt's own controller, then report.

    Timeline events: templateChange, zoneOutage, spotInterruptions, notReadyBlink,
    kubeletDeath, flap. Watchdogs: the node checks (nodeReadyRatio, nodeCondition). What
    the simulator does not model is listed in docs/limits.md.
    """
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as error:
        for problem in error.problems:
            errors.print(f"[red]error:[/red] {problem}", highlight=False)
        raise typer.Exit(2) from error
    if out is not None:
        require_writable_dir(out, "--out")
    if history:
        _require_history_store(history)
    options = (
        HistoryOptions(
            url=history, cluster=cluster_name or loaded.name, bound=10_000_000, retention=None
        )
        if history
        else None
    )
    sim = run_with_progress(loaded, history=options)
    if sim.history is not None and history:
        asyncio.run(sim.history.stop(grace=120.0))
        console.print(f"history: {sim.history.written} rows written to {display_url(history)}")
        if sim.history.buffered:
            errors.print(
                f"[red]error:[/red] history: {sim.history.buffered} rows could not be written "
                f"to {display_url(history)}",
                highlight=False,
            )
            raise typer.Exit(1)
    report = build_report(sim)
    render_report(report)
    if out is not None:
        for path in write_outputs(sim, report, out):
            console.print(f"wrote {path}")
