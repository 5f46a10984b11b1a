"""``molt status [--watch]``: the fleet at a glance."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from molt.api.durations import InvalidDurationError, parse_duration
from molt.cli.checks import require_kubeconfig, require_output_format
from molt.kube.facts import all_watchdogs
from molt.kube.reader import connect, read_cluster
from molt.kube.transport import RawApi
from molt.policy.fleet_status import FleetStatus, fleet_status, sparkline

console = Console(width=None if Console().is_terminal else 160)
errors = Console(stderr=True, soft_wrap=True)


async def read_status(kubeconfig: str | None) -> tuple[FleetStatus, list[str]]:
    api = await connect(kubeconfig)
    async with api:
        read = await read_cluster(api)
        watchdogs = await all_watchdogs(RawApi(api))
    now = datetime.now(UTC)
    status = fleet_status(
        read.snapshot, read.policies, read.instance_groups, now, watchdogs=watchdogs
    )
    return status, read.problems


def render(status: FleetStatus) -> Group:
    """Tables for people: groups and cells, the pipeline, blocked nodes, expiries."""
    parts: list[Any] = [
        Text(f"Molt status at {status.at:%Y-%m-%d %H:%M:%S} UTC: {status.nodes} nodes", "bold")
    ]
    groups = Table(title="Instance groups", title_justify="left")
    for column in ("Group", "State", "Ready", "Revisions", "Cells (ready/desired)"):
        groups.add_column(column, overflow="fold")
    for group in status.groups:
        revisions = "\n".join(
            f"{r.name}{f' ({r.changed})' if r.changed else ''} {r.state} {r.ready}/{r.replicas}"
            for r in group.revisions
        )
        cells = "\n".join(
            f"{c.zone}/{c.capacity_type}/{c.revision} {c.ready}/{c.desired}"
            + (f" [yellow]resting until {c.resting_until}[/yellow]" if c.resting_until else "")
            for c in group.cells
        )
        groups.add_row(
            group.name, group.state, f"{group.ready}/{group.replicas}", revisions or "-", cells
        )
    parts.append(groups if status.groups else Text("No instance groups."))
    flight = ", ".join(f"{step} {len(names)}" for step, names in status.in_flight.items())
    parts.append(Text(f"In flight: {flight}"))
    for step, names in status.in_flight.items():
        if names:
            parts.append(Text(f"  {step}: {', '.join(names[:10])}" + (" ..." * (len(names) > 10))))
    if status.blocked:
        blocked = Table(title="Blocked", title_justify="left")
        blocked.add_column("Node", no_wrap=True)
        blocked.add_column("Policy", no_wrap=True)
        blocked.add_column("Why", overflow="fold")
        for line in status.blocked:
            blocked.add_row(line.node, line.policy or "-", line.message)
        parts.append(blocked)
    else:
        parts.append(Text("Blocked: none"))
    total = sum(status.expiries)
    parts.append(
        Text(
            f"Due in the next 24 h (one column an hour, busiest {max(status.expiries)}): "
            f"{total} node(s); overdue now: {status.overdue}\n"
            f"  now |{sparkline(status.expiries)}| +24h"
        )
    )
    if status.watchdogs:
        dogs = Table(title="Watchdogs", title_justify="left")
        for column in ("Watchdog", "State", "Last result"):
            dogs.add_column(column, overflow="fold")
        for name, state, message in status.watchdogs:
            dogs.add_row(name, state, message)
        parts.append(dogs)
    else:
        parts.append(Text("Watchdogs: none"))
    return Group(*parts)


def status_command(
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Cluster to read."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[str, typer.Option(help="Refresh period with --watch.")] = "5s",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """The fleet at a glance: groups with their revisions and cells (ready/desired, resting
    cells), nodes in flight by step, blocked nodes with one-line reasons, how many nodes
    come due in each of the next 24 hours, and the watchdogs' states.

    Read-only. `--watch` redraws every `--interval`; `-o json` prints one object.
    """
    require_output_format(output)
    try:
        period = parse_duration(interval).total_seconds()
    except InvalidDurationError as error:
        errors.print(f"[red]error:[/red] --interval: {error}", highlight=False)
        raise typer.Exit(2) from error
    require_kubeconfig(kubeconfig)
    path = str(kubeconfig) if kubeconfig else None

    def once() -> FleetStatus:
        try:
            status, problems = asyncio.run(read_status(path))
        except Exception as error:  # the CLI reports, it does not dump a traceback
            errors.print(f"[red]error:[/red] cannot read the cluster: {error}", highlight=False)
            raise typer.Exit(1) from error
        for problem in problems:
            errors.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)
        return status

    if not watch:
        status = once()
        if output == "json":
            print(json.dumps(status.to_json(), indent=2))
        else:
            console.print(render(status))
        return
    with Live(render(once()), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(max(period, 1.0))
                live.update(render(once()), refresh=True)
        except KeyboardInterrupt:
            return
