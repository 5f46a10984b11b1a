"""``molt demo``: start a sandbox, install a sample fleet, and show Molt's plan for it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from molt.cli.plan import render_table
from molt.kube.reader import connect, read_cluster
from molt.policy.plan import compute_plan
from molt.sandbox.binaries import BuildError
from molt.sandbox.cluster import Sandbox, SandboxError
from molt.sandbox.processes import ProcessFailedError
from molt.sandbox.sample_fleet import CURRENT_REVISION, FLEET, install_sample_fleet

console = Console(width=None if Console().is_terminal else 160)


async def _install_and_plan(kubeconfig: Path) -> None:
    api = await connect(str(kubeconfig))
    async with api:
        await install_sample_fleet(api, datetime.now(UTC))
        console.print(
            f"Installed the sample fleet: {len(FLEET)} kwok nodes in 3 zones aged 1h to 61h, "
            f"InstanceGroup [bold]workers[/bold] (current revision {CURRENT_REVISION}), and "
            "TerminationPolicy [bold]rotate-48h[/bold] (max age 48h with 4h jitter, drift, "
            "a stuck-volume taint held 10m; at most 2 nodes in flight, 1 per zone).\n"
        )
        read = await read_cluster(api)
    now = datetime.now(UTC)
    plan = compute_plan(read.snapshot, read.policies, now)
    console.print(render_table(plan, read, now))
    console.print(
        "\nHow to read it: past-deadline nodes go first, then unhealthy, tainted and drifted "
        "ones, then the oldest. Budgets admit at most 2 at once and 1 per zone, so the rest "
        "wait; as each replacement finishes, the next one starts. Nothing was changed: "
        "planning is read-only."
    )


def demo_command(
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Leave the sandbox running in this directory to explore it."),
    ] = None,
) -> None:
    """Start a local control plane, install a sample fleet and print Molt's plan for it.

    Needs no cluster: it runs etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler and kwok on loopback (built once with the Go toolchain, then cached).
    """
    started = time.monotonic()
    workdir = keep or Path(tempfile.mkdtemp(prefix="molt-demo-"))
    sandbox = Sandbox(workdir)
    console.print("[bold]Molt demo[/bold]: starting a local control plane ...")
    try:
        sandbox.up(report=lambda line: console.print(line, highlight=False))
    except (SandboxError, BuildError, ProcessFailedError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from error
    try:
        asyncio.run(_install_and_plan(sandbox.kubeconfig))
    finally:
        if keep is None:
            sandbox.down(report=lambda _: None)
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"\nDemo finished in {time.monotonic() - started:.1f}s.")
    if keep is not None:
        console.print(
            f"The sandbox is still running: export KUBECONFIG={sandbox.kubeconfig}; "
            f"molt plan; kubectl get nodes,ig,tp. Stop it with "
            f"`molt sandbox down --dir {keep}`."
        )
