"""``molt run``: the controller."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from molt.api.durations import InvalidDurationError, parse_duration
from molt.cli.checks import require_kubeconfig
from molt.cli.history import parse_age
from molt.cli.logs import configure_logging
from molt.kube.reader import NoClusterError
from molt.observe.history import display_url, make_engine
from molt.runtime.providers import PROVIDERS, unknown_providers
from molt.runtime.run import RunOptions, StartupError, run_controller

errors = Console(stderr=True, soft_wrap=True)


def run_command(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            envvar="KUBECONFIG",
            help="Cluster to manage; in a pod, the in-cluster config is used when unset.",
        ),
    ] = None,
    leader_elect: Annotated[
        bool,
        typer.Option(
            "--leader-elect/--no-leader-elect",
            help="Take part in leader election on a Lease; only the leader acts. Use it "
            "whenever more than one replica runs.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Plan and log every decision, change nothing: no label, no cordon, "
            "no eviction, no termination.",
        ),
    ] = False,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="Prometheus metrics port; 0 turns it off.")
    ] = 8080,
    metrics_address: Annotated[
        str, typer.Option("--metrics-address", help="Address the metrics server binds.")
    ] = "0.0.0.0",
    debug_port: Annotated[
        int | None,
        typer.Option(
            "--debug-port",
            help="Serve GET /debug/caches (every watch cache's object names and "
            "resourceVersions, to compare with a fresh LIST) on this port; 0 picks a free "
            "one and logs it. Off when unset.",
        ),
    ] = None,
    debug_address: Annotated[
        str,
        typer.Option("--debug-address", help="Address the debug server binds (loopback)."),
    ] = "127.0.0.1",
    lease_namespace: Annotated[
        str, typer.Option("--lease-namespace", help="Namespace of the election Lease.")
    ] = "kube-system",
    lease_name: Annotated[str, typer.Option("--lease-name", help="Name of the Lease.")] = (
        "molt-controller"
    ),
    lease_duration: Annotated[
        str,
        typer.Option(
            "--lease-duration",
            help="How long a silent leader keeps the Lease; a standby takes over after it.",
        ),
    ] = "15s",
    identity: Annotated[
        str | None,
        typer.Option("--identity", help="This replica's name in the Lease (default: unique)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Nodes reconciled concurrently.")
    ] = 4,
    resync: Annotated[
        str, typer.Option("--resync", help="How often selection runs with nothing changing.")
    ] = "30s",
    log_format: Annotated[str, typer.Option("--log-format", help="console or json.")] = "console",
    provider: Annotated[
        list[str] | None,
        typer.Option(
            "--provider",
            help="A cloud to manage InstanceGroups in; repeat for more (kwok, aws, "
            "baremetal). AWS credentials, region and endpoint (AWS_ENDPOINT_URL) come from "
            "the usual boto3 chain; baremetal reads BMC credentials and keeps host claims "
            "in MOLT_NAMESPACE (default molt-system). Default: kwok.",
        ),
    ] = None,
    history: Annotated[
        str | None,
        typer.Option(
            "--history",
            envvar="MOLT_HISTORY",
            help="Keep every decision as a row in this database: sqlite:///molt-history.db, "
            "or postgresql://user@host/db (psycopg 3) for one store shared by many clusters. "
            "Off when unset. Writes are buffered and never hold the controller.",
        ),
    ] = None,
    cluster_name: Annotated[
        str,
        typer.Option(
            "--cluster-name",
            envvar="MOLT_CLUSTER_NAME",
            help="This cluster's name in the history (molt history --cluster NAME).",
        ),
    ] = "default",
    history_retention: Annotated[
        str,
        typer.Option(
            "--history-retention", help="Rows older than this are deleted; 0 keeps them all."
        ),
    ] = "30d",
    interruption_queue: Annotated[
        str | None,
        typer.Option(
            "--interruption-queue",
            envvar="MOLT_INTERRUPTION_QUEUE",
            help="URL of an SQS queue EventBridge sends EC2 spot interruption warnings, "
            "rebalance recommendations and Auto Scaling termination lifecycle actions to: "
            "interrupted nodes are drained at once, rebalanced ones replaced within budgets.",
        ),
    ] = None,
    lifecycle_heartbeat: Annotated[
        str,
        typer.Option(
            "--lifecycle-heartbeat",
            help="How often an Auto Scaling lifecycle hook a draining node holds is extended.",
        ),
    ] = "5m",
) -> None:
    """Run the controller: select nodes under the TerminationPolicies and replace them.

    Every InstanceGroup is kept at its size, spread over its zones, at its template's
    revision (RollingReplace or BlueGreen), rolled back when a revision fails, and routed
    around cells out of capacity. Every selected node waits until its group can spare it
    (its replacement Ready), is cordoned, runs its preDrain actions, has its pods evicted
    without breaking a PodDisruptionBudget, runs its preTerminate actions, and its instance
    is terminated once nothing that must leave is left on it. Progress is recorded on the node
    (label molt.dev/state), so a restarted controller resumes where the last one stopped.

    Exit codes: 0 after SIGTERM/SIGINT, 3 when leadership was lost (restart to rejoin).
    """
    if log_format not in ("console", "json"):
        errors.print(f"[red]error:[/red] --log-format must be console or json, not {log_format!r}")
        raise typer.Exit(2)
    require_kubeconfig(kubeconfig)
    try:
        lease_seconds = parse_duration(lease_duration).total_seconds()
        resync_seconds = parse_duration(resync).total_seconds()
        retention = parse_age(history_retention)
        heartbeat_seconds = parse_duration(lifecycle_heartbeat).total_seconds()
    except InvalidDurationError as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    if lease_seconds < 3:
        errors.print("[red]error:[/red] --lease-duration must be at least 3s")
        raise typer.Exit(2)
    providers = tuple(dict.fromkeys(provider or ["kwok"]))
    unknown = unknown_providers(providers)
    if unknown:
        names = list(PROVIDERS)
        known = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        errors.print(f"[red]error:[/red] unknown --provider {unknown[0]!r} (use {known})")
        raise typer.Exit(2)
    if history:
        try:
            make_engine(history).dispose()  # checks the URL and its driver; connects to nothing
        except Exception as error:
            shown = display_url(history)
            reason = str(error).replace(history, shown)
            errors.print(f"[red]error:[/red] --history {shown}: {reason}", highlight=False)
            raise typer.Exit(2) from error
    configure_logging(log_format)
    options = RunOptions(
        providers=providers,
        kubeconfig=str(kubeconfig) if kubeconfig else None,
        leader_elect=leader_elect,
        lease_name=lease_name,
        lease_namespace=lease_namespace,
        lease_duration=lease_seconds,
        identity=identity,
        dry_run=dry_run,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        debug_port=debug_port,
        debug_address=debug_address,
        workers=workers,
        resync_seconds=max(1.0, resync_seconds),
        history_url=history or None,
        cluster_name=cluster_name,
        history_retention=retention if retention.total_seconds() > 0 else None,
        interruption_queue=interruption_queue or None,
        lifecycle_heartbeat=max(1.0, heartbeat_seconds),
    )
    try:
        code = asyncio.run(run_controller(options))
    except (NoClusterError, StartupError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    raise typer.Exit(code)
