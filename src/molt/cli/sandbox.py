"""``molt sandbox up|down|status|stop|start``: a real local control plane for development
and tests, whose components can be stopped and started one at a time (fault tests)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from molt.kube.reader import connect
from molt.sandbox.binaries import BuildError, locate
from molt.sandbox.cluster import Sandbox, SandboxError
from molt.sandbox.processes import ProcessFailedError
from molt.sandbox.sample_fleet import install_sample_fleet

app = typer.Typer(
    help=(
        "A real local control plane on loopback: etcd, kube-apiserver, kube-controller-manager,"
        " kube-scheduler and kwok (simulated kubelets), built once from pinned Go modules."
    ),
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)

DirOption = typer.Option(
    Path(".sandbox"), "--dir", "-d", help="Directory holding the sandbox's state and kubeconfig."
)


def _say(message: str) -> None:
    console.print(message, highlight=False)


async def _install_sample(kubeconfig: Path) -> None:
    async with await connect(str(kubeconfig)) as api:
        await install_sample_fleet(api, datetime.now(UTC))


@app.command()
def up(
    directory: Path = DirOption,
    sample_fleet: bool = typer.Option(
        False,
        "--sample-fleet",
        help="Also install nine kwok nodes aged 1 h to 61 h, an InstanceGroup and a "
        "TerminationPolicy, for `molt plan` and `molt run` to act on.",
    ),
) -> None:
    """Start the control plane and write DIR/kubeconfig.

    The first run builds the binaries with the Go toolchain (about 8 minutes on 2 cores) into
    ~/.cache/molt; later runs take seconds. Set KUBEBUILDER_ASSETS or TEST_ASSET_* to use
    binaries you already have.
    """
    started = time.monotonic()
    sandbox = Sandbox(directory)
    try:
        sandbox.up(report=_say)
    except (SandboxError, BuildError, ProcessFailedError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from error
    kubeconfig = sandbox.kubeconfig
    if sample_fleet:
        asyncio.run(_install_sample(kubeconfig))
        console.print("Installed the sample fleet (group workers, policy rotate-48h).")
    console.print(
        f"\n[green]Sandbox up[/green] in {time.monotonic() - started:.1f}s.\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  kubectl get nodes,instancegroups,terminationpolicies\n"
        f"  molt sandbox down --dir {directory}   # when you are done (files stay)\n"
        "Nodes annotated kwok.x-k8s.io/node=fake are run by kwok.",
        highlight=False,
    )


@app.command()
def down(directory: Path = DirOption) -> None:
    """Stop every process `up` started in DIR. Nothing else is removed."""
    Sandbox(directory).down(report=_say)


COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
ComponentArgument = typer.Argument(
    ..., help=f"One of: {', '.join(COMPONENTS)}.", show_default=False
)


def _component(name: str) -> str:
    if name not in COMPONENTS:
        console.print(
            f"[red]error:[/red] unknown component {name!r} (one of: {', '.join(COMPONENTS)})",
            highlight=False,
        )
        raise typer.Exit(2)
    return name


@app.command("stop")
def stop_component(component: str = ComponentArgument, directory: Path = DirOption) -> None:
    """Stop one component and leave it stopped (e.g. no kube-scheduler: nothing is
    scheduled; no kube-controller-manager: PDB status goes stale). `start` brings it back."""
    try:
        Sandbox(directory).stop(_component(component), report=_say)
    except SandboxError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from error


@app.command("start")
def start_component(component: str = ComponentArgument, directory: Path = DirOption) -> None:
    """Start a component `stop` stopped, with the flags `up` gave it."""
    try:
        Sandbox(directory).start(_component(component), report=_say)
    except (SandboxError, ProcessFailedError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from error


@app.command()
def status(directory: Path = DirOption) -> None:
    """Show which components run in DIR and which binaries are cached."""
    sandbox = Sandbox(directory)
    recorded = sandbox.recorded_processes()
    alive = {p.name for p in sandbox.running()}
    if not recorded:
        _say(f"No sandbox processes recorded in {directory}.")
    for process in recorded:
        state = "[green]running[/green]" if process.name in alive else "[red]exited[/red]"
        console.print(f"  {process.name:<24} pid {process.pid:<8} {state}  log {process.log}")
    for name, path in locate().items():
        _say(f"  binary {name:<24} {path or 'not built yet'}")
