"""``molt plan``: what would be disrupted now, and why."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from molt.api.durations import format_duration
from molt.api.lifecycle import Hook
from molt.cli.checks import require_kubeconfig, require_output_format
from molt.kube.facts import all_pdbs, all_watchdogs, pods_in
from molt.kube.reader import ClusterRead, connect, read_cluster
from molt.kube.transport import RawApi
from molt.policy.node_actions import describe, planned
from molt.policy.pdbs import DeadlockIndex
from molt.policy.plan import Decision, Plan, compute_plan
from molt.policy.watchdog import paused_policies

# Plans are wide; keep them readable when piped or captured (rich assumes 80 columns).
console = Console(width=None if Console().is_terminal else 160)
errors = Console(stderr=True, soft_wrap=True)


def actions_of(decision: Decision, read: ClusterRead) -> dict[Hook, list[str]]:
    """The lifecycle actions the decision's node will run, by hook point."""
    candidate = decision.candidate
    group = read.instance_groups.get(candidate.group) if candidate.group else None
    policy = next((p for p in read.policies if p.metadata.name == candidate.policy), None)
    return planned(group, policy)


def plan_as_json(plan: Plan, read: ClusterRead) -> list[dict[str, Any]]:
    """The ``-o json`` contract: a list with at least node, policy, reason, action."""
    rows = []
    for decision in plan.decisions:
        candidate = decision.candidate
        rows.append(
            {
                "node": candidate.node,
                "policy": candidate.policy,
                "reason": candidate.reason,
                "action": decision.action,
                "rule": candidate.rule,
                "group": candidate.group,
                "zone": candidate.zone,
                "ageSeconds": int(candidate.age.total_seconds()),
                "deadline": candidate.deadline.isoformat() if candidate.deadline else None,
                "blockedBy": decision.blocked_by,
                "deadlock": decision.deadlock,
                "lifecycle": actions_of(decision, read),
            }
        )
    return rows


def render_table(plan: Plan, read: ClusterRead, now: datetime) -> Table:
    """A table for people: one row per selected node, in departure order."""
    table = Table(
        title=f"Molt plan at {now:%Y-%m-%d %H:%M:%S} UTC: "
        f"{len(plan.admitted)} to start now, "
        f"{len(plan.decisions) - len(plan.admitted)} waiting, "
        f"{len(read.snapshot.nodes)} nodes, {len(read.policies)} policies",
        title_justify="left",
    )
    table.add_column("Node", no_wrap=True)
    for column in ("Group", "Zone", "Age", "Policy"):
        table.add_column(column, no_wrap=True)
    table.add_column("Reason", overflow="fold", ratio=2)
    table.add_column("When", overflow="fold", ratio=2)
    actions = {d.node: actions_of(d, read) for d in plan.decisions}
    if any(actions.values()):
        table.add_column("Actions", overflow="fold", ratio=2)
    for decision in plan.decisions:
        candidate = decision.candidate
        when = (
            "[green]now[/green]"
            if decision.action == "terminate"
            else (f"[yellow]waits[/yellow]: {decision.blocked_by}")
        )
        row = [
            candidate.node,
            candidate.group or "-",
            candidate.zone or "-",
            format_duration(candidate.age),
            candidate.policy,
            candidate.reason,
            when,
        ]
        if any(actions.values()):
            row.append(describe(actions[decision.node]))
        table.add_row(*row)
    return table


async def _plan(kubeconfig: str | None) -> tuple[Plan, ClusterRead, datetime]:
    api = await connect(kubeconfig)
    async with api:
        read = await read_cluster(api)
        raw = RawApi(api)
        # The pods of the namespaces whose PDBs can never allow a drain show which nodes
        # such a PDB holds, as the controller finds (node by node) before it cordons; a
        # pod in any other namespace cannot be held by one.
        index = DeadlockIndex(await all_pdbs(raw))
        deadlocked = index.by_node(await pods_in(raw, index.namespaces)) if index else {}
        watchdogs = {name: state for name, state, _ in await all_watchdogs(raw)}
    now = datetime.now(UTC)
    paused = paused_policies(read.policies, watchdogs)
    return compute_plan(read.snapshot, read.policies, now, deadlocked, paused), read, now


def plan_command(
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Cluster to plan against."),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """Show which nodes the TerminationPolicies select now, why, and what waits for a budget.

    Read-only: nothing in the cluster changes. `-o json` prints a list of objects with
    node, policy, reason and action ("terminate" now, or "wait" for a budget).
    """
    require_output_format(output)
    require_kubeconfig(kubeconfig)
    try:
        plan, read, now = asyncio.run(_plan(str(kubeconfig) if kubeconfig else None))
    except Exception as error:  # the CLI reports, it does not dump a traceback
        errors.print(f"[red]error:[/red] cannot read the cluster: {error}", highlight=False)
        raise typer.Exit(1) from error
    for problem in [*read.problems, *(f"node {p.node}: {p.message}" for p in plan.problems)]:
        errors.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)
    if output == "json":
        print(json.dumps(plan_as_json(plan, read), indent=2))
        return
    if not plan.decisions:
        console.print(
            f"Nothing to disrupt: {len(read.snapshot.nodes)} nodes, "
            f"{len(read.policies)} policies, no rule matches."
        )
        return
    console.print(render_table(plan, read, now))
