"""``molt drain NODE``: cordon a node and evict its pods with the controller's drainer.

The same eviction rules as the pipeline (Eviction API only, per-pod backoff on 429, pods
under two PDBs and do-not-disrupt pods reported, never forced), with a progress bar and
a closing summary of whatever still blocks. The node is not put into the pipeline: it is
left cordoned and empty, not terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from molt.api.durations import InvalidDurationError, parse_duration
from molt.controllers.termination.drain import DrainAttempt, Drainer
from molt.kube.reader import NoClusterError, connect, reach_cluster
from molt.kube.state import KubeClusterState
from molt.kube.transport import RawApi
from molt.kube.writes import KubeWrites
from molt.observe.metrics import Metrics
from molt.policy.drain import (
    DrainFindings,
    DrainRules,
    DrainView,
    blocked_message,
    classify_pods,
)
from molt.ports import SystemClock

console = Console(stderr=True, soft_wrap=True)


class DrainFailedError(Exception):
    """The drain could not start (no such node, unreadable cluster)."""


def summary_table(view: DrainView, attempt: DrainAttempt, findings: DrainFindings) -> Table:
    """What still holds the node, pod by pod, in the words the controller writes on it."""
    table = Table(title="Pods still on the node", title_justify="left")
    table.add_column("Pod", no_wrap=True)
    table.add_column("Why it is still there", overflow="fold")
    why: dict[str, str] = {}
    for key in attempt.pdb_blocked:
        refusal = findings.refusals.get(key)
        why[key] = refusal.describe() if refusal else "refused by its PodDisruptionBudget (429)"
    for key in attempt.multiple_pdbs:
        why[key] = "covered by more than one PodDisruptionBudget: fix the PDBs (500)"
    for key in attempt.namespace_terminating:
        why[key] = "its namespace is terminating; the namespace controller removes it"
    for pod in view.held:
        why[pod.key] = "annotated molt.dev/do-not-disrupt=true"
    for pod in view.leaving:
        why[pod.key] = "being deleted (waiting out its grace period)"
    for pod in (*view.evict, *view.held, *view.leaving):
        table.add_row(pod.key, why.get(pod.key, "not yet evicted"))
    return table


async def drain_node(name: str, kubeconfig: str | None, limit: float, dry_run: bool) -> int:
    """Cordon and drain; 0 when the node is empty, 1 when time ran out with pods left."""
    api = await connect(kubeconfig)
    try:
        await reach_cluster(api)
    except NoClusterError:
        await api.close()
        raise
    raw = RawApi(api)
    changed = asyncio.Event()
    state = KubeClusterState(raw, on_pod=lambda _: changed.set())
    clock = SystemClock()
    writes = KubeWrites(raw, check_fence=lambda: None, nodes_cache=state.nodes_cache)
    drainer = Drainer(writes, clock, Metrics())
    try:
        await state.start()
        try:
            await asyncio.wait_for(state.wait_synced(), 60)
        except TimeoutError as error:
            raise DrainFailedError("the cluster's nodes could not be listed within 60s") from error
        node = state.node(name)
        if node is None:
            raise DrainFailedError(f"node {name} not found")
        pods = state.pods_on(name)
        while pods is None:
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.2)  # an empty node fires no change
            pods = state.pods_on(name)
        view = classify_pods(pods, clock.now(), None)
        if dry_run:
            console.print(f"[bold]dry run[/bold]: would cordon {name} and evict:")
            for pod in view.evict:
                console.print(f"  {pod.key}")
            for pod in view.held:
                console.print(f"  {pod.key} [yellow](held: do-not-disrupt)[/yellow]")
            return 0
        if not node.unschedulable:
            await writes.patch_node(name, unschedulable=True)
            console.print(f"cordoned {name}")
        total = view.remaining
        attempt = DrainAttempt()
        started = time.monotonic()
        with Progress(
            TextColumn("[bold]draining[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(name, total=max(total, 1), note="")
            while True:
                pods = state.pods_on(name) or []
                view = classify_pods(pods, clock.now(), None)
                progress.update(
                    task,
                    total=max(total, view.remaining, 1),
                    completed=max(total, view.remaining) - view.remaining,
                    note=f"{len(attempt.pdb_blocked)} waiting on PDBs"
                    if attempt.pdb_blocked
                    else "",
                )
                if view.done:
                    progress.update(task, completed=max(total, 1))
                    break
                if time.monotonic() - started > limit:
                    break
                attempt = await drainer.evict_slice(name, view)
                changed.clear()
                wait = min(drainer.next_try(name, view), 1.0) if view.evict else 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), max(wait, 0.05))
        if view.done:
            console.print(f"[green]drained[/green] {name}: every evictable pod has left")
            return 0
        console.print(
            f"[red]not drained[/red] {name}: {view.remaining} pod(s) left after {limit:.0f}s"
        )
        findings = drainer.findings(name, attempt)
        # Every refusal counts here, however young: the person asked for this drain now.
        rules = DrainRules(blocked_after=timedelta(0))
        message = blocked_message(view, findings, clock.now(), clock.now(), rules)
        if message:
            console.print(f"blocked: {message}", highlight=False)
        console.print(summary_table(view, attempt, findings))
        return 1
    finally:
        await state.stop()
        await api.close()


def drain_command(
    node: Annotated[str, typer.Argument(help="The node to drain.")],
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Cluster the node is in."),
    ] = None,
    timeout: Annotated[
        str, typer.Option("--timeout", help="Give up (and report what blocks) after this.")
    ] = "10m",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be evicted; change nothing.")
    ] = False,
) -> None:
    """Cordon NODE and evict its pods through the Eviction API, never breaking a PDB.

    DaemonSet and mirror pods stay; pods marked molt.dev/do-not-disrupt are not evicted.
    Exit code 0 when the node is empty, 1 when pods remain at the timeout (a table says
    which and why), 2 for bad input.
    """
    try:
        seconds = parse_duration(timeout).total_seconds()
    except InvalidDurationError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    if kubeconfig is not None and not kubeconfig.is_file():
        console.print(f"[red]error:[/red] kubeconfig {kubeconfig} does not exist", highlight=False)
        raise typer.Exit(2)
    try:
        code = asyncio.run(
            drain_node(node, str(kubeconfig) if kubeconfig else None, seconds, dry_run)
        )
    except (DrainFailedError, NoClusterError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    raise typer.Exit(code)
