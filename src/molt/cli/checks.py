"""Checks of command-line input every read-only command makes the same way: a clear
error on stderr and exit code 2, before anything talks to a cluster."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

errors = Console(stderr=True)


def require_output_format(output: str) -> None:
    """``--output`` is ``table`` or ``json``."""
    if output not in ("table", "json"):
        errors.print(f"[red]error:[/red] --output must be table or json, not {output!r}")
        raise typer.Exit(2)


def require_kubeconfig(kubeconfig: Path | None) -> None:
    """A kubeconfig given on the command line exists (None: the default lookup)."""
    if kubeconfig is not None and not kubeconfig.is_file():
        errors.print(f"[red]error:[/red] kubeconfig {kubeconfig} does not exist", highlight=False)
        raise typer.Exit(2)
