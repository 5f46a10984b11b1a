"""``molt why NODE``: what selected the node (or why nothing has), what holds it now, the
next step and an ETA."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from molt.api.durations import format_duration, parse_duration
from molt.api.instancegroup import InstanceGroup
from molt.cli.checks import require_kubeconfig, require_output_format
from molt.controllers.termination.progress import ActionProgress
from molt.kube.facts import all_pdbs, all_watchdogs, median, node_pods, rotation_durations
from molt.kube.reader import ClusterRead, connect, read_cluster
from molt.kube.transport import RawApi
from molt.policy.pdbs import describe, find_deadlocks
from molt.policy.plan import compute_plan
from molt.policy.snapshot import NodeView
from molt.policy.watchdog import paused_policies
from molt.policy.why import ActionFacts, CellFacts, Explanation, WhyInputs, explain

console = Console(width=None if Console().is_terminal else 160)
errors = Console(stderr=True, soft_wrap=True)


class UnknownNodeError(LookupError):
    """The node asked about is not in the cluster."""


async def gather(api_path: str | None, name: str) -> tuple[WhyInputs, ClusterRead]:
    """Read what an answer needs from the live cluster."""
    api = await connect(api_path)
    async with api:
        read = await read_cluster(api)
        node = next((n for n in read.snapshot.nodes if n.name == name), None)
        if node is None:
            raise UnknownNodeError(name)
        raw = RawApi(api)
        pods = await node_pods(raw, name)
        pdbs = await all_pdbs(raw)
        durations = await rotation_durations(raw)
        watchdogs = {name: state for name, state, _ in await all_watchdogs(raw)}
    now = datetime.now(UTC)
    group = read.instance_groups.get(node.group or "")
    # The same deadlock check the controller makes before it admits the node.
    deadlocks = find_deadlocks(pods, pdbs)
    deadlocked = {name: describe(deadlocks)} if deadlocks else {}
    inputs = WhyInputs(
        node=node,
        snapshot=read.snapshot,
        policies=read.policies,
        plan=compute_plan(
            read.snapshot,
            read.policies,
            now,
            deadlocked,
            paused_policies(read.policies, watchdogs),
        ),
        now=now,
        pods=pods,
        pdbs=pdbs,
        rotation_median=median(durations),
        actions=_actions(node),
        cells=_cells(group, node),
        group_ready_timeout=parse_duration(group.spec.health.ready_timeout) if group else None,
    )
    return inputs, read


def _actions(node: NodeView) -> list[ActionFacts]:
    progress = ActionProgress.of(node)
    return [
        ActionFacts(key, state.state, state.attempts, state.error, state.retry_at)
        for key, state in sorted(progress.actions.items())
    ]


def _cells(group: InstanceGroup | None, node: NodeView) -> list[CellFacts]:
    if group is None or group.status is None:
        return []
    current = group.status.current_revision
    return [
        CellFacts(
            c.zone,
            c.capacity_type,
            c.revision,
            c.desired,
            c.ready,
            c.available,
            c.unavailable_until,
        )
        for c in group.status.cells
        if c.revision == current or c.zone == node.zone
    ]


def render(answer: Explanation, now: datetime) -> None:
    """Plain words for people."""
    console.print(f"[bold]{answer.node}[/bold]: {answer.state}", highlight=False)
    if answer.reason:
        console.print(f"  selected by: {answer.policy} ({answer.reason})", highlight=False)
    console.print(f"  holds it:    [yellow]{answer.blocker}[/yellow] {answer.message}")
    console.print(f"  next step:   {answer.next_step}", highlight=False)
    if answer.eta is not None:
        left = format_duration(max(answer.eta - now, timedelta(0)))
        console.print(
            f"  ETA:         {answer.eta:%Y-%m-%d %H:%M:%S} UTC (in {left}; {answer.eta_basis})",
            highlight=False,
        )
    else:
        console.print(f"  ETA:         unknown ({answer.eta_basis or 'nothing to go on'})")
    for warning in answer.warnings:
        console.print(f"  [red]warning:[/red] {warning}", highlight=False)


def why_command(
    node: Annotated[str, typer.Argument(help="The node to explain.")],
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Cluster to read."),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """Explain one node: what selected it (or why nothing has: too young until T, excluded,
    no policy covers it), what holds it now (a closed window, a full budget and who uses
    it, a PDB at 0 allowed and since when, a PDB that can never allow its drain, waiting
    for a replacement, a lifecycle action), the next step, and an ETA where one can be
    computed (window opening; nodes ahead x the median rotation time seen in Events).

    Read-only. `-o json` prints one object with node, state, selected, policy, rule,
    reason, blocker (a stable code), message, since, nextStep, eta, etaBasis, details.
    """
    require_output_format(output)
    require_kubeconfig(kubeconfig)
    try:
        inputs, read = asyncio.run(gather(str(kubeconfig) if kubeconfig else None, node))
    except UnknownNodeError:
        errors.print(f"[red]error:[/red] no node named {node!r} in the cluster", highlight=False)
        raise typer.Exit(1) from None
    except Exception as error:  # the CLI reports, it does not dump a traceback
        errors.print(f"[red]error:[/red] cannot read the cluster: {error}", highlight=False)
        raise typer.Exit(1) from error
    for problem in read.problems:
        errors.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)
    answer = explain(inputs)
    if output == "json":
        print(json.dumps(answer.to_json(), indent=2))
        return
    render(answer, inputs.now)
