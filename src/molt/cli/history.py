"""``molt history``: the story of nodes and groups from the history store, newest last."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from molt.api.durations import InvalidDurationError, parse_duration
from molt.cli.checks import require_writable_dir
from molt.observe.history import (
    DEFAULT_URL,
    HistoryQuery,
    display_url,
    normalize_url,
    read_history,
)
from molt.observe.timeline import write_timeline

console = Console(width=None if Console().is_terminal else 200)
errors = Console(stderr=True, soft_wrap=True)

_DAYS = re.compile(r"^([0-9]+)d(.*)$")


def parse_age(text: str) -> timedelta:
    """A duration that may also count days: ``30d``, ``6h``, ``1d12h``; ``0`` is zero."""
    if text.strip() == "0":
        return timedelta(0)
    match = _DAYS.match(text.strip())
    if match:
        rest = match.group(2)
        return timedelta(days=int(match.group(1))) + (
            parse_duration(rest) if rest else timedelta(0)
        )
    return parse_duration(text)


def row_as_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": row["time"].isoformat(),
        "cluster": row["cluster"],
        "kind": row["kind"],
        "name": row["name"],
        "group": row["group_name"],
        "revision": row["revision"],
        "zone": row["zone"],
        "policy": row["policy"],
        "reason": row["reason"],
        "message": row["message"],
        "warning": bool(row["warning"]),
        "change": row.get("change"),
        "details": row.get("details"),
    }


def render_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Molt history: {len(rows)} rows", title_justify="left")
    for column in ("Time (UTC)", "Cluster", "Kind", "Name", "Group", "Revision", "Zone"):
        table.add_column(column, no_wrap=True)
    table.add_column("Reason", no_wrap=True)
    table.add_column("Message", overflow="fold", ratio=2)
    for row in rows:
        reason = f"[yellow]{row['reason']}[/yellow]" if row["warning"] else row["reason"]
        table.add_row(
            f"{row['time']:%Y-%m-%d %H:%M:%S}",
            row["cluster"],
            row["kind"],
            row["name"],
            row["group_name"] or "-",
            row["revision"] or "-",
            row["zone"] or "-",
            reason,
            row["message"],
        )
    return table


def history_command(
    node: Annotated[str | None, typer.Option("--node", help="Only this node's rows.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Only this group's rows.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only rows this recent, e.g. 6h or 2d.")
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", help="Only this cluster's rows (its molt run --cluster-name)."),
    ] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
    history: Annotated[
        str,
        typer.Option(
            "--history",
            envvar="MOLT_HISTORY",
            help="The store molt run writes to (sqlite:///..., postgresql://...).",
        ),
    ] = DEFAULT_URL,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Also draw node lifetimes by group and revision into this PNG."
        ),
    ] = None,
) -> None:
    """The story of every decision Molt recorded, newest last: selections, cordons,
    actions, drains and blocks, terminations; revisions, rollouts, rollbacks, routing."""
    if output not in ("table", "json"):
        errors.print(f"[red]error:[/red] -o must be table or json, not {output!r}")
        raise typer.Exit(2)
    try:
        since_at = datetime.now(UTC) - parse_age(since) if since else None
    except InvalidDurationError as error:
        errors.print(f"[red]error:[/red] --since {error}", highlight=False)
        raise typer.Exit(2) from error
    url = make_url(normalize_url(history))
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        # Reading must not leave an empty database behind where none was.
        errors.print(f"[red]error:[/red] no history at {url.database}", highlight=False)
        raise typer.Exit(1)
    if plot is not None:
        require_writable_dir(plot.parent, "--plot")
    query = HistoryQuery(cluster=cluster, node=node, group=group, since=since_at)
    try:
        rows = read_history(history, query)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        errors.print(
            f"[red]error:[/red] cannot read history from {display_url(history)}: {reason}",
            highlight=False,
        )
        raise typer.Exit(1) from error
    if plot is not None:
        write_timeline(rows, plot, title=f"Molt history{f' of {group}' if group else ''}")
    if output == "json":
        typer.echo(json.dumps([row_as_json(row) for row in rows], indent=2))
    else:
        console.print(render_table(rows))
